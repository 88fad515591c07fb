//! Linux: rtnetlink multicast (netlink-sys) as the trigger, `/proc/net/route` (read by `os`) as
//! the table.

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::Route;
use crate::os::linux_output::ProcRoute;

/// Joined to the link, IPv4 address and IPv4 route groups: link down/delete is how a
/// vanished interface's routes are announced (the kernel sends no route message for them).
pub struct EventSocket {
    fd: AsyncFd<Socket>,
    buf: Vec<u8>,
}

impl EventSocket {
    pub fn open() -> io::Result<EventSocket> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        let groups =
            (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV4_ROUTE) as u32;
        socket.bind(&SocketAddr::new(0, groups))?;
        socket.set_non_blocking(true)?;
        // Bursts (a VPN connecting) fit; an overflow still shows as ENOBUFS, a trigger.
        socket.set_rx_buf_sz(256 * 1024)?;
        Ok(EventSocket {
            // SAFETY: the descriptor is owned by the value moved in and stays open until the
            // AsyncFd drops it.
            fd: unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }?,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Waits for messages and drains them; every message of these groups may matter.
    pub async fn wait(&mut self) -> io::Result<bool> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut got = false;
            loop {
                self.buf.clear();
                match guard.get_inner().recv(&mut self.buf, 0) {
                    Ok(_) => got = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // Messages were lost: the table must be re-read.
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => got = true,
                    Err(e) => return Err(e),
                }
            }
            guard.clear_ready();
            if got {
                return Ok(true);
            }
        }
    }
}

/// The main table, from `os`'s reader of `/proc/net/route`.
pub fn routes() -> Vec<Route> {
    from_table(crate::os::route_table())
}

/// Every row as a route, sorted by metric (the kernel's order among equals) so the primary
/// default comes first.
fn from_table(mut rows: Vec<ProcRoute>) -> Vec<Route> {
    rows.sort_by_key(|r| r.metric);
    crate::os::discovery::from_proc(&rows)
        .into_iter()
        .map(Route::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::os::IfaceInfo;
    use crate::os::linux_output::parse_proc_net_route;
    use crate::os::linux_output::tests::TABLE;

    fn table(text: &str) -> Vec<(String, String, u8, Option<Ipv4Addr>)> {
        from_table(parse_proc_net_route(text))
            .into_iter()
            .map(|r| (r.ifname.unwrap(), r.dst.to_string(), r.prefix, r.gateway))
            .collect()
    }

    #[test]
    fn every_row_lowest_metric_first() {
        let gw = |a, b, c, d| Some(Ipv4Addr::new(a, b, c, d));
        assert_eq!(
            table(TABLE),
            vec![
                ("en0".into(), "0.0.0.0".into(), 0, gw(10, 0, 15, 1)),
                ("utun4".into(), "0.0.0.0".into(), 1, gw(10, 16, 0, 1)),
                ("utun4".into(), "128.0.0.0".into(), 1, gw(10, 16, 0, 1)),
                ("en0".into(), "10.0.15.0".into(), 24, None),
                ("dummy0".into(), "0.0.0.0".into(), 0, None),
                ("wlan0".into(), "0.0.0.0".into(), 0, gw(198, 51, 100, 1)),
            ]
        );
    }

    /// The kernel lists the VPN's `0/1` before the defaults; the state still names the
    /// lowest-metric default and both halves through the tunnel.
    #[test]
    fn state_of_a_table_with_vpn_halves() {
        let routes = from_table(parse_proc_net_route(&crate::os::fixture(
            "linux",
            "proc-net-route-vpn-halves.txt",
        )));
        let iface = |name: &str, index, ip: [u8; 4]| IfaceInfo {
            name: name.into(),
            index,
            up: true,
            point_to_point: name.starts_with("tun"),
            loopback: false,
            ipv4: vec![ip.into()],
        };
        let ifaces = [
            iface("eth0", 2, [10, 0, 15, 15]),
            iface("wlan0", 3, [198, 51, 100, 7]),
            iface("tun0", 9, [10, 16, 11, 143]),
        ];
        let state = crate::netwatch::state_of(&routes, &ifaces);
        assert_eq!(
            state.half_routes,
            ["0.0.0.0/1 dev tun0", "128.0.0.0/1 dev tun0"]
        );
        assert_eq!(
            state.default_route,
            Some(("eth0".into(), Some(Ipv4Addr::new(10, 0, 15, 1))))
        );
    }
}
