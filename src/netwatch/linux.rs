//! Linux: rtnetlink multicast (netlink-sys) as the trigger, `/proc/net/route` as the table.

use std::io;
use std::net::Ipv4Addr;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::Route;

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

pub fn routes() -> Vec<Route> {
    std::fs::read_to_string("/proc/net/route")
        .map(|t| parse_proc_net_route(&t))
        .unwrap_or_default()
}

/// Every route of the main table: `Iface Destination Gateway Flags RefCnt Use Metric Mask`,
/// addresses in host-order hex, sorted by metric so the primary default comes first.
pub fn parse_proc_net_route(text: &str) -> Vec<Route> {
    let mut rows: Vec<(u32, Route)> = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let hex = |s: &str| u32::from_str_radix(s, 16).ok();
            let (dst, gateway, metric, mask) = (
                hex(f.get(1)?)?,
                hex(f.get(2)?)?,
                f.get(6)?.parse().ok()?,
                hex(f.get(7)?)?,
            );
            let route = Route {
                dst: Ipv4Addr::from(dst.swap_bytes()),
                prefix: mask.swap_bytes().leading_ones() as u8,
                gateway: (gateway != 0).then(|| Ipv4Addr::from(gateway.swap_bytes())),
                ifindex: 0,
                ifname: Some(f[0].to_owned()),
                scoped: false,
            };
            Some((metric, route))
        })
        .collect();
    rows.sort_by_key(|(metric, _)| *metric);
    rows.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_default_and_subnets() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
en0\t00000000\t010F000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
utun4\t00000000\t0100100A\t0003\t0\t0\t0\t00000080\t0\t0\t0\n\
utun4\t00000080\t0100100A\t0003\t0\t0\t0\t00000080\t0\t0\t0\n\
en0\t000F000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
broken line\n";
        let r = parse_proc_net_route(text);
        let got: Vec<(String, String, u8, Option<Ipv4Addr>)> = r
            .iter()
            .map(|r| {
                (
                    r.ifname.clone().unwrap(),
                    r.dst.to_string(),
                    r.prefix,
                    r.gateway,
                )
            })
            .collect();
        let gw = |a, b, c, d| Some(Ipv4Addr::new(a, b, c, d));
        assert_eq!(
            got,
            vec![
                ("en0".into(), "0.0.0.0".into(), 0, gw(10, 0, 15, 1)),
                ("utun4".into(), "0.0.0.0".into(), 1, gw(10, 16, 0, 1)),
                ("utun4".into(), "128.0.0.0".into(), 1, gw(10, 16, 0, 1)),
                ("en0".into(), "10.0.15.0".into(), 24, None),
                ("wlan0".into(), "0.0.0.0".into(), 0, gw(192, 168, 1, 1)),
            ]
        );
    }
}
