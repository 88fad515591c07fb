//! The bypass path's deadline follows the physical path's time in the same round: a
//! black-holed bypass is cut once it has taken several times what the physical path took,
//! instead of the whole `probe.timeout_secs`. On loopback: the "physical" path is bound to `lo`
//! (source 127.0.0.1) and answered; the "bypass" is bound to 127.0.0.2 and never answered.
//! Binding to a device needs root (CI runs as root).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use pia_split_tunnel_exporter::os::{Interfaces, PhysicalIf};
use pia_split_tunnel_exporter::probe::{PathKind, ProbeConfig, ProbeError, Prober};

/// Answers every caller with its egress IP, except callers from 127.0.0.2: held, silent.
fn endpoint() -> (std::net::SocketAddr, std::sync::mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            if conn.peer_addr().unwrap().ip() == Ipv4Addr::new(127, 0, 0, 2) {
                held.push(conn);
                let _ = held_tx.send(());
                continue;
            }
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let body = "198.51.100.47\n";
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, held_rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_black_holed_bypass_is_cut_relative_to_the_physical_path() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "binding a socket to an interface needs root: run the tests as root (CI does)"
    );
    let (addr, held) = endpoint();
    let prober = Prober::new(ProbeConfig {
        timeout_secs: 5.0,
        endpoints: vec![format!("http://{addr}/")],
        ..ProbeConfig::default()
    });
    let interfaces = Interfaces {
        physical: Some(PhysicalIf {
            name: "lo".into(),
            index: 1,
            ipv4: Ipv4Addr::new(127, 0, 0, 2),
            gateway: None,
        }),
        tunnel: None,
        problems: Vec::new(),
    };
    let started = Instant::now();
    let round = prober.round_with(interfaces).await;
    let took = started.elapsed();
    assert_eq!(
        round.egress(PathKind::Physical),
        Some(Ipv4Addr::new(198, 51, 100, 47)),
        "{round:?}"
    );
    held.recv_timeout(Duration::from_secs(1))
        .expect("the bypass connected and was held");
    let bypass = round.result(PathKind::Bypass).unwrap();
    assert_eq!(bypass.outcome, Err(ProbeError::Timeout), "{round:?}");
    // The floor is 750 ms; the physical path took a millisecond or so.
    assert!(
        bypass.duration >= Duration::from_millis(700) && bypass.duration < Duration::from_secs(2),
        "bypass cut after {:?}",
        bypass.duration
    );
    assert!(took < Duration::from_secs(3), "round took {took:?}");
}
