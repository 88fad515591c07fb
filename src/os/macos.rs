//! macOS: gateways per interface from the routing table (netdev). `route -n get default`
//! is not usable here: with the VPN up it answers with the tunnel's route.

use super::{DefaultRoute, Interfaces};

pub fn default_routes() -> Vec<DefaultRoute> {
    netdev::get_interfaces()
        .into_iter()
        .filter_map(|i| {
            let gateway = *i.gateway.as_ref()?.ipv4.first()?;
            Some(DefaultRoute {
                interface: i.name,
                gateway,
                metric: if i.default { 0 } else { 1 },
            })
        })
        .collect()
}

/// The scoped default route PIA adds for split tunnel, and IP forwarding: both decide where a
/// socket bound to the physical address leaves.
pub fn routing_facts(ifs: &Interfaces) -> Vec<String> {
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let mut facts = Vec::new();
    if let Some(p) = &ifs.physical {
        let scoped = run(
            "/sbin/route",
            &["-n", "get", "-ifscope", &p.name, "default"],
        );
        facts.push(match scoped {
            Some(_) => format!("a scoped default route on {} is present", p.name),
            None => format!(
                "no scoped default route on {} (PIA normally adds one for split tunnel)",
                p.name
            ),
        });
    }
    if let Some(v) = run("/usr/sbin/sysctl", &["-n", "net.inet.ip.forwarding"]) {
        facts.push(format!(
            "IP forwarding is {}",
            if v.trim() == "1" { "on" } else { "off" }
        ));
    }
    if let Some(anchors) = run("/sbin/pfctl", &["-s", "Anchors"]) {
        let pia: Vec<&str> = anchors
            .lines()
            .map(str::trim)
            .filter(|a| a.contains("pia") || a.contains("PIA"))
            .collect();
        if !pia.is_empty() {
            facts.push(format!("PIA's pf anchors are loaded: {}", pia.join(", ")));
        }
    }
    facts
}
