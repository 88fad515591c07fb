//! What Linux prints, read by pure functions: the IPv4 routing table in `/proc/net/route`,
//! `ip -4 route get`, and `ip -4 route` / `ip -4 addr` as a support bundle saves them. Built on every platform, like [`super::macos_output`], so the parsers are
//! tested anywhere, against the layout kept under `tests/fixtures/linux/`.
//!
//! `/proc/net/route` has one reader, here: interface discovery keeps its default routes
//! ([`ProcRoute::as_default`]), the route watcher (`netwatch`) every row.

use std::net::Ipv4Addr;

use super::DefaultRoute;

/// One row of `/proc/net/route`: a route of the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcRoute {
    pub interface: String,
    pub dst: Ipv4Addr,
    /// From the mask; the kernel prints only contiguous masks (it stores a prefix length).
    pub prefix: u8,
    /// `None` for a directly connected route (gateway `00000000`).
    pub gateway: Option<Ipv4Addr>,
    pub metric: u32,
}

impl ProcRoute {
    /// A default route (`0.0.0.0/0`) with a gateway; the VPN's `0/1` and `128/1` are not.
    pub fn as_default(&self) -> Option<DefaultRoute> {
        (self.dst.is_unspecified() && self.prefix == 0)
            .then_some(self.gateway)
            .flatten()
            .map(|gateway| DefaultRoute {
                interface: self.interface.clone(),
                gateway,
                metric: self.metric,
            })
    }
}

/// `Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT` after a header line,
/// addresses as the kernel's network-order word printed in hex (byte-reversed on a
/// little-endian host); rows in the kernel's order. A row that does not read is skipped.
pub fn parse_proc_net_route(text: &str) -> Vec<ProcRoute> {
    // The word's bytes least significant first, as a little-endian host (every one the agent
    // runs on) stores them: `010F000A` is 10.0.15.1.
    let addr = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_le_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dst, gateway, metric, mask) = (
                addr(f.get(1)?)?,
                addr(f.get(2)?)?,
                f.get(6)?.parse().ok()?,
                addr(f.get(7)?)?,
            );
            Some(ProcRoute {
                interface: f[0].to_owned(),
                dst,
                prefix: mask.to_bits().leading_ones() as u8,
                gateway: (!gateway.is_unspecified()).then_some(gateway),
                metric,
            })
        })
        .collect()
}

/// `ip -4 route get DST from SRC`: the first line is the route; `cache` lines follow.
pub fn parse_ip_route_get(text: &str) -> Option<String> {
    Some(text.lines().next()?.trim().to_owned()).filter(|l| !l.is_empty())
}

/// Route types `ip route` prints before the destination; such a route has no device, so no
/// interface carries it and discovery has nothing to take from it.
const TYPED: &[&str] = &[
    "unreachable",
    "blackhole",
    "prohibit",
    "throw",
    "broadcast",
    "local",
    "multicast",
    "nat",
    "anycast",
];

/// `ip -4 route` (the main table) as the rows of `/proc/net/route`, for the same discovery; a
/// row whose destination or device does not read is an error, never a skipped row.
pub fn parse_ip_route(text: &str) -> Result<Vec<ProcRoute>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if TYPED.contains(&words[0]) {
            continue;
        }
        let after = |key: &str| words.windows(2).find(|w| w[0] == key).map(|w| w[1]);
        let (dst, prefix) = match words[0] {
            "default" => (Ipv4Addr::UNSPECIFIED, 0),
            d => {
                let (a, p) = d.split_once('/').unwrap_or((d, "32"));
                match (a.parse(), p.parse::<u8>()) {
                    (Ok(a), Ok(p)) if p <= 32 => (a, p),
                    _ => return Err(format!("ip route: destination {d:?} not understood")),
                }
            }
        };
        let interface = after("dev").ok_or_else(|| format!("ip route: no device in {line:?}"))?;
        let gateway = match after("via") {
            Some(g) => Some(
                g.parse()
                    .map_err(|_| format!("ip route: gateway {g:?} not understood"))?,
            ),
            None => None,
        };
        out.push(ProcRoute {
            interface: interface.to_owned(),
            dst,
            prefix,
            gateway,
            metric: after("metric").and_then(|m| m.parse().ok()).unwrap_or(0),
        });
    }
    Ok(out)
}

/// `ip -4 addr`: `N: NAME[@PEER]: <FLAGS> ...` then indented `inet A[/P]` lines.
pub fn parse_ip_addr(text: &str) -> Result<Vec<super::IfaceInfo>, String> {
    let mut out: Vec<super::IfaceInfo> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if !line.starts_with(char::is_whitespace) {
            out.push(ip_addr_header(line)?);
            continue;
        }
        let mut words = line.split_whitespace();
        if words.next() == Some("inet") {
            let word = words.next().unwrap_or_default();
            let addr = word.split('/').next().unwrap_or_default();
            let ip = addr
                .parse()
                .map_err(|_| format!("ip addr: address {word:?} not understood"))?;
            out.last_mut()
                .ok_or("ip addr: an address before any interface")?
                .ipv4
                .push(ip);
        }
    }
    Ok(out)
}

/// One interface line of `ip addr`: its index, name (without `@peer`) and flags.
fn ip_addr_header(line: &str) -> Result<super::IfaceInfo, String> {
    let bad = || format!("ip addr: line {line:?} names no interface");
    let (index, rest) = line.split_once(": ").ok_or_else(bad)?;
    let (name, rest) = rest.split_once(": ").ok_or_else(bad)?;
    let flags = rest
        .strip_prefix('<')
        .and_then(|r| r.split_once('>'))
        .map(|(f, _)| f)
        .ok_or_else(bad)?;
    let has = |f: &str| flags.split(',').any(|x| x == f);
    Ok(super::IfaceInfo {
        name: name.split('@').next().unwrap_or(name).to_owned(),
        index: index.trim().parse().map_err(|_| bad())?,
        up: has("UP"),
        point_to_point: has("POINTOPOINT"),
        loopback: has("LOOPBACK"),
        ipv4: Vec::new(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        crate::os::fixture("linux", name)
    }

    /// Defaults on two interfaces (the higher metric first), the VPN's halves, a subnet, a
    /// default without a gateway, and two rows that do not read.
    pub(crate) const TABLE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
wlan0\t00000000\t016433C6\t0003\t0\t0\t600\t00000000\t0\t0\t0
en0\t00000000\t010F000A\t0003\t0\t0\t0\t00000000\t0\t0\t0
utun4\t00000000\t0100100A\t0003\t0\t0\t0\t00000080\t0\t0\t0
utun4\t00000080\t0100100A\t0003\t0\t0\t0\t00000080\t0\t0\t0
en0\t000F000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
dummy0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0
broken line
en0\tnothex\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";

    #[test]
    fn every_row_with_its_prefix_and_gateway() {
        let route =
            |interface: &str, dst: [u8; 4], prefix, gateway: Option<[u8; 4]>, metric| ProcRoute {
                interface: interface.into(),
                dst: dst.into(),
                prefix,
                gateway: gateway.map(Ipv4Addr::from),
                metric,
            };
        assert_eq!(
            parse_proc_net_route(TABLE),
            [
                route("wlan0", [0, 0, 0, 0], 0, Some([198, 51, 100, 1]), 600),
                route("en0", [0, 0, 0, 0], 0, Some([10, 0, 15, 1]), 0),
                route("utun4", [0, 0, 0, 0], 1, Some([10, 16, 0, 1]), 0),
                route("utun4", [128, 0, 0, 0], 1, Some([10, 16, 0, 1]), 0),
                route("en0", [10, 0, 15, 0], 24, None, 0),
                route("dummy0", [0, 0, 0, 0], 0, None, 0),
            ]
        );
        assert!(parse_proc_net_route("garbage\nx y\n").is_empty());
        assert!(parse_proc_net_route("").is_empty());
    }

    #[test]
    fn only_default_routes_with_a_gateway() {
        let defaults: Vec<DefaultRoute> = parse_proc_net_route(TABLE)
            .iter()
            .filter_map(ProcRoute::as_default)
            .collect();
        assert_eq!(
            defaults,
            vec![
                DefaultRoute {
                    interface: "wlan0".into(),
                    gateway: Ipv4Addr::new(198, 51, 100, 1),
                    metric: 600
                },
                DefaultRoute {
                    interface: "en0".into(),
                    gateway: Ipv4Addr::new(10, 0, 15, 1),
                    metric: 0
                },
            ]
        );
    }

    /// The kernel's layout: padded rows, trie order (the VPN's `0/1` before the defaults of
    /// the same key), a host route.
    #[test]
    fn fixture_with_vpn_halves_and_a_host_route() {
        let rows = parse_proc_net_route(&fixture("proc-net-route-vpn-halves.txt"));
        let got: Vec<String> = rows
            .iter()
            .map(|r| {
                let via = r.gateway.map_or("link".into(), |g| g.to_string());
                format!("{}/{} {via} {} {}", r.dst, r.prefix, r.interface, r.metric)
            })
            .collect();
        assert_eq!(
            got,
            [
                "0.0.0.0/1 10.16.0.1 tun0 0",
                "0.0.0.0/0 10.0.15.1 eth0 100",
                "0.0.0.0/0 198.51.100.1 wlan0 600",
                "10.0.15.0/24 link eth0 100",
                "10.16.0.0/16 link tun0 0",
                "128.0.0.0/1 10.16.0.1 tun0 0",
                "192.0.2.10/32 10.0.15.1 eth0 0",
                "198.51.100.0/24 link wlan0 600",
            ]
        );
        let defaults: Vec<(String, Ipv4Addr, u32)> = rows
            .iter()
            .filter_map(ProcRoute::as_default)
            .map(|d| (d.interface, d.gateway, d.metric))
            .collect();
        assert_eq!(
            defaults,
            [
                ("eth0".into(), Ipv4Addr::new(10, 0, 15, 1), 100),
                ("wlan0".into(), Ipv4Addr::new(198, 51, 100, 1), 600),
            ]
        );
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

    #[test]
    fn ip_route_reads_the_saved_table() {
        let rows = parse_ip_route(&fixture("ip-4-route.txt")).unwrap();
        let seen: Vec<(String, u8, Option<Ipv4Addr>, &str, u32)> = rows
            .iter()
            .map(|r| {
                (
                    r.dst.to_string(),
                    r.prefix,
                    r.gateway,
                    r.interface.as_str(),
                    r.metric,
                )
            })
            .collect();
        let vpn = Some(Ipv4Addr::new(10, 16, 0, 1));
        let gw = Some(Ipv4Addr::new(10, 0, 15, 1));
        assert_eq!(
            seen,
            [
                ("0.0.0.0".into(), 1, vpn, "tun0", 0),
                ("0.0.0.0".into(), 0, gw, "eth0", 100),
                ("10.0.15.0".into(), 24, None, "eth0", 0),
                ("10.16.0.1".into(), 32, None, "tun0", 0),
                ("128.0.0.0".into(), 1, vpn, "tun0", 0),
                ("203.0.113.9".into(), 32, gw, "eth0", 0),
            ],
            "the typed `unreachable` route has no device and is left out"
        );
        assert!(parse_ip_route("10.0.15/24 dev eth0\n").is_err());
        assert!(parse_ip_route("10.0.15.0/24 via 10.0.15.1\n").is_err());
    }

    #[test]
    fn ip_addr_reads_interfaces_flags_and_addresses() {
        let ifs = parse_ip_addr(&fixture("ip-4-addr.txt")).unwrap();
        let seen: Vec<(&str, u32, bool, bool, Vec<Ipv4Addr>)> = ifs
            .iter()
            .map(|i| {
                (
                    i.name.as_str(),
                    i.index,
                    i.loopback,
                    i.point_to_point,
                    i.ipv4.clone(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("lo", 1, true, false, vec![Ipv4Addr::LOCALHOST]),
                ("eth0", 2, false, false, vec![Ipv4Addr::new(10, 0, 15, 15)]),
                ("tun0", 3, false, true, vec![Ipv4Addr::new(10, 16, 11, 143)]),
            ]
        );
        assert!(ifs.iter().all(|i| i.up));
        assert!(parse_ip_addr("    inet 10.0.15.15/24 scope global eth0\n").is_err());
        assert!(parse_ip_addr("garbage\n").is_err());
    }
}
