//! Linux: the routing table from `/proc/net/route` (of the current network namespace), read by
//! [`parse_proc_net_route`] for discovery's default routes and for `netwatch`; the routing fact
//! is the kernel's own answer for traffic from the physical address.

use super::command::{Tools, run};
use super::linux_output::{ProcRoute, parse_ip_route_get, parse_proc_net_route};
use super::{Interfaces, RouteEntry, RoutingFacts, discovery};

/// The main table now (empty when `/proc/net/route` cannot be read).
pub fn route_table() -> Vec<ProcRoute> {
    std::fs::read_to_string("/proc/net/route")
        .map(|t| parse_proc_net_route(&t))
        .unwrap_or_default()
}

/// The main table for discovery: the same reader as [`route_table`], with its error.
pub fn table(_tools: &Tools) -> Result<Vec<RouteEntry>, String> {
    std::fs::read_to_string("/proc/net/route")
        .map(|t| discovery::from_proc(&parse_proc_net_route(&t)))
        .map_err(|e| format!("/proc/net/route: {e}"))
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
