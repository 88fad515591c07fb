//! The fallback's metrics, kept as plain counters and rendered at scrape time, and the sessions
//! verdict it weighs (rendered at scrape time too: the window slides).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use macro_rules_attribute::apply;
use prometheus::Registry;
use prometheus::core::Desc;
use prometheus::proto::MetricFamily;
use strum::{EnumCount, IntoEnumIterator};

use super::policy::{Action, ApplyOutcome, Decision};
use super::recheck::{RecheckResult, RetireReason};
use super::{BackendKind, Mode};
use crate::labels::label_set;
use crate::metrics::{Counter, Family, Gauge, Scrape};
use crate::sessions::window::{SessionsState, SharedWindow};

const ACTIVE: Family<Gauge, 0> =
    Family::new("fallback_active", "1 while the fallback is installed.", []);
const MODE: Family<Gauge, 1> = Family::new(
    "fallback_mode",
    "State set: the configured fallback mode (1 for that mode).",
    ["fallback_mode"],
);
const BACKEND: Family<Gauge, 1> = Family::new(
    "fallback_backend",
    "State set: the fallback backend in use (1 for that backend).",
    ["fallback_backend"],
);
const ACTIONS: Family<Counter, 2> = Family::new(
    "fallback_actions_total",
    "Actions on the backend by result.",
    ["action", "result"],
);
const DECISIONS: Family<Counter, 2> = Family::new(
    "fallback_decisions_total",
    "Policy decisions by reason.",
    ["decision", "reason"],
);
const VERIFY_FAILURES: Family<Counter, 0> = Family::new(
    "fallback_verify_failures_total",
    "Applies after which the bypass still did not egress as the physical path.",
    [],
);
const LAST_ACTION: Family<Gauge, 0> = Family::new(
    "fallback_last_action_timestamp_seconds",
    "Unix time of the last action on the backend.",
    [],
);
const ALERT_REQUESTS: Family<Counter, 1> = Family::new(
    "fallback_alert_requests_total",
    "Alertmanager webhook requests by answer (applied, already_active, not_acted, \
     not_for_this_instance, ignored, malformed, failed).",
    ["result"],
);
const RETIRED: Family<Counter, 1> = Family::new(
    "fallback_retired_total",
    "Times the fallback retired itself: with its rules lifted for one probe round, the bypass \
     egressed as the physical path, so they stay off.",
    ["reason"],
);
const RECHECKS: Family<Counter, 1> = Family::new(
    "fallback_rechecks_total",
    "Rechecks of whether the fallback is still needed (after a PIA or macOS version change, or \
     asked for), by result.",
    ["result"],
);
const RECHECK_DUE: Family<Gauge, 0> = Family::new(
    "fallback_recheck_due",
    "1 while a recheck is due and has not run (observe mode, or held back by the cooldown or \
     the hourly cap).",
    [],
);
const RECHECK_LIFTED: Family<Gauge, 0> = Family::new(
    "fallback_recheck_lifted_seconds",
    "How long the last recheck kept the fallback's rules lifted.",
    [],
);
const SESSIONS_VERDICT: Family<Gauge, 1> = Family::new(
    "sessions_verdict",
    "The agent's judgement of the bypass sessions closed in the last sessions.window_secs by \
     what they received (broken, partial, inconclusive, working, too_few; thresholds \
     sessions.min_sessions, no_reply_ratio, healthy_no_reply_ratio): 1 for its state, 0 for \
     the others.",
    ["state"],
);

/// The Alertmanager webhook's answer: the `result` label of `fallback_alert_requests_total`
/// and the `result` field of its JSON body.
#[apply(label_set!)]
pub enum AlertResult {
    /// Not an Alertmanager payload.
    Malformed,
    /// No firing alert of the configured names.
    Ignored,
    NotForThisInstance,
    /// Addressed here, but the controller declined (mode, gates, round, ambiguity).
    NotActed,
    Applied,
    AlreadyActive,
    /// The repair was tried and failed.
    Failed,
}

struct FallbackFigures {
    active: bool,
    mode: Mode,
    backend: BackendKind,
    actions: [[u64; ApplyOutcome::COUNT]; Action::COUNT],
    /// By (decision, reason): only pairs that happened are rendered (4 × 18 would be noise).
    decisions: BTreeMap<(&'static str, &'static str), u64>,
    verify_failures: u64,
    last_action: Option<f64>,
    /// Webhook answers: only those given are rendered.
    alerts: [u64; AlertResult::COUNT],
    retired: [u64; RetireReason::COUNT],
    rechecks: [u64; RecheckResult::COUNT],
    recheck_due: bool,
    recheck_lifted: Option<f64>,
}

#[derive(Clone)]
pub struct FallbackMetrics {
    state: Arc<Mutex<FallbackFigures>>,
}

impl FallbackMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = FallbackMetrics {
            state: Arc::new(Mutex::new(FallbackFigures {
                active: false,
                mode: Mode::default(),
                backend: BackendKind::None,
                actions: Default::default(),
                decisions: BTreeMap::new(),
                verify_failures: 0,
                last_action: None,
                alerts: [0; AlertResult::COUNT],
                retired: [0; RetireReason::COUNT],
                rechecks: [0; RecheckResult::COUNT],
                recheck_due: false,
                recheck_lifted: None,
            })),
        };
        crate::metrics::register(registry, m.clone())?;
        Ok(m)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FallbackFigures> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state().mode = mode;
    }

    pub fn set_backend(&self, backend: BackendKind) {
        self.state().backend = backend;
    }

    pub fn alert(&self, result: AlertResult) {
        self.state().alerts[result as usize] += 1;
    }

    /// A recheck ended; `retired` when it retired the fallback.
    pub fn recheck(&self, result: RecheckResult, lifted_seconds: f64) {
        let mut s = self.state();
        s.rechecks[result as usize] += 1;
        s.recheck_lifted = Some(lifted_seconds);
        if result == RecheckResult::Retired {
            s.retired[RetireReason::BypassWorksWithout as usize] += 1;
        }
    }

    pub fn set_recheck_due(&self, due: bool) {
        self.state().recheck_due = due;
    }

    pub fn set_active(&self, active: bool) {
        self.state().active = active;
    }

    pub fn decision(&self, d: &Decision) {
        *self
            .state()
            .decisions
            .entry((d.label().into(), d.reason().into()))
            .or_default() += 1;
    }

    pub fn action(&self, action: Action, outcome: ApplyOutcome) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut s = self.state();
        s.actions[action as usize][outcome as usize] += 1;
        s.last_action = Some(now);
        if outcome == ApplyOutcome::RolledBack {
            s.verify_failures += 1;
        }
    }
}

impl Scrape for FallbackMetrics {
    fn descs(&self) -> Vec<Desc> {
        vec![
            ACTIVE.desc(),
            MODE.desc(),
            BACKEND.desc(),
            ACTIONS.desc(),
            DECISIONS.desc(),
            VERIFY_FAILURES.desc(),
            LAST_ACTION.desc(),
            ALERT_REQUESTS.desc(),
            RETIRED.desc(),
            RECHECKS.desc(),
            RECHECK_DUE.desc(),
            RECHECK_LIFTED.desc(),
        ]
    }

    fn scrape(&self) -> Vec<MetricFamily> {
        let s = self.state();
        // Every action/result pair exists from the start, so rate() sees the first one.
        let mut actions = ACTIONS.samples();
        for a in Action::iter() {
            for o in ApplyOutcome::iter() {
                let n = s.actions[a as usize][o as usize];
                actions.add([a.into(), o.into()], n as f64);
            }
        }
        let mut decisions = DECISIONS.samples();
        for ((d, r), n) in &s.decisions {
            decisions.add([d, r], *n as f64);
        }
        let mut out = vec![
            ACTIVE.single(f64::from(u8::from(s.active))),
            MODE.stateset(Mode::iter(), &s.mode),
            BACKEND.stateset(BackendKind::iter(), &s.backend),
            actions.done(),
            VERIFY_FAILURES.single(s.verify_failures as f64),
        ];
        if !decisions.is_empty() {
            out.push(decisions.done());
        }
        if let Some(t) = s.last_action {
            out.push(LAST_ACTION.single(t));
        }
        out.extend(recheck_families(&s));
        let mut alerts = ALERT_REQUESTS.samples();
        for r in AlertResult::iter().filter(|r| s.alerts[*r as usize] > 0) {
            alerts.add([r.into()], s.alerts[r as usize] as f64);
        }
        if !alerts.is_empty() {
            out.push(alerts.done());
        }
        out
    }
}

/// The recheck's families; every reason and result from the start, so rate() sees the first.
fn recheck_families(s: &FallbackFigures) -> Vec<MetricFamily> {
    let mut retired = RETIRED.samples();
    for r in RetireReason::iter() {
        retired.add([r.into()], s.retired[r as usize] as f64);
    }
    let mut rechecks = RECHECKS.samples();
    for r in RecheckResult::iter() {
        rechecks.add([r.into()], s.rechecks[r as usize] as f64);
    }
    let mut out = vec![
        retired.done(),
        rechecks.done(),
        RECHECK_DUE.single(f64::from(u8::from(s.recheck_due))),
    ];
    if let Some(t) = s.recheck_lifted {
        out.push(RECHECK_LIFTED.single(t));
    }
    out
}

/// Renders the sessions verdict at scrape time.
pub struct SessionsCollector {
    window: SharedWindow,
}

impl SessionsCollector {
    pub fn new(window: SharedWindow) -> Self {
        SessionsCollector { window }
    }
}

impl Scrape for SessionsCollector {
    fn descs(&self) -> Vec<Desc> {
        vec![SESSIONS_VERDICT.desc()]
    }

    fn scrape(&self) -> Vec<MetricFamily> {
        let v = self
            .window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .verdict(Instant::now());
        vec![SESSIONS_VERDICT.stateset(SessionsState::iter(), &v.state)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fallback::policy::Reason;

    #[test]
    fn webhook_answers_and_decisions_are_counted_under_their_labels() {
        let registry = Registry::new();
        let m = FallbackMetrics::register(&registry).unwrap();
        m.alert(AlertResult::NotForThisInstance);
        m.alert(AlertResult::NotForThisInstance);
        m.decision(&Decision::None(Reason::BypassHealthy));
        let text = crate::metrics::encode(&registry);
        assert!(
            text.contains(
                "pia_split_tunnel_fallback_alert_requests_total{result=\"not_for_this_instance\"} 2"
            ),
            "{text}"
        );
        assert!(
            !text.contains("result=\"applied\""),
            "only answers given: {text}"
        );
        assert!(
            text.contains(
                "fallback_decisions_total{decision=\"none\",reason=\"bypass_healthy\"} 1"
            ),
            "{text}"
        );
        assert_eq!(
            serde_json::to_value(AlertResult::AlreadyActive).unwrap(),
            "already_active"
        );
    }
}
