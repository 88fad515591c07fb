//! One HTTP GET through a socket bound the way a path says, over hyper.
//!
//! The socket is made and bound with socket2 before connecting (an interface by index, or a
//! source address), so no proxy setting of the environment or the system can change the path,
//! and every request has its own connection (`Connection: close`).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::num::NonZeroU32;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use socket2::{Domain, Protocol, Socket, Type};

use super::ProbeError;

/// A what-is-my-IP endpoint: `http://host[:port][/path]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
        if uri.scheme_str() != Some("http") {
            return Err(
                "only http:// endpoints are supported (the body is just an address)".into(),
            );
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or("no host")?
            .to_owned();
        let path = uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        Ok(Endpoint {
            host,
            port: uri.port_u16().unwrap_or(80),
            path,
        })
    }
}

/// How the probe's socket is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bind {
    /// To an interface, by index (IP_BOUND_IF on macOS, SO_BINDTODEVICE on Linux).
    Interface(u32),
    /// To a source address only: the routing table still picks the interface.
    Source(Ipv4Addr),
    None,
}

/// The body is an IPv4 address, possibly with whitespace around it.
pub fn parse_body(body: &[u8]) -> Result<Ipv4Addr, ProbeError> {
    std::str::from_utf8(body)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or(ProbeError::BadBody)
}

/// GETs `ep` at `addr` through a socket bound as `bind`, within `timeout`.
pub async fn fetch(
    bind: Bind,
    ep: &Endpoint,
    addr: SocketAddrV4,
    timeout: Duration,
) -> Result<Ipv4Addr, ProbeError> {
    match tokio::time::timeout(timeout, fetch_inner(bind, ep, addr)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout),
    }
}

async fn fetch_inner(
    bind: Bind,
    ep: &Endpoint,
    addr: SocketAddrV4,
) -> Result<Ipv4Addr, ProbeError> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(io_error)?;
    match bind {
        Bind::Interface(index) => socket
            .bind_device_by_index_v4(NonZeroU32::new(index))
            .map_err(io_error)?,
        Bind::Source(ip) => socket
            .bind(&SocketAddrV4::new(ip, 0).into())
            .map_err(io_error)?,
        Bind::None => {}
    }
    socket.set_nonblocking(true).map_err(io_error)?;
    let stream = tokio::net::TcpSocket::from_std_stream(socket.into())
        .connect(addr.into())
        .await
        .map_err(io_error)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| ProbeError::Http)?;
    let conn = tokio::spawn(conn);
    let host = if ep.port == 80 {
        ep.host.clone()
    } else {
        format!("{}:{}", ep.host, ep.port)
    };
    let request = Request::get(ep.path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONNECTION, "close")
        .header(
            hyper::header::USER_AGENT,
            concat!("pia-split-tunnel-exporter/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|_| ProbeError::Other)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|_| ProbeError::Http)?;
    if !response.status().is_success() {
        conn.abort();
        return Err(ProbeError::Http);
    }
    // An address is short; a long body is not what we asked for.
    let body = Limited::new(response.into_body(), 256)
        .collect()
        .await
        .map_err(|_| ProbeError::BadBody)?
        .to_bytes();
    conn.abort();
    parse_body(&body)
}

fn io_error(e: std::io::Error) -> ProbeError {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => ProbeError::Refused,
        std::io::ErrorKind::TimedOut => ProbeError::Timeout,
        std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable => {
            ProbeError::Unreachable
        }
        _ => match e.raw_os_error() {
            Some(code) if code == libc::EHOSTUNREACH || code == libc::ENETUNREACH => {
                ProbeError::Unreachable
            }
            _ => ProbeError::Other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_bodies() {
        assert_eq!(
            Endpoint::parse("http://203.0.113.10/").unwrap(),
            Endpoint {
                host: "203.0.113.10".into(),
                port: 80,
                path: "/".into()
            }
        );
        assert_eq!(
            Endpoint::parse("http://example.net:8080/ip?x=1")
                .unwrap()
                .path,
            "/ip?x=1"
        );
        assert_eq!(Endpoint::parse("http://example.net").unwrap().path, "/");
        assert!(
            Endpoint::parse("https://example.net/")
                .unwrap_err()
                .contains("http://")
        );
        assert!(Endpoint::parse("not a url").is_err());
        assert_eq!(
            parse_body(b" 198.51.100.47\r\n"),
            Ok(Ipv4Addr::new(198, 51, 100, 47))
        );
        assert_eq!(parse_body(b"<html>"), Err(ProbeError::BadBody));
        assert_eq!(parse_body(b"2001:db8::1"), Err(ProbeError::BadBody));
        assert_eq!(parse_body(b"\xff"), Err(ProbeError::BadBody));
    }

    /// A loopback server that answers with a fixed body, and one that accepts and never answers.
    #[tokio::test]
    async fn fetch_answers_refusals_and_black_holes() {
        let ok = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ok_addr = match ok.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let (mut s, _) = ok.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n192.0.2.18\r\n  ")
                    .await;
            }
        });
        let ep = Endpoint::parse(&format!("http://{ok_addr}/")).unwrap();
        let t = Duration::from_secs(2);
        assert_eq!(
            fetch(Bind::None, &ep, ok_addr, t).await,
            Ok(Ipv4Addr::new(192, 0, 2, 18))
        );
        assert_eq!(
            fetch(Bind::Source(Ipv4Addr::LOCALHOST), &ep, ok_addr, t).await,
            Ok(Ipv4Addr::new(192, 0, 2, 18))
        );

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = match closed.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        drop(closed);
        assert_eq!(
            fetch(Bind::None, &ep, closed_addr, t).await,
            Err(ProbeError::Refused)
        );

        let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hole_addr = match hole.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let started = std::time::Instant::now();
        assert_eq!(
            fetch(Bind::None, &ep, hole_addr, Duration::from_millis(300)).await,
            Err(ProbeError::Timeout)
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(hole);
    }
}
