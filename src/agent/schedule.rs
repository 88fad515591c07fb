//! When the next probe round runs: a pure state machine, time passed in.
//!
//! - **Heartbeat**: a round at most `heartbeat` after the last one (`probe.interval_secs`).
//!   Changes wake the agent, so this only bounds how stale a quiet machine's view can get.
//! - **Route change**: the routing table or an interface changed; a round starts after
//!   `debounce` (more changes in between join it).
//! - **Log evidence**: the zero-byte share of bypass sessions crossed the policy's threshold;
//!   a confirming round starts now.
//! - **Confirm**: the last round left a decision pending that the next one could change (in
//!   `auto`, the policy awaiting its consecutive rounds) or led to an action, whose effect the
//!   next round shows; the next one follows `spacing` later instead of a heartbeat later. The
//!   caller asks ([`crate::fallback::policy::wants_confirmation`]); in `observe` it never does.
//!
//! Rounds never overlap and start at least `spacing` apart. Rounds other than the heartbeat
//! are capped at `max_triggered` per `cap_window`, so a flapping interface cannot turn into a
//! stream of requests; past the cap a trigger waits for room (or the heartbeat). The fallback
//! policy's own hysteresis, cooldown and hourly cap are untouched: this only decides timing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Why a round runs (the `trigger` field of the round's log line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Trigger {
    /// The first round, at start.
    Start,
    Heartbeat,
    RouteChange,
    LogEvidence,
    Confirm,
}

/// What the round's outcome asks of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Followup {
    /// Nothing: the next round is the heartbeat (or a trigger).
    None,
    /// Another round soon: the policy needs it to confirm what this one saw, or an action
    /// was just taken and its effect is to be seen.
    Confirm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduleConfig {
    pub heartbeat: Duration,
    pub debounce: Duration,
    pub spacing: Duration,
    pub max_triggered: u32,
    pub cap_window: Duration,
}

impl ScheduleConfig {
    /// The defaults beside a given heartbeat.
    pub fn with_heartbeat(heartbeat: Duration) -> Self {
        ScheduleConfig {
            heartbeat,
            debounce: Duration::from_millis(200),
            spacing: Duration::from_millis(250),
            max_triggered: 12,
            cap_window: Duration::from_secs(600),
        }
    }
}

#[derive(Debug)]
pub struct Schedule {
    cfg: ScheduleConfig,
    /// Start of the last round, for the heartbeat.
    last_start: Option<Instant>,
    /// End of the last round, for the spacing.
    last_end: Option<Instant>,
    running: bool,
    /// The earliest triggered round asked for, and why.
    pending: Option<(Instant, Trigger)>,
    /// Starts of triggered rounds within the cap window.
    triggered: VecDeque<Instant>,
}

impl Schedule {
    /// A schedule whose first round is due at `now`.
    pub fn new(now: Instant, cfg: ScheduleConfig) -> Schedule {
        Schedule {
            cfg,
            last_start: None,
            last_end: None,
            running: false,
            pending: Some((now, Trigger::Start)),
            triggered: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &ScheduleConfig {
        &self.cfg
    }

    /// The routing table or an interface changed at `now`.
    pub fn route_changed(&mut self, now: Instant) {
        self.ask(now + self.cfg.debounce, Trigger::RouteChange);
    }

    /// The sessions' zero-byte share crossed the threshold at `now`.
    pub fn log_evidence(&mut self, now: Instant) {
        self.ask(now, Trigger::LogEvidence);
    }

    fn ask(&mut self, at: Instant, why: Trigger) {
        if self.pending.is_none_or(|(t, _)| at < t) {
            self.pending = Some((at, why));
        }
    }

    /// When the next round is due and why; meaningless while one runs.
    pub fn next(&self) -> (Instant, Trigger) {
        let heartbeat = self
            .last_start
            .map(|t| (t + self.cfg.heartbeat, Trigger::Heartbeat));
        let triggered = self.pending.map(|(at, why)| {
            let spaced = self.last_end.map_or(at, |e| at.max(e + self.cfg.spacing));
            (spaced.max(self.cap_room()), why)
        });
        match (heartbeat, triggered) {
            (Some(h), Some(t)) if h.0 <= t.0 => h,
            (_, Some(t)) => t,
            (Some(h), None) => h,
            // Unreachable in use (a schedule starts with a pending round); a day is harmless.
            (None, None) => (
                Instant::now() + Duration::from_secs(86_400),
                Trigger::Heartbeat,
            ),
        }
    }

    /// The earliest moment a triggered round fits under the cap.
    fn cap_room(&self) -> Instant {
        let max = self.cfg.max_triggered.max(1) as usize;
        if self.triggered.len() < max {
            return self
                .last_end
                .unwrap_or_else(|| self.pending.map_or_else(Instant::now, |(at, _)| at));
        }
        self.triggered[self.triggered.len() - max] + self.cfg.cap_window
    }

    /// A round starts at `now` (at or after [`next`](Self::next)); returns why it runs.
    pub fn start(&mut self, now: Instant) -> Trigger {
        let (due, why) = self.next();
        debug_assert!(now + Duration::from_millis(1) >= due, "started before due");
        self.running = true;
        self.last_start = Some(now);
        // Whatever was pending is served by this round, heartbeat or not.
        self.pending = None;
        if why != Trigger::Heartbeat {
            self.triggered.push_back(now);
        }
        while self
            .triggered
            .front()
            .is_some_and(|t| *t + self.cfg.cap_window <= now)
        {
            self.triggered.pop_front();
        }
        why
    }

    /// The round ended at `now`; `followup` is what its outcome asks for.
    pub fn finished(&mut self, now: Instant, followup: Followup) {
        self.running = false;
        self.last_end = Some(now);
        if followup == Followup::Confirm {
            self.ask(now + self.cfg.spacing, Trigger::Confirm);
        }
    }

    pub fn running(&self) -> bool {
        self.running
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fallback::policy::{Decision, Reason, wants_confirmation};
    use crate::fallback::{FallbackConfig, Mode, Plan};
    use crate::probe::lab::interfaces;

    #[derive(Clone, Copy, Debug)]
    enum Ev {
        Route,
        Log,
    }

    /// Runs the schedule over `events` (ms, event) until `until_ms`; each round lasts
    /// `round_ms`, the n-th round's decision is `decide(n)`, and the follow-up is what the
    /// agent asks for it in `mode`. Returns the rounds started, as (ms, trigger).
    fn simulate(
        cfg: ScheduleConfig,
        events: &[(u64, Ev)],
        round_ms: u64,
        (mode, decide): (Mode, &dyn Fn(usize) -> Decision),
        until_ms: u64,
    ) -> Vec<(u64, Trigger)> {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let ms = |t: Instant| (t - t0).as_millis() as u64;
        let mut s = Schedule::new(t0, cfg);
        let mut events = events.iter().copied().peekable();
        let mut rounds = Vec::new();
        let mut now = t0;
        let apply = |s: &mut Schedule, e: Ev, t: Instant| match e {
            Ev::Route => s.route_changed(t),
            Ev::Log => s.log_evidence(t),
        };
        loop {
            let (due, _) = s.next();
            let due = due.max(now);
            // Events before the round starts reshape the schedule first.
            if let Some(&(e_ms, e)) = events.peek()
                && at(e_ms) <= due
            {
                now = now.max(at(e_ms));
                apply(&mut s, e, now);
                events.next();
                continue;
            }
            if ms(due) >= until_ms {
                break;
            }
            now = due;
            let why = s.start(now);
            rounds.push((ms(now), why));
            let end = now + Duration::from_millis(round_ms);
            // Events during the round are seen when it ends.
            while let Some(&(e_ms, e)) = events.peek() {
                if at(e_ms) > end {
                    break;
                }
                apply(&mut s, e, end);
                events.next();
            }
            now = end;
            let n = rounds.len() - 1;
            s.finished(
                now,
                if wants_confirmation(mode, &decide(n)) {
                    Followup::Confirm
                } else {
                    Followup::None
                },
            );
        }
        rounds
    }

    use Trigger::*;

    fn cfg() -> ScheduleConfig {
        ScheduleConfig::with_heartbeat(Duration::from_secs(300))
    }

    /// The lab's plan, for decisions that carry one.
    fn plan() -> Plan {
        Plan::from_interfaces(&interfaces(true), &FallbackConfig::default()).unwrap()
    }

    /// What the policy decides, round after round, when the bypass stays broken: waiting for
    /// the second round, then the repair (`consecutive_rounds = 2`).
    fn broken(n: usize) -> Decision {
        match n {
            0 => Decision::None(Reason::AwaitingConfirmation),
            _ => Decision::Apply(plan(), Reason::ProbeBroken),
        }
    }

    /// As [`broken`] for the first `rounds` rounds, then nothing, for `reason`.
    fn then(n: usize, rounds: usize, reason: Reason) -> Decision {
        if n < rounds {
            broken(n)
        } else {
            Decision::None(reason)
        }
    }

    /// Nothing to decide: the bypass works.
    fn healthy(_: usize) -> Decision {
        Decision::None(Reason::BypassHealthy)
    }

    /// Awaiting confirmation in rounds 1 and 2 (after a route change), healthy otherwise.
    fn awaits_in_1_and_2(n: usize) -> Decision {
        if n == 1 || n == 2 {
            Decision::None(Reason::AwaitingConfirmation)
        } else {
            healthy(n)
        }
    }

    struct Case {
        name: &'static str,
        events: Vec<(u64, Ev)>,
        round_ms: u64,
        mode: Mode,
        decide: &'static dyn Fn(usize) -> Decision,
        until_ms: u64,
        want: Vec<(u64, Trigger)>,
    }

    /// The schedule's table: events, how long a round takes, when the policy asks for a
    /// confirmation, and the rounds wanted.
    fn cases() -> [Case; 7] {
        [
            Case {
                name: "quiet: a start round, then heartbeats",
                events: vec![],
                round_ms: 40,
                mode: Mode::Auto,
                decide: &healthy,
                until_ms: 901_000,
                want: vec![
                    (0, Start),
                    (300_000, Heartbeat),
                    (600_000, Heartbeat),
                    (900_000, Heartbeat),
                ],
            },
            Case {
                name: "a route change starts a round after the debounce and moves the heartbeat",
                events: vec![(100_000, Ev::Route)],
                round_ms: 40,
                mode: Mode::Auto,
                decide: &healthy,
                until_ms: 401_000,
                want: vec![(0, Start), (100_200, RouteChange), (400_200, Heartbeat)],
            },
            Case {
                name: "a burst of changes is one round",
                events: (0..5).map(|i| (50_000 + i * 30, Ev::Route)).collect(),
                round_ms: 40,
                mode: Mode::Auto,
                decide: &healthy,
                until_ms: 60_000,
                want: vec![(0, Start), (50_200, RouteChange)],
            },
            Case {
                name: "a change during a round runs after it, spaced",
                events: vec![(1_000, Ev::Route)],
                round_ms: 1_500,
                mode: Mode::Auto,
                decide: &healthy,
                until_ms: 10_000,
                want: vec![(0, Start), (1_750, RouteChange)],
            },
            Case {
                name: "log evidence starts a round at once",
                events: vec![(42_000, Ev::Log)],
                round_ms: 40,
                mode: Mode::Auto,
                decide: &healthy,
                until_ms: 50_000,
                want: vec![(0, Start), (42_000, LogEvidence)],
            },
            Case {
                name: "confirmations run back to back until the policy has enough",
                events: vec![(10_000, Ev::Route)],
                round_ms: 1_000,
                mode: Mode::Auto,
                decide: &awaits_in_1_and_2,
                until_ms: 20_000,
                want: vec![
                    (0, Start),
                    (10_200, RouteChange),
                    (11_450, Confirm),
                    (12_700, Confirm),
                ],
            },
            Case {
                name: "an earlier trigger wins over a pending confirmation",
                events: vec![(1_000, Ev::Log)],
                round_ms: 900,
                mode: Mode::Auto,
                decide: &|n| if n == 0 { broken(0) } else { healthy(n) },
                until_ms: 5_000,
                want: vec![(0, Start), (1_150, LogEvidence)],
            },
        ]
    }

    /// Confirmations by mode and decision: only where the next round could change what is
    /// done (`auto` awaiting its count) or shows an action's effect.
    fn mode_cases() -> [Case; 6] {
        [
            Case {
                name: "observe, bypass broken from the start: no confirmation, heartbeats only",
                events: vec![],
                round_ms: 800,
                mode: Mode::Observe,
                decide: &broken,
                until_ms: 901_000,
                want: vec![
                    (0, Start),
                    (300_000, Heartbeat),
                    (600_000, Heartbeat),
                    (900_000, Heartbeat),
                ],
            },
            Case {
                name: "observe, broken after a route change and the log: one round each",
                events: vec![(60_000, Ev::Route), (90_000, Ev::Log)],
                round_ms: 800,
                mode: Mode::Observe,
                decide: &broken,
                until_ms: 400_000,
                want: vec![
                    (0, Start),
                    (60_200, RouteChange),
                    (90_000, LogEvidence),
                    (390_000, Heartbeat),
                ],
            },
            Case {
                name: "off: no confirmation either",
                events: vec![],
                round_ms: 800,
                mode: Mode::Off,
                decide: &|_| Decision::None(Reason::ModeOff),
                until_ms: 301_000,
                want: vec![(0, Start), (300_000, Heartbeat)],
            },
            Case {
                name: "auto, broken: one confirmation reaches the count, one more shows the repair",
                events: vec![],
                round_ms: 800,
                mode: Mode::Auto,
                decide: &|n| then(n, 2, Reason::Active),
                until_ms: 303_000,
                want: vec![
                    (0, Start),
                    (1_050, Confirm),
                    (2_100, Confirm),
                    (302_100, Heartbeat),
                ],
            },
            Case {
                name: "auto, broken, the count reached under a cooldown: no more confirmations",
                events: vec![],
                round_ms: 800,
                mode: Mode::Auto,
                decide: &|n| then(n, 1, Reason::Cooldown),
                until_ms: 302_000,
                want: vec![(0, Start), (1_050, Confirm), (301_050, Heartbeat)],
            },
            Case {
                name: "auto, broken past the hourly cap or in a back-off: heartbeats only",
                events: vec![(30_000, Ev::Log)],
                round_ms: 800,
                mode: Mode::Auto,
                decide: &|n| then(n, 0, [Reason::RateLimited, Reason::Backoff][n % 2]),
                until_ms: 331_000,
                want: vec![(0, Start), (30_000, LogEvidence), (330_000, Heartbeat)],
            },
        ]
    }

    #[test]
    fn table() {
        for c in cases().into_iter().chain(mode_cases()) {
            let got = simulate(cfg(), &c.events, c.round_ms, (c.mode, c.decide), c.until_ms);
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    #[test]
    fn flapping_routes_and_log_evidence_are_capped_and_the_heartbeat_still_runs() {
        // A change or a hostile log crossing the threshold every second for an hour: the log
        // can ask for rounds, never for more than the cap.
        let events: Vec<(u64, Ev)> = (1..3600)
            .map(|s| (s * 1_000, if s % 2 == 0 { Ev::Route } else { Ev::Log }))
            .collect();
        let got = simulate(cfg(), &events, 40, (Mode::Auto, &healthy), 3_600_000);
        let triggered: Vec<u64> = got
            .iter()
            .filter(|(_, w)| *w != Heartbeat)
            .map(|(t, _)| *t)
            .collect();
        // Never more than 12 in any 10-minute window.
        for (i, t) in triggered.iter().enumerate() {
            let in_window = triggered[i..]
                .iter()
                .take_while(|u| **u < t + 600_000)
                .count();
            assert!(in_window <= 12, "{in_window} rounds from {t} ms: {got:?}");
        }
        // 12 per 10 minutes, a heartbeat at most 5 minutes after the last round.
        assert!(triggered.len() >= 60 && triggered.len() <= 73, "{got:?}");
        let starts: Vec<u64> = got.iter().map(|(t, _)| *t).collect();
        assert!(
            starts.windows(2).all(|w| w[1] - w[0] <= 300_000),
            "{starts:?}"
        );
        // Requests when healthy stay far below a round per second.
        assert!(got.len() < 100, "{}", got.len());
    }

    #[test]
    fn spacing_holds_even_for_immediate_triggers() {
        let events: Vec<(u64, Ev)> = vec![(100, Ev::Log), (110, Ev::Log), (120, Ev::Log)];
        let got = simulate(cfg(), &events, 50, (Mode::Auto, &healthy), 2_000);
        assert_eq!(got, vec![(0, Start), (300, LogEvidence)]);
    }
}
