//! A real Prometheus server on loopback scrapes the agent (running the demo) with the alert
//! rules loaded; every expression of the dashboard and the rules must parse, every dashboard
//! panel must return data, every metric name they use must be one the agent exports, and
//! `promtool check metrics` finds no problem in the agent's output. Needs the `prometheus`
//! package (sudo bash .ci/setup).

use crate::common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::agent::Demo;
use common::prom_server::Prometheus;
use serde_json::Value;

/// Dashboard variables as a Prometheus query needs them.
fn concrete(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$instance", ".*")
        .replace("$job", ".*")
}

/// Families only a Mac with PIA installed exports (the versions of PIA and macOS): the demo
/// on Linux has neither, so they may be absent and their queries empty.
const MAC_ONLY: [&str; 2] = ["pia_split_tunnel_pia_info", "pia_split_tunnel_macos_info"];

/// Families of the daemon (`run`), which reloads on SIGHUP: the demo has no reload to report.
/// `daemon_signals::a_refused_reload_shows_0_in_metrics_and_a_good_one_1` scrapes them.
const DAEMON_ONLY: [&str; 1] = ["pia_split_tunnel_config_last_reload_successful"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// (title, expression) of every dashboard target and annotation.
fn dashboard_exprs(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap().to_owned(),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for a in d["annotations"]["list"].as_array().unwrap() {
        if let Some(e) = a["expr"].as_str() {
            out.push((a["name"].as_str().unwrap().to_owned(), e.to_owned()));
        }
    }
    out
}

fn rule_exprs(rules: &str) -> Vec<String> {
    // `expr: |` blocks and one-line `expr: ...`.
    let mut out = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr: ") else {
            continue;
        };
        if rest == "|" {
            let mut block = Vec::new();
            while let Some(next) = lines.peek() {
                if next.starts_with("          ") {
                    block.push(next.trim().to_owned());
                    lines.next();
                } else {
                    break;
                }
            }
            out.push(block.join(" "));
        } else {
            out.push(rest.to_owned());
        }
    }
    out
}

#[allow(clippy::too_many_lines, reason = "one scenario; the rule is for src/")]
#[test]
fn dashboard_schema_basics() {
    let d: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("dashboards/pia-split-tunnel.json")).unwrap(),
    )
    .unwrap();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 39);
    assert!(!d["uid"].as_str().unwrap().is_empty());
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["name"] == "datasource"
        && v["type"] == "datasource"
        && v["query"] == "prometheus"));
    assert!(
        vars.iter()
            .any(|v| v["name"] == "instance" && v["multi"] == true)
    );
    assert!(
        vars.iter()
            .any(|v| v["name"] == "job" && v["multi"] == true)
    );
    // Runbook links (dashboard and panels) point at sections of docs/runbooks.md.
    let readme = std::fs::read_to_string(root().join("docs/runbooks.md")).unwrap();
    let anchors: BTreeSet<String> = common::markdown_anchors(&readme).into_iter().collect();
    let text = serde_json::to_string(&d).unwrap();
    let mut links = 0;
    for (i, _) in text.match_indices("/docs/runbooks.md#") {
        let anchor: String = text[i + "/docs/runbooks.md#".len()..]
            .chars()
            .take_while(|c| *c != '"')
            .collect();
        assert!(
            anchors.contains(&anchor),
            "no section of docs/runbooks.md for #{anchor}"
        );
        links += 1;
    }
    assert!(links >= 6, "{links} runbook links");
    // Links out of Grafana open the runbooks; links within it keep the data source and job
    // the viewer chose.
    let urls: Vec<&str> = text
        .split("\"url\":\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    for url in urls.iter().filter(|url| !url.starts_with('/')) {
        assert!(url.contains("/blob/main/docs/runbooks.md"), "{url}");
    }
    let internal: Vec<&&str> = urls.iter().filter(|url| url.starts_with('/')).collect();
    assert!(!internal.is_empty(), "no link within the dashboard");
    for url in internal {
        for var in ["${datasource:queryparam}", "${job:queryparam}"] {
            assert!(url.contains(var), "{url} drops {var}");
        }
    }
    // The fleet row: broken, fallback active, down, and an up panel.
    let titles: Vec<&str> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for t in [
        "Fleet",
        "Macs with the bypass broken",
        "Macs with the fallback active",
        "Macs down",
        "Agents up",
    ] {
        assert!(titles.contains(&t), "no panel {t:?}: {titles:?}");
    }
    // No panel needs the recording rules (they may not be loaded where the dashboard is).
    for (title, expr) in dashboard_exprs(&d) {
        assert!(
            !expr.contains("pia_split_tunnel:"),
            "{title} needs a recording rule: {expr}"
        );
    }
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap();
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        assert!(
            p["fieldConfig"]["defaults"]["unit"].is_string(),
            "{title}: unit"
        );
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            assert!(
                expr.contains("$instance") && expr.contains("$job"),
                "{title}: not filtered by $job and $instance"
            );
        }
    }
}

#[allow(clippy::too_many_lines, reason = "one scenario; the rule is for src/")]
#[test]
fn real_prometheus_scrapes_the_agent_and_every_query_works() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start();
    let agent_addr = demo.addr;
    let rules = root().join("alerts/pia-split-tunnel.rules.yml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules:?}\n\
scrape_configs:\n  - job_name: pia-split-tunnel\n    static_configs:\n      - targets: [\"{agent_addr}\"]\n"
    );
    let prom = Prometheus::start(dir.path(), "prometheus", &config, &[]);
    // Every metric name the dashboard and the rules use is one the agent exports (families
    // appear as the demo's first lines and probe round arrive: wait for all of them).
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("dashboards/pia-split-tunnel.json")).unwrap(),
    )
    .unwrap();
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    let everything = format!(
        "{}\n{rules_text}",
        serde_json::to_string(&dashboard).unwrap()
    );
    let mut used = BTreeSet::new();
    for (i, _) in everything.match_indices("pia_split_tunnel_") {
        let before = everything[..i].chars().last();
        if before.is_some_and(|c| c == ':' || c.is_ascii_alphanumeric()) {
            continue;
        }
        let name: String = everything[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        used.insert(name);
    }
    assert!(used.len() > 20, "{used:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let m = common::agent::http_get(agent_addr, "/metrics");
        let exported: BTreeSet<&str> = m
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
            .collect();
        let missing: Vec<&String> = used
            .iter()
            .filter(|n| {
                !exported.contains(n.as_str())
                    && !MAC_ONLY.contains(&n.as_str())
                    && !DAEMON_ONLY.contains(&n.as_str())
            })
            .collect();
        if missing.is_empty() {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "used but not exported by the agent: {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Every probe state the agent exports has a Mac in the dashboard's fixture, so the verdict
    // panels are tested to show it in its own words (ops_promtool).
    let macs = std::fs::read_to_string(root().join("tests/alerts/dashboard-macs.yml")).unwrap();
    let states: Vec<&str> = metrics
        .lines()
        .filter_map(|l| {
            l.strip_prefix("pia_split_tunnel_verdict{state=\"")?
                .split('"')
                .next()
        })
        .collect();
    assert!(states.len() >= 6, "{states:?}");
    for state in states {
        assert!(
            macs.contains(&format!("verdict: {{ state: {state}, ")),
            "no Mac in tests/alerts/dashboard-macs.yml has the verdict {state}"
        );
    }
    // The agent's own output passes promtool's lint.
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // Wait for the recording rules, then run every query.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = prom.query_json("pia_split_tunnel:zero_byte_ratio:ratio5m");
        if v["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "recording rules never produced data: {v}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for expr in rule_exprs(&rules_text) {
        let v = prom.query_json(&expr);
        assert_eq!(
            v["status"], "success",
            "rule expression does not evaluate: {expr}: {v}"
        );
    }
    for (title, expr) in dashboard_exprs(&dashboard) {
        let expr = concrete(&expr);
        let v = prom.query_json(&expr);
        assert_eq!(v["status"], "success", "{title}: {expr}: {v}");
        let is_annotation = title.starts_with("Fallback applied");
        let mac_only = MAC_ONLY.iter().any(|f| expr.contains(f));
        if !is_annotation && !mac_only {
            assert!(
                !v["data"]["result"].as_array().unwrap().is_empty(),
                "panel {title:?} has no data: {expr}"
            );
        }
    }
    // The first row says the bypass is broken once the demo reaches the failure.
    let bypass = prom.query_json("pia_split_tunnel_bypass_working");
    assert!(
        bypass["data"]["result"][0]["value"][1].is_string(),
        "{bypass}"
    );
}
