//! Async driver: decides when to poll the [`Follower`].

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[cfg(not(target_os = "linux"))]
use notify::{Event, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::follower::{Cursor, FileState, Follower, Poll};
use super::lines::LineSink;

/// Backstop poll period while the folder watch is up: events bring latency down, this only
/// bounds what a lost event can cost (latency, never lines). Long, so an idle agent rarely
/// wakes (at 10 s, each followed file's tick was about a third of an idle agent's wake-ups);
/// a watch that reports an error falls back to [`TICK_UNWATCHED`] at once.
const TICK_WATCHED: Duration = Duration::from_secs(30);
/// Backstop period without a working watch (folder missing, watch failed).
const TICK_UNWATCHED: Duration = Duration::from_millis(250);
/// Bytes read per [`Tailer::next`] call at most, so one call never blocks the runtime long.
const DEFAULT_BATCH_BYTES: usize = 1024 * 1024;

/// The live folder watch.
struct Watch {
    _watcher: FolderWatch,
    /// Identity of the folder watched: a folder deleted and recreated needs a new watch.
    dir: (u64, u64),
}

/// Wakes the [`Follower`] on filesystem events in the log's folder and on a backstop timer.
///
/// The folder is watched, not the file, because rotation replaces the file. Events only wake
/// a poll (they carry no data), so a lost or coalesced event costs latency, never lines. When
/// idle it sleeps on the event and the timer: no busy loop.
///
/// Reads are done inline on the runtime thread: they are local-file reads bounded by the
/// batch size, and keeping the follower in `self` is what makes [`next`](Tailer::next)
/// cancel-safe.
pub struct Tailer {
    follower: Follower,
    dir: PathBuf,
    names: Arc<[OsString; 2]>,
    wake: Arc<Notify>,
    broken: Arc<AtomicBool>,
    watch: Option<Watch>,
    next_tick: Option<Instant>,
    last_file: Option<FileState>,
    /// The last poll failed: wait for the timer before retrying, rather than spinning.
    backoff: bool,
    batch_bytes: usize,
}

impl Tailer {
    pub fn new(follower: Follower) -> Tailer {
        let path = follower.path();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path.file_name().map(OsString::from).unwrap_or_default();
        let archive = follower
            .archive_path()
            .file_name()
            .map(OsString::from)
            .unwrap_or_default();
        Tailer {
            dir,
            names: Arc::new([name, archive]),
            follower,
            wake: Arc::new(Notify::new()),
            broken: Arc::new(AtomicBool::new(false)),
            watch: None,
            next_tick: None,
            last_file: None,
            backoff: false,
            batch_bytes: DEFAULT_BATCH_BYTES,
        }
    }

    /// Bytes read per [`next`](Tailer::next) call at most (default 1 MiB).
    pub fn with_batch_bytes(mut self, bytes: usize) -> Tailer {
        self.batch_bytes = bytes.max(1);
        self
    }

    /// Waits until complete lines were appended to `out`, or there is something to report (a
    /// rotation, truncation, over-long line, a change of [`FileState`], or the resume outcome),
    /// and returns what the poll saw. The first call always reports the file state.
    ///
    /// Cancel-safe: lines are only appended right before returning, and everything else lives
    /// in `self`, so dropping the future (e.g. in `tokio::select!`) loses nothing.
    pub async fn next(&mut self, out: &mut impl LineSink) -> io::Result<Poll> {
        loop {
            self.tick_if_due();
            if self.backoff {
                self.wait().await;
                self.backoff = false;
            }
            let p = match self.follower.poll(out, self.batch_bytes) {
                Ok(p) => p,
                Err(e) => {
                    self.backoff = true;
                    return Err(e);
                }
            };
            let file_changed = self.last_file != Some(p.file);
            self.last_file = Some(p.file);
            if p.bytes > 0
                || p.rotations > 0
                || p.truncations > 0
                || p.lines_too_long > 0
                || p.resumed.is_some()
                || p.refused > 0
                || file_changed
            {
                return Ok(p);
            }
            if p.more {
                // Backlog without a complete line yet (e.g. skipping a huge line): let other
                // tasks run between batches.
                tokio::task::yield_now().await;
                continue;
            }
            self.wait().await;
        }
    }

    pub fn cursor(&self) -> Option<Cursor> {
        self.follower.cursor()
    }

    pub fn follower(&self) -> &Follower {
        &self.follower
    }

    /// True while the folder watch is up (otherwise only the backstop timer drives reads).
    pub fn is_watching(&self) -> bool {
        self.watch.is_some() && !self.broken.load(Ordering::Relaxed)
    }

    /// Sleeps until a folder event or the backstop timer.
    async fn wait(&mut self) {
        let deadline = self.next_tick.unwrap_or_else(Instant::now);
        tokio::select! {
            // A notification sent while we were polling is kept as a permit: not lost.
            _ = self.wake.notified() => {
                // A watch that just broke (an error, its folder removed) is re-created now,
                // not at the next long tick.
                // So is the period when the name just became a link (see `period`).
                if self.broken.load(Ordering::Relaxed) || self.name_is_link() {
                    self.next_tick = None;
                }
            }
            _ = tokio::time::sleep_until(deadline) => self.tick_if_due(),
        }
    }

    /// Timer housekeeping, also when busy (data flowing means no waiting): checks the
    /// folder watch and schedules the next backstop poll.
    fn tick_if_due(&mut self) {
        let now = Instant::now();
        if self.next_tick.is_none_or(|t| t <= now) {
            self.ensure_watch();
            self.next_tick = Some(now + self.period());
        }
    }

    /// The watch covers the file only when its name is not a link: writes through a link to
    /// a file in another folder raise no event in this one, so such a file is polled as if
    /// unwatched (links are only followed where others cannot write the folder).
    fn period(&self) -> Duration {
        if self.is_watching() && !self.name_is_link() {
            TICK_WATCHED
        } else {
            TICK_UNWATCHED
        }
    }

    fn name_is_link(&self) -> bool {
        fs::symlink_metadata(self.follower.path()).is_ok_and(|m| m.file_type().is_symlink())
    }

    /// (Re)creates the folder watch when it is missing, reported an error, or watches a
    /// folder that has since been replaced.
    fn ensure_watch(&mut self) {
        let dir_id = fs::metadata(&self.dir).ok().map(|m| (m.dev(), m.ino()));
        if let Some(w) = &self.watch
            && !self.broken.load(Ordering::Relaxed)
            && Some(w.dir) == dir_id
        {
            return;
        }
        self.watch = None;
        let Some(dir_id) = dir_id else { return };
        self.broken.store(false, Ordering::Relaxed);
        match watch_folder(&self.dir, &self.names, &self.wake, &self.broken) {
            Ok(watcher) => {
                self.watch = Some(Watch {
                    _watcher: watcher,
                    dir: dir_id,
                });
                // Changes made before the watch existed raised no event.
                self.wake.notify_one();
            }
            Err(e) => {
                tracing::debug!(dir = %self.dir.display(), error = %e, "cannot watch log folder; polling");
            }
        }
    }
}

/// The platform's watch; dropping it stops its events.
#[cfg(target_os = "linux")]
type FolderWatch = linux::InotifyWatch;
#[cfg(not(target_os = "linux"))]
type FolderWatch = RecommendedWatcher;

#[cfg(target_os = "linux")]
fn watch_folder(
    dir: &Path,
    names: &Arc<[OsString; 2]>,
    wake: &Arc<Notify>,
    broken: &Arc<AtomicBool>,
) -> io::Result<FolderWatch> {
    linux::InotifyWatch::new(dir, names.clone(), wake.clone(), broken.clone())
}

/// Elsewhere (macOS: FSEvents) through notify, filtering by name in its callback: FSEvents
/// reports changes per path under the watched folder and offers no filter by file name (only
/// exclusions), so the callback is where other files are dropped.
#[cfg(not(target_os = "linux"))]
fn watch_folder(
    dir: &Path,
    names: &Arc<[OsString; 2]>,
    wake: &Arc<Notify>,
    broken: &Arc<AtomicBool>,
) -> notify::Result<RecommendedWatcher> {
    let (names, wake, broken) = (names.clone(), wake.clone(), broken.clone());
    let folder = dir.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<Event>| match res {
        Ok(ev) => {
            // The folder may hold other busy logs: wake only for our file and its archive, or
            // the folder itself (removed or moved: the next poll re-creates the watch).
            let ours = ev.paths.is_empty()
                || ev.need_rescan()
                || ev.paths.iter().any(|p| {
                    *p == folder || p.file_name().is_some_and(|n| names.iter().any(|m| m == n))
                });
            if ev.paths.contains(&folder) {
                broken.store(true, Ordering::Relaxed);
            }
            if ours {
                wake.notify_one();
            }
        }
        Err(_) => {
            broken.store(true, Ordering::Relaxed);
            wake.notify_one();
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// inotify with masks that leave other files out in the kernel. notify watches a folder for
/// every write and open in it (its mask is fixed), so each write to any file in `/tmp` woke
/// its thread, which built an event to be dropped by name: most of a core under a writer
/// appending as fast as it can. Here the folder is watched only for names coming and going,
/// and the log file itself (not its folder) for writes; its watch is added again whenever
/// its name changes hands. Events are read on the runtime (no thread of its own).
#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::OsString;
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use inotify::{EventMask, Inotify, WatchMask};
    use tokio::io::unix::AsyncFd;
    use tokio::sync::Notify;

    /// Names coming and going in the folder, and the folder itself going.
    const FOLDER: WatchMask = WatchMask::CREATE
        .union(WatchMask::DELETE)
        .union(WatchMask::MOVED_FROM)
        .union(WatchMask::MOVED_TO)
        .union(WatchMask::DELETE_SELF)
        .union(WatchMask::MOVE_SELF)
        .union(WatchMask::ONLYDIR);
    /// Writes and truncation of the file open at our names; a link there is not followed
    /// (its target may be anyone's file, see `period`).
    const FILE: WatchMask = WatchMask::MODIFY
        .union(WatchMask::CLOSE_WRITE)
        .union(WatchMask::ATTRIB)
        .union(WatchMask::DONT_FOLLOW);

    pub struct InotifyWatch {
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for InotifyWatch {
        fn drop(&mut self) {
            // Dropping the task closes the inotify descriptor, and with it every watch.
            self.task.abort();
        }
    }

    impl InotifyWatch {
        pub fn new(
            dir: &Path,
            names: Arc<[OsString; 2]>,
            wake: Arc<Notify>,
            broken: Arc<AtomicBool>,
        ) -> io::Result<InotifyWatch> {
            let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
            let inotify = Inotify::init()?;
            let mut watches = inotify.watches();
            let folder = watches.add(dir, FOLDER)?;
            let files: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
            for f in &files {
                // Absent now: added when the name appears.
                let _ = watches.add(f, FILE);
            }
            // SAFETY: the Inotify owns its descriptor and gives the same one for its life,
            // which the AsyncFd now holds.
            let fd = unsafe { AsyncFd::register(inotify) }
                .map_err(|e| io::Error::other(e.to_string()))?;
            let task = runtime.spawn(async move {
                if let Err(e) = read_events(fd, folder, &names, &files, &wake).await {
                    tracing::debug!(error = %e, "log folder watch failed; polling");
                }
                broken.store(true, Ordering::Relaxed);
                wake.notify_one();
            });
            Ok(InotifyWatch { task })
        }
    }

    /// Wakes the tailer for each batch of events about our names; returns when the folder
    /// watch ends (the folder removed or moved) or reading fails.
    async fn read_events(
        mut fd: AsyncFd<Inotify>,
        folder: inotify::WatchDescriptor,
        names: &[OsString; 2],
        files: &[PathBuf],
        wake: &Notify,
    ) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            let mut guard = fd.readable_mut().await?;
            let batch = match guard.try_io(|i| {
                let mut b = Batch::default();
                for ev in i.get_mut().read_events(&mut buf)? {
                    b.add(&ev, &folder, names);
                }
                Ok(b)
            }) {
                Ok(b) => b?,
                Err(_would_block) => continue,
            };
            if batch.renamed {
                let mut watches = fd.get_ref().watches();
                for f in files {
                    let _ = watches.add(f, FILE);
                }
            }
            if batch.ours {
                wake.notify_one();
            }
            if batch.folder_gone {
                return Ok(());
            }
        }
    }

    #[derive(Default)]
    struct Batch {
        ours: bool,
        renamed: bool,
        folder_gone: bool,
    }

    impl Batch {
        fn add(
            &mut self,
            ev: &inotify::Event<&std::ffi::OsStr>,
            folder: &inotify::WatchDescriptor,
            names: &[OsString; 2],
        ) {
            if ev.mask.contains(EventMask::Q_OVERFLOW) {
                self.ours = true;
                self.renamed = true;
            } else if ev.wd != *folder {
                // A watch on the file itself: a write, or the file gone (IGNORED).
                self.ours = true;
            } else if ev
                .mask
                .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED)
            {
                self.ours = true;
                self.folder_gone = true;
            } else if ev.name.is_some_and(|n| names.iter().any(|m| m == n)) {
                self.ours = true;
                self.renamed = true;
            }
        }
    }
}
