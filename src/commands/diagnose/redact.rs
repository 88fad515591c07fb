//! `--redact`: public addresses (the home and VPN exit IPs, remote endpoints, public IPv6) and
//! hardware addresses replaced by stable placeholders, the same address the same placeholder
//! in every file, so a bundle still reads back and a report still tells hosts apart.
//!
//! Kept as they are: private (RFC 1918), loopback, link-local, shared (100.64/10, CGNAT and
//! PIA's own tunnel space), multicast, 0/8, 240/4 (reserved, where the placeholders live) and
//! netmasks (`128.0.0.0` in `route get`): none of them names a place on the internet, and the
//! routing judgement needs them. The documentation ranges (192.0.2/24, 198.51.100/24,
//! 203.0.113/24) are replaced like any public address: they are what public addresses look
//! like in tests. Placeholders are addresses, so parsers read them: IPv4 `240.0.0.N`, IPv6
//! `2001:db8:ffff::N`, MAC `02:00:00:00:00:NN` (locally administered), home folders
//! `/Users/user`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// One mapping for a whole bundle.
#[derive(Debug, Default)]
pub struct Redactor {
    v4: HashMap<Ipv4Addr, Ipv4Addr>,
    v6: HashMap<Ipv6Addr, Ipv6Addr>,
    macs: HashMap<String, String>,
}

/// Not a place on the internet: kept.
pub fn kept_v4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    let bits = a.to_bits();
    let netmask = bits.leading_ones() + bits.trailing_zeros() == 32;
    a.is_private()
        || a.is_loopback()
        || a.is_link_local()
        || a.is_multicast()
        || o[0] == 0
        || o[0] >= 240
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        || netmask
}

fn kept_v6(a: Ipv6Addr) -> bool {
    let first = a.segments()[0];
    a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        || (first & 0xffc0) == 0xfe80
        || (first & 0xfe00) == 0xfc00
        || a.to_ipv4_mapped().is_some()
}

impl Redactor {
    /// `text` with every public address, MAC address and home folder replaced.
    pub fn text(&mut self, text: &str) -> String {
        let t = self.ipv4(text);
        let t = self.ipv6_and_macs(&t);
        home_folders(&t)
    }

    fn placeholder_v4(&mut self, a: Ipv4Addr) -> Ipv4Addr {
        let n = self.v4.len() as u32 + 1;
        *self
            .v4
            .entry(a)
            .or_insert_with(|| Ipv4Addr::from(0xf000_0000 | n))
    }

    fn ipv4(&mut self, text: &str) -> String {
        let b = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < b.len() {
            let starts = b[i].is_ascii_digit()
                && (i == 0 || !(b[i - 1].is_ascii_digit() || b[i - 1] == b'.'));
            if starts && let Some((a, len)) = dotted_quad(&b[i..]) {
                if kept_v4(a) {
                    out.push_str(&text[i..i + len]);
                } else {
                    out.push_str(&self.placeholder_v4(a).to_string());
                }
                i += len;
                continue;
            }
            let ch = text[i..].chars().next().unwrap_or('\u{fffd}');
            out.push(ch);
            i += ch.len_utf8();
        }
        out
    }

    /// Runs of hex digits and colons: an IPv6 address, a MAC address, or neither (a time).
    fn ipv6_and_macs(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut run = String::new();
        for ch in text.chars().chain(std::iter::once('\n')) {
            if ch.is_ascii_hexdigit() || ch == ':' {
                run.push(ch);
                continue;
            }
            let swapped = self.swap_run(&run, ch);
            out.push_str(&swapped);
            run.clear();
            out.push(ch);
        }
        out.pop();
        out
    }

    /// The run replaced when it is a public IPv6 address or a MAC address; `next` is the
    /// character after it (`.`: the head of an IPv4-mapped address, left alone).
    fn swap_run(&mut self, run: &str, next: char) -> String {
        if run.matches(':').count() < 2 || next == '.' {
            return run.to_owned();
        }
        if is_mac(run) {
            let n = self.macs.len() + 1;
            let lower = run.to_ascii_lowercase();
            return self
                .macs
                .entry(lower)
                .or_insert_with(|| format!("02:00:00:00:{:02x}:{:02x}", n >> 8, n & 0xff))
                .clone();
        }
        let trimmed = run
            .strip_suffix(':')
            .filter(|t| !t.ends_with(':'))
            .unwrap_or(run);
        match trimmed.parse::<Ipv6Addr>() {
            Ok(a) if !kept_v6(a) => {
                let n = self.v6.len() as u128 + 1;
                let p = *self
                    .v6
                    .entry(a)
                    .or_insert_with(|| Ipv6Addr::from(0x2001_0db8_ffff_u128 << 80 | n));
                format!("{p}{}", &run[trimmed.len()..])
            }
            _ => run.to_owned(),
        }
    }
}

/// `a.b.c.d` at the start of `b` (each part 1-3 digits, at most 255), not followed by a digit
/// or by `.digit` (then it is a longer dotted number, a version).
fn dotted_quad(b: &[u8]) -> Option<(Ipv4Addr, usize)> {
    let mut parts = [0u8; 4];
    let mut i = 0;
    for (n, part) in parts.iter_mut().enumerate() {
        if n > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() && i - start < 4 {
            i += 1;
        }
        let digits = std::str::from_utf8(&b[start..i]).ok()?;
        if digits.is_empty() || digits.len() > 3 {
            return None;
        }
        *part = digits.parse().ok()?;
    }
    let digit_at = |j: usize| b.get(j).is_some_and(u8::is_ascii_digit);
    if digit_at(i) || (b.get(i) == Some(&b'.') && digit_at(i + 1)) {
        return None;
    }
    Some((Ipv4Addr::from(parts), i))
}

fn is_mac(run: &str) -> bool {
    let parts: Vec<&str> = run.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| (1..=2).contains(&p.len()))
}

/// `/Users/NAME` (macOS home folders, in app paths of PIA's rules) as `/Users/user`.
fn home_folders(text: &str) -> String {
    const HOME: &str = "/Users/";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(HOME) {
        out.push_str(&rest[..at + HOME.len()]);
        rest = &rest[at + HOME.len()..];
        let end = rest.find(['/', '"', '\n', ' ']).unwrap_or(rest.len());
        if end > 0 && &rest[..end] != "Shared" {
            out.push_str("user");
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses_get_stable_placeholders_and_private_ones_stay() {
        let mut r = Redactor::default();
        let log = "endpoint: 54.172.39.248:443 with bindIp: 10.0.15.15\n\
                   curl --interface 10.0.15.15 → 174.31.0.47 (VPN exit 91.90.126.18)\n";
        let out = r.text(log);
        assert_eq!(
            out,
            "endpoint: 240.0.0.1:443 with bindIp: 10.0.15.15\n\
             curl --interface 10.0.15.15 → 240.0.0.2 (VPN exit 240.0.0.3)\n"
        );
        // The same address in another file: the same placeholder.
        assert_eq!(
            r.text("home 174.31.0.47, gw 10.0.15.1"),
            "home 240.0.0.2, gw 10.0.15.1"
        );
        // Kept: loopback, link-local, CGNAT, netmask, broadcast; a version is not an address.
        let kept =
            "127.0.0.1 169.254.1.1 100.64.0.9 128.0.0.0 255.255.255.255 v3.7.0.12345 1.2.3.4.5";
        assert_eq!(r.text(kept), kept);
        // Documentation ranges are replaced: they stand for public addresses in tests.
        assert_eq!(r.text("198.51.100.47"), "240.0.0.4");
    }

    #[test]
    fn ipv6_macs_and_home_folders_are_replaced_and_times_are_not() {
        let mut r = Redactor::default();
        let ifconfig = "\tether 3c:22:fb:0a:1b:2c\n\tinet6 fe80::1%lo0 prefixlen 64\n\tinet6 2a02:1810:4d02:8e00::5 prefixlen 64 autoconf\n";
        let out = r.text(ifconfig);
        assert_eq!(
            out,
            "\tether 02:00:00:00:00:01\n\tinet6 fe80::1%lo0 prefixlen 64\n\tinet6 2001:db8:ffff::1 prefixlen 64 autoconf\n"
        );
        assert_eq!(r.text("ether 3C:22:FB:0A:1B:2C"), "ether 02:00:00:00:00:01");
        let time = "[2026-02-16 11:49:40:7270] id: 133";
        assert_eq!(r.text(time), time);
        assert_eq!(
            r.text(r#"{"path": "/Users/jane/Applications/Plex.app", "x": "/Users/Shared/a"}"#),
            r#"{"path": "/Users/user/Applications/Plex.app", "x": "/Users/Shared/a"}"#
        );
    }
}
