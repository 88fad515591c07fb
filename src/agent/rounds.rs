//! The periodic side of the agent: who is running, then (when probing) one probe round for
//! the probe metrics, the fallback controller and health.
//!
//! [`RoundLoop`] holds everything one round touches; [`RoundLoop::run`] drives it on a fixed
//! interval until `stop` changes. What triggers a round is the loop's business alone, so its
//! scheduling can change without touching the wiring.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::fallback::http::SharedController;
use crate::health::Health;
use crate::presence::{PresenceTracker, ProcessSource};
use crate::probe::{ProbeMetrics, RoundSource};
use crate::sessions::window::SharedWindow;

/// What one round reads and updates.
pub struct RoundLoop {
    /// Looked at every round, probing or not.
    pub processes: PresenceTracker<Box<dyn ProcessSource + Send>>,
    /// Probe rounds; `None` runs the loop on the process table alone.
    pub rounds: Option<Arc<dyn RoundSource>>,
    /// Time between rounds.
    pub interval: Duration,
    pub probe_metrics: ProbeMetrics,
    /// The zero-byte share the controller weighs with each round.
    pub window: SharedWindow,
    pub controller: SharedController,
    pub health: Arc<Health>,
}

impl RoundLoop {
    /// Runs a round every `interval` (the first at once) until `stop` changes.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            self.round().await;
        }
    }

    /// The process table, then one probe round when probing.
    async fn round(&mut self) {
        let presence = tokio::task::block_in_place(|| self.processes.refresh());
        self.health.update_processes(presence);
        let Some(rounds) = &self.rounds else { return };
        let round = rounds.round().await;
        self.probe_metrics.observe(&round);
        let ratio = self
            .window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ratio(Instant::now());
        self.controller
            .lock()
            .await
            .on_round(Instant::now(), &round, ratio)
            .await;
        self.health.update_round(round);
    }
}
