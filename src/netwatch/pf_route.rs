//! macOS routing-socket messages (`PF_ROUTE`), parsed from bytes: a pure function that never
//! panics, compiled and tested on every platform.
//!
//! Layouts follow xnu (apple-oss-distributions/xnu, tag xnu-11417.101.15): `bsd/net/route.h`
//! (`struct rt_msghdr`, 92 bytes; `RTM_*`, `RTA_*`, `RTF_*`), `bsd/net/if.h` (`if_msghdr`,
//! `ifa_msghdr`) and `bsd/net/rtsock.c` (`ROUNDUP32`, `rt_msg1`/`rt_msg2`, `rtm_scrub`). Only
//! the first four bytes (`msglen`, `version`, `type`) are common to every message, so the
//! type is read before anything else. Every Darwin target is little-endian: header fields are
//! read as such; addresses are in network order. The routing table itself is read from
//! `netstat -rn -f inet` (`os::discovery`), one reader for discovery, diagnose and the watcher;
//! messages here only trigger a re-read.
//!
//! Hand-written rather than a crate's: the maintained crates either panic on short input
//! (net-route), need bindgen and an SDK to build (net-route), or stop at route messages
//! (route_manager, routex); here only the type, the error and the route matter.

use std::net::Ipv4Addr;

use super::Route;

pub const RTM_VERSION: u8 = 5;
pub const RTM_ADD: u8 = 0x1;
pub const RTM_DELETE: u8 = 0x2;
pub const RTM_CHANGE: u8 = 0x3;
pub const RTM_GET: u8 = 0x4;
pub const RTM_NEWADDR: u8 = 0xc;
pub const RTM_DELADDR: u8 = 0xd;
pub const RTM_IFINFO: u8 = 0xe;

const RTA_DST: i32 = 0x1;
const RTA_GATEWAY: i32 = 0x2;
const RTA_NETMASK: i32 = 0x4;
/// RTAX_DST .. RTAX_BRD: sockaddrs follow the header in this order, one per bit set.
const RTAX_MAX: usize = 8;

pub const RTF_UP: i32 = 0x1;
pub const RTF_GATEWAY: i32 = 0x2;
pub const RTF_HOST: i32 = 0x4;
/// The route is scoped to `rtm_index` (configd's per-interface defaults).
pub const RTF_IFSCOPE: i32 = 0x100_0000;

const AF_INET: u8 = 2;
const AF_LINK: u8 = 18;

/// `sizeof(struct rt_msghdr)`.
pub const RT_MSGHDR_LEN: usize = 92;
/// `sizeof(struct if_msghdr)`.
const IF_MSGHDR_LEN: usize = 112;
/// `sizeof(struct ifa_msghdr)`.
const IFA_MSGHDR_LEN: usize = 20;

/// One message, reduced to what the watcher needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// `RTM_ADD`, `RTM_DELETE`, `RTM_CHANGE`, `RTM_GET` (dumps) and other route messages.
    Route {
        kind: u8,
        /// Non-zero: a request that failed, broadcast all the same.
        errno: i32,
        flags: i32,
        /// The IPv4 route it names; `None` for other families or no destination.
        route: Option<Route>,
    },
    /// `RTM_IFINFO`: an interface went up or down (or its MTU changed).
    IfInfo { index: u16, flags: i32 },
    /// `RTM_NEWADDR` / `RTM_DELADDR`.
    Addr { kind: u8, index: u16 },
    /// Any other type (multicast, redirects, misses...).
    Other { kind: u8 },
}

impl Msg {
    /// Whether it may change what [`super::RouteState`] holds. `RTM_GET` is left out: every
    /// `route get` by any process reaches every routing socket.
    pub fn is_relevant(&self) -> bool {
        match self {
            Msg::Route { kind, errno, .. } => {
                *errno == 0 && matches!(*kind, RTM_ADD | RTM_DELETE | RTM_CHANGE)
            }
            Msg::IfInfo { .. } | Msg::Addr { .. } => true,
            Msg::Other { .. } => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("message shorter than its header ({0} bytes)")]
    Short(usize),
    #[error("rtm_msglen {0} does not fit the {1} bytes read")]
    Length(usize, usize),
    #[error("routing message version {0}, expected 5")]
    Version(u8),
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// `ROUNDUP32` of rtsock.c: 4-byte steps on Darwin (64-bit too); a zero length takes 4.
fn roundup32(len: usize) -> usize {
    if len == 0 { 4 } else { 1 + ((len - 1) | 3) }
}

/// Parses one message from the start of `buf`; returns it and its length (`rtm_msglen`). A
/// read from the routing socket holds one message; a buffer of several is walked by that
/// length.
pub fn parse(buf: &[u8]) -> Result<(Msg, usize), Error> {
    if buf.len() < 4 {
        return Err(Error::Short(buf.len()));
    }
    let len = usize::from(u16::from_le_bytes([buf[0], buf[1]]));
    if len < 4 || len > buf.len() {
        return Err(Error::Length(len, buf.len()));
    }
    let msg = &buf[..len];
    if msg[2] != RTM_VERSION {
        return Err(Error::Version(msg[2]));
    }
    let kind = msg[3];
    let need = |n: usize| {
        if len < n {
            Err(Error::Short(len))
        } else {
            Ok(())
        }
    };
    let parsed = match kind {
        RTM_IFINFO => {
            need(IF_MSGHDR_LEN)?;
            Msg::IfInfo {
                flags: i32_at(msg, 8).unwrap_or(0),
                index: u16_at(msg, 12).unwrap_or(0),
            }
        }
        RTM_NEWADDR | RTM_DELADDR => {
            need(IFA_MSGHDR_LEN)?;
            Msg::Addr {
                kind,
                index: u16_at(msg, 12).unwrap_or(0),
            }
        }
        0x1..=0x9 | 0x11 | 0x14 | 0x15 => {
            need(RT_MSGHDR_LEN)?;
            let index = u16_at(msg, 4).unwrap_or(0);
            let flags = i32_at(msg, 8).unwrap_or(0);
            let addrs = i32_at(msg, 12).unwrap_or(0);
            let errno = i32_at(msg, 24).unwrap_or(0);
            Msg::Route {
                kind,
                errno,
                flags,
                route: route(&msg[RT_MSGHDR_LEN..], addrs, flags, index),
            }
        }
        _ => Msg::Other { kind },
    };
    Ok((parsed, len))
}

/// The sockaddrs after the header, by RTAX slot; a slot whose bytes run past the end is
/// absent (kernel messages may omit the last one's padding, not its bytes).
fn sockaddrs(mut b: &[u8], addrs: i32) -> [Option<&[u8]>; RTAX_MAX] {
    let mut out = [None; RTAX_MAX];
    for (i, slot) in out.iter_mut().enumerate() {
        if addrs & (1 << i) == 0 {
            continue;
        }
        let Some(&sa_len) = b.first() else { break };
        let sa_len = usize::from(sa_len);
        if sa_len > b.len() {
            break;
        }
        *slot = Some(&b[..sa_len]);
        b = b.get(roundup32(sa_len)..).unwrap_or_default();
    }
    out
}

/// An IPv4 address from a (possibly trimmed) `sockaddr_in`: bytes 4..8, missing ones zero.
fn inet(sa: &[u8]) -> Ipv4Addr {
    let mut a = [0u8; 4];
    for (i, byte) in a.iter_mut().enumerate() {
        *byte = sa.get(4 + i).copied().unwrap_or(0);
    }
    Ipv4Addr::from(a)
}

fn route(body: &[u8], addrs: i32, flags: i32, index: u16) -> Option<Route> {
    let sa = sockaddrs(body, addrs);
    let dst = sa[0].filter(|_| addrs & RTA_DST != 0)?;
    // The destination decides the family; a netmask's own family byte is unreliable.
    if dst.get(1) != Some(&AF_INET) {
        return None;
    }
    let prefix = match sa[2].filter(|_| addrs & RTA_NETMASK != 0) {
        // Trimmed of trailing zero bytes: /0 comes with sa_len 0 or 4.
        Some(mask) => u32::from(inet(mask)).leading_ones() as u8,
        None if flags & RTF_HOST != 0 => 32,
        // No netmask and not a host route: BSD stores it as a host route all the same.
        None => 32,
    };
    let (mut gateway, mut ifindex) = (None, u32::from(index));
    if let Some(gw) = sa[1].filter(|_| addrs & RTA_GATEWAY != 0) {
        match gw.get(1) {
            Some(&AF_INET) => gateway = Some(inet(gw)),
            // `route add -interface utunN`: the gateway is the interface itself.
            Some(&AF_LINK) if ifindex == 0 => ifindex = u32::from(u16_at(gw, 2).unwrap_or(0)),
            _ => {}
        }
    }
    Some(Route {
        dst: inet(dst),
        prefix,
        gateway,
        ifindex,
        ifname: None,
        scoped: flags & RTF_IFSCOPE != 0,
    })
}

/// Messages built as xnu lays them out, for the tests here and the watcher's.
#[cfg(test)]
pub(crate) mod build {
    use super::*;

    /// A `sockaddr_in` of `sa_len` bytes (16 untrimmed; a netmask may be shorter).
    pub fn sin(addr: [u8; 4], sa_len: u8) -> Vec<u8> {
        let mut full = vec![16, AF_INET, 0, 0];
        full.extend(addr);
        full.extend([0; 8]);
        let mut v = full[..usize::from(sa_len)].to_vec();
        if !v.is_empty() {
            v[0] = sa_len;
        }
        v
    }

    /// A `sockaddr_dl` naming an interface (`sdl_index`, `sdl_nlen` and the name).
    pub fn sdl(index: u16, name: &str) -> Vec<u8> {
        let mut v = vec![0, AF_LINK];
        v.extend(index.to_le_bytes());
        v.extend([0, name.len() as u8, 0, 0]);
        v.extend(name.as_bytes());
        while v.len() < 20 {
            v.push(0);
        }
        v[0] = v.len() as u8;
        v
    }

    /// An `rt_msghdr` and its sockaddrs, each padded by ROUNDUP32 except the last when
    /// `pad_last` is false (kernel-built messages end at the last sockaddr's length).
    pub fn rt_msg(
        kind: u8,
        flags: i32,
        index: u16,
        errno: i32,
        sockaddrs: &[(i32, Vec<u8>)],
        pad_last: bool,
    ) -> Vec<u8> {
        let mut m = vec![0u8; RT_MSGHDR_LEN];
        m[2] = RTM_VERSION;
        m[3] = kind;
        m[4..6].copy_from_slice(&index.to_le_bytes());
        m[8..12].copy_from_slice(&flags.to_le_bytes());
        let addrs: i32 = sockaddrs.iter().map(|(bit, _)| bit).sum();
        m[12..16].copy_from_slice(&addrs.to_le_bytes());
        m[16..20].copy_from_slice(&4242i32.to_le_bytes());
        m[24..28].copy_from_slice(&errno.to_le_bytes());
        for (i, (_, sa)) in sockaddrs.iter().enumerate() {
            m.extend(sa);
            if pad_last || i + 1 < sockaddrs.len() {
                m.resize(m.len() + roundup32(sa.len()) - sa.len(), 0);
            }
        }
        let len = m.len() as u16;
        m[0..2].copy_from_slice(&len.to_le_bytes());
        m
    }

    /// `RTM_IFINFO` (`if_msghdr`, 112 bytes).
    pub fn ifinfo(index: u16, flags: i32) -> Vec<u8> {
        let mut m = vec![0u8; IF_MSGHDR_LEN];
        m[0..2].copy_from_slice(&(IF_MSGHDR_LEN as u16).to_le_bytes());
        m[2] = RTM_VERSION;
        m[3] = RTM_IFINFO;
        m[8..12].copy_from_slice(&flags.to_le_bytes());
        m[12..14].copy_from_slice(&index.to_le_bytes());
        // ifi_mtu, where an rt_msghdr has rtm_errno: must not be read as an error.
        m[24..28].copy_from_slice(&1500i32.to_le_bytes());
        m
    }

    /// `RTM_NEWADDR` / `RTM_DELADDR` (`ifa_msghdr`, 20 bytes) with an IFA address.
    pub fn ifa(kind: u8, index: u16, addr: [u8; 4]) -> Vec<u8> {
        let mut m = vec![0u8; IFA_MSGHDR_LEN];
        m[2] = RTM_VERSION;
        m[3] = kind;
        m[4..8].copy_from_slice(&0x20i32.to_le_bytes());
        m[12..14].copy_from_slice(&index.to_le_bytes());
        m.extend(sin(addr, 16));
        let len = m.len() as u16;
        m[0..2].copy_from_slice(&len.to_le_bytes());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    const DST: i32 = 0x1;
    const GW: i32 = 0x2;
    const MASK: i32 = 0x4;
    const IFP: i32 = 0x10;

    /// `route add -net 0.0.0.0/1 10.16.0.1` as echoed to every socket: the requester's own
    /// addresses (mask trimmed to 5 bytes: `80`), `rtm_index` 0, RTF_DONE (0x40) added.
    fn add_half(first: u8, pad_last: bool) -> Vec<u8> {
        rt_msg(
            RTM_ADD,
            RTF_UP | RTF_GATEWAY | 0x40 | 0x800,
            0,
            0,
            &[
                (DST, sin([first, 0, 0, 0], 16)),
                (GW, sin([10, 16, 0, 1], 16)),
                (MASK, sin([128, 0, 0, 0], 5)),
            ],
            pad_last,
        )
    }

    #[test]
    fn split_route_add_echo() {
        for pad in [true, false] {
            let m = add_half(128, pad);
            let (msg, len) = parse(&m).unwrap();
            assert_eq!(len, m.len());
            assert!(msg.is_relevant());
            let Msg::Route { kind, route, .. } = msg else {
                panic!("{msg:?}")
            };
            assert_eq!(kind, RTM_ADD);
            assert_eq!(
                route,
                Some(Route {
                    dst: Ipv4Addr::new(128, 0, 0, 0),
                    prefix: 1,
                    gateway: Some(Ipv4Addr::new(10, 16, 0, 1)),
                    ifindex: 0,
                    ifname: None,
                    scoped: false,
                })
            );
        }
    }

    #[test]
    fn interface_route_takes_the_index_from_the_link_gateway() {
        // `route add -net 0.0.0.0/1 -interface utun4`.
        let m = rt_msg(
            RTM_ADD,
            RTF_UP | 0x40,
            0,
            0,
            &[
                (DST, sin([0, 0, 0, 0], 16)),
                (GW, sdl(20, "utun4")),
                (MASK, sin([128, 0, 0, 0], 5)),
            ],
            true,
        );
        let Msg::Route { route: Some(r), .. } = parse(&m).unwrap().0 else {
            panic!()
        };
        assert_eq!((r.prefix, r.gateway, r.ifindex), (1, None, 20));
    }

    #[test]
    fn failed_requests_and_gets_are_not_triggers() {
        let failed = rt_msg(RTM_ADD, RTF_UP, 0, 17, &[(DST, sin([0; 4], 16))], true);
        assert!(!parse(&failed).unwrap().0.is_relevant());
        let get = rt_msg(RTM_GET, RTF_UP, 4, 0, &[(DST, sin([0; 4], 16))], true);
        assert!(!parse(&get).unwrap().0.is_relevant());
    }

    #[test]
    fn ifinfo_and_address_messages() {
        let m = ifinfo(20, 0x8051);
        let (msg, _) = parse(&m).unwrap();
        assert_eq!(
            msg,
            Msg::IfInfo {
                index: 20,
                flags: 0x8051
            }
        );
        assert!(msg.is_relevant());
        let (msg, _) = parse(&ifa(RTM_DELADDR, 20, [10, 16, 11, 143])).unwrap();
        assert_eq!(
            msg,
            Msg::Addr {
                kind: RTM_DELADDR,
                index: 20
            }
        );
        assert!(msg.is_relevant());
        let mut other = ifinfo(1, 0);
        other[3] = 0xf; // RTM_NEWMADDR
        assert_eq!(parse(&other).unwrap().0, Msg::Other { kind: 0xf });
    }

    /// A dump as `NET_RT_DUMP` returns it: the primary default, configd's scoped default
    /// (same bytes but RTF_IFSCOPE; /0 mask of sa_len 0), the VPN's halves, a host route.
    #[test]
    fn dump_of_a_table_with_the_vpn_up() {
        let mut dump = Vec::new();
        for (flags, index, first) in [
            (RTF_UP | RTF_GATEWAY, 4u16, None),
            (RTF_UP | RTF_GATEWAY | RTF_IFSCOPE, 4, None),
            (RTF_UP | RTF_GATEWAY, 20, Some(0u8)),
            (RTF_UP | RTF_GATEWAY, 20, Some(128)),
        ] {
            let (dst, mask, gw) = match first {
                None => ([0; 4], sin([0; 4], 0), [10, 0, 15, 1]),
                Some(f) => ([f, 0, 0, 0], sin([128, 0, 0, 0], 5), [10, 16, 0, 1]),
            };
            dump.extend(rt_msg(
                RTM_GET,
                flags,
                index,
                0,
                &[(DST, sin(dst, 16)), (GW, sin(gw, 16)), (MASK, mask)],
                true,
            ));
        }
        dump.extend(rt_msg(
            RTM_GET,
            RTF_UP | RTF_HOST,
            1,
            0,
            &[(DST, sin([127, 0, 0, 1], 16)), (IFP, sdl(1, "lo0"))],
            true,
        ));
        // An IPv6 route (sockaddr_in6, family 30) is skipped, not misread.
        let mut v6 = vec![28, 30];
        v6.resize(28, 0);
        dump.extend(rt_msg(RTM_GET, RTF_UP, 4, 0, &[(DST, v6)], true));
        // A dump is a run of messages: each parses on its own.
        let mut routes = Vec::new();
        let mut buf = &dump[..];
        while let Ok((msg, len)) = parse(buf) {
            if let Msg::Route { route: Some(r), .. } = msg {
                routes.push(r);
            }
            buf = &buf[len..];
        }
        assert!(buf.is_empty(), "{} bytes left unparsed", buf.len());
        let summary: Vec<_> = routes
            .iter()
            .map(|r| (r.dst.to_string(), r.prefix, r.ifindex, r.scoped))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("0.0.0.0".into(), 0, 4, false),
                ("0.0.0.0".into(), 0, 4, true),
                ("0.0.0.0".into(), 1, 20, false),
                ("128.0.0.0".into(), 1, 20, false),
                ("127.0.0.1".into(), 32, 1, false),
            ]
        );
    }

    #[test]
    fn hostile_bytes_are_errors_never_panics() {
        assert_eq!(parse(&[]), Err(Error::Short(0)));
        assert_eq!(parse(&[200, 0, 5, 1]), Err(Error::Length(200, 4)));
        assert_eq!(parse(&[4, 0, 4, 1]), Err(Error::Version(4)));
        assert_eq!(parse(&[4, 0, 5, RTM_ADD]), Err(Error::Short(4)));
        // Sockaddr lengths that run past the end, claimed slots with no bytes.
        let mut m = add_half(0, true);
        m[RT_MSGHDR_LEN] = 255;
        assert!(parse(&m).is_ok());
        m[12..16].copy_from_slice(&0xffi32.to_le_bytes());
        assert!(parse(&m).is_ok());
        // Every truncation and every single-byte corruption of real messages.
        for base in [
            add_half(128, false),
            ifinfo(3, 1),
            ifa(RTM_NEWADDR, 3, [1; 4]),
        ] {
            for cut in 0..base.len() {
                let _ = parse(&base[..cut]);
            }
            for i in 0..base.len() {
                for v in [0u8, 1, 3, 4, 16, 127, 255] {
                    let mut b = base.clone();
                    b[i] = v;
                    let _ = parse(&b);
                }
            }
        }
    }
}
