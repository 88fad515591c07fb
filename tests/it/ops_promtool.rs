//! The alert rules pass `promtool check rules`, and every alert fires in one promtool unit
//! test and stays quiet in another (`tests/alerts/`); every "broken" expression of the
//! dashboard is the alert's and evaluates, under promtool, to what the alert says for each Mac
//! of `tests/alerts/dashboard-macs.yml`. Needs promtool (sudo bash .ci/setup).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
        .expect("promtool is needed: sudo bash .ci/setup (installs Debian's prometheus package)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn rules_are_valid() {
    let out = promtool(&["check", "rules", "alerts/pia-split-tunnel.rules.yml"]);
    assert!(out.contains("SUCCESS: 17 rules found"), "{out}");
}

#[test]
fn every_alert_is_unit_tested_firing_and_quiet() {
    promtool(&["test", "rules", "tests/alerts/pia-split-tunnel.test.yml"]);
    let rules = std::fs::read_to_string(root().join("alerts/pia-split-tunnel.rules.yml")).unwrap();
    let tests =
        std::fs::read_to_string(root().join("tests/alerts/pia-split-tunnel.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 13);
    // Per alert: a case that expects it and a case that expects nothing.
    for alert in &alerts {
        let blocks: Vec<&str> = tests
            .split("alertname: ")
            .skip(1)
            .filter(|b| b.starts_with(&format!("{alert}\n")))
            .collect();
        assert!(
            blocks.iter().any(|b| b.contains("exp_labels")),
            "{alert} never fires in a test"
        );
        assert!(
            blocks.iter().any(|b| b.contains("exp_alerts: []")),
            "{alert} has no quiet case"
        );
    }
    // Every runbook link points at a section of docs/runbooks.md.
    let readme = std::fs::read_to_string(root().join("docs/runbooks.md")).unwrap();
    for alert in &alerts {
        let anchor = format!("/docs/runbooks.md#runbook-{}", alert.to_lowercase());
        assert!(rules.contains(&anchor), "{alert}: runbook_url");
        assert!(
            readme.contains(&format!("\n## Runbook: {alert}\n")),
            "docs/runbooks.md has no runbook section for {alert}"
        );
    }
}

/// The bypass alert reads the agent's verdicts: no threshold of the agent's restated in PromQL,
/// and no aggregation that drops job, instance or target labels.
#[test]
fn bypass_alert_reads_the_agents_judgement() {
    let rules = std::fs::read_to_string(root().join("alerts/pia-split-tunnel.rules.yml")).unwrap();
    let start = rules.find("- alert: PiaSplitTunnelBypassBroken").unwrap();
    let end = rules[start..].find("for:").unwrap() + start;
    let expr = &rules[start..end];
    for literal in [
        "0.9",
        "0.75",
        ">= 5",
        "zero_byte_closures",
        "sessions_closed",
        "replies_total",
    ] {
        assert!(!expr.contains(literal), "{literal} in {expr}");
    }
    assert!(expr.contains("pia_split_tunnel_verdict{state=\"bypass_broken\"}"));
    assert!(expr.contains("pia_split_tunnel_sessions_verdict{state=\"broken\"}"));
    assert!(
        !rules.contains("by (instance"),
        "an aggregation drops job and target labels"
    );
}

/// One Mac of `tests/alerts/dashboard-macs.yml`.
#[derive(serde::Deserialize)]
struct Mac {
    mac: String,
    /// 1 when the alert PiaSplitTunnelBypassBroken fires for this Mac.
    broken: u8,
    verdict: Shown,
    sessions: Shown,
    /// The Mac's scrape, one `name{labels} value` a line.
    series: String,
}

impl Mac {
    fn works(&self) -> bool {
        self.verdict.state == "bypass_working"
    }

    /// The labels of the Mac's series of `family` (its versions), as `{name="value",...}`.
    fn labels_of(&self, family: &str) -> String {
        let prefix = format!("pia_split_tunnel_{family}{{");
        let line = self
            .series
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{}: no {family}", self.mac));
        format!("{{{}", line.rsplit_once(' ').unwrap().0)
    }
}

/// What a state panel must show for a Mac.
#[derive(serde::Deserialize)]
struct Shown {
    state: String,
    words: String,
    colour: String,
}

#[derive(serde::Deserialize)]
struct Macs {
    macs: Vec<Mac>,
}

/// One dashboard query, with the value mappings of the field it fills.
struct Query {
    panel: String,
    ref_id: String,
    expr: String,
    /// (value, text, colour)
    mappings: Vec<(i64, String, String)>,
}

impl Query {
    /// A count (or 0/1) of Macs with the bypass broken: by its panel's title or its refId.
    fn counts_broken(&self) -> bool {
        self.panel.to_lowercase().contains("broken")
            || self.ref_id.to_lowercase().contains("broken")
    }

    /// A count of Macs the probes see with the bypass working (the versions' tables).
    fn counts_working(&self) -> bool {
        self.ref_id == "working"
    }

    /// What this query counts of one Mac (0 or 1), when it counts Macs.
    fn count_of(&self, mac: &Mac) -> Option<i64> {
        if self.counts_broken() {
            Some(i64::from(mac.broken))
        } else if self.counts_working() {
            Some(i64::from(mac.works()))
        } else if self.ref_id == "macs" {
            Some(1)
        } else {
            None
        }
    }

    /// The version family whose labels a versions' table groups by.
    fn grouped_by(&self) -> Option<&'static str> {
        if !self.expr.starts_with("count by (") {
            return None;
        }
        ["pia_info", "macos_info"]
            .into_iter()
            .find(|f| self.expr.contains(&format!("pia_split_tunnel_{f}{{")))
    }

    /// A state code shown as words, one of which says broken.
    fn shows_state(&self) -> bool {
        !self.counts_broken()
            && self
                .mappings
                .iter()
                .any(|(_, text, _)| text.to_lowercase().contains("broken"))
    }

    /// As Prometheus runs it: the dashboard's variables match everything.
    fn concrete(&self) -> String {
        self.expr.replace("$job", ".*").replace("$instance", ".*")
    }

    /// The value the mapping shows as `shown.words`, checked to have `shown.colour`.
    fn value_showing(&self, shown: &Shown) -> i64 {
        let found: Vec<&(i64, String, String)> = self
            .mappings
            .iter()
            .filter(|(_, text, _)| *text == shown.words)
            .collect();
        let [(value, _, colour)] = found[..] else {
            panic!(
                "{} ({}): {} mappings show {:?} (state {}): {:?}",
                self.panel,
                self.ref_id,
                found.len(),
                shown.words,
                shown.state,
                self.mappings
            );
        };
        assert_eq!(
            *colour, shown.colour,
            "{} ({}): {:?} in the wrong colour",
            self.panel, self.ref_id, shown.words
        );
        *value
    }
}

fn value_mappings(list: &serde_json::Value) -> Vec<(i64, String, String)> {
    let mut out = Vec::new();
    for m in list.as_array().into_iter().flatten() {
        for (key, shown) in m["options"].as_object().into_iter().flatten() {
            out.push((
                key.parse().unwrap_or_else(|_| panic!("mapping key {key}")),
                shown["text"].as_str().unwrap_or_default().to_owned(),
                shown["color"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    out
}

/// The mappings of the field a target fills: the panel's defaults, or an override for its
/// name in a table (`Value #refId`, or as renamed by the organize transformation).
fn field_mappings(panel: &serde_json::Value, ref_id: &str) -> Vec<(i64, String, String)> {
    let raw = format!("Value #{ref_id}");
    let name = panel["transformations"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|t| t["options"]["renameByName"][&raw].as_str())
        .unwrap_or(&raw);
    let over = panel["fieldConfig"]["overrides"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["matcher"]["id"] == "byName" && o["matcher"]["options"] == name)
        .flat_map(|o| o["properties"].as_array().into_iter().flatten())
        .find(|p| p["id"] == "mappings");
    value_mappings(over.map_or(
        &panel["fieldConfig"]["defaults"]["mappings"],
        |p| &p["value"],
    ))
}

fn dashboard_queries() -> Vec<Query> {
    let text = std::fs::read_to_string(root().join("dashboards/pia-split-tunnel.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let ref_id = t["refId"].as_str().unwrap().to_owned();
            out.push(Query {
                panel: p["title"].as_str().unwrap().to_owned(),
                mappings: field_mappings(p, &ref_id),
                ref_id,
                expr: t["expr"].as_str().unwrap().to_owned(),
            });
        }
    }
    out
}

/// The expression of `alert` in the rules, on one line.
fn alert_expr(alert: &str) -> String {
    let rules = std::fs::read_to_string(root().join("alerts/pia-split-tunnel.rules.yml")).unwrap();
    let start = rules.find(&format!("- alert: {alert}\n")).unwrap();
    let block = &rules[start..];
    let expr =
        &block[block.find("expr: |").unwrap() + "expr: |".len()..block.find("for:").unwrap()];
    expr.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every "broken" count of the dashboard is the alert's own expression (the probe verdict
/// bypass_broken or the sessions verdict broken), filtered by the dashboard's variables;
/// none reads bypass_working, which is 0 for a Mac with its VPN off too.
#[test]
fn dashboard_broken_counts_are_the_alerts_expression() {
    let alert = alert_expr("PiaSplitTunnelBypassBroken");
    let queries = dashboard_queries();
    let broken: Vec<&Query> = queries.iter().filter(|q| q.counts_broken()).collect();
    let panels: BTreeSet<&str> = broken.iter().map(|q| q.panel.as_str()).collect();
    for p in [
        "Macs with the bypass broken",
        "Macs",
        "PIA versions",
        "macOS versions",
    ] {
        assert!(panels.contains(p), "no broken count in {p:?}: {panels:?}");
    }
    for q in &broken {
        let unfiltered = q
            .expr
            .replace("{job=~\"$job\",instance=~\"$instance\"}", "")
            .replace("job=~\"$job\",instance=~\"$instance\",", "");
        assert!(
            unfiltered.contains(&alert),
            "{} ({}) is not the alert's expression ({alert}): {}",
            q.panel,
            q.ref_id,
            q.expr
        );
    }
    for q in &queries {
        assert!(
            !q.expr.contains("pia_split_tunnel_bypass_working"),
            "{} ({}) reads bypass_working: {}",
            q.panel,
            q.ref_id,
            q.expr
        );
    }
}

/// A Mac's scrape as promtool input series, with its job and instance.
fn input_series(mac: &Mac) -> Vec<serde_json::Value> {
    let labels = format!("job=\"pia-split-tunnel\",instance=\"{}\"", mac.mac);
    mac.series
        .lines()
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').unwrap();
            let series = match name.split_once('{') {
                Some((family, rest)) => format!("{family}{{{labels},{rest}"),
                None => format!("{name}{{{labels}}}"),
            };
            serde_json::json!({ "series": series, "values": format!("{value}x10") })
        })
        .collect()
}

/// `expr` summed to one sample (-1 when it returns nothing), expected to be `value`.
fn expect(expr: &str, value: i64) -> serde_json::Value {
    serde_json::json!({
        "expr": format!("sum({expr}) or vector(-1)"),
        "eval_time": "5m",
        "exp_samples": [{ "labels": "{}", "value": value }],
    })
}

/// The expectations for one Mac: each broken count says what the alert says, and each state
/// panel shows the Mac's verdict (probe or sessions) in its words and colour.
fn expectations(mac: &Mac, queries: &[Query]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for q in queries {
        if let Some(count) = q.count_of(mac) {
            out.push(expect(&q.concrete(), count));
        } else if q.shows_state() {
            let shown = if q.expr.contains("sessions_verdict") {
                &mac.sessions
            } else {
                &mac.verdict
            };
            out.push(expect(&q.concrete(), q.value_showing(shown)));
        }
    }
    out
}

/// Over the whole fleet, each count is the number of Macs it counts; in the versions' tables,
/// per version.
fn fleet_expectations(macs: &[Mac], queries: &[Query]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for q in queries.iter().filter(|q| q.count_of(&macs[0]).is_some()) {
        let count = |m: &Mac| q.count_of(m).unwrap();
        let Some(family) = q.grouped_by() else {
            out.push(expect(&q.concrete(), macs.iter().map(count).sum()));
            continue;
        };
        let mut groups: BTreeMap<String, i64> = BTreeMap::new();
        for m in macs {
            *groups.entry(m.labels_of(family)).or_default() += count(m);
        }
        let samples: Vec<serde_json::Value> = groups
            .into_iter()
            .map(|(labels, value)| serde_json::json!({ "labels": labels, "value": value }))
            .collect();
        out.push(serde_json::json!({
            "expr": q.concrete(),
            "eval_time": "5m",
            "exp_samples": samples,
        }));
    }
    out
}

/// Every dashboard "broken" expression, taken from the JSON, evaluated by promtool over the
/// Macs of tests/alerts/dashboard-macs.yml: 0 for a Mac with its VPN off (or no network, a
/// leak, an undetermined verdict), 1 for a broken one, the number of broken Macs over the
/// whole fleet (per version in the versions' tables, with the Macs the probes see working);
/// the verdict panels show every probe state in its own words.
#[test]
fn dashboard_broken_expressions_hold_for_every_mac() {
    let fixture = std::fs::read_to_string(root().join("tests/alerts/dashboard-macs.yml")).unwrap();
    let macs: Macs = serde_saphyr::from_str(&fixture).unwrap();
    let queries = dashboard_queries();
    assert!(queries.iter().filter(|q| q.counts_broken()).count() >= 4);
    let states: Vec<&Query> = queries.iter().filter(|q| q.shows_state()).collect();
    assert!(
        states
            .iter()
            .filter(|q| !q.expr.contains("sessions_verdict"))
            .count()
            >= 2,
        "the Bypass stat and the fleet table's verdict"
    );
    // Every probe state the agent exports has a Mac, so every state is mapped.
    let exported: BTreeSet<&str> = fixture
        .split("pia_split_tunnel_verdict{state=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    let covered: BTreeSet<&str> = macs.macs.iter().map(|m| m.verdict.state.as_str()).collect();
    assert_eq!(exported, covered);
    assert!(exported.len() >= 6, "{exported:?}");
    let mut tests = Vec::new();
    for mac in &macs.macs {
        tests.push(serde_json::json!({
            "interval": "1m",
            "input_series": input_series(mac),
            "promql_expr_test": expectations(mac, &queries),
        }));
    }
    let fleet: Vec<serde_json::Value> = macs.macs.iter().flat_map(input_series).collect();
    let counts = fleet_expectations(&macs.macs, &queries);
    assert!(counts.len() >= 8, "{counts:?}");
    tests.push(serde_json::json!({
        "interval": "1m",
        "input_series": fleet,
        "promql_expr_test": counts,
    }));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.test.json");
    let doc = serde_json::json!({ "rule_files": [], "evaluation_interval": "1m", "tests": tests });
    std::fs::write(&file, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    promtool(&["test", "rules", file.to_str().unwrap()]);
}
