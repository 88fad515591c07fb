//! `analyze FILE...`: the offline report over the agent's pipeline.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::analyze::{Report, peak_rss_bytes};
use crate::ingest::LogConfig;

/// `analyze FILE...`: the report as a table, JSON or Prometheus text.
pub fn run(
    config: &LogConfig,
    files: &[PathBuf],
    json: bool,
    prom: bool,
    stats: bool,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let report = Report::from_files(files, config)?;
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
    Ok(ExitCode::SUCCESS)
}
