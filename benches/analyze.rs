//! `cargo bench --bench analyze`: parse+count throughput and peak memory of `analyze`.
//!
//! Generates logs with the test generator (cached under target/bench-data), streams each
//! through the same pipeline `analyze` uses, and prints lines/s, MB/s and peak RSS. Sizes are
//! session counts; `BENCH_SESSIONS=10000,300000,2000000` changes them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use pia_split_tunnel_exporter::analyze::{Report, peak_rss_bytes};
use pia_split_tunnel_exporter::ingest::LogConfig;
use pia_split_tunnel_exporter::sessions::verdict::Thresholds;

fn log_for(sessions: u64) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/bench-data");
    std::fs::create_dir_all(&dir).expect("bench data folder");
    let path = dir.join(format!("mixed-{sessions}.log"));
    if !path.exists() {
        let status = Command::new("python3")
            .arg(root.join("tests/fixtures/gen_proxy_log.py"))
            .args([
                "--profile",
                "mixed",
                "--seed",
                "3",
                "--no-expected",
                "--sessions",
                &sessions.to_string(),
                "--out",
            ])
            .arg(&path)
            .status()
            .expect("python3 runs the log generator");
        assert!(status.success(), "generator failed");
    }
    path
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not used.
    let sizes: Vec<u64> = std::env::var("BENCH_SESSIONS")
        .unwrap_or_else(|_| "10000,300000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("BENCH_SESSIONS: comma-separated session counts")
        })
        .collect();
    println!(
        "{:>10} {:>10} {:>9} {:>9} {:>11} {:>8} {:>12}",
        "sessions", "lines", "MB", "seconds", "M lines/s", "MB/s", "peak RSS MB"
    );
    for sessions in sizes {
        let path = log_for(sessions);
        let mut best = f64::MAX;
        let mut lines = 0;
        let mut bytes = 0;
        for _ in 0..3 {
            let started = Instant::now();
            let report = Report::from_files(
                std::slice::from_ref(&path),
                &LogConfig::default(),
                Thresholds::default(),
            )
            .expect("analyze");
            best = best.min(started.elapsed().as_secs_f64());
            lines = report.pipeline.read().lines;
            bytes = report.pipeline.read().bytes;
        }
        println!(
            "{sessions:>10} {lines:>10} {:>9.1} {best:>9.3} {:>11.2} {:>8.0} {:>12.1}",
            bytes as f64 / 1e6,
            lines as f64 / best / 1e6,
            bytes as f64 / best / 1e6,
            peak_rss_bytes() as f64 / 1e6
        );
    }
}
