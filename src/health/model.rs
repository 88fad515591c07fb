//! The health model: each component `ok`, `degraded` or `failing`, with a reason in words.
//! Pure: built from snapshots of the inputs, so it is tested without a running agent.

use std::collections::BTreeMap;
use std::time::Duration;

use macro_rules_attribute::apply;
use serde::Serialize;
use strum::IntoEnumIterator;

use crate::fallback::controller::FallbackStatus;
use crate::fallback::policy::{Action, ApplyOutcome};
use crate::fallback::{BackendKind, Mode};
use crate::labels::label_set;
use crate::presence::Presence;
use crate::probe::{PathKind, ProbeError, ProbeState, Round, Verdict};
use crate::proxy_log::Level;
use crate::sessions::window::{AppRatio, SessionsState, SessionsVerdict};

#[apply(label_set!)]
#[derive(PartialOrd, Ord)]
pub enum Status {
    Ok,
    Degraded,
    Failing,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Component {
    pub status: Status,
    pub reason: String,
}

fn c(status: Status, reason: impl Into<String>) -> Component {
    Component {
        status,
        reason: reason.into(),
    }
}

/// The components, fixed: each one's snake_case name is the `component` label of
/// `health_status` and its key in `/health`.
#[apply(label_set!)]
pub enum HealthComponent {
    Log,
    Checkpoint,
    Processes,
    Sessions,
    ProbePhysical,
    ProbeTunnel,
    ProbeBypass,
    ProbeDefault,
    Fallback,
}

impl HealthComponent {
    /// The component judging one probe path.
    pub fn probe(path: PathKind) -> HealthComponent {
        match path {
            PathKind::Physical => HealthComponent::ProbePhysical,
            PathKind::Tunnel => HealthComponent::ProbeTunnel,
            PathKind::Bypass => HealthComponent::ProbeBypass,
            PathKind::Default => HealthComponent::ProbeDefault,
        }
    }

    /// Its name: the label value and the key in the report.
    pub fn name(self) -> &'static str {
        self.into()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// The worst of the components.
    pub status: Status,
    /// By [`HealthComponent::name`] (so `/health` lists them by name).
    pub components: BTreeMap<&'static str, Component>,
}

/// What the log side reports, as health judges it (the agent fills it from ingest's report).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogHealthInput {
    pub file_present: bool,
    pub last_line_age: Option<Duration>,
    pub level: Option<Level>,
    pub lines_read: u64,
    pub unrecognized: u64,
    /// The proxy's own `isConnected`, last seen.
    pub proxy_connected: Option<bool>,
    /// The error-level log (`/tmp/STProxy.log`) exists: PIA's debug logging is off.
    pub error_log_present: bool,
    /// The log file is there but cannot be opened or read (e.g. permission denied), or was
    /// refused (a FIFO, a link in a shared folder...).
    pub file_error: Option<String>,
    /// The same for the error-level log: the debug log is still read, so it only degrades.
    pub error_file_error: Option<String>,
    /// Stretches lost unread (rotated away twice while the agent was stopped).
    pub gaps: u64,
}

/// The checkpoint's last save, as the model sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointInput {
    pub path: String,
    /// Why the last save failed; `None` when it succeeded.
    pub error: Option<String>,
    /// Time since the last successful save, if any.
    pub last_saved_age: Option<Duration>,
}

/// Thresholds the model uses (the sessions' are the sessions verdict's own).
#[derive(Clone, Debug)]
pub struct HealthThresholds {
    pub log_stale: Duration,
    /// A proxy logging at a level above this does not write the session lines.
    pub log_max_level: Level,
}

/// Snapshot of every input at one moment; the default has none, and probing off.
#[derive(Default)]
pub struct Inputs<'a> {
    pub log: Option<&'a LogHealthInput>,
    /// Per-app figures and the sessions verdict, over the same window.
    pub sessions: Option<(&'a [AppRatio], SessionsVerdict)>,
    /// `probe.enabled`: without probes the probe components are absent, not degraded.
    pub probing: bool,
    /// The last probe round and its verdict.
    pub round: Option<(&'a Round, &'a Verdict)>,
    pub fallback: Option<&'a FallbackStatus>,
    pub processes: Option<&'a Presence>,
    pub checkpoint: Option<&'a CheckpointInput>,
}

pub fn assess(t: &HealthThresholds, i: &Inputs<'_>) -> HealthReport {
    let mut components = BTreeMap::new();
    components.insert(HealthComponent::Log.name(), log(t, i.log));
    components.insert(HealthComponent::Checkpoint.name(), checkpoint(i.checkpoint));
    components.insert(
        HealthComponent::Sessions.name(),
        sessions(i.sessions.clone()),
    );
    let round = i.round.map(|(r, _)| r);
    components.insert(
        HealthComponent::Processes.name(),
        processes(i.processes, round, i.log),
    );
    let active = i.fallback.is_some_and(|f| f.active);
    if i.probing {
        for path in PathKind::iter() {
            let name = HealthComponent::probe(path).name();
            components.insert(name, probe(i.round, path, active));
        }
    }
    let verdict = i.round.map(|(_, v)| v);
    components.insert(
        HealthComponent::Fallback.name(),
        fallback(i.fallback, verdict, i.probing),
    );
    let status = components
        .values()
        .map(|c| c.status)
        .max()
        .unwrap_or(Status::Ok);
    HealthReport { status, components }
}

fn log(t: &HealthThresholds, l: Option<&LogHealthInput>) -> Component {
    let Some(l) = l else {
        return c(Status::Degraded, "the log has not been read yet");
    };
    if let Some(e) = &l.file_error {
        return c(
            Status::Failing,
            format!(
                "cannot read the proxy log: {e}. Reading resumes where it stopped once the file \
                 is readable again (check its owner and permissions, log.path)"
            ),
        );
    }
    if !l.file_present && l.error_log_present {
        return c(Status::Degraded, DEBUG_LOGGING_OFF);
    }
    if !l.file_present {
        return c(
            Status::Failing,
            "the proxy log file is missing (is PIA's debug logging on?)",
        );
    }
    if let Some(level) = l.level
        && level > t.log_max_level
    {
        return c(
            Status::Degraded,
            format!(
                "the proxy logs at {}: session lines need {} or more verbose. {DEBUG_LOGGING_OFF}",
                level, t.log_max_level
            ),
        );
    }
    if let Some(e) = &l.error_file_error {
        return c(
            Status::Degraded,
            format!("tailing; the error-level log (log.error_path) is not read: {e}"),
        );
    }
    match l.last_line_age {
        Some(age) if age > t.log_stale => c(
            Status::Degraded,
            format!("no new line for {} s", age.as_secs()),
        ),
        None if l.lines_read == 0 => c(Status::Ok, "tailing; no line yet"),
        _ => c(
            Status::Ok,
            format!(
                "tailing: {} lines read, {} unrecognized{}{}",
                l.lines_read,
                l.unrecognized,
                l.level.map(|v| format!(", level {v}")).unwrap_or_default(),
                if l.gaps > 0 {
                    format!(
                        "; {} gap(s): the file being read was rotated away twice while the \
                         agent was stopped, its unread rest is lost (log_gaps_total)",
                        l.gaps
                    )
                } else {
                    String::new()
                }
            ),
        ),
    }
}

/// A failed save loses nothing while the agent runs (the counts live in memory); it only
/// widens what a restart would read again, so it degrades rather than fails.
fn checkpoint(cp: Option<&CheckpointInput>) -> Component {
    let Some(cp) = cp else {
        return c(Status::Ok, "not saved yet");
    };
    let since = |age: Option<Duration>| match age {
        Some(a) => format!("the last save, {} s ago", a.as_secs()),
        None => "the start of the log (no save succeeded yet)".to_owned(),
    };
    match &cp.error {
        None => c(Status::Ok, format!("saved to {}", cp.path)),
        Some(e) => c(
            Status::Degraded,
            format!(
                "cannot save {e}. Counting goes on in memory and saving is retried every \
                 second; a restart now would resume from {}. Fix: free space on its disk or \
                 make its folder writable (log.checkpoint)",
                since(cp.last_saved_age)
            ),
        ),
    }
}

const DEBUG_LOGGING_OFF: &str = "debug logging off: only errors are visible (the proxy writes \
/tmp/STProxy.log at error level, without session lines). Turn on Debug Logging in PIA's settings \
(Help) to see sessions";

/// Is anyone there to write the log? The extension absent while the VPN is up is the silent
/// failure: the log stays quiet and nothing else says so.
fn processes(
    p: Option<&Presence>,
    round: Option<&Round>,
    log: Option<&LogHealthInput>,
) -> Component {
    let Some(p) = p.filter(|p| p.checked) else {
        return c(Status::Ok, "the process table has not been read yet");
    };
    let vpn_up = p.vpn > 0
        || round.is_some_and(|r| r.interfaces.tunnel.is_some())
        || log.is_some_and(|l| l.proxy_connected == Some(true));
    if p.extension == 0 && vpn_up {
        return c(
            Status::Failing,
            "the split-tunnel extension (com.privateinternetaccess.vpn.splittunnel) is not running while \
the VPN is up: bypass apps are not split. Likely cause: macOS dropped the extension's approval (after a \
reboot or an update). Fix: approve it in System Settings → Privacy & Security, or reinstall PIA",
        );
    }
    if p.daemon == 0 {
        return c(
            Status::Degraded,
            "pia-daemon is not running: PIA's service is down; start the PIA app",
        );
    }
    if p.extension == 0 {
        return c(
            Status::Ok,
            "VPN down; the split-tunnel extension is not running (expected while disconnected)",
        );
    }
    c(
        Status::Ok,
        format!(
            "split-tunnel extension, pia-daemon and {} VPN process(es) running",
            p.vpn
        ),
    )
}

fn sessions(s: Option<(&[AppRatio], SessionsVerdict)>) -> Component {
    // The verdict names the failing apps itself; the per-app figures are for the page.
    let Some((_, v)) = s else {
        return c(Status::Ok, "no session window");
    };
    let summary = format!("{} in the last {} s", v.sentence(), v.window_seconds);
    match v.state {
        SessionsState::Working | SessionsState::TooFew => c(Status::Ok, summary),
        SessionsState::Broken => c(
            Status::Degraded,
            format!("{summary}: the bypass looks broken; the probes decide"),
        ),
        SessionsState::Partial | SessionsState::Inconclusive => c(
            Status::Degraded,
            format!("{summary}: some bypass sessions get no reply; the probes decide"),
        ),
    }
}

fn err_words(e: ProbeError) -> &'static str {
    match e {
        ProbeError::NoInterface => "its interface is missing",
        ProbeError::Timeout => "timed out",
        ProbeError::Refused => "connection refused",
        ProbeError::Unreachable => "unreachable",
        ProbeError::BadBody => "the echo answered something unreadable",
        ProbeError::Http => "HTTP error",
        ProbeError::Other => "failed",
    }
}

fn probe(round: Option<(&Round, &Verdict)>, path: PathKind, fallback_active: bool) -> Component {
    let Some((round, verdict)) = round else {
        return c(Status::Degraded, "no probe round yet");
    };
    let Some(r) = round.results.iter().find(|r| r.path == path) else {
        return c(Status::Degraded, "not probed in the last round");
    };
    let ms = r.duration.as_millis();
    let measured = match r.outcome {
        Ok(ip) => format!("egresses as {ip} in {ms} ms"),
        Err(e) => format!("{} after {ms} ms", err_words(e)),
    };
    // Discovery's doubts are the physical component's: its interface may be a guess.
    if path == PathKind::Physical && !round.interfaces.trusted() {
        return c(
            Status::Degraded,
            format!(
                "{measured}; the interfaces are uncertain ({}), so the fallback will not act",
                round.interfaces.problems.join("; ")
            ),
        );
    }
    match (path, r.outcome) {
        // The bypass component carries the round's verdict: it says what the round means.
        (PathKind::Bypass, _) => {
            let status = match verdict.state {
                ProbeState::BypassWorking | ProbeState::TunnelDown => Status::Ok,
                ProbeState::BypassBroken | ProbeState::VpnLeak | ProbeState::NoNetwork => {
                    Status::Failing
                }
                ProbeState::Undetermined => Status::Degraded,
            };
            let through = if fallback_active && verdict.is(ProbeState::BypassWorking) {
                " (through the fallback)"
            } else {
                ""
            };
            c(status, format!("{measured}{through}; {}", verdict.text))
        }
        (_, Ok(_)) => c(Status::Ok, measured),
        (PathKind::Tunnel, Err(ProbeError::NoInterface)) => {
            c(Status::Ok, "no tunnel interface: the VPN is disconnected")
        }
        (PathKind::Physical, Err(_)) => c(Status::Failing, measured),
        (_, Err(_)) => c(Status::Degraded, measured),
    }
}

fn fallback(f: Option<&FallbackStatus>, verdict: Option<&Verdict>, probing: bool) -> Component {
    let Some(f) = f else {
        return c(Status::Ok, "no fallback controller");
    };
    if let Some(a) = &f.last_action
        && a.outcome != ApplyOutcome::Ok
    {
        let what = format!(
            "last {} {}: {}",
            a.action,
            // In words: the reason is read by people (`/health`, the status page).
            match a.outcome {
                ApplyOutcome::Ok => "ok",
                ApplyOutcome::Failed => "failed",
                ApplyOutcome::RolledBack => "rolled back",
            },
            a.error.as_deref().unwrap_or("no detail")
        );
        // A failing backend (pfctl, ip) needs a human; a rolled-back apply backs off and retries.
        let status = if a.outcome == ApplyOutcome::Failed || a.action == Action::Revert {
            Status::Failing
        } else {
            Status::Degraded
        };
        return c(status, what);
    }
    let mut component = fallback_state(f, verdict, probing);
    // A recheck due or a retirement is said beside the state, which it does not change.
    if let Some(line) = f.recheck.line() {
        component.reason = format!("{}; {line}", component.reason);
    }
    component
}

fn fallback_state(f: &FallbackStatus, verdict: Option<&Verdict>, probing: bool) -> Component {
    let broken = verdict.is_some_and(|v| v.is(ProbeState::BypassBroken));
    match (f.mode, f.active) {
        (_, true) => c(
            Status::Ok,
            match &f.plan {
                Some(p) => format!(
                    "active ({}): {} leaves via {} gateway {}",
                    backend_words(f.backend),
                    p.source,
                    p.interface,
                    p.gateway
                ),
                None => format!("active ({})", backend_words(f.backend)),
            },
        ),
        (Mode::Observe, false) if broken => c(
            Status::Degraded,
            "the bypass is broken; mode is observe, so the fallback is not applied",
        ),
        (mode, false) => c(
            Status::Ok,
            format!(
                "inactive (mode {mode}, backend {}){}",
                backend_words(f.backend),
                if probing {
                    ""
                } else {
                    "; probes are off (probe.enabled = false), so it is never applied"
                }
            ),
        ),
    }
}

/// The backend in words (its config spelling, `policy-routing`, is not for people).
pub fn backend_words(b: BackendKind) -> &'static str {
    match b {
        BackendKind::Pf => "pf",
        BackendKind::PolicyRouting => "policy routing",
        BackendKind::None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_has_one_key_per_component_spelled_as_its_label() {
        let names: Vec<&str> = HealthComponent::iter().map(HealthComponent::name).collect();
        assert_eq!(
            names,
            [
                "log",
                "checkpoint",
                "processes",
                "sessions",
                "probe_physical",
                "probe_tunnel",
                "probe_bypass",
                "probe_default",
                "fallback"
            ]
        );
        let t = HealthThresholds {
            log_stale: Duration::from_secs(900),
            log_max_level: Level::Debug,
        };
        let probing = Inputs {
            probing: true,
            ..Inputs::default()
        };
        let keys: Vec<&str> = assess(&t, &probing).components.into_keys().collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted, "every component, listed by name");
        let log_only = assess(&t, &Inputs::default());
        assert_eq!(
            log_only.components.len(),
            HealthComponent::iter().count() - 4
        );
    }
}
