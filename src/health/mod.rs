//! Health: a model of the agent's components ([`model`]), the state the agent loop feeds
//! ([`Health`]), its metrics ([`metrics`], rendered from the same report at scrape time), and
//! `GET /health`, `GET /-/ready` ([`http`]). Reading health changes nothing.

pub mod http;
pub mod metrics;
pub mod model;

use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::fallback::FallbackConfig;
use crate::fallback::controller::StatusHandle;
use crate::presence::Presence;
use crate::probe::Round;
use crate::proxy_log::Level;
use crate::sessions::window::SharedWindow;
pub use model::{CheckpointInput, HealthReport, LogHealthInput, Status};

/// `[health]` section of the config.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// No new log line for this long makes the log component degraded.
    pub log_stale_secs: u64,
    /// The least verbose proxy log level that still writes session lines (creation and
    /// destructor lines are `debug`).
    pub log_max_level: Level,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            log_stale_secs: 900,
            log_max_level: Level::Debug,
        }
    }
}

impl HealthConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.log_stale_secs == 0 {
            return Err("health.log_stale_secs = 0: use e.g. 900".into());
        }
        Ok(())
    }
}

/// Whether the agent has done its first probe round and log read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub probe_round: bool,
    pub log_read: bool,
}

#[derive(Default)]
struct Inputs {
    log: Option<LogHealthInput>,
    round: Option<Round>,
    processes: Option<Presence>,
    checkpoint: Option<CheckpointState>,
}

/// The checkpoint's last save attempt.
struct CheckpointState {
    path: String,
    error: Option<String>,
    last_saved: Option<Instant>,
}

/// The agent's health, fed by the agent loop, read by `/health`, `/-/ready` and `/metrics`.
pub struct Health {
    thresholds: model::Thresholds,
    inputs: RwLock<Inputs>,
    sessions: Option<SharedWindow>,
    fallback: Option<StatusHandle>,
}

impl Health {
    /// Its metrics: [`metrics::HealthCollector`].
    pub fn new(cfg: &HealthConfig, fallback: &FallbackConfig) -> Self {
        Health {
            thresholds: model::Thresholds {
                log_stale: Duration::from_secs(cfg.log_stale_secs),
                log_max_level: cfg.log_max_level,
                zero_byte_ratio: fallback.zero_byte_ratio,
                min_sessions: fallback.min_sessions,
                window: Duration::from_secs(fallback.window_secs),
            },
            inputs: RwLock::default(),
            sessions: None,
            fallback: None,
        }
    }

    pub fn with_sessions(mut self, window: SharedWindow) -> Self {
        self.sessions = Some(window);
        self
    }

    pub fn with_fallback(mut self, status: StatusHandle) -> Self {
        self.fallback = Some(status);
        self
    }

    /// After each log read.
    pub fn update_log(&self, input: LogHealthInput) {
        self.inputs.write().expect("health lock").log = Some(input);
    }

    /// After each look at the process table.
    pub fn update_processes(&self, presence: Presence) {
        self.inputs.write().expect("health lock").processes = Some(presence);
    }

    /// After each probe round (and after the fallback controller saw it).
    pub fn update_round(&self, round: Round) {
        self.inputs.write().expect("health lock").round = Some(round);
    }

    /// After each checkpoint save attempt: `Err` carries why it failed.
    pub fn update_checkpoint(&self, path: &std::path::Path, result: Result<(), String>) {
        let now = Instant::now();
        {
            let mut i = self.inputs.write().expect("health lock");
            let last_saved = i.checkpoint.as_ref().and_then(|c| c.last_saved);
            i.checkpoint = Some(CheckpointState {
                path: path.display().to_string(),
                last_saved: if result.is_ok() {
                    Some(now)
                } else {
                    last_saved
                },
                error: result.err(),
            });
        }
    }

    pub fn readiness(&self) -> Readiness {
        let i = self.inputs.read().expect("health lock");
        Readiness {
            ready: i.round.is_some() && i.log.is_some(),
            probe_round: i.round.is_some(),
            log_read: i.log.is_some(),
        }
    }

    /// The report at `now`.
    pub fn report(&self, now: Instant) -> HealthReport {
        let apps = self
            .sessions
            .as_ref()
            .map(|w| w.lock().expect("session window lock").per_app(now));
        let fallback = self
            .fallback
            .as_ref()
            .map(|f| f.read().expect("status lock").clone());
        let i = self.inputs.read().expect("health lock");
        let checkpoint = i.checkpoint.as_ref().map(|c| CheckpointInput {
            path: c.path.clone(),
            error: c.error.clone(),
            last_saved_age: c.last_saved.map(|t| now.saturating_duration_since(t)),
        });
        model::assess(
            &self.thresholds,
            &model::Inputs {
                log: i.log.as_ref(),
                sessions: apps.as_deref(),
                round: i.round.as_ref(),
                fallback: fallback.as_ref(),
                processes: i.processes.as_ref(),
                checkpoint: checkpoint.as_ref(),
            },
        )
    }
}
