//! The metrics toolkit: the namespace, one way to declare a family ([`Family`]), one style of
//! collector ([`Scrape`]: every family is rendered at scrape time from its stage's state), and
//! the text encoding. Families are declared beside their collector, one file per collector:
//! [`log`] (the log side), `probe/metrics.rs`, `fallback/metrics.rs`, `health/metrics.rs`,
//! `presence/metrics.rs` (PIA's processes) and `presence/process.rs` (the agent's own `process_*`).
//! A lone counter is a [`CounterCell`] declared beside the stage that counts:
//! `checkpoint_save_errors_total` in `agent`, `http_unauthorized_total` in `http/web_config.rs`.
//!
//! No collector uses the crate's `*Vec` metrics: their label values are joined without a
//! separator before hashing (prometheus 0.14), so `["ab","c"]` and `["a","bc"]` would share a
//! series, and app ids come from an untrusted file. Rendering from the stages' own state also
//! keeps reads free of side effects and every fixed label set whole. The crate's registry and
//! text encoder do the rest.

pub mod family;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Registry, TextEncoder};

pub use family::{Counter, Family, Gauge, Histogram, Samples};

/// The prefix of every family of this exporter, written once (node_exporter's `namespace`).
pub const NAMESPACE: &str = "pia_split_tunnel";

/// A collector: the families it declares, and their samples now.
pub trait Scrape: Send + Sync + 'static {
    fn descs(&self) -> Vec<Desc>;
    fn scrape(&self) -> Vec<MetricFamily>;
}

/// Registers a [`Scrape`] collector.
pub fn register(registry: &Registry, collector: impl Scrape) -> prometheus::Result<()> {
    let descs = collector.descs();
    registry.register(Box::new(Collected { collector, descs }))
}

/// A collector handed down from a layer above (the daemon's reload status to the agent).
impl Scrape for Box<dyn Scrape> {
    fn descs(&self) -> Vec<Desc> {
        (**self).descs()
    }

    fn scrape(&self) -> Vec<MetricFamily> {
        (**self).scrape()
    }
}

struct Collected<S> {
    collector: S,
    descs: Vec<Desc>,
}

impl<S: Scrape> Collector for Collected<S> {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.collector.scrape()
    }
}

const BUILD_INFO: Family<Gauge, 3> = Family::new(
    "build_info",
    "Version of the agent (value is always 1).",
    ["version", "revision", "rustc_version"],
);

/// `build_info{version,revision,rustc_version} 1`.
pub struct BuildInfo;

impl Scrape for BuildInfo {
    fn descs(&self) -> Vec<Desc> {
        vec![BUILD_INFO.desc()]
    }

    fn scrape(&self) -> Vec<MetricFamily> {
        let mut f = BUILD_INFO.samples();
        use crate::build_info as b;
        f.set([b::VERSION, b::REVISION, b::RUSTC_VERSION], 1.0);
        vec![f.done()]
    }
}

/// A label-less counter that a stage increments and the registry renders at scrape time (a
/// `Scrape` over an atomic, so even a lone counter is declared as a [`Family`]).
#[derive(Clone)]
pub struct CounterCell {
    family: &'static Family<Counter, 0>,
    value: Arc<AtomicU64>,
}

impl CounterCell {
    /// A counter at 0, rendered once [`register`]ed.
    pub fn new(family: &'static Family<Counter, 0>) -> Self {
        CounterCell {
            family,
            value: Arc::default(),
        }
    }

    pub fn register(
        registry: &Registry,
        family: &'static Family<Counter, 0>,
    ) -> prometheus::Result<Self> {
        let c = CounterCell::new(family);
        register(registry, c.clone())?;
        Ok(c)
    }

    pub fn inc(&self) {
        self.value.fetch_add(1, Ordering::Relaxed);
    }
}

impl Scrape for CounterCell {
    fn descs(&self) -> Vec<Desc> {
        vec![self.family.desc()]
    }

    fn scrape(&self) -> Vec<MetricFamily> {
        vec![
            self.family
                .single(self.value.load(Ordering::Relaxed) as f64),
        ]
    }
}

/// The registry in Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .expect("text encoding of valid families");
    String::from_utf8(buf).expect("text format is UTF-8")
}
