//! The two-file log loop: the debug log and, when configured, the error-level log that PIA
//! writes instead while debug logging is off. Both feed one pipeline, saved with both cursors
//! at once.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::checkpoint::{Cursors, Saver, restore};
use super::{IngestEvents, LogConfig};
use crate::health::LogHealthInput;
use crate::pipeline::{LogFile, Pipeline};
use crate::sessions::CloseOutcome;
use crate::sessions::window::SharedWindow;
use crate::tail::{CheckpointStore, Cursor, FileState, FollowOptions, Follower, Poll, Tailer};

/// Largest batch handed from the tailer to the pipeline in one lock.
const BATCH_BYTES: usize = 1 << 20;

/// The log stage, restored from its checkpoint and ready to run.
pub struct Ingest {
    config: LogConfig,
    store: CheckpointStore,
    cursors: Cursors,
    pipeline: Arc<Mutex<Pipeline>>,
    /// The checkpoint is this process's while the stage lives.
    _lock: Option<crate::tail::StoreLock>,
}

impl Ingest {
    /// Resumes from the checkpoint at `config.checkpoint` when it belongs to `config.path`,
    /// else starts fresh. Creates the checkpoint's folder, which may not exist on a new machine.
    ///
    /// Fails when another agent holds the checkpoint (see [`CheckpointStore::lock`]).
    pub fn restore(config: &LogConfig) -> Result<Ingest, crate::tail::CheckpointError> {
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
            Err(e @ crate::tail::CheckpointError::Locked { .. }) => return Err(e),
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
        })
    }

    /// The pipeline the loop feeds, for collectors to read.
    pub fn pipeline(&self) -> Arc<Mutex<Pipeline>> {
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
        } = self;
        let side = LogSide {
            pipeline,
            window,
            events: &events,
        };
        let mut debug = Followed::new(
            config.path.clone(),
            cursors.debug,
            config.max_line_bytes,
            None,
        );
        // The error log may sit in a folder anyone writes: it must never be the debug log again.
        let mut error = (!config.error_path.as_os_str().is_empty()).then(|| {
            Followed::new(
                config.error_path.clone(),
                cursors.error,
                config.max_line_bytes,
                Some(config.path.clone()),
            )
        });
        let mut saver = Saver::new(store, config.path.clone());
        let cursors = |debug: &Followed, error: &Option<Followed>| Cursors {
            debug: debug.tailer.cursor(),
            error: error.as_ref().and_then(|e| e.tailer.cursor()),
        };
        loop {
            let (which, polled) = tokio::select! {
                // Saves what was read even when no more lines come; armed only while something
                // is unsaved, so an idle agent does not wake for it.
                _ = tokio::time::sleep_until(saver.due().into()), if saver.dirty() => {
                    saver.save(cursors(&debug, &error), &side.pipeline, side.events);
                    continue;
                }
                polled = debug.tailer.next(&mut debug.buf) => (LogFile::Debug, polled),
                polled = async {
                    let f = error.as_mut().expect("guarded by is_some");
                    f.tailer.next(&mut f.buf).await
                }, if error.is_some() => (LogFile::Error, polled),
                _ = stop.changed() => break,
            };
            let other_error = match which {
                LogFile::Debug => error.as_ref().and_then(|e| e.error.clone()),
                LogFile::Error => debug.error.clone(),
            };
            let file = match which {
                LogFile::Debug => &mut debug,
                LogFile::Error => error.as_mut().expect("polled"),
            };
            // After a resume, a rotation or a truncation the saved cursor names a file that the
            // next rotation destroys: save at once rather than on the timer. So too when the
            // first file is opened: without a checkpoint, a restart would start over at the
            // live file and miss what a rotation meanwhile moved to the archive.
            let first_open = !file.opened && file.tailer.cursor().is_some();
            file.opened |= first_open;
            let mut urgent = first_open;
            let mut failed = false;
            let poll = match polled {
                Ok(poll) => {
                    urgent |= poll.rotations > 0 || poll.truncations > 0 || poll.resumed.is_some();
                    if urgent || !file.buf.is_empty() {
                        saver.mark_dirty();
                    }
                    let now_error = match poll.file {
                        FileState::Unreadable(kind) => Some(format!(
                            "{}: {kind}",
                            file.tailer.follower().path().display()
                        )),
                        FileState::Refused(r) => Some(format!(
                            "{} refused: {r}",
                            file.tailer.follower().path().display()
                        )),
                        FileState::Present | FileState::Missing => None,
                    };
                    note_error(file, now_error);
                    poll
                }
                Err(e) => {
                    // Nothing was consumed: the next poll retries from the same position.
                    note_error(file, Some(e.to_string()));
                    failed = true;
                    Poll {
                        bytes: 0,
                        lines_too_long: 0,
                        rotations: 0,
                        truncations: 0,
                        more: false,
                        file: FileState::Unreadable(e.kind()),
                        resumed: None,
                        refused: 0,
                    }
                }
            };
            let errors = match which {
                LogFile::Debug => (file.error.clone(), other_error),
                LogFile::Error => (other_error, file.error.clone()),
            };
            feed(&side, file, which, &poll, errors);
            if failed {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            saver.save_if_due(cursors(&debug, &error), &side.pipeline, side.events);
        }
        saver.save(cursors(&debug, &error), &side.pipeline, side.events);
    }
}

/// What the loop updates after each batch.
struct LogSide<'a> {
    pipeline: Arc<Mutex<Pipeline>>,
    window: SharedWindow,
    events: &'a dyn IngestEvents,
}

/// One followed file and what the loop remembers of it.
struct Followed {
    tailer: Tailer,
    buf: Vec<u8>,
    last_line: Option<Instant>,
    /// Why the file cannot be opened or read now, if it cannot.
    error: Option<String>,
    /// A file was opened (or a saved cursor given): the checkpoint can name a position.
    opened: bool,
}

impl Followed {
    /// `avoid`: the other log, which this one must never be (see `tail::open`).
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
            buf: Vec::with_capacity(BATCH_BYTES),
            last_line: None,
            error: None,
            opened,
        }
    }
}

/// Logs a file's error when it starts and when it clears, not at every retry.
fn note_error(file: &mut Followed, now: Option<String>) {
    if now != file.error {
        let path = file.tailer.follower().path().display().to_string();
        match &now {
            Some(e) => tracing::warn!(error = %e, log = %path, "cannot read the log; retrying"),
            None => tracing::info!(log = %path, "the log is readable again"),
        }
        file.error = now;
    }
}

/// Feeds one batch to the pipeline and passes what it changed to the window and the events.
/// `errors`: why the debug log and the error log cannot be read (or were refused), if so.
fn feed(
    side: &LogSide<'_>,
    file: &mut Followed,
    which: LogFile,
    poll: &Poll,
    errors: (Option<String>, Option<String>),
) {
    let now = Instant::now();
    if !file.buf.is_empty() {
        file.last_line = Some(now);
    }
    let status = {
        let mut p = side.pipeline.lock().unwrap_or_else(|e| e.into_inner());
        let used = p.feed_file(which, &file.buf);
        debug_assert_eq!(
            used,
            file.buf.len(),
            "the tailer hands on complete lines only"
        );
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
            which,
            !matches!(poll.file, FileState::Missing | FileState::Refused(_)),
        );
        let closed = p.drain_closed();
        if !closed.is_empty() {
            let mut w = side.window.lock().unwrap_or_else(|e| e.into_inner());
            for c in closed {
                w.record_close(
                    p.sessions().apps().name(c.app),
                    now,
                    c.outcome == CloseOutcome::ZeroBytes,
                );
            }
            side.events.emit_sessions_closed(&w.verdict(now));
        }
        let read = p.read();
        LogHealthInput {
            file_present: read.file_present,
            last_line_age: file.last_line.map(|t| now - t),
            level: p.proxy().level(),
            lines_read: read.lines,
            unrecognized: read.unrecognized,
            proxy_connected: p.proxy().connected,
            error_log_present: read.error_file_present,
            file_error: errors.0,
            error_file_error: errors.1,
            gaps: read.gaps,
        }
    };
    file.buf.clear();
    side.events.emit_log_polled(status);
}
