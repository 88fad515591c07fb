//! The log stage: follows the proxy's two logs into the [`Pipeline`], and keeps the checkpoint
//! that lets a restart resume where reading stopped.
//!
//! One task owns the logs (the debug log and the error-level one): it reads batches of complete
//! lines from the tailers, feeds them to the pipeline under its lock, passes closed sessions to
//! the session window, and saves the cursors and the pipeline as one atomic checkpoint, so the
//! offsets and the state they produced can never disagree, even after `kill -9`. What happens
//! is reported through [`IngestEvents`]; the stage holds no health or metric handles.
//!
//! [`Pipeline`]: crate::pipeline::Pipeline

pub mod checkpoint;
mod logs;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::health::LogHealthInput;
use crate::pipeline::Limits;
pub use logs::Ingest;

/// What the log stage tells the rest of the agent, as it happens.
pub trait IngestEvents: Send + Sync {
    /// After each poll of a log, with or without new lines: how the log looks now.
    fn emit_log_polled(&self, status: LogHealthInput);
    /// The checkpoint at `path` was written.
    fn emit_checkpoint_saved(&self, path: &Path);
    /// Writing the checkpoint at `path` failed; it is retried a second later.
    fn emit_checkpoint_save_failed(&self, path: &Path, error: String);
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
    /// The pipeline's caps.
    pub fn limits(&self) -> Limits {
        Limits {
            max_open_sessions: self.max_open_sessions,
            max_apps: self.max_apps,
        }
    }

    /// Checks values serde cannot; each message names the key and what to do.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_open_sessions == 0 {
            return Err("log.max_open_sessions must be at least 1 (default 65536)".into());
        }
        if self.max_apps == 0 {
            return Err("log.max_apps must be at least 1 (default 64)".into());
        }
        if self.max_line_bytes < 1024 {
            return Err("log.max_line_bytes must be at least 1024 (default 1048576)".into());
        }
        if self.path.as_os_str().is_empty() {
            return Err("log.path must name the proxy's log file".into());
        }
        Ok(())
    }
}
