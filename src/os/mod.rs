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

pub mod command;
mod facts;
pub mod linux_output;
pub mod macos_output;

#[cfg_attr(target_os = "linux", path = "linux.rs")]
#[cfg_attr(target_os = "macos", path = "macos.rs")]
#[cfg_attr(not(any(target_os = "linux", target_os = "macos")), path = "other.rs")]
mod platform;

pub use command::Tools;
pub use facts::RoutingFacts;
#[cfg(target_os = "linux")]
pub use platform::route_table;

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
fn tunnel_like(i: &IfaceInfo) -> bool {
    i.point_to_point
        || ["utun", "tun", "wg", "ppp", "ipsec"]
            .iter()
            .any(|p| i.name.starts_with(p))
}

/// Picks the physical interface (configured, else the one with a default route that is not a
/// tunnel, lowest metric first) and the tunnel (configured, else an up tunnel-like interface
/// with an IPv4 address; macOS has several utuns with only IPv6 link-local addresses).
pub fn choose(
    ifaces: &[IfaceInfo],
    routes: &[DefaultRoute],
    physical_name: Option<&str>,
    tunnel_name: Option<&str>,
) -> Interfaces {
    let usable = |i: &&IfaceInfo| i.up && !i.loopback && !i.ipv4.is_empty();
    let gateway_of = |name: &str| {
        routes
            .iter()
            .filter(|r| r.interface == name)
            .min_by_key(|r| r.metric)
            .map(|r| r.gateway)
    };
    let physical = match physical_name {
        Some(name) => ifaces.iter().filter(usable).find(|i| i.name == name),
        None => {
            let mut defaults: Vec<&DefaultRoute> = routes.iter().collect();
            defaults.sort_by_key(|r| r.metric);
            defaults
                .iter()
                .filter_map(|r| ifaces.iter().filter(usable).find(|i| i.name == r.interface))
                .find(|i| !tunnel_like(i))
        }
    };
    let physical = physical.map(|i| PhysicalIf {
        name: i.name.clone(),
        index: i.index,
        ipv4: i.ipv4[0],
        gateway: gateway_of(&i.name),
    });
    let tunnel = ifaces
        .iter()
        .filter(usable)
        .filter(|i| Some(i.name.as_str()) != physical.as_ref().map(|p| p.name.as_str()))
        .find(|i| match tunnel_name {
            Some(name) => i.name == name,
            None => tunnel_like(i),
        })
        .map(|i| TunnelIf {
            name: i.name.clone(),
            index: i.index,
            ipv4: i.ipv4[0],
        });
    Interfaces { physical, tunnel }
}

/// Everything the agent learns from the OS, in one place: [`System`] in production, fakes in
/// tests and the demo.
pub trait Os: Send + Sync {
    fn interfaces(&self) -> Vec<IfaceInfo>;
    fn default_routes(&self) -> Vec<DefaultRoute>;
    fn routing_facts(&self, ifs: &Interfaces) -> RoutingFacts;
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

    fn default_routes(&self) -> Vec<DefaultRoute> {
        platform::default_routes(&self.tools)
    }

    fn routing_facts(&self, ifs: &Interfaces) -> RoutingFacts {
        platform::routing_facts(&self.tools, ifs)
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

/// Discovers the interfaces now.
pub fn discover(os: &dyn Os, physical_name: Option<&str>, tunnel_name: Option<&str>) -> Interfaces {
    choose(
        &os.interfaces(),
        &os.default_routes(),
        physical_name,
        tunnel_name,
    )
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

    #[test]
    fn physical_is_the_non_tunnel_default_route_and_tunnel_needs_ipv4() {
        let ifaces = vec![
            IfaceInfo {
                loopback: true,
                ..iface("lo0", 1, Some([127, 0, 0, 1]), false)
            },
            iface("en0", 4, Some([10, 0, 15, 15]), false),
            iface("utun0", 15, None, true),
            iface("utun4", 20, Some([10, 16, 11, 143]), true),
        ];
        let routes = vec![
            DefaultRoute {
                interface: "utun4".into(),
                gateway: Ipv4Addr::new(10, 16, 0, 1),
                metric: 0,
            },
            DefaultRoute {
                interface: "en0".into(),
                gateway: Ipv4Addr::new(10, 0, 15, 1),
                metric: 100,
            },
        ];
        let got = choose(&ifaces, &routes, None, None);
        assert_eq!(
            got.physical,
            Some(PhysicalIf {
                name: "en0".into(),
                index: 4,
                ipv4: Ipv4Addr::new(10, 0, 15, 15),
                gateway: Some(Ipv4Addr::new(10, 0, 15, 1))
            })
        );
        assert_eq!(
            got.tunnel,
            Some(TunnelIf {
                name: "utun4".into(),
                index: 20,
                ipv4: Ipv4Addr::new(10, 16, 11, 143)
            })
        );
    }

    /// A machine made of fixed answers: what tests and the demo pass instead of [`System`].
    struct FakeOs(Vec<IfaceInfo>, Vec<DefaultRoute>);

    impl Os for FakeOs {
        fn interfaces(&self) -> Vec<IfaceInfo> {
            self.0.clone()
        }
        fn default_routes(&self) -> Vec<DefaultRoute> {
            self.1.clone()
        }
        fn routing_facts(&self, _ifs: &Interfaces) -> RoutingFacts {
            RoutingFacts::default()
        }
    }

    #[test]
    fn discovery_asks_only_the_seam() {
        let os = FakeOs(
            vec![
                iface("en0", 4, Some([10, 0, 15, 15]), false),
                iface("utun4", 20, Some([10, 16, 11, 143]), true),
            ],
            vec![DefaultRoute {
                interface: "en0".into(),
                gateway: Ipv4Addr::new(10, 0, 15, 1),
                metric: 0,
            }],
        );
        let got = discover(&os, None, None);
        assert_eq!(
            got.physical.map(|p| (p.name, p.gateway)),
            Some(("en0".into(), Some(Ipv4Addr::new(10, 0, 15, 1))))
        );
        assert_eq!(got.tunnel.map(|t| t.name), Some("utun4".into()));
        assert_eq!(
            discover(&FakeOs(vec![], vec![]), None, None),
            Interfaces::default()
        );
    }

    #[test]
    fn configured_names_win_and_missing_ones_give_none() {
        let ifaces = vec![
            iface("eth0", 2, Some([192, 0, 2, 5]), false),
            iface("eth1", 3, Some([10, 0, 15, 15]), false),
            iface("wg0", 9, Some([10, 16, 0, 2]), false),
        ];
        let routes = vec![DefaultRoute {
            interface: "eth0".into(),
            gateway: Ipv4Addr::new(192, 0, 2, 1),
            metric: 0,
        }];
        let got = choose(&ifaces, &routes, Some("eth1"), Some("wg0"));
        let p = got.physical.as_ref().unwrap();
        assert_eq!((p.name.as_str(), p.gateway), ("eth1", None));
        assert_eq!(got.tunnel.unwrap().name, "wg0");
        let none = choose(&ifaces, &[], None, Some("tun7"));
        assert_eq!(none, Interfaces::default());
    }
}
