//! The periodic side of the agent: who is running, then (when probing) one probe round for
//! the probe metrics, the fallback controller and health.
//!
//! [`RoundLoop`] holds everything one round touches; [`RoundLoop::run`] drives it until `stop`
//! changes. When a round runs is [`Schedule`]'s decision (a heartbeat, route changes from
//! [`crate::netwatch`], log evidence from the tail side, confirmations back to back); the
//! process table is looked at on its own timer (every heartbeat, at most 30 s apart), so a
//! quiet agent wakes rarely.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::schedule::{Followup, Schedule, ScheduleConfig, Trigger};
use crate::fallback::routes::SharedController;
use crate::health::Health;
use crate::netwatch::RouteState;
use crate::presence::{PresenceTracker, ProcessSource};
use crate::probe::{ProbeMetrics, RoundSource, Verdict};
use crate::sessions::window::SharedWindow;

/// What one round reads and updates.
pub struct RoundLoop {
    /// Looked at every round, probing or not.
    pub processes: PresenceTracker<Box<dyn ProcessSource + Send>>,
    /// Probe rounds; `None` runs the loop on the process table alone.
    pub rounds: Option<Arc<dyn RoundSource>>,
    /// Time between rounds when nothing happens (the heartbeat).
    pub interval: Duration,
    /// Start rounds on route, link and address changes.
    pub watch_routes: bool,
    /// Notified by the tail side when the zero-byte share crosses the policy's threshold.
    pub evidence: Arc<Notify>,
    pub probe_metrics: ProbeMetrics,
    /// The sessions verdict the controller weighs with each round.
    pub window: SharedWindow,
    pub controller: SharedController,
    pub health: Arc<Health>,
    /// PIA's and macOS's versions, read each round (see agent/platform.rs).
    pub platform: Option<super::platform::PlatformWatch>,
}

impl RoundLoop {
    /// Runs rounds as the schedule says (the first at once) until `stop` changes.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut presence = tokio::time::interval(self.interval.min(PRESENCE_AT_MOST));
        presence.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let probing = self.rounds.is_some();
        let mut routes = match (probing && self.watch_routes)
            .then(|| crate::netwatch::spawn(crate::netwatch::Options::default()))
        {
            Some(Ok(rx)) => Some(rx),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot watch routing changes; probing on the heartbeat alone (probe.interval_secs)");
                None
            }
            None => None,
        };
        let mut schedule = Schedule::new(
            Instant::now(),
            ScheduleConfig::with_heartbeat(self.interval),
        );
        loop {
            let (due, _) = schedule.next();
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()), if probing => {}
                _ = presence.tick() => {
                    let p = tokio::task::block_in_place(|| self.processes.refresh());
                    self.health.update_processes(p);
                    continue;
                }
                changed = changed(&mut routes) => {
                    match changed {
                        Some(state) => {
                            tracing::info!(routes = ?state.half_routes, default = ?state.default_route, "routes or interfaces changed");
                            schedule.route_changed(Instant::now());
                        }
                        None => routes = None,
                    }
                    continue;
                }
                _ = self.evidence.notified(), if probing => {
                    schedule.log_evidence(Instant::now());
                    continue;
                }
                _ = stop.changed() => break,
            }
            let why = schedule.start(Instant::now());
            let followup = self.round(why).await;
            schedule.finished(Instant::now(), followup);
        }
    }

    /// One probe round; what it asks of the schedule.
    async fn round(&mut self, why: Trigger) -> Followup {
        let Some(rounds) = &self.rounds else {
            return Followup::None;
        };
        if why == Trigger::Heartbeat {
            tracing::debug!(trigger = %why, "probe round");
        } else {
            tracing::info!(trigger = %why, "probe round");
        }
        let round = rounds.round().await;
        // The round's one verdict, read by the metrics, the controller and health.
        let verdict = Verdict::of(&round);
        self.probe_metrics.observe(&round, &verdict);
        let sessions = self
            .window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .verdict(Instant::now());
        let versions = self
            .platform
            .as_ref()
            .map(|p| tokio::task::block_in_place(|| p.read()));
        let confirm = {
            let mut controller = self.controller.lock().await;
            if let Some(v) = versions {
                controller.note_versions(v);
            }
            let decision = controller
                .on_round(Instant::now(), &round, &verdict, sessions)
                .await;
            controller.wants_confirmation(&decision)
        };
        self.health.update_round(round, verdict);
        // Only while a decision the next round could change is pending, or after an action
        // (one more round shows its effect on health and the metrics; the controller's own
        // verification round is not reported there).
        if confirm {
            Followup::Confirm
        } else {
            Followup::None
        }
    }
}

/// The process table is looked at every heartbeat, and at least this often.
const PRESENCE_AT_MOST: Duration = Duration::from_secs(30);

/// The next changed route state; `None` once the watcher is gone (then never again: the
/// caller drops it). Pends forever without a watcher.
async fn changed(routes: &mut Option<watch::Receiver<RouteState>>) -> Option<RouteState> {
    match routes {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().clone()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}
