//! Route, link and address changes as triggers: learn within milliseconds that a VPN added or
//! removed its `0.0.0.0/1` + `128.0.0.0/1`, that the default route moved, or that an interface
//! went up, down or changed address.
//!
//! Contract of the platform part (selected once, below): `EventSocket::open()` subscribes to
//! the kernel's change messages and `EventSocket::wait()` resolves when at least one arrived
//! (`true` when one may matter); `routes()` reads the IPv4 routing table now.
//! - Linux: an rtnetlink socket (netlink-sys) joined to the link, IPv4 address and IPv4 route
//!   groups; the table from `/proc/net/route`, read by `os` (its one reader).
//! - macOS: a `PF_ROUTE` socket (`AF_UNSPEC`, so `RTM_IFINFO` and the `RTM_ADD` echoes that go
//!   out with protocol 0 are seen; receive buffer raised from xnu's 8 KiB because overflow is
//!   silent there); messages parsed by [`pf_route::parse`]; the table from `os`'s reader
//!   (`netstat -rn -f inet`), the one discovery and `diagnose` judge.
//!
//! Messages are never used as state: both kernels remove a vanished interface's routes without
//! a route message (Linux sends RTM_NEWLINK/DELLINK, xnu RTM_IFINFO), macOS drops messages
//! silently when the buffer is full, and an `RTM_ADD` echo names no interface. So on any
//! message the watcher waits a short debounce (a VPN adds its routes in a burst), re-reads the
//! table and the interfaces, and publishes a [`RouteState`] only when it differs from the last
//! one. A periodic re-read is the backstop for anything lost.

pub mod pf_route;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as sys;
#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as sys;

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::os::IfaceInfo;

/// An IPv4 route as the table lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    /// 0 when the source names no index (Linux names the interface instead).
    pub ifindex: u32,
    pub ifname: Option<String>,
    /// Scoped to its interface (macOS `RTF_IFSCOPE`): not used by unbound traffic.
    pub scoped: bool,
}

/// A row of `os`'s one table reader, as the watcher compares it (no index: the row names the
/// interface).
impl From<crate::os::discovery::RouteEntry> for Route {
    fn from(r: crate::os::discovery::RouteEntry) -> Route {
        Route {
            dst: r.dst,
            prefix: r.prefix,
            gateway: r.gateway,
            ifindex: 0,
            ifname: Some(r.interface),
            scoped: r.scoped,
        }
    }
}

/// What the rounds care about in the routing table and interfaces; equal states mean nothing
/// worth a round happened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RouteState {
    /// The VPN-style halves present, as `0.0.0.0/1 dev utun4` / `128.0.0.0/1 dev utun4`.
    pub half_routes: Vec<String>,
    /// The primary default route: interface and gateway.
    pub default_route: Option<(String, Option<Ipv4Addr>)>,
    /// Interfaces that are up, not loopback, with IPv4 addresses.
    pub interfaces: Vec<(String, Vec<Ipv4Addr>)>,
}

/// The state a table and an interface list amount to. Pure: tested with made-up tables.
pub fn state_of(routes: &[Route], ifaces: &[IfaceInfo]) -> RouteState {
    let name = |r: &Route| {
        r.ifname.clone().unwrap_or_else(|| {
            ifaces
                .iter()
                .find(|i| i.index == r.ifindex)
                .map_or_else(|| format!("#{}", r.ifindex), |i| i.name.clone())
        })
    };
    let unscoped = || routes.iter().filter(|r| !r.scoped);
    let mut half_routes: Vec<String> = unscoped()
        .filter(|r| r.prefix == 1 && (r.dst == Ipv4Addr::UNSPECIFIED || r.dst.octets()[0] == 128))
        .map(|r| format!("{}/1 dev {}", r.dst, name(r)))
        .collect();
    half_routes.sort();
    half_routes.dedup();
    let default_route = unscoped()
        .find(|r| r.prefix == 0)
        .map(|r| (name(r), r.gateway));
    let mut interfaces: Vec<(String, Vec<Ipv4Addr>)> = ifaces
        .iter()
        .filter(|i| i.up && !i.loopback && !i.ipv4.is_empty())
        .map(|i| {
            let mut ips = i.ipv4.clone();
            ips.sort();
            (i.name.clone(), ips)
        })
        .collect();
    interfaces.sort();
    RouteState {
        half_routes,
        default_route,
        interfaces,
    }
}

/// The state now, read from the OS.
pub fn read_state() -> RouteState {
    use crate::os::Os;
    state_of(&routes(), &crate::os::System::default().interfaces())
}

/// The IPv4 routing table now (empty where unsupported or unreadable).
pub fn routes() -> Vec<Route> {
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    return sys::routes();
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    Vec::new()
}

/// How the watcher paces itself.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// From the first message of a burst to the re-read.
    pub debounce: Duration,
    /// Re-read this often even without messages.
    pub backstop: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            debounce: Duration::from_millis(100),
            backstop: Duration::from_secs(30),
        }
    }
}

/// Starts watching; the receiver holds the current state and is marked changed only when it
/// changes. Fails when the kernel's change messages cannot be subscribed to (unsupported OS,
/// sandbox); the caller then runs on its own schedule alone.
pub fn spawn(opts: Options) -> std::io::Result<watch::Receiver<RouteState>> {
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    {
        let socket = sys::EventSocket::open()?;
        let (tx, rx) = watch::channel(read_state());
        tokio::spawn(run(socket, tx, opts));
        Ok(rx)
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        let _ = opts;
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "no route-change messages on this OS",
        ))
    }
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
async fn run(mut socket: sys::EventSocket, tx: watch::Sender<RouteState>, opts: Options) {
    let mut pending: Option<Instant> = None;
    let mut last_read = Instant::now();
    let mut failing = false;
    loop {
        let due = pending.unwrap_or(last_read + opts.backstop);
        tokio::select! {
            got = socket.wait() => match got {
                Ok(relevant) => {
                    failing = false;
                    if relevant && pending.is_none() {
                        // Not pushed back by later messages: the re-read stays within a
                        // debounce of the first one.
                        pending = Some(Instant::now() + opts.debounce);
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "route-change socket failed; relying on the periodic re-read");
                    }
                    failing = true;
                    // A broken socket must not spin; the backstop still runs meanwhile.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            _ = tokio::time::sleep_until(due) => {
                pending = None;
                last_read = Instant::now();
                // A /proc or sysctl read and getifaddrs: well under a millisecond, run inline
                // (block_in_place would hand the worker's core to a new thread each time).
                let now = read_state();
                tx.send_if_modified(|old| {
                    let changed = *old != now;
                    if changed {
                        tracing::debug!(state = ?now, "routes or interfaces changed");
                        *old = now;
                    }
                    changed
                });
            }
            _ = tx.closed() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, index: u32, up: bool, ip: Option<[u8; 4]>) -> IfaceInfo {
        IfaceInfo {
            name: name.into(),
            index,
            up,
            point_to_point: name.starts_with("utun"),
            loopback: name.starts_with("lo"),
            ipv4: ip.map(Ipv4Addr::from).into_iter().collect(),
        }
    }

    fn route(dst: [u8; 4], prefix: u8, ifindex: u32, scoped: bool) -> Route {
        Route {
            dst: dst.into(),
            prefix,
            gateway: Some(Ipv4Addr::new(10, 0, 15, 1)),
            ifindex,
            ifname: None,
            scoped,
        }
    }

    #[test]
    fn state_names_the_halves_the_default_and_live_interfaces() {
        let ifaces = [
            iface("lo0", 1, true, Some([127, 0, 0, 1])),
            iface("en0", 4, true, Some([10, 0, 15, 15])),
            iface("utun0", 15, true, None),
            iface("utun4", 20, true, Some([10, 16, 11, 143])),
            iface("en1", 5, false, Some([192, 0, 2, 9])),
        ];
        let healthy = [route([0; 4], 0, 4, false), route([0; 4], 0, 4, true)];
        let s = state_of(&healthy, &ifaces);
        assert_eq!(s.half_routes, Vec::<String>::new());
        assert_eq!(
            s.default_route,
            Some(("en0".into(), Some(Ipv4Addr::new(10, 0, 15, 1))))
        );
        let names: Vec<&str> = s.interfaces.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["en0", "utun4"]);

        let mut vpn = healthy.to_vec();
        vpn.push(route([128, 0, 0, 0], 1, 20, false));
        let one_half = state_of(&vpn, &ifaces);
        assert_ne!(one_half, s, "a single half is a change");
        vpn.push(route([0, 0, 0, 0], 1, 20, false));
        // A scoped /1 and an unrelated /1 are not the VPN's halves.
        vpn.push(route([0, 0, 0, 0], 1, 4, true));
        vpn.push(route([64, 0, 0, 0], 1, 4, false));
        let up = state_of(&vpn, &ifaces);
        assert_eq!(
            up.half_routes,
            ["0.0.0.0/1 dev utun4", "128.0.0.0/1 dev utun4"]
        );
        // Same table in another order: the same state (no spurious round).
        vpn.reverse();
        assert_eq!(state_of(&vpn, &ifaces), up);
    }

    #[test]
    fn unknown_index_is_named_not_dropped() {
        let s = state_of(&[route([0; 4], 1, 99, false)], &[]);
        assert_eq!(s.half_routes, ["0.0.0.0/1 dev #99"]);
    }
}
