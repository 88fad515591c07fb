//! `health_status{component,status}` and `ready`, rendered at scrape time from the same
//! report `GET /health` serves: neither side changes what the other shows.

use std::sync::Arc;
use std::time::Instant;

use prometheus::core::Desc;
use prometheus::proto::MetricFamily;
use strum::IntoEnumIterator;

use super::{Health, Status};
use crate::metrics::{Family, Gauge, Scrape};

const STATUS: Family<Gauge, 2> = Family::new(
    "health_status",
    "1 for each component's current status (ok, degraded, failing), 0 for the others.",
    ["component", "status"],
);
const READY: Family<Gauge, 0> = Family::new(
    "ready",
    "1 once the log was read and, when probing, the first probe round done.",
    [],
);

pub struct HealthCollector(pub Arc<Health>);

impl Scrape for HealthCollector {
    fn descs(&self) -> Vec<Desc> {
        vec![STATUS.desc(), READY.desc()]
    }

    fn scrape(&self) -> Vec<MetricFamily> {
        let report = self.0.report(Instant::now());
        let mut status = STATUS.samples();
        for (name, comp) in &report.components {
            for s in Status::iter() {
                status.set([name, s.into()], f64::from(u8::from(comp.status == s)));
            }
        }
        let ready = self.0.readiness().ready;
        vec![status.done(), READY.single(f64::from(u8::from(ready)))]
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::health::{HealthConfig, LogHealthInput};
    use crate::metrics::{encode, register};
    use crate::probe::ProbeError;
    use crate::probe::testing::{VPN_EXIT_IP, lab_round};

    #[tokio::test]
    async fn reading_health_changes_nothing_and_metrics_need_no_read() {
        let health = Arc::new(Health::new(&HealthConfig::default()));
        let registry = prometheus::Registry::new();
        register(&registry, HealthCollector(health.clone())).unwrap();
        let before = encode(&registry);
        assert!(before.contains("pia_split_tunnel_ready 0\n"), "{before}");
        // Updates show at the next scrape, with no /health read in between.
        let round = lab_round(true, Err(ProbeError::Timeout), VPN_EXIT_IP);
        let verdict = crate::probe::Verdict::of(&round);
        health.update_round(round, verdict);
        health.update_log(LogHealthInput {
            file_present: true,
            lines_read: 3,
            ..Default::default()
        });
        let updated = encode(&registry);
        assert!(updated.contains("pia_split_tunnel_ready 1\n"), "{updated}");
        assert!(
            updated.contains(
                "pia_split_tunnel_health_status{component=\"probe_bypass\",status=\"failing\"} 1\n"
            ),
            "{updated}"
        );
        // Reading /health and /-/ready leaves /metrics as it was.
        let app = super::super::routes::router(health.clone());
        for path in ["/health", "/-/ready", "/health"] {
            let r = app
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert!(r.status().is_success() || r.status().as_u16() == 503);
        }
        assert_eq!(encode(&registry), updated);
    }
}
