//! The agent: tail → pipeline → metrics, with a checkpoint; HTTP; graceful shutdown.
//!
//! One task owns the logs (the debug log and the error-level one): it reads batches of complete
//! lines from the tailers, feeds them to the pipeline under its lock, and saves the cursors and
//! the pipeline as one atomic checkpoint, so the offsets and the state they produced can never
//! disagree, even after `kill -9`. A second task probes and watches processes on an interval
//! and feeds health and the fallback controller.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::Config;
use crate::fallback::controller::{Controller, Verifier};
use crate::fallback::http::SharedController;
use crate::fallback::window::{SessionWindow, SharedWindow};
use crate::health::metrics::HealthCollector;
use crate::health::{Health, LogHealthInput};
use crate::metrics::{Counter, CounterCell, Family, LogCollector};
use crate::pipeline::Pipeline;
use crate::probe::{Round, RoundSource};
use crate::sessions::Outcome;
use crate::tail::{CheckpointStore, Cursor, FileState, FollowOptions, Follower, Poll, Tailer};
use crate::watch::{PresenceCollector, ProcessSource, ProcessWatch, SelfCollector};

/// How often the checkpoint is saved while lines arrive.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Largest batch handed from the tailer to the pipeline in one lock.
const BATCH_BYTES: usize = 1 << 20;

/// What the checkpoint file holds: where reading stopped and what the lines before produced.
#[derive(Serialize, Deserialize)]
struct Checkpoint<P> {
    version: u32,
    log_path: PathBuf,
    cursors: Cursors,
    pipeline: P,
}

const CHECKPOINT_VERSION: u32 = 1;

/// What the agent probes and watches with; the real ones by default, stand-ins for the demo.
pub struct Sources {
    /// Probe rounds; `None` runs the agent on the log alone.
    pub rounds: Option<Arc<dyn RoundSource>>,
    pub processes: Box<dyn ProcessSource + Send>,
    /// Time between probe rounds (and process-table looks).
    pub interval: Duration,
}

impl Sources {
    /// The machine's own network and process table.
    pub fn real(config: &Config) -> anyhow::Result<Sources> {
        Ok(Sources {
            rounds: config.probe.source(),
            processes: Box::new(crate::watch::SysinfoSource::new()?),
            interval: config.probe.interval(),
        })
    }
}

/// A round source as the fallback's verifier: a fresh round after an apply.
struct Rounds(Arc<dyn RoundSource>);

impl Verifier for Rounds {
    fn round(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Round> + Send + '_>> {
        self.0.round()
    }
}

/// Runs the agent until SIGINT or SIGTERM.
pub fn run_blocking(config: Config) -> anyhow::Result<ExitCode> {
    init_tracing();
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot listen on {} (http.listen)", config.http.listen))?;
        let sources = Sources::real(&config)?;
        run(config, sources, listener, shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on SIGINT or SIGTERM (launchd sends SIGTERM and waits 20 s).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs the agent on `listener` until `shutdown` resolves, then saves the checkpoint and
/// leaves or removes the fallback as configured.
pub async fn run(
    config: Config,
    sources: Sources,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    // The checkpoint's folder (by default also the pf token's) may not exist on a new machine.
    if let Some(dir) = config
        .log
        .checkpoint
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        tracing::warn!(error = %e, folder = %dir.display(), "cannot create the checkpoint's folder (log.checkpoint)");
    }
    let store = CheckpointStore::new(config.log.checkpoint.clone());
    let (cursors, mut pipeline) = restore(&store, &config);
    pipeline.sessions.record_closed(true);
    let pipeline = Arc::new(Mutex::new(pipeline));

    let registry = Registry::new();
    crate::metrics::register(&registry, crate::metrics::BuildInfo)?;
    crate::metrics::register(&registry, LogCollector::new(pipeline.clone()))?;
    crate::metrics::register(&registry, SelfCollector::new()?)?;
    let mut processes = ProcessWatch::new(sources.processes, config.processes.clone());
    crate::metrics::register(&registry, PresenceCollector::new(processes.shared()))?;
    let probe_metrics =
        crate::probe::ProbeMetrics::register(&registry, config.probe.export_addresses)?;

    let window: SharedWindow = Arc::new(Mutex::new(SessionWindow::new(Duration::from_secs(
        config.fallback.window_secs,
    ))));
    let fallback_metrics = crate::fallback::metrics::FallbackMetrics::register(&registry)?;
    let verifier: Box<dyn Verifier> = match &sources.rounds {
        Some(r) => Box::new(Rounds(r.clone())),
        None => Box::new(|| async {
            Round {
                interfaces: Default::default(),
                results: vec![],
            }
        }),
    };
    let mut controller = Controller::new(
        &config.fallback,
        crate::fallback::build_backend(&config.fallback),
        verifier,
        fallback_metrics,
    );
    if let Err(e) = controller.reconcile() {
        tracing::warn!(error = %e, "fallback: cannot reconcile with what is loaded");
    }
    let health = Arc::new(
        Health::new(&config.health, &config.fallback)
            .with_sessions(window.clone())
            .with_fallback(controller.status_handle()),
    );
    crate::metrics::register(&registry, HealthCollector(health.clone()))?;
    let controller: SharedController = Arc::new(tokio::sync::Mutex::new(controller));

    let save_errors = CounterCell::register(&registry, &CHECKPOINT_SAVE_ERRORS)?;
    let log_side = LogSide {
        pipeline: pipeline.clone(),
        window: window.clone(),
        health: health.clone(),
        save_errors,
    };
    let tail = tokio::spawn({
        let (config, stop) = (config.clone(), stop_rx.clone());
        async move { tail_loop(&config, cursors, log_side, store, stop).await }
    });
    // Every interval: who is running, then (when probing) one round for health and the fallback.
    let rounds = sources.rounds;
    let periodic = tokio::spawn({
        let (controller, window, health, mut stop) = (
            controller.clone(),
            window.clone(),
            health.clone(),
            stop_rx.clone(),
        );
        let interval = sources.interval;
        async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                let presence = tokio::task::block_in_place(|| processes.refresh());
                health.update_processes(presence);
                let Some(rounds) = &rounds else { continue };
                let round = rounds.round().await;
                probe_metrics.observe(&round);
                let ratio = window
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .ratio(Instant::now());
                controller
                    .lock()
                    .await
                    .on_round(Instant::now(), &round, ratio)
                    .await;
                health.update_round(round);
            }
        }
    });

    let mut app = crate::http::router(registry.clone(), LINKS)
        .merge(crate::health::http::router(health.clone()));
    match crate::fallback::http::router(controller.clone(), &config.fallback) {
        Ok(routes) => app = app.merge(routes),
        Err(e) => tracing::warn!(error = %e, "fallback HTTP control disabled"),
    }
    tracing::info!(listen = %listener.local_addr()?, log = %config.log.path.display(), "agent started");
    let server = crate::http::serve(listener, app, &config.http, async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    server.await.context("HTTP server")?;
    tail.await.context("tail task")?;
    periodic.await.context("probe task")?;
    if let Err(e) = controller.lock().await.shutdown() {
        tracing::warn!(error = %e, "fallback: cannot leave the system as configured (fallback.on_shutdown)");
    }
    tracing::info!("agent stopped");
    Ok(())
}

const LINKS: &[(&str, &str)] = &[
    ("/metrics", "Prometheus metrics"),
    (
        "/health",
        "health of each component, as JSON (503 when one is failing)",
    ),
    ("/-/ready", "readiness: first log read and probe round done"),
    ("/-/healthy", "liveness"),
];

const CHECKPOINT_SAVE_ERRORS: Family<Counter, 0> = Family::new(
    "checkpoint_save_errors_total",
    "Failed saves of the checkpoint (log.checkpoint); retried every second.",
    [],
);

/// What the tail loop updates after each batch.
struct LogSide {
    pipeline: Arc<Mutex<Pipeline>>,
    window: SharedWindow,
    health: Arc<Health>,
    save_errors: CounterCell,
}

/// Where reading stopped in each log file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Cursors {
    /// The debug-level log (`log.path`).
    debug: Option<Cursor>,
    /// The error-level log (`log.error_path`).
    error: Option<Cursor>,
}

/// The saved cursors and pipeline, if the checkpoint belongs to this log; else a fresh start.
fn restore(store: &CheckpointStore, config: &Config) -> (Cursors, Pipeline) {
    match store.load::<Checkpoint<Pipeline>>() {
        Ok(Some(c)) if c.version == CHECKPOINT_VERSION && c.log_path == config.log.path => {
            tracing::info!(checkpoint = %store.path().display(), "resuming from checkpoint");
            let mut pipeline = c.pipeline;
            // Caps may have changed in the config; the saved tables keep their content.
            pipeline.sessions.set_limits(config.log.max_open_sessions);
            (c.cursors, pipeline)
        }
        Ok(Some(_)) => {
            tracing::warn!(checkpoint = %store.path().display(), "checkpoint is for another log file or version; starting fresh");
            (Cursors::default(), Pipeline::new(&config.log))
        }
        Ok(None) => (Cursors::default(), Pipeline::new(&config.log)),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot read the checkpoint; reading the log from its start");
            (Cursors::default(), Pipeline::new(&config.log))
        }
    }
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
    fn new(path: PathBuf, cursor: Option<Cursor>, max_line_bytes: usize) -> Followed {
        let opened = cursor.is_some();
        let opts = FollowOptions {
            max_line_bytes,
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

/// Which of the two logs a batch came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Debug,
    Error,
}

/// Follows the debug log and, when configured, the error-level log that PIA writes instead
/// while debug logging is off; both feed one pipeline, saved with both cursors at once.
async fn tail_loop(
    config: &Config,
    cursors: Cursors,
    side: LogSide,
    store: CheckpointStore,
    mut stop: watch::Receiver<bool>,
) {
    let log = &config.log;
    let mut debug = Followed::new(log.path.clone(), cursors.debug, log.max_line_bytes);
    let mut error = (!log.error_path.as_os_str().is_empty())
        .then(|| Followed::new(log.error_path.clone(), cursors.error, log.max_line_bytes));
    let mut saver = Saver {
        store,
        log_path: log.path.clone(),
        dirty: false,
        failing: false,
        last_attempt: Instant::now(),
    };
    let cursors = |debug: &Followed, error: &Option<Followed>| Cursors {
        debug: debug.tailer.cursor(),
        error: error.as_ref().and_then(|e| e.tailer.cursor()),
    };
    loop {
        let (role, polled) = tokio::select! {
            // Saves what was read even when no more lines come; armed only while something
            // is unsaved, so an idle agent does not wake for it.
            _ = tokio::time::sleep_until(saver.due().into()), if saver.dirty => {
                saver.save(cursors(&debug, &error), &side);
                continue;
            }
            polled = debug.tailer.next(&mut debug.buf) => (Role::Debug, polled),
            polled = async {
                let f = error.as_mut().expect("guarded by is_some");
                f.tailer.next(&mut f.buf).await
            }, if error.is_some() => (Role::Error, polled),
            _ = stop.changed() => break,
        };
        let debug_error = debug.error.clone();
        let file = match role {
            Role::Debug => &mut debug,
            Role::Error => error.as_mut().expect("polled"),
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
                saver.dirty |= urgent || !file.buf.is_empty();
                let now_error = match poll.file {
                    FileState::Unreadable(kind) => Some(format!(
                        "{}: {kind}",
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
                }
            }
        };
        let debug_error = match role {
            Role::Debug => file.error.clone(),
            Role::Error => debug_error,
        };
        feed(&side, file, role, &poll, debug_error);
        if failed {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if saver.dirty && (urgent || Instant::now() >= saver.due()) {
            saver.save(cursors(&debug, &error), &side);
        }
    }
    saver.save(cursors(&debug, &error), &side);
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

/// Saves the checkpoint when asked, and keeps it due after a failure so it is retried a
/// second later.
struct Saver {
    store: CheckpointStore,
    log_path: PathBuf,
    /// Lines were read (or files switched) since the last successful save.
    dirty: bool,
    /// The last save failed: logged once, then again when it recovers.
    failing: bool,
    last_attempt: Instant,
}

impl Saver {
    /// When the next save is due, if something is unsaved.
    fn due(&self) -> Instant {
        self.last_attempt + CHECKPOINT_EVERY
    }

    fn save(&mut self, cursors: Cursors, side: &LogSide) {
        self.last_attempt = Instant::now();
        let result = save(&self.store, &self.log_path, cursors, &side.pipeline);
        match &result {
            Ok(()) => {
                if self.failing {
                    tracing::info!(checkpoint = %self.store.path().display(), "checkpoint saved again");
                }
                self.dirty = false;
            }
            Err(e) => {
                side.save_errors.inc();
                if !self.failing {
                    tracing::warn!(error = %e, "cannot save the checkpoint; counting goes on, retrying every second");
                }
            }
        }
        self.failing = result.is_err();
        side.health.update_checkpoint(self.store.path(), result);
    }
}

/// Feeds one batch to the pipeline and passes what it changed to the window and health.
fn feed(side: &LogSide, file: &mut Followed, role: Role, poll: &Poll, debug_error: Option<String>) {
    let now = Instant::now();
    if !file.buf.is_empty() {
        file.last_line = Some(now);
    }
    let health_input = {
        let mut p = side.pipeline.lock().unwrap_or_else(|e| e.into_inner());
        let used = p.feed(&file.buf);
        debug_assert_eq!(
            used,
            file.buf.len(),
            "the tailer hands on complete lines only"
        );
        p.read.rotations += u64::from(poll.rotations);
        p.read.truncations += u64::from(poll.truncations);
        p.read.lines_too_long += poll.lines_too_long;
        // An unreadable file is still there: health says why it cannot be read.
        let present = !matches!(poll.file, FileState::Missing);
        match role {
            Role::Debug => p.read.file_present = present,
            Role::Error => p.read.error_file_present = present,
        }
        let closed = p.sessions.drain_closed();
        if !closed.is_empty() {
            let mut w = side.window.lock().unwrap_or_else(|e| e.into_inner());
            for c in closed {
                w.record_close(
                    p.sessions.apps().name(c.app),
                    now,
                    c.outcome == Outcome::ZeroBytes,
                );
            }
        }
        LogHealthInput {
            file_present: p.read.file_present,
            last_line_age: file.last_line.map(|t| now - t),
            level: p.proxy.level(),
            lines_read: p.read.lines,
            unrecognized: p.read.unrecognized,
            proxy_connected: p.proxy.connected,
            error_log_present: p.read.error_file_present,
            file_error: debug_error,
        }
    };
    file.buf.clear();
    side.health.update_log(health_input);
}

fn save(
    store: &CheckpointStore,
    log_path: &Path,
    cursors: Cursors,
    pipeline: &Mutex<Pipeline>,
) -> Result<(), String> {
    let p = pipeline.lock().unwrap_or_else(|e| e.into_inner());
    let checkpoint = Checkpoint {
        version: CHECKPOINT_VERSION,
        log_path: log_path.to_path_buf(),
        cursors,
        pipeline: &*p,
    };
    // fsync can take a while; the pipeline stays locked so the state matches the cursors.
    tokio::task::block_in_place(|| store.save(&checkpoint)).map_err(|e| format!("{e:#}"))
}
