//! Log-only mode (`probe.enabled = false`, as the test harness runs the agent): readiness needs
//! the log alone, the probe components are absent from `/health` and `/metrics` (not
//! degraded), and the fallback says it never applies without probes.

mod common;

use common::agent::Agent;
use serde_json::Value;
use std::time::{Duration, Instant};

#[test]
fn ready_on_the_log_alone_without_probe_components() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("transparent_proxy.log");
    std::fs::write(&log, b"").unwrap();
    let agent = Agent::start(&log, &dir.path().join("cp.json"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let r: Value = serde_json::from_str(&agent.get("/-/ready")).unwrap();
        if r["ready"] == true {
            break r;
        }
        assert!(Instant::now() < deadline, "never ready without probes: {r}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(ready["probe_round"], Value::Null, "{ready}");
    assert_eq!(ready["log_read"], true, "{ready}");

    let health = agent.health();
    let components: Vec<&str> = health["components"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert!(
        components.iter().all(|c| !c.starts_with("probe_")),
        "{health:#}"
    );
    assert!(components.contains(&"log") && components.contains(&"fallback"));
    assert!(
        health["components"]["fallback"]["reason"]
            .as_str()
            .unwrap()
            .contains("probes are off (probe.enabled = false)"),
        "{health:#}"
    );
    assert_ne!(health["status"], "failing", "{health:#}");

    let metrics = agent.get("/metrics");
    assert!(
        metrics.lines().any(|l| l == "pia_split_tunnel_ready 1"),
        "{metrics}"
    );
    for absent in [
        "pia_split_tunnel_health_status{component=\"probe_",
        "pia_split_tunnel_verdict{",
    ] {
        assert!(
            !metrics.lines().any(|l| l.starts_with(absent)),
            "{absent} in log-only mode"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l == "pia_split_tunnel_sessions_verdict{state=\"too_few\"} 1"),
        "the sessions verdict is the agent's judgement even without probes"
    );
}
