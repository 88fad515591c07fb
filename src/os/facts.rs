//! What decides where a socket bound to the physical address leaves, as read from the OS, and
//! the sentences `diagnose` prints from it. Measured facts only: the likely cause is named by
//! the caller from these and the probes, never assumed here.

use serde::Serialize;

use super::macos_output::{RouteGet, TableRoute, is_pia_anchor};
use super::{Interfaces, discovery};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RoutingFacts {
    /// The IPv4 routing table (`netstat -rn -f inet`), when it could be read.
    pub route_table: Option<Vec<TableRoute>>,
    /// What an unscoped lookup of a public address answers (`route -n get 203.0.113.10`):
    /// where unbound traffic goes. Not `get default`, which the /0 route answers even while
    /// the VPN's halves carry everything.
    pub default_lookup: Option<RouteGet>,
    /// What a lookup scoped to the physical interface answers (`route -n get -ifscope IF
    /// default`); `Some(None)` when the kernel has no such route.
    pub scoped_lookup: Option<Option<RouteGet>>,
    /// `net.inet.ip.forwarding` (macOS).
    pub ip_forwarding: Option<bool>,
    /// Every pf anchor loaded (`pfctl -v -s Anchors`).
    pub pf_anchors: Option<Vec<String>>,
    /// Linux: the kernel's route for traffic from the physical address (`ip route get`).
    pub kernel_route: Option<String>,
    /// Facts that could not be read, each with its command's error.
    pub unavailable: Vec<String>,
}

impl RoutingFacts {
    /// The VPN's halves of the default route (`0/1`, `128.0/1`), each with its interface.
    pub fn vpn_halves(&self) -> Vec<&TableRoute> {
        self.route_table
            .iter()
            .flatten()
            .filter(|r| r.is_vpn_half())
            .collect()
    }

    /// Interface-scoped default routes (flag `I`): what lets a socket bound to an interface
    /// leave through it while the VPN's routes win for everything else.
    pub fn scoped_defaults(&self) -> Vec<&TableRoute> {
        self.route_table
            .iter()
            .flatten()
            .filter(|r| r.destination == "default" && r.is_scoped())
            .collect()
    }

    /// Whether the physical interface has a scoped default route, from the scoped lookup when
    /// it was made, else from the table.
    pub fn scoped_default_on(&self, interface: &str) -> Option<bool> {
        match &self.scoped_lookup {
            Some(answer) => Some(answer.as_ref().is_some_and(|r| {
                r.is_scoped() && r.is_whole_default() && r.interface.as_deref() == Some(interface)
            })),
            None => self
                .route_table
                .as_ref()
                .map(|_| self.scoped_defaults().iter().any(|r| r.netif == interface)),
        }
    }

    pub fn pia_anchors(&self) -> Vec<&str> {
        self.pf_anchors
            .iter()
            .flatten()
            .map(String::as_str)
            .filter(|a| is_pia_anchor(a))
            .collect()
    }

    /// One sentence per fact, for `diagnose`.
    pub fn describe(&self, ifs: &Interfaces) -> Vec<String> {
        let physical = ifs.physical.as_ref();
        let mut out: Vec<String> = [
            self.halves_sentence(),
            self.carrier_sentence(),
            self.lookup_sentence(),
            physical.and_then(|p| self.scoped_default_sentence(&p.name)),
            self.ip_forwarding
                .map(|on| format!("IP forwarding is {}", if on { "on" } else { "off" })),
            self.anchors_sentence(),
            self.kernel_route
                .as_ref()
                .zip(physical)
                .map(|(route, p)| format!("the kernel routes traffic from {} as: {route}", p.ipv4)),
        ]
        .into_iter()
        .flatten()
        .collect();
        out.extend(self.unavailable.iter().map(|e| format!("not read: {e}")));
        out
    }

    /// Where the VPN's 0/1 and 128/1 routes go, when the table has them.
    fn halves_sentence(&self) -> Option<String> {
        let halves = self.vpn_halves();
        let half = |low: bool| {
            halves.iter().find(|r| {
                r.network()
                    .is_some_and(|(a, _)| (a.octets()[0] == 0) == low)
            })
        };
        match (half(true), half(false)) {
            (Some(l), Some(h)) if l.netif == h.netif => Some(format!(
                "the VPN's 0/1 and 128/1 routes are present, through {}",
                l.netif
            )),
            (Some(l), Some(h)) => Some(format!(
                "the VPN's 0/1 route goes through {} and its 128/1 route through {}",
                l.netif, h.netif
            )),
            (Some(r), None) | (None, Some(r)) => Some(format!(
                "only one of the VPN's halves is present: {} through {}",
                r.destination, r.netif
            )),
            (None, None) => None,
        }
    }

    /// Which interface carries the public address space, as the table says.
    fn carrier_sentence(&self) -> Option<String> {
        let table = self.route_table.as_ref()?;
        Some(match discovery::from_netstat(table) {
            Ok(routes) => match discovery::public_carrier(&routes) {
                Some((via, share)) if discovery::carries_everything(share) => format!(
                    "unscoped traffic to public addresses goes through {via} (all of the public space)"
                ),
                Some((via, share)) => format!(
                    "unscoped traffic to public addresses goes through {via} ({:.0}% of the public space)",
                    share * 100.0
                ),
                None => "no route carries most of the public space".into(),
            },
            Err(e) => format!("the routing table is not understood: {e}"),
        })
    }

    /// Where an unscoped lookup leaves, and which route answered it.
    fn lookup_sentence(&self) -> Option<String> {
        let r = self.default_lookup.as_ref()?;
        let interface = r.interface.as_ref()?;
        let what = if r.is_whole_default() {
            "the default route"
        } else {
            "a VPN route narrower than the default"
        };
        Some(format!(
            "an unscoped lookup of an address leaves through {interface} (answered by {what})"
        ))
    }

    /// Whether the physical interface has its scoped default route, and via which gateway.
    fn scoped_default_sentence(&self, physical: &str) -> Option<String> {
        if self.scoped_default_on(physical)? {
            let gateway = self
                .scoped_lookup
                .iter()
                .flatten()
                .find_map(|r| r.gateway.clone())
                .or_else(|| {
                    self.scoped_defaults()
                        .into_iter()
                        .find(|r| r.netif == physical)
                        .map(|r| r.gateway.clone())
                })
                .unwrap_or_default();
            Some(format!(
                "a scoped default route on {physical} via {gateway} is present"
            ))
        } else {
            Some(format!(
                "no scoped default route on {physical} (PIA adds one for split tunnel)"
            ))
        }
    }

    /// PIA's pf anchors, when the anchors could be listed.
    fn anchors_sentence(&self) -> Option<String> {
        self.pf_anchors.as_ref()?;
        let pia = self.pia_anchors();
        Some(if pia.is_empty() {
            "no pf anchor of PIA is loaded".into()
        } else {
            format!("PIA's pf anchors are loaded: {}", pia.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::os::PhysicalIf;
    use crate::os::macos_output::tests::fixture;
    use crate::os::macos_output::{parse_anchors, parse_netstat_inet, parse_route_get};

    fn en0() -> Interfaces {
        Interfaces {
            physical: Some(PhysicalIf {
                name: "en0".into(),
                index: 4,
                ipv4: Ipv4Addr::new(10, 0, 15, 15),
                gateway: Some(Ipv4Addr::new(10, 0, 15, 1)),
            }),
            tunnel: None,
            problems: Vec::new(),
        }
    }

    /// What a Mac with the VPN up and split tunnel on shows, from real outputs.
    fn vpn_up() -> RoutingFacts {
        RoutingFacts {
            route_table: Some(
                parse_netstat_inet(&crate::os::macos_output::tests::halves_with_header()).unwrap(),
            ),
            default_lookup: Some(parse_route_get(&fixture("route-get-vpn-half.txt")).unwrap()),
            scoped_lookup: Some(Some(
                parse_route_get(&fixture("route-get-ifscope-en0-default.txt")).unwrap(),
            )),
            ip_forwarding: Some(false),
            pf_anchors: Some(
                parse_anchors(&fixture("pfctl-v-s-anchors.txt"))
                    .into_iter()
                    .chain(["com.privateinternetaccess.vpn/100.blockAll".to_owned()])
                    .collect(),
            ),
            kernel_route: None,
            unavailable: vec![],
        }
    }

    #[test]
    fn sentences_from_parsed_macos_output() {
        assert_eq!(
            vpn_up().describe(&en0()),
            [
                "the VPN's 0/1 and 128/1 routes are present, through utun6",
                "unscoped traffic to public addresses goes through utun6 (all of the public space)",
                // `route get 1`, answered by the 0/1 half.
                "an unscoped lookup of an address leaves through utun3 (answered by a VPN route narrower than the default)",
                "a scoped default route on en0 via 192.168.1.1 is present",
                "IP forwarding is off",
                "PIA's pf anchors are loaded: com.privateinternetaccess.vpn/100.blockAll",
            ]
        );
    }

    #[test]
    fn missing_scoped_default_and_unreadable_facts_are_said() {
        let facts = RoutingFacts {
            scoped_lookup: Some(None),
            pf_anchors: Some(vec!["com.apple".into()]),
            unavailable: vec!["/sbin/sysctl -n net.inet.ip.forwarding: exit status: 1: x".into()],
            ..vpn_up()
        };
        let lines = facts.describe(&en0());
        assert!(
            lines
                .contains(&"no scoped default route on en0 (PIA adds one for split tunnel)".into())
        );
        assert!(lines.contains(&"no pf anchor of PIA is loaded".into()));
        assert_eq!(
            lines.last().unwrap(),
            "not read: /sbin/sysctl -n net.inet.ip.forwarding: exit status: 1: x"
        );
        // A scoped answer on another interface, or an unscoped one, is not en0's scoped route.
        let unscoped = parse_route_get(&fixture("route-get-default.txt")).unwrap();
        let facts = RoutingFacts {
            scoped_lookup: Some(Some(unscoped)),
            ..vpn_up()
        };
        assert_eq!(facts.scoped_default_on("en0"), Some(false));
        // Without the scoped lookup, the table decides.
        let facts = RoutingFacts {
            scoped_lookup: None,
            ..vpn_up()
        };
        assert_eq!(facts.scoped_default_on("en0"), Some(true));
        assert_eq!(facts.scoped_default_on("en7"), Some(false));
        let unread = RoutingFacts {
            scoped_lookup: None,
            route_table: None,
            ..vpn_up()
        };
        assert_eq!(unread.scoped_default_on("en0"), None);
    }

    #[test]
    fn a_tunnel_owning_the_default_routes_everything_without_halves() {
        let facts = RoutingFacts {
            route_table: Some(
                parse_netstat_inet(&fixture("netstat-rn-inet-full-tunnel.txt")).unwrap(),
            ),
            ..Default::default()
        };
        assert_eq!(
            facts.describe(&en0()),
            [
                // WireGuard owns the unscoped default: no halves, yet everything.
                "unscoped traffic to public addresses goes through utun3 (all of the public space)",
                "a scoped default route on en0 via 172.20.10.1 is present",
            ]
        );
    }
}
