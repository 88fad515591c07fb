//! HTTP surface (axum): `/metrics`, `/-/healthy`. Other stages add their routes (`/` the
//! status page, `/health`, `/fallback/*`) by merging their own routers into [`router`]'s.
//! [`web_config`] adds TLS, basic auth and headers as the Go exporters do; [`listen`] the
//! address forms they accept.

pub mod activation;
pub mod listen;
pub mod web_config;

pub use listen::{ListenAddr, bind};
pub use web_config::WebConfig;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use prometheus::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;

/// `[http]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `HOST:PORT`, `[V6]:PORT`, or `:PORT` for every address (`--web.listen-address`).
    pub listen: ListenAddr,
    /// The exporter toolkit's web configuration (TLS, basic auth); empty: plain HTTP.
    pub web_config_file: std::path::PathBuf,
    /// A client that has not sent a whole request head within this time is disconnected (a
    /// slow client must not hold a connection forever).
    pub header_timeout_secs: u64,
    /// Connections served at once; more are closed at once, so descriptors cannot run out.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9847)).into(),
            web_config_file: std::path::PathBuf::new(),
            header_timeout_secs: 10,
            max_connections: 256,
        }
    }
}

impl HttpConfig {
    pub fn validate(&self) -> Result<(), String> {
        use crate::tail::open::in_range;
        // Timers add these to now: a huge value would overflow at every request.
        in_range(
            "http.header_timeout_secs",
            self.header_timeout_secs,
            1..=3600,
            "10",
        )?;
        in_range(
            "http.max_connections",
            self.max_connections,
            4..=65_536,
            "256",
        )?;
        // Loaded here too so check-config reports its errors.
        WebConfig::load(Some(&self.web_config_file))
            .map(|_| ())
            .map_err(|e| format!("http.web_config_file: {e}"))
    }
}

/// Routes of the core surface.
pub fn router(registry: Registry) -> Router {
    Router::new()
        // Gzip when the scraper asks (Prometheus does); level 1: most of the gain, little CPU.
        .route(
            "/metrics",
            get(metrics).layer(CompressionLayer::new().quality(CompressionLevel::Fastest)),
        )
        .route("/-/healthy", get(|| async { "OK\n" }))
        .with_state(registry)
}

async fn metrics(State(registry): State<Registry>) -> impl IntoResponse {
    // Encoding walks the pipeline under its lock: keep it off the async workers.
    let body = tokio::task::spawn_blocking(move || crate::metrics::encode(&registry))
        .await
        .unwrap_or_default();
    // Never 200 with nothing: Prometheus would keep `up` at 1 over no data.
    if body.is_empty() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "metrics could not be encoded; see the agent's log\n".to_string(),
        );
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        body,
    )
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open requests finish (for
/// at most [`DRAIN`]).
///
/// Not `axum::serve`: it sets no timer, so a client that sends its request head a byte at a
/// time holds its connection forever. Here hyper closes a connection whose head is not complete
/// within `header_timeout_secs`, and at most `max_connections` are served at once; more are
/// closed on accept, so slow or idle clients cannot use up the descriptors `/metrics` needs.
/// With TLS the handshake shares the header timeout and the connection's slot.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    cfg: &HttpConfig,
    web: &WebConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = if web.headers.is_empty() {
        app
    } else {
        app.layer(axum::middleware::map_response_with_state(
            Arc::new(web.headers.clone()),
            web_config::add_headers,
        ))
    };
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
        let (app, watcher, tls) = (app.clone(), graceful.watcher(), web.tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, app, header_timeout, watcher).await,
                Some(tls) => match tokio::time::timeout(header_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, app, header_timeout, watcher).await,
                    // A failed or too slow handshake is the client's problem.
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => {
                        tracing::debug!("TLS handshake not done within http.header_timeout_secs")
                    }
                },
            }
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

async fn serve_connection<I>(io: I, app: Router, header_timeout: Duration, watcher: Watcher)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    // Errors here are the client's (reset, timeout, bad request): nothing to report.
    let _ = watcher.watch(conn).await;
}

/// How long open requests may take to finish after shutdown was asked.
const DRAIN: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use std::io::Read;

    use axum::body::Body;
    use axum::http::{Request, header};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn get(app: &Router, gzip: bool) -> (Option<String>, Vec<u8>) {
        let mut req = Request::get("/metrics");
        if gzip {
            req = req.header(header::ACCEPT_ENCODING, "gzip");
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let encoding = resp
            .headers()
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (encoding, body.to_vec())
    }

    #[tokio::test]
    async fn metrics_are_gzipped_when_asked_and_plain_otherwise() {
        let registry = Registry::new();
        crate::metrics::register(&registry, crate::metrics::BuildInfo).unwrap();
        let app = router(registry);
        let (encoding, plain) = get(&app, false).await;
        assert_eq!(encoding, None);
        let plain = String::from_utf8(plain).unwrap();
        assert!(
            plain.contains("pia_split_tunnel_build_info{version="),
            "{plain}"
        );
        let (encoding, zipped) = get(&app, true).await;
        assert_eq!(encoding.as_deref(), Some("gzip"));
        let mut unzipped = String::new();
        flate2::read::GzDecoder::new(&zipped[..])
            .read_to_string(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, plain);
    }
}
