//! The pf backend against the stand-in pfctl: golden rules, apply, read-back, revert, failures,
//! rollback and token release.

mod common;

use std::path::Path;

use common::*;
use pia_split_tunnel_exporter::fallback::pf::{Pf, PfOptions};
use pia_split_tunnel_exporter::fallback::{Backend, BackendError, FallbackConfig, Plan};

const ANCHOR: &str = "com.apple/250.PiaSplitTunnelFallback";

fn plan(cfg: &FallbackConfig) -> Plan {
    Plan::from_interfaces(&interfaces(true, PHYS_IP), cfg).unwrap()
}

fn pf(s: &StandIn) -> Pf {
    Pf::new(PfOptions::from_config(&s.config()))
}

/// Compares with a reviewed file; `UPDATE_GOLDEN=1` rewrites it (then review the diff).
fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(
        actual,
        want,
        "rendered rules differ from {}",
        path.display()
    );
}

#[test]
fn pf_rules_match_golden_default() {
    let s = StandIn::new();
    golden("pf_default.conf", &pf(&s).render(&plan(&s.config())));
}

#[test]
fn pf_rules_match_golden_with_bypass_subnets_and_ports() {
    let s = StandIn::new();
    let cfg = FallbackConfig {
        served_ports: vec![32400, 8443],
        bypass_subnets: vec![
            "10.16.0.0/16".parse().unwrap(),
            "203.0.113.0/24".parse().unwrap(),
        ],
        ..s.config()
    };
    golden("pf_bypass_subnets.conf", &pf(&s).render(&plan(&cfg)));
}

#[test]
fn pf_plan_refuses_unsafe_interface_names() {
    let s = StandIn::new();
    let mut ifs = interfaces(true, PHYS_IP);
    ifs.physical.as_mut().unwrap().name = "en0 GW) pass all #".into();
    assert!(Plan::from_interfaces(&ifs, &s.config()).is_err());
}

#[test]
fn pf_apply_confirm_revert_and_token_release() {
    let s = StandIn::new();
    let mut b = pf(&s);
    let p = plan(&s.config());
    b.apply(&p).expect("apply");
    let calls = s.calls();
    let lines = s.call_lines();
    assert_eq!(
        lines,
        vec![
            format!("-a {ANCHOR} -f -"),
            "-E".to_string(),
            format!("-a {ANCHOR} -s rules"),
            "-k 10.0.15.15".to_string(),
        ]
    );
    assert_eq!(calls[0].1.as_deref(), Some(b.render(&p).as_str()));
    let token = s.held_tokens();
    assert_eq!(token.len(), 1, "one enable reference");
    assert_eq!(b.token(), Some(token[0].parse().unwrap()));
    assert_eq!(
        std::fs::read_to_string(s.token_file()).unwrap().trim(),
        token[0]
    );
    let loaded = b.status().unwrap();
    assert!(
        loaded
            .rules
            .iter()
            .any(|r| r.contains("route-to (en0 10.0.15.1) inet from 10.0.15.15 to ! <rfc1918>"))
    );

    b.revert().expect("revert");
    let after: Vec<String> = s.call_lines().split_off(4);
    assert!(after.contains(&format!("-a {ANCHOR} -F all")), "{after:?}");
    assert!(
        after.contains(&"-k 10.0.15.15".to_string()),
        "states killed after revert: {after:?}"
    );
    assert!(after.contains(&format!("-X {}", token[0])), "{after:?}");
    assert!(s.held_tokens().is_empty(), "token released");
    assert!(!s.token_file().exists());
    assert!(b.status().unwrap().is_empty());
    assert!(!s.call_lines().iter().any(|c| c == "-d"), "never pfctl -d");
}

#[test]
fn pf_reload_keeps_one_token_and_kills_old_states() {
    let s = StandIn::new();
    let mut b = pf(&s);
    b.apply(&plan(&s.config())).unwrap();
    let mut moved = plan(&s.config());
    moved.source = "10.0.15.16".parse().unwrap();
    b.apply(&moved).unwrap();
    let lines = s.call_lines();
    assert_eq!(lines.iter().filter(|l| *l == "-E").count(), 1);
    assert!(lines.contains(&"-k 10.0.15.16".to_string()));
    assert_eq!(lines.iter().filter(|l| *l == "-k 10.0.15.15").count(), 2);
    assert_eq!(s.held_tokens().len(), 1);
    b.revert().unwrap();
    assert!(s.held_tokens().is_empty());
}

#[test]
fn pf_load_failure_is_an_error_with_stderr() {
    let s = StandIn::new();
    s.fail("-f");
    let err = pf(&s).apply(&plan(&s.config())).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BackendError::Failed { .. }), "{msg}");
    assert!(msg.contains("stand-in told to fail -f"), "{msg}");
    assert!(
        !s.call_lines().contains(&"-E".to_string()),
        "pf not enabled after a failed load"
    );
    assert!(s.held_tokens().is_empty());
}

#[test]
fn pf_enable_failure_rolls_back_the_anchor() {
    let s = StandIn::new();
    s.fail("-E");
    let mut b = pf(&s);
    let err = b.apply(&plan(&s.config())).unwrap_err();
    assert!(err.to_string().contains("-E"), "{err}");
    assert!(s.call_lines().contains(&format!("-a {ANCHOR} -F all")));
    s.heal();
    assert!(b.status().unwrap().is_empty());
}

#[test]
fn pf_readback_mismatch_rolls_back_and_releases_the_token() {
    let s = StandIn::new();
    s.fail("readback-empty");
    let mut b = pf(&s);
    let err = b.apply(&plan(&s.config())).unwrap_err();
    assert!(matches!(err, BackendError::ReadBack { .. }), "{err}");
    let lines = s.call_lines();
    assert!(lines.contains(&format!("-a {ANCHOR} -F all")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("-X ")), "{lines:?}");
    assert!(s.held_tokens().is_empty());
    assert_eq!(b.token(), None);
}

#[test]
fn pf_revert_failure_is_reported_and_token_still_released() {
    let s = StandIn::new();
    let mut b = pf(&s);
    b.apply(&plan(&s.config())).unwrap();
    s.fail("-F");
    let err = b.revert().unwrap_err();
    assert!(
        err.to_string().contains("stand-in told to fail -F"),
        "{err}"
    );
    assert!(
        s.held_tokens().is_empty(),
        "token released even though the flush failed"
    );
}

#[test]
fn pf_new_process_releases_the_token_of_an_earlier_one() {
    let s = StandIn::new();
    pf(&s).apply(&plan(&s.config())).unwrap();
    let held = s.held_tokens();
    // A second process (CLI, agent after a crash) reads the token file and the leftover rules.
    let mut later = pf(&s);
    assert!(!later.status().unwrap().is_empty());
    later.revert().unwrap();
    let lines = s.call_lines();
    assert!(lines.contains(&format!("-X {}", held[0])), "{lines:?}");
    assert_eq!(lines.iter().filter(|l| *l == "-k 10.0.15.15").count(), 2);
    assert!(s.held_tokens().is_empty());
}
