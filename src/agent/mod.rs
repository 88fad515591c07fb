//! The agent: the wiring of the stages, HTTP, graceful shutdown.
//!
//! One task runs the log stage ([`Ingest`]: tail → pipeline → session window, with its
//! checkpoint), whose events feed health. A second ([`RoundLoop`]) looks at the process table
//! and probes when the schedule says (agent/rounds.rs), and feeds health and the fallback
//! controller. [`run_until`] builds the stages (`Agent::build`), then serves HTTP while both
//! tasks run by name in a `JoinSet` (`Agent::serve`): a task that ends before the stop was
//! asked ends the agent with an error naming it.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use prometheus::Registry;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};

use crate::config::Config;
use crate::fallback::controller::Controller;
use crate::fallback::metrics::SessionsCollector;
use crate::fallback::routes::SharedController;
use crate::health::metrics::HealthCollector;
use crate::health::{Health, LogHealthInput};
use crate::ingest::{Ingest, IngestEvents, LogStatus};
use crate::log_state::{LogCollector, LogState};
use crate::metrics::{Counter, CounterCell, Family};
use crate::presence::{PresenceCollector, PresenceTracker, ProcessSource, SelfCollector};
use crate::probe::RoundSource;
use crate::sessions::window::{EvidenceEdge, SessionsVerdict, SharedWindow};
use crate::status::adapter::StatusSource;

pub mod platform;
mod rounds;
pub mod schedule;
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
    /// Where PIA's and macOS's versions are read each round; `None`: not read.
    pub platform: Option<Arc<dyn crate::os::Os>>,
}

impl Sources {
    /// The machine's own network and process table.
    pub fn real(config: &Config) -> anyhow::Result<Sources> {
        Ok(Sources {
            rounds: config.probe.source(),
            processes: Box::new(crate::presence::SysinfoSource::new()?),
            interval: config.probe.interval(),
            watch_routes: config.probe.watch_routes,
            platform: Some(Arc::new(crate::os::System::default())),
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
    run_with_families(config, sources, listener, stop, Vec::new()).await
}

/// [`run_until`], serving also the families of the layers above (the daemon's reload status),
/// which outlive one run.
pub async fn run_with_families(
    config: Config,
    sources: Sources,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = Stop> + Send + 'static,
    above: Vec<Box<dyn crate::metrics::Scrape>>,
) -> anyhow::Result<()> {
    let agent = Agent::build(&config, sources, listener.local_addr()?, above)?;
    agent.serve(&config, listener, stop).await
}

/// The stages built and wired, their tasks not yet started.
struct Agent {
    web: crate::server::WebConfig,
    app: axum::Router,
    ingest: Ingest,
    events: AgentEvents,
    window: SharedWindow,
    rounds: RoundLoop,
    controller: SharedController,
}

/// The agent's long-lived tasks, by name (as an error names them).
const LOG_TASK: &str = "log";
const PROBE_TASK: &str = "probe";

impl Agent {
    /// Builds every stage and registers its metrics; `local`: the address served on.
    fn build(
        config: &Config,
        sources: Sources,
        local: SocketAddr,
        above: Vec<Box<dyn crate::metrics::Scrape>>,
    ) -> anyhow::Result<Agent> {
        let web = crate::server::WebConfig::load(Some(&config.http.web_config_file))
            .map_err(anyhow::Error::msg)?;
        // First: creates the checkpoint's folder, by default also the pf token's.
        let ingest = Ingest::restore(&config.log)?;
        let pipeline = ingest.pipeline();
        if let Some(rounds) = &sources.rounds {
            follow_proxy(rounds.as_ref(), pipeline.clone());
        }
        let registry = Registry::new();
        crate::metrics::register(&registry, crate::metrics::BuildInfo)?;
        for families in above {
            crate::metrics::register(&registry, families)?;
        }
        crate::metrics::register(&registry, LogCollector::new(pipeline.clone()))?;
        crate::metrics::register(&registry, SelfCollector::new()?)?;
        let processes = PresenceTracker::new(sources.processes, config.processes.clone());
        crate::metrics::register(&registry, PresenceCollector::new(processes.shared()))?;
        let probe_metrics =
            crate::probe::ProbeMetrics::register(&registry, config.probe.export_addresses)?;
        let window: SharedWindow = Arc::new(Mutex::new(config.sessions.window()));
        crate::metrics::register(&registry, SessionsCollector::new(window.clone()))?;
        let controller = controller(config, sources.rounds.clone(), &registry)?;
        let health = health(config, &window, &controller, sources.rounds.is_some());
        crate::metrics::register(&registry, HealthCollector(health.clone()))?;
        let controller: SharedController = Arc::new(tokio::sync::Mutex::new(controller));
        let platform = sources.platform.map(platform::PlatformWatch::new);
        if let Some(p) = &platform {
            crate::metrics::register(&registry, p.clone())?;
        }
        // The log side tells the rounds when the sessions become evidence.
        let evidence = Arc::new(tokio::sync::Notify::new());
        let events = AgentEvents {
            evidence: evidence.clone(),
            edge: Mutex::new(EvidenceEdge::default()),
            health: health.clone(),
            save_errors: CounterCell::register(&registry, &CHECKPOINT_SAVE_ERRORS)?,
        };
        // Every interval: who is running, then (when probing) one round for health and the
        // fallback.
        let rounds = RoundLoop {
            processes,
            rounds: sources.rounds,
            interval: sources.interval,
            watch_routes: sources.watch_routes,
            evidence,
            probe_metrics,
            window: window.clone(),
            controller: controller.clone(),
            health: health.clone(),
            platform,
        };
        let status =
            StatusSource::new(health.clone(), window.clone(), pipeline, controller.clone());
        let app = router(config, &web, &registry, health, status, &controller, local);
        Ok(Agent {
            web,
            app,
            ingest,
            events,
            window,
            rounds,
            controller,
        })
    }

    /// Starts the log and probe tasks, serves HTTP on `listener` until `stop`, then waits for
    /// the tasks to finish (the log task saves the checkpoint) and leaves the fallback as
    /// `on_shutdown` says when the stop is for good.
    async fn serve(
        self,
        config: &Config,
        listener: tokio::net::TcpListener,
        stop: impl std::future::Future<Output = Stop> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Tasks::default();
        tasks.spawn(
            LOG_TASK,
            self.ingest.run(self.window, self.events, stop_rx.clone()),
        );
        tasks.spawn(PROBE_TASK, self.rounds.run(stop_rx.clone()));
        tracing::info!(listen = %listener.local_addr()?, tls = self.web.tls.is_some(), basic_auth = self.web.auth.is_some(), log = %config.log.path.display(), "agent started");
        let (why_tx, why_rx) = tokio::sync::oneshot::channel();
        let server =
            crate::server::serve(listener, self.app, &config.http, &self.web, async move {
                let _ = why_tx.send(stop.await);
                let _ = stop_tx.send(true);
            });
        tasks.supervise(server, &stop_rx).await?;
        tasks.finish().await?;
        if why_rx.await.unwrap_or(Stop::Exit) == Stop::Exit
            && let Err(e) = self.controller.lock().await.shutdown()
        {
            tracing::warn!(error = %e, "fallback: cannot leave the system as configured (fallback.on_shutdown)");
        }
        tracing::info!("agent stopped");
        Ok(())
    }
}

/// Discovery takes the proxy's own word on its interface first: the log's latest binding.
fn follow_proxy(rounds: &dyn RoundSource, pipeline: Arc<Mutex<LogState>>) {
    rounds.follow_proxy(Arc::new(move || {
        let p = pipeline.lock().unwrap_or_else(|e| e.into_inner());
        let proxy = p.proxy();
        crate::os::ProxyBinding::from_log(proxy.bind_interface.as_deref(), proxy.bind_ip.as_deref())
    }));
}

/// The fallback controller, reconciled with what a previous run left loaded.
fn controller(
    config: &Config,
    rounds: Option<Arc<dyn RoundSource>>,
    registry: &Registry,
) -> anyhow::Result<Controller> {
    let metrics = crate::fallback::metrics::FallbackMetrics::register(registry)?;
    let backend = crate::fallback::build_backend(&config.fallback);
    let mut controller = match rounds {
        Some(r) => Controller::new(&config.fallback, backend, r, metrics),
        None => Controller::without_probes(&config.fallback, backend, metrics),
    };
    if let Err(e) = controller.reconcile() {
        tracing::warn!(error = %e, "fallback: cannot reconcile with what is loaded");
    }
    Ok(controller)
}

fn health(
    config: &Config,
    window: &SharedWindow,
    controller: &Controller,
    probing: bool,
) -> Arc<Health> {
    let health = Health::new(&config.health)
        .with_sessions(window.clone())
        .with_fallback(controller.status_handle());
    Arc::new(if probing {
        health
    } else {
        health.without_probes()
    })
}

/// Every route the agent serves, behind the web config's TLS and authentication.
fn router(
    config: &Config,
    web: &crate::server::WebConfig,
    registry: &Registry,
    health: Arc<Health>,
    status: StatusSource,
    controller: &SharedController,
    local: SocketAddr,
) -> axum::Router {
    let mut app = crate::server::router(registry.clone())
        .merge(crate::health::routes::router(health))
        .merge(crate::status::adapter::router(Arc::new(status)));
    app = crate::server::hide_addresses(app, config.probe.export_addresses);
    app = web.protect(app, registry);
    match crate::fallback::routes::router(controller.clone(), &config.fallback) {
        Ok(routes) => app.merge(web.control(routes, local, config.fallback.allow_plain_http)),
        Err(e) => {
            tracing::warn!(error = %e, "fallback HTTP control disabled");
            app
        }
    }
}

/// The agent's tasks, each known by its name.
#[derive(Default)]
struct Tasks {
    set: JoinSet<()>,
    names: HashMap<tokio::task::Id, &'static str>,
    /// Tasks that ended after the stop was asked, and how.
    ended: Vec<(&'static str, Result<(), JoinError>)>,
}

impl Tasks {
    fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
    }

    fn name(&self, id: tokio::task::Id) -> &'static str {
        self.names.get(&id).copied().unwrap_or("unnamed")
    }

    /// Runs `server` to its end. A task that ends before the stop was asked died: the agent
    /// ends with an error naming it (the process exits non-zero, so the service manager
    /// restarts it) rather than serve metrics and health that no longer move.
    async fn supervise(
        &mut self,
        server: impl Future<Output = std::io::Result<()>>,
        stopping: &watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let mut server = std::pin::pin!(server);
        loop {
            tokio::select! {
                r = &mut server => return r.context("HTTP server"),
                Some(r) = self.set.join_next_with_id() => {
                    let (name, r) = match r {
                        Ok((id, ())) => (self.name(id), Ok(())),
                        Err(e) => (self.name(e.id()), Err(e)),
                    };
                    if !*stopping.borrow() {
                        return Err(died(name, r));
                    }
                    self.ended.push((name, r));
                }
            }
        }
    }

    /// Waits for every task; the first that failed (a panic) is the error.
    async fn finish(mut self) -> anyhow::Result<()> {
        while let Some(r) = self.set.join_next_with_id().await {
            let ended = match r {
                Ok((id, ())) => (self.name(id), Ok(())),
                Err(e) => (self.name(e.id()), Err(e)),
            };
            self.ended.push(ended);
        }
        for (name, r) in self.ended {
            r.with_context(|| format!("{name} task"))?;
        }
        Ok(())
    }
}

fn died(name: &str, r: Result<(), JoinError>) -> anyhow::Error {
    anyhow::anyhow!(
        "the {name} task ended unexpectedly ({}); exiting so the service manager restarts the agent",
        match r {
            Ok(()) => "returned".to_string(),
            Err(e) => e.to_string(),
        }
    )
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
        self.health
            .update_sessions_state(window.state, std::time::SystemTime::now());
        let crossed = self
            .edge
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .crossed(window);
        if crossed {
            self.evidence.notify_one();
        }
    }

    fn emit_log_polled(&self, status: LogStatus) {
        self.health.update_log(log_health(status));
    }

    fn emit_checkpoint_saved(&self, path: &Path) {
        self.health.update_checkpoint(path, Ok(()));
    }

    fn emit_checkpoint_save_failed(&self, path: &Path, error: String) {
        self.save_errors.inc();
        self.health.update_checkpoint(path, Err(error));
    }
}

/// Health's input from what the log side reports.
fn log_health(s: LogStatus) -> LogHealthInput {
    LogHealthInput {
        file_present: s.read.file_present,
        last_line_age: s.last_line_age,
        level: s.level,
        lines_read: s.read.lines,
        unrecognized: s.read.unrecognized,
        proxy_connected: s.proxy_connected,
        error_log_present: s.read.error_file_present,
        file_error: s.errors.debug,
        error_file_error: s.errors.error,
        gaps: s.read.gaps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::ProcInfo;
    use crate::probe::Round;

    struct NoProcesses;

    impl ProcessSource for NoProcesses {
        fn processes(&mut self) -> Vec<ProcInfo> {
            Vec::new()
        }
    }

    /// An agent on a log in `dir` that never touches the machine's network.
    fn config(dir: &Path) -> Config {
        let mut config = Config::default();
        config.log.path = dir.join("transparent_proxy.log");
        config.log.error_path = std::path::PathBuf::new();
        config.log.checkpoint = dir.join("state/checkpoint.json");
        config.fallback.backend = crate::fallback::BackendChoice::None;
        config
    }

    fn sources(rounds: Option<Arc<dyn RoundSource>>) -> Sources {
        Sources {
            rounds,
            processes: Box::new(NoProcesses),
            interval: Duration::from_secs(3600),
            watch_routes: false,
            platform: None,
        }
    }

    async fn listener() -> tokio::net::TcpListener {
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
    }

    /// A Mac with PIA, as the `Os` seam tells it; nothing else of it is asked.
    struct Mac;

    impl crate::os::Os for Mac {
        fn interfaces(&self) -> Vec<crate::os::IfaceInfo> {
            Vec::new()
        }
        fn route_table(&self) -> Result<Vec<crate::os::RouteEntry>, String> {
            Ok(Vec::new())
        }
        fn routing_facts(&self, _ifs: &crate::os::Interfaces) -> crate::os::RoutingFacts {
            crate::os::RoutingFacts::default()
        }
        fn platform(&self) -> crate::os::Platform {
            crate::os::Platform {
                macos: Some(crate::os::MacosVersion {
                    version: "15.3".into(),
                    build: "24D60".into(),
                }),
                pia_version: Some("3.7.0".into()),
                ..Default::default()
            }
        }
    }

    /// `GET /metrics` from the agent at `addr`.
    async fn scrape(addr: SocketAddr) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// The versions are read with the probe round and exported by the agent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_versions_read_with_a_round_are_on_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let rounds: Arc<dyn RoundSource> = Arc::new(|| async {
            Round {
                interfaces: crate::probe::lab::interfaces(true),
                results: Vec::new(),
            }
        });
        let mut sources = sources(Some(rounds));
        sources.platform = Some(Arc::new(Mac));
        let listener = listener().await;
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(run_until(config(dir.path()), sources, listener, async {
            let _ = stop_rx.await;
            Stop::Exit
        }));
        let mut text = String::new();
        for _ in 0..100 {
            text = scrape(addr).await;
            if text.contains("pia_info{") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            text.contains("pia_split_tunnel_pia_info{version=\"3.7.0\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pia_split_tunnel_macos_info{version=\"15.3\",build=\"24D60\"} 1"),
            "{text}"
        );
        let _ = stop_tx.send(());
        run.await.unwrap().unwrap();
    }

    /// A task that dies while the agent runs ends the agent, with the task's name in the
    /// error, rather than leaving it serving numbers that no longer move.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_that_dies_ends_the_agent_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let broken: Arc<dyn RoundSource> =
            Arc::new(|| -> std::future::Ready<Round> { panic!("the probe broke") });
        let run = run_until(
            config(dir.path()),
            sources(Some(broken)),
            listener().await,
            std::future::pending(),
        );
        let err = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("the agent ends by itself")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("the probe task ended unexpectedly") && err.contains("panicked"),
            "{err}"
        );
    }

    /// Asked to stop, the agent waits for its tasks (the log task saves the checkpoint) and
    /// ends without error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_ends_every_task_and_saves_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        std::fs::write(
            &config.log.path,
            "[2026-02-16 11:49:31:2040] [VpnState.swift:58] info: isConnected: true\r\n",
        )
        .unwrap();
        let checkpoint = config.log.checkpoint.clone();
        let run = run_until(config, sources(None), listener().await, async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Stop::Exit
        });
        tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("the agent stops")
            .unwrap();
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(checkpoint).unwrap()).unwrap();
        assert_eq!(saved["pipeline"]["read"]["lines"], 1, "{saved}");
    }
}
