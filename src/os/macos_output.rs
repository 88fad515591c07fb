//! What macOS's tools print, read by pure functions: `route -n get`, `netstat -rn -f inet`,
//! `sysctl -n`, and pfctl's anchors, rules and enable token. Built on every platform so the
//! parsers are tested anywhere, each against real macOS output kept under
//! `tests/fixtures/macos/` (the source of every fixture is named in its header).

use std::net::Ipv4Addr;

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{tool}: output not understood: {reason}")]
pub struct ParseError {
    pub tool: &'static str,
    pub reason: String,
}

fn parse_error(tool: &'static str, reason: impl Into<String>) -> ParseError {
    ParseError {
        tool,
        reason: reason.into(),
    }
}

/// pfctl writes these to stderr on every call, success or not (no ALTQ in Apple's kernel).
fn is_pfctl_noise(line: &str) -> bool {
    line.starts_with("No ALTQ support in kernel") || line.starts_with("ALTQ related functions")
}

/// One answer of `route -n get [-ifscope IF] DEST`, as route(8) prints it (network_cmds'
/// `print_getmsg`: `destination`, `mask`, `gateway` only for a route with a gateway,
/// `interface`, `flags`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RouteGet {
    /// `default` or an address.
    pub destination: String,
    /// `default` for 0/0; `128.0.0.0` for one of the VPN's halves. Host routes have none.
    pub mask: Option<String>,
    /// As printed: an address, or `link#N` for a route without a next hop.
    pub gateway: Option<String>,
    pub interface: Option<String>,
    pub flags: Vec<String>,
}

impl RouteGet {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Bound to one interface (`-ifscope`, flag `I` in netstat).
    pub fn is_scoped(&self) -> bool {
        self.has_flag("IFSCOPE")
    }

    /// The whole default route (0/0), not one of the VPN's `/1` halves.
    pub fn is_whole_default(&self) -> bool {
        self.destination == "default" && self.mask.as_deref().is_none_or(|m| m == "default")
    }
}

pub fn parse_route_get(text: &str) -> Result<RouteGet, ParseError> {
    let mut r = RouteGet::default();
    let (mut destination, mut flags) = (false, false);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "destination" => {
                r.destination = value.to_owned();
                destination = true;
            }
            "mask" => r.mask = Some(value.to_owned()),
            "gateway" => r.gateway = Some(value.to_owned()),
            "interface" => r.interface = Some(value.to_owned()),
            "flags" => {
                let inner = value
                    .strip_prefix('<')
                    .and_then(|v| v.strip_suffix('>'))
                    .ok_or_else(|| parse_error("route get", format!("flags {value:?}")))?;
                r.flags = inner
                    .split(',')
                    .filter(|f| !f.is_empty())
                    .map(str::to_owned)
                    .collect();
                flags = true;
            }
            _ => {}
        }
    }
    if destination && flags {
        Ok(r)
    } else {
        Err(parse_error(
            "route get",
            "no `destination:` and `flags:` lines",
        ))
    }
}

/// `route` prints this on stderr when the lookup finds no route, e.g. no scoped default on the
/// interface asked for; route(8) may still exit 0.
pub fn route_not_in_table(stderr: &str) -> bool {
    stderr.contains("not in table")
}

/// What a `route -n get` that ran says, whatever its exit status: `None` for "no such route"
/// (stderr `not in table`), else the parsed answer.
pub fn route_get_answer(stdout: &str, stderr: &str) -> Result<Option<RouteGet>, ParseError> {
    if route_not_in_table(stderr) {
        return Ok(None);
    }
    parse_route_get(stdout).map(Some)
}

/// One row of the IPv4 table in `netstat -rn -f inet`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableRoute {
    /// netstat's shorthand: `default`, `0/1`, `128.0/1`, `10.9/24`, `127`, `127.0.0.1`.
    pub destination: String,
    /// An address, `link#N`, an interface name (`utun6`) or a MAC address.
    pub gateway: String,
    pub flags: String,
    pub netif: String,
}

impl TableRoute {
    /// The destination as address and prefix length. netstat drops trailing zero octets
    /// (`128.0/1` is 128.0.0.0/1) and writes classful networks without a length (`127` is
    /// 127.0.0.0/8).
    pub fn network(&self) -> Option<(Ipv4Addr, u8)> {
        if self.destination == "default" {
            return Some((Ipv4Addr::UNSPECIFIED, 0));
        }
        let (addr, len) = match self.destination.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().ok().filter(|l| *l <= 32)?)),
            None => (self.destination.as_str(), None),
        };
        let mut octets = [0u8; 4];
        let mut n = 0;
        for part in addr.split('.') {
            *octets.get_mut(n)? = part.parse().ok()?;
            n += 1;
        }
        let len = len.unwrap_or(8 * n as u8);
        Some((Ipv4Addr::from(octets), len))
    }

    /// Flag `I`: bound to its interface, used only by sockets bound there.
    pub fn is_scoped(&self) -> bool {
        self.flags.contains('I')
    }

    pub fn gateway_v4(&self) -> Option<Ipv4Addr> {
        self.gateway.parse().ok()
    }

    /// One of the two halves a VPN installs to win over the default route.
    pub fn is_vpn_half(&self) -> bool {
        matches!(self.network(), Some((a, 1)) if a == Ipv4Addr::UNSPECIFIED || a == Ipv4Addr::new(128, 0, 0, 0))
    }
}

/// The IPv4 rows of `netstat -rn -f inet`. Columns are found by the header's names (`-l` adds
/// RT_IFA, Refs, Use and Mtu, older releases add Refs and Use). Rows before any header, a
/// header without the four columns, or a row too short for them are errors: the layouts
/// differ in where Netif is, so guessing would misread silently.
pub fn parse_netstat_inet(text: &str) -> Result<Vec<TableRoute>, ParseError> {
    let mut columns: Option<[usize; 4]> = None;
    let mut rows = Vec::new();
    let mut in_inet6 = false;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.first().copied() {
            None | Some("Routing") => continue,
            Some("Internet:") => in_inet6 = false,
            Some("Internet6:") => in_inet6 = true,
            Some("Destination") => {
                let at = |name: &str| {
                    fields
                        .iter()
                        .position(|f| *f == name)
                        .ok_or_else(|| parse_error("netstat", format!("no {name} column")))
                };
                columns = Some([
                    at("Destination")?,
                    at("Gateway")?,
                    at("Flags")?,
                    at("Netif")?,
                ]);
            }
            Some(_) if in_inet6 => {}
            Some(first) => {
                let Some(columns) = columns else {
                    return Err(parse_error(
                        "netstat",
                        format!("row {first:?} before any header: the layout is unknown"),
                    ));
                };
                let [d, g, f, i] = columns.map(|c| fields.get(c).copied());
                let (Some(d), Some(g), Some(f), Some(i)) = (d, g, f, i) else {
                    return Err(parse_error(
                        "netstat",
                        format!("row {line:?} is shorter than its header"),
                    ));
                };
                rows.push(TableRoute {
                    destination: d.to_owned(),
                    gateway: g.to_owned(),
                    flags: f.to_owned(),
                    netif: i.to_owned(),
                });
            }
        }
    }
    if rows.is_empty() && !text.trim().is_empty() {
        return Err(parse_error("netstat", "no route rows"));
    }
    Ok(rows)
}

/// `ifconfig -a`: each interface's name, flags and IPv4 addresses. macOS's ifconfig prints no
/// index, so interfaces are numbered in listing order (used only to tell them apart).
pub fn parse_ifconfig(text: &str) -> Result<Vec<crate::os::IfaceInfo>, ParseError> {
    let mut out: Vec<crate::os::IfaceInfo> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            let (name, rest) = line.split_once(": flags=").ok_or_else(|| {
                parse_error("ifconfig", format!("line {line:?} names no interface"))
            })?;
            let flags = rest
                .split_once('<')
                .and_then(|(_, r)| r.split_once('>'))
                .map(|(f, _)| f)
                .ok_or_else(|| parse_error("ifconfig", format!("flags of {name} not read")))?;
            let has = |f: &str| flags.split(',').any(|x| x == f);
            out.push(crate::os::IfaceInfo {
                name: name.to_owned(),
                index: out.len() as u32 + 1,
                up: has("UP"),
                point_to_point: has("POINTOPOINT"),
                loopback: has("LOOPBACK"),
                ipv4: Vec::new(),
            });
            continue;
        }
        let mut words = line.split_whitespace();
        if words.next() == Some("inet") {
            let iface = out
                .last_mut()
                .ok_or_else(|| parse_error("ifconfig", "an address before any interface"))?;
            let addr = words.next().unwrap_or_default();
            iface.ipv4.push(addr.parse().map_err(|_| {
                parse_error(
                    "ifconfig",
                    format!("{addr:?} of {} is not IPv4", iface.name),
                )
            })?);
        }
    }
    if out.is_empty() {
        return Err(parse_error("ifconfig", "no interface"));
    }
    Ok(out)
}

/// `sysctl -n NAME` for a 0/1 variable such as `net.inet.ip.forwarding`.
pub fn parse_sysctl_flag(text: &str) -> Result<bool, ParseError> {
    // Without -n, sysctl prints `name: value`; both are accepted.
    let value = text.rsplit_once(':').map_or(text, |(_, v)| v).trim();
    match value {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(parse_error("sysctl", format!("{other:?} is not 0 or 1"))),
    }
}

/// `pfctl [-v] -s Anchors`: one anchor path a line (`-v` lists nested anchors too).
pub fn parse_anchors(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_pfctl_noise(l) && !l.contains(char::is_whitespace))
        .map(str::to_owned)
        .collect()
}

/// Where PIA's desktop client loads its anchors (its brand identifier, the root of
/// `000.allowLoopback`, `100.blockAll`, `200.allowVPN`, ...).
pub const PIA_ANCHOR_ROOT: &str = "com.privateinternetaccess.vpn";

pub fn is_pia_anchor(anchor: &str) -> bool {
    anchor == PIA_ANCHOR_ROOT
        || anchor
            .strip_prefix(PIA_ANCHOR_ROOT)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `Token : 4235676552202453487`, printed by `pfctl -E` (on stderr): the enable reference to
/// hand back with `pfctl -X`.
pub fn parse_enable_token(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "Token").then(|| v.trim().parse().ok())?
    })
}

/// A rule as `pfctl -a ANCHOR -s rules` prints it back (normalised: `flags S/SA keep state`
/// appended, `from`/`to` spelled out).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PfRule {
    pub text: String,
    /// `pass`, `block`, ...
    pub action: String,
    pub quick: bool,
    pub route_to: Option<RouteTo>,
    /// The word after `from`: an address, `any`, `<table>`, `!`.
    pub from: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteTo {
    pub interface: String,
    /// `None` for `(utun4 any)` or a bare interface.
    pub gateway: Option<Ipv4Addr>,
}

impl PfRule {
    pub fn source_v4(&self) -> Option<Ipv4Addr> {
        self.from.as_deref()?.parse().ok()
    }
}

pub fn parse_rules(text: &str) -> Vec<PfRule> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_pfctl_noise(l))
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |w: &str| {
                words
                    .iter()
                    .position(|x| *x == w)
                    .and_then(|i| words.get(i + 1))
                    .copied()
            };
            let route_to = words.iter().position(|w| *w == "route-to").and_then(|i| {
                let first = words.get(i + 1)?;
                match first.strip_prefix('(') {
                    Some(interface) => {
                        let gateway = words.get(i + 2)?.strip_suffix(')')?;
                        Some(RouteTo {
                            interface: interface.to_owned(),
                            gateway: gateway.parse().ok(),
                        })
                    }
                    None => Some(RouteTo {
                        interface: first.to_string(),
                        gateway: None,
                    }),
                }
            });
            PfRule {
                text: line.to_owned(),
                action: words.first().copied().unwrap_or_default().to_owned(),
                quick: words.contains(&"quick"),
                route_to,
                from: after("from").map(str::to_owned),
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fixture's output: its `#` header (the source) dropped.
    pub(crate) fn fixture(name: &str) -> String {
        crate::os::fixture("macos", name)
    }

    #[test]
    fn route_get_default_without_vpn() {
        let r = parse_route_get(&fixture("route-get-default.txt")).unwrap();
        assert_eq!(
            r,
            RouteGet {
                destination: "default".into(),
                mask: Some("default".into()),
                gateway: Some("10.62.96.1".into()),
                interface: Some("en0".into()),
                flags: ["UP", "GATEWAY", "DONE", "STATIC", "PRCLONING", "GLOBAL"]
                    .map(String::from)
                    .to_vec(),
            }
        );
        assert!(r.is_whole_default() && !r.is_scoped());
        assert_eq!(r.gateway.as_deref(), Some("10.62.96.1"));
    }

    #[test]
    fn route_get_answered_by_the_vpn_half() {
        let r = parse_route_get(&fixture("route-get-vpn-half.txt")).unwrap();
        assert_eq!(r.interface.as_deref(), Some("utun3"));
        assert_eq!(r.mask.as_deref(), Some("128.0.0.0"));
        assert!(!r.is_whole_default(), "0/1 is not the default route");
    }

    #[test]
    fn route_get_ifscope_answer_is_scoped() {
        let r = parse_route_get(&fixture("route-get-ifscope-en0-default.txt")).unwrap();
        assert!(r.is_scoped() && r.is_whole_default());
        assert_eq!(r.interface.as_deref(), Some("en0"));
        assert_eq!(r.gateway.as_deref(), Some("192.168.1.1"));
    }

    #[test]
    fn route_get_errors() {
        assert!(parse_route_get("").is_err());
        assert!(parse_route_get("   route to: default\ninterface: en0\n").is_err());
        assert!(parse_route_get("destination: default\n flags: UP\n").is_err());
        assert!(route_not_in_table(
            "route: writing to routing socket: not in table\n"
        ));
        // Exit 0, nothing on stdout, the message on stderr: no such route, not "not read".
        assert_eq!(
            route_get_answer("", "route: writing to routing socket: not in table\n"),
            Ok(None)
        );
        let answer = route_get_answer(&fixture("route-get-default.txt"), "").unwrap();
        assert_eq!(answer.unwrap().interface.as_deref(), Some("en0"));
        assert!(route_get_answer("", "").is_err());
    }

    fn halves(rows: &[TableRoute]) -> Vec<(&str, &str)> {
        rows.iter()
            .filter(|r| r.is_vpn_half())
            .map(|r| (r.destination.as_str(), r.netif.as_str()))
            .collect()
    }

    fn scoped_defaults(rows: &[TableRoute]) -> Vec<(&str, &str)> {
        rows.iter()
            .filter(|r| r.destination == "default" && r.is_scoped())
            .map(|r| (r.gateway.as_str(), r.netif.as_str()))
            .collect()
    }

    /// The halves fixture went through grep, which dropped netstat's header; its rows are in
    /// the default layout, whose header this is.
    pub(crate) fn halves_with_header() -> String {
        format!(
            "Destination        Gateway            Flags               Netif Expire\n{}",
            fixture("netstat-rn-inet-halves.txt")
        )
    }

    #[test]
    fn netstat_vpn_halves_and_scoped_default() {
        assert!(
            parse_netstat_inet(&fixture("netstat-rn-inet-halves.txt")).is_err(),
            "rows without a header are not read"
        );
        let rows = parse_netstat_inet(&halves_with_header()).unwrap();
        assert_eq!(halves(&rows), [("0/1", "utun6"), ("128.0/1", "utun6")]);
        assert_eq!(scoped_defaults(&rows), [("192.168.0.1", "en0")]);
        let unscoped: Vec<&TableRoute> = rows
            .iter()
            .filter(|r| r.destination == "default" && !r.is_scoped())
            .collect();
        assert_eq!(unscoped.len(), 1);
        assert_eq!(
            unscoped[0].gateway_v4(),
            Some(Ipv4Addr::new(192, 168, 0, 1))
        );
        // The halves have no next hop: the gateway column names the tunnel.
        assert_eq!(rows[0].gateway_v4(), None);
    }

    #[test]
    fn netstat_full_tunnel_with_scoped_default() {
        let rows = parse_netstat_inet(&fixture("netstat-rn-inet-full-tunnel.txt")).unwrap();
        assert!(halves(&rows).is_empty());
        assert_eq!(scoped_defaults(&rows), [("172.20.10.1", "en0")]);
        assert_eq!(rows[0].gateway, "link#18");
        let net = |d: &str| {
            rows.iter()
                .find(|r| r.destination == d)
                .and_then(TableRoute::network)
        };
        assert_eq!(net("127"), Some((Ipv4Addr::new(127, 0, 0, 0), 8)));
        assert_eq!(net("169.254"), Some((Ipv4Addr::new(169, 254, 0, 0), 16)));
        assert_eq!(net("8.8.8.8"), Some((Ipv4Addr::new(8, 8, 8, 8), 32)));
    }

    #[test]
    fn netstat_columns_follow_the_header() {
        // `netstat -rnl` adds RT_IFA, Refs, Use and Mtu before Netif.
        let rows = parse_netstat_inet(&fixture("netstat-rnl-inet-wireguard.txt")).unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| (r.destination.as_str(), r.flags.as_str(), r.netif.as_str()))
                .collect::<Vec<_>>(),
            [("default", "UCSg", "utun6"), ("default", "UGScIg", "en0")]
        );
    }

    #[test]
    fn netstat_only_the_inet_section_and_short_forms() {
        let text = "Routing tables\n\nInternet:\nDestination        Gateway            Flags        Netif Expire\n\
0/1                utun0              UScg         utun0\n\
default            link#25            UCSIg        utun0\n\nInternet6:\n\
Destination        Gateway            Flags        Netif Expire\n\
default            fe80::%utun0       UGcIg        utun0\n";
        let rows = parse_netstat_inet(text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(halves(&rows), [("0/1", "utun0")]);
        let half = |d: &str| TableRoute {
            destination: d.into(),
            gateway: "x".into(),
            flags: "U".into(),
            netif: "utun0".into(),
        };
        assert!(half("128.0/1").is_vpn_half() && half("0/1").is_vpn_half());
        assert!(!half("64/2").is_vpn_half() && !half("128.0/9").is_vpn_half());
        assert_eq!(
            half("10.9/24").network(),
            Some((Ipv4Addr::new(10, 9, 0, 0), 24))
        );
        assert_eq!(half("1.2.3.4.5").network(), None);
        assert_eq!(half("10/33").network(), None);
        assert!(parse_netstat_inet("garbage").is_err());
        assert_eq!(parse_netstat_inet("").unwrap(), []);
        assert!(
            parse_netstat_inet("Destination Gateway Netif\n").is_err(),
            "a header without Flags is not understood"
        );
        // The Refs/Use layout without its header: Netif is the sixth column, not the fourth.
        let refs_use = "default            172.16.16.1        UGSc           48        0     en0\n";
        assert!(parse_netstat_inet(refs_use).is_err());
        let short = "Destination Gateway Flags Refs Use Netif Expire\ndefault 172.16.16.1 UGSc\n";
        assert!(parse_netstat_inet(short).is_err());
    }

    #[test]
    fn ifconfig_names_flags_and_ipv4() {
        let ifs = parse_ifconfig(&fixture("ifconfig-a-lo0-alias.txt")).unwrap();
        let names: Vec<&str> = ifs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["lo0", "gif0", "stf0", "en5", "ap1", "en0"]);
        let lo0 = &ifs[0];
        assert!(lo0.loopback && lo0.up);
        assert_eq!(
            lo0.ipv4,
            [
                Ipv4Addr::new(127, 0, 0, 1),
                Ipv4Addr::new(10, 254, 254, 254)
            ]
        );
        assert!(ifs[1].point_to_point && !ifs[1].up, "gif0 is down");
        assert!(ifs[3].up && ifs[3].ipv4.is_empty(), "en5 has only IPv6");
        assert_eq!(ifs[5].ipv4, [Ipv4Addr::new(172, 16, 42, 20)]);
        let utun = parse_ifconfig(&fixture("ifconfig-utun-tailscale.txt")).unwrap();
        assert!(utun[0].point_to_point && utun[0].up);
        assert_eq!(utun[0].ipv4, [Ipv4Addr::new(100, 116, 30, 19)]);
        assert!(parse_ifconfig("").is_err());
        assert!(parse_ifconfig("\tinet 10.0.15.15 netmask 0xffffff00\n").is_err());
        assert!(
            parse_ifconfig("en0: mtu 1500\n").is_err(),
            "no flags: not ifconfig"
        );
    }

    #[test]
    fn sysctl_forwarding() {
        assert!(parse_sysctl_flag(&fixture("sysctl-ip-forwarding.txt")).unwrap());
        assert!(!parse_sysctl_flag("0\n").unwrap());
        assert!(parse_sysctl_flag("net.inet.ip.forwarding: 1\n").unwrap());
        assert!(parse_sysctl_flag("sysctl: unknown oid 'net.inet.ip.forwardng'\n").is_err());
        assert!(parse_sysctl_flag("").is_err());
    }

    #[test]
    fn anchors_nested_listing() {
        let anchors = parse_anchors(&fixture("pfctl-v-s-anchors.txt"));
        assert_eq!(
            anchors,
            [
                "com.apple",
                "com.apple/200.AirDrop",
                "com.apple/200.AirDrop/Bonjour",
                "com.apple/250.ApplicationFirewall"
            ]
        );
        assert!(!anchors.iter().any(|a| is_pia_anchor(a)));
        assert!(is_pia_anchor("com.privateinternetaccess.vpn/100.blockAll"));
        assert!(is_pia_anchor(PIA_ANCHOR_ROOT));
        assert!(!is_pia_anchor("com.privateinternetaccess.vpnx"));
        assert!(!is_pia_anchor("com.apple/250.PiaSplitTunnelFallback"));
    }

    #[test]
    fn enable_token_from_pfctl_e() {
        assert_eq!(
            parse_enable_token(&fixture("pfctl-E.txt")),
            Some(4_235_676_552_202_453_487)
        );
        assert_eq!(parse_enable_token("No ALTQ support in kernel\n"), None);
        assert_eq!(parse_enable_token("Token : x"), None);
        assert_eq!(parse_enable_token("Token : 18446744073709551616"), None);
    }

    #[test]
    fn rules_read_back() {
        let rules = parse_rules(&fixture("pfctl-a-s-rules.txt"));
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0],
            PfRule {
                text: "pass out quick route-to (utun4 any) all flags S/SA keep state".into(),
                action: "pass".into(),
                quick: true,
                route_to: Some(RouteTo {
                    interface: "utun4".into(),
                    gateway: None
                }),
                from: None,
            }
        );
        assert_eq!(rules[1].route_to, None);
        let ours = parse_rules(
            "No ALTQ support in kernel\npass out quick route-to (en0 10.0.15.1) inet from 10.0.15.15 to ! <rfc1918> flags S/SA keep state\n",
        );
        assert_eq!(ours.len(), 1);
        assert_eq!(
            ours[0].route_to,
            Some(RouteTo {
                interface: "en0".into(),
                gateway: Some(Ipv4Addr::new(10, 0, 15, 1))
            })
        );
        assert_eq!(ours[0].source_v4(), Some(Ipv4Addr::new(10, 0, 15, 15)));
        assert!(parse_rules("ALTQ related functions disabled\n\n").is_empty());
    }
}
