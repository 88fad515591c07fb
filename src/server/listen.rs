//! `http.listen` / `--web.listen-address`: `HOST:PORT`, `[V6]:PORT` or `:PORT` (every
//! address, as the Go exporters read it).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where the HTTP server listens. `host` is `None` for `:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenAddr {
    pub host: Option<String>,
    pub port: u16,
}

impl ListenAddr {
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(a: SocketAddr) -> Self {
        ListenAddr {
            host: Some(a.ip().to_string()),
            port: a.port(),
        }
    }
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{s:?}: {why} (use HOST:PORT, [IPV6]:PORT or :PORT)");
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
        let host = match host {
            "" => None,
            h if h.starts_with('[') => {
                let inner = h
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .ok_or_else(|| bad("unclosed ["))?;
                inner
                    .parse::<Ipv6Addr>()
                    .map_err(|_| bad("not an IPv6 address in [ ]"))?;
                Some(inner.to_owned())
            }
            h if h.contains(':') => return Err(bad("an IPv6 address needs [ ]")),
            h if h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c)) =>
            {
                Some(h.to_owned())
            }
            _ => return Err(bad("not a host name or address")),
        };
        Ok(ListenAddr { host, port })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            None => write!(f, ":{}", self.port),
            Some(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port),
            Some(h) => write!(f, "{h}:{}", self.port),
        }
    }
}

impl Serialize for ListenAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Binds `addr`. `:PORT` is every address: IPv6 and IPv4 on one socket, or IPv4 alone where
/// the system has no IPv6. A host name binds the first of its addresses that works.
pub async fn bind(addr: &ListenAddr) -> std::io::Result<tokio::net::TcpListener> {
    let Some(host) = &addr.host else {
        return match dual_stack(addr.port) {
            Ok(l) => Ok(l),
            Err(_) => tokio::net::TcpListener::bind((IpAddr::from([0, 0, 0, 0]), addr.port)).await,
        };
    };
    let mut last = None;
    for a in tokio::net::lookup_host((host.as_str(), addr.port)).await? {
        match tokio::net::TcpListener::bind(a).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host}: no address"))
    }))
}

fn dual_stack(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::STREAM, None)?;
    // Explicit: the system default differs (Linux accepts IPv4 on [::], some BSDs do not).
    s.set_only_v6(false)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    s.listen(1024)?;
    tokio::net::TcpListener::from_std(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_the_go_exporters_accept() {
        let p = |s: &str| s.parse::<ListenAddr>();
        assert_eq!(
            p(":9847").unwrap(),
            ListenAddr {
                host: None,
                port: 9847
            }
        );
        assert_eq!(p("127.0.0.1:9847").unwrap().to_string(), "127.0.0.1:9847");
        assert_eq!(p("[::1]:9847").unwrap().host.as_deref(), Some("::1"));
        assert_eq!(p("[::1]:9847").unwrap().to_string(), "[::1]:9847");
        assert_eq!(p("localhost:1").unwrap().host.as_deref(), Some("localhost"));
        for bad in [
            "9847",
            "host:",
            "host:99999",
            "::1:9847",
            "[::1:9847",
            "a b:1",
            "[x]:1",
        ] {
            let e = p(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[tokio::test]
    async fn every_address_form_binds_and_accepts_ipv4() {
        let l = bind(&":0".parse().unwrap()).await.unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(l.local_addr().unwrap().ip().is_unspecified());
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let l = bind(&"localhost:0".parse().unwrap()).await.unwrap();
        assert!(l.local_addr().unwrap().ip().is_loopback());
    }
}
