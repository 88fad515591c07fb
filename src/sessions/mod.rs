//! Session correlation: lines of one session share an `id` within one proxy start.
//!
//! The tracker turns events into per-app counts. Lines without an app (`Unable to create
//! channel`, socket errors) take the app of their session; sessions whose creation line was
//! never seen (error log level, a rotation, the agent started mid-session) take the app from
//! any later line that names it, else `unknown`. The open table is bounded: a log that never
//! closes its sessions cannot grow memory; the oldest session (lowest id) is evicted.
//!
//! The error-level log lives in `/tmp`, where anyone can write lines: its sessions are kept
//! in a table of their own ([`SessionTracker::apply_error`]), so a forged `Proxy started!` or
//! destructor there can evict or close only sessions of the error log, never the debug log's.

pub mod apps;
pub mod counts;
pub mod window;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use apps::{AppId, Apps};
pub use counts::{AppCounts, CloseOutcome, Counts, DURATION_BUCKETS_SECS, ProtoKey, proto_label};

use strum::EnumCount;

use crate::proxy_log::{Event, LocalMillis, Proto, RefusedReason, Size, Text};

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
    /// Open sessions of the error-level log, apart from the debug log's (`open`).
    #[serde(default)]
    error_open: BTreeMap<u64, OpenSession>,
    /// Flows matched and left without a session, by reason, per app id (dense, as `counts`).
    #[serde(default)]
    refused: Vec<[u64; RefusedReason::COUNT]>,
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
            error_open: BTreeMap::new(),
            refused: Vec::new(),
            closed_log: None,
        }
    }

    /// Applies one event of the error-level log: like [`apply`](Self::apply), on the error
    /// log's own open table (counts and app labels are shared).
    pub fn apply_error(&mut self, event: &Event<'_>, time: Option<LocalMillis>) {
        // Swapping two maps moves three words each: cheaper than a table parameter everywhere.
        std::mem::swap(&mut self.open, &mut self.error_open);
        self.apply(event, time);
        std::mem::swap(&mut self.open, &mut self.error_open);
    }

    /// Apps PIA itself names as bypass apps (`Managing bypass apps: [...]` in the debug log):
    /// they get a label even once junk filled the cap.
    pub fn reserve_apps(&mut self, list: Text<'_>) {
        for name in quoted(list.bytes()) {
            self.apps.reserve(Text(name));
        }
    }

    /// Applies one event of the debug log, with the time of its line.
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
            Event::FlowRefused { app, reason } => self.refuse(app, reason),
            _ => {}
        }
    }

    /// A flow of `app` that got no session; an app the line leaves empty (a flow matched by
    /// path, without a signing id) is `unknown`. Labels are bounded by the app cap.
    fn refuse(&mut self, app: Text<'_>, reason: RefusedReason) {
        let app = if app.bytes().is_empty() {
            AppId::UNKNOWN
        } else {
            self.apps.intern(app)
        };
        let i = app.0 as usize;
        if i >= self.refused.len() {
            self.refused.resize(i + 1, [0; RefusedReason::COUNT]);
        }
        self.refused[i][reason as usize] += 1;
    }

    /// Refused flows by app, by reason ([`RefusedReason`] order), for apps that have any.
    pub fn refused(&self) -> impl Iterator<Item = (AppId, &[u64; RefusedReason::COUNT])> {
        self.refused
            .iter()
            .enumerate()
            .filter(|(_, row)| row.iter().any(|&n| n > 0))
            .map(|(i, row)| (AppId(i as u32), row))
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
        // Sizes come from the log: a few forged `999 TB` lines must not wrap a counter.
        row.rx_bytes = row.rx_bytes.saturating_add(rx.counted_bytes());
        row.tx_bytes = row.tx_bytes.saturating_add(tx.counted_bytes());
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

    /// Applies the config's bounds (a restored checkpoint may come from another config): the
    /// open table and the number of app labels.
    pub fn set_limits(&mut self, max_open: usize, max_apps: usize) {
        self.apps.set_cap(max_apps);
        self.max_open = max_open.max(1);
        for _ in 0..2 {
            while self.open.len() > self.max_open {
                if let Some((_, old)) = self.open.pop_first() {
                    self.evictions.table_full += 1;
                    self.counts.row(old.app, Some(old.proto)).open -= 1;
                }
            }
            std::mem::swap(&mut self.open, &mut self.error_open);
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
    /// Every open session names a known app, and each row's `open` is the number of its
    /// sessions in the tables: what the counting relies on (a bad app id would index far
    /// past the rows, a wrong `open` would underflow).
    pub fn check(&self) -> Result<(), String> {
        self.apps.check()?;
        let mut want: std::collections::HashMap<(AppId, ProtoKey), u64> = Default::default();
        for s in self.open.values().chain(self.error_open.values()) {
            if s.app.0 as usize >= self.apps.len() {
                return Err(format!("an open session names app #{}, unknown", s.app.0));
            }
            *want.entry((s.app, Some(s.proto))).or_default() += 1;
        }
        if self.refused.len() > self.apps.len() {
            return Err(format!(
                "refused flows for app #{}, unknown",
                self.refused.len() - 1
            ));
        }
        for (app, proto, c) in self.counts.iter() {
            if app.0 as usize >= self.apps.len() {
                return Err(format!("counts for app #{}, unknown", app.0));
            }
            if c.open != want.get(&(app, proto)).copied().unwrap_or(0) {
                return Err(format!(
                    "app {} has {} open sessions counted but not as many in the table",
                    self.apps.name(app),
                    c.open
                ));
            }
        }
        Ok(())
    }

    pub fn open_len(&self) -> usize {
        self.open.len() + self.error_open.len()
    }
}

/// The `"..."` strings of a printed list (`["a", "b"]`), without escapes (ids have none).
fn quoted(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|&c| c == b'"').skip(1).step_by(2)
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
    fn the_error_logs_lines_cannot_touch_the_debug_logs_sessions() {
        let mut t = SessionTracker::new(16, 16);
        open(&mut t, 1, "com.a");
        // Forged in the error log: a restart and a destructor of the same id.
        t.apply_error(&Event::ProxyStarted, None);
        t.apply_error(
            &Event::SessionClosed {
                id: 1,
                proto: Some(Proto::Tcp),
                rx: Size::Zero,
                tx: Size::Zero,
                app: Some("com.a".into()),
            },
            None,
        );
        assert_eq!((t.open_len(), t.evictions().proxy_restart), (1, 0));
        close(&mut t, 1, Size::Bytes(5), None);
        let a = row(&t, "com.a", Some(Proto::Tcp));
        assert_eq!((a.open, a.duration_count), (0, 1));
    }

    #[test]
    fn pias_bypass_apps_get_labels_before_junk() {
        let mut t = SessionTracker::new(16, 2);
        open(&mut t, 1, "junk.a");
        open(&mut t, 2, "junk.b");
        t.reserve_apps(
            "[\"com.plexapp.plexmediaserver\", \"bad id\", \"com.apple.Safari\"]".into(),
        );
        open(&mut t, 3, "com.plexapp.plexmediaserver");
        open(&mut t, 4, "junk.c");
        assert_eq!(
            row(&t, "com.plexapp.plexmediaserver", Some(Proto::Tcp)).opened,
            1
        );
        assert_eq!(row(&t, "other", Some(Proto::Tcp)).opened, 1);
        assert_eq!((t.apps().folded(), t.apps().invalid()), (1, 1));
    }

    #[test]
    fn refused_flows_count_per_app_and_survive_a_checkpoint() {
        let mut t = SessionTracker::new(16, 16);
        let refuse = |t: &mut SessionTracker, app: &'static str, reason| {
            t.apply(
                &Event::FlowRefused {
                    app: app.into(),
                    reason,
                },
                None,
            )
        };
        refuse(&mut t, "com.a", RefusedReason::NoBindIp);
        refuse(&mut t, "com.a", RefusedReason::NoBindIp);
        refuse(&mut t, "", RefusedReason::OpenFailed);
        let back: SessionTracker =
            serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        back.check().unwrap();
        let rows: Vec<(&str, [u64; RefusedReason::COUNT])> = back
            .refused()
            .map(|(app, row)| (back.apps().name(app), *row))
            .collect();
        assert_eq!(rows, [("unknown", [0, 0, 1]), ("com.a", [2, 0, 0])]);
        // No session was opened or counted.
        assert_eq!((back.open_len(), back.counts().iter().count()), (0, 0));
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
