//! Lab-lite end to end, in a namespace of the test's own: the controller in `auto` with the
//! policy-routing backend. The "probe" is the kernel's route lookup for the bypass source
//! (through the tunnel = the bypass times out; via the physical gateway = egresses as the
//! physical path), so no packet leaves. The full lab (real probes, NAT, `run`) is the
//! follow-up; this pins the controller–backend–health wiring it relies on.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::netns::Netns;
use common::*;
use pia_split_tunnel_exporter::fallback::controller::Controller;
use pia_split_tunnel_exporter::fallback::metrics::FallbackMetrics;
use pia_split_tunnel_exporter::fallback::policy::{Decision, Reason};
use pia_split_tunnel_exporter::fallback::{FallbackConfig, Mode};
use pia_split_tunnel_exporter::health::metrics::HealthCollector;
use pia_split_tunnel_exporter::health::{Health, HealthConfig, LogHealthInput, Status};
use pia_split_tunnel_exporter::os::{Interfaces, PhysicalIf, TunnelIf};
use pia_split_tunnel_exporter::probe::{PathKind, PathResult, ProbeError, Round, Verdict};
use pia_split_tunnel_exporter::sessions::SessionsConfig;
use prometheus::Registry;

/// One round, read from the namespace.
fn observe(ns: &Netns) -> Round {
    let tunnel = ns.has_tunnel();
    let via_physical = ns.route_from_source(PHYS_EGRESS).contains("dev phys0");
    let r = |path, outcome| PathResult {
        path,
        outcome,
        duration: Duration::from_millis(5),
    };
    let tunnel_out = if tunnel {
        Ok(TUNNEL_EGRESS)
    } else {
        Err(ProbeError::NoInterface)
    };
    Round {
        interfaces: Interfaces {
            physical: Some(PhysicalIf {
                name: "phys0".into(),
                index: 2,
                ipv4: PHYS_IP,
                gateway: Some(GATEWAY),
            }),
            tunnel: tunnel.then(|| TunnelIf {
                name: "utun0".into(),
                index: 3,
                ipv4: TUNNEL_IP,
            }),
            problems: Vec::new(),
        },
        results: vec![
            r(PathKind::Physical, Ok(PHYS_EGRESS)),
            r(PathKind::Tunnel, tunnel_out),
            r(
                PathKind::Bypass,
                if via_physical {
                    Ok(PHYS_EGRESS)
                } else {
                    Err(ProbeError::Timeout)
                },
            ),
            r(
                PathKind::Default,
                if tunnel { tunnel_out } else { Ok(PHYS_EGRESS) },
            ),
        ],
    }
}

/// Health over the controller's status, its metrics on `reg`.
fn registered_health(c: &Controller, reg: &Registry) -> Arc<Health> {
    let h = Arc::new(Health::new(&HealthConfig::default()).with_fallback(c.status_handle()));
    pia_split_tunnel_exporter::metrics::register(reg, HealthCollector(h.clone())).unwrap();
    h
}

#[allow(clippy::too_many_lines, reason = "one scenario; the rule is for src/")]
#[tokio::test]
async fn heals_the_bypass_then_reverts_when_the_tunnel_goes() {
    let ns = Arc::new(Netns::new());
    let rules_before = ns.rules();
    let cfg = FallbackConfig {
        mode: Mode::Auto,
        ..FallbackConfig::default()
    };
    let reg = Registry::new();
    let v = {
        let ns = ns.clone();
        move || {
            let r = observe(&ns);
            async move { r }
        }
    };
    let mut c = Controller::new(
        &cfg,
        Box::new(ns.backend()),
        Arc::new(v),
        FallbackMetrics::register(&reg).unwrap(),
    );
    let health = registered_health(&c, &reg);
    health.update_log(LogHealthInput {
        file_present: true,
        lines_read: 1,
        ..Default::default()
    });
    c.reconcile().unwrap();

    let t0 = Instant::now();
    let no_sessions = SessionsConfig::default().window().verdict(t0);
    let mut decisions = Vec::new();
    for i in 0..3 {
        let round = observe(&ns);
        decisions.push(
            c.on_round(
                t0 + Duration::from_secs(30 * i),
                &round,
                &Verdict::of(&round),
                no_sessions.clone(),
            )
            .await,
        );
        let after = observe(&ns);
        let v = Verdict::of(&after);
        health.update_round(after, v);
    }
    assert!(
        matches!(decisions[1], Decision::Apply(_, Reason::ProbeBroken)),
        "{decisions:?}"
    );
    assert_eq!(decisions[2], Decision::None(Reason::Active));
    assert_eq!(
        observe(&ns).egress(PathKind::Bypass),
        Some(PHYS_EGRESS),
        "bypass egresses as 198.51.100.47"
    );
    let report = health.report(Instant::now());
    assert_eq!(report.status, Status::Ok, "{report:#?}");

    // The VPN goes away (PIA removes utun).
    ns.ip("link del utun0");
    let mut last = None;
    for i in 3..6 {
        let round = observe(&ns);
        last = Some(
            c.on_round(
                t0 + Duration::from_secs(30 * i),
                &round,
                &Verdict::of(&round),
                no_sessions.clone(),
            )
            .await,
        );
        if matches!(last, Some(Decision::Revert(_))) {
            break;
        }
    }
    assert_eq!(last, Some(Decision::Revert(Reason::TunnelDown)));
    assert!(!c.status().active);
    assert_eq!(ns.rules(), rules_before, "no stray rule");
    assert!(
        ns.ip("-4 route show table all")
            .lines()
            .all(|l| !l.contains("table 100"))
    );
}
