//! The mutating endpoints: bearer token required, wrong token refused, disabled without a token
//! file, body limit; and `/health`, `/-/ready`.

use crate::common;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use pia_split_tunnel_exporter::fallback::controller::Controller;
use pia_split_tunnel_exporter::fallback::metrics::FallbackMetrics;
use pia_split_tunnel_exporter::fallback::routes::{SharedController, router};
use pia_split_tunnel_exporter::fallback::{FallbackConfig, Mode, build_backend};
use pia_split_tunnel_exporter::health::{Health, HealthConfig, LogHealthInput};
use pia_split_tunnel_exporter::probe::Verdict;
use prometheus::Registry;
use tower::ServiceExt;

const TOKEN: &str = "s3cret-token-0123456789";

/// The controller on the stand-in, its probes seeing the bypass broken until it is repaired.
fn shared(s: &StandIn, cfg: &FallbackConfig) -> SharedController {
    let m = FallbackMetrics::register(&Registry::new()).unwrap();
    Arc::new(tokio::sync::Mutex::new(Controller::new(
        cfg,
        build_backend(cfg),
        s.verifier(),
        m,
    )))
}

fn token_file(dir: &std::path::Path, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("token");
    std::fs::write(&p, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

async fn call(
    app: &Router,
    path: &str,
    auth: Option<&str>,
    body: impl Into<Body>,
) -> (StatusCode, String) {
    let mut req = Request::post(path).header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = app
        .clone()
        .oneshot(req.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn disabled_without_a_token_file() {
    let s = StandIn::new();
    let cfg = s.config();
    let app = router(shared(&s, &cfg), &cfg).unwrap();
    for path in [
        "/fallback/apply",
        "/fallback/revert",
        "/fallback/recheck",
        "/alertmanager",
    ] {
        let (code, body) = call(&app, path, Some(&format!("Bearer {TOKEN}")), "{}").await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}");
        assert!(body.contains("token_file"), "{body}");
    }
    assert!(s.calls().is_empty());
}

#[tokio::test]
async fn token_required_and_wrong_token_refused() {
    let s = StandIn::new();
    let cfg = FallbackConfig {
        token_file: Some(token_file(s.dir.path(), 0o600)),
        ..s.config()
    };
    let app = router(shared(&s, &cfg), &cfg).unwrap();
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789"),
        Some(&*format!("Basic {TOKEN}")),
        Some("Bearer "),
    ] {
        for path in [
            "/fallback/apply",
            "/fallback/revert",
            "/fallback/recheck",
            "/alertmanager",
        ] {
            let (code, _) = call(&app, path, auth, "{}").await;
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{path} with {auth:?}");
        }
    }
    assert!(s.calls().is_empty(), "nothing ran without the token");

    let (code, body) = call(
        &app,
        "/fallback/apply",
        Some(&format!("Bearer {TOKEN}")),
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(body.contains("\"applied\""), "{body}");
    assert_eq!(s.held_tokens().len(), 1);
    let (code, body) = call(
        &app,
        "/fallback/revert",
        Some(&format!("bearer {TOKEN}")),
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(s.held_tokens().is_empty());
}

#[tokio::test]
async fn token_file_readable_by_others_is_refused() {
    let s = StandIn::new();
    let cfg = FallbackConfig {
        token_file: Some(token_file(s.dir.path(), 0o644)),
        ..s.config()
    };
    let err = router(shared(&s, &cfg), &cfg).expect_err("refused");
    assert!(err.contains("chmod 600"), "{err}");
}

#[tokio::test]
async fn alertmanager_webhook_applies_in_auto_and_limits_bodies() {
    let s = StandIn::new();
    let cfg = FallbackConfig {
        mode: Mode::Auto,
        token_file: Some(token_file(s.dir.path(), 0o600)),
        instance: Some("mac1:9847".into()),
        max_body_bytes: 4096,
        ..s.config()
    };
    let app = router(shared(&s, &cfg), &cfg).unwrap();
    let auth = format!("Bearer {TOKEN}");
    let hook = |name: &str, status: &str| {
        format!(
            r#"{{"version":"4","groupKey":"{{}}:{{}}","status":"{status}","receiver":"agent","groupLabels":{{}},"commonLabels":{{}},"commonAnnotations":{{}},"externalURL":"http://localhost:9093","alerts":[{{"status":"{status}","labels":{{"alertname":"{name}","instance":"mac1:9847"}},"annotations":{{}},"startsAt":"2026-01-01T00:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":"x"}}]}}"#
        )
    };
    let (code, body) = call(&app, "/alertmanager", Some(&auth), hook("Other", "firing")).await;
    assert_eq!(
        (code, body.contains("ignored")),
        (StatusCode::OK, true),
        "{body}"
    );
    let (code, body) = call(
        &app,
        "/alertmanager",
        Some(&auth),
        hook("PiaSplitTunnelBypassBroken", "resolved"),
    )
    .await;
    assert_eq!(
        (code, body.contains("ignored")),
        (StatusCode::OK, true),
        "{body}"
    );
    assert!(s.calls().is_empty());
    let (code, body) = call(
        &app,
        "/alertmanager",
        Some(&auth),
        hook("PiaSplitTunnelBypassBroken", "firing"),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(body.contains("\"applied\""), "{body}");
    let (code, body) = call(
        &app,
        "/alertmanager",
        Some(&auth),
        hook("PiaSplitTunnelBypassBroken", "firing"),
    )
    .await;
    assert!(body.contains("already_active"), "{code} {body}");
    let (code, _) = call(&app, "/alertmanager", Some(&auth), "x".repeat(10_000)).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    let (code, _) = call(&app, "/alertmanager", Some(&auth), "not json").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn health_is_503_when_failing_and_ready_after_round_and_log() {
    let health = Arc::new(Health::new(&HealthConfig::default()));
    let app = pia_split_tunnel_exporter::health::routes::router(health.clone());
    let get = |path: &'static str| {
        let app = app.clone();
        async move {
            let resp = app
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let code = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (
                code,
                serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            )
        }
    };
    let (code, body) = get("/-/ready").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["probe_round"], false);
    let r = round(true, Bypass::Timeout);
    let v = Verdict::of(&r);
    health.update_round(r, v);
    health.update_log(LogHealthInput {
        file_present: true,
        lines_read: 10,
        ..Default::default()
    });
    assert_eq!(get("/-/ready").await.0, StatusCode::OK);
    let (code, body) = get("/health").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "failing");
    assert_eq!(body["components"]["probe_bypass"]["status"], "failing");
    assert!(
        body["components"]["probe_bypass"]["reason"]
            .as_str()
            .unwrap()
            .contains("timed out")
    );
    let r = round(true, Bypass::Physical);
    let v = Verdict::of(&r);
    health.update_round(r, v);
    let (code, body) = get("/health").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");
    health.update_log(LogHealthInput {
        file_present: false,
        ..Default::default()
    });
    let (code, body) = get("/health").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body["components"]["log"]["reason"],
        "the proxy log file is missing (is PIA's debug logging on?)"
    );
}
