//! Linux: default routes from `/proc/net/route` (of the current network namespace); the
//! routing fact is the kernel's own answer for traffic from the physical address.

use std::net::Ipv4Addr;

use super::command::{Tools, run};
use super::{DefaultRoute, Interfaces, RoutingFacts};

pub fn default_routes(_tools: &Tools) -> Vec<DefaultRoute> {
    std::fs::read_to_string("/proc/net/route")
        .map(|t| parse_proc_net_route(&t))
        .unwrap_or_default()
}

/// `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`, addresses in little-endian hex.
pub fn parse_proc_net_route(text: &str) -> Vec<DefaultRoute> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let hex = |s: &str| u32::from_str_radix(s, 16).ok();
            let (dest, gateway, metric, mask) = (
                hex(f.get(1)?)?,
                hex(f.get(2)?)?,
                f.get(6)?.parse().ok()?,
                hex(f.get(7)?)?,
            );
            (dest == 0 && mask == 0 && gateway != 0).then(|| DefaultRoute {
                interface: f[0].to_owned(),
                gateway: Ipv4Addr::from(gateway.swap_bytes()),
                metric,
            })
        })
        .collect()
}

/// Which route a packet from the physical address takes, as the kernel says.
pub fn routing_facts(tools: &Tools, ifs: &Interfaces) -> RoutingFacts {
    let mut facts = RoutingFacts::default();
    let Some(p) = &ifs.physical else {
        return facts;
    };
    // A documentation address: the kernel answers without sending anything.
    let source = p.ipv4.to_string();
    let args = [
        "-4",
        "route",
        "get",
        "203.0.113.10",
        "from",
        source.as_str(),
    ];
    match run(&tools.ip, &args, None, tools.timeout) {
        Ok(out) => facts.kernel_route = parse_ip_route_get(&out.stdout),
        Err(e) => facts.unavailable.push(e.to_string()),
    }
    facts
}

/// `ip -4 route get DST from SRC`: the first line is the route; `cache` lines follow.
pub fn parse_ip_route_get(text: &str) -> Option<String> {
    Some(text.lines().next()?.trim().to_owned()).filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_default_routes_with_a_gateway() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
en0\t00000000\t010F000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
utun4\t00000000\t0100100A\t0003\t0\t0\t0\t00000080\t0\t0\t0\n\
utun4\t00000080\t0100100A\t0003\t0\t0\t0\t00000080\t0\t0\t0\n\
en0\t000F000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n";
        let routes = parse_proc_net_route(text);
        assert_eq!(
            routes,
            vec![
                DefaultRoute {
                    interface: "en0".into(),
                    gateway: Ipv4Addr::new(10, 0, 15, 1),
                    metric: 0
                },
                DefaultRoute {
                    interface: "wlan0".into(),
                    gateway: Ipv4Addr::new(192, 168, 1, 1),
                    metric: 600
                },
            ]
        );
        assert!(parse_proc_net_route("garbage\nx y\n").is_empty());
    }

    #[test]
    fn kernel_route_is_the_first_line() {
        assert_eq!(
            parse_ip_route_get(
                "203.0.113.10 from 10.0.15.15 via 10.16.0.1 dev wg0 uid 0 \n    cache \n"
            )
            .as_deref(),
            Some("203.0.113.10 from 10.0.15.15 via 10.16.0.1 dev wg0 uid 0")
        );
        assert_eq!(parse_ip_route_get(""), None);
    }
}
