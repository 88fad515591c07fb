//! `GET /health` (200 unless a component is failing, else 503) and `GET /-/ready`.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;

use super::{Health, Status};

pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/health", get(health_handler))
        .route("/-/ready", get(ready_handler))
        .with_state(health)
}

async fn health_handler(State(h): State<Arc<Health>>) -> impl IntoResponse {
    let report = h.report(Instant::now());
    let code = if report.status == Status::Failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(report))
}

async fn ready_handler(State(h): State<Arc<Health>>) -> impl IntoResponse {
    let r = h.readiness();
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(r))
}
