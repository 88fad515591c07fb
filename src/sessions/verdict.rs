//! The sessions verdict: one decision from what proxied sessions received, overall, per app and
//! per transport. The window (`/health`, `/metrics`, the status page, the fallback), `analyze`
//! and `diagnose` all call [`judge`]; nothing else applies the thresholds.
//!
//! A session counts by its [`Reply`](super::counts::Reply): no reply when it received nothing.
//! `broken` when most sessions got none; `partial` when some apps (or one transport) got none
//! while others work; `working` only when no more than a healthy Mac's share got none; in
//! between `inconclusive`, with the share: a log where a third of the sessions failed is never
//! called working.

use std::collections::BTreeMap;

use macro_rules_attribute::apply;
use serde::Serialize;

use super::counts::ProtoKey;
use crate::labels::label_set;

/// Sessions that got no reply out of the sessions judged (closes whose size was readable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Ratio {
    pub no_reply: u64,
    pub total: u64,
}

impl Ratio {
    pub fn share(self) -> Option<f64> {
        (self.total > 0).then(|| self.no_reply as f64 / self.total as f64)
    }

    pub fn add(&mut self, other: Ratio) {
        self.no_reply += other.no_reply;
        self.total += other.total;
    }

    /// Whole percent, rounded.
    pub fn percent(self) -> u64 {
        percent(self.no_reply, self.total)
    }
}

/// `part` of `whole` in whole percent, half up (12.5 % is 13 %); 0 of nothing is 0. The one
/// rounding every report, the page and `diagnose` print.
pub fn percent(part: u64, whole: u64) -> u64 {
    (part.saturating_mul(100) + whole / 2)
        .checked_div(whole)
        .unwrap_or(0)
}

/// What the sessions say; its snake_case name is the `state` label of `sessions_verdict`.
#[apply(label_set!)]
pub enum SessionsState {
    /// At least `no_reply_ratio` of the sessions got no reply.
    Broken,
    /// Some apps, or one transport, got no reply while others work.
    Partial,
    /// More than a healthy Mac's share got no reply, less than the broken share.
    Inconclusive,
    /// At most `healthy_no_reply_ratio` got no reply.
    Working,
    /// Fewer than `min_sessions` sessions: no judgement.
    TooFew,
}

/// The thresholds (`sessions.no_reply_ratio`, `healthy_no_reply_ratio`, `min_sessions`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// Share of sessions without a reply from which the sessions say broken.
    pub no_reply_ratio: f64,
    /// Share up to which they say working: what a healthy Mac shows (dead servers, refusals).
    pub healthy_no_reply_ratio: f64,
    pub min_sessions: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            no_reply_ratio: 0.75,
            healthy_no_reply_ratio: 0.2,
            min_sessions: 5,
        }
    }
}

impl Thresholds {
    /// One group's state (an app, a transport, or all): never `partial`.
    fn group(self, r: Ratio) -> SessionsState {
        match r.share() {
            _ if r.total < u64::from(self.min_sessions.max(1)) => SessionsState::TooFew,
            Some(s) if s >= self.no_reply_ratio => SessionsState::Broken,
            Some(s) if s <= self.healthy_no_reply_ratio => SessionsState::Working,
            _ => SessionsState::Inconclusive,
        }
    }
}

/// Closes counted by app and by transport, the verdict's input.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub overall: Ratio,
    pub apps: BTreeMap<String, Ratio>,
    pub protos: BTreeMap<&'static str, Ratio>,
}

impl Tally {
    /// Adds `r` closes of `app` over `proto` (a transport no line named is left out of the
    /// per-transport groups, not of the others).
    pub fn add(&mut self, app: &str, proto: ProtoKey, r: Ratio) {
        self.overall.add(r);
        match self.apps.get_mut(app) {
            Some(a) => a.add(r),
            None => {
                self.apps.insert(app.to_owned(), r);
            }
        }
        if let Some(p) = proto {
            self.protos.entry(p.into()).or_default().add(r);
        }
    }
}

/// An app or a transport and how it fared.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Group {
    pub name: String,
    #[serde(flatten)]
    pub ratio: Ratio,
    pub state: SessionsState,
}

/// The sessions verdict: its state, what it was drawn from, and which groups failed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionsVerdict {
    pub state: SessionsState,
    #[serde(flatten)]
    pub ratio: Ratio,
    /// The span judged: the window's length, `0` for a whole log.
    pub window_seconds: u64,
    pub min_sessions: u32,
    /// Apps and transports that got no reply (broken ones for `partial`, broken and
    /// inconclusive ones otherwise), most failing first.
    pub failing: Vec<Group>,
    /// Apps and transports that work, when some others fail.
    pub working: Vec<String>,
}

impl SessionsVerdict {
    /// Most bypass sessions got no reply: a reason to ask for a probe, never to act.
    pub fn broken(&self) -> bool {
        self.state == SessionsState::Broken
    }

    /// One sentence: `inconclusive: 35% of 60 sessions got no reply (com.a 60% of 10)`.
    pub fn sentence(&self) -> String {
        let r = self.ratio;
        let head = match self.state {
            SessionsState::TooFew => {
                return format!(
                    "too few: {} sessions closed, {} needed to judge",
                    r.total, self.min_sessions
                );
            }
            s => format!("{s}: {}% of {} sessions got no reply", r.percent(), r.total),
        };
        let failing: Vec<String> = self
            .failing
            .iter()
            .map(|g| format!("{} {}% of {}", g.name, g.ratio.percent(), g.ratio.total))
            .collect();
        match (failing.is_empty(), self.working.is_empty()) {
            (true, _) => head,
            (false, true) => format!("{head} ({})", failing.join(", ")),
            (false, false) => format!(
                "{head}; no reply: {}; working: {}",
                failing.join(", "),
                self.working.join(", ")
            ),
        }
    }
}

/// The one decision. `window_seconds` only labels the span.
pub fn judge(t: Thresholds, tally: &Tally, window_seconds: u64) -> SessionsVerdict {
    let groups = |m: Vec<(String, Ratio)>| -> Vec<Group> {
        m.into_iter()
            .map(|(name, ratio)| Group {
                name,
                ratio,
                state: t.group(ratio),
            })
            .collect()
    };
    let apps = groups(tally.apps.iter().map(|(a, r)| (a.clone(), *r)).collect());
    let protos = groups(
        tally
            .protos
            .iter()
            .map(|(p, r)| ((*p).to_owned(), *r))
            .collect(),
    );
    let split = |gs: &[Group]| {
        let has = |s| gs.iter().any(|g| g.state == s);
        has(SessionsState::Broken) && has(SessionsState::Working)
    };
    let state = match t.group(tally.overall) {
        s @ (SessionsState::TooFew | SessionsState::Broken) => s,
        _ if split(&apps) || split(&protos) => SessionsState::Partial,
        s => s,
    };
    // Transports are named only when one of them works: "tcp 100%" beside every app says
    // nothing the apps do not.
    let transports_differ = protos.iter().any(|g| g.state == SessionsState::Working);
    let all = || {
        apps.iter()
            .chain(protos.iter().filter(move |_| transports_differ))
    };
    let fails = |g: &&Group| match state {
        SessionsState::Partial => g.state == SessionsState::Broken,
        _ => matches!(g.state, SessionsState::Broken | SessionsState::Inconclusive),
    };
    let working: Vec<String> = all()
        .filter(|g| g.state == SessionsState::Working)
        .map(|g| g.name.clone())
        .collect();
    let mut failing: Vec<Group> = match state {
        SessionsState::TooFew | SessionsState::Working => Vec::new(),
        // Everything failed: the overall share says it all.
        SessionsState::Broken if working.is_empty() => Vec::new(),
        _ => all().filter(fails).cloned().collect(),
    };
    failing.sort_by_key(|g| std::cmp::Reverse(g.ratio.percent()));
    let working = if failing.is_empty() {
        Vec::new()
    } else {
        working
    };
    SessionsVerdict {
        state,
        ratio: tally.overall,
        window_seconds,
        min_sessions: t.min_sessions,
        failing,
        working,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy_log::Proto;

    #[test]
    fn percent_rounds_half_up_and_nothing_is_zero() {
        assert_eq!(percent(1, 8), 13, "12.5 % is 13 %");
        assert_eq!(percent(3, 8), 38, "37.5 % is 38 %");
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(2, 3), 67);
        assert_eq!(percent(5, 5), 100);
        assert_eq!(percent(0, 0), 0);
        let r = Ratio {
            no_reply: 1,
            total: 8,
        };
        assert_eq!(r.percent(), percent(1, 8));
    }

    const T: Thresholds = Thresholds {
        no_reply_ratio: 0.75,
        healthy_no_reply_ratio: 0.2,
        min_sessions: 5,
    };

    /// App, transport, sessions without a reply, sessions.
    type Row<'a> = (&'a str, Proto, u64, u64);

    fn tally(rows: &[Row<'_>]) -> Tally {
        let mut t = Tally::default();
        for &(app, p, no_reply, total) in rows {
            t.add(app, Some(p), Ratio { no_reply, total });
        }
        t
    }

    fn state(rows: &[Row<'_>]) -> SessionsState {
        judge(T, &tally(rows), 0).state
    }

    use Proto::{Tcp, Udp};
    use SessionsState::*;

    /// Every row of the decision, at and beside each threshold.
    #[test]
    fn truth_table() {
        let cases: &[(&[Row<'_>], SessionsState)] = &[
            (&[], TooFew),
            (&[("a", Tcp, 4, 4)], TooFew),
            (&[("a", Tcp, 5, 5)], Broken),
            // 3 of 4 is the broken share itself.
            (
                &[("a", Tcp, 3, 4), ("b", Tcp, 0, 0), ("c", Tcp, 3, 4)],
                Broken,
            ),
            (&[("a", Tcp, 7, 10)], Inconclusive),
            (&[("a", Tcp, 3, 10)], Inconclusive),
            (&[("a", Tcp, 2, 10)], Working),
            (&[("a", Tcp, 0, 40)], Working),
            // One app fails, another works: partial, whatever the overall share.
            (&[("a", Tcp, 10, 10), ("b", Tcp, 0, 30)], Partial),
            (&[("a", Tcp, 5, 5), ("b", Tcp, 1, 100)], Partial),
            // The failing app has too few sessions to say: the overall share decides.
            (&[("a", Tcp, 4, 4), ("b", Tcp, 1, 100)], Working),
            // One transport fails, the other works.
            (&[("a", Udp, 10, 10), ("a", Tcp, 0, 20)], Partial),
            // Most fail, one app works: broken still (the stronger call).
            (&[("a", Tcp, 90, 90), ("b", Tcp, 0, 10)], Broken),
            // A third to a half fail everywhere: inconclusive, never working.
            (
                &[("a", Tcp, 5, 12), ("b", Tcp, 4, 10), ("c", Udp, 3, 9)],
                Inconclusive,
            ),
        ];
        for (rows, want) in cases {
            assert_eq!(state(rows), *want, "{rows:?}");
        }
    }

    #[test]
    fn sentences_name_what_failed() {
        let v = judge(
            T,
            &tally(&[("com.a", Tcp, 10, 10), ("com.b", Tcp, 0, 30)]),
            0,
        );
        assert_eq!(
            v.sentence(),
            "partial: 25% of 40 sessions got no reply; no reply: com.a 100% of 10; \
             working: com.b"
        );
        let v = judge(
            T,
            &tally(&[("com.a", Tcp, 6, 10), ("com.b", Tcp, 1, 10)]),
            0,
        );
        assert_eq!(
            v.sentence(),
            "inconclusive: 35% of 20 sessions got no reply; no reply: com.a 60% of 10; \
             working: com.b"
        );
        let v = judge(T, &tally(&[("com.a", Tcp, 40, 40)]), 0);
        assert_eq!(v.sentence(), "broken: 100% of 40 sessions got no reply");
        // One transport fails, the other works: named.
        let v = judge(
            T,
            &tally(&[
                ("com.a", Udp, 10, 10),
                ("com.a", Tcp, 0, 30),
                ("com.b", Tcp, 1, 10),
            ]),
            0,
        );
        assert_eq!(
            v.sentence(),
            "partial: 22% of 50 sessions got no reply; no reply: udp 100% of 10; \
             working: com.b, tcp"
        );
        assert_eq!(
            judge(T, &tally(&[("com.a", Tcp, 1, 2)]), 0).sentence(),
            "too few: 2 sessions closed, 5 needed to judge"
        );
        assert_eq!(
            judge(T, &tally(&[("com.a", Tcp, 1, 20)]), 0).sentence(),
            "working: 5% of 20 sessions got no reply"
        );
    }
}
