//! `POST /fallback/apply`, `POST /fallback/revert` and `POST /alertmanager` (Alertmanager's
//! webhook JSON). All require `Authorization: Bearer TOKEN`, the token read from
//! `fallback.token_file` (mode 0600); without a token file they answer 404 and do nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::FallbackConfig;
use super::controller::{ControlError, Controller};

/// The controller as shared by the agent loop and the HTTP handlers.
pub type SharedController = Arc<tokio::sync::Mutex<Controller>>;

/// A bearer token; compared in constant time.
pub struct Token(Vec<u8>);

impl Token {
    /// Reads a token file, refusing one that group or others can read.
    pub fn from_file(path: &Path) -> Result<Token, String> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("fallback.token_file {}: {e}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "fallback.token_file {} has mode {mode:o}: run `chmod 600 {}`",
                path.display(),
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("fallback.token_file {}: {e}", path.display()))?;
        let token = text.trim();
        if token.len() < 16 {
            return Err(format!(
                "fallback.token_file {}: the token is shorter than 16 characters",
                path.display()
            ));
        }
        Ok(Token(token.as_bytes().to_vec()))
    }

    fn matches(&self, presented: &[u8]) -> bool {
        // `ct_eq` on slices of different lengths is false without comparing bytes; the
        // length is not the secret.
        self.0.as_slice().ct_eq(presented).into()
    }
}

#[derive(Clone)]
struct ControlState {
    controller: SharedController,
    alert_names: Arc<[String]>,
}

/// The mutating endpoints. Reads `cfg.token_file` now; an unreadable or too open file is an
/// error (the agent should not start with a control surface it cannot protect).
pub fn router(controller: SharedController, cfg: &FallbackConfig) -> Result<Router, String> {
    let token = cfg
        .token_file
        .as_deref()
        .map(Token::from_file)
        .transpose()?;
    Ok(router_with_token(controller, cfg, token))
}

/// As [`router`], with the token given (or none: disabled).
pub fn router_with_token(
    controller: SharedController,
    cfg: &FallbackConfig,
    token: Option<Token>,
) -> Router {
    let Some(token) = token else {
        return Router::new()
            .route("/fallback/apply", post(disabled))
            .route("/fallback/revert", post(disabled))
            .route("/alertmanager", post(disabled));
    };
    let state = ControlState {
        controller,
        alert_names: cfg.alert_names.clone().into(),
    };
    let token = Arc::new(token);
    let max_body = cfg.max_body_bytes;
    Router::new()
        .route("/fallback/apply", post(apply))
        .route("/fallback/revert", post(revert))
        .route("/alertmanager", post(alertmanager))
        .route_layer(middleware::from_fn(move |req: Request, next: Next| {
            let token = token.clone();
            async move { authorize(&token, max_body, req, next).await }
        }))
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .with_state(state)
}

async fn disabled() -> Response {
    (
        StatusCode::NOT_FOUND,
        "fallback control over HTTP is disabled: set fallback.token_file\n",
    )
        .into_response()
}

/// Only `route_layer`ed, so an unknown path stays a 404 rather than a 401.
async fn authorize(token: &Token, max_body: usize, req: Request, next: Next) -> Response {
    let presented = bearer(req.headers());
    if presented.is_some_and(|p| token.matches(p)) {
        // The body limit alone would wait for a declared 10 GB to arrive: refuse it from
        // the head.
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body as u64) {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is limited to {max_body} bytes (fallback.max_body_bytes)\n"),
            )
                .into_response();
        }
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid bearer token is required\n",
        )
            .into_response()
    }
}

fn bearer(h: &HeaderMap) -> Option<&[u8]> {
    let v = h.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

fn error_response(e: ControlError) -> Response {
    let code = match &e {
        ControlError::Gated(_) => StatusCode::TOO_MANY_REQUESTS,
        ControlError::NotAuto(_) | ControlError::NoPlan(_) => StatusCode::CONFLICT,
        ControlError::Backend(_) | ControlError::RolledBack { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    (
        code,
        Json(json!({"result": "error", "error": e.to_string()})),
    )
        .into_response()
}

async fn apply(State(s): State<ControlState>) -> Response {
    let mut c = s.controller.lock().await;
    match c.manual_apply(Instant::now()).await {
        Ok(plan) => Json(json!({"result": "applied", "plan": plan})).into_response(),
        Err(e) => error_response(e),
    }
}

async fn revert(State(s): State<ControlState>) -> Response {
    let mut c = s.controller.lock().await;
    match c.manual_revert(Instant::now()) {
        Ok(()) => Json(json!({"result": "reverted"})).into_response(),
        Err(e) => error_response(e),
    }
}

/// The parts of Alertmanager's webhook payload (version 4) we read.
#[derive(Deserialize)]
struct Webhook {
    alerts: Vec<Alert>,
}

#[derive(Deserialize)]
struct Alert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

async fn alertmanager(State(s): State<ControlState>, body: axum::body::Bytes) -> Response {
    let hook: Webhook = match serde_json::from_slice(&body) {
        Ok(h) => h,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not an Alertmanager webhook payload: {e}\n"),
            )
                .into_response();
        }
    };
    let firing: Vec<&str> = hook
        .alerts
        .iter()
        .filter(|a| a.status == "firing")
        .filter_map(|a| a.labels.get("alertname").map(String::as_str))
        .filter(|n| s.alert_names.iter().any(|w| w == n))
        .collect();
    if firing.is_empty() {
        // Resolved alerts are not a reason to revert: the repair is what resolved them.
        return Json(json!({"result": "ignored"})).into_response();
    }
    tracing::info!(alerts = ?firing, "fallback: Alertmanager asks for the repair");
    let mut c = s.controller.lock().await;
    match c.alert_apply(Instant::now()).await {
        Ok(Some(plan)) => Json(json!({"result": "applied", "plan": plan})).into_response(),
        Ok(None) => Json(json!({"result": "already_active"})).into_response(),
        // Answer 200 to a decision not to act, so Alertmanager does not retry it.
        Err(e @ (ControlError::Gated(_) | ControlError::NotAuto(_))) => {
            Json(json!({"result": "not_acted", "reason": e.to_string()})).into_response()
        }
        Err(e) => error_response(e),
    }
}
