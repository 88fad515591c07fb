//! The workaround that retires itself, in the namespace lab (`lab/lab.sh`): the agent in
//! `auto` repairs the lab, then `POST /fallback/recheck` lifts its rules for one round of real
//! probes. Without a fix they are back at once and nothing else changed; after the lab's "PIA
//! fix" (`lab.sh pia-fix`: the tunnel side routes the bound address out of en0 itself) they
//! stay off, said on /metrics, /health and the status page. The interruption is printed.
//! Needs root (CI runs as root).

use crate::common;

use std::time::Duration;

use common::lab::{Lab, http_in};
use serde_json::Value;

use super::lab_probe::{LabAgent, METRICS, has};

const TOKEN: &str = "lab-recheck-token-0123456789";
const RECHECK: &str = "http://10.0.15.15:9847/fallback/recheck";

/// The rules and every route of the `mac` namespace: what a recheck must leave as it was.
fn routing(lab: &Lab) -> String {
    lab.ip(&["rule"]) + &lab.ip(&["route", "show", "table", "all"])
}

fn recheck(lab: &Lab) -> Value {
    let (code, body) = http_in(&lab.mac(), "POST", RECHECK, Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Three rechecks without a fix: each puts the rules back, the routing as it was; the
/// interruption of each printed.
fn without_a_fix_the_rules_come_back(lab: &Lab) {
    // No fix: each recheck puts the rules back, and the routing is as it was.
    let before = routing(lab);
    let mut lifts = Vec::new();
    for _ in 0..3 {
        let v = recheck(lab);
        assert_eq!(v["result"], "still_needed", "{v}");
        lifts.push(v["recheck"]["lifted_seconds"].as_f64().unwrap());
        assert_eq!(routing(lab), before, "nothing else changes");
    }
    println!("lab recheck without a fix: rules lifted for {lifts:?} s");
    let (_, m) = lab.get(METRICS);
    for line in [
        "pia_split_tunnel_fallback_active 1",
        "pia_split_tunnel_fallback_rechecks_total{result=\"still_needed\"} 3",
        "pia_split_tunnel_fallback_retired_total{reason=\"bypass_works_without\"} 0",
        "pia_split_tunnel_fallback_actions_total{action=\"apply\",result=\"ok\"} 1",
    ] {
        assert!(has(&m, line), "missing {line}\n{m}");
    }
}

#[test]
fn a_pia_fix_retires_the_rules_and_no_fix_keeps_them() {
    let lab = Lab::up("t");
    let agent = LabAgent::start_with(
        &lab,
        "interval_secs = 2\ntimeout_secs = 1.5",
        "auto",
        |dir| {
            let token = dir.join("token");
            common::write_secret(&token, TOKEN);
            format!("token_file = {token:?}\nallow_plain_http = true")
        },
    );
    let within = Duration::from_secs(40);
    agent.wait_for(
        "the repair",
        &|b| {
            has(b, "pia_split_tunnel_fallback_active 1")
                && has(b, "pia_split_tunnel_bypass_working 1")
        },
        METRICS,
        within,
    );

    without_a_fix_the_rules_come_back(&lab);

    // PIA ships the fix: the next recheck retires the rules.
    lab.script(&["pia-fix"]);
    let v = recheck(&lab);
    assert_eq!(v["result"], "retired", "{v}\n{}", agent.log());
    println!(
        "lab recheck with the fix: retired after {} s",
        v["recheck"]["lifted_seconds"]
    );
    assert!(
        !lab.ip(&["rule"]).contains("lookup 100"),
        "{}",
        lab.ip(&["rule"])
    );
    assert_eq!(lab.ip(&["route", "show", "table", "100"]), "");
    let m = agent.wait_for(
        "the retirement on /metrics",
        &|b| has(b, "pia_split_tunnel_fallback_active 0"),
        METRICS,
        within,
    );
    assert!(
        has(
            &m,
            "pia_split_tunnel_fallback_retired_total{reason=\"bypass_works_without\"} 1"
        ),
        "{m}"
    );
    let (_, health) = lab.get("http://10.0.15.15:9847/health");
    let h: Value = serde_json::from_str(&health).unwrap();
    let reason = h["components"]["fallback"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("retired: the bypass works without the rules"),
        "{health}"
    );
    let (_, page) = lab.get("http://10.0.15.15:9847/");
    assert!(page.contains("retired"), "the status page says it too");
    assert!(agent.log().contains("fallback: retired"), "{}", agent.log());

    // It stays off: the next rounds see the bypass working through PIA's own route.
    let rounds = |b: &str| {
        b.lines()
            .find_map(|l| l.strip_prefix("pia_split_tunnel_probe_rounds_total "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (_, m) = lab.get(METRICS);
    let then = rounds(&m);
    let m = agent.wait_for(
        "three more rounds",
        &|b| rounds(b) >= then + 3.0,
        METRICS,
        within,
    );
    assert!(has(&m, "pia_split_tunnel_fallback_active 0"), "{m}");
    assert!(has(&m, "pia_split_tunnel_bypass_working 1"), "{m}");
    assert!(!lab.ip(&["rule"]).contains("lookup 100"));
}
