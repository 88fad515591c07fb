//! HTTP surface (axum): `/metrics`, `/-/healthy`. Other stages add their routes (`/` the
//! status page, `/health`, `/fallback/*`) by merging their own routers into [`router`]'s.
//! [`web_config`] adds TLS, basic auth and headers as the Go exporters do; [`listen`] the
//! address forms they accept.

pub mod activation;
pub mod conns;
pub mod host;
pub mod listen;
pub mod web_config;

pub use host::hide_addresses;
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
use prometheus::Registry;
use serde::{Deserialize, Serialize};
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
    /// Connections served at once; when full, a newcomer pushes out an idle or stalled one
    /// (see [`conns`]), so descriptors cannot run out and a flood cannot hold the port.
    pub max_connections: usize,
    /// Connections one peer other than loopback may hold; all such peers together hold at
    /// most three quarters of `max_connections` (the rest are kept for loopback).
    pub max_connections_per_peer: usize,
    /// Every exchange, from the request's first byte to the response's last byte written,
    /// ends within this time or the connection is closed (responses never read).
    pub exchange_timeout_secs: u64,
    /// Requests on one connection; the last one's response closes it.
    pub max_requests_per_connection: u32,
    /// Names besides loopback ones and the agent's own addresses that requests may give as
    /// `Host` (DNS rebinding): the name Prometheus scrapes this Mac by.
    pub allowed_hosts: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9847)).into(),
            web_config_file: std::path::PathBuf::new(),
            header_timeout_secs: 10,
            max_connections: 256,
            max_connections_per_peer: 16,
            exchange_timeout_secs: 15,
            max_requests_per_connection: 1000,
            allowed_hosts: Vec::new(),
        }
    }
}

impl HttpConfig {
    pub fn validate(&self) -> Result<(), String> {
        use crate::check::in_range;
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
        in_range(
            "http.max_connections_per_peer",
            self.max_connections_per_peer,
            1..=65_536,
            "16",
        )?;
        in_range(
            "http.exchange_timeout_secs",
            self.exchange_timeout_secs,
            1..=3600,
            "15",
        )?;
        in_range(
            "http.max_requests_per_connection",
            self.max_requests_per_connection,
            1..=1_000_000,
            "1000",
        )?;
        for name in &self.allowed_hosts {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c))
            {
                return Err(format!(
                    "http.allowed_hosts: {name:?} is not a host name or address"
                ));
            }
        }
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
        .with_state(Arc::new(Encoder::new(registry)))
}

/// Encodes `/metrics` one at a time; a request waiting while another encodes takes the next
/// encode that started after it arrived (never an older text). So 256 clients pipelining
/// `/metrics` cost one encode at a time, not 256 at once, and a scrape waits at most about two
/// encodes. Hand-written: tower's rate and concurrency limits queue or refuse requests, they
/// do not share one answer among them.
struct Encoder {
    registry: Registry,
    one_at_a_time: tokio::sync::Mutex<Option<(std::time::Instant, Arc<String>)>>,
}

impl Encoder {
    fn new(registry: Registry) -> Self {
        Encoder {
            registry,
            one_at_a_time: tokio::sync::Mutex::new(None),
        }
    }

    async fn encode(&self) -> Arc<String> {
        let asked = std::time::Instant::now();
        let mut last = self.one_at_a_time.lock().await;
        if let Some((started, body)) = last.as_ref()
            && *started >= asked
        {
            return body.clone();
        }
        let started = std::time::Instant::now();
        let registry = self.registry.clone();
        // Encoding walks the log state under its lock: keep it off the async workers.
        let body = Arc::new(
            tokio::task::spawn_blocking(move || crate::metrics::encode(&registry))
                .await
                .unwrap_or_default(),
        );
        *last = Some((started, body.clone()));
        body
    }
}

/// The text format's type, with the charset the format mandates (node_exporter's, and what
/// Prometheus's own /metrics says); the crate's `TEXT_FORMAT` lacks it.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn metrics(State(encoder): State<Arc<Encoder>>) -> impl IntoResponse {
    let body = encoder.encode().await;
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
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        String::clone(&body),
    )
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open requests finish (for
/// at most [`DRAIN`]).
///
/// Not `axum::serve`: it sets no timer, so a client that sends its request head a byte at a
/// time holds its connection forever. Here hyper closes a connection whose head is not complete
/// within `header_timeout_secs` or over [`MAX_HEADER_BYTES`] (431); [`conns`] gives each
/// connection a slot, ends exchanges that outrun `exchange_timeout_secs` (writing included)
/// and lets a newcomer push out an idle or stalled connection when every slot is taken; the
/// `max_requests_per_connection`th response closes its connection; a foreign `Host` gets 421
/// ([`host`]). With TLS the handshake shares the header timeout and the connection's slot.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    cfg: &HttpConfig,
    web: &WebConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = with_headers_and_host_check(app, cfg, web);
    let (drain, stopping) = tokio::sync::watch::channel(false);
    let slots = conns::Slots::new(conns::Limits {
        max: cfg.max_connections,
        per_peer: cfg.max_connections_per_peer.min(cfg.max_connections),
    });
    let limits = ConnLimits {
        header: Duration::from_secs(cfg.header_timeout_secs),
        exchange: Duration::from_secs(cfg.exchange_timeout_secs),
        requests: cfg.max_requests_per_connection,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or the peer left before accept: wait, do not spin.
                    crate::logging::warn_throttled!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tokio::spawn(connection(
            stream,
            peer,
            app.clone(),
            stopping.clone(),
            web.tls.clone(),
            slots.clone(),
            limits,
        ));
    }
    drop(listener);
    drop(stopping);
    drain.send_replace(true);
    // Every connection holds a receiver until it has closed.
    if tokio::time::timeout(DRAIN, drain.closed()).await.is_err() {
        tracing::debug!("connections still open after the drain time: leaving them");
    }
    Ok(())
}

/// The `web.config.file` headers on every response, and the `Host` check in front.
fn with_headers_and_host_check(app: Router, cfg: &HttpConfig, web: &WebConfig) -> Router {
    let app = if web.headers.is_empty() {
        app
    } else {
        app.layer(axum::middleware::map_response_with_state(
            Arc::new(web.headers.clone()),
            web_config::add_headers,
        ))
    };
    let mut names: Vec<&str> = cfg.allowed_hosts.iter().map(String::as_str).collect();
    names.extend(cfg.listen.host.as_deref());
    host::check(app, host::Allowed::new(names))
}

/// One accepted connection: it takes a slot, then (after the TLS handshake) serves requests
/// until it closes, a newcomer pushes it out or an exchange overruns.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    app: Router,
    stopping: Stopping,
    tls: Option<tokio_rustls::TlsAcceptor>,
    slots: Arc<conns::Slots>,
    limits: ConnLimits,
) {
    let slot = match slots.admit(peer.ip()).await {
        Ok(slot) => slot,
        Err(why) => {
            tracing::debug!(%peer, ?why, "no connection slot (http.max_connections, http.max_connections_per_peer): closing a new one");
            return;
        }
    };
    let Ok(local) = stream.local_addr() else {
        return;
    };
    // Responses nobody reads stall here within a few hundred KiB rather than after
    // megabytes of kernel memory per connection (autotuned, it grows to 4 MiB).
    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
    let conn = host::Conn { peer, local };
    let io = conns::Tracked::new(stream, slot.state.clone());
    let state = slot.state.clone();
    let work = async move {
        match tls {
            None => serve_connection(io, app, limits, conn, state, stopping).await,
            Some(tls) => match tokio::time::timeout(limits.header, tls.accept(io)).await {
                Ok(Ok(io)) => serve_connection(io, app, limits, conn, state, stopping).await,
                // A failed or too slow handshake is the client's problem.
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => {
                    tracing::debug!("TLS handshake not done within http.header_timeout_secs")
                }
            },
        }
    };
    // Dropping `work` closes the connection, handshake or not.
    tokio::select! {
        () = work => {}
        () = slot.state.kill.notified() => {
            tracing::debug!(%peer, "connection pushed out by a newcomer (http.max_connections)");
        }
        () = slot.state.overrun(limits.exchange) => {
            tracing::debug!(%peer, "exchange not done within http.exchange_timeout_secs: closing");
        }
    }
    drop(slot);
}

/// Largest request head (request line and headers) read; bigger ones get 431. A browser's
/// cookies for `localhost` fit; 255 half-sent heads of 400 KB cannot make the agent hold 100 MB.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Kernel send buffer of a connection (Linux doubles it): a `/metrics` of several MB still
/// flows, a client that never reads holds little.
const SEND_BUFFER: usize = 128 * 1024;

/// Per-connection limits, from `[http]`.
#[derive(Clone, Copy, Debug)]
struct ConnLimits {
    header: Duration,
    exchange: Duration,
    requests: u32,
}

async fn serve_connection<I>(
    io: I,
    app: Router,
    limits: ConnLimits,
    conn: host::Conn,
    state: Arc<conns::ConnState>,
    stopping: Stopping,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn({
        let state = state.clone();
        move |req: axum::extract::Request<hyper::body::Incoming>| {
            exchange(app.clone(), req, conn, state.clone(), limits.requests)
        }
    });
    let http = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(4 * MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(io), service);
    // Errors here are the client's (reset, timeout, bad request): nothing to report.
    let mut http = std::pin::pin!(http);
    tokio::select! {
        _ = http.as_mut() => return,
        () = stop_asked(stopping.clone()) => {}
    }
    // hyper closes at once a connection it has read nothing from (as if idle), so a client
    // accepted just before the stop would get no answer: its first request is waited for
    // (briefly: a browser's silent preconnect must not hold a reload) and answered, then the
    // connection closes.
    if !state.has_begun() {
        tokio::select! {
            _ = http.as_mut() => return,
            () = state.first_bytes() => {}
            () = tokio::time::sleep(limits.header.min(FIRST_REQUEST_WAIT)) => {}
        }
    }
    http.as_mut().graceful_shutdown();
    let _ = http.await;
    drop(stopping);
}

/// The server's stop, as each connection sees it; the server drains until every receiver is
/// dropped.
type Stopping = tokio::sync::watch::Receiver<bool>;

/// Resolves when the server stops (or is gone).
async fn stop_asked(mut stopping: Stopping) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// One request through `app`: tells the connection's state when the handler runs and when the
/// response body has been handed over, and closes the connection after its last request.
async fn exchange(
    app: Router,
    req: axum::extract::Request<hyper::body::Incoming>,
    conn: host::Conn,
    state: Arc<conns::ConnState>,
    max_requests: u32,
) -> Result<axum::response::Response, std::convert::Infallible> {
    use tower::ServiceExt;
    let n = state.handler_start();
    let mut req = req.map(axum::body::Body::new);
    req.extensions_mut().insert(conn);
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(conn.peer));
    let resp = app.oneshot(req).await;
    state.handler_end();
    let mut resp = match resp {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if n >= max_requests {
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    Ok(resp.map(|body| axum::body::Body::new(conns::Watched::new(body, state))))
}

/// How long a connection accepted before the stop, silent so far, may take to send its first
/// request: the client was about to send it; one that stays silent holds the stop no longer.
const FIRST_REQUEST_WAIT: Duration = Duration::from_secs(1);

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
        let (encoding, _, body) = get_typed(app, gzip).await;
        (encoding, body)
    }

    async fn get_typed(app: &Router, gzip: bool) -> (Option<String>, String, Vec<u8>) {
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
        let content_type = resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (encoding, content_type, body.to_vec())
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

    #[tokio::test]
    async fn metrics_say_their_charset() {
        let registry = Registry::new();
        crate::metrics::register(&registry, crate::metrics::BuildInfo).unwrap();
        let (_, content_type, _) = get_typed(&router(registry), false).await;
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    }

    /// A connection accepted before the stop, whose request the client sends only after it,
    /// is answered (hyper alone closes it unanswered: it has read nothing, so it looks idle),
    /// and the server waits for it before it returns.
    #[tokio::test]
    async fn a_connection_accepted_before_the_stop_gets_its_request_answered() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "answered\n" }));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let cfg = HttpConfig::default();
            serve(listener, app, &cfg, &WebConfig::default(), async move {
                let _ = stop_rx.await;
            })
            .await
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Accepted and given its slot before the stop.
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop_tx.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!server.is_finished(), "the server waits for the connection");
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_string(&mut answer))
            .await
            .expect("the connection closes after its answer")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(answer.ends_with("answered\n"), "{answer:?}");
        tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .expect("the server ends once the connection is closed")
            .unwrap()
            .unwrap();
    }

    /// A client that connected and stays silent (a browser's preconnect) holds the stop for
    /// [`FIRST_REQUEST_WAIT`] at most, then is closed.
    #[tokio::test]
    async fn a_silent_connection_holds_the_stop_briefly() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let cfg = HttpConfig::default();
            serve(
                listener,
                Router::new(),
                &cfg,
                &WebConfig::default(),
                async move {
                    let _ = stop_rx.await;
                },
            )
            .await
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stopped = std::time::Instant::now();
        stop_tx.send(()).unwrap();
        tokio::time::timeout(FIRST_REQUEST_WAIT * 2, server)
            .await
            .expect("a silent connection does not hold the stop")
            .unwrap()
            .unwrap();
        assert!(stopped.elapsed() >= FIRST_REQUEST_WAIT - Duration::from_millis(50));
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0, "closed");
    }
}
