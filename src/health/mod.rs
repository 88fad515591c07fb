//! Health: a model of the agent's components ([`model`]), the state the agent loop feeds
//! ([`Health`]), its metrics ([`metrics`], rendered from the same report at scrape time), and
//! `GET /health`, `GET /-/ready` ([`routes`]). Reading health changes nothing.

pub mod metrics;
pub mod model;
pub mod routes;

use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::fallback::controller::StatusHandle;
use crate::presence::Presence;
use crate::probe::{Round, Verdict};
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
        crate::check::in_range(
            "health.log_stale_secs",
            self.log_stale_secs,
            1..=604_800,
            "900",
        )
    }
}

/// Whether the agent has read the log and, when probing, done its first probe round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// `None` when probing is off: readiness then needs the log only.
    pub probe_round: Option<bool>,
    pub log_read: bool,
}

/// The latest of each input the agent fed, owned; `report` lends them to the model as
/// `model::Inputs`.
#[derive(Default)]
struct Latest {
    log: Option<LogHealthInput>,
    round: Option<(Round, Verdict)>,
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
    thresholds: model::HealthThresholds,
    /// `probe.enabled`.
    probing: bool,
    inputs: RwLock<Latest>,
    sessions: Option<SharedWindow>,
    fallback: Option<StatusHandle>,
}

impl Health {
    /// Its metrics: [`metrics::HealthCollector`].
    pub fn new(cfg: &HealthConfig) -> Self {
        Health {
            thresholds: model::HealthThresholds {
                log_stale: Duration::from_secs(cfg.log_stale_secs),
                log_max_level: cfg.log_max_level,
            },
            probing: true,
            inputs: RwLock::default(),
            sessions: None,
            fallback: None,
        }
    }

    /// Log-only mode (`probe.enabled = false`): no probe components, readiness without a round.
    pub fn without_probes(mut self) -> Self {
        self.probing = false;
        self
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

    /// The last probe round and its verdict, for the status page.
    pub fn last_round(&self) -> Option<(Round, Verdict)> {
        self.inputs.read().expect("health lock").round.clone()
    }

    /// After each probe round (and after the fallback controller saw it), with its verdict.
    pub fn update_round(&self, round: Round, verdict: Verdict) {
        self.inputs.write().expect("health lock").round = Some((round, verdict));
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
        let probe_round = self.probing.then_some(i.round.is_some());
        Readiness {
            ready: i.log.is_some() && probe_round != Some(false),
            probe_round,
            log_read: i.log.is_some(),
        }
    }

    /// The report at `now`.
    pub fn report(&self, now: Instant) -> HealthReport {
        let sessions = self.sessions.as_ref().map(|w| {
            let w = w.lock().unwrap_or_else(|e| e.into_inner());
            (w.per_app(now), w.verdict(now))
        });
        let fallback = self
            .fallback
            .as_ref()
            .map(|f| f.read().expect("status lock").clone());
        {
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
                    sessions: sessions.as_ref().map(|(a, v)| (a.as_slice(), v.clone())),
                    probing: self.probing,
                    round: i.round.as_ref().map(|(r, v)| (r, v)),
                    fallback: fallback.as_ref(),
                    processes: i.processes.as_ref(),
                    checkpoint: checkpoint.as_ref(),
                },
            )
        }
    }
}
