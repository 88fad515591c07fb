//! Builds the [`StatusView`] from what the agent has, and serves it at `/`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use strum::IntoEnumIterator;

use super::{AppRow, FallbackView, ProbeRow, StatusView, Tone};
use crate::fallback::controller::FallbackStatus;
use crate::fallback::routes::SharedController;
use crate::health::Health;
use crate::log_state::LogState;
use crate::probe::ProbeState;
use crate::probe::{PathKind, Round};
use crate::sessions::counts::Reply;
use crate::sessions::window::{SessionsState, SharedWindow};

/// Everything the page reads; each part is the agent's own shared state.
pub struct StatusSource {
    pub health: Arc<Health>,
    pub window: SharedWindow,
    pub pipeline: Arc<Mutex<LogState>>,
    pub controller: SharedController,
    /// The tone last shown and since when: the page tells how long the state has held.
    changed: Mutex<Option<(Tone, Instant)>>,
}

impl StatusSource {
    pub fn new(
        health: Arc<Health>,
        window: SharedWindow,
        pipeline: Arc<Mutex<LogState>>,
        controller: SharedController,
    ) -> Self {
        StatusSource {
            health,
            window,
            pipeline,
            controller,
            changed: Mutex::new(None),
        }
    }

    pub async fn view(&self, now: Instant) -> StatusView {
        let components = self.components(now);
        let (apps, sessions, window_seconds) = self.apps(now);
        let round = self.health.last_round();
        let fallback = self.fallback();
        let active = fallback.as_ref().is_some_and(|(s, _)| s.active);
        let tone = tone(round.as_ref().map(|(_, v)| v.state), sessions, active);
        let since = Some(self.since(tone, now));
        StatusView {
            version: env!("CARGO_PKG_VERSION").into(),
            tone,
            since,
            components,
            window_seconds,
            apps,
            probe: round
                .as_ref()
                .map(|(r, _)| probe_rows(r))
                .unwrap_or_default(),
            fallback: fallback.map(|(s, rules)| fallback_view(&s, rules)),
        }
    }

    /// Health components: name, status, reason.
    fn components(&self, now: Instant) -> Vec<(String, String, String)> {
        let report = self.health.report(now);
        report
            .components
            .iter()
            .map(|(name, c)| ((*name).to_owned(), c.status.to_string(), c.reason.clone()))
            .collect()
    }

    /// One row per app, the window's counts beside those since start; with the window's
    /// state and length.
    fn apps(&self, now: Instant) -> (Vec<AppRow>, SessionsState, u64) {
        let (window_apps, sessions, window_seconds) = {
            let w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            let v = w.verdict(now);
            (w.per_app(now), v.state, v.window_seconds)
        };
        let mut apps: BTreeMap<String, AppRow> = BTreeMap::new();
        for a in window_apps {
            let row = apps.entry(a.app.clone()).or_default();
            row.window_sessions = a.ratio.total;
            row.window_zero = a.ratio.no_reply;
        }
        since_start(
            &self.pipeline.lock().unwrap_or_else(|e| e.into_inner()),
            &mut apps,
        );
        let apps = apps
            .into_iter()
            .map(|(app, row)| AppRow { app, ..row })
            .collect();
        (apps, sessions, window_seconds)
    }

    /// The fallback's status and rules text. The controller is busy while it applies or
    /// verifies: the page then shows its status without the rules text rather than wait.
    fn fallback(&self) -> Option<(crate::fallback::controller::FallbackStatus, String)> {
        match self.controller.try_lock() {
            Ok(c) => {
                let s = c.status_handle().read().expect("status lock").clone();
                let rules = s.plan.as_ref().map(|p| c.render(p)).unwrap_or_default();
                Some((s, rules))
            }
            Err(_) => None,
        }
    }

    /// How long `tone` has held: the clock restarts when the tone changes.
    fn since(&self, tone: Tone, now: Instant) -> String {
        let mut changed = self.changed.lock().expect("status lock");
        let at = match *changed {
            Some((t, at)) if t == tone => at,
            _ => {
                *changed = Some((tone, now));
                now
            }
        };
        format!("{} s ago", now.duration_since(at).as_secs())
    }
}

/// The fallback's part of the page, its labels spelled as in `/metrics`.
fn fallback_view(s: &FallbackStatus, rules: String) -> FallbackView {
    FallbackView {
        mode: s.mode.to_string(),
        backend: s.backend.to_string(),
        active: s.active,
        rules,
        last: s
            .last_decision
            .iter()
            .map(|d| format!("last decision: {} ({})", d.decision, d.reason))
            .chain(s.last_action.iter().map(|a| {
                format!(
                    "last action: {}: {}{}",
                    a.action,
                    a.outcome,
                    a.error
                        .as_ref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                )
            }))
            // A recheck due, or the retirement, in the status data's own words.
            .chain(s.recheck.line())
            .collect(),
    }
}

/// The page's verdict: the probe's when there is a round, else the session window's.
pub fn tone(verdict: Option<ProbeState>, sessions: SessionsState, fallback_active: bool) -> Tone {
    match (verdict, sessions) {
        (Some(ProbeState::BypassWorking), _) if fallback_active => Tone::Repaired,
        (Some(ProbeState::BypassWorking), _) => Tone::Working,
        (Some(ProbeState::BypassBroken | ProbeState::VpnLeak), _) => Tone::Broken,
        (Some(ProbeState::TunnelDown), _) => Tone::VpnDown,
        (_, SessionsState::Broken) => Tone::Broken,
        (None, SessionsState::Partial | SessionsState::Inconclusive) => Tone::Failing,
        (None, SessionsState::Working) => Tone::Working,
        (Some(ProbeState::NoNetwork | ProbeState::Undetermined), _)
        | (None, SessionsState::TooFew) => Tone::NotMeasured,
    }
}

/// The per-app counts since start, as `analyze` sums them over transports.
fn since_start(pipeline: &LogState, apps: &mut BTreeMap<String, AppRow>) {
    let tracker = pipeline.sessions();
    let mut errors: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    for (id, _, c) in tracker.counts().iter() {
        let name = tracker.apps().name(id);
        let row = apps.entry(name.to_owned()).or_default();
        row.total_sessions += c.sessions_closed();
        row.total_zero += c.replies(Reply::NoReply);
        row.total_bytes += c.rx_bytes + c.tx_bytes;
        let e = errors.entry(name.to_owned()).or_default();
        for kind in crate::proxy_log::ErrorKind::iter() {
            if c.errors(kind) > 0 {
                *e.entry(kind.into()).or_default() += c.errors(kind);
            }
        }
    }
    for (name, kinds) in errors {
        let mut kinds: Vec<_> = kinds.into_iter().collect();
        kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
        if let Some(row) = apps.get_mut(&name) {
            row.top_errors = kinds
                .iter()
                .take(3)
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
        }
    }
}

fn probe_rows(round: &Round) -> Vec<ProbeRow> {
    let phys = round.interfaces.physical.as_ref();
    let tun = round.interfaces.tunnel.as_ref();
    round
        .results
        .iter()
        .map(|r| ProbeRow {
            path: r.path.to_string(),
            bound_to: match r.path {
                PathKind::Physical | PathKind::Bypass => phys
                    .map(|p| format!("{} {}", p.name, p.ipv4))
                    .unwrap_or_default(),
                PathKind::Tunnel => tun
                    .map(|t| format!("{} {}", t.name, t.ipv4))
                    .unwrap_or_default(),
                PathKind::Default => "default route".into(),
            },
            egress: r.outcome.map(|ip| ip.to_string()).unwrap_or_default(),
            millis: r.duration.as_millis() as u64,
            error: r.outcome.err().map(|e| e.to_string()).unwrap_or_default(),
        })
        .collect()
}

/// `GET /`: the status page.
pub fn router(source: Arc<StatusSource>) -> Router {
    Router::new().route("/", get(page)).with_state(source)
}

async fn page(State(source): State<Arc<StatusSource>>) -> Html<String> {
    Html(super::render(&source.view(Instant::now()).await))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fallback::controller::{ActionRecord, DecisionRecord};
    use crate::fallback::policy::{Action, ApplyOutcome, DecisionKind, Reason};
    use crate::fallback::{BackendKind, Mode};

    #[test]
    fn the_fallback_part_spells_labels_as_the_metrics_do() {
        let s = FallbackStatus {
            mode: Mode::Auto,
            backend: BackendKind::PolicyRouting,
            active: false,
            plan: None,
            last_decision: Some(DecisionRecord {
                decision: DecisionKind::None,
                reason: Reason::BypassHealthy,
                at_unix: 0.0,
            }),
            last_action: Some(ActionRecord {
                action: Action::Apply,
                outcome: ApplyOutcome::RolledBack,
                error: Some("no egress".into()),
                at_unix: 0.0,
            }),
            consecutive_failures: 0,
            recheck: Default::default(),
        };
        let v = fallback_view(&s, String::new());
        assert_eq!(
            (v.mode.as_str(), v.backend.as_str()),
            ("auto", "policy-routing")
        );
        assert_eq!(
            v.last,
            [
                "last decision: none (bypass_healthy)",
                "last action: apply: rolled_back (no egress)"
            ]
        );
    }

    #[test]
    fn tone_follows_the_probe_then_the_sessions() {
        assert_eq!(
            tone(
                Some(ProbeState::BypassWorking),
                SessionsState::Broken,
                false
            ),
            Tone::Working
        );
        assert_eq!(
            tone(
                Some(ProbeState::BypassWorking),
                SessionsState::Working,
                true
            ),
            Tone::Repaired
        );
        assert_eq!(
            tone(
                Some(ProbeState::BypassBroken),
                SessionsState::Working,
                false
            ),
            Tone::Broken
        );
        assert_eq!(
            tone(Some(ProbeState::TunnelDown), SessionsState::TooFew, false),
            Tone::VpnDown
        );
        assert_eq!(tone(None, SessionsState::Broken, false), Tone::Broken);
        assert_eq!(tone(None, SessionsState::TooFew, false), Tone::NotMeasured);
        // Without a probe, a log where some sessions fail is never "working".
        for s in [SessionsState::Partial, SessionsState::Inconclusive] {
            assert_eq!(tone(None, s, false), Tone::Failing);
        }
        assert_eq!(
            tone(
                Some(ProbeState::Undetermined),
                SessionsState::Working,
                false
            ),
            Tone::NotMeasured
        );
    }
}
