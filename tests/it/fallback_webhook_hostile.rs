//! The Alertmanager webhook, the manual apply and the recheck as a hostile or careless sender
//! would use them: forged alerts while the bypass works, alerts for other instances, alerts to
//! an agent that does not know its own instance, malformed bodies, probes off, a recheck that
//! claims the bypass works. Nothing is applied (or retired) unless this agent's own fresh probe
//! round shows it; every refusal is answered and counted.

use crate::common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use pia_split_tunnel_exporter::fallback::controller::Controller;
use pia_split_tunnel_exporter::fallback::metrics::FallbackMetrics;
use pia_split_tunnel_exporter::fallback::routes::router;
use pia_split_tunnel_exporter::fallback::{FallbackConfig, Mode, build_backend};
use pia_split_tunnel_exporter::probe::RoundSource;
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "s3cret-token-0123456789";
const ME: &str = "203.0.113.66:9847";
const OTHER: &str = "203.0.113.70:9847";
const ALERT: &str = "PiaSplitTunnelBypassBroken";

struct Rig {
    s: StandIn,
    app: Router,
    reg: Registry,
    /// How many probe rounds the controller ran.
    rounds: Arc<Mutex<u32>>,
}

enum Probes {
    /// The probes see the stand-in: broken until the fallback is enabled.
    Real,
    /// The probes always see the bypass working.
    Healthy,
    /// `probe.enabled = false`.
    Off,
}

fn rig(instance: Option<&str>, probes: Probes) -> Rig {
    let s = StandIn::new();
    let token = s.dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = FallbackConfig {
        mode: Mode::Auto,
        token_file: Some(token),
        instance: instance.map(str::to_owned),
        ..s.config()
    };
    let reg = Registry::new();
    let m = FallbackMetrics::register(&reg).unwrap();
    let rounds = Arc::new(Mutex::new(0));
    let counted = |inner: Arc<dyn RoundSource>| -> Arc<dyn RoundSource> {
        let rounds = rounds.clone();
        Arc::new(move || {
            *rounds.lock().unwrap() += 1;
            let inner = inner.clone();
            async move { inner.round().await }
        })
    };
    let c = match probes {
        Probes::Real => Controller::new(&cfg, build_backend(&cfg), counted(s.verifier()), m),
        Probes::Healthy => {
            let v: Arc<dyn RoundSource> = Arc::new(|| async { round(true, Bypass::Physical) });
            Controller::new(&cfg, build_backend(&cfg), counted(v), m)
        }
        Probes::Off => Controller::without_probes(&cfg, build_backend(&cfg), m),
    };
    let app = router(Arc::new(tokio::sync::Mutex::new(c)), &cfg).unwrap();
    Rig {
        s,
        app,
        reg,
        rounds,
    }
}

impl Rig {
    async fn post(&self, path: &str, body: impl Into<Body>) -> (StatusCode, String) {
        let req = Request::post(path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(body.into())
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let code = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (code, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn alert(&self, alerts: &[(&str, Option<&str>)]) -> (StatusCode, Value) {
        let (code, body) = self.post("/alertmanager", hook(alerts).to_string()).await;
        (
            code,
            serde_json::from_str(&body).unwrap_or_else(|_| json!({ "text": body })),
        )
    }

    /// Whether anything was applied (a pf rule set loaded or a reference taken).
    fn applied(&self) -> bool {
        !self.s.held_tokens().is_empty()
            || self
                .s
                .call_lines()
                .iter()
                .any(|l| l.contains("-f") || l.contains("-E"))
    }

    fn counted(&self, result: &str) -> f64 {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.reg.gather(), &mut buf)
            .unwrap();
        let text = String::from_utf8(buf).unwrap();
        let key = format!("pia_split_tunnel_fallback_alert_requests_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .map_or(0.0, |v| v.parse().unwrap())
    }

    fn rounds(&self) -> u32 {
        *self.rounds.lock().unwrap()
    }
}

/// An Alertmanager webhook (version 4) with firing alerts of `(alertname, instance)`.
fn hook(alerts: &[(&str, Option<&str>)]) -> Value {
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|(name, instance)| {
            let mut labels = json!({ "alertname": name, "job": "pia-split-tunnel", "site": "lab" });
            if let Some(i) = instance {
                labels["instance"] = json!(i);
            }
            json!({
                "status": "firing", "labels": labels, "annotations": {},
                "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "", "fingerprint": "f"
            })
        })
        .collect();
    json!({
        "version": "4", "groupKey": "{}:{}", "status": "firing", "receiver": "fleet",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093", "truncatedAlerts": 0, "alerts": alerts
    })
}

#[tokio::test]
async fn forged_alert_while_the_bypass_works_changes_nothing() {
    let r = rig(Some(ME), Probes::Healthy);
    let (code, v) = r.alert(&[(ALERT, Some(ME))]).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["result"], "not_acted", "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("own probe round does not show the bypass broken (bypass working"),
        "{v}"
    );
    assert_eq!(r.rounds(), 1, "the agent probed before answering");
    assert!(!r.applied(), "{:?}", r.s.call_lines());
    // The manual API is held to the same evidence.
    let (code, body) = r.post("/fallback/apply", "").await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert!(!r.applied());
    assert_eq!(r.counted("not_acted"), 1.0);
}

#[tokio::test]
async fn alerts_for_other_instances_are_not_for_this_one() {
    let r = rig(Some(ME), Probes::Real);
    let (code, v) = r.alert(&[(ALERT, Some(OTHER))]).await;
    assert_eq!(
        (code, v["result"].as_str()),
        (StatusCode::OK, Some("not_for_this_instance"))
    );
    // No instance label at all is not this instance either.
    let (_, v) = r.alert(&[(ALERT, None)]).await;
    assert_eq!(v["result"], "not_for_this_instance");
    assert_eq!(r.rounds(), 0, "not even probed");
    assert!(!r.applied());
    assert_eq!(r.counted("not_for_this_instance"), 2.0);
    // A payload for both: this agent acts for its own alert, after probing.
    let (code, v) = r.alert(&[(ALERT, Some(OTHER)), (ALERT, Some(ME))]).await;
    assert_eq!(
        (code, v["result"].as_str()),
        (StatusCode::OK, Some("applied")),
        "{v}"
    );
    assert!(r.applied());
    assert_eq!(r.rounds(), 2, "one round before, one to verify");
}

#[tokio::test]
async fn without_the_instance_key_no_alert_is_acted_on() {
    // A fleet's Alertmanager groups by instance: every payload names one Mac, which may be
    // another one. Without `fallback.instance` this agent cannot tell, so it does nothing,
    // even while its own bypass is broken (its own policy and `fallback apply` still can).
    let r = rig(None, Probes::Real);
    for alerts in [
        vec![(ALERT, Some(OTHER))],
        vec![(ALERT, Some(ME))],
        vec![(ALERT, Some(OTHER)), (ALERT, Some(ME))],
        vec![(ALERT, None)],
    ] {
        let (code, v) = r.alert(&alerts).await;
        assert_eq!(
            (code, v["result"].as_str()),
            (StatusCode::OK, Some("not_acted"))
        );
        assert!(
            v["reason"]
                .as_str()
                .unwrap()
                .contains("fallback.instance is unset"),
            "{v}"
        );
    }
    assert_eq!(r.rounds(), 0, "not even probed");
    assert!(!r.applied(), "{:?}", r.s.call_lines());
    assert_eq!(r.counted("not_acted"), 4.0);
}

#[tokio::test]
async fn malformed_bodies_are_refused_and_counted() {
    let r = rig(Some(ME), Probes::Real);
    let bodies = [
        "".to_owned(),
        "not json".to_owned(),
        "{}".to_owned(),
        r#"{"alerts": {"status": "firing"}}"#.to_owned(),
        r#"{"alerts": [{"status": 1, "labels": {}}]}"#.to_owned(),
        r#"{"alerts": [{"status": "firing", "labels": {"alertname": 5}}]}"#.to_owned(),
        r#"{"alerts": [{"status": "firing", "labels": {"instance": ["a"]}}]}"#.to_owned(),
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
        "\u{0}\u{1}\u{2}".to_owned(),
    ];
    for b in &bodies {
        let (code, text) = r.post("/alertmanager", b.clone()).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{b:.40}: {text}");
        assert!(
            text.contains("not an Alertmanager webhook payload"),
            "{text}"
        );
    }
    assert_eq!(r.counted("malformed"), bodies.len() as f64);
    let (code, _) = r.post("/alertmanager", "x".repeat(100_000)).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    // Firing alerts of other names, and resolved ones, ask for nothing.
    let mut resolved = hook(&[(ALERT, Some(ME))]);
    resolved["alerts"][0]["status"] = json!("resolved");
    let (_, text) = r.post("/alertmanager", resolved.to_string()).await;
    assert!(text.contains("ignored"), "{text}");
    let (_, v) = r.alert(&[("PiaSplitTunnelVpnLeak", Some(ME))]).await;
    assert_eq!(v["result"], "ignored");
    assert_eq!(r.rounds(), 0);
    assert!(!r.applied());
}

#[tokio::test]
async fn probes_off_never_apply() {
    let r = rig(Some(ME), Probes::Off);
    let (code, v) = r.alert(&[(ALERT, Some(ME))]).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["result"], "not_acted");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("probe.enabled = false"),
        "{v}"
    );
    let (code, _) = r.post("/fallback/apply", "").await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(!r.applied());
    // Undoing needs no evidence.
    let (code, body) = r.post("/fallback/revert", "").await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

/// A recheck only asks: whatever its body says, the rules are retired only when this agent's
/// own round without them shows the bypass working. Here it does not: they are back.
#[tokio::test]
async fn a_recheck_request_is_not_evidence() {
    let r = rig(Some(ME), Probes::Real);
    let (code, body) = r.post("/fallback/recheck", "").await;
    assert_eq!(code, StatusCode::CONFLICT, "nothing in place yet: {body}");
    let (code, body) = r.post("/fallback/apply", "").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let rounds = r.rounds();
    let claims = json!({"result": "retired", "bypass": "working", "versions": {"pia": "9.9.9"}});
    let (code, body) = r.post("/fallback/recheck", claims.to_string()).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"], "still_needed", "{v}");
    assert_eq!(v["recheck"]["cause"], "manual", "{v}");
    assert_eq!(
        r.rounds(),
        rounds + 1,
        "one round of its own, without the rules"
    );
    assert_eq!(r.s.held_tokens().len(), 1, "the rules are back");
}
