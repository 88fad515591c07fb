//! The checkpoint: its on-disk format (versioned), restoring from it, and when it is saved.
//!
//! One JSON document holds where reading stopped in each log and the pipeline those lines
//! produced, so the two can never disagree. The format is a serde-tagged enum, one variant per
//! version, named by the `version` field (as Vector's file-source checkpointer does): a later
//! format adds a variant and still reads every earlier one.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use super::{IngestEvents, LogConfig};
use crate::pipeline::Pipeline;
use crate::tail::{CheckpointStore, Cursor};

/// How often the checkpoint is saved while lines arrive.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Where reading stopped in each log file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursors {
    /// The debug-level log (`log.path`).
    pub debug: Option<Cursor>,
    /// The error-level log (`log.error_path`).
    pub error: Option<Cursor>,
}

/// The checkpoint file, by format version. `P` is the pipeline, owned when read and borrowed
/// when written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum Checkpoint<P> {
    #[serde(rename = "1")]
    V1(V1<P>),
}

/// Version 1: the log it belongs to, both cursors, the pipeline.
#[derive(Debug, Serialize, Deserialize)]
pub struct V1<P> {
    pub log_path: PathBuf,
    pub cursors: Cursors,
    pub pipeline: P,
}

/// Reads a checkpoint file. Version 1 comes in two spellings: the number `1` (what the agent
/// wrote before the format became an enum) and the tag `"1"`. Both are parsed straight into
/// [`V1`] after a look at `version`: an internally tagged enum buffers the whole document
/// before it picks a variant, which would hold a large pipeline twice at start-up. Other
/// versions go through the enum, whose error names what it expected.
pub fn decode<P: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<Checkpoint<P>> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Tag {
        Number(u64),
        Name(String),
        Other(IgnoredAny),
    }
    #[derive(Deserialize)]
    struct Peek {
        version: Option<Tag>,
    }
    match serde_json::from_slice::<Peek>(bytes)?.version {
        Some(Tag::Number(1)) => serde_json::from_slice(bytes).map(Checkpoint::V1),
        Some(Tag::Name(n)) if n == "1" => serde_json::from_slice(bytes).map(Checkpoint::V1),
        _ => serde_json::from_slice(bytes),
    }
}

/// The saved cursors and pipeline, if the checkpoint belongs to this log; else a fresh start.
pub fn restore(store: &CheckpointStore, config: &LogConfig) -> (Cursors, Pipeline) {
    let fresh = || (Cursors::default(), Pipeline::new(config.limits()));
    match store.load_with(decode::<Pipeline>) {
        Ok(Some(Checkpoint::V1(c))) if c.log_path == config.path => {
            tracing::info!(checkpoint = %store.path().display(), "resuming from checkpoint");
            let mut pipeline = c.pipeline;
            if let Err(why) = pipeline.check() {
                set_aside(store, &why);
                return fresh();
            }
            // The config's caps, not the checkpoint's: the saved tables keep their content.
            pipeline.set_limits(config.limits());
            (c.cursors, pipeline)
        }
        Ok(Some(_)) => {
            tracing::warn!(checkpoint = %store.path().display(), "checkpoint is for another log file or version; starting fresh");
            fresh()
        }
        Ok(None) => fresh(),
        Err(e @ crate::tail::CheckpointError::Corrupt { .. }) => {
            set_aside(store, &e.to_string());
            fresh()
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot read the checkpoint; reading the log from its start");
            fresh()
        }
    }
}

/// A checkpoint that does not fit (not JSON, or state that contradicts itself) is moved
/// aside and the agent starts clean: never a task that dies on it at every start.
fn set_aside(store: &CheckpointStore, why: &str) {
    match store.set_aside() {
        Ok(bad) => {
            tracing::warn!(checkpoint = %store.path().display(), kept = %bad.display(), reason = %why,
                "checkpoint does not fit; set aside, reading the log from its start")
        }
        Err(e) => {
            tracing::warn!(reason = %why, error = %e, "checkpoint does not fit and cannot be set aside; reading the log from its start")
        }
    }
}

/// Saves the checkpoint when asked, and keeps it due after a failure so it is retried a
/// second later.
pub struct Saver {
    store: CheckpointStore,
    log_path: PathBuf,
    /// Lines were read (or files switched) since the last successful save.
    dirty: bool,
    /// The last save failed: logged once, then again when it recovers.
    failing: bool,
    last_attempt: Instant,
}

impl Saver {
    pub fn new(store: CheckpointStore, log_path: PathBuf) -> Saver {
        Saver {
            store,
            log_path,
            dirty: false,
            failing: false,
            // The first save may come at once.
            last_attempt: Instant::now()
                .checked_sub(CHECKPOINT_EVERY)
                .unwrap_or_else(Instant::now),
        }
    }

    /// Something is unsaved.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Lines were read or files switched: the checkpoint must be saved.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// When the next save is due, if something is unsaved.
    pub fn due(&self) -> Instant {
        self.last_attempt + CHECKPOINT_EVERY
    }

    /// Saves when something is unsaved and no save happened in the last second. What must
    /// be saved soon (a rotation, a resume) is saved at once after a quiet second, else a
    /// second after the last save: someone renaming a log in a loop cannot make root write
    /// and fsync more than once a second.
    pub fn save_if_due(
        &mut self,
        cursors: Cursors,
        pipeline: &Mutex<Pipeline>,
        events: &dyn IngestEvents,
    ) {
        if self.dirty && Instant::now() >= self.due() {
            self.save(cursors, pipeline, events);
        }
    }

    pub fn save(
        &mut self,
        cursors: Cursors,
        pipeline: &Mutex<Pipeline>,
        events: &dyn IngestEvents,
    ) {
        self.last_attempt = Instant::now();
        let result = self.write(cursors, pipeline);
        match result {
            Ok(()) => {
                if self.failing {
                    tracing::info!(checkpoint = %self.store.path().display(), "checkpoint saved again");
                }
                self.dirty = false;
                self.failing = false;
                events.emit_checkpoint_saved(self.store.path());
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(error = %e, "cannot save the checkpoint; counting goes on, retrying every second");
                }
                self.failing = true;
                events.emit_checkpoint_save_failed(self.store.path(), e);
            }
        }
    }

    fn write(&self, cursors: Cursors, pipeline: &Mutex<Pipeline>) -> Result<(), String> {
        let p = pipeline.lock().unwrap_or_else(|e| e.into_inner());
        let checkpoint = Checkpoint::V1(V1 {
            log_path: self.log_path.clone(),
            cursors,
            pipeline: &*p,
        });
        // fsync can take a while; the pipeline stays locked so the state matches the cursors.
        tokio::task::block_in_place(|| self.store.save(&checkpoint)).map_err(|e| format!("{e:#}"))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Written by the agent before the format became an enum (`"version": 1`), after reading
    /// the first 19 lines (2,980 bytes) of the `mixed` sample.
    const FIRST_FORMAT: &str = include_str!("../../tests/fixtures/checkpoint-v1.json");
    const PIA_LOG: &str =
        "/Library/Application Support/com.privateinternetaccess.vpn/transparent_proxy.log";

    #[test]
    fn reads_the_first_format() {
        let Checkpoint::V1(c) = decode::<Pipeline>(FIRST_FORMAT.as_bytes()).unwrap();
        assert_eq!(c.log_path, Path::new(PIA_LOG));
        let debug = c.cursors.debug.expect("a debug cursor");
        assert_eq!((debug.offset, c.cursors.error), (2980, None));
        let p = &c.pipeline;
        assert_eq!(
            (p.read().lines, p.read().bytes, p.proxy().restarts),
            (19, 2980, 1)
        );
        assert_eq!(p.sessions().open_len(), 1);
        assert_eq!(
            p.sessions().apps().name(crate::sessions::AppId(2)),
            "com.apple.Safari"
        );
    }

    /// Valid JSON whose state contradicts itself (here a session of an app the table does not
    /// have, which once made the counting index far past its rows) is set aside, not loaded.
    #[test]
    fn a_checkpoint_that_does_not_fit_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path().join("cp.json"));
        let config = LogConfig {
            path: PIA_LOG.into(),
            ..LogConfig::default()
        };
        let mut doc: serde_json::Value = serde_json::from_str(FIRST_FORMAT).unwrap();
        let open = &mut doc["pipeline"]["sessions"]["open"];
        let first = open
            .as_object()
            .unwrap()
            .keys()
            .next()
            .cloned()
            .expect("an open session");
        open[&first]["app"] = 4_000_000_000u32.into();
        std::fs::write(store.path(), doc.to_string()).unwrap();
        let (cursors, p) = restore(&store, &config);
        assert_eq!((cursors, p.read().lines), (Cursors::default(), 0));
        assert!(!store.path().exists());
        assert!(dir.path().join("cp.json.bad").exists());
    }

    #[test]
    fn a_saved_checkpoint_reads_back_and_names_its_version() {
        let Checkpoint::V1(old) = decode::<Pipeline>(FIRST_FORMAT.as_bytes()).unwrap();
        let written = serde_json::to_string(&Checkpoint::V1(V1 {
            log_path: old.log_path.clone(),
            cursors: old.cursors.clone(),
            pipeline: &old.pipeline,
        }))
        .unwrap();
        assert!(
            written.starts_with(r#"{"version":"1","log_path":"#),
            "{written}"
        );
        let Checkpoint::V1(back) = decode::<Pipeline>(written.as_bytes()).unwrap();
        assert_eq!(back.cursors, old.cursors);
        assert_eq!(back.pipeline.read(), old.pipeline.read());
        assert_eq!(back.pipeline.proxy(), old.pipeline.proxy());
    }

    #[test]
    fn unknown_versions_and_garbage_are_errors() {
        for (doc, says) in [
            (
                FIRST_FORMAT.replacen("\"version\": 1", "\"version\": 7", 1),
                "7",
            ),
            (
                FIRST_FORMAT.replacen("\"version\": 1", "\"version\": \"2\"", 1),
                "2",
            ),
            (FIRST_FORMAT.replacen("\"version\": 1,", "", 1), "version"),
            ("[1, 2]".to_owned(), ""),
            (FIRST_FORMAT[..400].to_owned(), "EOF"),
        ] {
            let e = decode::<Pipeline>(doc.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn restore_resumes_only_the_same_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path().join("cp.json"));
        std::fs::write(store.path(), FIRST_FORMAT).unwrap();
        let mut config = LogConfig {
            path: PIA_LOG.into(),
            max_open_sessions: 5,
            ..LogConfig::default()
        };
        let (cursors, p) = restore(&store, &config);
        assert_eq!(
            (cursors.debug.map(|c| c.offset), p.read().lines),
            (Some(2980), 19)
        );
        config.path = dir.path().join("other.log");
        let (cursors, p) = restore(&store, &config);
        assert_eq!((cursors, p.read().lines), (Cursors::default(), 0));
        std::fs::write(store.path(), "{not json").unwrap();
        let (cursors, p) = restore(&store, &config);
        assert_eq!((cursors, p.read().lines), (Cursors::default(), 0));
    }
}
