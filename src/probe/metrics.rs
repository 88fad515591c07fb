//! Probe metrics: per path, the verdicts, and what discovery found.

use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{MetricFamily, MetricType};
use strum::{EnumCount, IntoEnumIterator};

use super::State as VerdictState;
use super::{PathKind, ProbeError, Round, Verdict};
use crate::metrics::{FamilyBuilder, FamilySpec};

#[derive(Default)]
struct State {
    last: Option<(Round, Verdict)>,
    rounds: u64,
    last_round_unix: f64,
    /// Failures by path and kind, since start.
    errors: [[u64; ProbeError::COUNT]; PathKind::COUNT],
}

/// Keeps the last round and the counters; renders them at scrape time.
#[derive(Clone, Default)]
pub struct ProbeMetrics {
    state: Arc<Mutex<State>>,
}

const FAMILIES: &[FamilySpec] = &[
    (
        "probe_success",
        "1 when the path's last probe got an egress address, else 0.",
        MetricType::GAUGE,
        &["path"],
    ),
    (
        "probe_duration_seconds",
        "Time the path's last probe took.",
        MetricType::GAUGE,
        &["path"],
    ),
    (
        "probe_errors_total",
        "Failed probes by path and kind.",
        MetricType::COUNTER,
        &["path", "kind"],
    ),
    (
        "probe_egress_info",
        "The public address the path egresses as (value 1).",
        MetricType::GAUGE,
        &["path", "ip"],
    ),
    (
        "probe_rounds_total",
        "Probe rounds done.",
        MetricType::COUNTER,
        &[],
    ),
    (
        "probe_last_round_timestamp_seconds",
        "When the last probe round ended.",
        MetricType::GAUGE,
        &[],
    ),
    (
        "verdict",
        "The last probe round's verdict: 1 for its state, 0 for the others.",
        MetricType::GAUGE,
        &["state"],
    ),
    (
        "bypass_working",
        "1 when the verdict is bypass_working (the verdict family, for dashboards).",
        MetricType::GAUGE,
        &[],
    ),
    (
        "vpn_leak",
        "1 when the verdict is vpn_leak.",
        MetricType::GAUGE,
        &[],
    ),
    (
        "tunnel_down",
        "1 when the verdict is tunnel_down.",
        MetricType::GAUGE,
        &[],
    ),
    (
        "interface_info",
        "Interfaces discovery found (value 1).",
        MetricType::GAUGE,
        &["role", "interface", "ipv4", "gateway"],
    ),
];

impl ProbeMetrics {
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<ProbeMetrics> {
        let m = ProbeMetrics::default();
        registry.register(Box::new(ProbeCollector {
            metrics: m.clone(),
            descs: FamilyBuilder::descs(FAMILIES),
        }))?;
        Ok(m)
    }

    pub fn observe(&self, round: &Round, verdict: &Verdict) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.rounds += 1;
        s.last_round_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for r in &round.results {
            if let Err(e) = r.outcome {
                s.errors[r.path as usize][e as usize] += 1;
            }
        }
        s.last = Some((round.clone(), verdict.clone()));
    }
}

struct ProbeCollector {
    metrics: ProbeMetrics,
    descs: Vec<Desc>,
}

fn family(name: &str) -> FamilyBuilder {
    FamilyBuilder::declared(FAMILIES, name)
}

impl Collector for ProbeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = self.metrics.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some((round, v)) = &s.last else {
            return vec![];
        };
        let (mut success, mut duration, mut errors, mut egress) = (
            family("probe_success"),
            family("probe_duration_seconds"),
            family("probe_errors_total"),
            family("probe_egress_info"),
        );
        for path in PathKind::iter() {
            let p = [("path", <&str>::from(path))];
            if let Some(r) = round.result(path) {
                success.gauge(&p, f64::from(u8::from(r.outcome.is_ok())));
                duration.gauge(&p, r.duration.as_secs_f64());
                if let Ok(ip) = r.outcome {
                    egress.gauge(
                        &[("path", <&str>::from(path)), ("ip", &ip.to_string())],
                        1.0,
                    );
                }
            }
            for (i, kind) in ProbeError::iter().enumerate() {
                errors.counter(
                    &[("path", <&str>::from(path)), ("kind", kind.into())],
                    s.errors[path as usize][i] as f64,
                );
            }
        }
        let gauge = |name: &str, value: bool| {
            let mut f = family(name);
            f.gauge(&[], f64::from(u8::from(value)));
            f.build()
        };
        let mut rounds = family("probe_rounds_total");
        rounds.counter(&[], s.rounds as f64);
        let mut last = family("probe_last_round_timestamp_seconds");
        last.gauge(&[], s.last_round_unix);
        let mut verdict = family("verdict");
        for state in VerdictState::iter() {
            verdict.gauge(&[("state", state.into())], f64::from(u8::from(v.is(state))));
        }
        let mut ifaces = family("interface_info");
        if let Some(p) = &round.interfaces.physical {
            let gw = p.gateway.map(|g| g.to_string()).unwrap_or_default();
            ifaces.gauge(
                &[
                    ("role", "physical"),
                    ("interface", &p.name),
                    ("ipv4", &p.ipv4.to_string()),
                    ("gateway", &gw),
                ],
                1.0,
            );
        }
        if let Some(t) = &round.interfaces.tunnel {
            ifaces.gauge(
                &[
                    ("role", "tunnel"),
                    ("interface", &t.name),
                    ("ipv4", &t.ipv4.to_string()),
                    ("gateway", ""),
                ],
                1.0,
            );
        }
        vec![
            success.build(),
            duration.build(),
            errors.build(),
            egress.build(),
            rounds.build(),
            last.build(),
            verdict.build(),
            gauge("bypass_working", v.is(VerdictState::BypassWorking)),
            gauge("vpn_leak", v.is(VerdictState::VpnLeak)),
            gauge("tunnel_down", v.is(VerdictState::TunnelDown)),
            ifaces.build(),
        ]
    }
}
