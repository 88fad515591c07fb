//! The agent: the wiring of the stages, HTTP, graceful shutdown.
//!
//! One task runs the log stage ([`Ingest`]: tail → pipeline → session window, with its
//! checkpoint), whose events feed health. A second ([`RoundLoop`]) looks at the process table
//! and probes when the schedule says (agent/rounds.rs), and feeds health and the fallback
//! controller.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use prometheus::Registry;
use tokio::sync::watch;

use crate::config::Config;
use crate::fallback::controller::Controller;
use crate::fallback::http::SharedController;
use crate::fallback::metrics::SessionsCollector;
use crate::health::metrics::HealthCollector;
use crate::health::{Health, LogHealthInput};
use crate::ingest::{Ingest, IngestEvents};
use crate::metrics::{Counter, CounterCell, Family, LogCollector};
use crate::presence::{PresenceCollector, PresenceTracker, ProcessSource, SelfCollector};
use crate::probe::RoundSource;
use crate::sessions::window::{EvidenceEdge, SessionsVerdict, SharedWindow};

mod rounds;
pub use rounds::RoundLoop;

/// What the agent probes and watches with; the real ones by default, stand-ins for the demo.
pub struct Sources {
    /// Probe rounds; `None` runs the agent on the log alone.
    pub rounds: Option<Arc<dyn RoundSource>>,
    pub processes: Box<dyn ProcessSource + Send>,
    /// Time between probe rounds when nothing changes (the heartbeat).
    pub interval: Duration,
    /// Start a round when routes, links or addresses change.
    pub watch_routes: bool,
}

impl Sources {
    /// The machine's own network and process table.
    pub fn real(config: &Config) -> anyhow::Result<Sources> {
        Ok(Sources {
            rounds: config.probe.source(),
            processes: Box::new(crate::presence::SysinfoSource::new()?),
            interval: config.probe.interval(),
            watch_routes: config.probe.watch_routes,
        })
    }
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

/// Why the agent stops: for good (the fallback is then left or removed as `on_shutdown` says),
/// or to start again with a new config (the fallback stays as it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Exit,
    Reload,
}

/// Runs the agent on `listener` until `shutdown` resolves, then saves the checkpoint and
/// leaves or removes the fallback as configured.
pub async fn run(
    config: Config,
    sources: Sources,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_until(config, sources, listener, async move {
        shutdown.await;
        Stop::Exit
    })
    .await
}

/// [`run`], stopping when `stop` resolves; `on_shutdown` runs only for [`Stop::Exit`].
pub async fn run_until(
    config: Config,
    sources: Sources,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = Stop> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let web = crate::http::WebConfig::load(Some(&config.http.web_config_file))
        .map_err(anyhow::Error::msg)?;
    // First: creates the checkpoint's folder, by default also the pf token's.
    let ingest = Ingest::restore(&config.log)?;
    let pipeline = ingest.pipeline();
    if let Some(rounds) = &sources.rounds {
        // Discovery takes the proxy's own word on its interface first.
        let log = pipeline.clone();
        rounds.follow_proxy(Arc::new(move || {
            let p = log.lock().unwrap_or_else(|e| e.into_inner());
            let proxy = p.proxy();
            crate::os::ProxyBinding::from_log(
                proxy.bind_interface.as_deref(),
                proxy.bind_ip.as_deref(),
            )
        }));
    }

    let registry = Registry::new();
    crate::metrics::register(&registry, crate::metrics::BuildInfo)?;
    crate::metrics::register(&registry, LogCollector::new(pipeline.clone()))?;
    crate::metrics::register(&registry, SelfCollector::new()?)?;
    let processes = PresenceTracker::new(sources.processes, config.processes.clone());
    crate::metrics::register(&registry, PresenceCollector::new(processes.shared()))?;
    let probe_metrics =
        crate::probe::ProbeMetrics::register(&registry, config.probe.export_addresses)?;

    let window: SharedWindow = Arc::new(Mutex::new(config.fallback.session_window()));
    crate::metrics::register(&registry, SessionsCollector::new(window.clone()))?;
    let fallback_metrics = crate::fallback::metrics::FallbackMetrics::register(&registry)?;
    let backend = crate::fallback::build_backend(&config.fallback);
    let mut controller = match &sources.rounds {
        Some(r) => Controller::new(&config.fallback, backend, r.clone(), fallback_metrics),
        None => Controller::without_probes(&config.fallback, backend, fallback_metrics),
    };
    if let Err(e) = controller.reconcile() {
        tracing::warn!(error = %e, "fallback: cannot reconcile with what is loaded");
    }
    let mut health = Health::new(&config.health)
        .with_sessions(window.clone())
        .with_fallback(controller.status_handle());
    if sources.rounds.is_none() {
        health = health.without_probes();
    }
    let health = Arc::new(health);
    crate::metrics::register(&registry, HealthCollector(health.clone()))?;
    let controller: SharedController = Arc::new(tokio::sync::Mutex::new(controller));

    let save_errors = CounterCell::register(&registry, &CHECKPOINT_SAVE_ERRORS)?;
    // The log side tells the rounds when the sessions become evidence.
    let evidence = Arc::new(tokio::sync::Notify::new());
    let events = AgentEvents {
        evidence: evidence.clone(),
        edge: Mutex::new(EvidenceEdge::default()),
        health: health.clone(),
        save_errors,
    };
    let tail = tokio::spawn(ingest.run(window.clone(), events, stop_rx.clone()));
    // Every interval: who is running, then (when probing) one round for health and the fallback.
    let periodic = tokio::spawn(
        RoundLoop {
            processes,
            rounds: sources.rounds,
            interval: sources.interval,
            watch_routes: sources.watch_routes,
            evidence: evidence.clone(),
            probe_metrics,
            window: window.clone(),
            controller: controller.clone(),
            health: health.clone(),
        }
        .run(stop_rx.clone()),
    );

    let status = crate::status::adapter::StatusSource::new(
        health.clone(),
        window.clone(),
        pipeline.clone(),
        controller.clone(),
    );
    let mut app = crate::http::router(registry.clone())
        .merge(crate::health::http::router(health.clone()))
        .merge(crate::status::adapter::router(Arc::new(status)));
    app = crate::http::hide_addresses(app, config.probe.export_addresses);
    app = web.protect(app, &registry);
    match crate::fallback::http::router(controller.clone(), &config.fallback) {
        Ok(routes) => {
            let local = listener.local_addr()?;
            app = app.merge(web.control(routes, local, config.fallback.allow_plain_http));
        }
        Err(e) => tracing::warn!(error = %e, "fallback HTTP control disabled"),
    }
    tracing::info!(listen = %listener.local_addr()?, tls = web.tls.is_some(), basic_auth = web.auth.is_some(), log = %config.log.path.display(), "agent started");
    let (why_tx, why_rx) = tokio::sync::oneshot::channel();
    let server = crate::http::serve(listener, app, &config.http, &web, async move {
        let _ = why_tx.send(stop.await);
        let _ = stop_tx.send(true);
    });
    // A task that ends before the stop was asked died: the process ends non-zero, so launchd
    // restarts it, rather than serving metrics and health that no longer move.
    let (mut tail, mut periodic) = (tail, periodic);
    let died = |what: &str, r: Result<(), tokio::task::JoinError>| {
        anyhow::anyhow!(
            "the {what} task ended unexpectedly ({}); exiting so the service manager restarts the agent",
            match r {
                Ok(()) => "returned".to_string(),
                Err(e) => e.to_string(),
            }
        )
    };
    let stopping = stop_rx.clone();
    let mut server = std::pin::pin!(server);
    let (mut tail_done, mut periodic_done) = (None, None);
    loop {
        tokio::select! {
            r = &mut server => {
                r.context("HTTP server")?;
                break;
            }
            r = &mut tail, if tail_done.is_none() => {
                if !*stopping.borrow() {
                    return Err(died("log", r));
                }
                tail_done = Some(r);
            }
            r = &mut periodic, if periodic_done.is_none() => {
                if !*stopping.borrow() {
                    return Err(died("probe", r));
                }
                periodic_done = Some(r);
            }
        }
    }
    match tail_done {
        Some(r) => r,
        None => tail.await,
    }
    .context("tail task")?;
    match periodic_done {
        Some(r) => r,
        None => periodic.await,
    }
    .context("probe task")?;
    if why_rx.await.unwrap_or(Stop::Exit) == Stop::Exit
        && let Err(e) = controller.lock().await.shutdown()
    {
        tracing::warn!(error = %e, "fallback: cannot leave the system as configured (fallback.on_shutdown)");
    }
    tracing::info!("agent stopped");
    Ok(())
}

const CHECKPOINT_SAVE_ERRORS: Family<Counter, 0> = Family::new(
    "checkpoint_save_errors_total",
    "Failed saves of the checkpoint (log.checkpoint); retried every second.",
    [],
);

/// The log stage's events, as health input and the checkpoint's error counter.
struct AgentEvents {
    health: Arc<Health>,
    save_errors: CounterCell,
    evidence: Arc<tokio::sync::Notify>,
    edge: Mutex<EvidenceEdge>,
}

impl IngestEvents for AgentEvents {
    fn emit_sessions_closed(&self, window: &SessionsVerdict) {
        let crossed = self
            .edge
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .crossed(window);
        if crossed {
            self.evidence.notify_one();
        }
    }

    fn emit_log_polled(&self, status: LogHealthInput) {
        self.health.update_log(status);
    }

    fn emit_checkpoint_saved(&self, path: &Path) {
        self.health.update_checkpoint(path, Ok(()));
    }

    fn emit_checkpoint_save_failed(&self, path: &Path, error: String) {
        self.save_errors.inc();
        self.health.update_checkpoint(path, Err(error));
    }
}
