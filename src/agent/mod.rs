//! The agent: the wiring of the stages, HTTP, graceful shutdown.
//!
//! One task runs the log stage ([`Ingest`]: tail → pipeline → session window, with its
//! checkpoint), whose events feed health. A second ([`RoundLoop`]) looks at the process table
//! and probes on an interval, and feeds health and the fallback controller.

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use prometheus::Registry;
use tokio::sync::watch;

use crate::config::Config;
use crate::fallback::controller::{Controller, Verifier};
use crate::fallback::http::SharedController;
use crate::health::metrics::HealthCollector;
use crate::health::{Health, LogHealthInput};
use crate::ingest::{Ingest, IngestEvents};
use crate::metrics::{Counter, CounterCell, Family, LogCollector};
use crate::presence::{PresenceCollector, PresenceTracker, ProcessSource, SelfCollector};
use crate::probe::{Round, RoundSource};
use crate::sessions::window::{SessionWindow, SharedWindow};

mod rounds;
pub use rounds::RoundLoop;

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
            processes: Box::new(crate::presence::SysinfoSource::new()?),
            interval: config.probe.interval(),
        })
    }
}

/// A round source as the fallback's verifier: a fresh round after an apply.
struct RoundVerifier(Arc<dyn RoundSource>);

impl Verifier for RoundVerifier {
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
    // First: creates the checkpoint's folder, by default also the pf token's.
    let ingest = Ingest::restore(&config.log);
    let pipeline = ingest.pipeline();

    let registry = Registry::new();
    crate::metrics::register(&registry, crate::metrics::BuildInfo)?;
    crate::metrics::register(&registry, LogCollector::new(pipeline.clone()))?;
    crate::metrics::register(&registry, SelfCollector::new()?)?;
    let processes = PresenceTracker::new(sources.processes, config.processes.clone());
    crate::metrics::register(&registry, PresenceCollector::new(processes.shared()))?;
    let probe_metrics =
        crate::probe::ProbeMetrics::register(&registry, config.probe.export_addresses)?;

    let window: SharedWindow = Arc::new(Mutex::new(SessionWindow::new(Duration::from_secs(
        config.fallback.window_secs,
    ))));
    let fallback_metrics = crate::fallback::metrics::FallbackMetrics::register(&registry)?;
    let verifier: Box<dyn Verifier> = match &sources.rounds {
        Some(r) => Box::new(RoundVerifier(r.clone())),
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
    let events = AgentEvents {
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
            probe_metrics,
            window: window.clone(),
            controller: controller.clone(),
            health: health.clone(),
        }
        .run(stop_rx.clone()),
    );

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

/// The log stage's events, as health input and the checkpoint's error counter.
struct AgentEvents {
    health: Arc<Health>,
    save_errors: CounterCell,
}

impl IngestEvents for AgentEvents {
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
