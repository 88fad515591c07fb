//! The fallback's metrics, prefix `pia_split_tunnel_`.

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use strum::IntoEnumIterator;

use super::policy::{Action, Decision, Outcome};
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
        };
        registry.register(Box::new(m.active.clone()))?;
        registry.register(Box::new(m.mode.clone()))?;
        registry.register(Box::new(m.backend.clone()))?;
        registry.register(Box::new(m.actions.clone()))?;
        registry.register(Box::new(m.decisions.clone()))?;
        registry.register(Box::new(m.verify_failures.clone()))?;
        registry.register(Box::new(m.last_action.clone()))?;
        // Every action/result pair exists from the start, so rate() sees the first one.
        for a in Action::iter() {
            for o in Outcome::iter() {
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

    pub fn set_active(&self, active: bool) {
        self.active.set(i64::from(active));
    }

    pub fn decision(&self, d: &Decision) {
        self.decisions
            .with_label_values(&[d.label(), <&str>::from(d.reason())])
            .inc();
    }

    pub fn action(&self, action: Action, outcome: Outcome) {
        self.actions
            .with_label_values(&[<&str>::from(action), outcome.into()])
            .inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_action.set(now);
        if outcome == Outcome::RolledBack {
            self.verify_failures.inc();
        }
    }
}
