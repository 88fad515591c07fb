//! Session closes over a sliding window, fed by the log stage: the zero-byte share the
//! fallback policy and health read.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

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
    max_events: usize,
    events: VecDeque<(Instant, Arc<str>, bool)>,
}

impl SessionWindow {
    pub fn new(window: Duration) -> Self {
        Self::with_capacity(window, 65_536)
    }

    pub fn with_capacity(window: Duration, max_events: usize) -> Self {
        SessionWindow {
            window,
            max_events: max_events.max(1),
            events: VecDeque::new(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slides_and_counts_per_app() {
        let t0 = Instant::now();
        let mut w = SessionWindow::new(Duration::from_secs(300));
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
    fn bounded() {
        let t0 = Instant::now();
        let mut w = SessionWindow::with_capacity(Duration::from_secs(300), 3);
        for i in 0..10 {
            w.record_close("a", t0 + Duration::from_millis(i), true);
        }
        assert_eq!(w.ratio(t0 + Duration::from_secs(1)).total, 3);
    }
}
