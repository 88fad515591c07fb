//! `run` as a daemon: the signals an admin sends, and reloading the config in place.
//!
//! - SIGTERM (what launchd sends, then waits `ExitTimeOut`) and SIGINT stop the agent: the
//!   checkpoint is saved and the fallback left or removed as `fallback.on_shutdown` says.
//! - SIGHUP reloads: the config file is read again (with the same `--set` flags) and
//!   validated. An invalid config is logged with the key it names and the running agent
//!   goes on unchanged. A valid one is applied by a graceful stop of the agent's tasks
//!   (the checkpoint saved, HTTP drained) *without* the `on_shutdown` action, then a new
//!   start with the new config in the same process, which resumes from that checkpoint:
//!   counters go on, an installed fallback is adopted (whatever `on_start` says; it is this
//!   process's own), and `/-/ready` waits for the first log read and probe round again. The
//!   fallback's anti-flapping history starts over. A new `http.listen` is bound before the old
//!   agent stops, so an address in use leaves the old one serving. The same config again is a
//!   no-op.
//!
//! Stderr written to a file (launchd's `StandardErrorPath`) is opened again at its path when
//! newsyslog has rotated it: checked every [`REOPEN_EVERY`] and at each SIGHUP.
//!
//! The handlers are installed before the port is bound, so a signal can never meet the
//! default action (which for SIGHUP is to die without cleaning up).

use std::process::ExitCode;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::agent::{Sources, Stop};
use crate::config::Config;
use crate::fallback::OnStart;

/// How often a rotated stderr file is looked for. Each check wakes an idle agent (every 5 s,
/// it was about 40 % of its wake-ups in the lab); until it runs, lines go on into the newest
/// archive, which newsyslog leaves uncompressed, so nothing is lost.
pub const REOPEN_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// The signals the daemon listens to, registered at once.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

enum Received {
    Stop,
    Reload,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        let on = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("installing the {name} handler"))
        };
        Ok(Signals {
            term: on(SignalKind::terminate(), "SIGTERM")?,
            int: on(SignalKind::interrupt(), "SIGINT")?,
            hup: on(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    async fn next(&mut self) -> Received {
        tokio::select! {
            _ = self.term.recv() => Received::Stop,
            _ = self.int.recv() => Received::Stop,
            _ = self.hup.recv() => Received::Reload,
        }
    }
}

/// What a reload needs, all made before the running agent is stopped.
struct Next {
    config: Config,
    /// Bound already when the address changed; else the old one is bound again once free.
    listener: Option<TcpListener>,
    sources: Sources,
}

async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    crate::http::bind(&config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (http.listen)", config.http.listen))
}

/// Runs the agent until SIGTERM or SIGINT, reloading on SIGHUP with what `load` returns.
pub fn run_blocking(
    config: Config,
    load: impl Fn() -> anyhow::Result<Config>,
) -> anyhow::Result<ExitCode> {
    // One worker: a timer firing in an idle agent then wakes one thread, not also a second
    // one looking for work to steal (a quarter of the idle wake-ups in the lab). Blocking work
    // (the process table, /metrics encoding) runs on tokio's blocking pool as before.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(config, load))?;
    Ok(ExitCode::SUCCESS)
}

async fn run(mut config: Config, load: impl Fn() -> anyhow::Result<Config>) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let reopen = crate::logging::Reopen::detect().map(std::sync::Arc::new);
    if let Some(r) = &reopen {
        tokio::spawn({
            let r = r.clone();
            async move {
                let mut tick = tokio::time::interval(REOPEN_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    reopen_log(&r);
                }
            }
        });
    }
    let mut listener = bind(&config).await?;
    let mut sources = Sources::real(&config)?;
    let mut reloaded = false;
    loop {
        let mut run_config = config.clone();
        if reloaded {
            // The fallback in place is this process's own: it survives the reload.
            run_config.fallback.on_start = OnStart::Adopt;
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let mut agent = tokio::spawn(crate::agent::run_until(
            run_config,
            sources,
            listener,
            async move { stop_rx.await.unwrap_or(Stop::Exit) },
        ));
        let next = loop {
            let received = tokio::select! {
                r = signals.next() => r,
                // Ends by itself only on an error at start.
                ended = &mut agent => return ended.context("agent task")?,
            };
            match received {
                Received::Stop => break None,
                Received::Reload => {
                    if let Some(r) = &reopen {
                        reopen_log(r);
                    }
                    match prepare(&load, &config).await {
                        Ok(Some(next)) => break Some(next),
                        Ok(None) => tracing::info!("SIGHUP: the config is unchanged"),
                        Err(e) => tracing::error!(
                            error = %format!("{e:#}"),
                            "SIGHUP: the new config is not valid; the running config stays"
                        ),
                    }
                }
            }
        };
        let _ = stop_tx.send(if next.is_some() {
            Stop::Reload
        } else {
            Stop::Exit
        });
        agent.await.context("agent task")??;
        let Some(next) = next else { return Ok(()) };
        listener = match next.listener {
            Some(l) => l,
            None => bind(&next.config).await?,
        };
        config = next.config;
        sources = next.sources;
        reloaded = true;
        tracing::info!("SIGHUP: the new config is applied");
    }
}

/// Opens the log again if it was rotated; says so in the new file.
fn reopen_log(r: &crate::logging::Reopen) {
    // The folder may be another user's (Homebrew's var/log): no link followed, nothing
    // created there, only a regular file of root's (or the binary's owner's).
    let trust = crate::tail::open::Trust {
        // SAFETY: geteuid cannot fail and touches no memory.
        owner: crate::tail::open::Writers::of_root_process()
            .map_or_else(|| unsafe { libc::geteuid() }, |w| w.user),
    };
    match r.check(|p| crate::tail::open::open_append(p, trust)) {
        Ok(true) => {
            tracing::info!(log = %r.path().display(), "the log was rotated: writing to the new file")
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, log = %r.path().display(), "cannot open the log again after a rotation")
        }
    }
}

/// Reads and checks the new config and prepares what the next run needs; `None` when it is the
/// running one.
async fn prepare(
    load: &impl Fn() -> anyhow::Result<Config>,
    running: &Config,
) -> anyhow::Result<Option<Next>> {
    let config = load()?;
    if config == *running {
        return Ok(None);
    }
    let listener = if config.http.listen != running.http.listen {
        Some(bind(&config).await?)
    } else {
        None
    };
    let sources = Sources::real(&config)?;
    Ok(Some(Next {
        config,
        listener,
        sources,
    }))
}
