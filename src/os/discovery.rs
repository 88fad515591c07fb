//! Which interface is the physical one and which is the VPN's tunnel, judged from evidence in
//! a fixed order, by one pure function ([`judge`]) that the live agent and `diagnose --from`
//! share: the live agent gathers the same evidence from the running system that
//! `diagnose --from` reads from saved files ([`saved`]).
//!
//! Physical, in order: the configured name; the proxy's latest `bindInterface` / `bindIp` (the
//! interface holding that address); the interface of the unscoped default route that is not a
//! tunnel (macOS installs it for the primary service only; the others get scoped `I`
//! defaults, which name the candidates when a VPN owns the unscoped default). Never listing
//! order. Its gateway comes from its own default route, scoped or not.
//!
//! Tunnel: the interface that carries unscoped traffic to the public address space (found by
//! longest-prefix match over the table, so the VPN's two halves, a default owned by a tunnel
//! and a cover in more pieces all count), when it is tunnel-like. Never "the first utun".
//!
//! When the evidence is missing or disagrees, the result says so in
//! [`Interfaces::problems`]; the fallback refuses to act on such a result.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;

use super::linux_output::ProcRoute;
use super::macos_output::TableRoute;
use super::{IfaceInfo, Interfaces, PhysicalIf, TunnelIf, tunnel_like};

/// One IPv4 route, whichever reader produced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteEntry {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    /// `None` for a route without a next hop (`link#N`, a tunnel's name).
    pub gateway: Option<Ipv4Addr>,
    pub interface: String,
    /// Bound to its interface (macOS flag `I`): unbound traffic never takes it.
    pub scoped: bool,
    /// Linux's metric; 0 on macOS, which keeps one unscoped default.
    pub metric: u32,
}

impl RouteEntry {
    fn range(&self) -> (u64, u64) {
        let lo = u64::from(u32::from(self.dst)) & !((1u64 << (32 - self.prefix)) - 1);
        (lo, lo + (1u64 << (32 - self.prefix)) - 1)
    }

    fn is_default(&self) -> bool {
        self.prefix == 0
    }
}

/// The rows of `netstat -rn -f inet` as routes; a destination that does not read is an error,
/// never a skipped row.
pub fn from_netstat(rows: &[TableRoute]) -> Result<Vec<RouteEntry>, String> {
    rows.iter()
        .map(|r| {
            let (dst, prefix) = r.network().ok_or_else(|| {
                format!("netstat: destination {:?} not understood", r.destination)
            })?;
            Ok(RouteEntry {
                dst,
                prefix,
                gateway: r.gateway_v4(),
                interface: r.netif.clone(),
                scoped: r.is_scoped(),
                metric: 0,
            })
        })
        .collect()
}

/// The main table of `/proc/net/route` as routes.
pub fn from_proc(rows: &[ProcRoute]) -> Vec<RouteEntry> {
    rows.iter()
        .map(|r| RouteEntry {
            dst: r.dst,
            prefix: r.prefix,
            gateway: r.gateway,
            interface: r.interface.clone(),
            scoped: false,
            metric: r.metric,
        })
        .collect()
}

/// What the proxy's log says it binds to (its latest `bindInterface:` and `bindIp`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProxyBinding {
    pub interface: Option<String>,
    pub ip: Option<Ipv4Addr>,
}

impl ProxyBinding {
    /// From the log's last `bindInterface:` and `bindIp` as read; an unreadable address is
    /// no evidence.
    pub fn from_log(interface: Option<&str>, ip: Option<&str>) -> ProxyBinding {
        ProxyBinding {
            interface: interface.map(str::to_owned),
            ip: ip.and_then(|ip| ip.parse().ok()),
        }
    }
}

/// Where the live agent reads the proxy's latest binding from, each round.
pub type BindingSource = std::sync::Arc<dyn Fn() -> ProxyBinding + Send + Sync>;

/// Everything discovery judges from.
#[derive(Clone, Copy, Debug)]
pub struct Evidence<'a> {
    pub interfaces: &'a [IfaceInfo],
    /// The routing table; `Err` with why it could not be read.
    pub routes: Result<&'a [RouteEntry], &'a str>,
    pub physical_name: Option<&'a str>,
    pub tunnel_name: Option<&'a str>,
    pub proxy: &'a ProxyBinding,
}

/// The judgement, with what it rests on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Discovery {
    pub interfaces: Interfaces,
    /// Where unscoped traffic to the public address space goes (longest-prefix match).
    pub public_carrier: Option<String>,
    /// The tunnel carries unscoped traffic to (nearly) all the public address space.
    pub vpn_routes_everything: bool,
    /// Which evidence named the physical interface.
    pub physical_from: Option<&'static str>,
}

/// Address blocks that are not public (RFC 6890 and the documentation nets): a VPN need not
/// cover them to route everything.
const NOT_PUBLIC: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),
    ([10, 0, 0, 0], 8),
    ([100, 64, 0, 0], 10),
    ([127, 0, 0, 0], 8),
    ([169, 254, 0, 0], 16),
    ([172, 16, 0, 0], 12),
    ([192, 0, 0, 0], 24),
    ([192, 0, 2, 0], 24),
    ([192, 168, 0, 0], 16),
    ([198, 18, 0, 0], 15),
    ([198, 51, 100, 0], 24),
    ([203, 0, 113, 0], 24),
    ([224, 0, 0, 0], 3),
];

/// Share of the public space a carrier must take for "the VPN routes everything": the VPN
/// server's own host route and a few excluded hosts stay on the physical side.
const EVERYTHING: f64 = 0.99;

/// The public space as sorted, disjoint inclusive ranges.
fn public_ranges() -> Vec<(u64, u64)> {
    let mut blocked: Vec<(u64, u64)> = NOT_PUBLIC
        .iter()
        .map(|(a, p)| {
            let lo = u64::from(u32::from(Ipv4Addr::from(*a)));
            (lo, lo + (1u64 << (32 - p)) - 1)
        })
        .collect();
    blocked.sort();
    let mut out = Vec::new();
    let mut next = 0u64;
    for (lo, hi) in blocked {
        if lo > next {
            out.push((next, lo - 1));
        }
        next = next.max(hi + 1);
    }
    if next <= u64::from(u32::MAX) {
        out.push((next, u64::from(u32::MAX)));
    }
    out
}

/// How much of the public space each interface carries for unscoped traffic, by
/// longest-prefix match (elementary ranges between every route's bounds).
fn public_shares(routes: &[RouteEntry]) -> BTreeMap<String, f64> {
    let unscoped: Vec<&RouteEntry> = routes.iter().filter(|r| !r.scoped).collect();
    let public = public_ranges();
    let total: u64 = public.iter().map(|(lo, hi)| hi - lo + 1).sum();
    let mut cuts: Vec<u64> = public.iter().flat_map(|(lo, hi)| [*lo, hi + 1]).collect();
    for r in &unscoped {
        let (lo, hi) = r.range();
        cuts.extend([lo, hi + 1]);
    }
    cuts.sort();
    cuts.dedup();
    // CIDR blocks nest or are disjoint, so within an elementary range every route that holds
    // its first address holds all of it: the longest match is one lookup per prefix length.
    let mut by_block: std::collections::HashMap<(u8, u64), &RouteEntry> =
        std::collections::HashMap::new();
    for r in &unscoped {
        let key = (r.prefix, r.range().0);
        let keep = by_block.get(&key).is_some_and(|k| k.metric <= r.metric);
        if !keep {
            by_block.insert(key, r);
        }
    }
    let mut shares: BTreeMap<String, u64> = BTreeMap::new();
    for w in cuts.windows(2) {
        let (lo, hi) = (w[0], w[1] - 1);
        if !public.iter().any(|(a, b)| *a <= lo && hi <= *b) {
            continue;
        }
        let best = (0..=32u8).rev().find_map(|p| {
            let mask = !((1u64 << (32 - p)) - 1) & u64::from(u32::MAX);
            by_block.get(&(p, lo & mask))
        });
        if let Some(r) = best {
            *shares.entry(r.interface.clone()).or_default() += hi - lo + 1;
        }
    }
    shares
        .into_iter()
        .map(|(k, v)| (k, v as f64 / total as f64))
        .collect()
}

/// The interface that carries most of the public space for unscoped traffic (at least half),
/// with its share.
pub fn public_carrier(routes: &[RouteEntry]) -> Option<(String, f64)> {
    public_shares(routes)
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .filter(|(_, s)| *s >= 0.5)
}

/// The carrier takes (nearly) all of the public space.
pub fn carries_everything(share: f64) -> bool {
    share >= EVERYTHING
}

fn usable(i: &IfaceInfo) -> bool {
    i.up && !i.loopback && !i.ipv4.is_empty()
}

/// Judges the physical interface and the tunnel from the evidence. Pure.
pub fn judge(ev: &Evidence) -> Discovery {
    let mut problems = Vec::new();
    let routes: &[RouteEntry] = match ev.routes {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!("the routing table could not be read ({e})"));
            &[]
        }
    };
    let find = |name: &str| ev.interfaces.iter().find(|i| i.name == name);
    let carrier = public_carrier(routes);
    let carrier_is_tunnel = carrier
        .as_ref()
        .is_some_and(|(n, _)| find(n).is_some_and(tunnel_like));

    let (physical_name, physical_from) = physical(ev, routes, &mut problems);
    let physical = physical_name.as_deref().and_then(find).map(|i| {
        let ipv4 = ev
            .proxy
            .ip
            .filter(|ip| i.ipv4.contains(ip))
            .unwrap_or(i.ipv4[0]);
        let gateway = default_gateway(routes, &i.name);
        if gateway.is_none() {
            problems.push(format!(
                "{} has no default route with a gateway: no next hop to route the bypass to",
                i.name
            ));
        }
        PhysicalIf {
            name: i.name.clone(),
            index: i.index,
            ipv4,
            gateway,
        }
    });

    let carrier_tunnel = carrier
        .as_ref()
        .filter(|_| carrier_is_tunnel)
        .map(|(n, _)| n.as_str());
    let tunnel = tunnel(ev, carrier_tunnel, physical.as_ref(), &mut problems);
    let vpn_routes_everything = carrier_is_tunnel
        && carrier
            .as_ref()
            .is_some_and(|(_, s)| carries_everything(*s))
        && carrier.as_ref().map(|(n, _)| n.as_str()) != physical.as_ref().map(|p| p.name.as_str());
    Discovery {
        interfaces: Interfaces {
            physical,
            tunnel,
            problems,
        },
        public_carrier: carrier.map(|(n, _)| n),
        vpn_routes_everything,
        physical_from,
    }
}

/// The configured tunnel (a doubt when the catch-all goes elsewhere), else the tunnel-like
/// interface carrying the public space; never the physical interface.
fn tunnel(
    ev: &Evidence,
    carrier: Option<&str>,
    physical: Option<&PhysicalIf>,
    problems: &mut Vec<String>,
) -> Option<TunnelIf> {
    let name = match ev.tunnel_name {
        Some(name) => {
            if let Some(c) = carrier.filter(|c| *c != name) {
                problems.push(format!(
                    "probe.tunnel_interface is {name} but the VPN's catch-all routes go through {c}"
                ));
            }
            Some(name)
        }
        None => carrier,
    };
    let tunnel = name
        .filter(|n| Some(*n) != physical.map(|p| p.name.as_str()))
        .and_then(|n| ev.interfaces.iter().find(|i| i.name == n))
        .filter(|i| usable(i))
        .map(|i| TunnelIf {
            name: i.name.clone(),
            index: i.index,
            ipv4: i.ipv4[0],
        });
    if let (Some(name), None) = (ev.tunnel_name, &tunnel) {
        problems.push(format!(
            "probe.tunnel_interface {name} is not up with an IPv4 address"
        ));
    }
    tunnel
}

/// The gateway of the interface's own default route: the unscoped one, else its scoped one.
fn default_gateway(routes: &[RouteEntry], name: &str) -> Option<Ipv4Addr> {
    let mut own: Vec<&RouteEntry> = routes
        .iter()
        .filter(|r| r.is_default() && r.interface == name && r.gateway.is_some())
        .collect();
    own.sort_by_key(|r| (r.scoped, r.metric));
    own.first().and_then(|r| r.gateway)
}

/// The physical interface's name and the evidence that named it.
fn physical(
    ev: &Evidence,
    routes: &[RouteEntry],
    problems: &mut Vec<String>,
) -> (Option<String>, Option<&'static str>) {
    let find = |name: &str| ev.interfaces.iter().find(|i| i.name == name);
    if let Some(name) = ev.physical_name {
        if find(name).is_some_and(usable) {
            return (Some(name.to_owned()), Some("configuration"));
        }
        problems.push(format!(
            "probe.physical_interface {name} is not up with an IPv4 address"
        ));
        return (None, None);
    }
    let table = table_primary(ev, routes);
    let proxy = proxy_choice(ev, problems);
    match (proxy, table) {
        (Some(p), Ok(Some(t))) if p != t => {
            problems.push(format!(
                "the proxy binds to {p} while the unscoped default route is on {t}: \
                 the evidence disagrees"
            ));
            (Some(p), Some("the proxy's log"))
        }
        (Some(p), _) => (Some(p), Some("the proxy's log")),
        (None, Ok(Some(t))) => (Some(t), Some("the routing table")),
        (None, Ok(None)) => {
            if ev.routes.is_ok() {
                problems.push(
                    "no default route on an interface that is up with IPv4 and not a tunnel: \
                     no physical interface"
                        .into(),
                );
            }
            (None, None)
        }
        (None, Err(why)) => {
            problems.push(why);
            (None, None)
        }
    }
}

/// The interface the proxy's log names: `bindInterface`, or the one holding `bindIp`; a
/// disagreement between the two, or a name no interface answers to, is a problem.
fn proxy_choice(ev: &Evidence, problems: &mut Vec<String>) -> Option<String> {
    let by_name = ev.proxy.interface.as_deref();
    let by_ip = ev.proxy.ip.map(|ip| {
        ev.interfaces
            .iter()
            .filter(|i| usable(i))
            .find(|i| i.ipv4.contains(&ip))
            .map(|i| i.name.clone())
            .ok_or(ip)
    });
    match (by_name, by_ip) {
        (Some(n), Some(Ok(i))) if n != i => {
            problems.push(format!(
                "the proxy's bindInterface is {n} but its bindIp is held by {i}"
            ));
            None
        }
        (_, Some(Err(ip))) => {
            problems.push(format!(
                "the proxy binds to {ip}, which no interface holds now"
            ));
            None
        }
        (Some(n), _) if !ev.interfaces.iter().any(|i| i.name == n && usable(i)) => {
            problems.push(format!(
                "the proxy's bindInterface {n} is not up with an IPv4 address"
            ));
            None
        }
        (Some(n), _) => Some(n.to_owned()),
        (None, Some(Ok(i))) => Some(i),
        (None, None) => None,
    }
    // The log is not trusted to name a tunnel as the way out.
    .filter(|n| {
        let tunnel = ev.interfaces.iter().any(|i| i.name == *n && tunnel_like(i));
        if tunnel {
            problems.push(format!("the proxy binds to {n}, a tunnel"));
        }
        !tunnel
    })
}

/// The primary physical interface as the table says: the unscoped default's (lowest metric),
/// else the only one with a scoped default. `Err` when several tie.
fn table_primary(ev: &Evidence, routes: &[RouteEntry]) -> Result<Option<String>, String> {
    let physical = |r: &&RouteEntry| {
        ev.interfaces
            .iter()
            .find(|i| i.name == r.interface)
            .is_some_and(|i| usable(i) && !tunnel_like(i))
            // A default without a next hop (`link#48` on a VM bridge) leads nowhere outside.
            && r.gateway.is_some()
    };
    let mut unscoped: Vec<&RouteEntry> = routes
        .iter()
        .filter(|r| r.is_default() && !r.scoped)
        .filter(physical)
        .collect();
    unscoped.sort_by_key(|r| r.metric);
    if let [first, rest @ ..] = unscoped.as_slice() {
        let tied: Vec<&str> = rest
            .iter()
            .filter(|r| r.metric == first.metric && r.interface != first.interface)
            .map(|r| r.interface.as_str())
            .collect();
        if tied.is_empty() {
            return Ok(Some(first.interface.clone()));
        }
        return Err(format!(
            "unscoped default routes with the same metric on {} and {}: no primary interface",
            first.interface,
            tied.join(", ")
        ));
    }
    let mut scoped: Vec<&str> = routes
        .iter()
        .filter(|r| r.is_default() && r.scoped)
        .filter(physical)
        .map(|r| r.interface.as_str())
        .collect();
    scoped.sort();
    scoped.dedup();
    match scoped.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some((*one).to_owned())),
        many => Err(format!(
            "no unscoped physical default route and scoped defaults on {}: nothing says which \
             one the proxy binds to",
            many.join(", ")
        )),
    }
}

/// The saved machine that `diagnose --from DIR` reads, one file per tool's output, written by
/// `diagnose --save DIR` or by hand.
pub mod saved {
    /// `netstat -rn -f inet`.
    pub const NETSTAT: &str = "netstat-rn.txt";
    /// `ifconfig -a`.
    pub const IFCONFIG: &str = "ifconfig.txt";
    /// `route -n get default` (optional).
    pub const ROUTE_GET_DEFAULT: &str = "route-get-default.txt";
    /// The proxy's log (optional).
    pub const PROXY_LOG: &str = "transparent_proxy.log";
    /// `pfctl -v -s Anchors` (optional).
    pub const PF_ANCHORS: &str = "pfctl-anchors.txt";
    /// The rules of the fallback's anchor, `pfctl -a ANCHOR -s rules` (optional).
    pub const PF_RULES: &str = "pfctl-rules.txt";
    /// `sw_vers` (optional).
    pub const SW_VERS: &str = "sw_vers.txt";
    /// `uname -m` (optional).
    pub const UNAME_M: &str = "uname-m.txt";
    /// PIA's `CFBundleShortVersionString`, one line (optional).
    pub const PIA_VERSION: &str = "pia-version.txt";
    /// The split-tunnel keys of PIA's settings.json, and nothing else (optional).
    pub const PIA_SETTINGS: &str = "pia-split-tunnel-settings.json";
    /// One probe round as JSON (optional).
    pub const PROBE_ROUND: &str = "probe-round.json";
    /// The agent's `/health` (optional).
    pub const HEALTH: &str = "health.json";
    /// Linux: `ip -4 route` (instead of netstat-rn.txt).
    pub const IP_ROUTE: &str = "ip-route.txt";
    /// Linux: `ip -4 addr` (instead of ifconfig.txt).
    pub const IP_ADDR: &str = "ip-addr.txt";
    /// Linux: `ip rule`.
    pub const IP_RULE: &str = "ip-rule.txt";
    /// What the bundle is: the tool's version, whether it was redacted, why files are missing.
    pub const BUNDLE: &str = "bundle.json";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, index: u32, ip: Option<[u8; 4]>, p2p: bool) -> IfaceInfo {
        IfaceInfo {
            name: name.into(),
            index,
            up: true,
            point_to_point: p2p,
            loopback: name.starts_with("lo"),
            ipv4: ip.map(Ipv4Addr::from).into_iter().collect(),
        }
    }

    fn route(dst: [u8; 4], prefix: u8, gw: Option<[u8; 4]>, dev: &str, scoped: bool) -> RouteEntry {
        RouteEntry {
            dst: dst.into(),
            prefix,
            gateway: gw.map(Ipv4Addr::from),
            interface: dev.into(),
            scoped,
            metric: 0,
        }
    }

    fn judge_with(ifaces: &[IfaceInfo], routes: &[RouteEntry], proxy: &ProxyBinding) -> Discovery {
        judge(&Evidence {
            interfaces: ifaces,
            routes: Ok(routes),
            physical_name: None,
            tunnel_name: None,
            proxy,
        })
    }

    fn two_nics_and_two_tunnels() -> Vec<IfaceInfo> {
        vec![
            iface("lo0", 1, Some([127, 0, 0, 1]), false),
            iface("en0", 4, Some([10, 0, 15, 15]), false),
            iface("en1", 5, Some([192, 0, 2, 15]), false),
            iface("utun3", 19, Some([100, 64, 0, 7]), true),
            iface("utun6", 22, Some([10, 16, 11, 143]), true),
        ]
    }

    #[test]
    fn the_cover_in_pieces_and_the_halves_are_the_same_catch_all() {
        let ifaces = two_nics_and_two_tunnels();
        let mut routes = vec![route([0; 4], 0, Some([10, 0, 15, 1]), "en0", false)];
        // OpenVPN-style cover without 0/8: 1, 2/7, 4/6, ..., 128.0/1.
        for p in 1..=8u8 {
            let first = 1u32 << (32 - p);
            routes.push(route(
                Ipv4Addr::from(first).octets(),
                p,
                None,
                "utun6",
                false,
            ));
        }
        let d = judge_with(&ifaces, &routes, &ProxyBinding::default());
        assert_eq!(d.interfaces.tunnel.as_ref().unwrap().name, "utun6");
        assert!(d.vpn_routes_everything);
        assert_eq!(d.interfaces.physical.as_ref().unwrap().name, "en0");
        assert!(
            d.interfaces.problems.is_empty(),
            "{:?}",
            d.interfaces.problems
        );
        // Without 128.0/1, the upper half stays on en0: not everything.
        routes.remove(1);
        let d = judge_with(&ifaces, &routes, &ProxyBinding::default());
        assert!(!d.vpn_routes_everything);
    }

    #[test]
    fn the_proxy_names_the_physical_and_a_disagreement_is_a_problem() {
        let ifaces = two_nics_and_two_tunnels();
        let routes = vec![
            route([0; 4], 0, Some([10, 0, 15, 1]), "en0", false),
            route([0; 4], 0, Some([192, 0, 2, 1]), "en1", true),
            route([0; 4], 1, None, "utun6", false),
            route([128, 0, 0, 0], 1, None, "utun6", false),
        ];
        let by_ip = ProxyBinding {
            interface: None,
            ip: Some(Ipv4Addr::new(10, 0, 15, 15)),
        };
        let d = judge_with(&ifaces, &routes, &by_ip);
        assert_eq!(d.physical_from, Some("the proxy's log"));
        assert!(d.interfaces.problems.is_empty());
        let en1 = ProxyBinding {
            interface: Some("en1".into()),
            ip: None,
        };
        let d = judge_with(&ifaces, &routes, &en1);
        let p = d.interfaces.physical.as_ref().unwrap();
        assert_eq!(
            (p.name.as_str(), p.gateway),
            ("en1", Some(Ipv4Addr::new(192, 0, 2, 1)))
        );
        assert_eq!(
            d.interfaces.problems.len(),
            1,
            "{:?}",
            d.interfaces.problems
        );
        let stale = ProxyBinding {
            interface: None,
            ip: Some(Ipv4Addr::new(10, 0, 15, 99)),
        };
        let d = judge_with(&ifaces, &routes, &stale);
        assert!(d.interfaces.problems[0].contains("no interface holds"));
        let split = ProxyBinding {
            interface: Some("en1".into()),
            ip: Some(Ipv4Addr::new(10, 0, 15, 15)),
        };
        assert!(
            !judge_with(&ifaces, &routes, &split)
                .interfaces
                .problems
                .is_empty()
        );
    }

    /// The log can be written by others: whatever it names, only a real physical interface
    /// that agrees with the table is used, and anything else is a doubt, never a choice.
    #[test]
    fn a_forged_binding_never_picks_a_tunnel_or_loopback() {
        let ifaces = two_nics_and_two_tunnels();
        let vpn_owns_default = vec![
            route([0; 4], 0, None, "utun6", false),
            route([0; 4], 0, Some([10, 0, 15, 1]), "en0", true),
        ];
        for forged in [
            ProxyBinding {
                interface: Some("utun6".into()),
                ip: None,
            },
            ProxyBinding {
                interface: Some("lo0".into()),
                ip: None,
            },
            ProxyBinding {
                interface: Some("en9".into()),
                ip: None,
            },
            ProxyBinding {
                interface: None,
                ip: Some(Ipv4Addr::new(127, 0, 0, 1)),
            },
            ProxyBinding {
                interface: None,
                ip: Some(Ipv4Addr::new(10, 16, 11, 143)),
            },
        ] {
            let d = judge_with(&ifaces, &vpn_owns_default, &forged);
            let p = d.interfaces.physical.as_ref().map(|p| p.name.as_str());
            assert!(p.is_none() || p == Some("en0"), "{forged:?} chose {p:?}");
            assert!(!d.interfaces.trusted(), "{forged:?} must leave a doubt");
        }
    }

    #[test]
    fn several_scoped_defaults_without_evidence_are_ambiguous() {
        let ifaces = two_nics_and_two_tunnels();
        let routes = vec![
            route([0; 4], 0, None, "utun6", false),
            route([0; 4], 0, Some([10, 0, 15, 1]), "en0", true),
            route([0; 4], 0, Some([192, 0, 2, 1]), "en1", true),
        ];
        let d = judge_with(&ifaces, &routes, &ProxyBinding::default());
        assert_eq!(d.interfaces.physical, None);
        assert!(d.vpn_routes_everything);
        assert!(
            d.interfaces.problems[0].contains("en0, en1"),
            "{:?}",
            d.interfaces.problems
        );
        let unreadable = judge(&Evidence {
            interfaces: &ifaces,
            routes: Err("netstat: not found"),
            physical_name: None,
            tunnel_name: None,
            proxy: &ProxyBinding::default(),
        });
        assert_eq!(unreadable.interfaces.physical, None);
        assert!(unreadable.interfaces.problems[0].contains("netstat: not found"));
    }

    #[test]
    fn public_space_excludes_the_reserved_blocks() {
        let r = public_ranges();
        assert_eq!(r[0], (1 << 24, (10 << 24) - 1));
        assert_eq!(r.last().unwrap().1, (224u64 << 24) - 1);
        let shares = public_shares(&[route([10, 0, 0, 0], 8, None, "utun2", false)]);
        assert!(
            shares.is_empty(),
            "a private subnet carries no public space"
        );
    }
}
