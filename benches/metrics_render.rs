//! `cargo bench --bench metrics_render`: what one `/metrics` scrape costs, in-process.
//!
//! For 1, 16 and 64 apps (TCP and UDP sessions, transferred and zero-byte, errors) with a probe
//! round on all four paths, the fallback and health: the size of the text, the size gzipped
//! (what a scraper sending `Accept-Encoding: gzip` receives), and the CPU time of one render
//! (the collectors plus the text encoder, the agent's own process metrics left out: they read
//! the OS) and of gzipping it at level 1, as the agent does. `RENDER_ITERS` (500) sets how many renders are averaged.

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use pia_split_tunnel_exporter::metrics;
use pia_split_tunnel_exporter::os::{Interfaces, PhysicalIf, TunnelIf};
use pia_split_tunnel_exporter::pipeline::{Limits, Pipeline};
use pia_split_tunnel_exporter::probe::{PathKind, PathResult, ProbeError, Round};
use prometheus::Registry;

/// A log with `apps` apps: per app two TCP and two UDP sessions, half of them zero-byte, each
/// with an error line.
fn log(apps: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut id = 0;
    for round in 0..4 {
        for app in 0..apps {
            id += 1;
            let app = format!("com.bench.app{app:02}");
            let (proto, file, open) = if round % 2 == 0 {
                (
                    "TCP",
                    "ChannelCreatorTCP.swift:50",
                    format!(
                        "{app} Creating, binding and connecting a new TCP socket - endpoint: 203.0.113.5:443 with bindIp: 10.0.15.15"
                    ),
                )
            } else {
                (
                    "UDP",
                    "ChannelCreatorUDP.swift:53",
                    format!(
                        "{app} Creating and binding a new UDP socket with bindIp: 10.0.15.15 and localEndpoint: N/A"
                    ),
                )
            };
            let size = if round < 2 { "1.5 MB" } else { "Zero KB" };
            write!(
                out,
                "[2026-02-16 11:49:31:4330] [{file}] debug: id: {id} {open}\r\n"
            )
            .unwrap();
            write!(out, "[2026-02-16 11:49:31:5330] [FlowForwarder{proto}.swift:32] error: id: {id} Empty buffer occurred during {proto} flow.readData() {app}\r\n").unwrap();
            write!(out, "[2026-02-16 11:49:32:5330] [ProxySession{proto}.swift:31] debug: id: {id} Destructor: ProxySession closed. rxBytes={size} txBytes={size} {app}\r\n").unwrap();
        }
    }
    out
}

fn round() -> Round {
    let physical = Ipv4Addr::new(198, 51, 100, 7);
    let tunnel = Ipv4Addr::new(203, 0, 113, 9);
    let result = |path, outcome| PathResult {
        path,
        outcome,
        duration: Duration::from_millis(120),
    };
    Round {
        interfaces: Interfaces {
            physical: Some(PhysicalIf {
                name: "en0".into(),
                index: 4,
                ipv4: Ipv4Addr::new(10, 0, 15, 15),
                gateway: Some(Ipv4Addr::new(10, 0, 15, 1)),
            }),
            tunnel: Some(TunnelIf {
                name: "utun4".into(),
                index: 12,
                ipv4: Ipv4Addr::new(10, 16, 0, 2),
            }),
        },
        results: vec![
            result(PathKind::Physical, Ok(physical)),
            result(PathKind::Tunnel, Ok(tunnel)),
            result(PathKind::Bypass, Err(ProbeError::Timeout)),
            result(PathKind::Default, Ok(tunnel)),
        ],
    }
}

/// The agent's registry, less the process collectors, for `apps` apps.
fn registry(apps: usize) -> Registry {
    use pia_split_tunnel_exporter::{fallback, health, probe};
    let mut p = Pipeline::new(Limits::default());
    p.feed(&log(apps));
    let registry = Registry::new();
    metrics::register(&registry, metrics::BuildInfo).unwrap();
    let log = metrics::LogCollector::new(Arc::new(Mutex::new(p)));
    metrics::register(&registry, log).unwrap();
    let probe = probe::ProbeMetrics::register(&registry, false).unwrap();
    probe.observe(&round());
    fallback::metrics::FallbackMetrics::register(&registry).unwrap();
    let cfg = pia_split_tunnel_exporter::config::Config::default();
    let h = Arc::new(health::Health::new(&cfg.health, &cfg.fallback));
    metrics::register(&registry, health::metrics::HealthCollector(h)).unwrap();
    registry
}

/// CPU time of this thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn gzip(text: &str) -> usize {
    // Level 1, as the agent's compression layer is set.
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap().len()
}

/// Average CPU time of `f` over `iters` runs, after a warm-up.
fn cpu_per_run(iters: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..20 {
        f();
    }
    let t0 = thread_cpu();
    for _ in 0..iters {
        f();
    }
    (thread_cpu() - t0) / iters
}

fn main() {
    let iters: u32 = std::env::var("RENDER_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    println!("| apps | series | text | gzip | render CPU | gzip CPU |");
    println!("|---|---|---|---|---|---|");
    for apps in [1, 16, 64] {
        let registry = registry(apps);
        let text = metrics::encode(&registry);
        let series = text.lines().filter(|l| !l.starts_with('#')).count();
        let render = cpu_per_run(iters, || {
            std::hint::black_box(metrics::encode(&registry));
        });
        let compress = cpu_per_run(iters, || {
            std::hint::black_box(gzip(&text));
        });
        println!(
            "| {apps} | {series} | {:.1} KB | {:.1} KB | {:.3} ms | {:.3} ms |",
            text.len() as f64 / 1000.0,
            gzip(&text) as f64 / 1000.0,
            render.as_secs_f64() * 1e3,
            compress.as_secs_f64() * 1e3,
        );
    }
}
