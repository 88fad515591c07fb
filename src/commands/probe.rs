//! `probe`: every egress path once, as a table or JSON.

use std::fmt::Write;
use std::process::ExitCode;

use anyhow::Context;

use crate::probe::{PathKind, ProbeConfig, Prober, Round, verdicts};

/// One probe round, on a runtime of its own.
pub fn one_round(config: &ProbeConfig) -> anyhow::Result<Round> {
    config.validate().map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    Ok(rt.block_on(Prober::new(config.clone()).round_now()))
}

/// `probe`: one round as a table (or JSON); exit 1 when the bypass is broken.
pub fn run(config: &ProbeConfig, json: bool) -> anyhow::Result<ExitCode> {
    let round = one_round(config)?;
    let v = verdicts(&round);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "round": round, "verdicts": v }))?
        );
    } else {
        print!("{}", table(&round));
        for line in &v.text {
            println!("{line}");
        }
    }
    Ok(if v.bypass_working {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The round's results, one path a line.
pub fn table(round: &Round) -> String {
    let mut out = format!(
        "{:<9} {:<18} {:<16} {:>8}  {}\n",
        "path", "bound to", "egress", "time", "error"
    );
    for r in &round.results {
        let bound = match r.path {
            PathKind::Physical => round.interfaces.physical.as_ref().map(|p| p.name.clone()),
            PathKind::Tunnel => round.interfaces.tunnel.as_ref().map(|t| t.name.clone()),
            PathKind::Bypass => round
                .interfaces
                .physical
                .as_ref()
                .map(|p| p.ipv4.to_string()),
            PathKind::Default => Some("(routing table)".into()),
        };
        let (egress, error) = match r.outcome {
            Ok(ip) => (ip.to_string(), String::new()),
            Err(e) => ("-".into(), e.to_string()),
        };
        let _ = writeln!(
            out,
            "{:<9} {:<18} {:<16} {:>5} ms  {error}",
            <&str>::from(r.path),
            bound.unwrap_or_else(|| "(none)".into()),
            egress,
            r.duration.as_millis()
        );
    }
    out
}
