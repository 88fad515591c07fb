//! HTTP surface (axum): `/metrics`, `/-/healthy`. Other stages add their routes (`/` the
//! status page, `/health`, `/fallback/*`) by merging their own routers into [`router`]'s.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// `[http]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: std::net::SocketAddr,
    /// A client that has not sent a whole request head within this time is disconnected (a
    /// slow client must not hold a connection forever).
    pub header_timeout_secs: u64,
    /// Connections served at once; more are closed at once, so descriptors cannot run out.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: ([127, 0, 0, 1], 9847).into(),
            header_timeout_secs: 10,
            max_connections: 256,
        }
    }
}

impl HttpConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.header_timeout_secs == 0 {
            return Err("http.header_timeout_secs = 0: use e.g. 10".into());
        }
        if self.max_connections < 4 {
            return Err(format!(
                "http.max_connections = {}: use at least 4 (default 256)",
                self.max_connections
            ));
        }
        Ok(())
    }
}

/// Routes of the core surface.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "OK\n" }))
        .with_state(registry)
}

async fn metrics(State(registry): State<Registry>) -> impl IntoResponse {
    // Encoding walks the pipeline under its lock: keep it off the async workers.
    let body = tokio::task::spawn_blocking(move || crate::metrics::encode(&registry))
        .await
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open requests finish (for
/// at most [`DRAIN`]).
///
/// Not `axum::serve`: it sets no timer, so a client that sends its request head a byte at a
/// time holds its connection forever. Here hyper closes a connection whose head is not complete
/// within `header_timeout_secs`, and at most `max_connections` are served at once; more are
/// closed on accept, so slow or idle clients cannot use up the descriptors `/metrics` needs.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    cfg: &HttpConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let header_timeout = Duration::from_secs(cfg.header_timeout_secs);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, or the peer left before accept: wait, do not spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("too many connections (http.max_connections): closing a new one");
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // Errors here are the client's (reset, timeout, bad request): nothing to report.
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("connections still open after the drain time: leaving them");
    }
    Ok(())
}

/// How long open requests may take to finish after shutdown was asked.
const DRAIN: Duration = Duration::from_secs(5);
