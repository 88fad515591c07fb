//! macOS. The routing table is `netstat -rn -f inet`, the one reader for discovery, the
//! routing facts and the route watcher, and the same text `diagnose --from` reads from a saved
//! Mac. The other facts come from route, sysctl and pfctl, each output read by a parser in
//! `macos_output`.

use super::command::{CommandError, Tools, run};
use super::macos_output::{
    ParseError, RouteGet, parse_anchors, parse_netstat_inet, parse_sysctl_flag, route_get_answer,
    route_not_in_table,
};
use super::{Interfaces, RouteEntry, RoutingFacts, discovery};

/// The IPv4 table, as `netstat -rn -f inet` prints it.
pub fn table(tools: &Tools) -> Result<Vec<RouteEntry>, String> {
    read(
        tools,
        &tools.netstat,
        &["-rn", "-f", "inet"],
        parse_netstat_inet,
    )
    .and_then(|rows| discovery::from_netstat(&rows))
}

/// A documentation address: `route get` only looks it up, nothing is sent. Not `default`,
/// which the /0 route answers even while the VPN's halves carry everything.
const PUBLIC_PROBE: &str = "203.0.113.10";

/// `route -n get ARGS`: the answer, `None` for "no such route", or why it could not be read.
/// route(8) prints `not in table` on stderr and may still exit 0.
fn route_get(tools: &Tools, args: &[&str]) -> Result<Option<RouteGet>, String> {
    let mut full = vec!["-n", "get"];
    full.extend_from_slice(args);
    match run(&tools.route, &full, None, tools.timeout) {
        Ok(out) => route_get_answer(&out.stdout, &out.stderr).map_err(|e| e.to_string()),
        Err(CommandError::Failed { stderr, .. }) if route_not_in_table(&stderr) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
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
    let default_lookup = route_get(tools, &[PUBLIC_PROBE]);
    let scoped_lookup = ifs
        .physical
        .as_ref()
        .map(|p| route_get(tools, &["-ifscope", p.name.as_str(), "default"]));
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
        default_lookup: keep(&mut u, default_lookup).flatten(),
        scoped_lookup: scoped_lookup.and_then(|r| keep(&mut u, r)),
        ip_forwarding: keep(&mut u, forwarding),
        pf_anchors: keep(&mut u, anchors),
        kernel_route: None,
        unavailable: u,
    }
}
