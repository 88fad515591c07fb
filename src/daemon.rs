//! `run` as a daemon: the signals an admin sends, and reloading the config in place.
//!
//! - SIGTERM (what launchd sends, then waits `ExitTimeOut`) and SIGINT stop the agent: the
//!   checkpoint is saved and the fallback left or removed as `fallback.on_shutdown` says.
//! - SIGHUP reloads: the config file is read again (with the same `--set` flags) and
//!   validated, and the token file and web config are read again. An invalid config is logged
//!   with the key it names and the running agent goes on unchanged. A valid one, or the same
//!   one with a changed token file or web config, is applied by a graceful stop of the agent's
//!   tasks (the checkpoint saved, HTTP drained) *without* the `on_shutdown` action, then a new
//!   start in the same process, which resumes from that checkpoint: counters go on, an
//!   installed fallback is adopted (whatever `on_start` says; it is this process's own), and
//!   `/-/ready` waits for the first log read and probe round again. The fallback's
//!   anti-flapping history starts over. Nothing new is a no-op.
//!
//! The listening socket is the daemon's, not the agent run's: it stays bound across reloads
//! (a user spinning on `bind()` never gets the port). It is the one launchd or systemd passed
//! when they did (`http/activation.rs`), else `http.listen` bound once. A new `http.listen` is
//! bound before the old agent stops, so an address in use refuses the reload and leaves the
//! old one serving; the old address is closed after the old agent has drained.
//!
//! Stderr written to a file (launchd's `StandardErrorPath`) is opened again at its path when
//! newsyslog has rotated it: checked every [`REOPEN_EVERY`] and at each SIGHUP.
//!
//! The handlers are installed before the port is bound, so a signal can never meet the
//! default action (which for SIGHUP is to die without cleaning up).
//!
//! Whether the last SIGHUP was applied is exported ([`ReloadStatus`], as Prometheus exports
//! its own), so a fleet sees a refused reload, not only this Mac's log.

use std::process::ExitCode;

use anyhow::Context;
use prometheus::core::Desc;
use prometheus::proto::MetricFamily;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::agent::{Sources, Stop};
use crate::config::Config;
use crate::fallback::OnStart;
use crate::metrics::{Family, Gauge, Scrape};
use crate::server::ListenAddr;
use crate::server::activation::{self, Manager};

const RELOAD_SUCCESSFUL: Family<Gauge, 0> = Family::new(
    "config_last_reload_successful",
    "Whether the last SIGHUP's config was applied (1; also at start) or refused (0: the agent \
     runs on with the previous config, and its log says why).",
    [],
);

const RELOAD_SUCCESS_TIME: Family<Gauge, 0> = Family::new(
    "config_last_reload_success_timestamp_seconds",
    "When a config was last loaded successfully (at start or at a SIGHUP), in Unix seconds.",
    [],
);

/// The outcome of the last reload, shared by the daemon (which sets it) and each agent run's
/// registry (which renders it): it outlives the runs.
#[derive(Clone)]
pub struct ReloadStatus(std::sync::Arc<std::sync::Mutex<(bool, f64)>>);

impl ReloadStatus {
    /// A config was loaded just now (the one the agent starts with).
    pub fn new() -> ReloadStatus {
        ReloadStatus(std::sync::Arc::new(std::sync::Mutex::new((
            true,
            unix_now(),
        ))))
    }

    /// A SIGHUP was applied (or found nothing new), or refused.
    pub fn record(&self, applied: bool) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = applied;
        if applied {
            s.1 = unix_now();
        }
    }
}

impl Default for ReloadStatus {
    fn default() -> Self {
        ReloadStatus::new()
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Scrape for ReloadStatus {
    fn descs(&self) -> Vec<Desc> {
        vec![RELOAD_SUCCESSFUL.desc(), RELOAD_SUCCESS_TIME.desc()]
    }

    fn scrape(&self) -> Vec<MetricFamily> {
        let (applied, at) = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        vec![
            RELOAD_SUCCESSFUL.single(if applied { 1.0 } else { 0.0 }),
            RELOAD_SUCCESS_TIME.single(at),
        ]
    }
}

/// How often a rotated stderr file is looked for. Each check wakes an idle agent (every 5 s
/// would be about 40 % of its wake-ups, measured in the lab); until it runs, lines go on into
/// the newest archive, which newsyslog leaves uncompressed, so nothing is lost.
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

/// The listening socket, held by the daemon for its whole life: each agent run serves on a
/// copy of it, so a reload never closes the port (a user spinning on `bind()` cannot take it
/// between two runs). Connections that arrive while the agent restarts wait in its backlog.
struct Port {
    socket: std::net::TcpListener,
    /// The service manager that passed it (`http.listen` is then not used), or `None`: bound
    /// by the agent at `http.listen`.
    passed: Option<Manager>,
}

impl Port {
    /// The socket the service manager passed, else `http.listen` bound.
    async fn open(config: &Config) -> anyhow::Result<Port> {
        if let Some((socket, manager)) = activation::take().map_err(anyhow::Error::msg)? {
            let port = Port {
                socket,
                passed: Some(manager),
            };
            tracing::info!(listen = %port.addr(), passed_by = %manager, "listening on the socket the service manager passed");
            port.warn_if_not(config);
            return Ok(port);
        }
        Ok(Port {
            socket: bind(config).await?.into_std()?,
            passed: None,
        })
    }

    fn addr(&self) -> String {
        self.socket
            .local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string())
    }

    /// A passed socket is the manager's to change: a different `http.listen` is only said.
    fn warn_if_not(&self, config: &Config) {
        if let Some(manager) = self.passed
            && self.socket.local_addr().ok().map(ListenAddr::from)
                != Some(config.http.listen.clone())
        {
            tracing::warn!(listen = %self.addr(), http_listen = %config.http.listen, passed_by = %manager, "http.listen is not used: the service manager passed the socket (change the address there)");
        }
    }

    /// Whether `addr` is another spelling of where the socket is bound (`localhost:P` for
    /// `127.0.0.1:P`, `:P` for every address): binding it again would only find it in use.
    async fn is_at(&self, addr: &ListenAddr) -> bool {
        let Ok(held) = self.socket.local_addr() else {
            return false;
        };
        if held.port() != addr.port {
            return false;
        }
        match &addr.host {
            None => held.ip().is_unspecified(),
            Some(host) => tokio::net::lookup_host((host.as_str(), addr.port))
                .await
                .is_ok_and(|mut all| all.next() == Some(held)),
        }
    }

    /// A copy for one agent run; the daemon keeps its own.
    fn for_agent(&self) -> anyhow::Result<TcpListener> {
        let copy = self
            .socket
            .try_clone()
            .context("duplicating the listening socket")?;
        TcpListener::from_std(copy).context("registering the listening socket")
    }
}

/// What the agent reads only when it starts, besides the config: a change in either is a
/// reason to restart it at SIGHUP even when the config text is the same (a rotated token,
/// new basic-auth users). The certificate and key are re-read by the TLS layer itself.
#[derive(Debug, PartialEq)]
struct StartFiles {
    token: Option<Result<Vec<u8>, String>>,
    web_config: Option<Result<Vec<u8>, String>>,
}

/// Files read for comparison are at most this large (a token or a web config is far smaller).
const START_FILE_MAX: u64 = 1 << 20;

impl StartFiles {
    fn read(config: &Config) -> StartFiles {
        let web = &config.http.web_config_file;
        StartFiles {
            token: config.fallback.token_file.as_deref().map(read_start_file),
            web_config: (!web.as_os_str().is_empty()).then(|| read_start_file(web)),
        }
    }
}

/// A file's bytes, or why it cannot be read: never blocks (a FIFO put in its place is refused
/// by `O_NONBLOCK` and the regular-file check), never reads more than [`START_FILE_MAX`].
fn read_start_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    if !f.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    f.take(START_FILE_MAX)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// What a reload needs, all made before the running agent is stopped.
struct Next {
    config: Config,
    /// Bound already when `http.listen` changed (and the socket was not passed).
    port: Option<Port>,
    files: StartFiles,
    sources: Sources,
}

async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    crate::server::bind(&config.http.listen)
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
    // (the process table, /metrics encoding) runs on tokio's blocking pool.
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
    let mut port = Port::open(&config).await?;
    let mut sources = Sources::real(&config)?;
    let mut files = StartFiles::read(&config);
    let reloads = ReloadStatus::new();
    let mut reloaded = false;
    loop {
        let mut run_config = config.clone();
        if reloaded {
            // The fallback in place is this process's own: it survives the reload.
            run_config.fallback.on_start = OnStart::Adopt;
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let mut agent = tokio::spawn(crate::agent::run_with_families(
            run_config,
            sources,
            port.for_agent()?,
            async move { stop_rx.await.unwrap_or(Stop::Exit) },
            vec![Box::new(reloads.clone())],
        ));
        let running = Running {
            config: &config,
            files: &files,
            port: &port,
            reloads: &reloads,
        };
        let next = tokio::select! {
            next = until_stop_or_reload(&mut signals, &load, &running, reopen.as_deref()) => next,
            // Ends by itself only on an error at start.
            ended = &mut agent => return ended.context("agent task")?,
        };
        let _ = stop_tx.send(if next.is_some() {
            Stop::Reload
        } else {
            Stop::Exit
        });
        agent.await.context("agent task")??;
        let Some(next) = next else { return Ok(()) };
        if let Some(new) = next.port {
            // The old address closes only now, after the old agent has drained.
            port = new;
        }
        crate::logging::apply(&next.config.agent_log);
        config = next.config;
        files = next.files;
        sources = next.sources;
        reloaded = true;
        tracing::info!("SIGHUP: the new config is applied");
    }
}

/// What the agent runs with now, for a reload to compare against.
struct Running<'a> {
    config: &'a Config,
    files: &'a StartFiles,
    port: &'a Port,
    /// Where each SIGHUP's outcome is recorded.
    reloads: &'a ReloadStatus,
}

/// Waits for SIGTERM or SIGINT (`None`) or a SIGHUP whose new config is ready to run; a SIGHUP
/// with nothing new, or a new config that cannot run, leaves the running agent as it is.
async fn until_stop_or_reload(
    signals: &mut Signals,
    load: &impl Fn() -> anyhow::Result<Config>,
    running: &Running<'_>,
    reopen: Option<&crate::logging::Reopen>,
) -> Option<Next> {
    loop {
        if let Received::Stop = signals.next().await {
            return None;
        }
        if let Some(r) = reopen {
            reopen_log(r);
        }
        let prepared = prepare(load, running).await;
        running.reloads.record(prepared.is_ok());
        match prepared {
            Ok(Some(next)) => return Some(next),
            Ok(None) => tracing::info!(
                "SIGHUP: the config is unchanged, and so are the token file and web config"
            ),
            Err(Refused::Invalid(e)) => tracing::error!(
                error = %format!("{e:#}"),
                "SIGHUP: the new config is not valid; the running config stays"
            ),
            Err(Refused::Unusable(e)) => tracing::error!(
                error = %format!("{e:#}"),
                "SIGHUP: the new config cannot be applied (reload refused); the running agent goes on unchanged"
            ),
        }
    }
}

/// Opens the log again if it was rotated; says so in the new file.
fn reopen_log(r: &crate::logging::Reopen) {
    // The folder may be another user's (Homebrew's var/log): no link followed, nothing
    // created there, only a regular file of root's (or the binary's owner's).
    let trust = crate::os::trusted::Trust {
        // SAFETY: geteuid cannot fail and touches no memory.
        owner: crate::os::trusted::Writers::of_root_process()
            .map_or_else(|| unsafe { libc::geteuid() }, |w| w.user),
    };
    match r.check(|p| crate::os::trusted::open_append(p, trust)) {
        Ok(true) => {
            tracing::info!(log = %r.path().display(), "the log was rotated: writing to the new file")
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, log = %r.path().display(), "cannot open the log again after a rotation")
        }
    }
}

/// Why a SIGHUP is not applied.
enum Refused {
    /// The config does not load or validate.
    Invalid(anyhow::Error),
    /// It is valid, but what it needs cannot be had (its new address is in use).
    Unusable(anyhow::Error),
}

/// Reads and checks the new config and prepares what the next run needs; `None` when it and
/// the files read at start are those of the running agent.
async fn prepare(
    load: &impl Fn() -> anyhow::Result<Config>,
    running: &Running<'_>,
) -> Result<Option<Next>, Refused> {
    let config = load().map_err(Refused::Invalid)?;
    let files = StartFiles::read(&config);
    if config == *running.config && files == *running.files {
        return Ok(None);
    }
    if config == *running.config {
        tracing::info!(
            "SIGHUP: the token file or the web config changed: restarting the agent with them"
        );
    }
    running.port.warn_if_not(&config);
    // Bound before the running agent stops: an address in use refuses the reload.
    let port = if running.port.passed.is_none()
        && config.http.listen != running.config.http.listen
        && !running.port.is_at(&config.http.listen).await
    {
        let socket = bind(&config)
            .await
            .and_then(|l| Ok(l.into_std()?))
            .map_err(Refused::Unusable)?;
        Some(Port {
            socket,
            passed: None,
        })
    } else {
        None
    };
    // Off the runtime's one worker: listing the process table would stall the serving agent.
    let sources = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Sources::real(&config))
            .await
            .map_err(|e| Refused::Unusable(e.into()))?
            .map_err(Refused::Unusable)?
    };
    Ok(Some(Next {
        config,
        port,
        files,
        sources,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn another_spelling_of_the_held_address_is_not_bound_again() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = socket.local_addr().unwrap().port();
        let port = Port {
            socket,
            passed: None,
        };
        let at = |s: String| s.parse::<ListenAddr>().unwrap();
        assert!(port.is_at(&at(format!("127.0.0.1:{p}"))).await);
        assert!(!port.is_at(&at(format!(":{p}"))).await, "every address");
        assert!(!port.is_at(&at(format!("127.0.0.1:{}", p ^ 1))).await);
        let every = Port {
            socket: std::net::TcpListener::bind("0.0.0.0:0").unwrap(),
            passed: None,
        };
        let p = every.socket.local_addr().unwrap().port();
        assert!(every.is_at(&at(format!(":{p}"))).await);
        assert!(!every.is_at(&at(format!("127.0.0.1:{p}"))).await);
    }

    #[test]
    fn a_refused_reload_reads_0_and_keeps_the_last_success_time() {
        let status = ReloadStatus::new();
        let registry = prometheus::Registry::new();
        crate::metrics::register(&registry, status.clone()).unwrap();
        let read = || {
            let text = crate::metrics::encode(&registry);
            let value = |name: &str| -> f64 {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("pia_split_tunnel_{name} ")))
                    .unwrap_or_else(|| panic!("{name} in {text}"))
                    .parse()
                    .unwrap()
            };
            (
                value("config_last_reload_successful"),
                value("config_last_reload_success_timestamp_seconds"),
            )
        };
        let (ok, started) = read();
        assert_eq!(ok, 1.0, "the config the agent started with loaded");
        assert!(started > 1.7e9, "Unix seconds: {started}");
        std::thread::sleep(std::time::Duration::from_millis(20));
        status.record(false);
        assert_eq!(read(), (0.0, started));
        status.record(true);
        let (ok, applied) = read();
        assert_eq!(ok, 1.0);
        assert!(applied > started, "{applied} after {started}");
    }

    #[test]
    fn start_files_never_block_and_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(read_start_file(&fifo).unwrap_err(), "not a regular file");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; START_FILE_MAX as usize + 10]).unwrap();
        assert_eq!(
            read_start_file(&big).unwrap().len(),
            START_FILE_MAX as usize
        );
        assert!(read_start_file(&dir.path().join("missing")).is_err());
    }
}
