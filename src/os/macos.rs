//! macOS. Default routes per interface come from the routing table through netdev (sysctl
//! NET_RT_DUMP), which stays right with the VPN up, where `route -n get default` answers with
//! the tunnel's half. The routing facts come from route, netstat, sysctl and pfctl, each
//! output read by a parser in `macos_output`.

use super::command::{CommandError, Tools, run};
use super::macos_output::{
    ParseError, parse_anchors, parse_netstat_inet, parse_route_get, parse_sysctl_flag,
    route_not_in_table,
};
use super::{DefaultRoute, Interfaces, RoutingFacts};

pub fn default_routes(_tools: &Tools) -> Vec<DefaultRoute> {
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

/// A tool's stdout parsed, or why not (the command's error, or what was not understood).
fn read<T>(
    tools: &Tools,
    program: &std::path::Path,
    args: &[&str],
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> Result<T, String> {
    let out = run(program, args, None, tools.timeout).map_err(|e| e.to_string())?;
    parse(&out.stdout).map_err(|e| e.to_string())
}

/// The value, or `None` with the reason kept among the facts that could not be read.
fn keep<T>(unavailable: &mut Vec<String>, r: Result<T, String>) -> Option<T> {
    r.map_err(|e| unavailable.push(e)).ok()
}

pub fn routing_facts(tools: &Tools, ifs: &Interfaces) -> RoutingFacts {
    let mut u = Vec::new();
    let route_table = read(
        tools,
        &tools.netstat,
        &["-rn", "-f", "inet"],
        parse_netstat_inet,
    );
    let default_lookup = read(
        tools,
        &tools.route,
        &["-n", "get", "default"],
        parse_route_get,
    );
    let scoped_lookup = ifs.physical.as_ref().map(|p| {
        let args = ["-n", "get", "-ifscope", p.name.as_str(), "default"];
        match run(&tools.route, &args, None, tools.timeout) {
            Ok(out) => parse_route_get(&out.stdout)
                .map(Some)
                .map_err(|e| e.to_string()),
            // No such route is an answer, not a failure to read one.
            Err(CommandError::Failed { stderr, .. }) if route_not_in_table(&stderr) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    });
    let forwarding = read(
        tools,
        &tools.sysctl,
        &["-n", "net.inet.ip.forwarding"],
        parse_sysctl_flag,
    );
    let anchors = read(tools, &tools.pfctl, &["-v", "-s", "Anchors"], |t| {
        Ok(parse_anchors(t))
    });
    RoutingFacts {
        route_table: keep(&mut u, route_table),
        default_lookup: keep(&mut u, default_lookup),
        scoped_lookup: scoped_lookup.and_then(|r| keep(&mut u, r)),
        ip_forwarding: keep(&mut u, forwarding),
        pf_anchors: keep(&mut u, anchors),
        kernel_route: None,
        unavailable: u,
    }
}
