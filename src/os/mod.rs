//! Platform facts, behind one seam.
//!
//! Contract: each platform module provides, as plain data and nothing else,
//! - `default_routes(&Tools) -> Vec<DefaultRoute>`: the routing table's default routes, one
//!   per interface that has one (the VPN's `0/1` and `128/1` are not default routes);
//! - `routing_facts(&Tools, &Interfaces) -> RoutingFacts`: what decides where a socket bound
//!   to the physical address leaves (the VPN's halves and their interface, the scoped default
//!   route, IP forwarding, pf anchors on macOS; the kernel's own answer on Linux), each read
//!   from a tool's output by a pure parser, each missing fact with the command's error.
//!
//! Interfaces are listed by pnet_datalink on every platform. The module is chosen once, here:
//! `linux.rs`, `macos.rs`, or `other.rs` (no facts) elsewhere. Tools run through
//! [`command`] with the configured paths; the parsers of what the tools print live in
//! [`macos_output`] and [`linux_output`], built everywhere so they are tested on any host.
//! On Linux, [`route_table`] is the main routing table for `netwatch` as well: one reader of
//! `/proc/net/route`.
//!
//! The rest of the crate sees the OS only through [`Os`]: [`System`] is the real one, tests
//! and the demo pass their own. Choosing the interfaces is one pure function, [`choose`].
//! Discovery runs every probe round: DHCP changes the address, the tunnel comes and goes.
//! [`versions`] reads which macOS, PIA and CPU these are (`Os::platform`).

pub mod command;
pub mod discovery;
mod facts;
pub mod linux_output;
pub mod macos_output;
pub mod store;
pub mod trusted;
pub mod versions;

#[cfg_attr(target_os = "linux", path = "linux.rs")]
#[cfg_attr(target_os = "macos", path = "macos.rs")]
#[cfg_attr(not(any(target_os = "linux", target_os = "macos")), path = "other.rs")]
mod platform;

pub use command::Tools;
pub use discovery::{Discovery, ProxyBinding, RouteEntry};
pub use facts::RoutingFacts;
#[cfg(target_os = "linux")]
pub use platform::route_table;
pub use versions::{MacosVersion, Platform};

use std::net::Ipv4Addr;

use serde::Serialize;

/// The physical interface the bypass must leave through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PhysicalIf {
    pub name: String,
    pub index: u32,
    pub ipv4: Ipv4Addr,
    /// Default gateway on this interface, when the routing table has one.
    pub gateway: Option<Ipv4Addr>,
}

/// The VPN tunnel interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TunnelIf {
    pub name: String,
    pub index: u32,
    pub ipv4: Ipv4Addr,
}

/// What discovery found in one round.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Interfaces {
    pub physical: Option<PhysicalIf>,
    pub tunnel: Option<TunnelIf>,
    /// Why the choice cannot be trusted (evidence missing or disagreeing); the fallback
    /// refuses to act while this is not empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl Interfaces {
    /// The evidence agreed: safe to act on.
    pub fn trusted(&self) -> bool {
        self.problems.is_empty()
    }
}

/// An interface as the OS lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceInfo {
    pub name: String,
    pub index: u32,
    pub up: bool,
    pub point_to_point: bool,
    pub loopback: bool,
    pub ipv4: Vec<Ipv4Addr>,
}

/// A default route (`0.0.0.0/0`; the VPN's `0/1` and `128/1` are not default routes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultRoute {
    pub interface: String,
    pub gateway: Ipv4Addr,
    pub metric: u32,
}

/// Names VPN clients give their tunnels; a veth or bridge never looks like these.
pub(crate) fn tunnel_like(i: &IfaceInfo) -> bool {
    i.point_to_point
        || ["utun", "tun", "wg", "ppp", "ipsec"]
            .iter()
            .any(|p| i.name.starts_with(p))
}

/// Everything the agent learns from the OS, in one place: [`System`] in production, fakes in
/// tests and the demo.
pub trait Os: Send + Sync {
    fn interfaces(&self) -> Vec<IfaceInfo>;
    /// The IPv4 routing table, from the platform's one reader; `Err` with why not.
    fn route_table(&self) -> Result<Vec<RouteEntry>, String>;
    fn routing_facts(&self, ifs: &Interfaces) -> RoutingFacts;
    /// macOS's and PIA's versions and the architecture; unknown (`None`) unless said.
    fn platform(&self) -> Platform {
        Platform::default()
    }
}

/// The machine the agent runs on, asked through its tools.
#[derive(Clone, Debug, Default)]
pub struct System {
    pub tools: Tools,
}

impl System {
    pub fn new(tools: Tools) -> Self {
        System { tools }
    }
}

impl Os for System {
    fn interfaces(&self) -> Vec<IfaceInfo> {
        list_interfaces()
    }

    fn route_table(&self) -> Result<Vec<RouteEntry>, String> {
        platform::table(&self.tools)
    }

    fn routing_facts(&self, ifs: &Interfaces) -> RoutingFacts {
        platform::routing_facts(&self.tools, ifs)
    }

    /// `sw_vers`, PIA's `Info.plist` (macOS only) and `uname -m`.
    fn platform(&self) -> Platform {
        versions::read(self.tools.timeout)
    }
}

/// Interfaces as pnet_datalink lists them.
fn list_interfaces() -> Vec<IfaceInfo> {
    pnet_datalink::interfaces()
        .into_iter()
        .map(|i| IfaceInfo {
            up: i.is_up(),
            point_to_point: i.is_point_to_point(),
            loopback: i.is_loopback(),
            ipv4: i
                .ips
                .iter()
                .filter_map(|n| match n.ip() {
                    std::net::IpAddr::V4(a) => Some(a),
                    _ => None,
                })
                .collect(),
            index: i.index,
            name: i.name,
        })
        .collect()
}

/// Discovers the interfaces now, from the OS's interfaces and routing table and what the
/// proxy's log says it binds to: the same [`discovery::judge`] that `diagnose --from` runs on
/// saved files.
pub fn discover_with(
    os: &dyn Os,
    physical_name: Option<&str>,
    tunnel_name: Option<&str>,
    proxy: &ProxyBinding,
) -> Discovery {
    let table = os.route_table();
    discovery::judge(&discovery::Evidence {
        interfaces: &os.interfaces(),
        routes: table.as_deref().map_err(String::as_str),
        physical_name,
        tunnel_name,
        proxy,
    })
}

/// [`discover_with`] without the proxy's word.
pub fn discover(os: &dyn Os, physical_name: Option<&str>, tunnel_name: Option<&str>) -> Interfaces {
    discover_with(os, physical_name, tunnel_name, &ProxyBinding::default()).interfaces
}

/// A fixture's text under `tests/fixtures/{platform}/`, its `#` header (the source) dropped.
#[cfg(test)]
pub(crate) fn fixture(platform: &str, name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(platform)
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let body: Vec<&str> = text.lines().skip_while(|l| l.starts_with('#')).collect();
    let mut out = body.join("\n");
    out.push('\n');
    out
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
            loopback: false,
            ipv4: ip.map(Ipv4Addr::from).into_iter().collect(),
        }
    }

    /// A machine made of fixed answers: what tests and the demo pass instead of [`System`].
    struct FakeOs(Vec<IfaceInfo>, Result<Vec<RouteEntry>, String>);

    impl Os for FakeOs {
        fn interfaces(&self) -> Vec<IfaceInfo> {
            self.0.clone()
        }
        fn route_table(&self) -> Result<Vec<RouteEntry>, String> {
            self.1.clone()
        }
        fn routing_facts(&self, _ifs: &Interfaces) -> RoutingFacts {
            RoutingFacts::default()
        }
    }

    fn default_via(dev: &str, gw: [u8; 4], metric: u32) -> RouteEntry {
        RouteEntry {
            dst: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            gateway: Some(gw.into()),
            interface: dev.into(),
            scoped: false,
            metric,
        }
    }

    #[test]
    fn discovery_asks_only_the_seam() {
        let mut routes = vec![default_via("en0", [10, 0, 15, 1], 0)];
        for half in [[0, 0, 0, 0], [128, 0, 0, 0]] {
            routes.push(RouteEntry {
                dst: half.into(),
                prefix: 1,
                gateway: Some(Ipv4Addr::new(10, 16, 0, 1)),
                interface: "utun4".into(),
                scoped: false,
                metric: 0,
            });
        }
        let os = FakeOs(
            vec![
                iface("utun2", 18, Some([100, 64, 0, 9]), true),
                iface("en0", 4, Some([10, 0, 15, 15]), false),
                iface("utun4", 20, Some([10, 16, 11, 143]), true),
            ],
            Ok(routes),
        );
        let got = discover(&os, None, None);
        assert_eq!(
            got.physical.map(|p| (p.name, p.gateway)),
            Some(("en0".into(), Some(Ipv4Addr::new(10, 0, 15, 1))))
        );
        // The tunnel carrying the halves, not the first tunnel-like interface with IPv4.
        assert_eq!(got.tunnel.map(|t| t.name), Some("utun4".into()));
        let empty = discover(&FakeOs(vec![], Ok(vec![])), None, None);
        assert_eq!((&empty.physical, &empty.tunnel), (&None, &None));
        assert!(!empty.trusted(), "no physical interface is said");
    }

    #[test]
    fn configured_names_win_and_missing_ones_are_problems() {
        let os = FakeOs(
            vec![
                iface("eth0", 2, Some([192, 0, 2, 5]), false),
                iface("eth1", 3, Some([10, 0, 15, 15]), false),
                iface("wg0", 9, Some([10, 16, 0, 2]), false),
            ],
            Ok(vec![default_via("eth0", [192, 0, 2, 1], 0)]),
        );
        let got = discover(&os, Some("eth1"), Some("wg0"));
        let p = got.physical.as_ref().unwrap();
        assert_eq!((p.name.as_str(), p.gateway), ("eth1", None));
        assert_eq!(got.tunnel.unwrap().name, "wg0");
        assert!(!got.problems.is_empty(), "eth1 has no gateway: said");
        let none = discover(&os, Some("en9"), Some("tun7"));
        assert_eq!((&none.physical, &none.tunnel), (&None, &None));
        assert_eq!(none.problems.len(), 2, "{:?}", none.problems);
        // Two unscoped defaults: the lowest metric is the primary.
        let metrics = FakeOs(
            os.0.clone(),
            Ok(vec![
                default_via("eth0", [192, 0, 2, 1], 100),
                default_via("eth1", [10, 0, 15, 1], 50),
            ]),
        );
        assert_eq!(
            discover(&metrics, None, None).physical.unwrap().name,
            "eth1"
        );
    }
}
