//! Floods through the pipeline: 100k distinct app ids, a million sessions never closed, ids
//! reused after a restart. Memory stays bounded (measured with a counting allocator: live heap
//! bytes), what is kept is counted right, and the overflow is counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicIsize, Ordering};

use pia_split_tunnel_exporter::log_state::{Limits, LogState};
use pia_split_tunnel_exporter::sessions::{AppCounts, CloseOutcome, SessionTracker};

/// Live heap bytes of the whole test process.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// One flood at a time, so the live-bytes figures are each test's own.
static SERIAL: Mutex<()> = Mutex::new(());

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Feeds one formatted line (as the proxy writes it, `\r` at the end), reusing `buf`.
fn line(p: &mut LogState, buf: &mut Vec<u8>, args: std::fmt::Arguments<'_>) {
    buf.clear();
    buf.write_fmt(args).unwrap();
    buf.push(b'\r');
    p.feed_line(buf);
}

fn open(p: &mut LogState, buf: &mut Vec<u8>, id: u64, app: &str) {
    line(
        p,
        buf,
        format_args!(
            "[2026-02-16 11:49:31:4330] [ChannelCreatorTCP.swift:50] debug: id: {id} {app} Creating, binding and connecting a new TCP socket - endpoint: 203.0.113.5:443 with bindIp: 10.0.15.15"
        ),
    );
}

fn close(p: &mut LogState, buf: &mut Vec<u8>, id: u64, app: &str, rx: &str) {
    line(
        p,
        buf,
        format_args!(
            "[2026-02-16 11:49:32:5330] [ProxySessionTCP.swift:31] debug: id: {id} Destructor: ProxySession closed. rxBytes={rx} txBytes=Zero KB {app}"
        ),
    );
}

fn restart(p: &mut LogState, buf: &mut Vec<u8>) {
    line(
        p,
        buf,
        format_args!(
            "[2026-02-16 11:50:00:0000] [SplitTunnelProxyProvider.swift:60] info: Proxy started!"
        ),
    );
}

/// Every row of `app`, summed over protocols.
fn app_total(s: &SessionTracker, app: &str) -> AppCounts {
    let mut sum = AppCounts::default();
    for (id, _, c) in s.counts().iter() {
        if s.apps().name(id) == app {
            sum.opened += c.opened;
            for o in <CloseOutcome as strum::IntoEnumIterator>::iter() {
                sum.closed[o as usize] += c.closed(o);
            }
            sum.open += c.open;
        }
    }
    sum
}

fn total(s: &SessionTracker, f: impl Fn(&AppCounts) -> u64) -> u64 {
    s.counts().iter().map(|(_, _, c)| f(c)).sum()
}

#[test]
fn hundred_thousand_app_ids_fold_into_other() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = Limits::default();
    let mut p = LogState::new(cfg);
    let mut buf = Vec::new();
    let start = live();
    let mut at_half = 0;
    for id in 0..100_000u64 {
        let app = format!("com.flood.app{id}");
        open(&mut p, &mut buf, id, &app);
        close(&mut p, &mut buf, id, &app, "Zero KB");
        if id == 49_999 {
            at_half = live();
        }
    }
    let grown = live() - start;
    let s = &p.sessions();
    assert_eq!(
        s.apps().len(),
        cfg.max_apps + 2,
        "the cap, `other` and `unknown`"
    );
    assert_eq!(s.apps().folded(), 100_000 - cfg.max_apps as u64);
    let other = app_total(s, "other");
    assert_eq!(other.opened, 100_000 - cfg.max_apps as u64);
    assert_eq!(
        other.closed[CloseOutcome::ZeroBytes as usize],
        100_000 - cfg.max_apps as u64
    );
    assert_eq!(total(s, |c| c.opened), 100_000);
    assert_eq!(total(s, AppCounts::sessions_closed), 100_000);
    assert_eq!(s.open_len(), 0);
    assert_eq!(p.read().unrecognized, 0);
    // The second 50,000 apps cost nothing more.
    assert!(
        (live() - at_half).abs() < 16 * 1024,
        "grew by {} bytes over the second half",
        live() - at_half
    );
    assert!(grown < 1 << 20, "{grown} bytes for 100k app ids");
    eprintln!("100k app ids: {} KiB of heap", grown / 1024);
}

#[test]
fn a_million_sessions_never_closed_keep_the_table_bounded() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = Limits::default();
    let mut p = LogState::new(cfg);
    let mut buf = Vec::new();
    let start = live();
    let mut at_fifth = 0;
    for id in 0..1_000_000u64 {
        open(&mut p, &mut buf, id, "tv.plex.PlexMediaServer");
        if id == 199_999 {
            at_fifth = live();
        }
    }
    let grown = live() - start;
    let kept = cfg.max_open_sessions as u64;
    let s = &p.sessions();
    assert_eq!(s.open_len() as u64, kept);
    assert_eq!(s.evictions().table_full, 1_000_000 - kept);
    let plex = app_total(s, "tv.plex.PlexMediaServer");
    assert_eq!(plex.opened, 1_000_000);
    assert_eq!(plex.open, kept, "the open gauge counts what is kept");
    // Flat: 800,000 more sessions, no more memory (B-tree node churn aside).
    let late = live() - at_fifth;
    assert!(
        late.abs() < (grown / 20).max(64 * 1024),
        "grew {late} bytes after 200k sessions (of {grown})"
    );
    // The kept ones (the newest ids) close with their app and protocol.
    for id in 1_000_000 - kept..1_000_000 {
        close(&mut p, &mut buf, id, "tv.plex.PlexMediaServer", "1.5 KB");
    }
    let s = &p.sessions();
    assert_eq!(s.open_len(), 0);
    let plex = app_total(s, "tv.plex.PlexMediaServer");
    assert_eq!(plex.closed[CloseOutcome::Transferred as usize], kept);
    assert_eq!(plex.open, 0);
    eprintln!(
        "1M never-closed sessions: {} KiB of heap for the {kept} kept",
        grown / 1024
    );
}

#[test]
fn ids_reused_after_a_restart_belong_to_the_new_sessions() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut p = LogState::new(Limits::default());
    let mut buf = Vec::new();
    for id in 1..=1_000 {
        open(&mut p, &mut buf, id, "com.apple.Safari");
    }
    restart(&mut p, &mut buf);
    assert_eq!(p.sessions().evictions().proxy_restart, 1_000);
    assert_eq!(p.sessions().open_len(), 0);
    // The same ids, now Plex's.
    for id in 1..=1_000 {
        open(&mut p, &mut buf, id, "tv.plex.PlexMediaServer");
        close(&mut p, &mut buf, id, "tv.plex.PlexMediaServer", "2.0 KB");
    }
    let s = &p.sessions();
    let plex = app_total(s, "tv.plex.PlexMediaServer");
    assert_eq!(plex.closed[CloseOutcome::Transferred as usize], 1_000);
    let safari = app_total(s, "com.apple.Safari");
    assert_eq!((safari.opened, safari.open), (1_000, 0));
    assert_eq!(safari.closed, [0; 3], "no Safari session was closed");
    // A creation line for an id still open, without a restart line: the old one is evicted.
    open(&mut p, &mut buf, 7, "com.apple.Safari");
    open(&mut p, &mut buf, 7, "com.backblaze.bzbmenu");
    assert_eq!(p.sessions().evictions().id_reused, 1);
    assert_eq!(p.sessions().open_len(), 1);
}

/// The error log (anyone can write `/tmp/STProxy.log`'s lines) floods app-less errors of a
/// million ids never seen: the ids waiting for a line that names their app stay bounded, every
/// error is counted exactly once (under `unknown`, as no line names one), the overflow is
/// counted, and the debug log's sessions are untouched.
#[test]
fn a_million_app_less_errors_keep_the_pending_ids_bounded() {
    use pia_split_tunnel_exporter::log_state::LogFile;
    use pia_split_tunnel_exporter::proxy_log::ErrorKind;
    use pia_split_tunnel_exporter::sessions::MAX_PENDING;
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut p = LogState::new(Limits::default());
    let start = live();
    let mut at_fifth = 0;
    let mut chunk = Vec::new();
    for id in 0..1_000_000u64 {
        writeln!(
            chunk,
            "[2026-02-16 12:06:18:3400] [ProxySessionTCP.swift:59] error: id: {id} Unable to create channel: connectTimeout(NIOCore.TimeAmount(nanoseconds: 10000000000)), dropping the flow.\r"
        )
        .unwrap();
        if chunk.len() > 1 << 20 || id == 999_999 {
            p.feed_file(LogFile::Error, &chunk);
            chunk.clear();
        }
        if id == 199_999 {
            at_fifth = live();
        }
    }
    let grown = live() - start;
    let s = p.sessions();
    assert_eq!(s.pending_len(), MAX_PENDING);
    assert_eq!(s.evictions().pending_full, 1_000_000 - MAX_PENDING as u64);
    let counted = |s: &SessionTracker| total(s, |c| c.errors(ErrorKind::ConnectTimeout));
    assert_eq!(counted(s), 1_000_000 - MAX_PENDING as u64);
    let late = live() - at_fifth;
    assert!(
        late.abs() < (grown / 20).max(64 * 1024),
        "grew {late} bytes after 200k ids (of {grown})"
    );
    p.flush_pending();
    assert_eq!(counted(p.sessions()), 1_000_000);
    assert_eq!(p.sessions().pending_len(), 0);
    eprintln!(
        "1M app-less errors of unseen ids: {} KiB of heap for the {MAX_PENDING} pending",
        grown / 1024
    );
}
