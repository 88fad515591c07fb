//! Log-only mode (`probe.enabled = false`, as the test harness runs the agent): readiness needs
//! the log alone, the probe components are absent from `/health` and `/metrics` (not
//! degraded), and the fallback says it never applies without probes.

use crate::common;

use common::agent::Agent;
use common::sessions_of;
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

/// PIA's own report (#93) as the agent reads it live, probes off: forty sessions that got no
/// reply (`ioOnClosedChannel`, then `rxBytes=0 MB`) make the one sessions verdict "broken" on
/// `/metrics`, `/health` and `/`, though not one closed with zero bytes.
#[test]
fn pias_report_reads_broken_without_probes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("transparent_proxy.log");
    std::fs::write(&log, b"").unwrap();
    let agent = Agent::start(&log, &dir.path().join("cp.json"));
    agent.wait_lines(0);
    let text = sessions_of("pia-desktop-93.txt", 40);
    std::fs::write(&log, &text).unwrap();
    agent.wait_lines(text.lines().count() as u64);
    let m = agent.wait_metric(
        "pia_split_tunnel_sessions_verdict",
        &[("state", "broken")],
        1.0,
    );
    let closed = |outcome| {
        m.value(
            "pia_split_tunnel_sessions_closed_total",
            &[
                ("app", "com.plexapp.plexmediaserver"),
                ("proto", "tcp"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!((closed("zero_bytes"), closed("transferred")), (0.0, 40.0));
    let reason = agent.wait_health("sessions", "degraded");
    assert!(
        reason.starts_with("broken: 100% of 40 sessions got no reply in the last"),
        "{reason}"
    );
    let page = agent.get("/");
    assert!(page.contains("data-tone=\"broken\""), "{page}");
}
