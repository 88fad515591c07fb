//! `probe`: every egress path once, as a table or JSON.

use std::fmt::Write;
use std::process::ExitCode;

use anyhow::Context;

use serde::Serialize;

use crate::os::Interfaces;
use crate::probe::{PathKind, ProbeConfig, ProbeError, Prober, Round, Verdict};

/// One probe round, on a runtime of its own.
pub fn one_round(config: &ProbeConfig) -> anyhow::Result<Round> {
    config.validate().map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    Ok(rt.block_on(Prober::new(config.clone()).round_now()))
}

/// `probe --json`: plain fields, documented in docs/operations.md.
#[derive(Serialize)]
struct RoundJson<'a> {
    verdict: &'a Verdict,
    interfaces: &'a Interfaces,
    paths: Vec<PathJson>,
}

#[derive(Serialize)]
struct PathJson {
    path: PathKind,
    bound_to: Option<String>,
    egress_ip: Option<std::net::Ipv4Addr>,
    error: Option<ProbeError>,
    duration_seconds: f64,
}

/// `probe`: one round as a table (or JSON); the exit status is the verdict's.
pub fn run(config: &ProbeConfig, json: bool) -> anyhow::Result<ExitCode> {
    let round = one_round(config)?;
    let v = Verdict::of(&round);
    if json {
        let doc = round_json(&round);
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", table(&round));
        println!("{}", v.text);
    }
    Ok(ExitCode::from(v.state.exit_code()))
}

/// One round as `probe --json` prints it (also a support bundle's probe-round.json).
pub fn round_json(round: &Round) -> serde_json::Value {
    let v = Verdict::of(round);
    let doc = RoundJson {
        verdict: &v,
        interfaces: &round.interfaces,
        paths: round
            .results
            .iter()
            .map(|r| PathJson {
                path: r.path,
                bound_to: bound_to(round, r.path),
                egress_ip: r.outcome.ok(),
                error: r.outcome.err(),
                duration_seconds: r.duration.as_secs_f64(),
            })
            .collect(),
    };
    serde_json::to_value(doc).unwrap_or_default()
}

/// What a path's socket is bound to.
fn bound_to(round: &Round, path: PathKind) -> Option<String> {
    match path {
        PathKind::Physical => round.interfaces.physical.as_ref().map(|p| p.name.clone()),
        PathKind::Tunnel => round.interfaces.tunnel.as_ref().map(|t| t.name.clone()),
        PathKind::Bypass => round
            .interfaces
            .physical
            .as_ref()
            .map(|p| p.ipv4.to_string()),
        PathKind::Default => Some("(routing table)".into()),
    }
}

/// The round's results, one path a line.
pub fn table(round: &Round) -> String {
    let mut out = format!(
        "{:<9} {:<18} {:<16} {:>8}  {}\n",
        "path", "bound to", "egress", "time", "error"
    );
    for r in &round.results {
        let bound = bound_to(round, r.path);
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
