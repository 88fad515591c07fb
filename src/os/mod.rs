//! Platform facts: which interface is physical, which is the tunnel, the gateway.

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
