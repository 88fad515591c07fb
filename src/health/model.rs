//! The health model: each component `ok`, `degraded` or `failing`, with a reason in words.
//! Pure: built from snapshots of the inputs, so it is tested without a running agent.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::fallback::Mode;
use crate::fallback::controller::FallbackStatus;
use crate::fallback::policy::{Action, ApplyOutcome, bypass_broken};
use crate::presence::Presence;
use crate::probe::{PathKind, ProbeError, Round};
use crate::proxy_log::Level;
use crate::sessions::window::AppRatio;

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    strum::EnumIter,
    strum::EnumCount,
    strum::IntoStaticStr,
    strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "snake_case")]
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

/// Component names, fixed: they are metric labels.
pub const COMPONENTS: [&str; 9] = [
    "log",
    "checkpoint",
    "processes",
    "sessions",
    "probe_physical",
    "probe_tunnel",
    "probe_bypass",
    "probe_default",
    "fallback",
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// The worst of the components.
    pub status: Status,
    pub components: BTreeMap<&'static str, Component>,
}

/// What the log side reports, filled by the log pipeline.
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
    /// The log file is there but cannot be opened or read (e.g. permission denied).
    pub file_error: Option<String>,
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

/// Thresholds the model uses.
#[derive(Clone, Debug)]
pub struct Thresholds {
    pub log_stale: Duration,
    /// A proxy logging at a level above this does not write the session lines.
    pub log_max_level: Level,
    pub zero_byte_ratio: f64,
    pub min_sessions: u32,
    pub window: Duration,
}

/// Snapshot of every input at one moment.
pub struct Inputs<'a> {
    pub log: Option<&'a LogHealthInput>,
    pub sessions: Option<&'a [AppRatio]>,
    pub round: Option<&'a Round>,
    pub fallback: Option<&'a FallbackStatus>,
    pub processes: Option<&'a Presence>,
    pub checkpoint: Option<&'a CheckpointInput>,
}

pub fn assess(t: &Thresholds, i: &Inputs<'_>) -> HealthReport {
    let mut components = BTreeMap::new();
    components.insert("log", log(t, i.log));
    components.insert("checkpoint", checkpoint(i.checkpoint));
    components.insert("sessions", sessions(t, i.sessions));
    components.insert("processes", processes(i.processes, i.round, i.log));
    let active = i.fallback.is_some_and(|f| f.active);
    for (name, path) in [
        ("probe_physical", PathKind::Physical),
        ("probe_tunnel", PathKind::Tunnel),
        ("probe_bypass", PathKind::Bypass),
        ("probe_default", PathKind::Default),
    ] {
        components.insert(name, probe(i.round, path, active));
    }
    components.insert("fallback", fallback(i.fallback, i.round));
    let status = components
        .values()
        .map(|c| c.status)
        .max()
        .unwrap_or(Status::Ok);
    HealthReport { status, components }
}

fn log(t: &Thresholds, l: Option<&LogHealthInput>) -> Component {
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
    match l.last_line_age {
        Some(age) if age > t.log_stale => c(
            Status::Degraded,
            format!("no new line for {} s", age.as_secs()),
        ),
        None if l.lines_read == 0 => c(Status::Ok, "tailing; no line yet"),
        _ => c(
            Status::Ok,
            format!(
                "tailing: {} lines read, {} unrecognized{}",
                l.lines_read,
                l.unrecognized,
                l.level.map(|v| format!(", level {v}")).unwrap_or_default()
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

fn sessions(t: &Thresholds, apps: Option<&[AppRatio]>) -> Component {
    let Some(apps) = apps else {
        return c(Status::Ok, "no session window");
    };
    let w = t.window.as_secs();
    let bad: Vec<String> = apps
        .iter()
        .filter(|a| {
            a.ratio.total >= u64::from(t.min_sessions)
                && a.ratio.share().is_some_and(|s| s >= t.zero_byte_ratio)
        })
        .map(|a| {
            format!(
                "{}: {} of {} sessions closed with zero bytes",
                a.app, a.ratio.zero, a.ratio.total
            )
        })
        .collect();
    if bad.is_empty() {
        let total: u64 = apps.iter().map(|a| a.ratio.total).sum();
        let zero: u64 = apps.iter().map(|a| a.ratio.zero).sum();
        c(
            Status::Ok,
            format!("{zero} of {total} sessions zero-byte in the last {w} s"),
        )
    } else {
        c(
            Status::Degraded,
            format!("in the last {w} s: {}", bad.join("; ")),
        )
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

fn probe(round: Option<&Round>, path: PathKind, fallback_active: bool) -> Component {
    let Some(round) = round else {
        return c(Status::Degraded, "no probe round yet");
    };
    let Some(r) = round.results.iter().find(|r| r.path == path) else {
        return c(Status::Degraded, "not probed in the last round");
    };
    let ms = r.duration.as_millis();
    match (path, r.outcome) {
        (PathKind::Bypass, Ok(ip)) => match round.egress(PathKind::Physical) {
            Some(p) if p != ip => c(
                Status::Failing,
                format!("egresses as {ip}, not as the physical path ({p}): the bypass is broken"),
            ),
            _ => c(
                Status::Ok,
                format!(
                    "egresses as {ip} in {ms} ms{}",
                    if fallback_active {
                        " (through the fallback)"
                    } else {
                        ""
                    }
                ),
            ),
        },
        (_, Ok(ip)) => c(Status::Ok, format!("egresses as {ip} in {ms} ms")),
        (PathKind::Tunnel, Err(ProbeError::NoInterface)) => {
            c(Status::Ok, "no tunnel interface: the VPN is disconnected")
        }
        (PathKind::Physical | PathKind::Bypass, Err(e)) => {
            c(Status::Failing, format!("{} after {ms} ms", err_words(e)))
        }
        (_, Err(e)) => c(Status::Degraded, format!("{} after {ms} ms", err_words(e))),
    }
}

fn fallback(f: Option<&FallbackStatus>, round: Option<&Round>) -> Component {
    let Some(f) = f else {
        return c(Status::Ok, "no fallback controller");
    };
    if let Some(a) = &f.last_action
        && a.outcome != ApplyOutcome::Ok
    {
        let what = format!(
            "last {} {}: {}",
            a.action,
            a.outcome,
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
    let broken = round.is_some_and(|r| r.interfaces.tunnel.is_some() && bypass_broken(r).is_some());
    match (f.mode, f.active) {
        (_, true) => c(
            Status::Ok,
            match &f.plan {
                Some(p) => format!(
                    "active ({}): {} leaves via {} gateway {}",
                    f.backend, p.source, p.interface, p.gateway
                ),
                None => format!("active ({})", f.backend),
            },
        ),
        (Mode::Observe, false) if broken => c(
            Status::Degraded,
            "the bypass is broken; mode is observe, so the fallback is not applied",
        ),
        (mode, false) => c(
            Status::Ok,
            format!("inactive (mode {}, backend {})", mode, f.backend),
        ),
    }
}
