//! The verdict's truth table: every combination of the four paths' outcomes (egress A, egress
//! B, timeout, refused/unreachable, interface absent: 5^4 = 625), checked three ways:
//! - the written rules (the table in `probe/verdict.rs`, restated here as data) against
//!   `decide`, row by row, first match wins, every row reachable;
//! - the expanded table, `docs/verdict-truth-table.md`, against `decide` (golden file);
//! - every reader of the verdict against it: the policy applies only on "bypass broken",
//!   `/health`'s bypass component and `/metrics`' `verdict` follow the state.

use crate::common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::*;
use pia_split_tunnel_exporter::fallback::FallbackConfig;
use pia_split_tunnel_exporter::fallback::policy::{Decision, Policy};
use pia_split_tunnel_exporter::health::Status;
use pia_split_tunnel_exporter::health::model::{HealthThresholds, Inputs, assess};
use pia_split_tunnel_exporter::os::{Interfaces, PhysicalIf, TunnelIf};
use pia_split_tunnel_exporter::probe::verdict::{Seen, decide};
use pia_split_tunnel_exporter::probe::{
    PathKind, PathResult, ProbeError, ProbeMetrics, ProbeState, Round, Verdict,
};
use pia_split_tunnel_exporter::proxy_log::Level;
use strum::EnumCount;

const A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 47);
const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 18);

/// The five outcome classes of one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum O {
    A,
    B,
    Timeout,
    Refused,
    Absent,
}

const OUTCOMES: [O; 5] = [O::A, O::B, O::Timeout, O::Refused, O::Absent];

impl O {
    fn seen(self) -> Seen {
        match self {
            O::A => Seen::Egress(A),
            O::B => Seen::Egress(B),
            O::Timeout => Seen::Timeout,
            O::Refused => Seen::Failed,
            O::Absent => Seen::Absent,
        }
    }
    fn ip(self) -> Option<Ipv4Addr> {
        self.seen().egress()
    }
    fn label(self) -> &'static str {
        match self {
            O::A => "egress A",
            O::B => "egress B",
            O::Timeout => "timeout",
            O::Refused => "refused/unreachable",
            O::Absent => "absent",
        }
    }
}

/// A cell of the written table. `Same`, `Tunnel`, `Dflt` and `Other` compare addresses: the
/// physical path's, the tunnel's, the default path's, anything else.
#[derive(Clone, Copy, Debug)]
enum P {
    Any,
    Egress,
    Fail,
    Absent,
    Timeout,
    Failed,
    Same,
    Tunnel,
    Dflt,
    Other,
}

struct Combo {
    p: O,
    t: O,
    x: O,
    d: O,
}

fn matches(pat: P, o: O, c: &Combo) -> bool {
    let phys = c.p.ip();
    match pat {
        P::Any => true,
        P::Egress => o.ip().is_some(),
        P::Fail => o.ip().is_none(),
        P::Absent => o == O::Absent,
        P::Timeout => o == O::Timeout,
        P::Failed => o == O::Refused,
        P::Same => o.ip().is_some() && o.ip() == phys,
        P::Tunnel => o.ip().is_some() && o.ip() == c.t.ip(),
        P::Dflt => o.ip().is_some() && o.ip() == c.d.ip(),
        P::Other => o.ip().is_some() && o.ip() != phys,
    }
}

/// The table of the module doc of `probe/verdict.rs`: physical, tunnel, bypass, default.
const RULES: &[(P, P, P, P, ProbeState)] = &[
    (P::Fail, P::Fail, P::Fail, P::Fail, ProbeState::NoNetwork),
    (P::Fail, P::Any, P::Any, P::Any, ProbeState::Undetermined),
    (P::Egress, P::Absent, P::Any, P::Any, ProbeState::TunnelDown),
    (P::Egress, P::Same, P::Any, P::Any, ProbeState::Undetermined),
    (P::Egress, P::Any, P::Any, P::Same, ProbeState::VpnLeak),
    (
        P::Egress,
        P::Any,
        P::Same,
        P::Any,
        ProbeState::BypassWorking,
    ),
    (
        P::Egress,
        P::Any,
        P::Tunnel,
        P::Any,
        ProbeState::BypassBroken,
    ),
    (P::Egress, P::Any, P::Dflt, P::Any, ProbeState::BypassBroken),
    (
        P::Egress,
        P::Any,
        P::Other,
        P::Any,
        ProbeState::Undetermined,
    ),
    (
        P::Egress,
        P::Any,
        P::Timeout,
        P::Any,
        ProbeState::BypassBroken,
    ),
    (
        P::Egress,
        P::Any,
        P::Failed,
        P::Any,
        ProbeState::BypassBroken,
    ),
    (
        P::Egress,
        P::Any,
        P::Absent,
        P::Any,
        ProbeState::Undetermined,
    ),
];

fn all() -> impl Iterator<Item = Combo> {
    OUTCOMES.into_iter().flat_map(|p| {
        OUTCOMES.into_iter().flat_map(move |t| {
            OUTCOMES
                .into_iter()
                .flat_map(move |x| OUTCOMES.into_iter().map(move |d| Combo { p, t, x, d }))
        })
    })
}

fn state_of(c: &Combo) -> ProbeState {
    decide(c.p.seen(), c.t.seen(), c.x.seen(), c.d.seen())
}

#[test]
fn every_combination_follows_the_written_rules() {
    let mut used = [0usize; RULES.len()];
    let mut n = 0;
    for c in all() {
        n += 1;
        let (i, rule) = RULES
            .iter()
            .enumerate()
            .find(|(_, (p, t, x, d, _))| {
                matches(*p, c.p, &c)
                    && matches(*t, c.t, &c)
                    && matches(*x, c.x, &c)
                    && matches(*d, c.d, &c)
            })
            .unwrap_or_else(|| {
                panic!(
                    "no rule for {} {} {} {}",
                    c.p.label(),
                    c.t.label(),
                    c.x.label(),
                    c.d.label()
                )
            });
        used[i] += 1;
        assert_eq!(
            state_of(&c),
            rule.4,
            "physical {}, tunnel {}, bypass {}, default {} (rule {})",
            c.p.label(),
            c.t.label(),
            c.x.label(),
            c.d.label(),
            i + 1
        );
    }
    assert_eq!(n, 625);
    for (i, count) in used.iter().enumerate() {
        assert!(*count > 0, "rule {} is never reached", i + 1);
    }
}

/// The expanded table as markdown, one row per combination.
fn expanded() -> String {
    let mut out = String::from(
        "# The verdict's truth table\n\n\
         Every combination of the four probe paths' outcomes and the state the agent names \
         (`probe/verdict.rs`, where the rules behind it are written; this file is checked by \
         `tests/it/verdict_truth_table.rs`, `UPDATE_GOLDEN=1` rewrites it). Egress A and B are two \
         different public addresses; \"absent\" is a path whose interface is missing.\n\n\
         | # | physical | tunnel | bypass | default | state |\n\
         |---|----------|--------|--------|---------|-------|\n",
    );
    for (i, c) in all().enumerate() {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            i + 1,
            c.p.label(),
            c.t.label(),
            c.x.label(),
            c.d.label(),
            state_of(&c).words()
        ));
    }
    out
}

#[test]
fn the_written_expanded_table_is_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/verdict-truth-table.md");
    let now = expanded();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &now).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .expect("docs/verdict-truth-table.md (UPDATE_GOLDEN=1 writes it)");
    assert!(
        now == want,
        "the truth table changed; review and run with UPDATE_GOLDEN=1"
    );
}

/// A round in which each path had outcome `o` (with interfaces to match).
fn round_of(c: &Combo) -> Round {
    let res = |path, o: O| PathResult {
        path,
        outcome: match o {
            O::A => Ok(A),
            O::B => Ok(B),
            O::Timeout => Err(ProbeError::Timeout),
            O::Refused => Err(ProbeError::Refused),
            O::Absent => Err(ProbeError::NoInterface),
        },
        duration: Duration::from_millis(10),
    };
    Round {
        interfaces: Interfaces {
            physical: (c.p != O::Absent).then(|| PhysicalIf {
                name: "en0".into(),
                index: 2,
                ipv4: PHYS_IP,
                gateway: Some(GATEWAY),
            }),
            tunnel: (c.t != O::Absent).then(|| TunnelIf {
                name: "utun4".into(),
                index: 3,
                ipv4: Ipv4Addr::new(10, 16, 11, 143),
            }),
            problems: Vec::new(),
        },
        results: vec![
            res(PathKind::Physical, c.p),
            res(PathKind::Tunnel, c.t),
            res(PathKind::Bypass, c.x),
            res(PathKind::Default, c.d),
        ],
    }
}

#[test]
fn policy_health_and_metrics_all_read_the_verdict() {
    let cfg = FallbackConfig {
        consecutive_rounds: 1,
        ..FallbackConfig::default()
    };
    let t = HealthThresholds {
        log_stale: Duration::from_secs(900),
        log_max_level: Level::Debug,
    };
    for c in all() {
        let round = round_of(&c);
        let v = Verdict::of(&round);
        let state = state_of(&c);
        assert_eq!(v.state, state);
        let what = format!(
            "physical {}, tunnel {}, bypass {}, default {}: {}",
            c.p.label(),
            c.t.label(),
            c.x.label(),
            c.d.label(),
            v.text
        );
        assert!(v.text.starts_with(state.words()), "{what}");
        // The policy: one broken round (consecutive_rounds = 1) applies, nothing else does,
        // whatever the sessions say.
        let mut p = Policy::new(&cfg);
        let d = p.evaluate(Instant::now(), &round, &v, sessions(50, 50));
        assert_eq!(
            matches!(d, Decision::Apply(..)),
            state == ProbeState::BypassBroken,
            "{what}: {d:?}"
        );
        // /health: the bypass component carries the verdict.
        let rep = assess(
            &t,
            &Inputs {
                probing: true,
                round: Some((&round, &v)),
                ..Inputs::default()
            },
        );
        let bypass = &rep.components["probe_bypass"];
        let want = match state {
            ProbeState::BypassWorking | ProbeState::TunnelDown => Status::Ok,
            ProbeState::Undetermined => Status::Degraded,
            ProbeState::BypassBroken | ProbeState::VpnLeak | ProbeState::NoNetwork => {
                Status::Failing
            }
        };
        assert_eq!(bypass.status, want, "{what}");
        assert!(bypass.reason.contains(&v.text), "{what}: {}", bypass.reason);
        // /metrics: one-hot verdict.
        let reg = prometheus::Registry::new();
        let m = ProbeMetrics::register(&reg, false).unwrap();
        m.observe(&round, &v);
        let fam = reg
            .gather()
            .into_iter()
            .find(|f| f.name() == "pia_split_tunnel_verdict")
            .expect("verdict family");
        let on: Vec<String> = fam
            .get_metric()
            .iter()
            .filter(|m| m.get_gauge().get_value() == 1.0)
            .map(|m| m.get_label()[0].value().to_owned())
            .collect();
        assert_eq!(on, [state.to_string()], "{what}");
        assert_eq!(fam.get_metric().len(), ProbeState::COUNT);
    }
}

/// The case the old deciders disagreed on: the physical path egresses as the tunnel does.
#[test]
fn physical_equal_to_tunnel_is_undetermined_everywhere() {
    let c = Combo {
        p: O::A,
        t: O::A,
        x: O::Timeout,
        d: O::A,
    };
    let round = round_of(&c);
    let v = Verdict::of(&round);
    assert_eq!(v.state, ProbeState::Undetermined);
    assert_eq!(
        v.text,
        "undetermined: the tunnel and the physical path both egress as 198.51.100.47, so the \
         bypass cannot be told apart from either"
    );
    assert_eq!(v.state.exit_code(), 3);
}
