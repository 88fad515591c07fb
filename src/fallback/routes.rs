//! `POST /fallback/apply`, `POST /fallback/revert`, `POST /fallback/recheck` and
//! `POST /alertmanager` (Alertmanager's webhook JSON). All require `Authorization: Bearer
//! TOKEN`, the token read from `fallback.token_file` (mode 0600); without a token file they
//! answer 404 and do nothing.
//!
//! An alert only asks. The webhook is fleet-safe: alerts for any `instance` other than
//! `fallback.instance` are answered `not_for_this_instance`; without `fallback.instance` the
//! agent cannot tell its own alert from another machine's (a fleet's Alertmanager groups by
//! instance, so every payload names one), and no alert is acted on. Even for its own alert the
//! controller applies only if a fresh probe round of this agent shows the bypass broken.

use std::collections::{BTreeMap, BTreeSet};
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
use super::metrics::AlertResult;
use super::recheck::RecheckCause;

/// The controller as shared by the agent loop and the HTTP handlers.
pub type SharedController = Arc<tokio::sync::Mutex<Controller>>;

/// A bearer token; compared in constant time.
pub struct Token(Vec<u8>);

impl Token {
    /// Reads a token file, refusing what the config check refuses (a link, a file group or
    /// others can read).
    pub fn from_file(path: &Path) -> Result<Token, String> {
        super::token_file_is_private(path)?;
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
    instance: Option<Arc<str>>,
}

/// The mutating endpoints. Reads `cfg.token_file` now; an unreadable or too open file is an
/// error (the agent should not start with a control surface it cannot protect).
pub fn router(controller: SharedController, cfg: &FallbackConfig) -> Result<Router, String> {
    let token = cfg
        .token_file
        .as_deref()
        .map(Token::from_file)
        .transpose()?;
    if token.is_some() && cfg.instance.is_none() {
        tracing::warn!(
            "fallback.instance is unset: the Alertmanager webhook will act on no alert, as it \
             cannot tell this machine's alerts from another's (set it to this machine's \
             instance label)"
        );
    }
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
            .route("/fallback/recheck", post(disabled))
            .route("/alertmanager", post(disabled));
    };
    let state = ControlState {
        controller,
        alert_names: cfg.alert_names.clone().into(),
        instance: cfg.instance.as_deref().map(Arc::from),
    };
    let token = Arc::new(token);
    let max_body = cfg.max_body_bytes;
    Router::new()
        .route("/fallback/apply", post(apply))
        .route("/fallback/revert", post(revert))
        .route("/fallback/recheck", post(recheck))
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
        ControlError::NotAuto(_)
        | ControlError::NoPlan(_)
        | ControlError::NotBroken(_)
        | ControlError::NoProbe
        | ControlError::NotActive => StatusCode::CONFLICT,
        ControlError::Backend(_) | ControlError::RolledBack(_) => StatusCode::INTERNAL_SERVER_ERROR,
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

/// Asks the agent to check now whether the fallback is still needed: a request, never
/// evidence (the agent's own round without the rules decides). In any mode, as an apply by
/// hand: only a version change waits for `auto`.
async fn recheck(State(s): State<ControlState>) -> Response {
    let mut c = s.controller.lock().await;
    match c.recheck(Instant::now(), RecheckCause::Manual).await {
        Ok(r) => Json(json!({"result": r.result, "recheck": r})).into_response(),
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

/// Whom a webhook's firing alerts are for, as this agent sees it.
#[derive(Debug, PartialEq, Eq)]
enum Addressed {
    /// No firing alert with a listed name.
    Nothing,
    /// For this agent: the instance named.
    Me(String),
    /// Only for other instances (with `fallback.instance` set).
    Others(Vec<String>),
    /// Without `fallback.instance`: whose it is cannot be told (the instances named).
    Unattributed(Vec<String>),
}

fn addressed(hook: &Webhook, names: &[String], me: Option<&str>) -> Addressed {
    let instances: BTreeSet<&str> = hook
        .alerts
        .iter()
        .filter(|a| a.status == "firing")
        .filter(|a| {
            a.labels
                .get("alertname")
                .is_some_and(|n| names.iter().any(|w| w == n))
        })
        .map(|a| a.labels.get("instance").map_or("", String::as_str))
        .collect();
    let list = || instances.iter().map(|i| (*i).to_owned()).collect();
    match me {
        _ if instances.is_empty() => Addressed::Nothing,
        Some(me) if instances.contains(me) => Addressed::Me(me.to_owned()),
        Some(_) => Addressed::Others(list()),
        None => Addressed::Unattributed(list()),
    }
}

fn answer(c: &Controller, result: AlertResult, extra: serde_json::Value) -> Response {
    c.count_alert(result);
    let mut body = json!({ "result": result });
    if let (Some(b), serde_json::Value::Object(more)) = (body.as_object_mut(), extra) {
        b.extend(more);
    }
    Json(body).into_response()
}

async fn alertmanager(State(s): State<ControlState>, body: axum::body::Bytes) -> Response {
    let hook: Webhook = match serde_json::from_slice(&body) {
        Ok(h) => h,
        Err(e) => {
            s.controller
                .lock()
                .await
                .count_alert(AlertResult::Malformed);
            return (
                StatusCode::BAD_REQUEST,
                format!("not an Alertmanager webhook payload: {e}\n"),
            )
                .into_response();
        }
    };
    let to = addressed(&hook, &s.alert_names, s.instance.as_deref());
    let mut c = s.controller.lock().await;
    let instance = match to {
        // Resolved alerts are not a reason to revert: the repair is what resolved them.
        Addressed::Nothing => return answer(&c, AlertResult::Ignored, json!({})),
        Addressed::Others(others) => {
            tracing::info!(alerts_for = ?others, this_instance = s.instance.as_deref().unwrap_or(""),
                "fallback: Alertmanager alert for another instance; nothing done");
            return answer(&c, AlertResult::NotForThisInstance, json!({}));
        }
        Addressed::Unattributed(named) => {
            tracing::warn!(instances = ?named,
                "fallback: Alertmanager alert not acted on: fallback.instance is unset, so \
                 this agent cannot tell its own alerts from another machine's (set it to this \
                 machine's instance label)");
            return answer(
                &c,
                AlertResult::NotActed,
                json!({"reason": "fallback.instance is unset: this agent cannot tell its own \
                    alerts from another machine's"}),
            );
        }
        Addressed::Me(i) => i,
    };
    tracing::info!(instance = %instance, "fallback: Alertmanager asks for the repair; probing first");
    match c.alert_apply(Instant::now()).await {
        Ok(Some(plan)) => answer(&c, AlertResult::Applied, json!({"plan": plan})),
        Ok(None) => answer(&c, AlertResult::AlreadyActive, json!({})),
        // Answer 200 to a decision not to act, so Alertmanager does not retry it.
        Err(
            e @ (ControlError::Gated(_)
            | ControlError::NotAuto(_)
            | ControlError::NotBroken(_)
            | ControlError::NoProbe),
        ) => answer(&c, AlertResult::NotActed, json!({"reason": e.to_string()})),
        Err(e) => {
            c.count_alert(AlertResult::Failed);
            error_response(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(alerts: &[(&str, &str, Option<&str>)]) -> Webhook {
        Webhook {
            alerts: alerts
                .iter()
                .map(|(status, name, instance)| Alert {
                    status: (*status).into(),
                    labels: [("alertname", *name)]
                        .into_iter()
                        .chain(instance.map(|i| ("instance", i)))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn whom_alerts_are_for() {
        let names = ["PiaSplitTunnelBypassBroken".to_owned()];
        let broken = |i| ("firing", "PiaSplitTunnelBypassBroken", i);
        let a = |h: &Webhook, me| addressed(h, &names, me);
        let one = hook(&[broken(Some("mac2:9847"))]);
        assert_eq!(
            a(&one, Some("mac1:9847")),
            Addressed::Others(vec!["mac2:9847".into()])
        );
        assert_eq!(
            a(&one, Some("mac2:9847")),
            Addressed::Me("mac2:9847".into())
        );
        // Without its own name the agent cannot tell mac2's alert from its own.
        assert_eq!(
            a(&one, None),
            Addressed::Unattributed(vec!["mac2:9847".into()])
        );
        let two = hook(&[broken(Some("mac1:9847")), broken(Some("mac2:9847"))]);
        assert_eq!(
            a(&two, Some("mac1:9847")),
            Addressed::Me("mac1:9847".into())
        );
        assert!(matches!(a(&two, None), Addressed::Unattributed(v) if v.len() == 2));
        assert!(matches!(
            a(&hook(&[broken(None)]), None),
            Addressed::Unattributed(_)
        ));
        assert_eq!(
            a(&hook(&[broken(None)]), Some("mac1:9847")),
            Addressed::Others(vec![String::new()])
        );
        let quiet = hook(&[
            ("resolved", "PiaSplitTunnelBypassBroken", Some("mac1:9847")),
            ("firing", "SomethingElse", Some("mac1:9847")),
        ]);
        assert_eq!(a(&quiet, Some("mac1:9847")), Addressed::Nothing);
    }
}
