//! The pf backend against the stand-in pfctl: golden rules, apply, read-back, revert, failures,
//! rollback and token release.

use crate::common;

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

/// A reboot as pf sees it: every reference and every loaded anchor gone.
fn reboot(s: &StandIn) {
    let _ = std::fs::remove_file(s.dir.path().join("tokens"));
    let _ = std::fs::remove_dir_all(s.dir.path().join("anchors"));
}

#[test]
fn pf_token_left_by_a_crash_does_not_skip_enable() {
    let s = StandIn::new();
    // The earlier agent applied and died (no revert); the machine rebooted since.
    pf(&s).apply(&plan(&s.config())).unwrap();
    let stale = std::fs::read_to_string(s.token_file()).unwrap();
    reboot(&s);
    let before = s.call_lines().len();

    let mut b = pf(&s);
    b.apply(&plan(&s.config()))
        .expect("apply after an unclean stop");
    let lines = s.call_lines().split_off(before);
    assert!(lines.contains(&"-E".to_string()), "pf enabled: {lines:?}");
    let e = lines.iter().position(|l| l == "-E").unwrap();
    let x = lines
        .iter()
        .position(|l| *l == format!("-X {}", stale.trim()))
        .expect("the stale token is released, best-effort");
    assert!(e < x, "our reference first, then the old one: {lines:?}");
    let held = s.held_tokens();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(b.token(), Some(held[0].parse().unwrap()));
    assert_eq!(
        std::fs::read_to_string(s.token_file()).unwrap().trim(),
        held[0],
        "the file names the new reference"
    );
    b.revert().unwrap();
    assert!(s.held_tokens().is_empty());
}

#[test]
fn pf_token_of_a_crashed_agent_is_released_once_a_new_one_is_held() {
    let s = StandIn::new();
    pf(&s).apply(&plan(&s.config())).unwrap();
    let stale = s.held_tokens();
    // No reboot: the old reference is still valid; the new process takes its own and lets
    // the old one go, so exactly one stays held.
    let mut b = pf(&s);
    b.apply(&plan(&s.config())).unwrap();
    let held = s.held_tokens();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_ne!(held, stale);
}

#[test]
fn pf_revert_with_a_stale_token_removes_the_rules_and_succeeds() {
    let s = StandIn::new();
    pf(&s).apply(&plan(&s.config())).unwrap();
    // The reference is gone (pf re-enabled by someone else, or a reboot while the rules were
    // loaded again): the token in the file is invalid.
    std::fs::remove_file(s.dir.path().join("tokens")).unwrap();
    let mut b = pf(&s);
    assert!(!b.status().unwrap().is_empty());
    b.revert().expect("revert succeeds with an invalid token");
    assert!(b.status().unwrap().is_empty(), "anchor flushed");
    assert!(!s.token_file().exists());
    assert!(s.call_lines().iter().any(|l| l.starts_with("-X ")));
}

#[test]
fn pf_token_file_is_private_and_not_written_through_a_planted_link() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let s = StandIn::new();
    let state = s.token_file().parent().unwrap().to_owned();
    std::fs::create_dir(&state).unwrap();
    let victim = s.dir.path().join("victim");
    std::fs::write(&victim, "root's file\n").unwrap();
    std::os::unix::fs::symlink(&victim, s.token_file()).unwrap();
    // The temp name too.
    std::os::unix::fs::symlink(&victim, state.join(".pf-token.tmp")).unwrap();

    let mut b = pf(&s);
    b.apply(&plan(&s.config())).unwrap();
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "root's file\n",
        "nothing written through a link"
    );
    let meta = std::fs::symlink_metadata(s.token_file()).unwrap();
    assert!(meta.is_file(), "the link was replaced by a file of ours");
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(s.token_file()).unwrap().trim(),
        b.token().unwrap().to_string()
    );
    assert_eq!(
        std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

#[test]
fn pf_symlinked_token_file_is_refused_and_its_target_untouched() {
    let s = StandIn::new();
    // Someone else's reference (PIA's, say), named by a file that is not ours.
    let mut other = pf(&s);
    other.apply(&plan(&s.config())).unwrap();
    let theirs = other.token().unwrap();
    let victim = s.dir.path().join("their-token");
    std::fs::rename(s.token_file(), &victim).unwrap();
    std::os::unix::fs::symlink(&victim, s.token_file()).unwrap();

    let mut b = pf(&s);
    b.revert().unwrap();
    assert!(
        !s.call_lines().contains(&format!("-X {theirs}")),
        "a linked token is never released"
    );
    assert_eq!(s.held_tokens(), vec![theirs.to_string()]);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap().trim(),
        theirs.to_string()
    );
    assert!(
        std::fs::symlink_metadata(s.token_file())
            .unwrap()
            .file_type()
            .is_symlink(),
        "left as it was"
    );

    // Readable by others, or another user's: refused the same way.
    for planted in ["mode", "owner"] {
        let _ = std::fs::remove_file(s.token_file());
        write_secret(&s.token_file(), &format!("{theirs}\n"));
        match planted {
            "mode" => {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(s.token_file(), std::fs::Permissions::from_mode(0o644))
                    .unwrap()
            }
            _ => std::os::unix::fs::chown(s.token_file(), Some(65534), None)
                .expect("run as root: this test gives a file away"),
        }
        pf(&s).revert().unwrap();
        assert!(
            !s.call_lines().contains(&format!("-X {theirs}")),
            "{planted}: refused"
        );
        assert_eq!(s.held_tokens(), vec![theirs.to_string()], "{planted}");
    }
}

#[test]
fn pf_changed_anchor_still_removes_the_earlier_one() {
    let s = StandIn::new();
    pf(&s).apply(&plan(&s.config())).unwrap();
    let old_file = s.dir.path().join("anchors").join(ANCHOR.replace('/', "%"));
    assert!(old_file.exists());

    let moved = FallbackConfig {
        anchor: "com.apple/260.Moved".into(),
        ..s.config()
    };
    let mut b = Pf::new(PfOptions::from_config(&moved));
    assert!(
        !b.status().unwrap().is_empty(),
        "the earlier anchor is seen"
    );
    b.revert().unwrap();
    assert!(!old_file.exists(), "the earlier anchor flushed");
    assert!(s.call_lines().contains(&format!("-a {ANCHOR} -F all")));

    // Apply under the new name retires the old anchor first.
    pf(&s).apply(&plan(&s.config())).unwrap();
    let mut b = Pf::new(PfOptions::from_config(&moved));
    b.apply(&plan(&moved)).unwrap();
    assert!(!old_file.exists());
    let rules = b.status().unwrap().rules;
    assert_eq!(rules.iter().filter(|r| r.contains("route-to")).count(), 1);
    b.revert().unwrap();
    assert!(
        Pf::new(PfOptions::from_config(&s.config()))
            .status()
            .unwrap()
            .is_empty()
    );
    assert!(s.held_tokens().is_empty());
}
