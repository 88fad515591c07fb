//! Validated network names and prefixes: the only values that reach rules text or commands.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An interface name safe to write into pf rules and pass to `ip`: a lowercase letter, then
/// lowercase letters and digits, at most 15 bytes (IFNAMSIZ - 1). Covers `en0`, `utun4`,
/// `bridge100`, `eth0`, `enp0s3`. pfctl accepts unknown names silently, so this is the gate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct IfName(String);

impl IfName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IfName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 15
            && b[0].is_ascii_lowercase()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if ok {
            Ok(IfName(s.to_owned()))
        } else {
            Err(format!(
                "interface name {s:?} is not of the form [a-z][a-z0-9]* (at most 15 bytes)"
            ))
        }
    }
}

impl From<IfName> for String {
    fn from(n: IfName) -> String {
        n.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IPv4 prefix such as `10.16.0.0/16`, host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, String> {
        if prefix > 32 {
            return Err(format!("prefix length {prefix} is over 32"));
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        if u32::from(addr) & !mask != 0 {
            return Err(format!(
                "{addr}/{prefix} has host bits set; write {}/{prefix}",
                Ipv4Addr::from(u32::from(addr) & mask)
            ));
        }
        Ok(Ipv4Net { addr, prefix })
    }
    pub fn addr(self) -> Ipv4Addr {
        self.addr
    }
    pub fn prefix(self) -> u8 {
        self.prefix
    }
}

impl FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX (e.g. 10.16.0.0/16)"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} in {s:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("{p:?} in {s:?} is not a prefix length"))?;
        Ipv4Net::new(addr, prefix)
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(n: Ipv4Net) -> String {
        n.to_string()
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        for ok in ["en0", "utun4", "bridge100", "eth0", "enp0s3", "lo"] {
            assert!(ok.parse::<IfName>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "0en",
            "en0 ",
            "en0)",
            "EN0",
            "en-0",
            "en0\npass",
            "abcdefghijklmnop",
            "{en0}",
        ] {
            assert!(bad.parse::<IfName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            "10.16.0.0/16".parse::<Ipv4Net>().unwrap().to_string(),
            "10.16.0.0/16"
        );
        assert!("10.16.0.1/16".parse::<Ipv4Net>().is_err());
        assert!("10.16.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("10.16.0.0".parse::<Ipv4Net>().is_err());
        assert!("0.0.0.0/0".parse::<Ipv4Net>().is_ok());
    }
}
