//! Platform facts: which interface is physical, which is the tunnel, the gateway.
//!
//! Gathering is per OS (`linux.rs`, `macos.rs`); choosing is one pure function, [`choose`],
//! tested with made-up tables. Discovery runs every probe round: DHCP changes the address,
//! the tunnel comes and goes.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "macos")]
mod macos;

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

/// Interfaces as pnet_datalink lists them.
pub fn list_interfaces() -> Vec<IfaceInfo> {
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

/// Default routes from the OS routing table.
pub fn default_routes() -> Vec<DefaultRoute> {
    #[cfg(target_os = "linux")]
    return linux::default_routes();
    #[cfg(target_os = "macos")]
    return macos::default_routes();
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    Vec::new()
}

/// Discovers the interfaces now.
pub fn discover(physical_name: Option<&str>, tunnel_name: Option<&str>) -> Interfaces {
    choose(
        &list_interfaces(),
        &default_routes(),
        physical_name,
        tunnel_name,
    )
}

/// Facts about the routing that explain a broken bypass, in words (for `diagnose`).
pub fn routing_facts(ifs: &Interfaces) -> Vec<String> {
    #[cfg(target_os = "linux")]
    return linux::routing_facts(ifs);
    #[cfg(target_os = "macos")]
    return macos::routing_facts(ifs);
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        let _ = ifs;
        Vec::new()
    }
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
