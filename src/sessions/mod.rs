//! Session correlation: lines of one session share an `id` within one proxy start.
//!
//! The tracker turns events into per-app counts. Lines without an app (`Unable to create
//! channel`, socket errors) take the app of their session; sessions whose creation line was
//! never seen (error log level, a rotation, the agent started mid-session) take the app from
//! any later line that names it, else `unknown`. The open table is bounded: a log that never
//! closes its sessions cannot grow memory; the oldest session (lowest id) is evicted.

pub mod apps;
pub mod counts;
pub mod window;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use apps::{AppId, Apps};
pub use counts::{AppCounts, CloseOutcome, Counts, DURATION_BUCKETS_SECS, ProtoKey, proto_label};

use crate::proxy_log::{Event, LocalMillis, Proto, Size, Text};

/// A session whose creation line was seen and whose destructor was not yet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct OpenSession {
    app: AppId,
    proto: Proto,
    opened: Option<LocalMillis>,
}

/// Why sessions left the open table without a destructor line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evictions {
    /// The table was full.
    pub table_full: u64,
    /// `Proxy started!`: ids restart, the old sessions are gone.
    pub proxy_restart: u64,
    /// A creation line reused an id still open (the proxy restarted without saying so).
    pub id_reused: u64,
}

/// A closed session, for consumers that keep their own window (health).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Closed {
    pub app: AppId,
    pub proto: ProtoKey,
    pub outcome: CloseOutcome,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionTracker {
    open: BTreeMap<u64, OpenSession>,
    max_open: usize,
    apps: Apps,
    counts: Counts,
    evictions: Evictions,
    /// Closed sessions since the last [`SessionTracker::drain_closed`], when someone listens.
    #[serde(skip)]
    closed_log: Option<Vec<Closed>>,
}

impl SessionTracker {
    pub fn new(max_open: usize, max_apps: usize) -> SessionTracker {
        SessionTracker {
            open: BTreeMap::new(),
            max_open: max_open.max(1),
            apps: Apps::new(max_apps),
            counts: Counts::default(),
            evictions: Evictions::default(),
            closed_log: None,
        }
    }

    /// Applies one event, with the time of its line.
    pub fn apply(&mut self, event: &Event<'_>, time: Option<LocalMillis>) {
        match *event {
            Event::SessionOpened { id, proto, app, .. } => self.open_session(id, proto, app, time),
            Event::FlowError {
                id,
                proto,
                kind,
                app,
            } => {
                let (app, proto) = self.resolve(id, proto, app);
                self.counts.row(app, proto).errors[kind.index()] += 1;
            }
            Event::SessionClosed {
                id,
                proto,
                rx,
                tx,
                app,
            } => self.close_session(id, proto, rx, tx, app, time),
            Event::ProxyStarted => self.abandon_all(),
            _ => {}
        }
    }

    fn open_session(&mut self, id: u64, proto: Proto, app: Text<'_>, time: Option<LocalMillis>) {
        let app = self.apps.intern(app);
        if let Some(old) = self.open.remove(&id) {
            self.evictions.id_reused += 1;
            self.counts.row(old.app, Some(old.proto)).open -= 1;
        }
        if self.open.len() >= self.max_open
            && let Some((_, old)) = self.open.pop_first()
        {
            self.evictions.table_full += 1;
            self.counts.row(old.app, Some(old.proto)).open -= 1;
        }
        self.open.insert(
            id,
            OpenSession {
                app,
                proto,
                opened: time,
            },
        );
        let row = self.counts.row(app, Some(proto));
        row.opened += 1;
        row.open += 1;
    }

    /// App and transport of a line: the session's when it is open, else what the line says.
    fn resolve(
        &mut self,
        id: u64,
        proto: Option<Proto>,
        app: Option<Text<'_>>,
    ) -> (AppId, ProtoKey) {
        match self.open.get(&id) {
            Some(s) => (s.app, Some(s.proto)),
            None => (app.map_or(AppId::UNKNOWN, |a| self.apps.intern(a)), proto),
        }
    }

    fn close_session(
        &mut self,
        id: u64,
        proto: Option<Proto>,
        rx: Size,
        tx: Size,
        app: Option<Text<'_>>,
        time: Option<LocalMillis>,
    ) {
        let session = self.open.remove(&id);
        let (app, proto) = match &session {
            Some(s) => (s.app, Some(s.proto)),
            None => (app.map_or(AppId::UNKNOWN, |a| self.apps.intern(a)), proto),
        };
        let outcome = outcome(rx, tx);
        let row = self.counts.row(app, proto);
        row.closed[outcome as usize] += 1;
        row.rx_bytes += rx.counted_bytes();
        row.tx_bytes += tx.counted_bytes();
        if let Some(s) = session {
            row.open -= 1;
            if let (Some(from), Some(to)) = (s.opened, time) {
                // Two threads share the log queue: times may go back by a few ms.
                row.observe_duration((to.0 - from.0).max(0) as u64);
            }
        }
        if let Some(log) = &mut self.closed_log {
            log.push(Closed {
                app,
                proto,
                outcome,
            });
        }
    }

    fn abandon_all(&mut self) {
        self.evictions.proxy_restart += self.open.len() as u64;
        for (_, s) in std::mem::take(&mut self.open) {
            self.counts.row(s.app, Some(s.proto)).open -= 1;
        }
    }

    /// Applies a new bound on the open table (a restored checkpoint may come from another config).
    pub fn set_limits(&mut self, max_open: usize) {
        self.max_open = max_open.max(1);
        while self.open.len() > self.max_open {
            if let Some((_, old)) = self.open.pop_first() {
                self.evictions.table_full += 1;
                self.counts.row(old.app, Some(old.proto)).open -= 1;
            }
        }
    }

    /// Starts (or stops) recording closed sessions for [`SessionTracker::drain_closed`].
    pub fn record_closed(&mut self, on: bool) {
        self.closed_log = on.then(Vec::new);
    }

    /// Sessions closed since the last call (empty unless recording).
    pub fn drain_closed(&mut self) -> Vec<Closed> {
        self.closed_log
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    pub fn apps(&self) -> &Apps {
        &self.apps
    }
    pub fn counts(&self) -> &Counts {
        &self.counts
    }
    pub fn evictions(&self) -> &Evictions {
        &self.evictions
    }
    pub fn open_len(&self) -> usize {
        self.open.len()
    }
}

/// `zero_bytes` only when both sizes are exactly `Zero KB`.
pub fn outcome(rx: Size, tx: Size) -> CloseOutcome {
    match (rx, tx) {
        (Size::Zero, Size::Zero) => CloseOutcome::ZeroBytes,
        (Size::Bytes(_) | Size::UnderTenth, _) | (_, Size::Bytes(_) | Size::UnderTenth) => {
            CloseOutcome::Transferred
        }
        _ => CloseOutcome::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy_log::ErrorKind;

    fn open(t: &mut SessionTracker, id: u64, app: &str) {
        t.apply(
            &Event::SessionOpened {
                id,
                proto: Proto::Tcp,
                app: app.into(),
                endpoint: None,
                bind_ip: "10.0.15.15".into(),
                local_endpoint: None,
            },
            Some(LocalMillis(1000)),
        );
    }
    fn close(t: &mut SessionTracker, id: u64, rx: Size, app: Option<&str>) {
        t.apply(
            &Event::SessionClosed {
                id,
                proto: Some(Proto::Tcp),
                rx,
                tx: Size::Zero,
                app: app.map(Text::from),
            },
            Some(LocalMillis(3500)),
        );
    }
    fn row<'a>(t: &'a SessionTracker, app: &str, proto: ProtoKey) -> &'a AppCounts {
        t.counts()
            .iter()
            .find(|(a, p, _)| t.apps().name(*a) == app && *p == proto)
            .map(|(_, _, c)| c)
            .expect(app)
    }

    #[test]
    fn errors_take_the_app_of_their_session() {
        let mut t = SessionTracker::new(16, 16);
        open(&mut t, 1, "com.a");
        t.apply(
            &Event::FlowError {
                id: 1,
                proto: Some(Proto::Tcp),
                kind: ErrorKind::ConnectTimeout,
                app: None,
            },
            None,
        );
        t.apply(
            &Event::FlowError {
                id: 2,
                proto: None,
                kind: ErrorKind::ConnectionReset,
                app: None,
            },
            None,
        );
        close(&mut t, 1, Size::Zero, None);
        let a = row(&t, "com.a", Some(Proto::Tcp));
        assert_eq!(
            (
                a.opened,
                a.closed(CloseOutcome::ZeroBytes),
                a.errors(ErrorKind::ConnectTimeout),
                a.open
            ),
            (1, 1, 1, 0)
        );
        assert_eq!((a.duration_count, a.duration_sum_ms), (1, 2500));
        assert_eq!(
            row(&t, "unknown", None).errors(ErrorKind::ConnectionReset),
            1
        );
    }

    #[test]
    fn close_without_open_takes_app_from_line() {
        let mut t = SessionTracker::new(16, 16);
        close(&mut t, 7, Size::Bytes(5_000_000), Some("com.b"));
        close(&mut t, 8, Size::UnderTenth, None);
        let b = row(&t, "com.b", Some(Proto::Tcp));
        assert_eq!(
            (
                b.closed(CloseOutcome::Transferred),
                b.rx_bytes,
                b.open,
                b.duration_count
            ),
            (1, 5_000_000, 0, 0)
        );
        assert_eq!(
            row(&t, "unknown", Some(Proto::Tcp)).closed(CloseOutcome::Transferred),
            1
        );
    }

    #[test]
    fn restart_and_full_table_evict_and_ids_restart() {
        let mut t = SessionTracker::new(2, 16);
        for id in 1..=3 {
            open(&mut t, id, "com.a");
        }
        assert_eq!((t.open_len(), t.evictions().table_full), (2, 1));
        t.apply(&Event::ProxyStarted, None);
        assert_eq!((t.open_len(), t.evictions().proxy_restart), (0, 2));
        open(&mut t, 1, "com.b");
        close(&mut t, 1, Size::Zero, Some("com.a"));
        assert_eq!(
            row(&t, "com.b", Some(Proto::Tcp)).closed(CloseOutcome::ZeroBytes),
            1
        );
        assert_eq!(row(&t, "com.a", Some(Proto::Tcp)).open, 0);
    }

    #[test]
    fn outcomes() {
        assert_eq!(outcome(Size::Zero, Size::Zero), CloseOutcome::ZeroBytes);
        assert_eq!(
            outcome(Size::UnderTenth, Size::Zero),
            CloseOutcome::Transferred
        );
        assert_eq!(outcome(Size::Zero, Size::Unparsed), CloseOutcome::Unknown);
        assert_eq!(
            outcome(Size::Unparsed, Size::Bytes(1)),
            CloseOutcome::Transferred
        );
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut t = SessionTracker::new(16, 16);
        open(&mut t, 1, "com.a");
        let mut back: SessionTracker =
            serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        close(&mut back, 1, Size::Zero, None);
        assert_eq!(row(&back, "com.a", Some(Proto::Tcp)).duration_count, 1);
    }
}
