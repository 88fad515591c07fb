//! When to act: a pure state machine. Inputs carry their own `now`; outputs are decisions the
//! controller carries out (in `auto`) or only reports (in `observe`), then feeds back with
//! [`Policy::record`]. It does not judge the bypass itself: it reads the round's
//! [`Verdict`], and only "bypass broken" in this round's verdict can lead to an apply (the
//! sessions verdict shortens the wait, never replaces the probe).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use macro_rules_attribute::apply;

use super::{FallbackConfig, Mode, OnTunnelDown, Plan};
use crate::labels::label_set;
use crate::probe::{ProbeState, Round, Verdict};
use crate::sessions::window::SessionsVerdict;

/// Why a decision was taken: a small fixed set, used as a metric label.
#[apply(label_set!)]
pub enum Reason {
    /// Fallback off and the bypass egresses as the physical path does.
    BypassHealthy,
    /// Fallback off and no tunnel: nothing to repair.
    NoTunnel,
    /// No path gets out: the repair could not help.
    NoNetwork,
    /// The round cannot tell whether the bypass is broken.
    Undetermined,
    /// Unbound traffic leaks past the tunnel: not something the repair fixes.
    VpnLeak,
    /// Discovery found no physical interface, gateway or valid name to build rules from.
    NoPlan,
    /// A condition holds but not for enough rounds yet (hysteresis).
    AwaitingConfirmation,
    /// The bypass probe failed or went through the tunnel for N rounds.
    ProbeBroken,
    /// Most bypass sessions closed with zero bytes, and this round confirms it.
    SessionsZeroBytes,
    /// The fallback is active yet the bypass is still broken: re-apply.
    StillBroken,
    Cooldown,
    RateLimited,
    Backoff,
    TunnelDown,
    /// The tunnel went away and `on_tunnel_down = "keep"`.
    KeepOnTunnelDown,
    /// The physical address, gateway or interface changed: re-render and reload.
    AddressChanged,
    /// The fallback is active and nothing changed.
    Active,
    Manual,
    Alert,
    ModeOff,
}

impl Reason {
    /// Why nothing is applied in a state other than "bypass broken"; `None` for that one.
    pub fn not_broken(state: ProbeState) -> Option<Reason> {
        match state {
            ProbeState::BypassBroken => None,
            ProbeState::BypassWorking => Some(Reason::BypassHealthy),
            ProbeState::TunnelDown => Some(Reason::NoTunnel),
            ProbeState::NoNetwork => Some(Reason::NoNetwork),
            ProbeState::Undetermined => Some(Reason::Undetermined),
            ProbeState::VpnLeak => Some(Reason::VpnLeak),
        }
    }
}

/// What to do after a round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    None(Reason),
    Apply(Plan, Reason),
    Reload(Plan, Reason),
    Revert(Reason),
}

/// An action on the backend, as a metric label.
#[apply(label_set!)]
pub enum Action {
    Apply,
    Revert,
    Reload,
}

/// How an action ended.
#[apply(label_set!)]
pub enum ApplyOutcome {
    Ok,
    /// The backend failed (its error is logged); it left nothing of its own installed.
    Failed,
    /// Installed, but the bypass did not egress as the physical path: removed again.
    RolledBack,
}

/// What a decision does: the `decision` label of `fallback_decisions_total`.
#[apply(label_set!)]
pub enum DecisionKind {
    None,
    Apply,
    Reload,
    Revert,
}

impl Decision {
    pub fn reason(&self) -> Reason {
        match self {
            Decision::None(r) | Decision::Revert(r) => *r,
            Decision::Apply(_, r) | Decision::Reload(_, r) => *r,
        }
    }
    /// What it does, as the metric label.
    pub fn label(&self) -> DecisionKind {
        match self {
            Decision::None(_) => DecisionKind::None,
            Decision::Apply(..) => DecisionKind::Apply,
            Decision::Reload(..) => DecisionKind::Reload,
            Decision::Revert(_) => DecisionKind::Revert,
        }
    }
    pub fn action(&self) -> Option<Action> {
        match self {
            Decision::None(_) => None,
            Decision::Apply(..) => Some(Action::Apply),
            Decision::Reload(..) => Some(Action::Reload),
            Decision::Revert(_) => Some(Action::Revert),
        }
    }
}

/// Whether the round after one that decided `d` should follow at once (the schedule's
/// confirmation) rather than at the heartbeat: only while a decision that round could change
/// is pending — `auto` waiting for its consecutive rounds — or to show an action's effect.
/// Never in `observe` or `off`: nothing would act on the answer, and every round sends
/// requests to the probe endpoints.
pub fn wants_confirmation(mode: Mode, d: &Decision) -> bool {
    mode == Mode::Auto && (d.reason() == Reason::AwaitingConfirmation || d.action().is_some())
}

/// What the backend holds, as far as the policy knows.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Held {
    Nothing,
    /// Adopted from a previous run; its plan is taken from the next round.
    Unknown,
    Plan(Plan),
}

/// The decision state machine.
#[derive(Debug)]
pub struct Policy {
    cfg: FallbackConfig,
    installed: Held,
    broken_streak: u32,
    tunnel_down_streak: u32,
    last_action: Option<Instant>,
    /// Times of actions in the last hour, for the cap.
    actions: VecDeque<Instant>,
    /// Failed actions in a row, for the back-off.
    failures: u32,
    not_before: Option<Instant>,
    /// The fallback retired itself and has not been applied since: the sessions window still
    /// holds the closes from before the fix, so only this agent's own broken rounds
    /// (`consecutive_rounds` of them) bring it back.
    retired: bool,
}

const HOUR: Duration = Duration::from_secs(3600);

impl Policy {
    pub fn new(cfg: &FallbackConfig) -> Self {
        Policy {
            cfg: cfg.clone(),
            installed: Held::Nothing,
            broken_streak: 0,
            tunnel_down_streak: 0,
            last_action: None,
            actions: VecDeque::new(),
            failures: 0,
            not_before: None,
            retired: false,
        }
    }

    /// The rules were lifted because the bypass works without them (see [`super::recheck`]):
    /// nothing is installed, the cooldown starts, and the sessions seen before no longer count.
    pub fn retire(&mut self, now: Instant) {
        self.note_action(now);
        self.installed = Held::Nothing;
        self.retired = true;
        self.failures = 0;
        self.not_before = None;
    }

    /// A retirement remembered from an earlier run (under the same versions).
    pub fn retired_before(&mut self) {
        self.retired = true;
    }

    /// A recheck found the rules still needed and put them back: it counts as an action for
    /// the cooldown and the hourly cap, and the streak starts over.
    pub fn rechecked(&mut self, now: Instant) {
        self.note_action(now);
    }

    fn note_action(&mut self, now: Instant) {
        self.last_action = Some(now);
        self.actions.push_back(now);
        self.broken_streak = 0;
    }

    /// Whether the fallback is installed, as far as the policy knows.
    pub fn active(&self) -> bool {
        self.installed != Held::Nothing
    }

    /// The plan installed, when known.
    pub fn installed_plan(&self) -> Option<&Plan> {
        match &self.installed {
            Held::Plan(p) => Some(p),
            _ => None,
        }
    }

    /// A leftover of a previous run is now ours.
    pub fn adopt(&mut self) {
        self.installed = Held::Unknown;
    }

    /// Failed actions in a row.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Decides after one probe round, from its verdict; `sessions` is the sessions verdict
    /// at `now`.
    pub fn evaluate(
        &mut self,
        now: Instant,
        round: &Round,
        verdict: &Verdict,
        sessions: SessionsVerdict,
    ) -> Decision {
        let tunnel_down = verdict.is(ProbeState::TunnelDown);
        let broken = verdict.is(ProbeState::BypassBroken);
        self.tunnel_down_streak = if tunnel_down {
            self.tunnel_down_streak.saturating_add(1)
        } else {
            0
        };
        self.broken_streak = if broken {
            self.broken_streak.saturating_add(1)
        } else {
            0
        };
        let plan = Plan::from_interfaces(&round.interfaces, &self.cfg);

        if self.active() {
            if tunnel_down {
                if self.tunnel_down_streak < self.cfg.tunnel_down_rounds {
                    return match self.not_before {
                        Some(t) if now < t => Decision::None(Reason::Backoff),
                        _ => Decision::None(Reason::AwaitingConfirmation),
                    };
                }
                return match self.cfg.on_tunnel_down {
                    OnTunnelDown::Keep => Decision::None(Reason::KeepOnTunnelDown),
                    // Undoing is always allowed, except straight after a failed undo.
                    OnTunnelDown::Revert => match self.not_before {
                        Some(t) if now < t => Decision::None(Reason::Backoff),
                        _ => Decision::Revert(Reason::TunnelDown),
                    },
                };
            }
            let Ok(plan) = plan else {
                return Decision::None(Reason::NoPlan);
            };
            match &self.installed {
                Held::Unknown => {
                    // Take the leftover as rendered from today's facts; if it is not, the
                    // bypass stays broken and `StillBroken` reloads it.
                    self.installed = Held::Plan(plan.clone());
                }
                Held::Plan(p) if *p != plan => {
                    return self.gate(now, Decision::Reload(plan, Reason::AddressChanged));
                }
                _ => {}
            }
            if self.broken_streak >= self.cfg.consecutive_rounds {
                return self.gate(now, Decision::Reload(plan, Reason::StillBroken));
            }
            return Decision::None(Reason::Active);
        }

        if let Some(quiet) = Reason::not_broken(verdict.state) {
            return Decision::None(quiet);
        }
        let Ok(plan) = plan else {
            return Decision::None(Reason::NoPlan);
        };
        let reason = if self.broken_streak >= self.cfg.consecutive_rounds {
            Reason::ProbeBroken
        } else if sessions.broken() && !self.retired {
            // The sessions are the evidence; this round's probes are the confirmation.
            Reason::SessionsZeroBytes
        } else {
            // Waiting only while the count, once reached, could act: under a back-off,
            // cooldown or cap that is named instead (and asks for no confirmation round).
            return self.gate(now, Decision::None(Reason::AwaitingConfirmation));
        };
        self.gate(now, Decision::Apply(plan, reason))
    }

    /// Back-off, cooldown and the hourly cap, in that order, for apply and reload.
    fn gate(&mut self, now: Instant, d: Decision) -> Decision {
        if self.not_before.is_some_and(|t| now < t) {
            return Decision::None(Reason::Backoff);
        }
        let cooldown = Duration::from_secs(self.cfg.cooldown_secs);
        if self.last_action.is_some_and(|t| now < t + cooldown) {
            return Decision::None(Reason::Cooldown);
        }
        self.prune(now);
        if self.actions.len() >= self.cfg.max_actions_per_hour as usize {
            return Decision::None(Reason::RateLimited);
        }
        d
    }

    fn prune(&mut self, now: Instant) {
        while self.actions.front().is_some_and(|t| *t + HOUR <= now) {
            self.actions.pop_front();
        }
    }

    /// Whether an action may run now under the cap and back-off (manual actions skip this).
    pub fn may_act(&mut self, now: Instant) -> Result<(), Reason> {
        match self.gate(now, Decision::None(Reason::Manual)) {
            Decision::None(Reason::Manual) => Ok(()),
            other => Err(other.reason()),
        }
    }

    /// How an action ended. `plan` is what was applied (apply, reload).
    pub fn record(
        &mut self,
        now: Instant,
        action: Action,
        outcome: ApplyOutcome,
        plan: Option<&Plan>,
    ) {
        self.note_action(now);
        match (action, outcome) {
            (Action::Apply | Action::Reload, ApplyOutcome::Ok) => {
                self.installed = plan.cloned().map_or(Held::Unknown, Held::Plan);
                self.retired = false;
                self.failures = 0;
                self.not_before = None;
            }
            (Action::Revert, ApplyOutcome::Ok) => {
                self.installed = Held::Nothing;
                self.failures = 0;
                self.not_before = None;
            }
            (Action::Apply | Action::Reload, _) => {
                // Backends leave nothing of theirs after a failed apply or a rollback.
                self.installed = Held::Nothing;
                self.back_off(now);
            }
            (Action::Revert, _) => self.back_off(now),
        }
    }

    fn back_off(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let base = self.cfg.cooldown_secs.max(1);
        let secs = base
            .saturating_mul(1u64 << (self.failures - 1).min(20))
            .min(self.cfg.backoff_max_secs.max(base));
        self.not_before = Some(now + Duration::from_secs(secs));
    }
}
