//! `cargo bench --bench metrics_render`: what one `/metrics` scrape costs, in-process.
//!
//! For 1, 16 and 64 apps (TCP and UDP sessions, transferred and zero-byte, errors) with a probe
//! round on all four paths, the fallback and health: the size of the text, the size gzipped
//! (what a scraper sending `Accept-Encoding: gzip` receives), and the CPU time of one render
//! (the collectors plus the text encoder, the agent's own process metrics left out: they read
//! the OS) and of gzipping it at level 1, as the agent does. `RENDER_ITERS` (500) sets how many renders are averaged.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use pia_split_tunnel_exporter::demo::ReplayRounds;
use pia_split_tunnel_exporter::log_state::{Limits, LogState};
use pia_split_tunnel_exporter::metrics;
use prometheus::Registry;

const BIN: &str = env!("CARGO_BIN_EXE_pia-split-tunnel-exporter");

/// The tests' agent harness, for its log generator.
#[path = "../tests/it/common/agent.rs"]
#[allow(dead_code)]
mod agent;

/// The agent's registry, less the process collectors, for `apps` apps.
fn registry(apps: usize) -> Registry {
    use pia_split_tunnel_exporter::{fallback, health, probe};
    let mut p = LogState::new(Limits::default());
    p.feed(&agent::apps_log(apps));
    let registry = Registry::new();
    metrics::register(&registry, metrics::BuildInfo).unwrap();
    let log = pia_split_tunnel_exporter::log_state::LogCollector::new(Arc::new(Mutex::new(p)));
    metrics::register(&registry, log).unwrap();
    let probe = probe::ProbeMetrics::register(&registry, false).unwrap();
    // The demo's round with the bypass broken: every path has a sample.
    let round = ReplayRounds::new(true).round_now();
    probe.observe(&round, &probe::Verdict::of(&round));
    fallback::metrics::FallbackMetrics::register(&registry).unwrap();
    let cfg = pia_split_tunnel_exporter::config::Config::default();
    let h = Arc::new(health::Health::new(&cfg.health));
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
