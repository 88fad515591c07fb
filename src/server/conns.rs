//! Connection slots: who may hold one of `http.max_connections`, and whom a newcomer may push
//! out when they are all taken.
//!
//! Hand-written: hyper bounds the head (`header_read_timeout`, `max_header_size`) but nothing
//! in hyper, hyper-util or tower bounds a connection's life by what it does, caps connections
//! per peer, or sheds the least useful connection when full (tower's `ConcurrencyLimit` and
//! `LoadShed` act per request, after the connection is held). The rules:
//! - a peer other than loopback holds at most `max_connections_per_peer`, and all of them
//!   together at most three quarters of the slots: the rest are kept for loopback (the local
//!   Prometheus or the admin's `curl`);
//! - every exchange (the request head's first byte to the response's last byte flushed) ends
//!   within `exchange_timeout_secs`, or the connection is closed;
//! - when every slot is taken, a newcomer pushes out, in this order, the connection idle the
//!   longest (waiting for its next request: a client may always lose it, HTTP says so) or the
//!   one whose exchange is the oldest, if older than [`GRACE`] (a stalled write: responses
//!   pipelined and never read; a head sent a byte at a time). A handler at work is never
//!   pushed out. A newcomer finding no such slot waits up to [`WAIT`] for one, at most
//!   [`MAX_WAITING`] at a time; beyond that it is closed.
//!
//! So a flood of held connections turns over within [`GRACE`] instead of holding the port,
//! and a scrape is answered within about a second of arriving.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::HttpBody;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// How long an exchange runs before a newcomer may push its connection out.
pub const GRACE: Duration = Duration::from_secs(1);
/// How long a newcomer waits for a slot when none can be freed yet.
pub const WAIT: Duration = Duration::from_secs(3);
/// Newcomers waiting at once; more are closed on accept.
pub const MAX_WAITING: usize = 64;

/// What one connection is doing, shared by its I/O, its service and the slot table.
#[derive(Debug)]
pub struct ConnState {
    born: Instant,
    /// Milliseconds since `born` when the current exchange (or idle spell) began.
    since_ms: AtomicU64,
    in_exchange: AtomicBool,
    /// The response's body was handed over in full; the next flush ends the exchange.
    body_done: AtomicBool,
    handlers: AtomicU32,
    requests: AtomicU32,
    /// Told to close (pushed out, or its exchange ran past the deadline).
    pub kill: Notify,
    /// An exchange began: the deadline watcher re-arms.
    began: Notify,
    /// The same, for [`ConnState::first_bytes`] (`began` keeps its one permit for the
    /// deadline watcher).
    any_began: Notify,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            born: Instant::now(),
            since_ms: AtomicU64::new(0),
            in_exchange: AtomicBool::new(false),
            body_done: AtomicBool::new(false),
            handlers: AtomicU32::new(0),
            requests: AtomicU32::new(0),
            kill: Notify::new(),
            began: Notify::new(),
            any_began: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn since(&self) -> Instant {
        self.born + Duration::from_millis(self.since_ms.load(Ordering::Relaxed))
    }

    /// Marks the start of an exchange (first bytes read, or a pipelined request dispatched).
    pub fn begin(&self) {
        if !self.in_exchange.swap(true, Ordering::AcqRel) {
            self.since_ms.store(self.now_ms(), Ordering::Relaxed);
            self.body_done.store(false, Ordering::Relaxed);
            self.began.notify_one();
            self.any_began.notify_waiters();
        }
    }

    /// Whether the client has sent anything yet.
    pub fn has_begun(&self) -> bool {
        self.in_exchange.load(Ordering::Acquire) || self.requests.load(Ordering::Acquire) > 0
    }

    /// Resolves once the client has sent its first bytes.
    pub async fn first_bytes(&self) {
        loop {
            let notified = self.any_began.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.has_begun() {
                return;
            }
            notified.await;
        }
    }

    fn flushed(&self) {
        if self.body_done.swap(false, Ordering::AcqRel) {
            self.since_ms.store(self.now_ms(), Ordering::Relaxed);
            self.in_exchange.store(false, Ordering::Release);
        }
    }

    /// The handler was called; returns how many requests this connection has made.
    pub fn handler_start(&self) -> u32 {
        self.begin();
        self.handlers.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub fn handler_end(&self) {
        self.handlers.fetch_sub(1, Ordering::AcqRel);
    }

    /// The response body's last frame was taken by hyper.
    pub fn body_end(&self) {
        self.body_done.store(true, Ordering::Release);
    }

    /// Resolves when the current exchange has run past `limit`.
    pub async fn overrun(&self, limit: Duration) {
        loop {
            if self.in_exchange.load(Ordering::Acquire) {
                let at = self.since() + limit;
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {
                        if self.in_exchange.load(Ordering::Acquire) && self.since() + limit <= Instant::now() {
                            return;
                        }
                    }
                    () = self.began.notified() => {}
                }
            } else {
                self.began.notified().await;
            }
        }
    }
}

/// Limits, from `[http]`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max: usize,
    pub per_peer: usize,
}

impl Limits {
    /// Slots peers other than loopback may hold together.
    fn remote_max(&self) -> usize {
        self.max - self.max / 4
    }
}

/// The slot table.
pub struct Slots {
    limits: Limits,
    table: Mutex<Table>,
    waiting: AtomicU32,
}

#[derive(Default)]
struct Table {
    next: u64,
    conns: HashMap<u64, (IpAddr, Arc<ConnState>)>,
    per_peer: HashMap<IpAddr, usize>,
    remote: usize,
}

/// A held slot; dropping it frees the slot (unless it was taken over by a newcomer).
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    pub state: Arc<ConnState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.slots.table.lock().unwrap_or_else(|e| e.into_inner());
        t.remove(self.id);
    }
}

/// Why a newcomer was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    PerPeer,
    RemoteShare,
    Full,
}

impl Table {
    fn remove(&mut self, id: u64) {
        if let Some((peer, _)) = self.conns.remove(&id)
            && !peer.is_loopback()
        {
            self.remote -= 1;
            if let Some(n) = self.per_peer.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    self.per_peer.remove(&peer);
                }
            }
        }
    }

    /// The connection a newcomer may push out: idle the longest, else the oldest exchange past
    /// [`GRACE`]; never one whose handler runs.
    fn victim(&self, now: Instant) -> Option<u64> {
        let key = |s: &ConnState| {
            let idle = !s.in_exchange.load(Ordering::Acquire);
            (idle, now.saturating_duration_since(s.since()))
        };
        self.conns
            .iter()
            .filter(|(_, (_, s))| s.handlers.load(Ordering::Acquire) == 0)
            .map(|(id, (_, s))| (*id, key(s)))
            .filter(|(_, (idle, age))| *idle || *age >= GRACE)
            .max_by_key(|(_, k)| *k)
            .map(|(id, _)| id)
    }
}

impl Slots {
    pub fn new(limits: Limits) -> Arc<Slots> {
        Arc::new(Slots {
            limits,
            table: Mutex::new(Table::default()),
            waiting: AtomicU32::new(0),
        })
    }

    /// A slot for `peer` now, pushing out another connection if needed.
    pub fn try_admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refused> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let remote = !peer.is_loopback();
        if remote {
            if t.per_peer.get(&peer).copied().unwrap_or(0) >= self.limits.per_peer {
                return Err(Refused::PerPeer);
            }
            if t.remote >= self.limits.remote_max() {
                return Err(Refused::RemoteShare);
            }
        }
        if t.conns.len() >= self.limits.max {
            let victim = t.victim(Instant::now()).ok_or(Refused::Full)?;
            if let Some((_, s)) = t.conns.get(&victim) {
                s.kill.notify_one();
            }
            t.remove(victim);
        }
        let id = t.next;
        t.next += 1;
        let state = Arc::new(ConnState::new());
        t.conns.insert(id, (peer, state.clone()));
        if remote {
            t.remote += 1;
            *t.per_peer.entry(peer).or_default() += 1;
        }
        Ok(Slot {
            slots: self.clone(),
            id,
            state,
        })
    }

    /// As [`Slots::try_admit`], waiting up to [`WAIT`] while every slot is busy but may free.
    pub async fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refused> {
        match self.try_admit(peer) {
            Err(Refused::Full) => {}
            other => return other,
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) as usize >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Full);
        }
        let deadline = Instant::now() + WAIT;
        let out = loop {
            // Slots free by time passing (GRACE), not by an event: look again soon. Only
            // while the table is full, so an idle agent is not woken.
            tokio::time::sleep(Duration::from_millis(50)).await;
            match self.try_admit(peer) {
                Err(Refused::Full) if Instant::now() < deadline => {}
                other => break other,
            }
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        out
    }

    pub fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .conns
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The connection's socket, telling [`ConnState`] when an exchange begins (bytes read while
/// idle) and ends (the flush after the response's last frame).
pub struct Tracked<I> {
    inner: I,
    state: Arc<ConnState>,
}

impl<I> Tracked<I> {
    pub fn new(inner: I, state: Arc<ConnState>) -> Self {
        Tracked { inner, state }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.begin();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) {
            self.state.flushed();
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that tells [`ConnState`] when it has been handed over in full (its end
/// reached, or dropped by hyper after its last frame).
pub struct Watched<B> {
    inner: B,
    state: Arc<ConnState>,
}

impl<B> Watched<B> {
    pub fn new(inner: B, state: Arc<ConnState>) -> Self {
        Watched { inner, state }
    }
}

impl<B> Drop for Watched<B> {
    fn drop(&mut self) {
        self.state.body_end();
    }
}

impl<B: HttpBody + Unpin> HttpBody for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.state.body_end();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const REMOTE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[tokio::test]
    async fn remote_peers_are_capped_and_leave_slots_for_loopback() {
        let slots = Slots::new(Limits {
            max: 8,
            per_peer: 4,
        });
        let mut held: Vec<Slot> = (0..4).map(|_| slots.try_admit(REMOTE).unwrap()).collect();
        assert_eq!(slots.try_admit(REMOTE).err(), Some(Refused::PerPeer));
        let other = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 8));
        held.extend((0..2).map(|_| slots.try_admit(other).unwrap()));
        assert_eq!(slots.try_admit(other).err(), Some(Refused::RemoteShare));
        held.extend((0..2).map(|_| slots.try_admit(LOCAL).unwrap()));
        assert_eq!(slots.len(), 8);
        held.truncate(3);
        assert_eq!(slots.len(), 3);
        assert!(slots.try_admit(REMOTE).is_ok());
    }

    #[tokio::test]
    async fn a_newcomer_pushes_out_the_idle_then_the_stalled_never_a_working_handler() {
        let slots = Slots::new(Limits {
            max: 3,
            per_peer: 3,
        });
        let working = slots.try_admit(LOCAL).unwrap();
        working.state.handler_start();
        let stalled = slots.try_admit(LOCAL).unwrap();
        stalled.state.begin();
        let idle = slots.try_admit(LOCAL).unwrap();
        tokio::time::sleep(GRACE / 2).await;
        // Full; the idle one goes first, at once.
        let first = slots.try_admit(LOCAL).unwrap();
        let told = |s: &Slot| {
            let s = s.state.clone();
            async move {
                tokio::time::timeout(Duration::from_millis(10), s.kill.notified())
                    .await
                    .is_ok()
            }
        };
        assert!(told(&idle).await);
        first.state.begin();
        // The stalled exchange is younger than GRACE: nobody to push out yet.
        assert_eq!(slots.try_admit(LOCAL).err(), Some(Refused::Full));
        // A waiting newcomer gets the stalled one's slot once it is past GRACE (before
        // `first`'s, which began later).
        let _second = slots.admit(LOCAL).await.unwrap();
        assert!(told(&stalled).await);
        assert!(!told(&first).await && !told(&working).await);
        assert_eq!(slots.len(), 3);
        drop((working, idle, stalled));
        assert_eq!(slots.len(), 2, "slots pushed out were already given away");
    }

    #[tokio::test]
    async fn an_exchange_that_runs_past_its_deadline_is_noticed() {
        let state = Arc::new(ConnState::new());
        let limit = Duration::from_millis(300);
        let watch = tokio::spawn({
            let s = state.clone();
            async move { s.overrun(limit).await }
        });
        tokio::time::sleep(limit * 2).await;
        assert!(!watch.is_finished(), "idle is not an exchange");
        state.handler_start();
        state.handler_end();
        state.body_end();
        tokio::time::sleep(limit / 3).await;
        state.flushed();
        tokio::time::sleep(limit * 2).await;
        assert!(!watch.is_finished(), "that exchange ended in time");
        state.begin();
        tokio::time::sleep(limit * 2).await;
        assert!(watch.is_finished());
    }
}
