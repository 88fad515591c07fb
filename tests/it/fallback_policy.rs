//! The decision state machine: scripted rounds and session windows in, decisions out.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use pia_split_tunnel_exporter::fallback::policy::{
    Action, ApplyOutcome, Decision, Policy, Reason, wants_confirmation,
};
use pia_split_tunnel_exporter::fallback::{FallbackConfig, Mode, OnTunnelDown};

/// Feeds rounds 30 s apart; each decision that acts is recorded as `outcome`.
fn run(
    policy: &mut Policy,
    t0: Instant,
    script: &[(bool, Bypass)],
    outcome: ApplyOutcome,
) -> Vec<Decision> {
    script
        .iter()
        .enumerate()
        .map(|(i, (tunnel, bypass))| {
            let now = t0 + Duration::from_secs(30 * i as u64);
            let d = policy.judge(now, &round(*tunnel, *bypass), NO_SESSIONS);
            if let Some(a) = d.action() {
                let plan = match &d {
                    Decision::Apply(p, _) | Decision::Reload(p, _) => Some(p.clone()),
                    _ => None,
                };
                policy.record(now, a, outcome, plan.as_ref());
            }
            d
        })
        .collect()
}

fn reasons(ds: &[Decision]) -> Vec<&'static str> {
    ds.iter().map(|d| d.reason().into()).collect()
}

#[test]
fn applies_after_n_consecutive_broken_rounds() {
    let mut p = Policy::new(&FallbackConfig::default());
    let ds = run(
        &mut p,
        Instant::now(),
        &[
            (true, Bypass::Physical),
            (true, Bypass::Timeout),
            (true, Bypass::Tunnel),
            (true, Bypass::Physical),
        ],
        ApplyOutcome::Ok,
    );
    assert_eq!(
        reasons(&ds),
        [
            "bypass_healthy",
            "awaiting_confirmation",
            "probe_broken",
            "active"
        ]
    );
    let Decision::Apply(plan, _) = &ds[2] else {
        panic!("{:?}", ds[2])
    };
    assert_eq!(plan.source, PHYS_IP);
    assert_eq!(plan.gateway, GATEWAY);
    assert!(p.active());
}

#[test]
fn flapping_bypass_never_applies() {
    let mut p = Policy::new(&FallbackConfig::default());
    let script: Vec<_> = (0..40)
        .map(|i| {
            (
                true,
                if i % 2 == 0 {
                    Bypass::Timeout
                } else {
                    Bypass::Physical
                },
            )
        })
        .collect();
    let ds = run(&mut p, Instant::now(), &script, ApplyOutcome::Ok);
    assert!(ds.iter().all(|d| d.action().is_none()), "{ds:?}");
}

#[test]
fn physical_down_or_no_tunnel_is_not_a_reason_to_act() {
    // The physical path fails while the tunnel gets out: the verdict is undetermined.
    let mut p = Policy::new(&FallbackConfig::default());
    let t0 = Instant::now();
    for i in 0..5 {
        let d = p.judge(
            t0 + Duration::from_secs(i),
            &round_with(true, false, Bypass::Timeout, PHYS_IP),
            NO_SESSIONS,
        );
        assert_eq!(d, Decision::None(Reason::Undetermined));
    }
    let ds = run(
        &mut p,
        t0,
        &[
            (false, Bypass::Timeout),
            (false, Bypass::Timeout),
            (false, Bypass::Timeout),
        ],
        ApplyOutcome::Ok,
    );
    assert_eq!(reasons(&ds), ["no_tunnel"; 3]);
}

#[test]
fn zero_byte_sessions_with_one_confirming_round_apply() {
    let cfg = FallbackConfig::default();
    let t0 = Instant::now();
    // Under the minimum count: not enough evidence.
    let mut p = Policy::new(&cfg);
    let d = p.judge(t0, &round(true, Bypass::Timeout), sessions(4, 4));
    assert_eq!(d.reason(), Reason::AwaitingConfirmation);
    // Under the broken share (sessions.no_reply_ratio, 0.75): inconclusive asks for nothing.
    let mut p = Policy::new(&cfg);
    let d = p.judge(t0, &round(true, Bypass::Timeout), sessions(7, 10));
    assert_eq!(d.reason(), Reason::AwaitingConfirmation);
    // Enough, and the round confirms.
    let mut p = Policy::new(&cfg);
    let d = p.judge(t0, &round(true, Bypass::Timeout), sessions(8, 10));
    assert!(
        matches!(d, Decision::Apply(_, Reason::SessionsZeroBytes)),
        "{d:?}"
    );
    // Enough, but the probes say the bypass works: no action.
    let mut p = Policy::new(&cfg);
    let d = p.judge(t0, &round(true, Bypass::Physical), sessions(10, 10));
    assert_eq!(d, Decision::None(Reason::BypassHealthy));
}

#[test]
fn tunnel_down_reverts_after_hysteresis_and_keep_is_honoured() {
    let mut p = Policy::new(&FallbackConfig::default());
    let ds = run(
        &mut p,
        Instant::now(),
        &[
            (true, Bypass::Timeout),
            (true, Bypass::Timeout),
            (false, Bypass::Physical),
            (true, Bypass::Physical),
            (false, Bypass::Physical),
            (false, Bypass::Physical),
        ],
        ApplyOutcome::Ok,
    );
    assert_eq!(
        reasons(&ds),
        [
            "awaiting_confirmation",
            "probe_broken",
            "awaiting_confirmation",
            "active",
            "awaiting_confirmation",
            "tunnel_down"
        ]
    );
    assert!(matches!(ds[5], Decision::Revert(_)));
    assert!(!p.active());

    let cfg = FallbackConfig {
        on_tunnel_down: OnTunnelDown::Keep,
        ..Default::default()
    };
    let mut p = Policy::new(&cfg);
    let ds = run(
        &mut p,
        Instant::now(),
        &[
            (true, Bypass::Timeout),
            (true, Bypass::Timeout),
            (false, Bypass::Physical),
            (false, Bypass::Physical),
        ],
        ApplyOutcome::Ok,
    );
    assert_eq!(ds[3], Decision::None(Reason::KeepOnTunnelDown));
    assert!(p.active());
}

#[test]
fn address_change_reloads_and_cooldown_delays_it() {
    let cfg = FallbackConfig {
        cooldown_secs: 60,
        ..Default::default()
    };
    let mut p = Policy::new(&cfg);
    let t0 = Instant::now();
    run(
        &mut p,
        t0,
        &[(true, Bypass::Timeout), (true, Bypass::Timeout)],
        ApplyOutcome::Ok,
    );
    // Applied at t0+30 s. The address changes at t0+60 s: inside the cooldown.
    let moved = round_with(true, true, Bypass::Physical, "10.0.15.16".parse().unwrap());
    let d = p.judge(t0 + Duration::from_secs(60), &moved, NO_SESSIONS);
    assert_eq!(d, Decision::None(Reason::Cooldown));
    let d = p.judge(t0 + Duration::from_secs(91), &moved, NO_SESSIONS);
    let Decision::Reload(plan, Reason::AddressChanged) = d else {
        panic!("{d:?}")
    };
    assert_eq!(plan.source.to_string(), "10.0.15.16");
}

#[test]
fn failed_verification_backs_off_exponentially() {
    let cfg = FallbackConfig {
        cooldown_secs: 60,
        backoff_max_secs: 240,
        max_actions_per_hour: 100,
        ..Default::default()
    };
    let mut p = Policy::new(&cfg);
    let t0 = Instant::now();
    let broken = round(true, Bypass::Timeout);
    let mut applied_at = Vec::new();
    for s in (0..1200).step_by(10) {
        let now = t0 + Duration::from_secs(s);
        if let d @ Decision::Apply(..) = p.judge(now, &broken, NO_SESSIONS) {
            applied_at.push(s);
            p.record(now, d.action().unwrap(), ApplyOutcome::RolledBack, None);
        }
    }
    // First apply after a streak of 2 rounds; then the back-off doubles 60, 120, 240 and stops
    // at backoff_max (the streak keeps counting while backing off).
    let gaps: Vec<u64> = applied_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(applied_at[0], 10);
    assert_eq!(
        &gaps[..4],
        &[60, 120, 240, 240],
        "applies at {applied_at:?}"
    );
    assert_eq!(p.consecutive_failures() as usize, applied_at.len());
}

#[test]
fn flapping_tunnel_is_capped_per_hour() {
    let cfg = FallbackConfig {
        cooldown_secs: 0,
        backoff_max_secs: 0,
        max_actions_per_hour: 4,
        tunnel_down_rounds: 1,
        consecutive_rounds: 1,
        ..Default::default()
    };
    let mut p = Policy::new(&cfg);
    // The tunnel comes and goes every round for an hour, the bypass broken whenever it is up.
    let script: Vec<_> = (0..120).map(|i| (i % 2 == 0, Bypass::Timeout)).collect();
    let ds = run(&mut p, Instant::now(), &script, ApplyOutcome::Ok);
    let acts = ds.iter().filter(|d| d.action().is_some()).count();
    // Reverts are never refused, but they count: applies stop once the cap is reached.
    assert!(acts <= 5, "{acts} actions in an hour: {:?}", reasons(&ds));
    assert!(ds.iter().any(|d| d.reason() == Reason::RateLimited));
}

#[test]
fn adopted_leftover_takes_the_current_plan_without_reloading() {
    let mut p = Policy::new(&FallbackConfig::default());
    p.adopt();
    let d = p.judge(Instant::now(), &round(true, Bypass::Physical), NO_SESSIONS);
    assert_eq!(d, Decision::None(Reason::Active));
    assert_eq!(p.installed_plan().unwrap().source, PHYS_IP);
}

#[test]
fn still_broken_while_active_reloads() {
    let cfg = FallbackConfig {
        cooldown_secs: 0,
        ..Default::default()
    };
    let mut p = Policy::new(&cfg);
    let ds = run(
        &mut p,
        Instant::now(),
        &[(true, Bypass::Timeout); 5],
        ApplyOutcome::Ok,
    );
    assert_eq!(
        reasons(&ds),
        [
            "awaiting_confirmation",
            "probe_broken",
            "active",
            "still_broken",
            "active"
        ]
    );
    assert_eq!(ds[3].action(), Some(Action::Reload));
}

#[test]
fn uncertain_interfaces_never_apply() {
    let mut p = Policy::new(&FallbackConfig::default());
    let t0 = Instant::now();
    let mut ds = Vec::new();
    for i in 0..4u64 {
        let mut r = round(true, Bypass::Timeout);
        r.interfaces.problems = vec![
            "the proxy binds to en1 while the unscoped default route is on en0: the evidence disagrees"
                .into(),
        ];
        ds.push(p.judge(t0 + Duration::from_secs(30 * i), &r, NO_SESSIONS));
    }
    assert!(ds.iter().all(|d| d.action().is_none()), "{ds:?}");
    assert_eq!(reasons(&ds).last(), Some(&"no_plan"));
    // The same rounds with the evidence agreeing do apply.
    let mut q = Policy::new(&FallbackConfig::default());
    let agreed = run(
        &mut q,
        t0,
        &[(true, Bypass::Timeout), (true, Bypass::Timeout)],
        ApplyOutcome::Ok,
    );
    assert!(agreed.iter().any(|d| d.action().is_some()), "{agreed:?}");
}

/// Once an action was taken, a broken round under its cooldown or back-off names that, not
/// "awaiting confirmation": reaching the count could not act, so no confirmation round is
/// asked for (in `auto`, where confirmations run at all; never in `observe`).
#[test]
fn under_a_cooldown_or_back_off_nothing_is_awaited() {
    let cfg = FallbackConfig::default();
    let t0 = Instant::now();
    let broken = [(true, Bypass::Timeout); 3];
    // A rolled-back apply at round 2: back-off (120 s) covers rounds 3 and 4 (30 s apart).
    let mut p = Policy::new(&cfg);
    let mut ds = run(&mut p, t0, &broken[..2], ApplyOutcome::RolledBack);
    ds.extend(run(
        &mut p,
        t0 + Duration::from_secs(60),
        &broken[..2],
        ApplyOutcome::RolledBack,
    ));
    assert_eq!(
        reasons(&ds),
        [
            "awaiting_confirmation",
            "probe_broken",
            "backoff",
            "backoff"
        ]
    );
    // A good apply that the bypass then outlives (reverted by hand): cooldown, then awaiting.
    let mut p = Policy::new(&cfg);
    let ds = run(&mut p, t0, &broken[..2], ApplyOutcome::Ok);
    p.record(
        t0 + Duration::from_secs(31),
        Action::Revert,
        ApplyOutcome::Ok,
        None,
    );
    let later = run(
        &mut p,
        t0 + Duration::from_secs(60),
        &broken[..1],
        ApplyOutcome::Ok,
    );
    let much_later = run(
        &mut p,
        t0 + Duration::from_secs(600),
        &broken[..1],
        ApplyOutcome::Ok,
    );
    assert_eq!(reasons(&ds), ["awaiting_confirmation", "probe_broken"]);
    assert_eq!(reasons(&later), ["cooldown"]);
    assert_eq!(reasons(&much_later), ["probe_broken"]);
    for (mode, d, want) in [
        (Mode::Auto, &ds[0], true),
        (Mode::Auto, &ds[1], true),
        (Mode::Auto, &later[0], false),
        (Mode::Observe, &ds[0], false),
        (Mode::Observe, &ds[1], false),
        (Mode::Off, &ds[0], false),
    ] {
        assert_eq!(wants_confirmation(mode, d), want, "{mode} {d:?}");
    }
}
