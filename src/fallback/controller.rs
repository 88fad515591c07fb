//! Carries out the policy's decisions on a backend: apply, verify with a fresh probe, roll back
//! and back off on failure; reconciles at start and cleans up at shutdown.
//!
//! Evidence before action: whatever asks for the repair (the periodic policy, a manual call,
//! an Alertmanager alert), it is applied only when a probe round of this agent, run for the
//! purpose (or the round the policy just judged), has the verdict "bypass broken", which
//! implies the physical path works. Without probes (`probe.enabled = false`) nothing is ever
//! applied; a revert is always allowed.

use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::metrics::{AlertResult, FallbackMetrics};
use super::policy::{Action, ApplyOutcome, Decision, DecisionKind, Policy, Reason};
use super::recheck::{
    LIFT_WINDOW, RecheckCause, RecheckRecord, RecheckResult, RecheckStatus, RetireReason,
    Retirement, Versions,
};
use super::state::{Memory, Record};
use super::{Backend, BackendError, BackendKind, FallbackConfig, Mode, OnShutdown, OnStart, Plan};
use crate::probe::{ProbeState, Round, RoundSource, Verdict};
use crate::sessions::window::{Ratio, SessionsVerdict};

#[derive(Clone, Debug, Serialize)]
pub struct DecisionRecord {
    pub decision: DecisionKind,
    pub reason: Reason,
    pub at_unix: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ActionRecord {
    pub action: Action,
    pub outcome: ApplyOutcome,
    /// The backend's error or why verification failed.
    pub error: Option<String>,
    pub at_unix: f64,
}

/// What the fallback is doing, for `/health`, `fallback status` and the HTTP answers.
#[derive(Clone, Debug, Serialize)]
pub struct FallbackStatus {
    pub mode: Mode,
    pub backend: BackendKind,
    pub active: bool,
    pub plan: Option<Plan>,
    pub last_decision: Option<DecisionRecord>,
    pub last_action: Option<ActionRecord>,
    pub consecutive_failures: u32,
    /// Whether the fallback is still needed: a recheck due, the last one, a retirement.
    pub recheck: RecheckStatus,
}

pub type StatusHandle = Arc<RwLock<FallbackStatus>>;

/// Why a manual or alert-triggered action did not run.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("fallback.mode is {0}: alerts are acted on only in auto mode")]
    NotAuto(Mode),
    #[error("not now: {0}")]
    Gated(Reason),
    #[error("cannot build rules: {0}")]
    NoPlan(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("applied, but the probe round after it says {0}: rolled back")]
    RolledBack(String),
    #[error("this agent's own probe round does not show the bypass broken ({0}): nothing applied")]
    NotBroken(String),
    #[error(
        "probe.enabled = false: the agent cannot check the bypass itself, so it applies nothing"
    )]
    NoProbe,
    #[error("the fallback is not in place: there is nothing to recheck")]
    NotActive,
}

pub struct Controller {
    cfg: FallbackConfig,
    policy: Policy,
    backend: Box<dyn Backend>,
    /// Fresh probe rounds to verify an apply; none when probing is off.
    rounds: Option<Arc<dyn RoundSource>>,
    metrics: FallbackMetrics,
    status: StatusHandle,
    /// The decision last written at info: the same one again, round after round, is debug.
    logged: Option<(DecisionKind, Reason)>,
    /// Where the recheck's memory is kept (the backend's state file); none without one.
    record: Option<Record>,
    memory: Memory,
    /// The versions the system reported last ([`Controller::note_versions`]).
    versions: Option<Versions>,
}

/// The decision in words for the log line ("would apply the repair; mode is observe").
fn decision_words(d: &Decision, mode: Mode, acting: bool) -> String {
    let verb = match d {
        Decision::None(Reason::AwaitingConfirmation) => {
            return "waiting for the next round to confirm".into();
        }
        Decision::None(_) => return "nothing to do".into(),
        Decision::Apply(..) => ("apply", "applying"),
        Decision::Reload(..) => ("reload", "reloading"),
        Decision::Revert(_) => ("remove", "removing"),
    };
    if acting {
        format!("{} the repair", verb.1)
    } else {
        format!("would {} the repair; mode is {mode}", verb.0)
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A fresh round of this agent's own probes and its verdict; `None` without probes. (A free
/// function: it borrows only the round source, which is `Sync`, across the await.)
async fn fresh_round(rounds: &Option<Arc<dyn RoundSource>>) -> Option<(Round, Verdict)> {
    let round = rounds.as_ref()?.round().await;
    let verdict = Verdict::of(&round);
    Some((round, verdict))
}

impl Controller {
    pub fn new(
        cfg: &FallbackConfig,
        backend: Box<dyn Backend>,
        rounds: Arc<dyn RoundSource>,
        metrics: FallbackMetrics,
    ) -> Self {
        Self::build(cfg, backend, Some(rounds), metrics)
    }

    /// Without probes: reverts and reports, never applies.
    pub fn without_probes(
        cfg: &FallbackConfig,
        backend: Box<dyn Backend>,
        metrics: FallbackMetrics,
    ) -> Self {
        Self::build(cfg, backend, None, metrics)
    }

    fn build(
        cfg: &FallbackConfig,
        backend: Box<dyn Backend>,
        rounds: Option<Arc<dyn RoundSource>>,
        metrics: FallbackMetrics,
    ) -> Self {
        metrics.set_mode(cfg.mode);
        metrics.set_backend(backend.kind());
        metrics.set_active(false);
        let status = Arc::new(RwLock::new(FallbackStatus {
            mode: cfg.mode,
            backend: backend.kind(),
            active: false,
            plan: None,
            last_decision: None,
            last_action: None,
            consecutive_failures: 0,
            recheck: RecheckStatus::default(),
        }));
        let record = backend.record();
        let memory = record.as_ref().map(Record::memory).unwrap_or_default();
        status.write().expect("status lock").recheck.retired = memory.retired.clone();
        Controller {
            cfg: cfg.clone(),
            policy: Policy::new(cfg),
            backend,
            rounds,
            metrics,
            status,
            logged: None,
            record,
            memory,
            versions: None,
        }
    }

    /// A shared view of the status, updated after every round and action.
    pub fn status_handle(&self) -> StatusHandle {
        self.status.clone()
    }

    /// Whether the next round should follow this one's `decision` at once (see
    /// [`policy::wants_confirmation`](super::policy::wants_confirmation)).
    pub fn wants_confirmation(&self, decision: &Decision) -> bool {
        super::policy::wants_confirmation(self.cfg.mode, decision)
    }

    pub fn status(&self) -> FallbackStatus {
        self.status.read().expect("status lock").clone()
    }

    /// At start: adopt or remove what a previous run left installed (`on_start`).
    pub fn reconcile(&mut self) -> Result<(), BackendError> {
        let loaded = self.backend.status()?;
        if loaded.is_empty() {
            return Ok(());
        }
        match self.cfg.on_start {
            OnStart::Adopt => {
                tracing::info!(rules = ?loaded.rules, "fallback: adopting what a previous run left installed");
                self.policy.adopt();
            }
            OnStart::Remove => {
                tracing::info!(rules = ?loaded.rules, "fallback: removing what a previous run left installed");
                self.backend.revert()?;
            }
        }
        self.publish();
        Ok(())
    }

    /// At shutdown: leave or remove the fallback (`on_shutdown`).
    pub fn shutdown(&mut self) -> Result<(), BackendError> {
        if self.cfg.on_shutdown == OnShutdown::Keep {
            return Ok(());
        }
        if self.policy.active() || !self.backend.status()?.is_empty() {
            tracing::info!("fallback: removing at shutdown (on_shutdown = \"remove\")");
            self.backend.revert()?;
            self.policy
                .record(Instant::now(), Action::Revert, ApplyOutcome::Ok, None);
            self.publish();
        }
        Ok(())
    }

    /// One probe round and its verdict: decide, and in `auto` act. Returns the decision.
    pub async fn on_round(
        &mut self,
        now: Instant,
        round: &Round,
        verdict: &Verdict,
        sessions: SessionsVerdict,
    ) -> Decision {
        let ratio = sessions.ratio;
        let decision = if self.cfg.mode == Mode::Off {
            Decision::None(Reason::ModeOff)
        } else {
            self.policy.evaluate(now, round, verdict, sessions)
        };
        self.note_decision(&decision, ratio);
        if self.cfg.mode == Mode::Auto {
            let _ = self.execute(now, &decision).await;
        }
        self.recheck_if_due(now, &decision).await;
        self.publish();
        decision
    }

    /// The versions the system reports now (read each probe round). While the fallback is in
    /// place, a change from those it was last found needed under makes a recheck due; it runs
    /// with the next round ([`Controller::on_round`]) in `auto`, and is only reported in
    /// `observe`.
    pub fn note_versions(&mut self, versions: Versions) {
        if let Some(retired) = &self.memory.retired
            && self.versions.is_none()
            && versions.changed_since(&retired.versions).is_none()
        {
            // Retired under these versions by an earlier run: its sessions are still stale.
            self.policy.retired_before();
        }
        if self.policy.active() && self.memory.needed_under.is_none() {
            // Adopted, or applied before the versions were known: they are the baseline.
            self.remember(Memory {
                needed_under: Some(versions.clone()),
                retired: None,
            });
        }
        self.versions = Some(versions);
    }

    /// What changed since the fallback was last found needed, while it is in place.
    fn recheck_due(&self) -> Option<String> {
        if !self.policy.active() {
            return None;
        }
        let before = self.memory.needed_under.as_ref()?;
        self.versions.as_ref()?.changed_since(before)
    }

    /// After a round's decision: a due recheck runs in `auto` when the gates allow it, and is
    /// reported (health, `/`, the log) otherwise.
    async fn recheck_if_due(&mut self, now: Instant, decision: &Decision) {
        let Some(change) = self.recheck_due() else {
            self.set_due(None);
            return;
        };
        let held = match (self.cfg.mode, decision) {
            (Mode::Off, _) => return self.set_due(None),
            (Mode::Observe, _) => Some(
                "mode is observe: nothing is lifted; POST /fallback/recheck checks now".to_owned(),
            ),
            // Only from a round where the repair does its job (not during an action, a tunnel
            // going down, or a still-broken bypass the policy is confirming).
            (Mode::Auto, d) if *d != Decision::None(Reason::Active) => Some(format!(
                "waiting for a quiet round (this one: {})",
                d.reason()
            )),
            (Mode::Auto, _) => self
                .policy
                .may_act(now)
                .err()
                .map(|r| format!("not now: {r}")),
        };
        match held {
            Some(why) => self.set_due(Some(format!("{change}; {why}"))),
            None => {
                self.set_due(None);
                tracing::info!(change = %change, "fallback: versions changed; checking whether the rules are still needed");
                let _ = self.recheck(now, RecheckCause::VersionChanged).await;
            }
        }
    }

    /// A due recheck, logged once when it becomes due (or its reason changes).
    fn set_due(&self, due: Option<String>) {
        self.metrics.set_recheck_due(due.is_some());
        let mut s = self.status.write().expect("status lock");
        if due.is_some() && s.recheck.due != due {
            tracing::info!(
                due = due.as_deref().unwrap_or(""),
                "fallback: a recheck is due"
            );
        }
        s.recheck.due = due;
    }

    /// `POST /fallback/recheck`, or a version change in `auto`: lifts the
    /// rules for one probe round of this agent's own (at most [`LIFT_WINDOW`]); when it shows
    /// the bypass egressing as the physical path they stay off (the fallback retired itself),
    /// otherwise they are put back at once. A request to recheck is never evidence.
    pub async fn recheck(
        &mut self,
        now: Instant,
        cause: RecheckCause,
    ) -> Result<RecheckRecord, ControlError> {
        let result = self.try_recheck(now, cause).await;
        if let Ok(r) = &result {
            self.metrics.recheck(r.result, r.lifted_seconds);
            self.status.write().expect("status lock").recheck.last = Some(r.clone());
        }
        self.publish();
        result
    }

    async fn try_recheck(
        &mut self,
        now: Instant,
        cause: RecheckCause,
    ) -> Result<RecheckRecord, ControlError> {
        if !self.policy.active() {
            return Err(ControlError::NotActive);
        }
        let Some(rounds) = self.rounds.clone() else {
            return Err(ControlError::NoProbe);
        };
        let plan = match self.policy.installed_plan() {
            Some(p) => p.clone(),
            // Adopted from an earlier run: what to put back is rendered from today's facts.
            None => {
                let round = rounds.round().await;
                Plan::from_interfaces(&round.interfaces, &self.cfg)
                    .map_err(|e| ControlError::NoPlan(e.to_string()))?
            }
        };
        let versions = self.versions.clone().unwrap_or_default();
        let lifted_at = Instant::now();
        if let Err(e) = self.backend.revert() {
            tracing::error!(error = %e, "fallback: recheck: cannot lift the rules");
            self.metrics.recheck(RecheckResult::Failed, 0.0);
            self.finish(
                now,
                Action::Revert,
                ApplyOutcome::Failed,
                Some(e.to_string()),
                None,
            );
            return Err(e.into());
        }
        // Bounded: a broken bypass is a black hole, and the rules must not stay off long.
        let verdict = tokio::time::timeout_at((lifted_at + LIFT_WINDOW).into(), rounds.round())
            .await
            .map(|r| Verdict::of(&r));
        let record = |result, lifted: Instant, detail: String| RecheckRecord {
            cause,
            result,
            lifted_seconds: lifted.elapsed().as_secs_f64(),
            detail,
            versions: versions.clone(),
            at_unix: unix_now(),
        };
        match verdict {
            Ok(v) if v.is(ProbeState::BypassWorking) => {
                let r = record(RecheckResult::Retired, lifted_at, v.text);
                self.retire(now, &r);
                Ok(r)
            }
            other => {
                let detail = match other {
                    Ok(v) => v.text,
                    Err(_) => format!(
                        "no round showed the bypass working within {} ms",
                        LIFT_WINDOW.as_millis()
                    ),
                };
                self.restore(now, &plan, versions.clone(), lifted_at, &detail)
                    .map(|result| record(result, lifted_at, detail))
            }
        }
    }

    /// The bypass works without the rules: they stay off, and it is said everywhere.
    fn retire(&mut self, now: Instant, r: &RecheckRecord) {
        self.policy.retire(now);
        tracing::info!(cause = %r.cause, fixed_by = %r.versions.describe(),
            lifted_seconds = r.lifted_seconds, round = %r.detail,
            "fallback: retired: the bypass works without the rules, so they stay off");
        self.remember(Memory {
            needed_under: None,
            retired: Some(Retirement {
                reason: RetireReason::BypassWorksWithout,
                versions: r.versions.clone(),
                at_unix: r.at_unix as u64,
            }),
        });
    }

    /// The bypass is still broken without the rules: they go back at once.
    fn restore(
        &mut self,
        now: Instant,
        plan: &Plan,
        versions: Versions,
        lifted_at: Instant,
        detail: &str,
    ) -> Result<RecheckResult, ControlError> {
        match self.backend.apply(plan) {
            Ok(()) => {
                self.policy.rechecked(now);
                tracing::info!(lifted_seconds = lifted_at.elapsed().as_secs_f64(), round = %detail,
                    versions = %versions.describe(),
                    "fallback: recheck: the bypass is still broken without the rules; they are back");
                self.remember(Memory {
                    needed_under: Some(versions),
                    retired: None,
                });
                Ok(RecheckResult::StillNeeded)
            }
            Err(e) => {
                tracing::error!(error = %e, "fallback: recheck: cannot put the rules back");
                self.metrics
                    .recheck(RecheckResult::Failed, lifted_at.elapsed().as_secs_f64());
                self.finish(
                    now,
                    Action::Apply,
                    ApplyOutcome::Failed,
                    Some(e.to_string()),
                    None,
                );
                Err(e.into())
            }
        }
    }

    /// `POST /fallback/apply`, `fallback apply`: in any mode, outside cooldown and cap, and
    /// only when a fresh probe round shows the bypass broken.
    pub async fn manual_apply(&mut self, now: Instant) -> Result<Plan, ControlError> {
        self.apply_now(now, Reason::Manual).await
    }

    /// `POST /fallback/revert`, `fallback revert`: in any mode, always allowed.
    pub fn manual_revert(&mut self, now: Instant) -> Result<(), ControlError> {
        let d = Decision::Revert(Reason::Manual);
        self.note_decision(&d, Ratio::default());
        let r = self.revert(now);
        self.publish();
        r.map_err(ControlError::from)
    }

    /// A firing Alertmanager alert: acts only in `auto`, under cooldown, cap and back-off, and
    /// only when a fresh probe round shows the bypass broken.
    pub async fn alert_apply(&mut self, now: Instant) -> Result<Option<Plan>, ControlError> {
        if self.cfg.mode != Mode::Auto {
            let d = if self.cfg.mode == Mode::Off {
                Decision::None(Reason::ModeOff)
            } else {
                Decision::None(Reason::Alert)
            };
            self.note_decision(&d, Ratio::default());
            return Err(ControlError::NotAuto(self.cfg.mode));
        }
        if self.policy.active() {
            self.note_decision(&Decision::None(Reason::Active), Ratio::default());
            return Ok(None);
        }
        if let Err(reason) = self.policy.may_act(now) {
            self.note_decision(&Decision::None(reason), Ratio::default());
            return Err(ControlError::Gated(reason));
        }
        self.apply_now(now, Reason::Alert).await.map(Some)
    }

    /// The alert webhook's answer, counted.
    pub fn count_alert(&self, result: AlertResult) {
        self.metrics.alert(result);
    }

    async fn apply_now(&mut self, now: Instant, reason: Reason) -> Result<Plan, ControlError> {
        let result = self.try_apply_now(now, reason).await;
        self.publish();
        result
    }

    async fn try_apply_now(&mut self, now: Instant, reason: Reason) -> Result<Plan, ControlError> {
        let Some((round, verdict)) = fresh_round(&self.rounds).await else {
            self.note_decision(&Decision::None(reason), Ratio::default());
            return Err(ControlError::NoProbe);
        };
        if let Some(quiet) = Reason::not_broken(verdict.state) {
            tracing::info!(asked_by = %reason, verdict = %verdict.state, detail = %verdict.text,
                "fallback: asked to apply, but this agent's own probe round does not show the bypass broken");
            self.note_decision(&Decision::None(quiet), Ratio::default());
            return Err(ControlError::NotBroken(verdict.text));
        }
        let plan = match Plan::from_interfaces(&round.interfaces, &self.cfg) {
            Ok(p) => p,
            Err(e) => {
                self.note_decision(&Decision::None(Reason::NoPlan), Ratio::default());
                return Err(ControlError::NoPlan(e.to_string()));
            }
        };
        let d = Decision::Apply(plan.clone(), reason);
        self.note_decision(&d, Ratio::default());
        self.execute(now, &d).await.map(|()| plan)
    }

    fn note_decision(&mut self, d: &Decision, sessions: Ratio) {
        self.metrics.decision(d);
        let acting =
            d.action().is_some() && (self.cfg.mode == Mode::Auto || d.reason() == Reason::Manual);
        let key = (d.label(), d.reason());
        let changed = self.logged.replace(key) != Some(key);
        let decision: &'static str = d.label().into();
        let reason: &'static str = d.reason().into();
        let mode: &'static str = self.cfg.mode.into();
        let what = decision_words(d, self.cfg.mode, acting);
        // Once when it becomes true and on every action; the same decision again is debug.
        if changed || acting {
            tracing::info!(
                decision,
                reason,
                mode,
                no_reply_sessions = sessions.no_reply,
                sessions = sessions.total,
                acting,
                "fallback decision: {what}"
            );
        } else {
            tracing::debug!(decision, reason, mode, acting, "fallback decision: {what}");
        }
        self.status.write().expect("status lock").last_decision = Some(DecisionRecord {
            decision: d.label(),
            reason: d.reason(),
            at_unix: unix_now(),
        });
    }

    async fn execute(&mut self, now: Instant, d: &Decision) -> Result<(), ControlError> {
        match d {
            Decision::None(_) => Ok(()),
            Decision::Revert(_) => self.revert(now).map_err(Into::into),
            Decision::Apply(plan, _) => self.apply(now, Action::Apply, plan).await,
            Decision::Reload(plan, _) => self.apply(now, Action::Reload, plan).await,
        }
    }

    async fn apply(
        &mut self,
        now: Instant,
        action: Action,
        plan: &Plan,
    ) -> Result<(), ControlError> {
        if let Err(e) = self.backend.apply(plan) {
            tracing::error!(action = %action, error = %e, "fallback: backend failed");
            self.finish(now, action, ApplyOutcome::Failed, Some(e.to_string()), None);
            return Err(e.into());
        }
        // The bypass must now leave as the physical path does: the verdict of a fresh round.
        let verdict = match fresh_round(&self.rounds).await {
            Some((_, v)) => v,
            None => Verdict {
                state: ProbeState::Undetermined,
                physical_egress: None,
                text: "no probe round (probing is off)".into(),
            },
        };
        if verdict.is(ProbeState::BypassWorking) {
            tracing::info!(action = %action, egress = verdict.physical_egress.map(tracing::field::display),
                interface = %plan.interface,
                gateway = %plan.gateway, source = %plan.source,
                "fallback: applied and verified: the bypass egresses as the physical path");
            self.finish(now, action, ApplyOutcome::Ok, None, Some(plan));
            return Ok(());
        }
        let err = ControlError::RolledBack(verdict.text);
        tracing::warn!(action = %action, error = %err, "fallback: verification failed");
        if let Err(e) = self.backend.revert() {
            tracing::error!(error = %e, "fallback: rollback failed");
        }
        self.finish(
            now,
            action,
            ApplyOutcome::RolledBack,
            Some(err.to_string()),
            None,
        );
        Err(err)
    }

    fn revert(&mut self, now: Instant) -> Result<(), BackendError> {
        match self.backend.revert() {
            Ok(()) => {
                tracing::info!("fallback: reverted");
                self.finish(now, Action::Revert, ApplyOutcome::Ok, None, None);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "fallback: revert failed");
                self.finish(
                    now,
                    Action::Revert,
                    ApplyOutcome::Failed,
                    Some(e.to_string()),
                    None,
                );
                Err(e)
            }
        }
    }

    fn finish(
        &mut self,
        now: Instant,
        action: Action,
        outcome: ApplyOutcome,
        error: Option<String>,
        plan: Option<&Plan>,
    ) {
        self.policy.record(now, action, outcome, plan);
        if action != Action::Revert && outcome == ApplyOutcome::Ok {
            // Needed under today's versions: a later change of them is what a recheck is for.
            self.remember(Memory {
                needed_under: self.versions.clone(),
                retired: None,
            });
        }
        self.metrics.action(action, outcome);
        self.status.write().expect("status lock").last_action = Some(ActionRecord {
            action,
            outcome,
            error,
            at_unix: unix_now(),
        });
    }

    fn publish(&self) {
        let active = self.policy.active();
        self.metrics.set_active(active);
        let mut s = self.status.write().expect("status lock");
        s.active = active;
        s.plan = self.policy.installed_plan().cloned();
        s.consecutive_failures = self.policy.consecutive_failures();
        s.recheck.retired = self.memory.retired.clone();
    }

    /// Keeps `memory` here and in the state file.
    fn remember(&mut self, memory: Memory) {
        if memory != self.memory
            && let Some(r) = &self.record
        {
            r.remember(&memory);
        }
        self.memory = memory;
    }

    /// The rules the backend would install for `plan`.
    pub fn render(&self, plan: &Plan) -> String {
        self.backend.render(plan)
    }
}
