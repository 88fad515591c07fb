//! The checkpoint: its on-disk format (versioned), restoring from it, and when it is saved.
//!
//! One JSON document holds where reading stopped in each log and the log state those lines
//! produced, so the two can never disagree. The format is a serde-tagged enum, one variant per
//! version, named by the `version` field (as Vector's file-source checkpointer does): a later
//! format adds a variant and still reads every earlier one.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use super::{IngestEvents, LogConfig};
use crate::log_state::LogState;
use crate::os::store::CheckpointStore;
use crate::tail::Cursor;

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
pub fn restore(store: &CheckpointStore, config: &LogConfig) -> (Cursors, LogState) {
    let fresh = || (Cursors::default(), LogState::new(config.limits()));
    match store.load_with(decode::<LogState>) {
        Ok(Some(Checkpoint::V1(c))) if c.log_path == config.path => {
            tracing::info!(checkpoint = %store.path().display(), "resuming from checkpoint");
            let mut pipeline = c.pipeline;
            if let Err(why) = pipeline.check() {
                set_aside(store, &why);
                return fresh();
            }
            // The config's caps, not the checkpoint's; then what was saved passes today's
            // checks of live input (an earlier version's 100 KB app ids, its 2099 times).
            pipeline.set_limits(config.limits());
            let refused = pipeline.recheck();
            if refused > 0 {
                tracing::warn!(checkpoint = %store.path().display(), refused,
                    "the checkpoint held values today's checks refuse (app ids, times): folded \
                     into other or forgotten, and counted in log_values_refused_total");
            }
            (c.cursors, pipeline)
        }
        Ok(Some(_)) => {
            tracing::warn!(checkpoint = %store.path().display(), "checkpoint is for another log file or version; starting fresh");
            fresh()
        }
        Ok(None) => fresh(),
        Err(e @ crate::os::store::CheckpointError::Corrupt { .. }) => {
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

/// What a save costs in the budget, and how long the budget takes to earn it back.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Saves the budget holds at most: one for the routine save of lines read, one kept for a
/// save that cannot wait (see [`Saver`]).
const SAVE_BURST: u32 = 2;

/// Where the saver reads the time; tests freeze it.
pub type Clock = std::sync::Arc<dyn Fn() -> Instant + Send + Sync>;

/// The save budget, a token bucket kept as time credit: it earns [`SAVE_EVERY`] of credit
/// per second up to [`SAVE_BURST`] saves' worth, and each save spends one [`SAVE_EVERY`].
/// Hand-written: a dozen lines on a clock the caller gives, where a rate-limiting crate
/// (governor) would bring its own clock abstraction for one counter.
#[derive(Clone, Copy, Debug)]
struct Budget {
    credit: Duration,
    at: Instant,
}

impl Budget {
    const FULL: Duration = SAVE_EVERY.saturating_mul(SAVE_BURST);

    fn full(now: Instant) -> Budget {
        Budget {
            credit: Self::FULL,
            at: now,
        }
    }

    fn credit(&self, now: Instant) -> Duration {
        (self.credit + now.saturating_duration_since(self.at)).min(Self::FULL)
    }

    /// How long until the budget holds `need`.
    fn wait_for(&self, need: Duration, now: Instant) -> Duration {
        need.saturating_sub(self.credit(now))
    }

    fn spend(&mut self, now: Instant) {
        self.credit = self.credit(now).saturating_sub(SAVE_EVERY);
        self.at = now;
    }
}

/// What is unsaved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Unsaved {
    Nothing,
    /// Lines read: the saved cursor still names a file that is there, so a crash only
    /// rereads them.
    Lines,
    /// A file switch (rotation, truncation, resume, first open): the saved cursor names a
    /// file the next rotation destroys, so a crash followed by another rotation would lose
    /// the rest of it.
    Switch,
}

/// Saves the checkpoint when asked, within a budget of [`SAVE_BURST`] saves refilled at one
/// a second, so a rename storm costs root at most one save a second in the long run (two at
/// once, then one a second).
///
/// Lines read are saved only when the budget is full: at most once a second, and always
/// leaving one save in hand. A file switch is saved as soon as the budget holds one save,
/// which after routine saves alone is at once: a rotation right after a routine save is
/// not left unsaved for a second, in which a `kill -9` and one more rotation would lose the
/// rest of the file it names. A failed save stays due and is retried within the budget.
///
/// The state is encoded under the log state's lock (so it matches the cursors), and written
/// and fsync'd on a blocking thread while the loop reads on: a save at a rotation must not
/// stall reading, or a burst of rotations during the fsync could rotate a file away unread.
/// One save is in flight at a time, so saves land in order.
pub struct Saver {
    store: CheckpointStore,
    log_path: PathBuf,
    unsaved: Unsaved,
    /// The save being written and what it covers (restored if it fails).
    in_flight: Option<(tokio::task::JoinHandle<Result<(), String>>, Unsaved)>,
    /// The last save failed: logged once, then again when it recovers.
    failing: bool,
    budget: Budget,
    clock: Clock,
}

impl Saver {
    pub fn new(store: CheckpointStore, log_path: PathBuf) -> Saver {
        Saver::with_clock(store, log_path, std::sync::Arc::new(Instant::now))
    }

    pub fn with_clock(store: CheckpointStore, log_path: PathBuf, clock: Clock) -> Saver {
        Saver {
            store,
            log_path,
            unsaved: Unsaved::Nothing,
            in_flight: None,
            failing: false,
            // The first saves may come at once.
            budget: Budget::full(clock()),
            clock,
        }
    }

    /// Lines were read (`switched` false) or files switched (true): the checkpoint must be
    /// saved, a switch as soon as the budget allows.
    pub fn mark(&mut self, switched: bool) {
        let now = if switched {
            Unsaved::Switch
        } else {
            Unsaved::Lines
        };
        self.unsaved = self.unsaved.max(now);
    }

    /// How long until the next save is due, if something is unsaved and no save is being
    /// written (its end is awaited with [`settle`](Saver::settle) instead).
    pub fn wait(&self) -> Option<Duration> {
        let need = match self.unsaved {
            _ if self.in_flight.is_some() => return None,
            Unsaved::Nothing => return None,
            Unsaved::Lines => Budget::FULL,
            Unsaved::Switch => SAVE_EVERY,
        };
        Some(self.budget.wait_for(need, (self.clock)()))
    }

    /// A save is being written.
    pub fn saving(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Starts a save when something is unsaved and the budget allows it (see [`Saver`]).
    pub fn save_if_due(
        &mut self,
        cursors: Cursors,
        pipeline: &Mutex<LogState>,
        events: &dyn IngestEvents,
    ) {
        if self.wait() == Some(Duration::ZERO) {
            self.start(cursors, pipeline, events);
        }
    }

    /// Waits for the save being written, if any, and reports how it went.
    pub async fn settle(&mut self, events: &dyn IngestEvents) {
        let Some((task, covered)) = self.in_flight.as_mut() else {
            return;
        };
        let result = task
            .await
            .unwrap_or_else(|e| Err(format!("the save did not finish: {e}")));
        let covered = *covered;
        self.in_flight = None;
        self.report(result, covered, events);
    }

    /// The last save, on the way out: after the one being written, now, budget or not.
    pub async fn save_last(
        &mut self,
        cursors: Cursors,
        pipeline: &Mutex<LogState>,
        events: &dyn IngestEvents,
    ) {
        self.settle(events).await;
        self.start(cursors, pipeline, events);
        self.settle(events).await;
    }

    /// Encodes the state now and writes it on a blocking thread; the save is spent from the
    /// budget.
    fn start(&mut self, cursors: Cursors, pipeline: &Mutex<LogState>, events: &dyn IngestEvents) {
        self.budget.spend((self.clock)());
        let covered = std::mem::replace(&mut self.unsaved, Unsaved::Nothing);
        let json = {
            let p = pipeline.lock().unwrap_or_else(|e| e.into_inner());
            self.store.encode(&Checkpoint::V1(V1 {
                log_path: self.log_path.clone(),
                cursors,
                pipeline: &*p,
            }))
        };
        match json {
            Ok(json) => {
                let store = self.store.clone();
                let task = tokio::task::spawn_blocking(move || {
                    store.write(&json).map_err(|e| format!("{e:#}"))
                });
                self.in_flight = Some((task, covered));
            }
            Err(e) => self.report(Err(format!("{e:#}")), covered, events),
        }
    }

    fn report(&mut self, result: Result<(), String>, covered: Unsaved, events: &dyn IngestEvents) {
        match result {
            Ok(()) => {
                if self.failing {
                    tracing::info!(checkpoint = %self.store.path().display(), "checkpoint saved again");
                }
                self.failing = false;
                events.emit_checkpoint_saved(self.store.path());
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(error = %e, "cannot save the checkpoint; counting goes on, retrying every second");
                }
                self.failing = true;
                // Still unsaved: due again within the budget.
                self.unsaved = self.unsaved.max(covered);
                events.emit_checkpoint_save_failed(self.store.path(), e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Written by the agent before the format became an enum (`"version": 1`), after reading
    /// the first 19 lines (2,980 bytes) of the `mixed` sample.
    const FIRST_FORMAT: &str = include_str!("../../tests/fixtures/checkpoint-v1.json");
    const PIA_LOG: &str =
        "/Library/Application Support/com.privateinternetaccess.vpn/transparent_proxy.log";

    /// A clock the test moves by hand.
    fn manual_clock() -> (Clock, Arc<Mutex<Instant>>) {
        let now = Arc::new(Mutex::new(Instant::now()));
        let read = now.clone();
        (Arc::new(move || *read.lock().unwrap()), now)
    }

    #[derive(Default)]
    struct Saves(AtomicU32);

    impl IngestEvents for Saves {
        fn emit_log_polled(&self, _: crate::ingest::LogStatus) {}
        fn emit_checkpoint_saved(&self, _: &Path) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn emit_checkpoint_save_failed(&self, _: &Path, e: String) {
            panic!("save failed: {e}");
        }
    }

    fn saver_at(dir: &Path) -> (Saver, Arc<Mutex<Instant>>) {
        let (clock, now) = manual_clock();
        let store = CheckpointStore::new(dir.join("cp.json"));
        (Saver::with_clock(store, PIA_LOG.into(), clock), now)
    }

    /// Marks (`Some(switched)`) after moving the clock on, saves if due, and returns the
    /// saves so far.
    async fn step(
        saver: &mut Saver,
        now: &Mutex<Instant>,
        saves: &Saves,
        switched: Option<bool>,
        advance_ms: u64,
    ) -> u32 {
        *now.lock().unwrap() += Duration::from_millis(advance_ms);
        if let Some(s) = switched {
            saver.mark(s);
        }
        let pipeline = Mutex::new(LogState::new(Default::default()));
        saver.save_if_due(Cursors::default(), &pipeline, saves);
        saver.settle(saves).await;
        saves.0.load(Ordering::Relaxed)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn lines_are_saved_once_a_second_and_a_switch_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut saver, now) = saver_at(dir.path());
        let saves = Saves::default();
        let (s, n) = (&mut saver, &*now);
        assert_eq!(s.wait(), None, "nothing unsaved");
        // The first file opened: saved at once.
        assert_eq!(step(s, n, &saves, Some(true), 0).await, 1);
        // Lines: kept until the budget is full again, a second later.
        assert_eq!(step(s, n, &saves, Some(false), 100).await, 1);
        assert_eq!(s.wait(), Some(Duration::from_millis(900)));
        assert_eq!(step(s, n, &saves, None, 900).await, 2);
        // A rotation right after that routine save: saved at once, not a second later.
        assert_eq!(step(s, n, &saves, Some(true), 10).await, 3);
        // Lines read since wait for the full budget: 1.99 s now.
        assert_eq!(step(s, n, &saves, Some(false), 0).await, 3);
        assert_eq!(s.wait(), Some(Duration::from_millis(1990)));
        // A second rotation within that second waits for one save's worth.
        assert_eq!(step(s, n, &saves, Some(true), 500).await, 3);
        assert_eq!(s.wait(), Some(Duration::from_millis(490)));
        assert_eq!(step(s, n, &saves, None, 490).await, 4);
        assert_eq!(s.wait(), None);
    }

    /// Rotations every millisecond (a rename storm): two saves at once, then one a second.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_storm_of_switches_costs_at_most_one_save_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let (mut saver, now) = saver_at(dir.path());
        let saves = Saves::default();
        let mut per_window = vec![];
        for secs in [5, 60] {
            let before = saves.0.load(Ordering::Relaxed);
            for _ in 0..secs * 1000 {
                step(&mut saver, &now, &saves, Some(true), 1).await;
            }
            per_window.push(saves.0.load(Ordering::Relaxed) - before);
        }
        // From a full budget: 2 at once, then one each second (6 in the first 5 s, 1.2 a
        // second); the budget spent, a minute costs 60.
        assert_eq!(per_window, [6, 60]);
    }

    #[test]
    fn reads_the_first_format() {
        let Checkpoint::V1(c) = decode::<LogState>(FIRST_FORMAT.as_bytes()).unwrap();
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
        let Checkpoint::V1(old) = decode::<LogState>(FIRST_FORMAT.as_bytes()).unwrap();
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
        let Checkpoint::V1(back) = decode::<LogState>(written.as_bytes()).unwrap();
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
            let e = decode::<LogState>(doc.as_bytes()).unwrap_err().to_string();
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
