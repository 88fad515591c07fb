//! The controller on the pf backend (stand-in pfctl) with a scripted verifier: apply, verify,
//! roll back, observe mode, reconcile and shutdown; metrics and health follow.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use pia_split_tunnel_exporter::fallback::controller::Controller;
use pia_split_tunnel_exporter::fallback::metrics::FallbackMetrics;
use pia_split_tunnel_exporter::fallback::policy::{ApplyOutcome, Decision, Reason};
use pia_split_tunnel_exporter::fallback::{FallbackConfig, Mode, OnStart, build_backend};
use pia_split_tunnel_exporter::health::metrics::HealthCollector;
use pia_split_tunnel_exporter::health::{Health, HealthConfig, LogHealthInput, Status};
use pia_split_tunnel_exporter::probe::{Round, RoundSource, Verdict};
use pia_split_tunnel_exporter::sessions::window::SessionsVerdict;
use prometheus::{Encoder, Registry, TextEncoder};

/// A verifier whose next round the test sets.
fn scripted(r: Round) -> (Arc<Mutex<Round>>, Arc<dyn RoundSource>) {
    let cell = Arc::new(Mutex::new(r));
    let c = cell.clone();
    (
        cell,
        Arc::new(move || {
            let r = c.lock().unwrap().clone();
            async move { r }
        }),
    )
}

fn metrics_text(reg: &Registry) -> String {
    let mut buf = Vec::new();
    TextEncoder::new().encode(&reg.gather(), &mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

fn controller(cfg: &FallbackConfig, verify: Round) -> (Controller, Registry, Arc<Mutex<Round>>) {
    let reg = Registry::new();
    let m = FallbackMetrics::register(&reg).unwrap();
    let (cell, v) = scripted(verify);
    (Controller::new(cfg, build_backend(cfg), v, m), reg, cell)
}

const NONE: SessionsVerdict = NO_SESSIONS;

/// Health over the controller's status, its metrics on `reg`.
fn registered_health(c: &Controller, reg: &Registry) -> Arc<Health> {
    let h = Arc::new(Health::new(&HealthConfig::default()).with_fallback(c.status_handle()));
    pia_split_tunnel_exporter::metrics::register(reg, HealthCollector(h.clone())).unwrap();
    h
}

#[tokio::test]
async fn auto_applies_verifies_and_health_reports_it() {
    let s = StandIn::new();
    let cfg = FallbackConfig {
        mode: Mode::Auto,
        ..s.config()
    };
    let (mut c, reg, _) = controller(&cfg, round(true, Bypass::Physical));
    let health = registered_health(&c, &reg);
    let t0 = Instant::now();
    let broken = round(true, Bypass::Timeout);
    assert_eq!(
        on_round(&mut c, t0, &broken, NONE).await.reason(),
        Reason::AwaitingConfirmation
    );
    let r = broken.clone();
    let v = Verdict::of(&r);
    health.update_round(r, v);
    assert_eq!(
        health.report(t0).components["probe_bypass"].status,
        Status::Failing
    );
    let d = on_round(&mut c, t0 + Duration::from_secs(30), &broken, NONE).await;
    assert!(
        matches!(d, Decision::Apply(_, Reason::ProbeBroken)),
        "{d:?}"
    );
    let st = c.status();
    assert!(st.active);
    assert_eq!(st.last_action.as_ref().unwrap().outcome, ApplyOutcome::Ok);
    assert_eq!(s.held_tokens().len(), 1);
    // The next round sees the repaired bypass.
    let r = round(true, Bypass::Physical);
    let v = Verdict::of(&r);
    health.update_round(r, v);
    health.update_log(LogHealthInput {
        file_present: true,
        lines_read: 3,
        ..Default::default()
    });
    let report = health.report(Instant::now());
    assert_eq!(report.status, Status::Ok, "{report:#?}");
    assert!(report.components["fallback"].reason.contains("active (pf)"));
    assert!(health.readiness().ready);
    let text = metrics_text(&reg);
    for want in [
        "pia_split_tunnel_fallback_active 1",
        "pia_split_tunnel_fallback_actions_total{action=\"apply\",result=\"ok\"} 1",
        "pia_split_tunnel_fallback_decisions_total{decision=\"apply\",reason=\"probe_broken\"} 1",
        "pia_split_tunnel_fallback_mode{fallback_mode=\"auto\"} 1",
        "pia_split_tunnel_fallback_mode{fallback_mode=\"observe\"} 0",
        "pia_split_tunnel_fallback_backend{fallback_backend=\"pf\"} 1",
        "pia_split_tunnel_health_status{component=\"probe_bypass\",status=\"ok\"} 1",
        "pia_split_tunnel_health_status{component=\"probe_bypass\",status=\"failing\"} 0",
        "pia_split_tunnel_ready 1",
    ] {
        assert!(text.contains(want), "missing {want}\n{text}");
    }
    // The VPN goes away: revert after two rounds, token released.
    let gone = round(false, Bypass::Physical);
    on_round(&mut c, t0 + Duration::from_secs(60), &gone, NONE).await;
    let d = on_round(&mut c, t0 + Duration::from_secs(90), &gone, NONE).await;
    assert_eq!(d, Decision::Revert(Reason::TunnelDown));
    assert!(!c.status().active);
    assert!(s.held_tokens().is_empty());
    assert!(metrics_text(&reg).contains("pia_split_tunnel_fallback_active 0"));
}

#[tokio::test]
async fn failed_verification_rolls_back_and_counts() {
    let s = StandIn::new();
    let cfg = FallbackConfig {
        mode: Mode::Auto,
        ..s.config()
    };
    // Even with the rules loaded the bypass still goes through the tunnel.
    let (mut c, reg, _) = controller(&cfg, round(true, Bypass::Tunnel));
    let health = registered_health(&c, &reg);
    let t0 = Instant::now();
    let broken = round(true, Bypass::Timeout);
    on_round(&mut c, t0, &broken, NONE).await;
    on_round(&mut c, t0 + Duration::from_secs(30), &broken, NONE).await;
    let st = c.status();
    assert!(!st.active);
    assert_eq!(
        st.last_action.as_ref().unwrap().outcome,
        ApplyOutcome::RolledBack
    );
    assert_eq!(st.consecutive_failures, 1);
    assert!(s.held_tokens().is_empty(), "token released on rollback");
    assert!(s.call_lines().iter().any(|l| l.ends_with("-F all")));
    let text = metrics_text(&reg);
    assert!(
        text.contains("pia_split_tunnel_fallback_verify_failures_total 1"),
        "{text}"
    );
    assert!(text.contains(
        "pia_split_tunnel_fallback_actions_total{action=\"apply\",result=\"rolled_back\"} 1"
    ));
    assert_eq!(
        health.report(t0).components["fallback"].status,
        Status::Degraded
    );
    // Backing off: the next broken rounds do not act.
    on_round(&mut c, t0 + Duration::from_secs(60), &broken, NONE).await;
    let d = on_round(&mut c, t0 + Duration::from_secs(90), &broken, NONE).await;
    assert_eq!(d, Decision::None(Reason::Backoff));
}

#[tokio::test]
async fn backend_failure_is_failing_health() {
    let s = StandIn::new();
    s.fail("-f");
    let cfg = FallbackConfig {
        mode: Mode::Auto,
        consecutive_rounds: 1,
        ..s.config()
    };
    let (mut c, reg, _) = controller(&cfg, round(true, Bypass::Physical));
    let health = registered_health(&c, &reg);
    on_round(&mut c, Instant::now(), &round(true, Bypass::Timeout), NONE).await;
    let st = c.status();
    assert_eq!(
        st.last_action.as_ref().unwrap().outcome,
        ApplyOutcome::Failed
    );
    assert!(
        st.last_action
            .as_ref()
            .unwrap()
            .error
            .as_deref()
            .unwrap()
            .contains("stand-in told to fail -f")
    );
    let comp = &health.report(Instant::now()).components["fallback"];
    assert_eq!(comp.status, Status::Failing, "{comp:?}");
}

#[tokio::test]
async fn observe_decides_but_never_touches_pf() {
    let s = StandIn::new();
    let cfg = s.config(); // mode observe by default
    let (mut c, reg, _) = controller(&cfg, round(true, Bypass::Physical));
    let health = registered_health(&c, &reg);
    let t0 = Instant::now();
    let broken = round(true, Bypass::Timeout);
    on_round(&mut c, t0, &broken, NONE).await;
    let d = on_round(&mut c, t0 + Duration::from_secs(30), &broken, NONE).await;
    assert!(matches!(d, Decision::Apply(..)));
    assert!(
        s.calls().is_empty(),
        "observe mode ran pfctl: {:?}",
        s.call_lines()
    );
    assert!(!c.status().active);
    let r = broken;
    let v = Verdict::of(&r);
    health.update_round(r, v);
    let comp = &health.report(t0).components["fallback"];
    assert_eq!(comp.status, Status::Degraded);
    assert!(comp.reason.contains("observe"), "{comp:?}");
    assert!(c.alert_apply(t0).await.is_err(), "alerts act only in auto");
    assert!(s.calls().is_empty());
}

#[tokio::test]
async fn reconcile_adopts_or_removes_a_leftover_and_shutdown_removes() {
    let s = StandIn::new();
    let cfg = FallbackConfig {
        mode: Mode::Auto,
        ..s.config()
    };
    // A previous run applied and crashed.
    let plan = pia_split_tunnel_exporter::fallback::Plan::from_interfaces(
        &interfaces(true, PHYS_IP),
        &cfg,
    )
    .unwrap();
    build_backend(&cfg).apply(&plan).unwrap();

    let (mut c, _, _) = controller(&cfg, round(true, Bypass::Physical));
    c.reconcile().unwrap();
    assert!(c.status().active, "adopted");
    let d = on_round(&mut c, Instant::now(), &round(true, Bypass::Physical), NONE).await;
    assert_eq!(
        d,
        Decision::None(Reason::Active),
        "no reload of an adopted leftover"
    );
    c.shutdown().unwrap();
    assert!(build_backend(&cfg).status().unwrap().is_empty());
    assert!(s.held_tokens().is_empty());

    build_backend(&cfg).apply(&plan).unwrap();
    let cfg = FallbackConfig {
        on_start: OnStart::Remove,
        ..cfg
    };
    let (mut c, _, _) = controller(&cfg, round(true, Bypass::Physical));
    c.reconcile().unwrap();
    assert!(!c.status().active);
    assert!(build_backend(&cfg).status().unwrap().is_empty());
    assert!(s.held_tokens().is_empty());
}

/// The agent's log as a `tracing` subscriber writes it, kept for the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Lines at `level` (as the plain formatter spells it) containing `text`.
    fn count(&self, level: &str, text: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(level) && l.contains(text))
            .count()
    }
}

/// In `observe` with the bypass broken round after round, "would apply the repair; mode is
/// observe" is written once at info when it becomes true, then at debug; again at info only
/// after the decision changed (the bypass worked for a round in between).
#[tokio::test]
async fn decisions_are_logged_on_change_not_per_round() {
    let log = Captured::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let s = StandIn::new();
    let (mut c, _reg, _) = controller(&s.config(), round(true, Bypass::Physical));
    let t0 = Instant::now();
    let broken = round(true, Bypass::Timeout);
    let would = "would apply the repair; mode is observe";
    for i in 0..6 {
        on_round(&mut c, t0 + Duration::from_secs(i), &broken, NONE).await;
    }
    assert_eq!(log.count("INFO", would), 1);
    assert_eq!(log.count("DEBUG", would), 4);
    assert_eq!(log.count("INFO", "awaiting_confirmation"), 1);
    assert_eq!(
        log.count("INFO", "fallback decision"),
        2,
        "awaiting, then would apply"
    );
    on_round(
        &mut c,
        t0 + Duration::from_secs(10),
        &round(true, Bypass::Physical),
        NONE,
    )
    .await;
    assert_eq!(log.count("INFO", "bypass_healthy"), 1);
    for i in 11..14 {
        on_round(&mut c, t0 + Duration::from_secs(i), &broken, NONE).await;
    }
    assert_eq!(log.count("INFO", would), 2, "again after the change");
    assert_eq!(log.count("INFO", "fallback decision"), 5);
    assert!(
        s.call_lines().iter().all(|l| !l.contains("-f")),
        "observe never loads rules"
    );
}
