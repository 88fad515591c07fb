//! Builds the [`StatusView`] from what the agent has, and serves it at `/`.
//!
//! [`StatusSource::snapshot`] reads the agent's shared state at one moment; [`build`] turns a
//! [`Snapshot`] into the view, in words, with the wall clock passed in (tests pass their own).
//! When the verdict changed is kept by health beside the verdict, not here: the page only
//! reads it, so a page view never moves it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use chrono::{DateTime, Datelike, TimeZone};
use strum::IntoEnumIterator;

use super::{AppRow, FallbackView, HealthRow, ProbeRow, Since, StatusView, Tone};
use crate::fallback::controller::{ActionRecord, DecisionRecord, FallbackStatus};
use crate::fallback::policy::{Action, ApplyOutcome, DecisionKind, Reason};
use crate::fallback::routes::SharedController;
use crate::fallback::{BackendKind, Mode};
use crate::health::model::HealthComponent;
use crate::health::{Health, HealthReport};
use crate::log_state::LogState;
use crate::probe::{PathKind, ProbeError, ProbeState, Round, Verdict};
use crate::sessions::counts::Reply;
use crate::sessions::window::{SessionsState, SharedWindow};

/// Everything the page reads; each part is the agent's own shared state.
pub struct StatusSource {
    pub health: Arc<Health>,
    pub window: SharedWindow,
    pub pipeline: Arc<Mutex<LogState>>,
    pub controller: SharedController,
}

/// What the page is drawn from, read at one moment.
pub struct Snapshot {
    pub report: HealthReport,
    pub round: Option<(Round, Verdict)>,
    /// The round verdict's state and since when it has held (kept by health).
    pub verdict_since: Option<(ProbeState, SystemTime)>,
    /// The window's state now, and the state and change time health saw at the last closes.
    pub sessions: SessionsState,
    pub sessions_since: Option<(SessionsState, SystemTime)>,
    pub window_seconds: u64,
    pub apps: Vec<AppRow>,
    /// The fallback's status and rules text; `None` while the controller is busy.
    pub fallback: Option<(FallbackStatus, String)>,
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
        }
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let (apps, sessions, window_seconds) = self.apps(now);
        Snapshot {
            report: self.health.report(now),
            round: self.health.last_round(),
            verdict_since: self.health.verdict_since(),
            sessions,
            sessions_since: self.health.sessions_since(),
            window_seconds,
            apps,
            fallback: self.fallback(),
        }
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
    fn fallback(&self) -> Option<(FallbackStatus, String)> {
        match self.controller.try_lock() {
            Ok(c) => {
                let s = c.status_handle().read().expect("status lock").clone();
                let rules = s.plan.as_ref().map(|p| c.render(p)).unwrap_or_default();
                Some((s, rules))
            }
            Err(_) => None,
        }
    }
}

/// The view of `s`, with `wall` the wall clock now in the zone the page speaks.
pub fn build<Tz: TimeZone>(s: Snapshot, wall: &DateTime<Tz>) -> StatusView {
    let active = s.fallback.as_ref().is_some_and(|(f, _)| f.active);
    let probe_state = s.round.as_ref().map(|(_, v)| v.state);
    let tone = tone(probe_state, s.sessions, active);
    let since = changed_at(&s, probe_state).map(|at| since(at, wall));
    StatusView {
        version: env!("CARGO_PKG_VERSION").into(),
        tone,
        since,
        components: health_rows(&s.report),
        window_seconds: s.window_seconds,
        apps: s.apps,
        probe: s
            .round
            .as_ref()
            .map(|(r, _)| probe_rows(r))
            .unwrap_or_default(),
        fallback: s.fallback.map(|(f, rules)| fallback_view(&f, rules, wall)),
    }
}

/// When the state the tone comes from last changed: the round verdict's when there is a
/// round; else the sessions state's, when health saw the state the window shows now (a window
/// that aged into another state without new closes has no known change time).
fn changed_at(s: &Snapshot, probe_state: Option<ProbeState>) -> Option<SystemTime> {
    match (probe_state, s.verdict_since) {
        (Some(state), Some((kept, at))) if state == kept => Some(at),
        (Some(_), _) => None,
        (None, _) => s
            .sessions_since
            .filter(|(kept, _)| *kept == s.sessions)
            .map(|(_, at)| at),
    }
}

/// "14:02" when `at` is today in `wall`'s zone, "3 Dec, 14:02" this year, else with the year.
pub fn since<Tz: TimeZone>(at: SystemTime, wall: &DateTime<Tz>) -> Since {
    // The offset at `at` itself (a change of summer time in between is taken into account).
    let at = DateTime::<chrono::Utc>::from(at)
        .with_timezone(&wall.timezone())
        .fixed_offset();
    let wall = wall.fixed_offset();
    let format = if at.date_naive() == wall.date_naive() {
        "%H:%M"
    } else if at.year() == wall.year() {
        "%-d %b, %H:%M"
    } else {
        "%-d %b %Y, %H:%M"
    };
    Since {
        words: at.format(format).to_string(),
        rfc3339: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

/// The components worst first (failing, degraded, ok), in the report's order within each.
fn health_rows(report: &HealthReport) -> Vec<HealthRow> {
    let mut rows: Vec<HealthRow> = HealthComponent::iter()
        .filter_map(|c| {
            report.components.get(c.name()).map(|r| HealthRow {
                name: component_words(c).into(),
                status: r.status,
                reason: r.reason.clone(),
            })
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.status));
    rows
}

fn component_words(c: HealthComponent) -> &'static str {
    match c {
        HealthComponent::Log => "proxy log",
        HealthComponent::Checkpoint => "checkpoint",
        HealthComponent::Processes => "PIA's processes",
        HealthComponent::Sessions => "bypass sessions",
        HealthComponent::ProbePhysical => "probe: physical",
        HealthComponent::ProbeTunnel => "probe: tunnel",
        HealthComponent::ProbeBypass => "probe: bypass",
        HealthComponent::ProbeDefault => "probe: default route",
        HealthComponent::Fallback => "repair (fallback)",
    }
}

/// The fallback's part of the page, in words.
fn fallback_view<Tz: TimeZone>(s: &FallbackStatus, rules: String, wall: &DateTime<Tz>) -> FallbackView {
    let at = |unix: f64| {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs_f64(unix.max(0.0));
        since(t, wall).words
    };
    FallbackView {
        mode: mode_words(s.mode).into(),
        backend: backend_words(s.backend).into(),
        active: s.active,
        rules,
        last: s
            .last_decision
            .iter()
            .map(|d| format!("{}: {}", at(d.at_unix), decision_words(d, s.mode)))
            .chain(
                s.last_action
                    .iter()
                    .map(|a| format!("{}: {}", at(a.at_unix), action_words(a))),
            )
            .collect(),
    }
}

fn mode_words(m: Mode) -> &'static str {
    match m {
        Mode::Off => "off",
        Mode::Observe => "observe (decides and reports, never changes anything)",
        Mode::Auto => "auto (repairs by itself)",
    }
}

fn backend_words(b: BackendKind) -> &'static str {
    match b {
        BackendKind::Pf => "pf anchor",
        BackendKind::PolicyRouting => "policy routing (ip rule)",
        BackendKind::None => "none on this system",
    }
}

/// "would apply the repair (the bypass probe failed in consecutive rounds); mode is observe".
fn decision_words(d: &DecisionRecord, mode: Mode) -> String {
    let why = reason_words(d.reason);
    // A manual request acts in any mode; otherwise only `auto` acts.
    let acts = mode == Mode::Auto || d.reason == Reason::Manual;
    let what = match d.decision {
        DecisionKind::None => return format!("nothing to do: {why}"),
        DecisionKind::Apply => "apply the repair",
        DecisionKind::Reload => "reload the repair's rules",
        DecisionKind::Revert => "remove the repair",
    };
    if acts {
        format!("decided to {what} ({why})")
    } else {
        format!(
            "would {what} ({why}); mode is {}, so nothing was changed",
            mode_name(mode)
        )
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Off => "off",
        Mode::Observe => "observe",
        Mode::Auto => "auto",
    }
}

fn action_words(a: &ActionRecord) -> String {
    let what = match a.action {
        Action::Apply => "applying the repair",
        Action::Revert => "removing the repair",
        Action::Reload => "reloading the repair's rules",
    };
    let outcome = match a.outcome {
        ApplyOutcome::Ok => "done",
        ApplyOutcome::Failed => "failed",
        ApplyOutcome::RolledBack => {
            "undone: the probe round after it still showed the bypass broken"
        }
    };
    match &a.error {
        Some(e) => format!("{what}: {outcome} ({e})"),
        None => format!("{what}: {outcome}"),
    }
}

fn reason_words(r: Reason) -> &'static str {
    match r {
        Reason::BypassHealthy => "the bypass works",
        Reason::NoTunnel => "the VPN is off",
        Reason::NoNetwork => "no network",
        Reason::Undetermined => "the probes cannot tell",
        Reason::VpnLeak => "a VPN leak, which the repair does not fix",
        Reason::NoPlan => "no physical interface or gateway to build rules from",
        Reason::AwaitingConfirmation => "waiting for another probe round to confirm",
        Reason::ProbeBroken => "the bypass probe failed in consecutive rounds",
        Reason::SessionsZeroBytes => {
            "most bypass sessions got no reply, and a probe round confirms it"
        }
        Reason::StillBroken => "still broken with the repair in place",
        Reason::Cooldown => "too soon after the last change",
        Reason::RateLimited => "the hourly cap on changes is reached",
        Reason::Backoff => "backing off after failed repairs",
        Reason::TunnelDown => "the VPN went down",
        Reason::KeepOnTunnelDown => "the VPN went down; the rules are kept, as configured",
        Reason::AddressChanged => "the Mac's address, gateway or interface changed",
        Reason::Active => "the repair is in place",
        Reason::Manual => "asked by hand",
        Reason::Alert => "asked by an alert",
        Reason::ModeOff => "the fallback is off",
    }
}

/// The page's verdict: the probe's when there is a round, else the session window's.
pub fn tone(verdict: Option<ProbeState>, sessions: SessionsState, fallback_active: bool) -> Tone {
    match (verdict, sessions) {
        (Some(ProbeState::BypassWorking), _) if fallback_active => Tone::Repaired,
        (Some(ProbeState::BypassWorking), _) => Tone::Working,
        (Some(ProbeState::BypassBroken), _) => Tone::Broken,
        (Some(ProbeState::VpnLeak), _) => Tone::VpnLeak,
        (Some(ProbeState::TunnelDown), _) => Tone::VpnDown,
        (Some(ProbeState::NoNetwork), _) => Tone::NoNetwork,
        (_, SessionsState::Broken) => Tone::Broken,
        (Some(ProbeState::Undetermined), _) => Tone::Undetermined,
        (None, SessionsState::Partial | SessionsState::Inconclusive) => Tone::Failing,
        (None, SessionsState::Working) => Tone::Working,
        (None, SessionsState::TooFew) => Tone::NotMeasured,
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
        row.rx_bytes += c.rx_bytes;
        row.tx_bytes += c.tx_bytes;
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
            path: path_words(r.path).into(),
            bound_to: match r.path {
                PathKind::Physical => phys.map(|p| p.name.clone()).unwrap_or_default(),
                PathKind::Bypass => phys.map(|p| p.ipv4.to_string()).unwrap_or_default(),
                PathKind::Tunnel => tun.map(|t| t.name.clone()).unwrap_or_default(),
                PathKind::Default => "nothing (the routes decide)".into(),
            },
            egress: r.outcome.map(|ip| ip.to_string()).unwrap_or_default(),
            millis: r.duration.as_millis() as u64,
            error: r.outcome.err().map(error_words).unwrap_or_default().into(),
        })
        .collect()
}

fn path_words(p: PathKind) -> &'static str {
    match p {
        PathKind::Physical => "physical interface",
        PathKind::Tunnel => "VPN tunnel",
        PathKind::Bypass => "physical address, as the proxy binds",
        PathKind::Default => "default route",
    }
}

fn error_words(e: ProbeError) -> &'static str {
    match e {
        ProbeError::NoInterface => "no such interface",
        ProbeError::Timeout => "no answer (timed out)",
        ProbeError::Refused => "connection refused",
        ProbeError::Unreachable => "unreachable",
        ProbeError::BadBody => "an answer that is not an address",
        ProbeError::Http => "an HTTP error",
        ProbeError::Other => "failed",
    }
}

/// `GET /`: the status page.
pub fn router(source: Arc<StatusSource>) -> Router {
    Router::new().route("/", get(page)).with_state(source)
}

async fn page(State(source): State<Arc<StatusSource>>) -> Html<String> {
    let snapshot = source.snapshot(Instant::now());
    Html(super::render(&build(snapshot, &chrono::Local::now())))
}
