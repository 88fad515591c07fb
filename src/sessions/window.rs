//! Session closes over a sliding window, fed by the log stage, and the one sessions verdict
//! drawn from it with the config's thresholds (`fallback.zero_byte_ratio`, `min_sessions`,
//! `window_secs`): the fallback policy, `/health` and `/metrics` (`sessions_verdict`, which the
//! alert rules read) all take it from [`SessionWindow::verdict`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use macro_rules_attribute::apply;
use serde::Serialize;

use crate::labels::label_set;

/// Zero-byte closes out of all closes, over the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Ratio {
    pub zero: u64,
    pub total: u64,
}

impl Ratio {
    pub fn share(self) -> Option<f64> {
        (self.total > 0).then(|| self.zero as f64 / self.total as f64)
    }
}

/// What the sessions in the window say; its snake_case name is the `state` label of
/// `sessions_verdict`.
#[apply(label_set!)]
pub enum SessionsState {
    /// At least `min_sessions` closed and at least `zero_byte_ratio` of them with zero bytes.
    ZeroBytes,
    /// Enough sessions, and fewer of them with zero bytes.
    Healthy,
    /// Fewer than `min_sessions` closed: no judgement.
    TooFew,
}

/// The sessions verdict at one moment: its state and what it was drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SessionsVerdict {
    pub state: SessionsState,
    #[serde(flatten)]
    pub ratio: Ratio,
    pub window_seconds: u64,
}

impl SessionsVerdict {
    /// Most bypass sessions close with zero bytes: a reason to ask for a probe, never to act.
    pub fn zero_bytes(&self) -> bool {
        self.state == SessionsState::ZeroBytes
    }
}

/// When the sessions say "zero bytes" (`fallback.zero_byte_ratio`, `fallback.min_sessions`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub zero_byte_ratio: f64,
    pub min_sessions: u32,
}

impl Thresholds {
    /// The sessions verdict's rule, for closes over any span (the window, or a whole log for
    /// `analyze`).
    pub fn judge(self, ratio: Ratio) -> SessionsState {
        if ratio.total < u64::from(self.min_sessions) {
            SessionsState::TooFew
        } else if ratio.share().is_some_and(|r| r >= self.zero_byte_ratio) {
            SessionsState::ZeroBytes
        } else {
            SessionsState::Healthy
        }
    }
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
    events: VecDeque<(Instant, Arc<str>, bool)>,
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

    /// The sessions verdict over the window ending at `now`: the one place the thresholds
    /// are applied.
    pub fn verdict(&self, now: Instant) -> SessionsVerdict {
        let ratio = self.ratio(now);
        SessionsVerdict {
            state: self.thresholds.judge(ratio),
            ratio,
            window_seconds: self.window.as_secs(),
        }
    }

    /// A session of `app` closed at `at`, having moved no byte in either direction when
    /// `zero_bytes`. Closes are expected roughly in time order; late ones are kept.
    pub fn record_close(&mut self, app: &str, at: Instant, zero_bytes: bool) {
        let app = self
            .events
            .iter()
            .rev()
            .find(|(_, a, _)| &**a == app)
            .map(|(_, a, _)| a.clone())
            .unwrap_or_else(|| Arc::from(app));
        self.events.push_back((at, app, zero_bytes));
        while self.events.len() > self.max_events {
            self.events.pop_front();
        }
        self.prune(at);
    }

    fn live(&self, now: Instant) -> impl Iterator<Item = &(Instant, Arc<str>, bool)> {
        let start = now.checked_sub(self.window);
        self.events
            .iter()
            .filter(move |(t, _, _)| start.is_none_or(|s| *t > s))
    }

    fn prune(&mut self, now: Instant) {
        if let Some(start) = now.checked_sub(self.window) {
            while self.events.front().is_some_and(|(t, _, _)| *t <= start) {
                self.events.pop_front();
            }
        }
    }

    /// All apps together over the window ending at `now`.
    pub fn ratio(&self, now: Instant) -> Ratio {
        let mut r = Ratio::default();
        for (_, _, zero) in self.live(now) {
            r.total += 1;
            r.zero += u64::from(*zero);
        }
        r
    }

    /// Per app over the window ending at `now`, sorted by app name.
    pub fn per_app(&self, now: Instant) -> Vec<AppRatio> {
        let mut map: std::collections::BTreeMap<&str, Ratio> = Default::default();
        for (_, app, zero) in self.live(now) {
            let r = map.entry(app).or_default();
            r.total += 1;
            r.zero += u64::from(*zero);
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

/// The window as shared between the log pipeline (writer), the controller and health.
pub type SharedWindow = Arc<std::sync::Mutex<SessionWindow>>;

/// When the sessions become evidence of a broken bypass (the window's verdict turns
/// [`SessionsState::ZeroBytes`]): edge-triggered, so a window that stays there asks for one
/// confirming round, not one per close. It only asks for a probe round; acting still needs
/// the probes to agree.
#[derive(Debug, Default)]
pub struct EvidenceEdge {
    above: bool,
}

impl EvidenceEdge {
    /// The window's verdict now; true when it has just turned to zero bytes.
    pub fn crossed(&mut self, v: &SessionsVerdict) -> bool {
        let above = v.zero_bytes();
        let crossed = above && !self.above;
        self.above = above;
        crossed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        zero_byte_ratio: 0.75,
        min_sessions: 4,
    };

    #[test]
    fn slides_and_counts_per_app() {
        let t0 = Instant::now();
        let mut w = SessionWindow::new(Duration::from_secs(300), T);
        w.record_close("Plex", t0, true);
        w.record_close("Plex", t0 + Duration::from_secs(10), false);
        w.record_close("curl", t0 + Duration::from_secs(20), true);
        assert_eq!(
            w.ratio(t0 + Duration::from_secs(30)),
            Ratio { zero: 2, total: 3 }
        );
        // The first close leaves the window 300 s after it happened.
        assert_eq!(
            w.ratio(t0 + Duration::from_secs(305)),
            Ratio { zero: 1, total: 2 }
        );
        let apps = w.per_app(t0 + Duration::from_secs(30));
        assert_eq!(apps[0].app, "Plex");
        assert_eq!(apps[0].ratio, Ratio { zero: 1, total: 2 });
        assert_eq!(w.ratio(t0 + Duration::from_secs(1000)).total, 0);
    }

    #[test]
    fn evidence_is_an_edge() {
        let t0 = Instant::now();
        let mut w = SessionWindow::new(Duration::from_secs(60), T);
        let mut e = EvidenceEdge::default();
        let mut seen = Vec::new();
        // Too few; turns zero bytes; stays; healthy; zero bytes again; the window empties.
        for (zero, at) in [
            (true, 0),
            (true, 0),
            (true, 0),
            (true, 0),
            (false, 0),
            (false, 0),
        ] {
            w.record_close("a", t0 + Duration::from_secs(at), zero);
            seen.push(e.crossed(&w.verdict(t0)));
        }
        for _ in 0..6 {
            w.record_close("a", t0, true);
        }
        seen.push(e.crossed(&w.verdict(t0)));
        seen.push(e.crossed(&w.verdict(t0 + Duration::from_secs(61))));
        assert_eq!(seen, [false, false, false, true, false, false, true, false]);
    }

    #[test]
    fn verdict_applies_the_thresholds() {
        let t0 = Instant::now();
        let mut w = SessionWindow::new(Duration::from_secs(60), T);
        for zero in [true, true, true] {
            w.record_close("a", t0, zero);
        }
        assert_eq!(w.verdict(t0).state, SessionsState::TooFew);
        w.record_close("b", t0, false);
        // 3 of 4 = 0.75: at the threshold counts.
        assert_eq!(w.verdict(t0).state, SessionsState::ZeroBytes);
        w.record_close("b", t0, false);
        assert_eq!(w.verdict(t0).state, SessionsState::Healthy);
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
            w.record_close("a", t0 + Duration::from_millis(i), true);
        }
        assert_eq!(w.ratio(t0 + Duration::from_secs(1)).total, 3);
    }
}
