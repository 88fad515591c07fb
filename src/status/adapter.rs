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
use crate::fallback::Mode;
use crate::fallback::controller::{ActionRecord, DecisionRecord, FallbackStatus};
use crate::fallback::policy::{Action, ApplyOutcome, DecisionKind, Reason};
use crate::fallback::routes::SharedController;
use crate::health::model::{HealthComponent, backend_words};
use crate::health::{Health, HealthReport};
use crate::log_state::LogState;
use crate::probe::{PathKind, ProbeError, ProbeState, Round, Verdict};
use crate::proxy_log::ErrorKind;
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
fn fallback_view<Tz: TimeZone>(
    s: &FallbackStatus,
    rules: String,
    wall: &DateTime<Tz>,
) -> FallbackView {
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
            // A recheck due, or the retirement, in the status data's own words.
            .chain(s.recheck.line())
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
    let mut errors: BTreeMap<String, BTreeMap<ErrorKind, u64>> = BTreeMap::new();
    for (id, _, c) in tracker.counts().iter() {
        let name = tracker.apps().name(id);
        let row = apps.entry(name.to_owned()).or_default();
        row.total_sessions += c.sessions_closed();
        row.total_zero += c.replies(Reply::NoReply);
        row.rx_bytes += c.rx_bytes;
        row.tx_bytes += c.tx_bytes;
        let e = errors.entry(name.to_owned()).or_default();
        for kind in ErrorKind::iter() {
            if c.errors(kind) > 0 {
                *e.entry(kind).or_default() += c.errors(kind);
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
                .map(|(k, n)| format!("{} {n}", error_kind_words(*k)))
                .collect::<Vec<_>>()
                .join(", ");
        }
    }
}

fn error_kind_words(k: ErrorKind) -> &'static str {
    match k {
        ErrorKind::EmptyBuffer => "empty read",
        ErrorKind::IoOnClosedChannel => "write after close",
        ErrorKind::ConnectTimeout => "connect timeout",
        ErrorKind::ConnectionRefused => "refused",
        ErrorKind::ConnectionReset => "reset",
        ErrorKind::Unreachable => "unreachable",
        ErrorKind::ReadPending => "read pending",
        ErrorKind::Other => "other",
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use chrono::FixedOffset;

    use super::*;
    use crate::fallback::controller::Controller;
    use crate::fallback::metrics::FallbackMetrics;
    use crate::fallback::{FallbackConfig, NoBackend};
    use crate::health::HealthConfig;
    use crate::log_state::Limits;
    use crate::probe::lab::{HOME_IP, VPN_EXIT_IP, interfaces};
    use crate::probe::{PathResult, ProbeError};
    use crate::sessions::window::{SessionWindow, Thresholds};

    /// The agent's pieces, empty, with the fallback in observe mode on no backend.
    fn source() -> StatusSource {
        let window = Arc::new(Mutex::new(SessionWindow::new(
            Duration::from_secs(300),
            Thresholds::default(),
        )));
        let metrics = FallbackMetrics::register(&prometheus::Registry::new()).unwrap();
        let controller =
            Controller::without_probes(&FallbackConfig::default(), Box::new(NoBackend), metrics);
        StatusSource::new(
            Arc::new(Health::new(&HealthConfig::default()).with_sessions(window.clone())),
            window,
            Arc::new(Mutex::new(LogState::new(Limits::default()))),
            Arc::new(tokio::sync::Mutex::new(controller)),
        )
    }

    /// A round whose verdict is `state` (the truth table's rows, with the lab's addresses).
    fn round(state: ProbeState) -> (Round, Verdict) {
        let other = Ipv4Addr::new(203, 0, 113, 99);
        let ok = |ip| Ok(ip);
        let (tunnel, [p, t, x, d]): (bool, [Result<Ipv4Addr, ProbeError>; 4]) = match state {
            ProbeState::BypassWorking => (
                true,
                [ok(HOME_IP), ok(VPN_EXIT_IP), ok(HOME_IP), ok(VPN_EXIT_IP)],
            ),
            ProbeState::BypassBroken => (
                true,
                [
                    ok(HOME_IP),
                    ok(VPN_EXIT_IP),
                    Err(ProbeError::Timeout),
                    ok(VPN_EXIT_IP),
                ],
            ),
            ProbeState::VpnLeak => (
                true,
                [ok(HOME_IP), ok(VPN_EXIT_IP), ok(HOME_IP), ok(HOME_IP)],
            ),
            ProbeState::TunnelDown => (
                false,
                [
                    ok(HOME_IP),
                    Err(ProbeError::NoInterface),
                    ok(HOME_IP),
                    ok(HOME_IP),
                ],
            ),
            ProbeState::NoNetwork => (
                true,
                [
                    Err(ProbeError::Timeout),
                    Err(ProbeError::Unreachable),
                    Err(ProbeError::Timeout),
                    Err(ProbeError::Refused),
                ],
            ),
            ProbeState::Undetermined => (
                true,
                [ok(HOME_IP), ok(VPN_EXIT_IP), ok(other), ok(VPN_EXIT_IP)],
            ),
        };
        let results = PathKind::iter()
            .zip([p, t, x, d])
            .map(|(path, outcome)| PathResult {
                path,
                outcome,
                duration: Duration::from_millis(40),
            })
            .collect();
        let round = Round {
            interfaces: interfaces(tunnel),
            results,
        };
        let verdict = Verdict::of(&round);
        assert_eq!(verdict.state, state, "{:?}", round.results);
        (round, verdict)
    }

    /// 2026-12-04 14:02:30 at UTC+1, and `minutes` later, as the page's clock.
    fn wall(minutes: i64) -> DateTime<FixedOffset> {
        let zone = FixedOffset::east_opt(3600).unwrap();
        zone.with_ymd_and_hms(2026, 12, 4, 14, 2, 30).unwrap() + chrono::Duration::minutes(minutes)
    }

    fn system(minutes: i64) -> SystemTime {
        wall(minutes).into()
    }

    #[test]
    fn since_is_when_the_verdict_changed_not_when_the_page_was_viewed() {
        let s = source();
        let t0 = Instant::now();
        let view = |minutes: i64| {
            let now = t0 + Duration::from_secs(60 * minutes as u64);
            build(s.snapshot(now), &wall(minutes))
        };
        let (r, v) = round(ProbeState::BypassBroken);
        s.health.update_round_at(r.clone(), v.clone(), system(0));
        let first = view(3);
        assert_eq!(first.tone, Tone::Broken);
        assert_eq!(first.since.as_ref().unwrap().words, "14:02");
        assert_eq!(
            first.since.as_ref().unwrap().rfc3339,
            "2026-12-04T14:02:30+01:00"
        );
        // Another round with the same verdict, and views minutes apart: the same "since".
        s.health.update_round_at(r, v, system(5));
        assert_eq!(view(9).since, first.since);
        assert_eq!(view(14).since, first.since);
        // The verdict changes: "since" moves to that round.
        let (r, v) = round(ProbeState::BypassWorking);
        s.health.update_round_at(r, v, system(20));
        let after = view(30);
        assert_eq!(after.tone, Tone::Working);
        assert_eq!(after.since.unwrap().words, "14:22");
        // The next day it says the date too; the next year, the year.
        assert_eq!(since(system(20), &wall(24 * 60)).words, "4 Dec, 14:22");
        assert_eq!(
            since(system(20), &wall(40 * 24 * 60)).words,
            "4 Dec 2026, 14:22"
        );
    }

    #[test]
    fn since_from_the_sessions_only_while_they_show_the_state_health_saw() {
        let snapshot = |now: SessionsState, kept: SessionsState| Snapshot {
            report: Health::new(&HealthConfig::default()).report(Instant::now()),
            round: None,
            verdict_since: None,
            sessions: now,
            sessions_since: Some((kept, system(0))),
            window_seconds: 300,
            apps: Vec::new(),
            fallback: None,
        };
        let same = build(
            snapshot(SessionsState::Broken, SessionsState::Broken),
            &wall(7),
        );
        assert_eq!(
            (same.tone, same.since.unwrap().words.as_str()),
            (Tone::Broken, "14:02")
        );
        // The window aged into another state with no close since: no time is known.
        let aged = build(
            snapshot(SessionsState::TooFew, SessionsState::Broken),
            &wall(7),
        );
        assert_eq!((aged.tone, aged.since), (Tone::NotMeasured, None));
    }

    #[test]
    fn health_rows_come_worst_first_in_words() {
        let s = source();
        let (r, v) = round(ProbeState::BypassBroken);
        s.health.update_round_at(r, v, system(0));
        let view = build(s.snapshot(Instant::now()), &wall(1));
        let statuses: Vec<Status> = view.components.iter().map(|c| c.status).collect();
        let mut sorted = statuses.clone();
        sorted.sort_by_key(|s| std::cmp::Reverse(*s));
        assert_eq!(statuses, sorted);
        assert_eq!(statuses.first(), Some(&Status::Failing));
        assert_eq!(statuses.last(), Some(&Status::Ok));
        assert!(view.components.iter().any(|c| c.name == "probe: bypass"));
        assert!(view.components.iter().all(|c| !c.name.contains('_')));
    }

    use crate::health::Status;

    fn status(mode: Mode, decision: DecisionKind, reason: Reason) -> FallbackStatus {
        FallbackStatus {
            mode,
            backend: crate::fallback::BackendKind::PolicyRouting,
            active: false,
            plan: None,
            last_decision: Some(DecisionRecord {
                decision,
                reason,
                at_unix: wall(20).timestamp() as f64,
            }),
            last_action: Some(ActionRecord {
                action: Action::Apply,
                outcome: ApplyOutcome::RolledBack,
                error: Some("no egress".into()),
                at_unix: wall(20).timestamp() as f64,
            }),
            consecutive_failures: 0,
            recheck: Default::default(),
        }
    }

    #[test]
    fn the_fallback_part_is_in_words() {
        let utc = wall(30);
        let v = fallback_view(
            &status(Mode::Observe, DecisionKind::Apply, Reason::ProbeBroken),
            String::new(),
            &utc,
        );
        assert_eq!(v.backend, "policy routing");
        assert_eq!(
            v.last,
            [
                "14:22: would apply the repair (the bypass probe failed in consecutive \
                 rounds); mode is observe, so nothing was changed",
                "14:22: applying the repair: undone: the probe round after it still showed \
                 the bypass broken (no egress)"
            ]
        );
        let auto = fallback_view(
            &status(Mode::Auto, DecisionKind::Apply, Reason::SessionsZeroBytes),
            String::new(),
            &utc,
        );
        assert!(auto.last[0].starts_with("14:22: decided to apply the repair (most bypass"));
        let none = fallback_view(
            &status(
                Mode::Observe,
                DecisionKind::None,
                Reason::AwaitingConfirmation,
            ),
            String::new(),
            &utc,
        );
        assert_eq!(
            none.last[0],
            "14:22: nothing to do: waiting for another probe round to confirm"
        );
    }

    #[test]
    fn each_verdict_state_has_its_own_tone() {
        let tones: Vec<Tone> = ProbeState::iter()
            .map(|p| tone(Some(p), SessionsState::Working, false))
            .collect();
        assert_eq!(
            tones,
            [
                Tone::Working,
                Tone::Broken,
                Tone::VpnLeak,
                Tone::VpnDown,
                Tone::NoNetwork,
                Tone::Undetermined
            ]
        );
        let working = Some(ProbeState::BypassWorking);
        assert_eq!(tone(working, SessionsState::Broken, false), Tone::Working);
        assert_eq!(tone(working, SessionsState::Working, true), Tone::Repaired);
        // No network makes every session fail: that is not the split tunnel broken.
        let offline = Some(ProbeState::NoNetwork);
        assert_eq!(tone(offline, SessionsState::Broken, false), Tone::NoNetwork);
        let unsure = Some(ProbeState::Undetermined);
        assert_eq!(tone(unsure, SessionsState::Broken, false), Tone::Broken);
        assert_eq!(tone(None, SessionsState::Broken, false), Tone::Broken);
        assert_eq!(tone(None, SessionsState::TooFew, false), Tone::NotMeasured);
        // Without a probe, a log where some sessions fail is never "working".
        for s in [SessionsState::Partial, SessionsState::Inconclusive] {
            assert_eq!(tone(None, s, false), Tone::Failing);
        }
    }

    /// Every name a label enum gives its variants: CamelCase as in the code, its lowercase
    /// run-together form, and its snake_case or kebab-case label.
    fn internal_names() -> Vec<String> {
        fn names<E: IntoEnumIterator + std::fmt::Debug + Into<&'static str>>() -> Vec<String> {
            let mut out = Vec::new();
            for v in E::iter() {
                let camel = format!("{v:?}");
                if camel.chars().filter(char::is_ascii_uppercase).count() > 1 {
                    out.push(camel.to_lowercase());
                    out.push(camel);
                }
                let label: &'static str = v.into();
                if label.contains(['_', '-']) {
                    out.push(label.to_owned());
                }
            }
            out
        }
        [
            names::<ProbeState>(),
            names::<Reason>(),
            names::<DecisionKind>(),
            names::<Action>(),
            names::<ApplyOutcome>(),
            names::<Mode>(),
            names::<crate::fallback::BackendKind>(),
            names::<PathKind>(),
            names::<ProbeError>(),
            names::<ErrorKind>(),
            names::<SessionsState>(),
            names::<HealthComponent>(),
        ]
        .concat()
    }

    /// The page's text as a reader sees it: tags (and their attributes) and the style removed.
    fn visible_text(page: &str) -> String {
        let body = &page[page.find("<body>").unwrap()..];
        let mut out = String::new();
        let mut in_tag = false;
        for c in body.chars() {
            match c {
                '<' => in_tag = true,
                '>' => {
                    in_tag = false;
                    out.push(' ');
                }
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn no_page_shows_an_internal_name() {
        let names = internal_names();
        assert!(names.contains(&"ProbeBroken".to_owned()));
        assert!(names.contains(&"policyrouting".to_owned()));
        assert!(names.contains(&"awaiting_confirmation".to_owned()));
        let mut pages = 0;
        for state in ProbeState::iter() {
            for mode in Mode::iter() {
                for (decision, reason) in DecisionKind::iter()
                    .zip(Reason::iter().cycle())
                    .chain(Reason::iter().map(|r| (DecisionKind::Apply, r)))
                {
                    let (r, v) = round(state);
                    let health = Health::new(&HealthConfig::default());
                    let mut f = status(mode, decision, reason);
                    f.active = state == ProbeState::BypassWorking && mode == Mode::Auto;
                    let fallback = Some((f, String::new()));
                    health.update_round_at(r.clone(), v.clone(), system(0));
                    let s = Snapshot {
                        report: health.report(Instant::now()),
                        round: Some((r, v)),
                        verdict_since: health.verdict_since(),
                        sessions: SessionsState::Broken,
                        sessions_since: None,
                        window_seconds: 300,
                        apps: vec![AppRow {
                            app: "com.plexapp.plexmediaserver".into(),
                            top_errors: ErrorKind::iter()
                                .map(error_kind_words)
                                .collect::<Vec<_>>()
                                .join(", "),
                            ..AppRow::default()
                        }],
                        fallback,
                    };
                    let page = super::super::render(&build(s, &wall(1)));
                    let text = visible_text(&page);
                    for name in &names {
                        assert!(
                            !text.contains(name.as_str()),
                            "{name:?} on the page:\n{text}"
                        );
                    }
                    pages += 1;
                }
            }
        }
        assert!(pages > 100, "{pages} pages");
    }
}
