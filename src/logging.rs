//! The agent's own log (stderr): `--log.level` and `--log.format`, spelled as Prometheus
//! exporters spell them, so a fleet's log shipper parses this agent like the others; and the
//! same two as config keys (`[agent_log]`), for `brew services`, which passes no flags.
//!
//! - level: `--log.level` if given, else `RUST_LOG` (full `tracing` directives, e.g.
//!   `pia_split_tunnel_exporter::fallback=debug`) if set, else `agent_log.level` (`info`); a
//!   reload (SIGHUP) applies a new `agent_log.level` at once ([`apply`]);
//! - format: `--log.format`, else `agent_log.format`: `logfmt` (tracing-logfmt) or `json` (one
//!   object a line, tracing-subscriber); a new format needs a restart (the writer is chosen
//!   once);
//! - colours only in logfmt, only when stderr is a terminal, and never with `NO_COLOR` set
//!   (<https://no-color.org>): under launchd stderr is a file, which must hold plain text.

use std::io::IsTerminal;
use std::sync::OnceLock;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Least severe level written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
}

impl Verbosity {
    fn directive(self) -> &'static str {
        match self {
            Verbosity::Error => "error",
            Verbosity::Warn => "warn",
            Verbosity::Info => "info",
            Verbosity::Debug => "debug",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Logfmt,
    Json,
}

/// The log flags, global: they go before or after the subcommand (`run` is the default one).
#[derive(Args, Debug, Default, Clone)]
pub struct LogFlags {
    /// Least severe level logged [default: RUST_LOG when set, else agent_log.level (info)].
    #[arg(long = "log.level", global = true, value_enum, value_name = "LEVEL")]
    pub level: Option<Verbosity>,
    /// Format of the log lines on stderr [default: agent_log.format (logfmt)].
    #[arg(long = "log.format", global = true, value_enum, value_name = "FORMAT")]
    pub format: Option<Format>,
}

/// `[agent_log]`: the agent's own log (`[log]` is the proxy's), for services that pass no
/// flags (`brew services`); `--log.level` and `--log.format` win over it.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentLogConfig {
    /// Least severe level logged when neither `--log.level` nor `RUST_LOG` is given.
    pub level: Verbosity,
    /// `logfmt` or `json`, when `--log.format` is not given.
    pub format: Format,
}

/// The filter: the flag, else `RUST_LOG`, else the configured level. A `RUST_LOG` that does
/// not parse is reported once on stderr and replaced by the configured level, never a silent
/// default.
fn filter(flag: Option<Verbosity>, rust_log: Option<&str>, configured: Verbosity) -> EnvFilter {
    let level =
        |l: Verbosity| quiet_libraries(EnvFilter::new(l.directive()), l == Verbosity::Debug);
    if let Some(l) = flag {
        return level(l);
    }
    match rust_log {
        Some(v) if !v.trim().is_empty() => match EnvFilter::try_new(v) {
            Ok(f) => {
                let debugging = v.contains("debug") || v.contains("trace") || v.contains("rustls");
                quiet_libraries(f, debugging)
            }
            Err(e) => {
                eprintln!(
                    "RUST_LOG={v:?} is not a log filter ({e}); logging at {}",
                    configured.directive()
                );
                level(configured)
            }
        },
        _ => level(configured),
    }
}

/// Warnings rustls writes about what a client sent (an IP address as server name, a warning
/// alert) are the client's doing: any peer could write one line per handshake. Shown only when
/// debugging.
fn quiet_libraries(filter: EnvFilter, debugging: bool) -> EnvFilter {
    if debugging {
        return filter;
    }
    match "rustls=error".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    }
}

fn rust_log() -> Option<String> {
    std::env::var("RUST_LOG").ok()
}

/// Colours: only for a person at a terminal who did not opt out.
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// What [`apply`] needs to change the level of the subscriber [`init`] installed.
struct Installed {
    flags: LogFlags,
    format: Format,
    filter: reload::Handle<EnvFilter, Registry>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Installs the process's log subscriber; a second call does nothing.
pub fn init(flags: &LogFlags, config: &AgentLogConfig) {
    let format = flags.format.unwrap_or(config.format);
    let (filter, handle) =
        reload::Layer::new(filter(flags.level, rust_log().as_deref(), config.level));
    let colour = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        Format::Logfmt => registry
            .with(
                tracing_logfmt::builder()
                    .with_ansi_color(colour)
                    .layer()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        Format::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if installed.is_ok() {
        let _ = INSTALLED.set(Installed {
            flags: flags.clone(),
            format,
            filter: handle,
        });
    }
}

/// A reloaded config's `[agent_log]`: a new level applies now (unless a flag or `RUST_LOG`
/// sets it); a new format is only said, as it needs a restart.
pub fn apply(config: &AgentLogConfig) {
    let Some(installed) = INSTALLED.get() else {
        return;
    };
    let new = filter(installed.flags.level, rust_log().as_deref(), config.level);
    if let Err(e) = installed.filter.reload(new) {
        tracing::warn!(error = %e, "cannot change the log level");
    }
    let format = installed.flags.format.unwrap_or(config.format);
    if format != installed.format {
        tracing::warn!(
            running = ?installed.format,
            configured = ?format,
            "agent_log.format changes at the next start (restart the service)"
        );
    }
}

/// Stderr as a file that newsyslog rotates (launchd's `StandardErrorPath`): newsyslog renames
/// the file and creates a new one, but launchd opened stderr once, so without this the agent
/// would write on into the archive. [`Reopen::check`] notices that the path names another file
/// (or none) and opens the path again onto stderr (and stdout, when it was the same file).
/// Hand-written because the log crates reopen files they opened themselves, not a descriptor
/// given by the parent.
pub struct Reopen {
    path: std::path::PathBuf,
}

/// (device, inode) of what a descriptor is open on.
fn fd_identity(fd: std::os::fd::RawFd) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: 1 and 2 stay open for the process's life; the borrow is only duplicated.
    let owned = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
        .try_clone_to_owned()
        .ok()?;
    let meta = std::fs::File::from(owned).metadata().ok()?;
    meta.is_file().then(|| (meta.dev(), meta.ino()))
}

/// The path stderr was opened at.
#[cfg(target_os = "linux")]
fn stderr_path() -> Option<std::path::PathBuf> {
    std::fs::read_link("/proc/self/fd/2").ok()
}

/// The path stderr was opened at.
#[cfg(target_os = "macos")]
fn stderr_path() -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: F_GETPATH writes at most MAXPATHLEN (== PATH_MAX) bytes, NUL-terminated.
    let r = unsafe { libc::fcntl(2, libc::F_GETPATH, buf.as_mut_ptr()) };
    if r == -1 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0)?;
    Some(std::ffi::OsStr::from_bytes(&buf[..len]).into())
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn stderr_path() -> Option<std::path::PathBuf> {
    None
}

impl Reopen {
    /// `Some` when stderr is a regular file whose path can be known.
    pub fn detect() -> Option<Reopen> {
        fd_identity(2)?;
        stderr_path().map(|path| Reopen { path })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Opens the path again onto stderr, with `open` (which decides what it may open: the
    /// daemon passes the tail's rules for a file in a folder others may write), when it no
    /// longer names the file stderr is on; `Ok(true)` when it did.
    pub fn check(
        &self,
        open: impl FnOnce(&std::path::Path) -> std::io::Result<std::fs::File>,
    ) -> std::io::Result<bool> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let current = fd_identity(2);
        // A link at the path is not the file stderr is on, whatever it points at.
        let at_path = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if current.is_some() && at_path == current {
            return Ok(false);
        }
        let file = open(&self.path)?;
        let same_stdout = current.is_some() && fd_identity(1) == current;
        for fd in [Some(2), same_stdout.then_some(1)].into_iter().flatten() {
            // SAFETY: dup2 onto a standard descriptor; `file` stays open until after the call.
            if unsafe { libc::dup2(file.as_raw_fd(), fd) } == -1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(use_colour(true, None));
        assert!(!use_colour(false, None));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, Some(OsStr::new("1"))));
        // The convention: an empty NO_COLOR is as if unset.
        assert!(use_colour(true, Some(OsStr::new(""))));
    }

    #[test]
    fn the_flag_wins_over_rust_log_which_wins_over_the_config() {
        let warn = filter(Some(Verbosity::Warn), Some("debug"), Verbosity::Error).to_string();
        assert!(warn.split(',').any(|d| d == "warn"), "{warn}");
        // What a TLS client sends (an IP as server name) is not worth a warning line.
        assert!(warn.split(',').any(|d| d == "rustls=error"), "{warn}");
        assert_eq!(
            filter(Some(Verbosity::Debug), None, Verbosity::Error).to_string(),
            "debug"
        );
        let env = filter(
            None,
            Some("pia_split_tunnel_exporter=debug"),
            Verbosity::Error,
        );
        assert_eq!(env.to_string(), "pia_split_tunnel_exporter=debug");
        // Neither: the config's level; a RUST_LOG that does not parse falls back to it too.
        assert_eq!(filter(None, None, Verbosity::Debug).to_string(), "debug");
        let error = filter(None, Some("=[nonsense"), Verbosity::Error).to_string();
        assert!(error.split(',').any(|d| d == "error"), "{error}");
    }

    #[test]
    fn agent_log_keys_are_lowercase_words() {
        let c: AgentLogConfig = toml::from_str("level = \"debug\"\nformat = \"json\"").unwrap();
        assert_eq!((c.level, c.format), (Verbosity::Debug, Format::Json));
        assert_eq!(AgentLogConfig::default().level, Verbosity::Info);
        let e = toml::from_str::<AgentLogConfig>("level = \"loud\"").unwrap_err();
        assert!(e.to_string().contains("unknown variant `loud`"), "{e}");
    }
}

/// Caps how often one warning site writes: at most [`Throttle::BURST`] lines per
/// [`Throttle::WINDOW`]; the first line written after a quiet spell carries `suppressed`, the
/// number left out. For the sites that untrusted input reaches (a rename storm of someone
/// else's files, a flood of connections), so the agent's own log cannot be flooded through
/// them. Use [`warn_throttled!`](crate::logging::warn_throttled).
pub struct Throttle {
    state: std::sync::Mutex<ThrottleState>,
}

#[derive(Clone, Copy)]
struct ThrottleState {
    window_start: Option<std::time::Instant>,
    written: u32,
    suppressed: u64,
}

impl Throttle {
    pub const BURST: u32 = 10;
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

    pub const fn new() -> Throttle {
        Throttle {
            state: std::sync::Mutex::new(ThrottleState {
                window_start: None,
                written: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(suppressed since the last line written)` when this line may be written.
    pub fn allow(&self, now: std::time::Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.window_start
            .is_none_or(|t| now.saturating_duration_since(t) >= Self::WINDOW)
        {
            s.window_start = Some(now);
            s.written = 0;
        }
        if s.written >= Self::BURST {
            s.suppressed += 1;
            return None;
        }
        s.written += 1;
        Some(std::mem::take(&mut s.suppressed))
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

/// `tracing::warn!` through a [`Throttle`] of its own call site; adds `suppressed = N`.
macro_rules! warn_throttled {
    ($($arg:tt)+) => {{
        static THROTTLE: $crate::logging::Throttle = $crate::logging::Throttle::new();
        if let Some(suppressed) = THROTTLE.allow(::std::time::Instant::now()) {
            ::tracing::warn!(suppressed, $($arg)+);
        }
    }};
}
pub(crate) use warn_throttled;

#[cfg(test)]
mod throttle_tests {
    use super::Throttle;
    use std::time::{Duration, Instant};

    #[test]
    fn a_burst_then_silence_then_the_count_of_what_was_left_out() {
        let t = Throttle::new();
        let start = Instant::now();
        let written: Vec<_> = (0..25).filter_map(|_| t.allow(start)).collect();
        assert_eq!(written, vec![0; Throttle::BURST as usize]);
        let later = start + Throttle::WINDOW + Duration::from_millis(1);
        assert_eq!(t.allow(later), Some(15));
        assert_eq!(t.allow(later), Some(0));
    }
}
