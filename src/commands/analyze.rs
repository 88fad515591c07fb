//! `analyze FILE...`: the offline report over the agent's pipeline.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::analyze::{Report, peak_rss_bytes};
use crate::ingest::LogConfig;
use crate::sessions::window::{SessionsState, Thresholds};

/// `analyze FILE...`: the report as a table, JSON or Prometheus text; exit 1 when the sessions
/// verdict over the files is "broken" (most sessions got no reply).
pub fn run(
    config: &LogConfig,
    thresholds: Thresholds,
    files: &[PathBuf],
    json: bool,
    prom: bool,
    stats: bool,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let report = Report::from_files(files, config, thresholds)?;
    let elapsed = started.elapsed().as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json()).context("rendering JSON")?
        );
    } else if prom {
        print!("{}", report.to_prometheus());
    } else {
        print!("{}", report.to_table());
    }
    if stats {
        let r = &report.pipeline.read();
        eprintln!(
            "analyze: {} lines, {:.1} MB in {:.3} s: {:.2} M lines/s, {:.0} MB/s, peak RSS {:.1} MB",
            r.lines,
            r.bytes as f64 / 1e6,
            elapsed,
            r.lines as f64 / elapsed / 1e6,
            r.bytes as f64 / elapsed / 1e6,
            peak_rss_bytes() as f64 / 1e6
        );
    }
    // Like `probe`: 1 when the bypass is broken (here: by the sessions verdict).
    Ok(if report.sessions() == SessionsState::Broken {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
