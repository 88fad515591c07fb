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

use crate::log_state::{Limits, ReadStats};
use crate::proxy_log::Level;
pub use logs::Ingest;

/// What the log stage tells the rest of the agent, as it happens.
pub trait IngestEvents: Send + Sync {
    /// After each poll of a log, with or without new lines: how the logs look now.
    fn emit_log_polled(&self, status: LogStatus);
    /// The checkpoint at `path` was written.
    fn emit_checkpoint_saved(&self, path: &Path);
    /// Writing the checkpoint at `path` failed; it is retried a second later.
    fn emit_checkpoint_save_failed(&self, path: &Path, error: String);
    /// Sessions closed; `window` is the session window's verdict now.
    fn emit_sessions_closed(&self, window: &crate::sessions::window::SessionsVerdict) {
        let _ = window;
    }
}

/// How the logs look after a poll, as the log side knows them (health judges it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogStatus {
    /// Everything read so far, both logs together.
    pub read: ReadStats,
    /// Since the last line of the log just polled; `None` before its first line.
    pub last_line_age: Option<Duration>,
    /// The level the proxy logs at, as far as the log shows it.
    pub level: Option<Level>,
    /// The proxy's last `isConnected:` value.
    pub proxy_connected: Option<bool>,
    pub errors: LogErrors,
}

/// Why each of the proxy's logs cannot be read now (or was refused), if it cannot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogErrors {
    /// The debug log (`log.path`).
    pub debug: Option<String>,
    /// The error log (`log.error_path`).
    pub error: Option<String>,
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
