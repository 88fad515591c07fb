//! The health model from snapshots: each component's status and reason.

use crate::common;

use std::time::Duration;

use common::*;
use pia_split_tunnel_exporter::health::model::{HealthThresholds, Inputs, assess};
use pia_split_tunnel_exporter::health::{CheckpointInput, HealthReport, LogHealthInput, Status};
use pia_split_tunnel_exporter::presence::Presence;
use pia_split_tunnel_exporter::probe::{Round, Verdict};
use pia_split_tunnel_exporter::proxy_log::{Level, Proto};
use pia_split_tunnel_exporter::sessions::verdict::{self, Tally, judge};
use pia_split_tunnel_exporter::sessions::window::{
    AppRatio, Ratio, SessionsState, SessionsVerdict,
};

fn t() -> HealthThresholds {
    HealthThresholds {
        log_stale: Duration::from_secs(900),
        log_max_level: Level::Info,
    }
}

fn log(present: bool, age: u64, level: Option<Level>) -> LogHealthInput {
    LogHealthInput {
        file_present: present,
        last_line_age: Some(Duration::from_secs(age)),
        level,
        lines_read: 100,
        unrecognized: 2,
        ..LogHealthInput::default()
    }
}

#[test]
fn log_component() {
    let r = |l: &LogHealthInput| assess(&t(), &only(Some(l), None)).components["log"].clone();
    assert_eq!(r(&log(true, 5, Some(Level::Debug))).status, Status::Ok);
    assert_eq!(r(&log(false, 5, None)).status, Status::Failing);
    let stale = r(&log(true, 3600, None));
    assert_eq!(stale.status, Status::Degraded);
    assert!(stale.reason.contains("3600 s"), "{}", stale.reason);
    let quiet = r(&log(true, 5, Some(Level::Warning)));
    assert_eq!(quiet.status, Status::Degraded);
    assert!(quiet.reason.contains("warning"), "{}", quiet.reason);
}

#[test]
fn sessions_component_names_the_app() {
    let apps = vec![
        AppRatio {
            app: "Plex".into(),
            ratio: Ratio {
                no_reply: 9,
                total: 10,
            },
        },
        AppRatio {
            app: "curl".into(),
            ratio: Ratio {
                no_reply: 0,
                total: 30,
            },
        },
    ];
    let mut tally = Tally::default();
    for a in &apps {
        tally.add(&a.app, Some(Proto::Tcp), a.ratio);
    }
    let partial = judge(verdict::Thresholds::default(), &tally, 300);
    let c = assess(
        &t(),
        &Inputs {
            sessions: Some((&apps, partial.clone())),
            probing: true,
            ..Inputs::default()
        },
    )
    .components["sessions"]
        .clone();
    assert_eq!(c.status, Status::Degraded);
    assert_eq!(
        c.reason,
        "partial: 23% of 40 sessions got no reply; no reply: Plex 90% of 10; working: curl \
         in the last 300 s: some bypass sessions get no reply; the probes decide"
    );
    // The model reads the verdict; it does not apply thresholds of its own.
    let working = SessionsVerdict {
        state: SessionsState::Working,
        ..partial.clone()
    };
    let c = assess(
        &t(),
        &Inputs {
            sessions: Some((&apps, working)),
            probing: true,
            ..Inputs::default()
        },
    )
    .components["sessions"]
        .clone();
    assert_eq!(c.status, Status::Ok, "{}", c.reason);
    let broken = SessionsVerdict {
        state: SessionsState::Broken,
        ..partial
    };
    let c = assess(
        &t(),
        &Inputs {
            sessions: Some((&apps, broken)),
            probing: true,
            ..Inputs::default()
        },
    )
    .components["sessions"]
        .clone();
    assert!(
        c.reason
            .ends_with("the bypass looks broken; the probes decide"),
        "{}",
        c.reason
    );
}

fn judged(r: Round) -> (Round, Verdict) {
    let v = Verdict::of(&r);
    (r, v)
}

/// The report after one judged round (or before the first), probing on, nothing else known.
fn after(r: Option<Round>) -> HealthReport {
    let v = r.as_ref().map(Verdict::of);
    let inputs = Inputs {
        probing: true,
        round: r.as_ref().zip(v.as_ref()),
        ..Inputs::default()
    };
    assess(&t(), &inputs)
}

#[test]
fn probe_components_per_path() {
    let rep = after(Some(round(true, Bypass::Tunnel)));
    let bypass = &rep.components["probe_bypass"];
    assert_eq!(bypass.status, Status::Failing);
    assert!(
        bypass.reason.contains(&TUNNEL_EGRESS.to_string())
            && bypass.reason.contains(&PHYS_EGRESS.to_string()),
        "{}",
        bypass.reason
    );
    assert_eq!(rep.components["probe_physical"].status, Status::Ok);
    assert_eq!(rep.status, Status::Failing);

    let rep = after(Some(round(false, Bypass::Physical)));
    assert_eq!(rep.components["probe_tunnel"].status, Status::Ok);
    assert!(
        rep.components["probe_tunnel"]
            .reason
            .contains("disconnected")
    );
    assert_eq!(rep.components["probe_bypass"].status, Status::Ok);

    let rep = after(Some(round_with(true, false, Bypass::Timeout, PHYS_IP)));
    assert_eq!(rep.components["probe_physical"].status, Status::Failing);
    assert!(
        rep.components["probe_physical"]
            .reason
            .contains("timed out")
    );

    let none = after(None);
    assert_eq!(none.components["probe_bypass"].status, Status::Degraded);
    assert_eq!(
        none.status,
        Status::Degraded,
        "not failing before the first round"
    );
}

fn presence(extension: u32, daemon: u32, vpn: u32) -> Presence {
    Presence {
        extension,
        daemon,
        vpn,
        checked: true,
    }
}

#[test]
fn processes_component() {
    let r =
        |p: Option<&Presence>, round: Option<(&Round, &Verdict)>, l: Option<&LogHealthInput>| {
            assess(
                &t(),
                &Inputs {
                    log: l,
                    sessions: None,
                    probing: true,
                    round,
                    fallback: None,
                    processes: p,
                    checkpoint: None,
                },
            )
            .components["processes"]
                .clone()
        };
    // Extension gone while a VPN process runs: the silent failure, with cause and fix.
    let gone = r(Some(&presence(0, 1, 1)), None, None);
    assert_eq!(gone.status, Status::Failing);
    assert!(
        gone.reason.contains("System Settings") && gone.reason.contains("splittunnel"),
        "{}",
        gone.reason
    );
    // The tunnel seen by the probes, or the proxy's own isConnected, also say the VPN is up.
    let (round, v) = judged(round_with(true, true, Bypass::Physical, PHYS_IP));
    assert_eq!(
        r(Some(&presence(0, 1, 0)), Some((&round, &v)), None).status,
        Status::Failing
    );
    let connected = LogHealthInput {
        proxy_connected: Some(true),
        ..log(true, 1, Some(Level::Debug))
    };
    assert_eq!(
        r(Some(&presence(0, 1, 0)), None, Some(&connected)).status,
        Status::Failing
    );
    // VPN down: no extension is expected.
    assert_eq!(r(Some(&presence(0, 1, 0)), None, None).status, Status::Ok);
    assert_eq!(
        r(Some(&presence(1, 0, 1)), None, None).status,
        Status::Degraded
    );
    assert_eq!(r(Some(&presence(1, 1, 1)), None, None).status, Status::Ok);
    assert_eq!(r(None, None, None).status, Status::Ok);
}

#[test]
fn debug_logging_off_is_degraded_not_silent() {
    let only_errors = LogHealthInput {
        file_present: false,
        error_log_present: true,
        ..LogHealthInput::default()
    };
    let c = assess(&t(), &only(Some(&only_errors), None)).components["log"].clone();
    assert_eq!(c.status, Status::Degraded);
    assert!(
        c.reason
            .contains("debug logging off: only errors are visible"),
        "{}",
        c.reason
    );
    let nothing = LogHealthInput::default();
    let c = assess(&t(), &only(Some(&nothing), None)).components["log"].clone();
    assert_eq!(c.status, Status::Failing);
}

#[test]
fn log_only_mode_has_no_probe_components() {
    let l = log(true, 5, Some(Level::Debug));
    let rep = assess(
        &t(),
        &Inputs {
            log: Some(&l),
            ..Inputs::default()
        },
    );
    assert!(
        rep.components.keys().all(|k| !k.starts_with("probe_")),
        "{:?}",
        rep.components.keys()
    );
    assert_eq!(rep.status, Status::Ok, "{rep:#?}");
}

fn only(log: Option<&LogHealthInput>, cp: Option<&CheckpointInput>) -> Inputs<'static> {
    // Leaked: a test-only shortcut so the snapshot can outlive this helper.
    Inputs {
        log: log.map(|l| &*Box::leak(Box::new(l.clone()))),
        probing: true,
        checkpoint: cp.map(|c| &*Box::leak(Box::new(c.clone()))),
        ..Inputs::default()
    }
}

#[test]
fn unreadable_log_is_failing_and_says_why() {
    let l = LogHealthInput {
        file_present: true,
        file_error: Some("/var/log/x.log: permission denied".into()),
        ..log(true, 5, Some(Level::Debug))
    };
    let c = assess(&t(), &only(Some(&l), None)).components["log"].clone();
    assert_eq!(c.status, Status::Failing);
    assert!(c.reason.contains("permission denied"), "{}", c.reason);
    assert!(
        c.reason.contains("resumes where it stopped"),
        "{}",
        c.reason
    );
}

#[test]
fn checkpoint_component() {
    let r = |cp: Option<&CheckpointInput>| {
        assess(&t(), &only(None, cp)).components["checkpoint"].clone()
    };
    assert_eq!(r(None).status, Status::Ok);
    let ok = CheckpointInput {
        path: "/state/cp.json".into(),
        error: None,
        last_saved_age: Some(Duration::from_secs(1)),
    };
    assert_eq!(r(Some(&ok)).status, Status::Ok);
    let full = CheckpointInput {
        error: Some("checkpoint /state/cp.json: No space left on device (os error 28)".into()),
        last_saved_age: Some(Duration::from_secs(42)),
        ..ok.clone()
    };
    let c = r(Some(&full));
    assert_eq!(c.status, Status::Degraded, "counting goes on: not failing");
    for want in ["No space left", "42 s ago", "log.checkpoint"] {
        assert!(c.reason.contains(want), "{want}: {}", c.reason);
    }
    let never = CheckpointInput {
        last_saved_age: None,
        ..full
    };
    assert!(r(Some(&never)).reason.contains("no save succeeded yet"));
    // The worst component decides the overall status.
    assert_eq!(
        assess(&t(), &only(None, Some(&never))).status,
        Status::Degraded
    );
}
