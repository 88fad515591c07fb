//! The two-file log loop: the debug log and, when configured, the error-level log that PIA
//! writes instead while debug logging is off. Both feed one pipeline, saved with both cursors
//! at once.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::checkpoint::{Clock, Cursors, Saver, restore};
use super::{IngestEvents, LogConfig, LogErrors, LogStatus};
use crate::log_state::{LogFile, LogState};
use crate::os::store::{CheckpointError, CheckpointStore, StoreLock};
use crate::sessions::window::SharedWindow;
use crate::tail::{Cursor, FileState, FollowOptions, Follower, Lines, Poll, Tailer};

/// Largest batch handed from the tailer to the pipeline in one lock.
const BATCH_BYTES: usize = 1 << 20;

/// The log stage, restored from its checkpoint and ready to run.
pub struct Ingest {
    config: LogConfig,
    store: CheckpointStore,
    cursors: Cursors,
    pipeline: Arc<Mutex<LogState>>,
    /// The checkpoint is this process's while the stage lives.
    _lock: Option<StoreLock>,
    /// The saver's time (see [`Saver`]); tests freeze it.
    clock: Clock,
}

impl Ingest {
    /// Resumes from the checkpoint at `config.checkpoint` when it belongs to `config.path`,
    /// else starts fresh. Creates the checkpoint's folder, which may not exist on a new machine.
    ///
    /// Fails when another agent holds the checkpoint (see [`CheckpointStore::lock`]).
    pub fn restore(config: &LogConfig) -> Result<Ingest, CheckpointError> {
        if let Some(dir) = config
            .checkpoint
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            tracing::warn!(error = %e, folder = %dir.display(), "cannot create the checkpoint's folder (log.checkpoint)");
        }
        let store = CheckpointStore::new(config.checkpoint.clone());
        let lock = match store.lock() {
            Ok(lock) => Some(lock),
            Err(e @ CheckpointError::Locked { .. }) => return Err(e),
            // Counting goes on without a checkpoint; health shows the failing saves.
            Err(e) => {
                tracing::warn!(error = %e, "cannot lock the checkpoint");
                None
            }
        };
        let (cursors, mut pipeline) = restore(&store, config);
        // The loop hands each closed session to the session window.
        pipeline.record_closed(true);
        Ok(Ingest {
            config: config.clone(),
            store,
            cursors,
            pipeline: Arc::new(Mutex::new(pipeline)),
            _lock: lock,
            clock: Arc::new(Instant::now),
        })
    }

    /// The pipeline the loop feeds, for collectors to read.
    pub fn pipeline(&self) -> Arc<Mutex<LogState>> {
        self.pipeline.clone()
    }

    /// Follows both logs until `stop` changes, passing closed sessions to `window` and what
    /// happens to `events`; saves the checkpoint a last time before it returns.
    pub async fn run(
        self,
        window: SharedWindow,
        events: impl IngestEvents,
        mut stop: watch::Receiver<bool>,
    ) {
        let Ingest {
            config,
            store,
            cursors,
            pipeline,
            _lock,
            clock,
        } = self;
        let side = LogSide {
            pipeline,
            window,
            events: &events,
        };
        let mut logs = Logs::new(&config, cursors);
        let mut saver = Saver::with_clock(store, config.path.clone(), clock);
        loop {
            let save_in = saver.wait();
            let (stream, result) = tokio::select! {
                // Saves what was read even when no more lines come; armed only while something
                // is unsaved, so an idle agent does not wake for it.
                _ = tokio::time::sleep(save_in.unwrap_or_default()), if save_in.is_some() => {
                    saver.save_if_due(logs.cursors(), &side.pipeline, side.events);
                    continue;
                }
                // A save written meanwhile: reported, and the next one may start.
                _ = saver.settle(side.events), if saver.saving() => continue,
                polled = logs.next() => polled,
                _ = stop.changed() => break,
            };
            if side.take(&mut logs, stream, result, &mut saver) {
                // A failed read is retried from the same position, a second later.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            saver.save_if_due(logs.cursors(), &side.pipeline, side.events);
        }
        saver
            .save_last(logs.cursors(), &side.pipeline, side.events)
            .await;
    }
}

/// What the loop updates after each poll.
struct LogSide<'a> {
    pipeline: Arc<Mutex<LogState>>,
    window: SharedWindow,
    events: &'a dyn IngestEvents,
}

impl LogSide<'_> {
    /// Takes one poll of `stream`'s log: notes its error, tells `saver` what is unsaved,
    /// feeds the lines and reports how the logs look. True when the read failed.
    fn take(
        &self,
        logs: &mut Logs,
        stream: LogFile,
        result: io::Result<Poll>,
        saver: &mut Saver,
    ) -> bool {
        let file = logs.get_mut(stream);
        let polled = Polled::of(result, file.tailer.follower().path());
        // After a resume, a rotation or a truncation the saved cursor names a file that the
        // next rotation destroys: a switch, saved as soon as the budget allows rather than
        // with the lines (see `Saver`). So too when the first file is opened: without a
        // checkpoint, a restart would start over at the live file and miss what a rotation
        // meanwhile moved to the archive.
        let first_open = !file.opened && file.tailer.cursor().is_some();
        file.opened |= first_open;
        let urgent = first_open || polled.switched();
        if polled.poll.is_some() && (urgent || !file.buf.is_empty()) {
            saver.mark(urgent);
        }
        note_error(file, polled.error);
        let now = Instant::now();
        if !file.buf.is_empty() {
            file.last_line = Some(now);
        }
        let last_line_age = file.last_line.map(|t| now - t);
        let status = self.feed(stream, &file.buf, polled.poll.as_ref(), now);
        file.buf.clear();
        self.events.emit_log_polled(LogStatus {
            last_line_age,
            errors: logs.errors(),
            ..status
        });
        polled.poll.is_none()
    }

    /// Feeds one poll's lines to the pipeline and the sessions they closed to the window;
    /// returns how the log looks now (without the parts the pipeline does not know).
    fn feed(&self, stream: LogFile, lines: &Lines, poll: Option<&Poll>, now: Instant) -> LogStatus {
        let mut p = self.pipeline.lock().unwrap_or_else(|e| e.into_inner());
        p.feed_lines(stream, lines);
        count_poll(&mut p, stream, poll);
        let closed = p.drain_closed();
        if !closed.is_empty() {
            let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            for c in closed {
                w.record_close(c.app, c.proto, now, c.reply);
            }
            self.events.emit_sessions_closed(&w.verdict(now));
        }
        LogStatus {
            read: p.read().clone(),
            level: p.proxy().level(),
            proxy_connected: p.proxy().connected,
            ..LogStatus::default()
        }
    }
}

/// What a poll met besides lines, in the pipeline's counters; `None`: the read failed.
fn count_poll(p: &mut LogState, stream: LogFile, poll: Option<&Poll>) {
    let Some(poll) = poll else {
        // The file is there, and cannot be read: health says why.
        p.set_file_present(stream, true);
        return;
    };
    p.count_file_events(
        u64::from(poll.rotations),
        u64::from(poll.truncations),
        poll.lines_too_long,
    );
    p.count_refused(u64::from(poll.refused));
    if poll.resumed == Some(crate::tail::Resume::Gap) {
        p.count_gap();
    }
    // An unreadable file is still there: health says why it cannot be read. A refused one
    // is not the proxy's log.
    p.set_file_present(
        stream,
        !matches!(poll.file, FileState::Missing | FileState::Refused(_)),
    );
}

/// One poll of one log, whatever came of it.
struct Polled {
    /// What the poll read; `None` when the read failed (nothing was consumed: the next poll
    /// retries from the same position).
    poll: Option<Poll>,
    /// Why the file cannot be read now (or was refused), if so.
    error: Option<String>,
}

impl Polled {
    fn of(result: io::Result<Poll>, path: &Path) -> Polled {
        match result {
            Ok(poll) => {
                let error = match poll.file {
                    FileState::Unreadable(kind) => Some(format!("{}: {kind}", path.display())),
                    FileState::Refused(r) => Some(format!("{} refused: {r}", path.display())),
                    FileState::Present | FileState::Missing => None,
                };
                Polled {
                    poll: Some(poll),
                    error,
                }
            }
            Err(e) => Polled {
                poll: None,
                error: Some(e.to_string()),
            },
        }
    }

    /// The log switched files (a rotation, a truncation, a resume): the position the
    /// checkpoint holds names a file that may soon be gone.
    fn switched(&self) -> bool {
        self.poll
            .as_ref()
            .is_some_and(|p| p.rotations > 0 || p.truncations > 0 || p.resumed.is_some())
    }
}

/// The proxy's two logs: the debug log and, when configured, the error log.
struct Logs {
    debug: Followed,
    error: Option<Followed>,
}

impl Logs {
    fn new(config: &LogConfig, cursors: Cursors) -> Logs {
        let debug = Followed::new(
            config.path.clone(),
            cursors.debug,
            config.max_line_bytes,
            None,
        );
        // The error log may sit in a folder anyone writes: it must never be the debug log again.
        let error = (!config.error_path.as_os_str().is_empty()).then(|| {
            Followed::new(
                config.error_path.clone(),
                cursors.error,
                config.max_line_bytes,
                Some(config.path.clone()),
            )
        });
        Logs { debug, error }
    }

    /// The next poll of either log. Cancel-safe, as each tailer's.
    async fn next(&mut self) -> (LogFile, io::Result<Poll>) {
        let Logs { debug, error } = self;
        tokio::select! {
            polled = debug.next() => (LogFile::Debug, polled),
            polled = async {
                match error {
                    Some(f) => f.next().await,
                    None => std::future::pending().await,
                }
            } => (LogFile::Error, polled),
        }
    }

    fn get_mut(&mut self, stream: LogFile) -> &mut Followed {
        match stream {
            LogFile::Debug => &mut self.debug,
            LogFile::Error => self.error.as_mut().expect("only a followed log is polled"),
        }
    }

    fn cursors(&self) -> Cursors {
        Cursors {
            debug: self.debug.tailer.cursor(),
            error: self.error.as_ref().and_then(|e| e.tailer.cursor()),
        }
    }

    fn errors(&self) -> LogErrors {
        LogErrors {
            debug: self.debug.error.clone(),
            error: self.error.as_ref().and_then(|e| e.error.clone()),
        }
    }
}

/// One followed file and what the loop remembers of it.
struct Followed {
    tailer: Tailer,
    buf: Lines,
    last_line: Option<Instant>,
    /// Why the file cannot be opened or read now, if it cannot.
    error: Option<String>,
    /// A file was opened (or a saved cursor given): the checkpoint can name a position.
    opened: bool,
}

impl Followed {
    /// `avoid`: the other log, which this one must never be (see `os::trusted`).
    fn new(
        path: PathBuf,
        cursor: Option<Cursor>,
        max_line_bytes: usize,
        avoid: Option<PathBuf>,
    ) -> Followed {
        let opened = cursor.is_some();
        let opts = FollowOptions {
            max_line_bytes,
            avoid,
            ..FollowOptions::default()
        };
        Followed {
            tailer: Tailer::new(Follower::new(path, cursor, opts)),
            buf: Lines::with_capacity(BATCH_BYTES),
            last_line: None,
            error: None,
            opened,
        }
    }

    async fn next(&mut self) -> io::Result<Poll> {
        self.tailer.next(&mut self.buf).await
    }
}

/// Logs a file's error when it starts and when it clears, not at every retry.
fn note_error(file: &mut Followed, now: Option<String>) {
    if now != file.error {
        let path = file.tailer.follower().path().display().to_string();
        match &now {
            Some(e) => {
                crate::logging::warn_throttled!(error = %e, log = %path, "cannot read the log; retrying")
            }
            None => tracing::info!(log = %path, "the log is readable again"),
        }
        file.error = now;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::sessions::window::{SessionWindow, Thresholds};

    /// What the stage reported: lines read, gaps, saves.
    #[derive(Default)]
    struct Reported {
        lines: AtomicU64,
        gaps: AtomicU64,
        saves: AtomicU64,
    }

    impl IngestEvents for Arc<Reported> {
        fn emit_log_polled(&self, s: LogStatus) {
            self.lines.store(s.read.lines, Ordering::SeqCst);
            self.gaps.store(s.read.gaps, Ordering::SeqCst);
        }
        fn emit_checkpoint_saved(&self, _: &Path) {
            self.saves.fetch_add(1, Ordering::SeqCst);
        }
        fn emit_checkpoint_save_failed(&self, _: &Path, e: String) {
            panic!("save failed: {e}");
        }
    }

    /// The stage on a frozen clock: its save budget never refills, so which saves happen
    /// does not depend on timing.
    struct Running {
        seen: Arc<Reported>,
        task: tokio::task::JoinHandle<()>,
        _stop: watch::Sender<bool>,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl Running {
        fn start(config: &LogConfig) -> Running {
            let frozen = Instant::now();
            let mut ingest = Ingest::restore(config).unwrap();
            ingest.clock = Arc::new(move || frozen);
            let seen = Arc::new(Reported::default());
            let window = Arc::new(Mutex::new(SessionWindow::new(
                Duration::from_secs(60),
                Thresholds::default(),
            )));
            let (stop, rx) = watch::channel(false);
            let task = tokio::spawn(ingest.run(window, seen.clone(), rx));
            Running {
                seen,
                task,
                _stop: stop,
            }
        }

        async fn wait(&self, what: &str, get: impl Fn(&Reported) -> u64, want: u64) {
            let deadline = Instant::now() + Duration::from_secs(20);
            while get(&self.seen) < want {
                assert!(
                    Instant::now() < deadline,
                    "{what}: {} of {want}",
                    get(&self.seen)
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(get(&self.seen), want, "{what}");
        }

        async fn lines(&self, n: u64) {
            self.wait("lines read", |s| s.lines.load(Ordering::SeqCst), n)
                .await;
        }

        async fn saves(&self, n: u64) {
            self.wait("saves", |s| s.saves.load(Ordering::SeqCst), n)
                .await;
        }

        /// Waits for `lines`, then checks that no more come and how many gaps were counted.
        async fn settled(&self, lines: u64, gaps: u64) {
            self.lines(lines).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let s = &self.seen;
            assert_eq!(
                (
                    s.lines.load(Ordering::SeqCst),
                    s.gaps.load(Ordering::SeqCst)
                ),
                (lines, gaps),
                "lines, gaps"
            );
        }

        /// `kill -9`: the task ends where it is, without its last save. Returns the lines
        /// the checkpoint left counts.
        async fn crash(mut self, config: &LogConfig) -> u64 {
            self.task.abort();
            let _ = (&mut self.task).await;
            let cp: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&config.checkpoint).unwrap()).unwrap();
            cp["pipeline"]["read"]["lines"].as_u64().unwrap()
        }
    }

    /// Writes numbered lines and rotates like the proxy (rename to `.1`, new file).
    struct Writer {
        path: PathBuf,
        next: u64,
    }

    impl Writer {
        fn write(&mut self, n: u64) {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .unwrap();
            for _ in 0..n {
                writeln!(f, "[2026-02-16 11:49:32:5330] line {}\r", self.next).unwrap();
                self.next += 1;
            }
        }

        fn rotate(&mut self) {
            let mut archive = self.path.clone().into_os_string();
            archive.push(".1");
            std::fs::rename(&self.path, archive).unwrap();
        }
    }

    fn setup() -> (tempfile::TempDir, LogConfig, Writer) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("transparent_proxy.log");
        let config = LogConfig {
            path: path.clone(),
            error_path: PathBuf::new(),
            checkpoint: dir.path().join("state/cp.json"),
            ..LogConfig::default()
        };
        (dir, config, Writer { path, next: 0 })
    }

    /// Ten lines, the stage started on them, a rotation and ten more lines: opening the first
    /// file and the rotation are each saved at once, though the clock does not move (the
    /// rotation comes right after a save).
    async fn started_then_rotated(config: &LogConfig, w: &mut Writer) -> Running {
        w.write(10);
        let agent = Running::start(config);
        agent.lines(10).await;
        agent.saves(1).await;
        w.rotate();
        w.write(10);
        agent.lines(20).await;
        agent.saves(2).await;
        agent
    }

    /// A rotation right after a save is saved at once, not when the next routine save is
    /// due: killed then, and the file rotated once more while down, the restart finds the
    /// saved file in the archive and loses nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rotation_is_saved_at_once_so_a_crash_then_a_rotation_loses_nothing() {
        let (_dir, config, mut w) = setup();
        let agent = started_then_rotated(&config, &mut w).await;
        w.write(5);
        agent.lines(25).await;
        let saved = agent.crash(&config).await;
        assert!((10..=20).contains(&saved), "{saved}");
        w.rotate();
        w.write(10);
        Running::start(&config).settled(35, 0).await;
    }

    /// With the budget spent (a second rotation within the same second), the second
    /// rotation's save waits; killed then, and rotated once more while down, the restart
    /// cannot find the saved file: the loss is counted as a gap, never silent, and the
    /// archive and the current file are read whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rotation_left_unsaved_then_a_crash_and_a_rotation_count_a_gap() {
        let (_dir, config, mut w) = setup();
        let agent = started_then_rotated(&config, &mut w).await;
        w.rotate();
        w.write(10);
        agent.lines(30).await;
        // The checkpoint names the second file: what it read of it.
        let saved = agent.crash(&config).await;
        assert!((10..=20).contains(&saved), "{saved}");
        w.rotate();
        w.write(10);
        // The second file's unread rest is lost and counted; the third and fourth are read.
        Running::start(&config).settled(saved + 20, 1).await;
    }
}
