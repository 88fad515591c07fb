//! Session correlation: lines of one session share an `id` within one proxy start.
//!
//! The tracker turns events into per-app counts. Lines without an app (`Unable to create
//! channel`, socket errors) take the app of their session. A session whose creation line was
//! never seen (error log level, a rotation, the agent started mid-file, an excerpt) is kept
//! as pending: its app-less errors wait for any line of the same id, earlier or later within
//! the same proxy start, that names the app, and are counted once, under that app; only when
//! no line names it (the session closes without one, the proxy restarts, the entry ages out
//! or is evicted) do they go to `unknown`. Both tables are bounded (`log.max_open_sessions`,
//! and [`MAX_PENDING`] for the pending one): a log that never closes its sessions cannot grow
//! memory; the oldest (lowest id) is evicted, counted.
//!
//! Each close is judged by what it received ([`Reply`]): the sessions verdict
//! ([`verdict::judge`]) counts sessions that got no reply, byte counters stay exact.
//!
//! The error-level log lives in `/tmp`, where anyone can write lines: its sessions are kept
//! in a table of their own ([`SessionTracker::apply_error`]), so a forged `Proxy started!` or
//! destructor there can evict or close only sessions of the error log, never the debug log's.

pub mod apps;
pub mod config;
pub mod counts;
pub mod verdict;
pub mod window;

use std::collections::BTreeMap;

use macro_rules_attribute::apply;
use serde::{Deserialize, Serialize};

pub use apps::{AppId, Apps};
pub use config::SessionsConfig;
pub use counts::{
    AppCounts, CloseOutcome, Counts, DURATION_BUCKETS_SECS, ProtoKey, Reply, channel_failure,
    proto_label,
};

use strum::EnumCount;

use crate::labels::label_set;
use crate::proxy_log::{ErrorKind, Event, LocalMillis, Proto, RefusedReason, Size, Text};

/// A session whose creation line was seen and whose destructor was not yet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct OpenSession {
    app: AppId,
    proto: Proto,
    opened: Option<LocalMillis>,
    /// A failure of its own channel was logged ([`channel_failure`]).
    #[serde(default)]
    failed: bool,
}

/// A session seen without its creation line: what its lines said so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Pending {
    /// The app, once a line of the id named it.
    app: Option<AppId>,
    proto: ProtoKey,
    failed: bool,
    /// Errors not yet counted: no line named the app yet.
    errors: [u16; ErrorKind::COUNT],
    /// Time of its newest line, for ageing out.
    seen: Option<LocalMillis>,
}

/// Sessions without a creation line kept per log at most (fewer when `log.max_open_sessions`
/// is smaller): after a rotation they are the few sessions open at the cut; at error level
/// (no creation lines at all) the sessions of the last [`PENDING_MAX_MS`]. About 110 bytes each.
pub const MAX_PENDING: usize = 4096;

/// How long (log time) a session without a creation line waits for a line naming its app
/// after its last line: its destructor follows a channel error within milliseconds.
pub const PENDING_MAX_MS: i64 = 5 * 60 * 1000;

/// Why sessions left the open table without a destructor line: the `reason` label of
/// `session_evictions_total`, one [`Evictions`] field each.
#[apply(label_set!)]
pub enum EvictionReason {
    TableFull,
    ProxyRestart,
    IdReused,
    PendingFull,
    PendingExpired,
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
    /// Sessions without a creation line dropped from the pending table because it was full:
    /// their errors not yet attributed were counted under `unknown`.
    #[serde(default)]
    pub pending_full: u64,
    /// Sessions without a creation line that no line named within [`PENDING_MAX_MS`].
    #[serde(default)]
    pub pending_expired: u64,
}

impl Evictions {
    /// The count for one reason.
    pub fn count(&self, reason: EvictionReason) -> u64 {
        match reason {
            EvictionReason::TableFull => self.table_full,
            EvictionReason::ProxyRestart => self.proxy_restart,
            EvictionReason::IdReused => self.id_reused,
            EvictionReason::PendingFull => self.pending_full,
            EvictionReason::PendingExpired => self.pending_expired,
        }
    }
}

/// A closed session, as the session window takes it: the app by name (shared with the app
/// table, so handing it on allocates nothing), its protocol and whether it got a reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Closed {
    pub app: std::sync::Arc<str>,
    pub proto: ProtoKey,
    pub reply: Reply,
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
    /// Sessions seen without their creation line, per log (see [`Pending`]).
    #[serde(default)]
    pending: BTreeMap<u64, Pending>,
    #[serde(default)]
    error_pending: BTreeMap<u64, Pending>,
    /// Log time of the last sweep of `pending` for entries past [`PENDING_MAX_MS`].
    #[serde(default)]
    swept: Option<LocalMillis>,
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
            pending: BTreeMap::new(),
            error_pending: BTreeMap::new(),
            swept: None,
            refused: Vec::new(),
            closed_log: None,
        }
    }

    /// Applies one event of the error-level log: like [`apply`](Self::apply), on the error
    /// log's own open table (counts and app labels are shared).
    pub fn apply_error(&mut self, event: &Event<'_>, time: Option<LocalMillis>) {
        // Swapping two maps moves three words each: cheaper than a table parameter everywhere.
        self.swap_tables();
        self.apply(event, time);
        self.swap_tables();
    }

    /// Apps PIA itself names as bypass apps (`Managing bypass apps: [...]` in the debug log):
    /// they get a label even once junk filled the cap.
    pub fn reserve_apps(&mut self, list: Text<'_>) {
        for name in quoted(list.bytes()) {
            self.apps.reserve(Text(name));
        }
    }

    fn max_pending(&self) -> usize {
        self.max_open.min(MAX_PENDING)
    }

    /// Exchanges the debug log's tables with the error log's (see [`Self::apply_error`]).
    pub fn swap_logs(&mut self) {
        self.swap_tables();
    }

    fn swap_tables(&mut self) {
        std::mem::swap(&mut self.open, &mut self.error_open);
        std::mem::swap(&mut self.pending, &mut self.error_pending);
    }

    /// Applies one event of the debug log, with the time of its line.
    pub fn apply(&mut self, event: &Event<'_>, time: Option<LocalMillis>) {
        if let Some(t) = time {
            self.sweep(t);
        }
        match *event {
            Event::SessionOpened { id, proto, app, .. } => self.open_session(id, proto, app, time),
            Event::FlowError {
                id,
                proto,
                kind,
                app,
            } => self.flow_error(id, proto, kind, app, time),
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
        // Lines of this id before its creation line (out of order, or a restart not logged).
        let before = self.pending.remove(&id).map(|p| {
            self.count_pending(&p, app, Some(proto));
            p.failed
        });
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
                failed: before.unwrap_or(false),
            },
        );
        let row = self.counts.row(app, Some(proto));
        row.opened += 1;
        row.open += 1;
    }

    /// An error line: counted on its session's app, or kept until a line of the id names it.
    fn flow_error(
        &mut self,
        id: u64,
        proto: ProtoKey,
        kind: ErrorKind,
        app: Option<Text<'_>>,
        time: Option<LocalMillis>,
    ) {
        if let Some(s) = self.open.get_mut(&id) {
            s.failed |= channel_failure(kind);
            let (app, proto) = (s.app, Some(s.proto));
            self.counts.row(app, proto).errors[kind.index()] += 1;
            return;
        }
        let named = app.map(|a| self.apps.intern(a));
        let p = self.pending_entry(id);
        p.app = p.app.or(named);
        p.proto = p.proto.or(proto);
        p.failed |= channel_failure(kind);
        p.seen = time.or(p.seen);
        p.errors[kind.index()] = p.errors[kind.index()].saturating_add(1);
        if let Some(app) = p.app {
            let (errors, proto) = (std::mem::take(&mut p.errors), p.proto);
            self.count_errors(&errors, app, proto);
        }
    }

    /// The pending entry of `id`, made room for (the oldest goes, its errors to `unknown`).
    fn pending_entry(&mut self, id: u64) -> &mut Pending {
        if !self.pending.contains_key(&id)
            && self.pending.len() >= self.max_pending()
            && let Some((_, old)) = self.pending.pop_first()
        {
            self.evictions.pending_full += 1;
            self.count_pending(&old, AppId::UNKNOWN, None);
        }
        self.pending.entry(id).or_default()
    }

    /// Counts a pending entry's errors under its app, else `app`, and its transport, else `proto`.
    fn count_pending(&mut self, p: &Pending, app: AppId, proto: ProtoKey) {
        self.count_errors(&p.errors, p.app.unwrap_or(app), p.proto.or(proto));
    }

    fn count_errors(&mut self, errors: &[u16; ErrorKind::COUNT], app: AppId, proto: ProtoKey) {
        if errors.iter().all(|&n| n == 0) {
            return;
        }
        let row = self.counts.row(app, proto);
        for (total, &n) in row.errors.iter_mut().zip(errors) {
            *total += u64::from(n);
        }
    }

    /// Pending entries whose last line is over [`PENDING_MAX_MS`] old go, their errors to
    /// `unknown`: at error level no destructor ever ends them. At most once a minute of log time.
    fn sweep(&mut self, now: LocalMillis) {
        if self.swept.is_some_and(|s| (now.0 - s.0).abs() < 60_000) {
            return;
        }
        self.swept = Some(now);
        for _ in 0..2 {
            let expired: Vec<u64> = self
                .pending
                .iter()
                .filter(|(_, p)| p.seen.is_some_and(|t| now.0 - t.0 > PENDING_MAX_MS))
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                let p = self.pending.remove(&id).expect("listed");
                self.evictions.pending_expired += 1;
                self.count_pending(&p, AppId::UNKNOWN, None);
            }
            self.swap_tables();
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
        let (app, proto, failed) = match &session {
            Some(s) => (s.app, Some(s.proto), s.failed),
            None => {
                let named = app.map(|a| self.apps.intern(a));
                let p = self.pending.remove(&id).unwrap_or_default();
                // The first line that named the app wins: one session, one app.
                let app = p.app.or(named).unwrap_or(AppId::UNKNOWN);
                let proto = proto.or(p.proto);
                self.count_pending(&p, app, proto);
                (app, proto, p.failed)
            }
        };
        let outcome = outcome(rx, tx);
        let reply = reply(rx, failed);
        let row = self.counts.row(app, proto);
        row.closed[outcome as usize] += 1;
        row.replies[reply as usize] += 1;
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
                app: self.apps.shared_name(app),
                proto,
                reply,
            });
        }
    }

    fn abandon_all(&mut self) {
        self.evictions.proxy_restart += self.open.len() as u64;
        for (_, s) in std::mem::take(&mut self.open) {
            self.counts.row(s.app, Some(s.proto)).open -= 1;
        }
        // Ids start again: no later line can name these apps.
        self.flush_pending();
    }

    /// Counts every pending error (under its app if a line named it, else `unknown`) and
    /// forgets the pending sessions: at a restart, and at the end of `analyze`'s files.
    pub fn flush_pending(&mut self) {
        for (_, p) in std::mem::take(&mut self.pending) {
            self.count_pending(&p, AppId::UNKNOWN, None);
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
            while self.pending.len() > self.max_pending() {
                if let Some((_, old)) = self.pending.pop_first() {
                    self.evictions.pending_full += 1;
                    self.count_pending(&old, AppId::UNKNOWN, None);
                }
            }
            self.swap_tables();
        }
    }

    /// Restored state under today's rules for live input: app names refolded
    /// ([`Apps::refold`]) with their counts and open sessions, and open sessions' times after
    /// `limit` forgotten (a 2099 start would give any close a centuries-long duration).
    /// Returns how many times were not believed.
    pub fn recheck(&mut self, limit: LocalMillis) -> u64 {
        let remap = self.apps.refold();
        let to = |app: AppId| remap.get(app.0 as usize).copied().unwrap_or(AppId::OTHER);
        let old = std::mem::take(&mut self.counts);
        for (app, proto, c) in old.iter() {
            self.counts.row(to(app), proto).absorb(c);
        }
        // Every table keyed by app id follows the refold: refused flows and the apps of
        // sessions still waiting for their creation line.
        for (i, row) in std::mem::take(&mut self.refused).into_iter().enumerate() {
            let j = to(AppId(i as u32)).0 as usize;
            if j >= self.refused.len() {
                self.refused.resize(j + 1, [0; RefusedReason::COUNT]);
            }
            for (a, b) in self.refused[j].iter_mut().zip(row) {
                *a = a.saturating_add(b);
            }
        }
        for p in self
            .pending
            .values_mut()
            .chain(self.error_pending.values_mut())
        {
            p.app = p.app.map(to);
        }
        let mut future = 0;
        for s in self.open.values_mut().chain(self.error_open.values_mut()) {
            s.app = to(s.app);
            if s.opened.is_some_and(|t| t > limit) {
                s.opened = None;
                future += 1;
            }
        }
        future
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

    /// Sessions without a creation line waiting for a line that names their app.
    pub fn pending_len(&self) -> usize {
        self.pending.len() + self.error_pending.len()
    }
}

/// The `"..."` strings of a printed list (`["a", "b"]`), without escapes (ids have none).
fn quoted(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|&c| c == b'"').skip(1).step_by(2)
}

/// What a session received: nothing when `rxBytes` is `Zero KB`, or `0 MB` (a few bytes: a
/// TLS alert, a reset) after its own channel failed (`failed`, see [`channel_failure`]).
pub fn reply(rx: Size, failed: bool) -> Reply {
    match rx {
        Size::Zero => Reply::NoReply,
        Size::UnderTenth if failed => Reply::NoReply,
        Size::UnderTenth | Size::Bytes(_) => Reply::Received,
        Size::Unparsed => Reply::Unknown,
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
        // No line named the app of id 2 yet: pending, not counted, until none can.
        assert_eq!(t.pending_len(), 1);
        t.flush_pending();
        assert_eq!(
            row(&t, "unknown", None).errors(ErrorKind::ConnectionReset),
            1
        );
        assert_eq!(t.pending_len(), 0);
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
        // A debug-log error waiting for its app cannot be claimed by a forged error-log line
        // of the same id, nor flushed by a forged restart there.
        error(&mut t, 7, ErrorKind::ConnectTimeout, None, 1000);
        t.apply_error(
            &Event::FlowError {
                id: 7,
                proto: Some(Proto::Tcp),
                kind: ErrorKind::EmptyBuffer,
                app: Some("com.evil".into()),
            },
            None,
        );
        t.apply_error(&Event::ProxyStarted, None);
        close(&mut t, 7, Size::Zero, Some("com.b"));
        assert_eq!(
            row(&t, "com.b", Some(Proto::Tcp)).errors(ErrorKind::ConnectTimeout),
            1
        );
        assert_eq!(
            row(&t, "com.evil", Some(Proto::Tcp)).errors(ErrorKind::ConnectTimeout),
            0
        );
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

    fn error(t: &mut SessionTracker, id: u64, kind: ErrorKind, app: Option<&str>, ms: i64) {
        t.apply(
            &Event::FlowError {
                id,
                proto: Some(Proto::Tcp),
                kind,
                app: app.map(Text::from),
            },
            Some(LocalMillis(ms)),
        );
    }

    fn apps_with_errors(t: &SessionTracker) -> Vec<(String, u64)> {
        t.counts()
            .iter()
            .map(|(a, _, c)| (t.apps().name(a).to_owned(), c.errors.iter().sum::<u64>()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    #[test]
    fn an_error_without_app_takes_it_from_a_later_line_of_its_id() {
        let mut t = SessionTracker::new(16, 16);
        t.record_closed(true);
        // The seed's connect timeout with its creation line rotated away.
        error(&mut t, 152, ErrorKind::ConnectTimeout, None, 1000);
        assert_eq!(apps_with_errors(&t), []);
        close(&mut t, 152, Size::Zero, Some("com.plexapp.plexmediaserver"));
        assert_eq!(
            apps_with_errors(&t),
            [("com.plexapp.plexmediaserver".to_owned(), 1)]
        );
        let c = t.drain_closed();
        assert_eq!(
            (&*c[0].app, c[0].reply),
            ("com.plexapp.plexmediaserver", Reply::NoReply)
        );
        assert_eq!(t.pending_len(), 0);
    }

    #[test]
    fn an_error_without_app_takes_it_from_an_earlier_line_counted_once() {
        let mut t = SessionTracker::new(16, 16);
        error(
            &mut t,
            9,
            ErrorKind::EmptyBuffer,
            Some("com.apple.Safari"),
            1000,
        );
        error(&mut t, 9, ErrorKind::ConnectionReset, None, 1001);
        // A destructor naming another app cannot split the session.
        close(&mut t, 9, Size::UnderTenth, Some("com.other.app"));
        assert_eq!(apps_with_errors(&t), [("com.apple.Safari".to_owned(), 2)]);
        let safari = row(&t, "com.apple.Safari", Some(Proto::Tcp));
        // `0 MB` after a reset of its own channel: it got no reply.
        assert_eq!(
            (safari.sessions_closed(), safari.replies(Reply::NoReply)),
            (1, 1)
        );
    }

    #[test]
    fn a_restart_ends_what_an_id_can_name() {
        let mut t = SessionTracker::new(16, 16);
        error(&mut t, 5, ErrorKind::ConnectTimeout, None, 1000);
        t.apply(&Event::ProxyStarted, None);
        // Id 5 of the new start is another session.
        close(&mut t, 5, Size::Zero, Some("com.b"));
        assert_eq!(apps_with_errors(&t), [("unknown".to_owned(), 1)]);
    }

    #[test]
    fn pending_ids_are_bounded_and_counted() {
        let mut t = SessionTracker::new(2, 16);
        for id in 1..=3 {
            error(&mut t, id, ErrorKind::ConnectTimeout, None, 1000);
        }
        assert_eq!((t.pending_len(), t.evictions().pending_full), (2, 1));
        assert_eq!(apps_with_errors(&t), [("unknown".to_owned(), 1)]);
        // Past PENDING_MAX_MS without a line naming them (an error-level log has none).
        error(
            &mut t,
            9,
            ErrorKind::EmptyBuffer,
            Some("com.a"),
            1000 + PENDING_MAX_MS + 1,
        );
        assert_eq!(t.evictions().pending_expired, 2);
        assert_eq!(
            apps_with_errors(&t),
            [("unknown".to_owned(), 3), ("com.a".to_owned(), 1)]
        );
        // Restored from a checkpoint: the pending table comes back.
        let back: SessionTracker =
            serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back.pending_len(), 1);
    }

    #[test]
    fn replies() {
        // Exact accounting stays: `0 MB` is not zero bytes, but with its channel failed
        // (PIA's #93) the session got no reply.
        assert_eq!(reply(Size::Zero, false), Reply::NoReply);
        assert_eq!(reply(Size::UnderTenth, true), Reply::NoReply);
        assert_eq!(reply(Size::UnderTenth, false), Reply::Received);
        assert_eq!(reply(Size::Bytes(5), true), Reply::Received);
        assert_eq!(reply(Size::Unparsed, true), Reply::Unknown);
        assert!(channel_failure(ErrorKind::IoOnClosedChannel));
        assert!(!channel_failure(ErrorKind::EmptyBuffer));
    }

    /// A checkpoint whose app table is refolded at restore: every table keyed by app id follows
    /// (counts with their replies, refused flows, the app of a session still waiting).
    #[test]
    fn recheck_moves_every_table_keyed_by_app() {
        let mut t = SessionTracker::new(16, 16);
        open(&mut t, 1, "com.a");
        close(&mut t, 1, Size::Zero, None);
        t.apply(
            &Event::FlowRefused {
                app: "com.b".into(),
                reason: RefusedReason::NoBindIp,
            },
            None,
        );
        // Id 8's creation line is missing; its error names com.b.
        error(&mut t, 8, ErrorKind::ConnectTimeout, Some("com.b"), 1000);
        let mut saved = serde_json::to_value(&t).unwrap();
        // An earlier version let "b c" in where com.a stands: it folds into `other`, and
        // com.b moves down a slot.
        saved["apps"]["names"][2] = "b c".into();
        let mut back: SessionTracker = serde_json::from_value(saved).unwrap();
        back.recheck(LocalMillis(i64::MAX));
        back.check().unwrap();
        let other = row(&back, "other", Some(Proto::Tcp));
        assert_eq!(
            (other.sessions_closed(), other.replies(Reply::NoReply)),
            (1, 1)
        );
        let refused: Vec<(&str, u64)> = back
            .refused()
            .map(|(app, r)| (back.apps().name(app), r[RefusedReason::NoBindIp as usize]))
            .collect();
        assert_eq!(refused, [("com.b", 1)]);
        close(&mut back, 8, Size::Zero, None);
        assert_eq!(row(&back, "com.b", Some(Proto::Tcp)).sessions_closed(), 1);
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
