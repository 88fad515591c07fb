//! HTTP surface (axum): `/metrics`, `/` (landing page), `/-/healthy`. Other stages add their
//! routes (`/health`, `/fallback/*`) by merging their own routers into [`router`]'s.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use prometheus::Registry;

/// Routes of the core surface.
pub fn router(registry: Registry, links: &'static [(&'static str, &'static str)]) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "OK\n" }))
        .route("/", get(move || async move { landing(links) }))
        .with_state(registry)
}

async fn metrics(State(registry): State<Registry>) -> impl IntoResponse {
    // Encoding walks the pipeline under its lock: keep it off the async workers.
    let body = tokio::task::spawn_blocking(move || crate::metrics::encode(&registry))
        .await
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body)
}

fn landing(links: &[(&str, &str)]) -> Html<String> {
    let items: String = links
        .iter()
        .map(|(href, what)| format!("<li><a href=\"{href}\">{href}</a> — {what}</li>"))
        .collect();
    Html(format!(
        "<!doctype html><html><head><title>pia-split-tunnel-exporter</title></head><body>\
         <h1>pia-split-tunnel-exporter {}</h1><ul>{items}</ul></body></html>\n",
        env!("CARGO_PKG_VERSION")
    ))
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
