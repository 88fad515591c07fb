//! Health: a model of the agent's components ([`model`]), the state the agent loop feeds
//! ([`Health`]), its metrics ([`metrics`], rendered from the same report at scrape time), and
//! `GET /health`, `GET /-/ready` ([`routes`]). Reading health changes nothing.

pub mod metrics;
pub mod model;
pub mod routes;

use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::fallback::controller::StatusHandle;
use crate::presence::Presence;
use crate::probe::{ProbeState, Round, Verdict};
use crate::proxy_log::Level;
use crate::sessions::window::{SessionsState, SharedWindow};
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
    /// The round verdict's state and when it last changed (the status page's "since").
    verdict_since: Option<(ProbeState, SystemTime)>,
    /// The same for the sessions verdict, as of the last closes seen.
    sessions_since: Option<(SessionsState, SystemTime)>,
}

/// Keeps `value` with the time it changed: `at` only when it differs from the one kept.
fn note_change<T: PartialEq>(slot: &mut Option<(T, SystemTime)>, value: T, at: SystemTime) {
    if slot.as_ref().is_none_or(|(kept, _)| *kept != value) {
        *slot = Some((value, at));
    }
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
        self.update_round_at(round, verdict, SystemTime::now());
    }

    /// [`Health::update_round`] with the wall-clock time of the round (tests pass their own).
    pub fn update_round_at(&self, round: Round, verdict: Verdict, at: SystemTime) {
        let mut i = self.inputs.write().expect("health lock");
        note_change(&mut i.verdict_since, verdict.state, at);
        i.round = Some((round, verdict));
    }

    /// The round verdict's state and since when it has held.
    pub fn verdict_since(&self) -> Option<(ProbeState, SystemTime)> {
        self.inputs.read().expect("health lock").verdict_since
    }

    /// After each batch of closed sessions, with the window's state then.
    pub fn update_sessions_state(&self, state: SessionsState, at: SystemTime) {
        note_change(
            &mut self.inputs.write().expect("health lock").sessions_since,
            state,
            at,
        );
    }

    /// The sessions verdict's state, as of the last closes, and since when it has held.
    pub fn sessions_since(&self) -> Option<(SessionsState, SystemTime)> {
        self.inputs.read().expect("health lock").sessions_since
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
