//! Session closes over a sliding window, fed by the log stage, and the sessions verdict over
//! it ([`super::verdict::judge`], thresholds `sessions.no_reply_ratio`,
//! `healthy_no_reply_ratio`, `min_sessions`, `window_secs`): the fallback policy, `/health`,
//! the status page and `/metrics` (`sessions_verdict`, which the alert rules read) all take it
//! from [`SessionWindow::verdict`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::counts::{ProtoKey, Reply};
pub use super::verdict::{Ratio, SessionsState, SessionsVerdict, Tally, Thresholds, judge};

/// One close in the window.
#[derive(Debug)]
struct Close {
    at: Instant,
    app: Arc<str>,
    proto: ProtoKey,
    no_reply: bool,
}

/// One app's closes over the window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AppRatio {
    pub app: String,
    #[serde(flatten)]
    pub ratio: Ratio,
}

/// Closes of proxied (bypass) sessions in the last `window`, oldest first. Bounded: past
/// `max_events` the oldest are dropped.
#[derive(Debug)]
pub struct SessionWindow {
    window: Duration,
    thresholds: Thresholds,
    max_events: usize,
    events: VecDeque<Close>,
}

impl SessionWindow {
    pub fn new(window: Duration, thresholds: Thresholds) -> Self {
        Self::with_capacity(window, thresholds, 65_536)
    }

    pub fn with_capacity(window: Duration, thresholds: Thresholds, max_events: usize) -> Self {
        SessionWindow {
            window,
            thresholds,
            max_events: max_events.max(1),
            events: VecDeque::new(),
        }
    }

    /// The sessions verdict over the window ending at `now`.
    pub fn verdict(&self, now: Instant) -> SessionsVerdict {
        let mut tally = Tally::default();
        for c in self.live(now) {
            tally.add(&c.app, c.proto, ratio_of(c));
        }
        judge(self.thresholds, &tally, self.window.as_secs())
    }

    /// A session of `app` over `proto` closed at `at`, having received what `reply` says
    /// (closes whose size could not be read are not judged). Closes are expected roughly in
    /// time order; late ones are kept.
    pub fn record_close(
        &mut self,
        app: impl Into<Arc<str>>,
        proto: ProtoKey,
        at: Instant,
        reply: Reply,
    ) {
        if reply == Reply::Unknown {
            return;
        }
        let app = app.into();
        self.events.push_back(Close {
            at,
            app,
            proto,
            no_reply: reply == Reply::NoReply,
        });
        while self.events.len() > self.max_events {
            self.events.pop_front();
        }
        self.prune(at);
    }

    fn live(&self, now: Instant) -> impl Iterator<Item = &Close> {
        let start = now.checked_sub(self.window);
        self.events
            .iter()
            .filter(move |c| start.is_none_or(|s| c.at > s))
    }

    fn prune(&mut self, now: Instant) {
        if let Some(start) = now.checked_sub(self.window) {
            while self.events.front().is_some_and(|c| c.at <= start) {
                self.events.pop_front();
            }
        }
    }

    /// All apps together over the window ending at `now`.
    pub fn ratio(&self, now: Instant) -> Ratio {
        let mut r = Ratio::default();
        for c in self.live(now) {
            r.add(ratio_of(c));
        }
        r
    }

    /// Per app over the window ending at `now`, sorted by app name.
    pub fn per_app(&self, now: Instant) -> Vec<AppRatio> {
        let mut map: std::collections::BTreeMap<&str, Ratio> = Default::default();
        for c in self.live(now) {
            map.entry(&c.app).or_default().add(ratio_of(c));
        }
        map.into_iter()
            .map(|(app, ratio)| AppRatio {
                app: app.to_owned(),
                ratio,
            })
            .collect()
    }

    pub fn window(&self) -> Duration {
        self.window
    }
}

fn ratio_of(c: &Close) -> Ratio {
    Ratio {
        no_reply: u64::from(c.no_reply),
        total: 1,
    }
}

/// The window as shared between the log stage (writer), the controller and health.
///
/// Every holder recovers a poisoned lock (`unwrap_or_else(|e| e.into_inner())`), as every
/// holder of the log's shared state does: each write is one fold of one event, so what a
/// panicking writer leaves is still counts, and a scrape, the page or a round must not turn
/// one panic into a dead agent.
pub type SharedWindow = Arc<std::sync::Mutex<SessionWindow>>;

/// When the sessions become evidence of a broken bypass (the window's verdict turns
/// [`SessionsState::Broken`]): edge-triggered, so a window that stays there asks for one
/// confirming round, not one per close. It only asks for a probe round; acting still needs
/// the probes to agree.
#[derive(Debug, Default)]
pub struct EvidenceEdge {
    above: bool,
}

impl EvidenceEdge {
    /// The window's verdict now; true when it has just turned to zero bytes.
    pub fn crossed(&mut self, v: &SessionsVerdict) -> bool {
        let above = v.broken();
        let crossed = above && !self.above;
        self.above = above;
        crossed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy_log::Proto;

    const T: Thresholds = Thresholds {
        no_reply_ratio: 0.75,
        healthy_no_reply_ratio: 0.2,
        min_sessions: 4,
    };
    const TCP: ProtoKey = Some(Proto::Tcp);

    fn reply(no_reply: bool) -> Reply {
        if no_reply {
            Reply::NoReply
        } else {
            Reply::Received
        }
    }

    #[test]
    fn slides_and_counts_per_app() {
        let t0 = Instant::now();
        let mut w = SessionWindow::new(Duration::from_secs(300), T);
        w.record_close("Plex", TCP, t0, Reply::NoReply);
        w.record_close("Plex", TCP, t0 + Duration::from_secs(10), Reply::Received);
        w.record_close("curl", TCP, t0 + Duration::from_secs(20), Reply::NoReply);
        // Not judged: its size could not be read.
        w.record_close("curl", TCP, t0 + Duration::from_secs(20), Reply::Unknown);
        assert_eq!(
            w.ratio(t0 + Duration::from_secs(30)),
            Ratio {
                no_reply: 2,
                total: 3
            }
        );
        // The first close leaves the window 300 s after it happened.
        assert_eq!(
            w.ratio(t0 + Duration::from_secs(305)),
            Ratio {
                no_reply: 1,
                total: 2
            }
        );
        let apps = w.per_app(t0 + Duration::from_secs(30));
        assert_eq!(apps[0].app, "Plex");
        assert_eq!(
            apps[0].ratio,
            Ratio {
                no_reply: 1,
                total: 2
            }
        );
        assert_eq!(w.ratio(t0 + Duration::from_secs(1000)).total, 0);
    }

    #[test]
    fn evidence_is_an_edge() {
        let t0 = Instant::now();
        let mut w = SessionWindow::new(Duration::from_secs(60), T);
        let mut e = EvidenceEdge::default();
        let mut seen = Vec::new();
        // Too few; turns broken; stays; not broken; broken again; the window empties.
        for (no_reply, at) in [
            (true, 0),
            (true, 0),
            (true, 0),
            (true, 0),
            (false, 0),
            (false, 0),
        ] {
            w.record_close("a", TCP, t0 + Duration::from_secs(at), reply(no_reply));
            seen.push(e.crossed(&w.verdict(t0)));
        }
        for _ in 0..6 {
            w.record_close("a", TCP, t0, Reply::NoReply);
        }
        seen.push(e.crossed(&w.verdict(t0)));
        seen.push(e.crossed(&w.verdict(t0 + Duration::from_secs(61))));
        assert_eq!(seen, [false, false, false, true, false, false, true, false]);
    }

    #[test]
    fn verdict_is_the_one_judgement_over_the_window() {
        let t0 = Instant::now();
        let mut w = SessionWindow::new(Duration::from_secs(60), T);
        for _ in 0..3 {
            w.record_close("a", TCP, t0, Reply::NoReply);
        }
        assert_eq!(w.verdict(t0).state, SessionsState::TooFew);
        w.record_close("b", TCP, t0, Reply::Received);
        // 3 of 4 = 0.75: at the threshold counts.
        assert_eq!(w.verdict(t0).state, SessionsState::Broken);
        w.record_close("b", TCP, t0, Reply::Received);
        // 3 of 5 is neither broken nor what a healthy Mac shows.
        let v = w.verdict(t0);
        assert_eq!(v.state, SessionsState::Inconclusive);
        assert_eq!(v.sentence(), "inconclusive: 60% of 5 sessions got no reply");
        for _ in 0..6 {
            w.record_close("b", TCP, t0, Reply::Received);
        }
        // a: 3 of 3 (too few alone), b: 0 of 8: 27%, still inconclusive, never working.
        assert_eq!(w.verdict(t0).state, SessionsState::Inconclusive);
        w.record_close("a", TCP, t0, Reply::NoReply);
        let v = w.verdict(t0);
        assert_eq!(v.state, SessionsState::Partial);
        assert_eq!(v.failing[0].name, "a");
        assert_eq!(v.working, ["b"]);
        assert_eq!(
            w.verdict(t0 + Duration::from_secs(61)).state,
            SessionsState::TooFew
        );
    }

    #[test]
    fn bounded() {
        let t0 = Instant::now();
        let mut w = SessionWindow::with_capacity(Duration::from_secs(300), T, 3);
        for i in 0..10 {
            w.record_close("a", TCP, t0 + Duration::from_millis(i), Reply::NoReply);
        }
        assert_eq!(w.ratio(t0 + Duration::from_secs(1)).total, 3);
    }
}
