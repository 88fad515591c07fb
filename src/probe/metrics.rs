//! Probe metrics: per path, the verdicts, and what discovery found.
//!
//! Addresses (the egress IP of each path, the interfaces' IPv4 and gateway) become labels only
//! with `probe.export_addresses`: by default the home and VPN addresses stay out of the TSDB.

use std::sync::{Arc, Mutex};

use prometheus::core::Desc;
use prometheus::proto::MetricFamily;
use strum::{EnumCount, IntoEnumIterator};

use super::ProbeState;
use super::{PathKind, ProbeError, Round, Verdict};
use crate::metrics::{Counter, Family, Gauge, Scrape};

const SUCCESS: Family<Gauge, 1> = Family::new(
    "probe_success",
    "1 when the path's last probe got an egress address, else 0.",
    ["path"],
);
const DURATION: Family<Gauge, 1> = Family::new(
    "probe_duration_seconds",
    "Time the path's last probe took.",
    ["path"],
);
const ERRORS: Family<Counter, 2> = Family::new(
    "probe_errors_total",
    "Failed probes by path and kind.",
    ["path", "kind"],
);
const EGRESS: Family<Gauge, 2> = Family::new(
    "probe_egress_info",
    "The public address the path egresses as (value 1); only with probe.export_addresses.",
    ["path", "ip"],
);
const ROUNDS: Family<Counter, 0> = Family::new("probe_rounds_total", "Probe rounds done.", []);
const LAST_ROUND: Family<Gauge, 0> = Family::new(
    "probe_last_round_timestamp_seconds",
    "When the last probe round ended.",
    [],
);
const VERDICT: Family<Gauge, 1> = Family::new(
    "verdict",
    "The last probe round's verdict: 1 for its state, 0 for the others.",
    ["state"],
);
const BYPASS_WORKING: Family<Gauge, 0> = Family::new(
    "bypass_working",
    "1 when the verdict is bypass_working, else 0 (also for VPN off or no network: broken is verdict{state=\"bypass_broken\"}).",
    [],
);
const VPN_LEAK: Family<Gauge, 0> = Family::new("vpn_leak", "1 when the verdict is vpn_leak.", []);
const TUNNEL_DOWN: Family<Gauge, 0> =
    Family::new("tunnel_down", "1 when the verdict is tunnel_down.", []);
const INTERFACES: Family<Gauge, 2> = Family::new(
    "interface_info",
    "Interfaces discovery found (value 1); their addresses with probe.export_addresses.",
    ["role", "interface"],
);
/// [`INTERFACES`] with the addresses, under the same name.
const INTERFACES_ADDRESSED: Family<Gauge, 4> = Family::new(
    "interface_info",
    "Interfaces discovery found (value 1); their addresses with probe.export_addresses.",
    ["role", "interface", "ipv4", "gateway"],
);

#[derive(Default)]
struct ProbeFigures {
    last: Option<(Round, Verdict)>,
    rounds: u64,
    last_round_unix: f64,
    /// Failures by path and kind, since start.
    errors: [[u64; ProbeError::COUNT]; PathKind::COUNT],
}

/// Keeps the last round and the counters; renders them at scrape time.
#[derive(Clone, Default)]
pub struct ProbeMetrics {
    state: Arc<Mutex<ProbeFigures>>,
}

impl ProbeMetrics {
    /// `export_addresses`: `probe.export_addresses`.
    pub fn register(
        registry: &prometheus::Registry,
        export_addresses: bool,
    ) -> prometheus::Result<ProbeMetrics> {
        let m = ProbeMetrics::default();
        crate::metrics::register(
            registry,
            ProbeCollector {
                metrics: m.clone(),
                export_addresses,
            },
        )?;
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
    export_addresses: bool,
}

impl Scrape for ProbeCollector {
    fn descs(&self) -> Vec<Desc> {
        let mut d = vec![
            SUCCESS.desc(),
            DURATION.desc(),
            ERRORS.desc(),
            ROUNDS.desc(),
            LAST_ROUND.desc(),
            VERDICT.desc(),
            BYPASS_WORKING.desc(),
            VPN_LEAK.desc(),
            TUNNEL_DOWN.desc(),
        ];
        if self.export_addresses {
            d.extend([EGRESS.desc(), INTERFACES_ADDRESSED.desc()]);
        } else {
            d.push(INTERFACES.desc());
        }
        d
    }

    fn scrape(&self) -> Vec<MetricFamily> {
        let s = self.metrics.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some((round, v)) = &s.last else {
            return vec![];
        };
        let (mut success, mut duration, mut errors, mut egress) = (
            SUCCESS.samples(),
            DURATION.samples(),
            ERRORS.samples(),
            EGRESS.samples(),
        );
        for path in PathKind::iter() {
            let p: &str = path.into();
            if let Some(r) = round.result(path) {
                success.set([p], f64::from(u8::from(r.outcome.is_ok())));
                duration.set([p], r.duration.as_secs_f64());
                if let Ok(ip) = r.outcome {
                    egress.set([p, &ip.to_string()], 1.0);
                }
            }
            for kind in ProbeError::iter() {
                errors.add(
                    [p, kind.into()],
                    s.errors[path as usize][kind as usize] as f64,
                );
            }
        }
        let gauge = |f: Family<Gauge, 0>, value: bool| f.single(f64::from(u8::from(value)));
        let mut out = vec![
            success.done(),
            duration.done(),
            errors.done(),
            ROUNDS.single(s.rounds as f64),
            LAST_ROUND.single(s.last_round_unix),
            VERDICT.stateset(ProbeState::iter(), &v.state),
            gauge(BYPASS_WORKING, v.is(ProbeState::BypassWorking)),
            gauge(VPN_LEAK, v.is(ProbeState::VpnLeak)),
            gauge(TUNNEL_DOWN, v.is(ProbeState::TunnelDown)),
        ];
        let ifs = &round.interfaces;
        // The `role` label: the interface's path, spelled as the `path` label.
        let (physical, tunnel) = (PathKind::Physical.into(), PathKind::Tunnel.into());
        if self.export_addresses {
            let mut f = INTERFACES_ADDRESSED.samples();
            if let Some(p) = &ifs.physical {
                let gw = p.gateway.map(|g| g.to_string()).unwrap_or_default();
                f.set([physical, &p.name, &p.ipv4.to_string(), &gw], 1.0);
            }
            if let Some(t) = &ifs.tunnel {
                f.set([tunnel, &t.name, &t.ipv4.to_string(), ""], 1.0);
            }
            out.extend([egress.done(), f.done()]);
        } else {
            let mut f = INTERFACES.samples();
            if let Some(p) = &ifs.physical {
                f.set([physical, &p.name], 1.0);
            }
            if let Some(t) = &ifs.tunnel {
                f.set([tunnel, &t.name], 1.0);
            }
            out.push(f.done());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::testing::{HOME_IP, VPN_EXIT_IP, lab_round};

    fn scrape(export_addresses: bool) -> String {
        let registry = prometheus::Registry::new();
        let m = ProbeMetrics::register(&registry, export_addresses).unwrap();
        let round = lab_round(true, Ok(VPN_EXIT_IP), VPN_EXIT_IP);
        m.observe(&round, &Verdict::of(&round));
        crate::metrics::encode(&registry)
    }

    #[test]
    fn addresses_are_labels_only_when_asked() {
        let text = scrape(false);
        assert!(!text.contains(&HOME_IP.to_string()), "{text}");
        assert!(!text.contains(&VPN_EXIT_IP.to_string()), "{text}");
        assert!(!text.contains("10.0.15"), "{text}");
        assert!(!text.contains("probe_egress_info"), "{text}");
        assert!(
            text.contains(
                "pia_split_tunnel_interface_info{role=\"physical\",interface=\"en0\"} 1\n"
            ),
            "{text}"
        );
        let text = scrape(true);
        assert!(
            text.contains(&format!(
                "pia_split_tunnel_probe_egress_info{{path=\"physical\",ip=\"{HOME_IP}\"}} 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains("pia_split_tunnel_interface_info{role=\"physical\",interface=\"en0\",ipv4=\"10.0.15.15\""),
            "{text}"
        );
    }
}
