//! The alert rules pass `promtool check rules`, and every alert fires in one promtool unit
//! test and stays quiet in another (`tests/alerts/`). Needs promtool (sudo bash .ci/setup).

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
    assert!(out.contains("SUCCESS: 16 rules found"), "{out}");
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
    assert_eq!(alerts.len(), 12);
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
