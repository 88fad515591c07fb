//! The workaround that retires itself, on the pf backend (stand-in pfctl): a version change
//! while the fallback is in place lifts the rules for one round; a "PIA fix" keeps them off
//! (said on health, status and metrics, remembered across a restart, and not undone by the
//! sessions seen before), no fix puts them back at once; observe mode only says a recheck is
//! due; the lift is bounded by the window even when the round never answers.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use pia_split_tunnel_exporter::fallback::controller::{ControlError, Controller};
use pia_split_tunnel_exporter::fallback::metrics::FallbackMetrics;
use pia_split_tunnel_exporter::fallback::policy::{Decision, Reason};
use pia_split_tunnel_exporter::fallback::recheck::{
    LIFT_WINDOW, RecheckCause, RecheckResult, Versions,
};
use pia_split_tunnel_exporter::fallback::{
    Backend, BackendError, BackendKind, FallbackConfig, Loaded, Mode, Plan, build_backend,
};
use pia_split_tunnel_exporter::health::{Health, HealthConfig};
use pia_split_tunnel_exporter::probe::RoundSource;
use prometheus::Registry;

const OLD: (&str, &str, &str) = ("3.6.1", "15.3", "24D60");
const NEW_PIA: (&str, &str, &str) = ("3.6.2", "15.3", "24D60");

fn versions((pia, macos, build): (&str, &str, &str)) -> Versions {
    Versions::new(Some(pia), Some(macos), Some(build))
}

/// The stand-in's probes, with a switch for PIA's fix: with it the bypass works without the
/// rules; without it only the rules (a pf reference held) make it work.
fn probes(s: &StandIn, fixed: Arc<AtomicBool>) -> Arc<dyn RoundSource> {
    let tokens = s.dir.path().join("tokens");
    Arc::new(move || {
        let held = std::fs::read_to_string(&tokens).is_ok_and(|t| !t.trim().is_empty());
        let works = held || fixed.load(Ordering::SeqCst);
        let r = round(
            true,
            if works {
                Bypass::Physical
            } else {
                Bypass::Timeout
            },
        );
        async move { r }
    })
}

struct Rig {
    s: StandIn,
    cfg: FallbackConfig,
    fixed: Arc<AtomicBool>,
    c: Controller,
    reg: Registry,
    health: Arc<Health>,
}

fn rig(mode: Mode) -> Rig {
    let s = StandIn::new();
    let cfg = FallbackConfig {
        mode,
        cooldown_secs: 60,
        ..s.config()
    };
    let fixed = Arc::new(AtomicBool::new(false));
    let (c, reg, health) = controller(&s, &cfg, &fixed);
    Rig {
        s,
        cfg,
        fixed,
        c,
        reg,
        health,
    }
}

fn controller(
    s: &StandIn,
    cfg: &FallbackConfig,
    fixed: &Arc<AtomicBool>,
) -> (Controller, Registry, Arc<Health>) {
    let reg = Registry::new();
    let m = FallbackMetrics::register(&reg).unwrap();
    let c = Controller::new(cfg, build_backend(cfg), probes(s, fixed.clone()), m);
    let health = Arc::new(Health::new(&HealthConfig::default()).with_fallback(c.status_handle()));
    (c, reg, health)
}

impl Rig {
    /// Two broken rounds under the old versions: applied.
    async fn applied(&mut self, t0: Instant) {
        self.c.note_versions(versions(OLD));
        let broken = round(true, Bypass::Timeout);
        on_round(&mut self.c, t0, &broken, NO_SESSIONS).await;
        let d = on_round(
            &mut self.c,
            t0 + Duration::from_secs(1),
            &broken,
            NO_SESSIONS,
        )
        .await;
        assert!(matches!(d, Decision::Apply(..)), "{d:?}");
        assert!(self.c.status().active);
    }

    fn text(&self) -> String {
        pia_split_tunnel_exporter::metrics::encode(&self.reg)
    }

    fn fallback_reason(&self) -> String {
        self.health.report(Instant::now()).components["fallback"]
            .reason
            .clone()
    }
}

fn has(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[tokio::test]
async fn a_pia_fix_retires_the_rules_and_they_stay_off() {
    let mut r = rig(Mode::Auto);
    let t0 = Instant::now();
    r.applied(t0).await;
    let working = round(true, Bypass::Physical);
    // Same versions: nothing to recheck.
    let d = on_round(
        &mut r.c,
        t0 + Duration::from_secs(120),
        &working,
        NO_SESSIONS,
    )
    .await;
    assert_eq!(d, Decision::None(Reason::Active));
    assert!(r.c.status().recheck.last.is_none());

    // PIA ships a fix: its new version starts the recheck with the next round.
    r.fixed.store(true, Ordering::SeqCst);
    r.c.note_versions(versions(NEW_PIA));
    on_round(
        &mut r.c,
        t0 + Duration::from_secs(240),
        &working,
        NO_SESSIONS,
    )
    .await;
    let st = r.c.status();
    assert!(!st.active, "{st:?}");
    let last = st.recheck.last.as_ref().unwrap();
    assert_eq!(
        (last.cause, last.result),
        (RecheckCause::VersionChanged, RecheckResult::Retired)
    );
    assert_eq!(
        st.recheck.retired.as_ref().unwrap().versions,
        versions(NEW_PIA)
    );
    assert!(r.s.held_tokens().is_empty(), "the pf reference is released");
    let text = r.text();
    for line in [
        "pia_split_tunnel_fallback_retired_total{reason=\"bypass_works_without\"} 1",
        "pia_split_tunnel_fallback_rechecks_total{result=\"retired\"} 1",
        "pia_split_tunnel_fallback_rechecks_total{result=\"still_needed\"} 0",
        "pia_split_tunnel_fallback_active 0",
        "pia_split_tunnel_fallback_recheck_due 0",
    ] {
        assert!(has(&text, line), "missing {line}\n{text}");
    }
    let reason = r.fallback_reason();
    assert!(
        reason.contains(
            "retired: the bypass works without the rules since PIA 3.6.2, macOS 15.3 (24D60)"
        ),
        "{reason}"
    );

    // The sessions window still holds the closes from before the fix: with one broken round
    // they do not bring the rules back (only consecutive broken rounds of its own would).
    let broken = round(true, Bypass::Timeout);
    let stale = sessions(80, 80);
    assert!(stale.broken());
    let d = on_round(&mut r.c, t0 + Duration::from_secs(600), &broken, stale).await;
    assert_eq!(d, Decision::None(Reason::AwaitingConfirmation));
    assert!(!r.c.status().active);

    // A restart under the same versions remembers it (the state file), and is as careful.
    drop(r.c);
    let (mut c, _reg, _h) = controller(&r.s, &r.cfg, &r.fixed);
    assert_eq!(
        c.status().recheck.retired.unwrap().versions,
        versions(NEW_PIA)
    );
    c.note_versions(versions(NEW_PIA));
    let d = on_round(&mut c, Instant::now(), &broken, sessions(80, 80)).await;
    assert_eq!(d, Decision::None(Reason::AwaitingConfirmation));
    assert!(r.s.held_tokens().is_empty());
}

#[tokio::test]
async fn without_a_fix_the_rules_are_back_and_the_same_versions_ask_nothing_more() {
    let mut r = rig(Mode::Auto);
    let t0 = Instant::now();
    r.applied(t0).await;
    let calls_before = r.s.call_lines().len();
    r.c.note_versions(versions(NEW_PIA));
    let working = round(true, Bypass::Physical);
    let d = on_round(
        &mut r.c,
        t0 + Duration::from_secs(120),
        &working,
        NO_SESSIONS,
    )
    .await;
    assert_eq!(d, Decision::None(Reason::Active));
    let st = r.c.status();
    assert!(st.active, "{st:?}");
    let last = st.recheck.last.as_ref().unwrap();
    assert_eq!(last.result, RecheckResult::StillNeeded);
    // How long includes the stand-in pfctl's own start-ups: printed, not asserted.
    println!(
        "recheck on the stand-in pf: rules lifted for {:.3} s",
        last.lifted_seconds
    );
    assert!(
        last.detail.contains("timeout") || last.detail.contains("within"),
        "{last:?}"
    );
    assert!(st.recheck.retired.is_none());
    assert_eq!(r.s.held_tokens().len(), 1, "the rules are back");
    // Lifted (flush, release) then loaded again, and nothing else.
    let during: Vec<String> = r.s.call_lines()[calls_before..].to_vec();
    assert!(during.iter().any(|l| l.contains("-F all")), "{during:?}");
    assert!(during.last().unwrap().contains("-k"), "{during:?}");
    let text = r.text();
    assert!(has(
        &text,
        "pia_split_tunnel_fallback_rechecks_total{result=\"still_needed\"} 1"
    ));
    assert!(has(
        &text,
        "pia_split_tunnel_fallback_retired_total{reason=\"bypass_works_without\"} 0"
    ));
    assert!(has(&text, "pia_split_tunnel_fallback_active 1"), "{text}");

    // The same versions do not ask again: no further lift.
    let calls = r.s.call_lines().len();
    on_round(
        &mut r.c,
        t0 + Duration::from_secs(125),
        &working,
        NO_SESSIONS,
    )
    .await;
    assert_eq!(r.s.call_lines().len(), calls, "{:?}", r.s.call_lines());

    // Another change inside the cooldown waits for it, and says so.
    r.c.note_versions(versions(("3.6.3", "15.3", "24D60")));
    on_round(
        &mut r.c,
        t0 + Duration::from_secs(130),
        &working,
        NO_SESSIONS,
    )
    .await;
    let due = r.c.status().recheck.due.unwrap();
    assert!(
        due.contains("PIA 3.6.2 → 3.6.3") && due.contains("cooldown"),
        "{due}"
    );
    assert!(has(&r.text(), "pia_split_tunnel_fallback_recheck_due 1"));
    assert_eq!(r.s.call_lines().len(), calls);
    on_round(
        &mut r.c,
        t0 + Duration::from_secs(200),
        &working,
        NO_SESSIONS,
    )
    .await;
    assert_eq!(r.c.status().recheck.due, None);
    assert_eq!(
        r.c.status().recheck.last.unwrap().versions,
        versions(("3.6.3", "15.3", "24D60"))
    );
}

#[tokio::test]
async fn observe_mode_only_says_a_recheck_is_due() {
    let mut r = rig(Mode::Observe);
    r.c.note_versions(versions(OLD));
    // In observe mode the rules are in place only by hand.
    r.c.manual_apply(Instant::now()).await.unwrap();
    r.fixed.store(true, Ordering::SeqCst);
    r.c.note_versions(versions(NEW_PIA));
    let calls = r.s.call_lines().len();
    let working = round(true, Bypass::Physical);
    on_round(
        &mut r.c,
        Instant::now() + Duration::from_secs(300),
        &working,
        NO_SESSIONS,
    )
    .await;
    assert_eq!(r.s.call_lines().len(), calls, "nothing lifted");
    let st = r.c.status();
    assert!(st.active);
    let due = st.recheck.due.unwrap();
    assert!(
        due.contains("PIA 3.6.1 → 3.6.2") && due.contains("observe"),
        "{due}"
    );
    assert!(
        r.fallback_reason().contains("recheck due"),
        "{}",
        r.fallback_reason()
    );
    assert!(has(&r.text(), "pia_split_tunnel_fallback_recheck_due 1"));
    // Asked by hand (POST /fallback/recheck), it checks.
    let rec =
        r.c.recheck(Instant::now(), RecheckCause::Manual)
            .await
            .unwrap();
    assert_eq!(rec.result, RecheckResult::Retired);
    assert!(!r.c.status().active);
}

#[tokio::test]
async fn nothing_in_place_nothing_to_recheck() {
    let mut r = rig(Mode::Auto);
    let e = r.c.recheck(Instant::now(), RecheckCause::Manual).await;
    assert!(matches!(e, Err(ControlError::NotActive)), "{e:?}");
    assert!(r.s.call_lines().is_empty());
}

/// A backend that logs when its rules go and come back, on tokio's clock.
struct Clocked(Arc<Mutex<Vec<(&'static str, tokio::time::Instant)>>>);

impl Backend for Clocked {
    fn kind(&self) -> BackendKind {
        BackendKind::PolicyRouting
    }
    fn render(&self, _plan: &Plan) -> String {
        String::new()
    }
    fn apply(&mut self, _plan: &Plan) -> Result<(), BackendError> {
        self.0
            .lock()
            .unwrap()
            .push(("apply", tokio::time::Instant::now()));
        Ok(())
    }
    fn revert(&mut self) -> Result<(), BackendError> {
        self.0
            .lock()
            .unwrap()
            .push(("revert", tokio::time::Instant::now()));
        Ok(())
    }
    fn status(&self) -> Result<Loaded, BackendError> {
        Ok(Loaded::default())
    }
}

/// The protocol's bound: a round without the rules that never answers (a black-holed bypass
/// with every deadline lost) keeps them lifted for the window and then they go back; the
/// figure is printed (speed is measured, not asserted).
#[tokio::test]
async fn a_round_that_never_answers_puts_the_rules_back_at_the_window() {
    let cfg = FallbackConfig {
        mode: Mode::Auto,
        ..FallbackConfig::default()
    };
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let rounds: Arc<dyn RoundSource> = Arc::new(move || {
        let lifted = ev
            .lock()
            .unwrap()
            .last()
            .is_some_and(|(what, _)| *what == "revert");
        async move {
            if lifted {
                std::future::pending::<()>().await;
            }
            // With the rules: working (the apply verifies).
            round(true, Bypass::Physical)
        }
    });
    let m = FallbackMetrics::register(&Registry::new()).unwrap();
    // A backend without a state file: nothing is written outside the test.
    let mut c = Controller::new(&cfg, Box::new(Clocked(events.clone())), rounds, m);
    // The fallback in place, as if applied earlier (a broken round, then the apply verified).
    let broken = round(true, Bypass::Timeout);
    let t0 = Instant::now();
    on_round(&mut c, t0, &broken, NO_SESSIONS).await;
    on_round(&mut c, t0 + Duration::from_secs(1), &broken, NO_SESSIONS).await;
    assert!(c.status().active, "{:?}", c.status());
    events.lock().unwrap().clear();
    let rec = c
        .recheck(Instant::now(), RecheckCause::Manual)
        .await
        .unwrap();
    assert_eq!(rec.result, RecheckResult::StillNeeded);
    let ev = events.lock().unwrap().clone();
    assert_eq!(
        ev.iter().map(|(w, _)| *w).collect::<Vec<_>>(),
        ["revert", "apply"]
    );
    let lift = ev[1].1 - ev[0].1;
    println!("recheck with a round that never answers: rules lifted for {lift:?}");
    assert!(
        lift >= LIFT_WINDOW - Duration::from_millis(5),
        "waited the whole window: {lift:?}"
    );
    assert!(
        lift < Duration::from_secs(10),
        "and then came back: {lift:?}"
    );
    assert!(LIFT_WINDOW < Duration::from_secs(1));
    assert!(rec.detail.contains("within 750 ms"), "{}", rec.detail);
    assert!(c.status().active);
}

/// A version change seen in a round where the repair is not simply doing its job (here the
/// tunnel is going down) waits for a quiet round: nothing is lifted meanwhile.
#[tokio::test]
async fn a_recheck_waits_for_a_quiet_round() {
    let mut r = rig(Mode::Auto);
    let t0 = Instant::now();
    r.applied(t0).await;
    r.c.note_versions(versions(NEW_PIA));
    let calls = r.s.call_lines().len();
    let gone = round(false, Bypass::Physical);
    let d = on_round(&mut r.c, t0 + Duration::from_secs(120), &gone, NO_SESSIONS).await;
    assert_eq!(d, Decision::None(Reason::AwaitingConfirmation));
    assert_eq!(r.s.call_lines().len(), calls, "nothing lifted");
    let due = r.c.status().recheck.due.unwrap();
    assert!(due.contains("waiting for a quiet round"), "{due}");
    let working = round(true, Bypass::Physical);
    on_round(
        &mut r.c,
        t0 + Duration::from_secs(150),
        &working,
        NO_SESSIONS,
    )
    .await;
    assert_eq!(r.c.status().recheck.due, None);
    assert_eq!(
        r.c.status().recheck.last.unwrap().result,
        RecheckResult::StillNeeded
    );
}
