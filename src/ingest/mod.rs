//! The log stage: follows the proxy's two logs into the [`LogState`], and keeps the checkpoint
//! that lets a restart resume where reading stopped.
//!
//! One task owns the logs (the debug log and the error-level one): it reads batches of complete
//! lines from the tailers, feeds them to the pipeline under its lock, passes closed sessions to
//! the session window, and saves the cursors and the pipeline as one atomic checkpoint, so the
//! offsets and the state they produced can never disagree, even after `kill -9`. What happens
//! is reported through [`IngestEvents`]; the stage holds no health or metric handles.
//!
//! [`LogState`]: crate::log_state::LogState

pub mod checkpoint;
mod logs;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::log_state::Limits;
use crate::proxy_log::Level;
pub use logs::Ingest;

/// How a log looks after a poll: what ingest reports to the rest of the agent (health
/// judges it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogPoll {
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

/// What the log stage tells the rest of the agent, as it happens.
pub trait IngestEvents: Send + Sync {
    /// After each poll of a log, with or without new lines: how the log looks now.
    fn emit_log_polled(&self, status: LogPoll);
    /// The checkpoint at `path` was written.
    fn emit_checkpoint_saved(&self, path: &Path);
    /// Writing the checkpoint at `path` failed; it is retried a second later.
    fn emit_checkpoint_save_failed(&self, path: &Path, error: String);
    /// Sessions closed; `window` is the session window's verdict now.
    fn emit_sessions_closed(&self, window: &crate::sessions::window::SessionsVerdict) {
        let _ = window;
    }
}

/// `[log]`: where the proxy writes and how much state the agent keeps.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub path: PathBuf,
    /// Where the proxy logs (errors only) while PIA's debug logging is off; empty: not watched.
    pub error_path: PathBuf,
    pub checkpoint: PathBuf,
    pub max_open_sessions: usize,
    pub max_apps: usize,
    pub max_line_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        let limits = Limits::default();
        LogConfig {
            path: PathBuf::from(
                "/Library/Application Support/com.privateinternetaccess.vpn/transparent_proxy.log",
            ),
            error_path: PathBuf::from("/tmp/STProxy.log"),
            checkpoint: PathBuf::from("/var/db/pia-split-tunnel-exporter/checkpoint.json"),
            max_open_sessions: limits.max_open_sessions,
            max_apps: limits.max_apps,
            max_line_bytes: 1 << 20,
        }
    }
}

impl LogConfig {
    /// The log state's caps.
    pub fn limits(&self) -> Limits {
        Limits {
            max_open_sessions: self.max_open_sessions,
            max_apps: self.max_apps,
        }
    }

    /// Checks values serde cannot; each message names the key and what to do.
    pub fn validate(&self) -> Result<(), String> {
        use crate::check::{in_range, same_file};
        // Bounds of memory: an open session, an app's series and a line buffer each cost RAM.
        in_range(
            "log.max_open_sessions",
            self.max_open_sessions,
            1..=1 << 20,
            "65536",
        )?;
        in_range("log.max_apps", self.max_apps, 1..=1024, "64")?;
        in_range(
            "log.max_line_bytes",
            self.max_line_bytes,
            1024..=16 << 20,
            "1048576",
        )?;
        if self.path.as_os_str().is_empty() {
            return Err("log.path must name the proxy's log file".into());
        }
        if !self.error_path.as_os_str().is_empty() && same_file(&self.error_path, &self.path) {
            return Err(format!(
                "log.error_path = {:?} is log.path: every line would count twice; use the \
                 proxy's error-level log (/tmp/STProxy.log) or \"\" to ignore it",
                self.error_path
            ));
        }
        for (key, p) in [
            ("log.path", &self.path),
            ("log.error_path", &self.error_path),
        ] {
            if same_file(p, &self.checkpoint) {
                return Err(format!(
                    "log.checkpoint = {:?} is {key}: the agent would read its own state",
                    self.checkpoint
                ));
            }
        }
        Ok(())
    }
}
