//! HTTP attackers run as `nobody` against the root agent: the test binary runs itself again
//! under `setpriv --reuid 65534`, as its ignored `common::attacker::attacker` test, with the attack named in
//! [`ENV`]. Each attack holds its connections (reconnecting when the agent closes them) until
//! killed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const ENV: &str = "HOSTILE_HTTP_ATTACK";
const ADDR: &str = "HOSTILE_HTTP_ADDR";
/// The CA (PEM text) a TLS attacker trusts: the test's folder is root's.
const CA: &str = "HOSTILE_HTTP_CA";

/// Starts `attack` on `addr` as nobody; kill the child to stop it.
pub fn start(attack: &str, addr: SocketAddr) -> Child {
    start_with_ca(attack, addr, "")
}

/// As [`start`], for an attack over TLS trusting `ca_pem`.
pub fn start_with_ca(attack: &str, addr: SocketAddr, ca_pem: &str) -> Child {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the hostile HTTP tests need root: the agent runs as root, the attacker as nobody"
    );
    let exe = std::env::current_exe().unwrap();
    Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(exe)
        .args([
            "--exact",
            "common::attacker::attacker",
            "--ignored",
            "--nocapture",
        ])
        .env(ENV, attack)
        .env(ADDR, addr.to_string())
        .env(CA, ca_pem)
        .stdout(Stdio::null())
        .spawn()
        .expect("setpriv runs the attacker")
}

/// Run as nobody by the hostile tests through [`start`]; fails when run any other way.
#[test]
#[ignore = "the attacker process of the hostile tests, started by them as nobody"]
fn attacker() {
    run_from_env();
}

/// Runs the attack named in the environment.
fn run_from_env() {
    let (Ok(attack), Ok(addr)) = (std::env::var(ENV), std::env::var(ADDR)) else {
        panic!("run by the hostile tests through common::attacker::start, as nobody");
    };
    assert_ne!(
        unsafe { libc::geteuid() },
        0,
        "the attacker must not be root"
    );
    let addr: SocketAddr = addr.parse().unwrap();
    let (n, each): (usize, fn(SocketAddr)) = match attack.as_str() {
        "pipeline" => (256, pipeline),
        "keepalive" => (256, keepalive),
        "heads" => (255, half_head),
        "wrongpass" => (200, wrong_password),
        "tls-nocreds" => (256, tls_no_credentials),
        other => panic!("unknown attack {other}"),
    };
    let threads: Vec<_> = (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                loop {
                    each(addr);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// Pipelines `/metrics` requests and never reads an answer, until the agent closes.
fn pipeline(addr: SocketAddr) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return;
    };
    let req = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(64);
    while s.write_all(&req).is_ok() {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One small request every 8 s on a kept-alive connection, answers read.
fn keepalive(addr: SocketAddr) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    loop {
        if s.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .is_err()
        {
            return;
        }
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        std::thread::sleep(Duration::from_secs(8));
    }
}

/// Half of a 400 KB request head, then silence.
fn half_head(addr: SocketAddr) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return;
    };
    let mut head = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
    head.resize(200 * 1024, b'a');
    let _ = s.write_all(&head);
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
}

/// Wrong basic auth passwords, one request after another.
fn wrong_password(addr: SocketAddr) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return;
    };
    let pass = fastrand::u64(..);
    let auth = super::tls::basic("prometheus", &format!("wrong{pass}"));
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: {auth}\r\n\r\n"
    );
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
}

/// Over TLS, with no credentials: one request every 8 s on a kept-alive connection.
fn tls_no_credentials(addr: SocketAddr) {
    use rustls::pki_types::pem::PemObject;
    static CONFIG: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> =
        std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let pem = std::env::var(CA).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        std::sync::Arc::new(
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    });
    let Ok(tcp) = TcpStream::connect(addr) else {
        return;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(20)));
    let name = rustls::pki_types::ServerName::try_from(addr.ip().to_string()).unwrap();
    let Ok(conn) = rustls::ClientConnection::new(config.clone(), name) else {
        return;
    };
    let mut s = rustls::StreamOwned::new(conn, tcp);
    loop {
        if s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .is_err()
        {
            return;
        }
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        std::thread::sleep(Duration::from_secs(8));
    }
}
