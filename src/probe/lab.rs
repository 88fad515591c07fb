//! The lab's addresses: one vocabulary for `lab/lab.sh` (checked by the lab tests), the demo's
//! replayed rounds and the tests. A Mac on a physical network in 10.0.15.0/24 with PIA's tunnel
//! in 10.16.0.0/16 (the report's addresses), egressing as documentation addresses (RFC 5737),
//! so nothing here names a real host.

use std::net::Ipv4Addr;

use crate::os::{Interfaces, PhysicalIf, TunnelIf};

/// The physical interface and the Mac's address on it (the proxy's `bindIp`).
pub const PHYSICAL_IF: &str = "en0";
pub const PHYSICAL_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 15, 15);
/// The home router: the physical network's gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 15, 1);
/// PIA's tunnel interface, the Mac's address on it and the VPN server's end, where the VPN's
/// `0/1` and `128/1` routes point.
pub const TUNNEL_IF: &str = "utun4";
pub const TUNNEL_IP: Ipv4Addr = Ipv4Addr::new(10, 16, 11, 143);
pub const TUNNEL_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 16, 0, 1);
/// The home IP: what the physical path (and a working bypass) egresses as.
pub const HOME_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 47);
/// The VPN's exit: what the tunnel and the default path egress as.
pub const VPN_EXIT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 18);
/// The what-is-my-IP service the probes ask (port 80).
pub const WHOAMI_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

/// The Mac's interfaces: en0 with its gateway and, with `tunnel`, utun4.
pub fn interfaces(tunnel: bool) -> Interfaces {
    Interfaces {
        physical: Some(PhysicalIf {
            name: PHYSICAL_IF.into(),
            index: 4,
            ipv4: PHYSICAL_IP,
            gateway: Some(GATEWAY),
        }),
        tunnel: tunnel.then(|| TunnelIf {
            name: TUNNEL_IF.into(),
            index: 20,
            ipv4: TUNNEL_IP,
        }),
        problems: Vec::new(),
    }
}
