//! A probe round against endpoints that accept and never answer: bounded by its deadline, and
//! it leaves no socket open. Its own test binary, so no other test's descriptors interfere.

use std::time::{Duration, Instant};

/// Endpoints that accept and never answer: the round ends at its deadline and leaves no socket.
#[tokio::test(flavor = "multi_thread")]
async fn black_holed_endpoints_bound_the_round() {
    use pia_split_tunnel_exporter::os::Interfaces;
    use pia_split_tunnel_exporter::probe::{PathKind, ProbeConfig, ProbeError, Prober};
    let holes: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let endpoints = holes
        .iter()
        .map(|h| format!("http://{}/", h.local_addr().unwrap()))
        .collect();
    let prober = Prober::new(ProbeConfig {
        timeout_secs: 1.0,
        endpoints,
        ..ProbeConfig::default()
    });
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = fds();
    let started = Instant::now();
    let round = prober.round_with(Interfaces::default()).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1600),
        "round took {took:?}"
    );
    assert_eq!(
        round.result(PathKind::Default).unwrap().outcome,
        Err(ProbeError::Timeout)
    );
    assert_eq!(
        round.result(PathKind::Bypass).unwrap().outcome,
        Err(ProbeError::NoInterface)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fds(), before, "the round's sockets are closed when it ends");
}
