//! The agent: tail → pipeline → metrics, with a checkpoint; HTTP; graceful shutdown.
//!
//! One task owns the log: it reads batches of complete lines from the tailer, feeds them to
//! the pipeline under its lock, and saves `{cursor, pipeline}` as one atomic checkpoint, so the
//! offset and the state it produced can never disagree, even after `kill -9`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::Config;
use crate::metrics::LogCollector;
use crate::pipeline::Pipeline;
use crate::tail::{CheckpointStore, Cursor, FileState, FollowOptions, Follower, Tailer};

/// How often the checkpoint is saved while lines arrive.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Largest batch handed from the tailer to the pipeline in one lock.
const BATCH_BYTES: usize = 1 << 20;

/// What the checkpoint file holds: where reading stopped and what the lines before produced.
#[derive(Serialize, Deserialize)]
struct Checkpoint<P> {
    version: u32,
    log_path: PathBuf,
    cursor: Option<Cursor>,
    pipeline: P,
}

/// Shared state of a running agent.
#[derive(Clone)]
pub struct AgentState {
    pub registry: Registry,
    pub pipeline: Arc<Mutex<Pipeline>>,
    /// Set when the first read of the log (present or not) has happened.
    pub log_read_once: watch::Receiver<bool>,
}

/// Runs the agent until SIGINT or SIGTERM.
pub fn run_blocking(config: Config) -> anyhow::Result<ExitCode> {
    init_tracing();
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot listen on {} (http.listen)", config.http.listen))?;
        run(config, listener, shutdown_signal()).await
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

/// Runs the agent on `listener` until `shutdown` resolves, then saves the checkpoint.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let store = CheckpointStore::new(config.log.checkpoint.clone());
    let (cursor, pipeline) = restore(&store, &config);
    let pipeline = Arc::new(Mutex::new(pipeline));

    let registry = Registry::new();
    crate::metrics::register_build_info(&registry)?;
    registry.register(Box::new(LogCollector::new(pipeline.clone())))?;

    let follower = Follower::new(
        config.log.path.clone(),
        cursor,
        FollowOptions {
            max_line_bytes: config.log.max_line_bytes,
            ..FollowOptions::default()
        },
    );
    let (read_tx, read_rx) = watch::channel(false);
    let tail = tokio::spawn(tail_loop(
        follower,
        pipeline.clone(),
        store,
        config.log.path.clone(),
        read_tx,
        stop_rx.clone(),
    ));

    let state = AgentState {
        registry: registry.clone(),
        pipeline,
        log_read_once: read_rx,
    };
    let app = crate::http::router(state.registry.clone(), LINKS);
    tracing::info!(listen = %listener.local_addr()?, log = %config.log.path.display(), "agent started");
    let server = crate::http::serve(listener, app, async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    server.await.context("HTTP server")?;
    tail.await.context("tail task")?;
    tracing::info!("agent stopped");
    Ok(())
}

const LINKS: &[(&str, &str)] = &[
    ("/metrics", "Prometheus metrics"),
    ("/-/healthy", "liveness"),
];

/// The saved cursor and pipeline, if the checkpoint belongs to this log; else a fresh start.
fn restore(store: &CheckpointStore, config: &Config) -> (Option<Cursor>, Pipeline) {
    match store.load::<Checkpoint<Pipeline>>() {
        Ok(Some(c)) if c.version == 1 && c.log_path == config.log.path => {
            tracing::info!(checkpoint = %store.path().display(), "resuming from checkpoint");
            let mut pipeline = c.pipeline;
            // Caps may have changed in the config; the saved tables keep their content.
            pipeline.sessions.set_limits(config.log.max_open_sessions);
            (c.cursor, pipeline)
        }
        Ok(Some(_)) => {
            tracing::warn!(checkpoint = %store.path().display(), "checkpoint is for another log file or version; starting fresh");
            (None, Pipeline::new(&config.log))
        }
        Ok(None) => (None, Pipeline::new(&config.log)),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot read the checkpoint; reading the log from its start");
            (None, Pipeline::new(&config.log))
        }
    }
}

async fn tail_loop(
    follower: Follower,
    pipeline: Arc<Mutex<Pipeline>>,
    store: CheckpointStore,
    log_path: PathBuf,
    read_once: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tailer = Tailer::new(follower);
    let mut buf = Vec::with_capacity(BATCH_BYTES);
    let mut last_save = Instant::now();
    let mut dirty = false;
    // Saves what was read even when no more lines come.
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if dirty {
                    save(&store, &log_path, tailer.cursor(), &pipeline);
                    last_save = Instant::now();
                    dirty = false;
                }
            }
            polled = tailer.next(&mut buf) => {
                match polled {
                    Ok(poll) => {
                        {
                            let mut p = pipeline.lock().unwrap_or_else(|e| e.into_inner());
                            let used = p.feed(&buf);
                            debug_assert_eq!(used, buf.len(), "the tailer hands on complete lines only");
                            p.read.rotations += u64::from(poll.rotations);
                            p.read.truncations += u64::from(poll.truncations);
                            p.read.lines_too_long += poll.lines_too_long;
                            p.read.file_present = matches!(poll.file, FileState::Present);
                        }
                        dirty |= !buf.is_empty() || poll.rotations > 0 || poll.truncations > 0;
                        buf.clear();
                        read_once.send_if_modified(|r| !std::mem::replace(r, true));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, log = %log_path.display(), "reading the log failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                if dirty && last_save.elapsed() >= CHECKPOINT_EVERY {
                    save(&store, &log_path, tailer.cursor(), &pipeline);
                    last_save = Instant::now();
                    dirty = false;
                }
            }
            _ = stop.changed() => break,
        }
    }
    save(&store, &log_path, tailer.cursor(), &pipeline);
}

fn save(
    store: &CheckpointStore,
    log_path: &Path,
    cursor: Option<Cursor>,
    pipeline: &Mutex<Pipeline>,
) {
    let p = pipeline.lock().unwrap_or_else(|e| e.into_inner());
    let checkpoint = Checkpoint {
        version: 1,
        log_path: log_path.to_path_buf(),
        cursor,
        pipeline: &*p,
    };
    // fsync can take a while; the pipeline stays locked so the state matches the cursor.
    let result = tokio::task::block_in_place(|| store.save(&checkpoint));
    if let Err(e) = result {
        tracing::warn!(error = %format!("{e:#}"), "cannot save the checkpoint; will retry");
    }
}
