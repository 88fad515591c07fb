//! Prometheus rendering of the log side.
//!
//! Per-app series come from a custom collector over the pipeline's own counters rather than
//! the crate's `*Vec` metrics: prometheus 0.14 joins label values without a separator before
//! hashing, so `["ab","c"]` and `["a","bc"]` would share one series, and app ids come from an
//! untrusted file. The collector renders at scrape time from the exact values, and the app
//! cap lives in the interner. The crate's registry and text encoder do the rest.

use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, Registry, TextEncoder};
use strum::IntoEnumIterator;

use crate::pipeline::Pipeline;
use crate::proxy_log::{ErrorKind, Level, LocalMillis};
use crate::sessions::{CloseOutcome, DURATION_BUCKETS_SECS, proto_label};

/// Metric name prefix.
pub const PREFIX: &str = "pia_split_tunnel_";

/// Builds one metric family, metric by metric.
pub struct FamilyBuilder {
    mf: MetricFamily,
}

impl FamilyBuilder {
    pub fn new(name: &str, help: &str, kind: MetricType) -> FamilyBuilder {
        let mut mf = MetricFamily::default();
        mf.set_name(format!("{PREFIX}{name}"));
        mf.set_help(help.to_owned());
        mf.set_field_type(kind);
        FamilyBuilder { mf }
    }

    fn metric(&mut self, labels: &[(&str, &str)]) -> &mut Metric {
        let pairs = labels
            .iter()
            .map(|(k, v)| {
                let mut p = LabelPair::default();
                p.set_name((*k).to_owned());
                p.set_value((*v).to_owned());
                p
            })
            .collect();
        let mut m = Metric::default();
        m.set_label(pairs);
        self.mf.mut_metric().push(m);
        self.mf.mut_metric().last_mut().expect("just pushed")
    }

    pub fn counter(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let mut c = Counter::default();
        c.set_value(value);
        self.metric(labels).set_counter(c);
        self
    }

    pub fn gauge(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let mut g = Gauge::default();
        g.set_value(value);
        self.metric(labels).set_gauge(g);
        self
    }

    /// `buckets`: (upper bound, non-cumulative count) without `+Inf`; `count` includes it.
    pub fn histogram(
        &mut self,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        count: u64,
        sum: f64,
    ) -> &mut Self {
        let mut h = Histogram::default();
        let mut cumulative = 0;
        h.set_bucket(
            buckets
                .iter()
                .map(|&(le, n)| {
                    cumulative += n;
                    let mut b = Bucket::default();
                    b.set_upper_bound(le);
                    b.set_cumulative_count(cumulative);
                    b
                })
                .collect(),
        );
        h.set_sample_count(count);
        h.set_sample_sum(sum);
        self.metric(labels).set_histogram(h);
        self
    }

    pub fn build(self) -> MetricFamily {
        self.mf
    }

    /// A family from a collector's declared list.
    pub fn declared(specs: &[FamilySpec], name: &str) -> FamilyBuilder {
        let (n, h, t, _) = specs.iter().find(|f| f.0 == name).expect("declared family");
        FamilyBuilder::new(n, h, *t)
    }

    /// The descriptors a collector declares for its families.
    pub fn descs(specs: &[FamilySpec]) -> Vec<Desc> {
        specs
            .iter()
            .map(|(n, h, _, l)| FamilyBuilder::desc(n, h, l))
            .collect()
    }

    /// The descriptor a collector must declare for this family.
    pub fn desc(name: &str, help: &str, labels: &[&str]) -> Desc {
        Desc::new(
            format!("{PREFIX}{name}"),
            help.to_owned(),
            labels.iter().map(|s| (*s).to_owned()).collect(),
            Default::default(),
        )
        .expect("valid metric descriptor")
    }
}

use MetricType::{COUNTER, GAUGE, HISTOGRAM};

/// (name without prefix, help, type, label names) of a family a collector renders.
pub type FamilySpec = (
    &'static str,
    &'static str,
    MetricType,
    &'static [&'static str],
);

/// Every family the log collector renders.
const FAMILIES: &[FamilySpec] = &[
    (
        "sessions_opened_total",
        "Proxied sessions opened (creation lines).",
        COUNTER,
        &["app", "proto"],
    ),
    (
        "sessions_closed_total",
        "Proxied sessions closed (destructor lines), by outcome.",
        COUNTER,
        &["app", "proto", "outcome"],
    ),
    (
        "zero_byte_closures_total",
        "Sessions closed with rxBytes and txBytes both `Zero KB`.",
        COUNTER,
        &["app", "proto"],
    ),
    (
        "flow_errors_total",
        "Error lines of proxied flows, by kind.",
        COUNTER,
        &["app", "proto", "kind"],
    ),
    (
        "rx_bytes_total",
        "Bytes received from remotes by closed sessions (as the proxy rounds them).",
        COUNTER,
        &["app", "proto"],
    ),
    (
        "tx_bytes_total",
        "Bytes sent to remotes by closed sessions (as the proxy rounds them).",
        COUNTER,
        &["app", "proto"],
    ),
    (
        "open_sessions",
        "Sessions opened and not yet closed.",
        GAUGE,
        &["app", "proto"],
    ),
    (
        "session_duration_seconds",
        "Time from a session's creation line to its destructor line.",
        HISTOGRAM,
        &["app", "proto"],
    ),
    (
        "last_event_timestamp_seconds",
        "Time of the newest log line (the proxy's local clock), as Unix time.",
        GAUGE,
        &[],
    ),
    (
        "proxy_restarts_total",
        "`Proxy started!` lines seen.",
        COUNTER,
        &[],
    ),
    (
        "proxy_connected",
        "The proxy's own `isConnected` (1 true, 0 false).",
        GAUGE,
        &[],
    ),
    (
        "proxy_bind_interface_info",
        "Interface the proxy binds bypass sockets to (`bindInterface`).",
        GAUGE,
        &["interface"],
    ),
    (
        "log_level_info",
        "Log level the proxy writes at, as far as the log shows.",
        GAUGE,
        &["level"],
    ),
    ("log_lines_total", "Log lines read.", COUNTER, &[]),
    (
        "log_unrecognized_lines_total",
        "Log lines in no known shape (a format change shows here).",
        COUNTER,
        &[],
    ),
    (
        "log_read_bytes_total",
        "Bytes of complete log lines read.",
        COUNTER,
        &[],
    ),
    (
        "log_rotations_total",
        "Rotations of the log file followed.",
        COUNTER,
        &[],
    ),
    (
        "log_truncations_total",
        "Truncations of the log file in place.",
        COUNTER,
        &[],
    ),
    (
        "log_lines_too_long_total",
        "Lines longer than log.max_line_bytes, skipped.",
        COUNTER,
        &[],
    ),
    (
        "log_files_refused_total",
        "Files refused at a log's name: not a regular file, a link or a foreign owner in a folder others can write, the other log again.",
        COUNTER,
        &[],
    ),
    (
        "log_gaps_total",
        "Stretches of a log lost unread: the file being read was rotated away twice while the agent was stopped.",
        COUNTER,
        &[],
    ),
    (
        "log_values_refused_total",
        "Values from the log kept out of labels and gauges, by field: app ids that are not a code-signing id (too long, other characters, `other`/`unknown`; counted as app=\"other\"), interface names, times in the future.",
        COUNTER,
        &["field"],
    ),
    (
        "log_file_present",
        "1 when the log file (log.path) exists and is readable, else 0.",
        GAUGE,
        &[],
    ),
    (
        "error_log_file_present",
        "1 when the error-level log (log.error_path) exists: PIA's debug logging is off.",
        GAUGE,
        &[],
    ),
    (
        "session_evictions_total",
        "Open sessions dropped without a destructor line, by reason.",
        COUNTER,
        &["reason"],
    ),
    (
        "apps_folded_total",
        "Lookups of an app beyond log.max_apps, counted as app=\"other\".",
        COUNTER,
        &[],
    ),
];

/// Renders a shared [`Pipeline`] at scrape time.
pub struct LogCollector {
    pipeline: Arc<Mutex<Pipeline>>,
    descs: Vec<Desc>,
}

impl LogCollector {
    pub fn new(pipeline: Arc<Mutex<Pipeline>>) -> LogCollector {
        let descs = FamilyBuilder::descs(FAMILIES);
        LogCollector { pipeline, descs }
    }
}

impl Collector for LogCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let p = self.pipeline.lock().unwrap_or_else(|e| e.into_inner());
        render(&p)
    }
}

fn family(name: &str) -> FamilyBuilder {
    FamilyBuilder::declared(FAMILIES, name)
}

/// A declared family with one sample, counter or gauge as declared.
fn single(name: &str, labels: &[(&str, &str)], value: f64) -> MetricFamily {
    let mut f = family(name);
    match f.mf.get_field_type() {
        COUNTER => f.counter(labels, value),
        _ => f.gauge(labels, value),
    };
    f.build()
}

/// All log-side families of `p`.
pub fn render(p: &Pipeline) -> Vec<MetricFamily> {
    let mut opened = family("sessions_opened_total");
    let mut closed = family("sessions_closed_total");
    let mut zero = family("zero_byte_closures_total");
    let mut errors = family("flow_errors_total");
    let mut rx = family("rx_bytes_total");
    let mut tx = family("tx_bytes_total");
    let mut open = family("open_sessions");
    let mut duration = family("session_duration_seconds");
    let apps = p.sessions().apps();
    for (app, proto, c) in p.sessions().counts().iter() {
        let l = [("app", apps.name(app)), ("proto", proto_label(proto))];
        opened.counter(&l, c.opened as f64);
        for o in CloseOutcome::iter() {
            closed.counter(&[l[0], l[1], ("outcome", o.into())], c.closed(o) as f64);
        }
        zero.counter(&l, c.closed(CloseOutcome::ZeroBytes) as f64);
        for k in ErrorKind::iter() {
            errors.counter(&[l[0], l[1], ("kind", k.into())], c.errors(k) as f64);
        }
        rx.counter(&l, c.rx_bytes as f64);
        tx.counter(&l, c.tx_bytes as f64);
        open.gauge(&l, c.open as f64);
        let buckets: Vec<(f64, u64)> = DURATION_BUCKETS_SECS
            .iter()
            .copied()
            .zip(c.duration_buckets.iter().copied())
            .collect();
        duration.histogram(
            &l,
            &buckets,
            c.duration_count,
            c.duration_sum_ms as f64 / 1000.0,
        );
    }
    let mut out: Vec<MetricFamily> = [opened, closed, zero, errors, rx, tx, open, duration]
        .into_iter()
        .map(FamilyBuilder::build)
        .collect();

    let proxy = &p.proxy();
    if let Some(t) = proxy.last_event.and_then(local_to_unix) {
        out.push(single("last_event_timestamp_seconds", &[], t));
    }
    let mut simple = |name: &str, v: f64| out.push(single(name, &[], v));
    simple("proxy_restarts_total", proxy.restarts as f64);
    let r = &p.read();
    simple("log_lines_total", r.lines as f64);
    simple("log_unrecognized_lines_total", r.unrecognized as f64);
    simple("log_read_bytes_total", r.bytes as f64);
    simple("log_rotations_total", r.rotations as f64);
    simple("log_truncations_total", r.truncations as f64);
    simple("log_lines_too_long_total", r.lines_too_long as f64);
    simple("log_files_refused_total", r.files_refused as f64);
    simple("log_gaps_total", r.gaps as f64);
    simple("apps_folded_total", apps.folded() as f64);
    out.push(single(
        "log_file_present",
        &[],
        f64::from(u8::from(r.file_present)),
    ));
    out.push(single(
        "error_log_file_present",
        &[],
        f64::from(u8::from(r.error_file_present)),
    ));
    if let Some(c) = proxy.connected {
        out.push(single("proxy_connected", &[], f64::from(u8::from(c))));
    }
    if let Some(i) = &proxy.bind_interface {
        out.push(single(
            "proxy_bind_interface_info",
            &[("interface", i)],
            1.0,
        ));
    }
    if let Some(level) = proxy.level() {
        let mut f = family("log_level_info");
        for l in Level::iter() {
            f.gauge(&[("level", l.into())], f64::from(u8::from(l == level)));
        }
        out.push(f.build());
    }
    let mut refused = family("log_values_refused_total");
    refused
        .counter(&[("field", "app")], apps.invalid() as f64)
        .counter(&[("field", "interface")], r.invalid_interfaces as f64)
        .counter(&[("field", "timestamp")], r.future_timestamps as f64);
    out.push(refused.build());
    let e = p.sessions().evictions();
    let mut ev = family("session_evictions_total");
    ev.counter(&[("reason", "table_full")], e.table_full as f64)
        .counter(&[("reason", "proxy_restart")], e.proxy_restart as f64)
        .counter(&[("reason", "id_reused")], e.id_reused as f64);
    out.push(ev.build());
    out
}

/// The proxy logs local wall-clock time without a zone; this machine's zone interprets it.
fn local_to_unix(t: LocalMillis) -> Option<f64> {
    use chrono::TimeZone;
    let naive = chrono::DateTime::from_timestamp_millis(t.0)?.naive_utc();
    let local = chrono::Local.from_local_datetime(&naive).earliest()?;
    Some(local.timestamp_millis() as f64 / 1000.0)
}

/// `build_info{version,revision,rustc_version} 1`.
pub fn register_build_info(registry: &Registry) -> prometheus::Result<()> {
    let g = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            format!("{PREFIX}build_info"),
            "Version of the agent (value is always 1).",
        ),
        &["version", "revision", "rustc_version"],
    )?;
    use crate::build_info as b;
    g.with_label_values(&[b::VERSION, b::REVISION, b::RUSTC_VERSION])
        .set(1);
    registry.register(Box::new(g))
}

/// The registry in Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .expect("text encoding of valid families");
    String::from_utf8(buf).expect("text format is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Limits;

    #[test]
    fn colliding_app_ids_stay_apart_and_render_whole() {
        let mut p = Pipeline::new(Limits::default());
        for (id, app) in [(1, "ab.c"), (2, "a.bc")] {
            let line = format!(
                "[2026-02-16 11:49:31:4330] [ChannelCreatorTCP.swift:50] debug: id: {id} {app} Creating, binding and connecting a new TCP socket - endpoint: 203.0.113.5:443 with bindIp: 10.0.15.15\r\n"
            );
            p.feed(line.as_bytes());
        }
        let shared = Arc::new(Mutex::new(p));
        let registry = Registry::new();
        registry
            .register(Box::new(LogCollector::new(shared)))
            .unwrap();
        let text = encode(&registry);
        assert!(
            text.contains("pia_split_tunnel_sessions_opened_total{app=\"ab.c\",proto=\"tcp\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pia_split_tunnel_sessions_opened_total{app=\"a.bc\",proto=\"tcp\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("pia_split_tunnel_session_duration_seconds_bucket{app=\"a.bc\",proto=\"tcp\",le=\"+Inf\"} 0\n"), "{text}");
    }
}
