//! The health model from snapshots: each component's status and reason.

mod common;

use std::time::Duration;

use common::*;
use pia_split_tunnel_exporter::health::model::{Inputs, Thresholds, assess};
use pia_split_tunnel_exporter::health::{CheckpointInput, LogHealthInput, Status};
use pia_split_tunnel_exporter::presence::Presence;
use pia_split_tunnel_exporter::proxy_log::Level;
use pia_split_tunnel_exporter::sessions::window::{AppRatio, Ratio};

fn t() -> Thresholds {
    Thresholds {
        log_stale: Duration::from_secs(900),
        log_max_level: Level::Info,
        zero_byte_ratio: 0.9,
        min_sessions: 5,
        window: Duration::from_secs(300),
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
    let r = |l: &LogHealthInput| {
        assess(
            &t(),
            &Inputs {
                log: Some(l),
                sessions: None,
                round: None,
                fallback: None,
                processes: None,
                checkpoint: None,
            },
        )
        .components["log"]
            .clone()
    };
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
            ratio: Ratio { zero: 9, total: 10 },
        },
        AppRatio {
            app: "curl".into(),
            ratio: Ratio { zero: 3, total: 3 },
        },
    ];
    let c = assess(
        &t(),
        &Inputs {
            log: None,
            sessions: Some(&apps),
            round: None,
            fallback: None,
            processes: None,
            checkpoint: None,
        },
    )
    .components["sessions"]
        .clone();
    assert_eq!(c.status, Status::Degraded);
    assert!(c.reason.contains("Plex: 9 of 10"), "{}", c.reason);
    assert!(
        !c.reason.contains("curl"),
        "under min_sessions: {}",
        c.reason
    );
}

#[test]
fn probe_components_per_path() {
    let broken = round(true, Bypass::Tunnel);
    let rep = assess(
        &t(),
        &Inputs {
            log: None,
            sessions: None,
            round: Some(&broken),
            fallback: None,
            processes: None,
            checkpoint: None,
        },
    );
    let bypass = &rep.components["probe_bypass"];
    assert_eq!(bypass.status, Status::Failing);
    assert!(
        bypass.reason.contains("203.0.113.9") && bypass.reason.contains("198.51.100.47"),
        "{}",
        bypass.reason
    );
    assert_eq!(rep.components["probe_physical"].status, Status::Ok);
    assert_eq!(rep.status, Status::Failing);

    let vpn_off = round(false, Bypass::Physical);
    let rep = assess(
        &t(),
        &Inputs {
            log: None,
            sessions: None,
            round: Some(&vpn_off),
            fallback: None,
            processes: None,
            checkpoint: None,
        },
    );
    assert_eq!(rep.components["probe_tunnel"].status, Status::Ok);
    assert!(
        rep.components["probe_tunnel"]
            .reason
            .contains("disconnected")
    );
    assert_eq!(rep.components["probe_bypass"].status, Status::Ok);

    let phys_down = round_with(true, false, Bypass::Timeout, PHYS_IP);
    let rep = assess(
        &t(),
        &Inputs {
            log: None,
            sessions: None,
            round: Some(&phys_down),
            fallback: None,
            processes: None,
            checkpoint: None,
        },
    );
    assert_eq!(rep.components["probe_physical"].status, Status::Failing);
    assert!(
        rep.components["probe_physical"]
            .reason
            .contains("timed out")
    );

    let none = assess(
        &t(),
        &Inputs {
            log: None,
            sessions: None,
            round: None,
            fallback: None,
            processes: None,
            checkpoint: None,
        },
    );
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
    let r = |p: Option<&Presence>,
             round: Option<&pia_split_tunnel_exporter::probe::Round>,
             l: Option<&LogHealthInput>| {
        assess(
            &t(),
            &Inputs {
                log: l,
                sessions: None,
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
    let round = round_with(true, true, Bypass::Physical, PHYS_IP);
    assert_eq!(
        r(Some(&presence(0, 1, 0)), Some(&round), None).status,
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
    let c = assess(
        &t(),
        &Inputs {
            log: Some(&only_errors),
            sessions: None,
            round: None,
            fallback: None,
            processes: None,
            checkpoint: None,
        },
    )
    .components["log"]
        .clone();
    assert_eq!(c.status, Status::Degraded);
    assert!(
        c.reason
            .contains("debug logging off: only errors are visible"),
        "{}",
        c.reason
    );
    let nothing = LogHealthInput::default();
    let c = assess(
        &t(),
        &Inputs {
            log: Some(&nothing),
            sessions: None,
            round: None,
            fallback: None,
            processes: None,
            checkpoint: None,
        },
    )
    .components["log"]
        .clone();
    assert_eq!(c.status, Status::Failing);
}

fn only(log: Option<&LogHealthInput>, cp: Option<&CheckpointInput>) -> Inputs<'static> {
    // Leaked: a test-only shortcut so the snapshot can outlive this helper.
    Inputs {
        log: log.map(|l| &*Box::leak(Box::new(l.clone()))),
        sessions: None,
        round: None,
        fallback: None,
        processes: None,
        checkpoint: cp.map(|c| &*Box::leak(Box::new(c.clone()))),
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
