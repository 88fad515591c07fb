//! The log side's families, rendered at scrape time from the shared [`LogState`].
//!
//! Per app and protocol: sessions opened, closed by outcome (`unknown` once it happens), open
//! now. Per app: bytes, and
//! flow errors by kind once the app has one. Per protocol only: the duration histogram (16
//! series per app and protocol would be most of the output). This keeps a scrape at 64 apps
//! under 100 KB; `benches/metrics_render.rs` measures it.

use std::sync::{Arc, Mutex};

use macro_rules_attribute::apply;
use prometheus::core::Desc;
use prometheus::proto::MetricFamily;
use strum::{EnumCount, IntoEnumIterator};

use super::LogState;
use crate::labels::label_set;
use crate::metrics::{Counter, Family, Gauge, Histogram, Scrape};
use crate::proxy_log::{ErrorKind, Level, LocalMillis, Proto, RefusedReason};
use crate::sessions::{
    AppCounts, CloseOutcome, DURATION_BUCKETS_SECS, EvictionReason, Reply, proto_label,
};

const SESSIONS_OPENED: Family<Counter, 2> = Family::new(
    "sessions_opened_total",
    "Proxied sessions opened (creation lines).",
    ["app", "proto"],
);
const SESSIONS_CLOSED: Family<Counter, 3> = Family::new(
    "sessions_closed_total",
    "Proxied sessions closed (destructor lines), by outcome (zero_bytes: rxBytes and txBytes both `Zero KB`).",
    ["app", "proto", "outcome"],
);
const SESSIONS_REPLIES: Family<Counter, 3> = Family::new(
    "sessions_replies_total",
    "Proxied sessions closed, by what they received (no_reply: rxBytes `Zero KB`, or `0 MB` \
     after a failure of their own channel); the sessions verdict counts these.",
    ["app", "proto", "reply"],
);
const OPEN_SESSIONS: Family<Gauge, 2> = Family::new(
    "open_sessions",
    "Sessions opened and not yet closed.",
    ["app", "proto"],
);
const FLOW_ERRORS: Family<Counter, 2> = Family::new(
    "flow_errors_total",
    "Error lines of proxied flows, by kind; a kind appears with its first error.",
    ["app", "kind"],
);
const RX_BYTES: Family<Counter, 1> = Family::new(
    "rx_bytes_total",
    "Bytes received from remotes by closed sessions (as the proxy rounds them).",
    ["app"],
);
const TX_BYTES: Family<Counter, 1> = Family::new(
    "tx_bytes_total",
    "Bytes sent to remotes by closed sessions (as the proxy rounds them).",
    ["app"],
);
const SESSION_DURATION: Family<Histogram, 1> = Family::new(
    "session_duration_seconds",
    "Time from a session's creation line to its destructor line, all apps.",
    ["proto"],
);
const LAST_EVENT: Family<Gauge, 0> = Family::new(
    "last_event_timestamp_seconds",
    "Time of the newest log line (the proxy's local clock), as Unix time.",
    [],
);
const PROXY_RESTARTS: Family<Counter, 0> = Family::new(
    "proxy_restarts_total",
    "Proxy start lines seen (`Proxy started!`; on the newer proxy: `Transparent Proxy started!`, `DNS Proxy started!`).",
    [],
);
const PROXY_STOPS: Family<Counter, 0> = Family::new(
    "proxy_stops_total",
    "Proxy stop lines seen (`Proxy stopped!`; on the newer proxy: `Transparent Proxy stopped!`, `DNS Proxy stopped!`).",
    [],
);
const FLOWS_REFUSED: Family<Counter, 2> = Family::new(
    "flows_refused_total",
    "Flows of an app the proxy matched and opened no session for, by reason (no_bind_ip: the bind interface has no IPv4 address, the flow is left to the VPN; vpn_only_blocked; open_failed); a reason appears with its first flow.",
    ["app", "reason"],
);
const PROXY_DNS_FOLLOW_APP_RULES: Family<Gauge, 0> = Family::new(
    "proxy_dns_follow_app_rules",
    "The proxy's own `dnsFollowAppRules` (newer proxy; 1 true, 0 false).",
    [],
);
const PROXY_CONNECTED: Family<Gauge, 0> = Family::new(
    "proxy_connected",
    "The proxy's own `isConnected` (1 true, 0 false).",
    [],
);
const PROXY_BIND_INTERFACE: Family<Gauge, 1> = Family::new(
    "proxy_bind_interface_info",
    "Interface the proxy binds bypass sockets to (`bindInterface`).",
    ["interface"],
);
const LOG_LEVEL: Family<Gauge, 1> = Family::new(
    "log_level",
    "State set: the level the proxy writes at, as far as the log shows (1 for that level).",
    ["log_level"],
);
const LOG_LINES: Family<Counter, 0> = Family::new("log_lines_total", "Log lines read.", []);
const LOG_UNRECOGNIZED: Family<Counter, 0> = Family::new(
    "log_unrecognized_lines_total",
    "Log lines in no known shape (a format change shows here).",
    [],
);
const LOG_READ_BYTES: Family<Counter, 0> = Family::new(
    "log_read_bytes_total",
    "Bytes of complete log lines read.",
    [],
);
const LOG_ROTATIONS: Family<Counter, 0> = Family::new(
    "log_rotations_total",
    "Rotations of the log file followed.",
    [],
);
const LOG_TRUNCATIONS: Family<Counter, 0> = Family::new(
    "log_truncations_total",
    "Truncations of the log file in place.",
    [],
);
const LOG_LINES_TOO_LONG: Family<Counter, 0> = Family::new(
    "log_lines_too_long_total",
    "Lines longer than log.max_line_bytes, skipped.",
    [],
);
const LOG_FILE_PRESENT: Family<Gauge, 0> = Family::new(
    "log_file_present",
    "1 when the log file (log.path) exists and is readable, else 0.",
    [],
);
const ERROR_LOG_FILE_PRESENT: Family<Gauge, 0> = Family::new(
    "error_log_file_present",
    "1 when the error-level log (log.error_path) exists: PIA's debug logging is off.",
    [],
);
const SESSION_EVICTIONS: Family<Counter, 1> = Family::new(
    "session_evictions_total",
    "Open sessions dropped without a destructor line, by reason (pending_full, \
     pending_expired: sessions seen without their creation line, dropped before a line named \
     their app; their errors were counted under unknown).",
    ["reason"],
);
const LOG_FILES_REFUSED: Family<Counter, 0> = Family::new(
    "log_files_refused_total",
    "Files refused at a log's name: not a regular file, a link or a foreign owner in a folder others can write, the other log again.",
    [],
);
const LOG_GAPS: Family<Counter, 0> = Family::new(
    "log_gaps_total",
    "Stretches of a log lost unread: the file being read was rotated away twice while the agent was stopped.",
    [],
);
/// A log value kept out of labels and gauges: the `field` label of `log_values_refused_total`.
#[apply(label_set!)]
enum RefusedField {
    App,
    Interface,
    Timestamp,
}

const LOG_VALUES_REFUSED: Family<Counter, 1> = Family::new(
    "log_values_refused_total",
    "Values from the log kept out of labels and gauges, by field: app ids that are not a code-signing id (too long, other characters, `other`/`unknown`; counted as app=\"other\"), interface names, times in the future.",
    ["field"],
);
const APPS_FOLDED: Family<Counter, 0> = Family::new(
    "apps_folded_total",
    "Lookups of an app beyond log.max_apps, counted as app=\"other\".",
    [],
);

/// Renders a shared [`LogState`] at scrape time.
pub struct LogCollector {
    pipeline: Arc<Mutex<LogState>>,
}

impl LogCollector {
    pub fn new(pipeline: Arc<Mutex<LogState>>) -> LogCollector {
        LogCollector { pipeline }
    }
}

impl Scrape for LogCollector {
    fn descs(&self) -> Vec<Desc> {
        vec![
            SESSIONS_OPENED.desc(),
            SESSIONS_CLOSED.desc(),
            SESSIONS_REPLIES.desc(),
            OPEN_SESSIONS.desc(),
            FLOW_ERRORS.desc(),
            RX_BYTES.desc(),
            TX_BYTES.desc(),
            SESSION_DURATION.desc(),
            LAST_EVENT.desc(),
            PROXY_RESTARTS.desc(),
            PROXY_STOPS.desc(),
            FLOWS_REFUSED.desc(),
            PROXY_DNS_FOLLOW_APP_RULES.desc(),
            PROXY_CONNECTED.desc(),
            PROXY_BIND_INTERFACE.desc(),
            LOG_LEVEL.desc(),
            LOG_LINES.desc(),
            LOG_UNRECOGNIZED.desc(),
            LOG_READ_BYTES.desc(),
            LOG_ROTATIONS.desc(),
            LOG_TRUNCATIONS.desc(),
            LOG_LINES_TOO_LONG.desc(),
            LOG_FILE_PRESENT.desc(),
            ERROR_LOG_FILE_PRESENT.desc(),
            SESSION_EVICTIONS.desc(),
            APPS_FOLDED.desc(),
            LOG_FILES_REFUSED.desc(),
            LOG_GAPS.desc(),
            LOG_VALUES_REFUSED.desc(),
        ]
    }

    fn scrape(&self) -> Vec<MetricFamily> {
        let p = self.pipeline.lock().unwrap_or_else(|e| e.into_inner());
        render(&p)
    }
}

/// One app's counters summed over its protocols.
#[derive(Default)]
struct AppSum {
    rx: u64,
    tx: u64,
    errors: [u64; ErrorKind::COUNT],
}

/// Duration histogram of one protocol, summed over apps.
#[derive(Clone, Copy, Default)]
struct DurationSum {
    seen: bool,
    buckets: [u64; DURATION_BUCKETS_SECS.len() + 1],
    count: u64,
    sum_ms: u64,
}

impl DurationSum {
    fn add(&mut self, c: &AppCounts) {
        self.seen = true;
        for (b, n) in self.buckets.iter_mut().zip(c.duration_buckets) {
            *b += n;
        }
        self.count += c.duration_count;
        self.sum_ms += c.duration_sum_ms;
    }
}

/// All log-side families of `p`.
pub fn render(p: &LogState) -> Vec<MetricFamily> {
    let mut out = Vec::from(session_families(p));
    out.push(refused_flows(p));
    out.extend(proxy_lifecycle(p));
    out.extend(reader_families(p));
    out.extend(proxy_settings(p));
    out.push(evictions(p));
    out.push(values_refused(p));
    // A family without samples (no app yet, no error yet) is left out, as the registry does.
    out.retain(|f| !f.get_metric().is_empty());
    out
}

/// The session table's families: per app and protocol, per app, and the durations per
/// protocol.
fn session_families(p: &LogState) -> [MetricFamily; 8] {
    let mut opened = SESSIONS_OPENED.samples();
    let mut closed = SESSIONS_CLOSED.samples();
    let mut replies = SESSIONS_REPLIES.samples();
    let mut open = OPEN_SESSIONS.samples();
    let mut errors = FLOW_ERRORS.samples();
    let mut rx = RX_BYTES.samples();
    let mut tx = TX_BYTES.samples();
    // Tcp, Udp, then rows whose protocol no line said.
    let mut durations = [DurationSum::default(); Proto::COUNT + 1];
    let apps = p.sessions().apps();
    let mut flush = |app: &str, sum: &AppSum| {
        rx.add([app], sum.rx as f64);
        tx.add([app], sum.tx as f64);
        for kind in ErrorKind::iter() {
            let n = sum.errors[kind as usize];
            if n > 0 {
                errors.add([app, kind.into()], n as f64);
            }
        }
    };
    // Rows come in app order: sum an app's protocols, write it when the next app starts.
    let mut current = None;
    let mut sum = AppSum::default();
    for (id, proto, c) in p.sessions().counts().iter() {
        let app = apps.name(id);
        if current.is_some_and(|cur| cur != id) {
            flush(apps.name(current.expect("checked")), &sum);
            sum = AppSum::default();
        }
        current = Some(id);
        let l = [app, proto_label(proto)];
        opened.add(l, c.opened as f64);
        for o in CloseOutcome::iter() {
            // `unknown` (sizes in a shape the parser does not know) is rare: it appears with
            // its first session rather than as a zero per app and protocol.
            if o != CloseOutcome::Unknown || c.closed(o) > 0 {
                closed.add([l[0], l[1], o.into()], c.closed(o) as f64);
            }
        }
        for r in Reply::iter() {
            if r != Reply::Unknown || c.replies(r) > 0 {
                replies.add([l[0], l[1], r.into()], c.replies(r) as f64);
            }
        }
        open.set(l, c.open as f64);
        sum.rx += c.rx_bytes;
        sum.tx += c.tx_bytes;
        for (s, n) in sum.errors.iter_mut().zip(c.errors) {
            *s += n;
        }
        durations[proto.map_or(Proto::COUNT, |p| p as usize)].add(c);
    }
    if let Some(id) = current {
        flush(apps.name(id), &sum);
    }
    [
        opened.done(),
        closed.done(),
        replies.done(),
        open.done(),
        errors.done(),
        rx.done(),
        tx.done(),
        duration_family(&durations),
    ]
}

/// `session_duration_seconds`: one histogram per protocol that had a session.
fn duration_family(durations: &[DurationSum]) -> MetricFamily {
    let mut duration = SESSION_DURATION.samples();
    for (i, d) in durations.iter().enumerate() {
        if d.seen {
            let proto = proto_label(Proto::iter().nth(i));
            let buckets = DURATION_BUCKETS_SECS.iter().copied().zip(d.buckets);
            duration.observe([proto], buckets, d.count, d.sum_ms as f64 / 1000.0);
        }
    }
    duration.done()
}

/// The proxy's last line, restarts and stops.
fn proxy_lifecycle(p: &LogState) -> Vec<MetricFamily> {
    let proxy = p.proxy();
    let mut out = Vec::with_capacity(3);
    if let Some(t) = proxy.last_event.and_then(local_to_unix) {
        out.push(LAST_EVENT.single(t));
    }
    out.extend([
        PROXY_RESTARTS.single(proxy.restarts as f64),
        PROXY_STOPS.single(proxy.stops as f64),
    ]);
    out
}

/// What reading the log files counted.
fn reader_families(p: &LogState) -> [MetricFamily; 11] {
    let r = p.read();
    [
        LOG_LINES.single(r.lines as f64),
        LOG_UNRECOGNIZED.single(r.unrecognized as f64),
        LOG_READ_BYTES.single(r.bytes as f64),
        LOG_ROTATIONS.single(r.rotations as f64),
        LOG_TRUNCATIONS.single(r.truncations as f64),
        LOG_LINES_TOO_LONG.single(r.lines_too_long as f64),
        LOG_FILES_REFUSED.single(r.files_refused as f64),
        LOG_GAPS.single(r.gaps as f64),
        APPS_FOLDED.single(p.sessions().apps().folded() as f64),
        LOG_FILE_PRESENT.single(f64::from(u8::from(r.file_present))),
        ERROR_LOG_FILE_PRESENT.single(f64::from(u8::from(r.error_file_present))),
    ]
}

/// The proxy's settings as its log last said them; each once a line said it.
fn proxy_settings(p: &LogState) -> Vec<MetricFamily> {
    let proxy = p.proxy();
    let mut out = Vec::with_capacity(4);
    if let Some(c) = proxy.connected {
        out.push(PROXY_CONNECTED.single(f64::from(u8::from(c))));
    }
    if let Some(on) = proxy.dns_follow_app_rules {
        out.push(PROXY_DNS_FOLLOW_APP_RULES.single(f64::from(u8::from(on))));
    }
    if let Some(i) = &proxy.bind_interface {
        let mut f = PROXY_BIND_INTERFACE.samples();
        f.set([i], 1.0);
        out.push(f.done());
    }
    if let Some(level) = proxy.level() {
        out.push(LOG_LEVEL.stateset(Level::iter(), &level));
    }
    out
}

/// `session_evictions_total`, by reason.
fn evictions(p: &LogState) -> MetricFamily {
    let e = p.sessions().evictions();
    let mut ev = SESSION_EVICTIONS.samples();
    for reason in EvictionReason::iter() {
        ev.add([reason.into()], e.count(reason) as f64);
    }
    ev.done()
}

/// `log_values_refused_total`: values from the log kept out of labels and gauges, by field.
fn values_refused(p: &LogState) -> MetricFamily {
    let r = p.read();
    let mut refused = LOG_VALUES_REFUSED.samples();
    refused
        .add(
            [RefusedField::App.into()],
            p.sessions().apps().invalid() as f64,
        )
        .add(
            [RefusedField::Interface.into()],
            r.invalid_interfaces as f64,
        )
        .add([RefusedField::Timestamp.into()], r.future_timestamps as f64);
    refused.done()
}

/// `flows_refused_total`: per app (bounded by the app cap), a reason once it happened.
fn refused_flows(p: &LogState) -> MetricFamily {
    let apps = p.sessions().apps();
    let mut f = FLOWS_REFUSED.samples();
    for (app, row) in p.sessions().refused() {
        for reason in RefusedReason::iter() {
            let n = row[reason as usize];
            if n > 0 {
                f.add([apps.name(app), reason.into()], n as f64);
            }
        }
    }
    f.done()
}

/// The proxy logs local wall-clock time without a zone; this machine's zone interprets it.
fn local_to_unix(t: LocalMillis) -> Option<f64> {
    use chrono::TimeZone;
    let naive = chrono::DateTime::from_timestamp_millis(t.0)?.naive_utc();
    let local = chrono::Local.from_local_datetime(&naive).earliest()?;
    Some(local.timestamp_millis() as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use prometheus::Registry;

    use super::*;
    use crate::log_state::Limits;
    use crate::metrics::{encode, register};

    fn feed(p: &mut LogState, id: u32, app: &str) {
        let line = format!(
            "[2026-02-16 11:49:31:4330] [ChannelCreatorTCP.swift:50] debug: id: {id} {app} Creating, binding and connecting a new TCP socket - endpoint: 203.0.113.5:443 with bindIp: 10.0.15.15\r\n"
        );
        p.feed(line.as_bytes());
    }

    fn text(p: LogState) -> String {
        let registry = Registry::new();
        register(&registry, LogCollector::new(Arc::new(Mutex::new(p)))).unwrap();
        encode(&registry)
    }

    #[test]
    fn colliding_app_ids_stay_apart_and_render_whole() {
        let mut p = LogState::new(Limits::default());
        feed(&mut p, 1, "ab.c");
        feed(&mut p, 2, "a.bc");
        let text = text(p);
        assert!(
            text.contains("pia_split_tunnel_sessions_opened_total{app=\"ab.c\",proto=\"tcp\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pia_split_tunnel_sessions_opened_total{app=\"a.bc\",proto=\"tcp\"} 1\n"),
            "{text}"
        );
        // Per protocol, not per app: one histogram for both apps.
        assert!(
            text.contains(
                "pia_split_tunnel_session_duration_seconds_bucket{proto=\"tcp\",le=\"+Inf\"} 0\n"
            ),
            "{text}"
        );
        assert!(
            !text.contains("session_duration_seconds_bucket{app"),
            "{text}"
        );
    }

    #[test]
    fn error_kinds_appear_with_their_first_error_summed_over_protocols() {
        let mut p = LogState::new(Limits::default());
        feed(&mut p, 1, "com.example.a");
        assert!(!text(p.clone()).contains("flow_errors_total{"));
        for (id, proto) in [(1, "TCP"), (1, "TCP")] {
            p.feed(format!("[2026-02-16 11:49:31:5330] [FlowForwarder{proto}.swift:32] error: id: {id} Empty buffer occurred during {proto} flow.readData() com.example.a\r\n").as_bytes());
        }
        let text = text(p);
        assert!(
            text.contains(
                "pia_split_tunnel_flow_errors_total{app=\"com.example.a\",kind=\"empty_buffer\"} 2\n"
            ),
            "{text}"
        );
        assert!(!text.contains("kind=\"connect_timeout\""), "{text}");
    }

    #[test]
    fn log_level_is_a_state_set_named_after_itself() {
        let mut p = LogState::new(Limits::default());
        feed(&mut p, 1, "com.example.a");
        let text = text(p);
        assert!(
            text.contains("pia_split_tunnel_log_level{log_level=\"debug\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pia_split_tunnel_log_level{log_level=\"error\"} 0\n"),
            "{text}"
        );
        assert!(!text.contains("log_level_info"), "{text}");
    }
}
