//! Every `log()` statement of PIA's proxy source (3.7.0's commit and the newer branches) parses
//! to its intended event, none is unrecognised, and what they count reaches the metrics.
//! The fixture and `docs/proxy-log-format.md` list the same statements, at the same file:line.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use pia_split_tunnel_exporter::log_state::LogCollector;
use pia_split_tunnel_exporter::log_state::{Limits, LogState};
use pia_split_tunnel_exporter::metrics::{encode, register};
use pia_split_tunnel_exporter::proxy_log::{Event, Text, parse_line};
use prometheus::Registry;

fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One fixture row: the commit of its section, the statement's file:line, the event, the line.
struct Row {
    commit: String,
    statement: String,
    expected: String,
    line: String,
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string(root().join("tests/fixtures/proxy_statements.txt")).unwrap();
    let mut commit = String::new();
    let mut out = Vec::new();
    for l in text.lines() {
        if let Some(c) = l.strip_prefix("## ") {
            commit = c.to_string();
        } else if !l.starts_with('#') {
            let mut f = l.splitn(3, '\t');
            let (statement, expected, line) = (f.next(), f.next(), f.next());
            let line = line.unwrap_or_else(|| panic!("a row has three fields: {l}"));
            out.push(Row {
                commit: commit.clone(),
                statement: statement.unwrap().to_string(),
                expected: expected.unwrap().to_string(),
                line: line.to_string(),
            });
        }
    }
    out
}

fn app(a: Option<Text<'_>>) -> String {
    a.map_or("-".into(), |t| t.lossy().into_owned())
}

/// The event in the fixture's words.
fn tag(e: &Event<'_>) -> String {
    match e {
        Event::SessionOpened { proto, app: a, .. } => format!("opened {proto} {}", a.lossy()),
        Event::FlowError { kind, app: a, .. } => format!("error {kind} {}", app(*a)),
        Event::Terminating { .. } => "terminating".into(),
        Event::ChannelClosed { proto, .. } => {
            format!(
                "channel_closed {}",
                proto.map_or("-".into(), |p| p.to_string())
            )
        }
        Event::SessionClosed { app: a, .. } => format!("closed {}", app(*a)),
        Event::ProxyStarted => "proxy_started".into(),
        Event::ProxyStopped => "proxy_stopped".into(),
        Event::DnsProxyStarted => "dns_proxy_started".into(),
        Event::DnsProxyStopped => "dns_proxy_stopped".into(),
        Event::FlowRefused { app: a, reason } => {
            let a = if a.bytes().is_empty() {
                "-".into()
            } else {
                a.lossy()
            };
            format!("refused {reason} {a}")
        }
        Event::BypassApps(_) => "bypass_apps".into(),
        Event::BindInterface(i) => format!("bind_interface {}", i.lossy()),
        Event::IsConnected(c) => format!("is_connected {c}"),
        Event::DnsFollowAppRules(on) => format!("dns_follow_app_rules {on}"),
        Event::LoggerLevel(l) => format!("logger_level {l}"),
        Event::Ignored => "ignored".into(),
        Event::Unrecognized => "unrecognized".into(),
    }
}

#[test]
fn every_statement_parses_to_its_event() {
    let rows = rows();
    assert!(rows.len() >= 66, "{} rows", rows.len());
    for r in &rows {
        let parsed = parse_line(r.line.as_bytes());
        assert_eq!(tag(&parsed.event), r.expected, "{} ({})", r.line, r.commit);
        // A line with a header carries the statement's own file:line.
        if r.line.starts_with('[') {
            assert!(
                r.line.contains(&format!("] [{}] ", r.statement)),
                "{} is tagged {}",
                r.line,
                r.statement
            );
            assert!(
                parsed.level.is_some() && parsed.time.is_some(),
                "{}",
                r.line
            );
        }
    }
}

fn metrics_text(p: LogState) -> String {
    let registry = Registry::new();
    register(&registry, LogCollector::new(Arc::new(Mutex::new(p)))).unwrap();
    encode(&registry)
}

fn feed_all(p: &mut LogState) {
    let all: String = rows().iter().map(|r| format!("{}\r\n", r.line)).collect();
    assert_eq!(p.feed(all.as_bytes()), all.len());
}

#[test]
fn no_statement_is_unrecognized_and_starts_stops_and_refusals_are_counted() {
    let mut p = LogState::new(Limits::default());
    feed_all(&mut p);
    assert_eq!(p.read().lines, rows().len() as u64);
    assert_eq!(p.read().unrecognized, 0);
    // Proxy started! (5e92881, 00cfea5), Transparent Proxy started!, DNS Proxy started!; stops alike.
    assert_eq!((p.proxy().restarts, p.proxy().stops), (4, 4));
    assert_eq!(p.proxy().dns_follow_app_rules, Some(true));
    assert_eq!(p.proxy().bind_interface.as_deref(), Some("en0"));
    let text = metrics_text(p);
    for want in [
        "pia_split_tunnel_log_unrecognized_lines_total 0\n",
        "pia_split_tunnel_proxy_restarts_total 4\n",
        "pia_split_tunnel_proxy_stops_total 4\n",
        "pia_split_tunnel_proxy_dns_follow_app_rules 1\n",
        "pia_split_tunnel_flows_refused_total{app=\"com.apple.Safari\",reason=\"vpn_only_blocked\"} 2\n",
        "pia_split_tunnel_flows_refused_total{app=\"com.apple.Safari\",reason=\"no_bind_ip\"} 1\n",
        "pia_split_tunnel_flows_refused_total{app=\"com.plexapp.plexmediaserver\",reason=\"no_bind_ip\"} 1\n",
        "pia_split_tunnel_flows_refused_total{app=\"com.plexapp.plexmediaserver\",reason=\"open_failed\"} 1\n",
        "pia_split_tunnel_flows_refused_total{app=\"com.backblaze.bzserv\",reason=\"no_bind_ip\"} 1\n",
        "pia_split_tunnel_flows_refused_total{app=\"com.backblaze.bzserv\",reason=\"open_failed\"} 1\n",
        "pia_split_tunnel_flows_refused_total{app=\"unknown\",reason=\"open_failed\"} 1\n",
    ] {
        assert!(text.contains(want), "{want} not in\n{text}");
    }
    // A reason appears with its first flow, as error kinds do.
    assert!(
        !text.contains("{app=\"com.plexapp.plexmediaserver\",reason=\"vpn_only_blocked\"}"),
        "{text}"
    );
}

/// The DNS proxy's start does not end the transparent proxy's sessions; its own start does.
#[test]
fn only_the_transparent_proxys_start_evicts_open_sessions() {
    let open = "[2026-02-16 11:49:40:7270] [ChannelCreatorTCP.swift:50] debug: id: 1 com.plexapp.plexmediaserver Creating, binding and connecting a new TCP socket - endpoint: 203.0.113.7:443 with bindIp: 10.0.15.15\r\n";
    let mut p = LogState::new(Limits::default());
    p.feed(open.as_bytes());
    p.feed(b"[2026-02-16 11:49:41:0000] [SplitTunnelDNSProxyProvider.swift:54] info: DNS Proxy started!\r\n");
    assert_eq!((p.sessions().open_len(), p.proxy().restarts), (1, 1));
    p.feed(b"[2026-02-16 11:49:42:0000] [SplitTunnelProxyProvider.swift:56] info: Transparent Proxy started!\r\n");
    assert_eq!((p.sessions().open_len(), p.proxy().restarts), (0, 2));
    assert_eq!(p.sessions().evictions().proxy_restart, 1);
}

/// Refused flows name their app in the line: anyone who writes the error log in /tmp chooses
/// it, so the family is bounded by `log.max_apps` like the others, and bad ids are counted.
#[test]
fn refused_flows_are_bounded_by_the_app_cap() {
    let mut p = LogState::new(Limits {
        max_open_sessions: 16,
        max_apps: 2,
    });
    let mut text = String::new();
    for i in 0..50 {
        text += &format!(
            "[2026-02-16 11:49:40:7270] [FlowHandler.swift:58] error: Cannot find ipv4 ip for interface: en0 - ignoring matched flow: com.forged.app{i}\r\n"
        );
    }
    text += "[2026-02-16 11:49:40:7270] [FlowHandler.swift:44] info: blocking a vpnOnly flow from com.a b\"}\r\n";
    p.feed_file(
        pia_split_tunnel_exporter::log_state::LogFile::Error,
        text.as_bytes(),
    );
    assert_eq!(p.read().unrecognized, 0);
    let metrics = metrics_text(p);
    let series: BTreeMap<&str, &str> = metrics
        .lines()
        .filter(|l| l.starts_with("pia_split_tunnel_flows_refused_total{"))
        .filter_map(|l| l.split_once(' '))
        .collect();
    let apps: BTreeSet<&str> = series
        .keys()
        .map(|k| k.split('"').nth(1).unwrap())
        .collect();
    assert_eq!(
        apps,
        BTreeSet::from(["com.forged.app0", "com.forged.app1", "other"]),
        "{metrics}"
    );
    assert_eq!(
        series["pia_split_tunnel_flows_refused_total{app=\"other\",reason=\"no_bind_ip\"}"],
        "48"
    );
    assert!(
        metrics.contains("pia_split_tunnel_log_values_refused_total{field=\"app\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pia_split_tunnel_apps_folded_total 48\n"),
        "{metrics}"
    );
}

/// The table in docs/proxy-log-format.md and the fixture name the same statements: every
/// file:line of a commit's column has a fixture row in that commit's section (or, unchanged,
/// in an earlier column's), and every fixture row is in the table.
#[test]
fn the_format_document_lists_every_fixture_statement() {
    let doc = std::fs::read_to_string(root().join("docs/proxy-log-format.md")).unwrap();
    let commits = ["5e92881", "00cfea5", "c427faf"];
    let table: Vec<Vec<String>> = doc
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains(".swift:"))
        .map(|l| {
            l.split(" | ")
                .take(3)
                .map(|c| c.trim_matches(|ch| ch == '|' || ch == ' ').to_string())
                .collect()
        })
        .collect();
    assert!(table.len() >= 66, "{} statements in the table", table.len());
    let fixture: BTreeSet<(String, String)> = rows()
        .into_iter()
        .map(|r| (r.commit, r.statement))
        .collect();
    for row in &table {
        for (i, commit) in commits.iter().enumerate() {
            let at = &row[i];
            if at == "–" {
                continue;
            }
            let covered = (0..=i)
                .any(|j| row[j] == *at && fixture.contains(&(commits[j].to_string(), at.clone())));
            assert!(covered, "{at} at {commit} has no fixture line");
        }
    }
    for (commit, statement) in &fixture {
        let i = commits.iter().position(|c| c == commit).expect(commit);
        assert!(
            table.iter().any(|row| row[i] == *statement),
            "{statement} at {commit} is not in the document's table"
        );
    }
}
