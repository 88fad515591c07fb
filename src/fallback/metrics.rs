//! The fallback's metrics, prefix `pia_split_tunnel_`, and the sessions verdict it weighs
//! (rendered at scrape time: the window slides).

use std::time::Instant;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use strum::IntoEnumIterator;

use crate::metrics::{FamilyBuilder, FamilySpec};
use crate::sessions::window::{SessionsState, SharedWindow};

use super::policy::{Action, ApplyOutcome, Decision};
use super::{BackendKind, Mode};

#[derive(Clone)]
pub struct FallbackMetrics {
    active: IntGauge,
    mode: IntGaugeVec,
    backend: IntGaugeVec,
    actions: IntCounterVec,
    decisions: IntCounterVec,
    verify_failures: IntCounter,
    last_action: Gauge,
    alerts: IntCounterVec,
}

const P: &str = "pia_split_tunnel_";

impl FallbackMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = FallbackMetrics {
            active: IntGauge::new(
                format!("{P}fallback_active"),
                "1 while the fallback is installed.",
            )?,
            mode: IntGaugeVec::new(
                Opts::new(
                    format!("{P}fallback_mode_info"),
                    "Configured fallback mode.",
                ),
                &["mode"],
            )?,
            backend: IntGaugeVec::new(
                Opts::new(
                    format!("{P}fallback_backend_info"),
                    "Fallback backend in use.",
                ),
                &["backend"],
            )?,
            actions: IntCounterVec::new(
                Opts::new(
                    format!("{P}fallback_actions_total"),
                    "Actions on the backend by result.",
                ),
                &["action", "result"],
            )?,
            decisions: IntCounterVec::new(
                Opts::new(
                    format!("{P}fallback_decisions_total"),
                    "Policy decisions by reason.",
                ),
                &["decision", "reason"],
            )?,
            verify_failures: IntCounter::new(
                format!("{P}fallback_verify_failures_total"),
                "Applies after which the bypass still did not egress as the physical path.",
            )?,
            last_action: Gauge::new(
                format!("{P}fallback_last_action_timestamp_seconds"),
                "Unix time of the last action on the backend.",
            )?,
            alerts: IntCounterVec::new(
                Opts::new(
                    format!("{P}fallback_alert_requests_total"),
                    "Alertmanager webhook requests by answer (applied, already_active, not_acted, \
                     not_for_this_instance, ignored, malformed).",
                ),
                &["result"],
            )?,
        };
        registry.register(Box::new(m.alerts.clone()))?;
        registry.register(Box::new(m.active.clone()))?;
        registry.register(Box::new(m.mode.clone()))?;
        registry.register(Box::new(m.backend.clone()))?;
        registry.register(Box::new(m.actions.clone()))?;
        registry.register(Box::new(m.decisions.clone()))?;
        registry.register(Box::new(m.verify_failures.clone()))?;
        registry.register(Box::new(m.last_action.clone()))?;
        // Every action/result pair exists from the start, so rate() sees the first one.
        for a in Action::iter() {
            for o in ApplyOutcome::iter() {
                m.actions.with_label_values(&[<&str>::from(a), o.into()]);
            }
        }
        Ok(m)
    }

    pub fn set_mode(&self, mode: Mode) {
        for m in Mode::iter() {
            self.mode
                .with_label_values(&[<&str>::from(m)])
                .set(i64::from(m == mode));
        }
    }

    pub fn set_backend(&self, backend: BackendKind) {
        for b in BackendKind::iter() {
            self.backend
                .with_label_values(&[<&str>::from(b)])
                .set(i64::from(b == backend));
        }
    }

    pub fn alert(&self, result: &str) {
        self.alerts.with_label_values(&[result]).inc();
    }

    pub fn set_active(&self, active: bool) {
        self.active.set(i64::from(active));
    }

    pub fn decision(&self, d: &Decision) {
        self.decisions
            .with_label_values(&[d.label(), <&str>::from(d.reason())])
            .inc();
    }

    pub fn action(&self, action: Action, outcome: ApplyOutcome) {
        self.actions
            .with_label_values(&[<&str>::from(action), outcome.into()])
            .inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_action.set(now);
        if outcome == ApplyOutcome::RolledBack {
            self.verify_failures.inc();
        }
    }
}

const FAMILIES: &[FamilySpec] = &[(
    "sessions_verdict",
    "The agent's judgement of the bypass sessions closed in the last fallback.window_secs \
     (thresholds fallback.min_sessions and fallback.zero_byte_ratio): 1 for its state, 0 for \
     the others.",
    MetricType::GAUGE,
    &["state"],
)];

/// Renders the sessions verdict at scrape time.
pub struct SessionsCollector {
    window: SharedWindow,
    descs: Vec<Desc>,
}

impl SessionsCollector {
    pub fn new(window: SharedWindow) -> Self {
        SessionsCollector {
            window,
            descs: FamilyBuilder::descs(FAMILIES),
        }
    }
}

impl Collector for SessionsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let v = self
            .window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .verdict(Instant::now());
        let mut f = FamilyBuilder::declared(FAMILIES, "sessions_verdict");
        for state in SessionsState::iter() {
            f.gauge(
                &[("state", state.into())],
                f64::from(u8::from(v.state == state)),
            );
        }
        vec![f.build()]
    }
}
