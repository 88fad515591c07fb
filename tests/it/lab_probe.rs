//! The split-tunnel failure reproduced in network namespaces (`lab/lab.sh`): `probe`,
//! `diagnose` and the agent itself, before and after the repair. Needs root (CI runs as root);
//! without it, or without iproute2/nftables/python3, these tests fail and say why.

use crate::common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::lab::Lab;
use common::{BIN, fixture};
use serde_json::Value;

use pia_split_tunnel_exporter::probe::lab::{
    GATEWAY, HOME_IP, PHYSICAL_IF, PHYSICAL_IP, TUNNEL_GATEWAY, TUNNEL_IF, TUNNEL_IP, VPN_EXIT_IP,
    WHOAMI_IP,
};

const PROBE_SETTINGS: [&str; 6] = [
    "--set",
    "probe.endpoints=[\"http://203.0.113.10/\"]",
    "--set",
    "probe.timeout_secs=2",
    "--set",
    "log.error_path=\"\"",
];

/// `lab/lab.sh` builds the topology `probe::lab` names, the one vocabulary of the lab, the demo
/// and the tests.
#[test]
fn the_lab_script_builds_the_lab_addresses() {
    let script = std::fs::read_to_string(common::lab::lab_script()).unwrap();
    for line in [
        format!("addr add {PHYSICAL_IP}/24 dev {PHYSICAL_IF}"),
        format!("addr add {TUNNEL_IP}/16 dev {TUNNEL_IF}"),
        format!("addr add {GATEWAY}/24 dev lan"),
        format!("addr add {HOME_IP}/24 dev wan"),
        format!("addr add {TUNNEL_GATEWAY}/16 dev tun"),
        format!("addr add {VPN_EXIT_IP}/24 dev wan"),
        format!("addr add {WHOAMI_IP}/32 dev lo"),
        format!("route add default via {GATEWAY} dev {PHYSICAL_IF}"),
        format!("route add 0.0.0.0/1 via {TUNNEL_GATEWAY} dev {TUNNEL_IF}"),
        format!("route add 128.0.0.0/1 via {TUNNEL_GATEWAY} dev {TUNNEL_IF}"),
    ] {
        assert!(script.contains(&line), "lab/lab.sh lacks `{line}`");
    }
}

/// One path of `probe --json`: plain fields (`egress_ip`, `error`, `duration_seconds`).
fn path<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == name)
        .unwrap()
}

#[test]
fn probe_tells_the_truth_before_and_after_the_repair() {
    let lab = Lab::up("p");
    let mut args = vec!["probe", "--json"];
    args.extend(PROBE_SETTINGS);
    let before = lab.agent(&args);
    assert_eq!(
        before.status.code(),
        Some(1),
        "a broken bypass exits 1: {}",
        String::from_utf8_lossy(&before.stderr)
    );
    let v: Value = serde_json::from_slice(&before.stdout).unwrap();
    assert_eq!(v["interfaces"]["physical"]["name"], "en0");
    assert_eq!(v["interfaces"]["physical"]["gateway"], "10.0.15.1");
    assert_eq!(v["interfaces"]["tunnel"]["name"], "utun4");
    assert_eq!(path(&v, "physical")["egress_ip"], HOME_IP.to_string());
    assert_eq!(path(&v, "physical")["error"], Value::Null);
    assert_eq!(path(&v, "physical")["bound_to"], "en0");
    assert!(path(&v, "physical")["duration_seconds"].as_f64().unwrap() < 5.0);
    assert_eq!(path(&v, "tunnel")["egress_ip"], VPN_EXIT_IP.to_string());
    assert_eq!(path(&v, "default")["egress_ip"], VPN_EXIT_IP.to_string());
    assert_eq!(
        path(&v, "bypass")["error"],
        "timeout",
        "the field failure: {v}"
    );
    assert_eq!(path(&v, "bypass")["egress_ip"], Value::Null);
    assert_eq!(v["verdict"]["state"], "bypass_broken", "{v}");

    lab.script(&["repair"]);
    let after = lab.agent(&args);
    assert_eq!(
        after.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&after.stdout)
    );
    let v: Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(path(&v, "bypass")["egress_ip"], HOME_IP.to_string());
    assert_eq!(v["verdict"]["state"], "bypass_working", "{v}");

    let mut table_args = vec!["probe"];
    table_args.extend(PROBE_SETTINGS);
    let table = String::from_utf8(lab.agent(&table_args).stdout).unwrap();
    assert!(
        table.contains("bypass    10.0.15.15         198.51.100.47"),
        "{table}"
    );
    assert!(table.contains("bypass working"), "{table}");
}

#[test]
fn diagnose_names_the_cause_and_the_repair() {
    let lab = Lab::up("d");
    let log = fixture("broken.log").display().to_string();
    let mut args = vec!["diagnose", "--log-path", &log];
    args.extend(PROBE_SETTINGS);
    let before = lab.agent(&args);
    let text = String::from_utf8_lossy(&before.stdout);
    assert_eq!(
        before.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&before.stderr)
    );
    assert!(
        text.contains("Bypass apps' traffic is bound to 10.0.15.15 but does not get out (timeout): it follows the VPN's routes into utun4; 100% of 80 sessions closed with zero bytes."),
        "{text}"
    );
    assert!(text.contains("Fix: route-to fallback"), "{text}");
    assert!(text.contains("Measured: the kernel routes traffic from 10.0.15.15 as: 203.0.113.10 from 10.0.15.15 via 10.16.0.1 dev utun4"), "{text}");
    // No PIA here: the extension is absent while a tunnel is up, and diagnose says so first.
    assert!(
        text.lines()
            .next()
            .unwrap()
            .starts_with("The split-tunnel extension"),
        "{text}"
    );

    lab.script(&["repair"]);
    let after = lab.agent(&args);
    let text = String::from_utf8_lossy(&after.stdout);
    assert_eq!(after.status.code(), Some(0), "{text}");
    assert!(text.contains("Bypass works: traffic bound to 10.0.15.15 egresses as 198.51.100.47 (the physical path)"), "{text}");

    // The VPN goes away: "tunnel down", and the VPN's routes are not blamed.
    lab.script(&["unrepair"]);
    lab.ip(&["link", "del", "utun4"]);
    let down = lab.agent(&args);
    let text = String::from_utf8_lossy(&down.stdout);
    assert_eq!(down.status.code(), Some(0), "{text}");
    assert!(text.contains("Verdict: tunnel down"), "{text}");
    assert!(
        !text.contains("0/1 and 128/1") && !text.contains("route-to"),
        "{text}"
    );

    // Probes off: diagnose does not probe, says so, and still reports the log and the system.
    let mut off = args.clone();
    off.extend(["--set", "probe.enabled=false"]);
    let quiet = lab.agent(&off);
    let text = String::from_utf8_lossy(&quiet.stdout);
    assert_eq!(quiet.status.code(), Some(3), "no verdict: {text}");
    assert!(
        text.contains("Did not probe (probe.enabled = false)")
            && text.contains("100% of 80 sessions closed with zero bytes; that looks broken"),
        "{text}"
    );
    assert!(text.contains("Measured: "), "{text}");
}

/// The agent binary running inside the lab's `mac` namespace, in `auto` with the
/// policy-routing backend; killed on drop.
pub(crate) struct LabAgent<'a> {
    lab: &'a Lab,
    child: Child,
    log: PathBuf,
    /// The proxy log the agent follows.
    proxy_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl<'a> LabAgent<'a> {
    /// `probe` is the `[probe]` section's lines beside the lab's endpoint.
    pub(crate) fn start(lab: &'a Lab, probe: &str) -> LabAgent<'a> {
        Self::start_in(lab, probe, "auto")
    }

    /// As [`start`](Self::start), in `fallback.mode = mode`.
    fn start_in(lab: &'a Lab, probe: &str, mode: &str) -> LabAgent<'a> {
        Self::start_with(lab, probe, mode, |_| String::new())
    }

    /// As [`start_in`](Self::start_in), with more `[fallback]` lines, written for the agent's
    /// folder.
    pub(crate) fn start_with(
        lab: &'a Lab,
        probe: &str,
        mode: &str,
        fallback: impl FnOnce(&std::path::Path) -> String,
    ) -> LabAgent<'a> {
        let dir = tempfile::tempdir().unwrap();
        let more = fallback(dir.path());
        let log = dir.path().join("transparent_proxy.log");
        std::fs::write(&log, b"").unwrap();
        let agent_log = dir.path().join("agent.log");
        // No PIA in the lab: the agent stands in for its processes so the processes check is
        // quiet (PIA's processes are recognised by executable path, so the agent's own).
        let me = std::fs::canonicalize(BIN).unwrap();
        let config = format!(
            "[log]\npath = {log:?}\nerror_path = \"\"\ncheckpoint = {cp:?}\n\
[http]\nlisten = \"10.0.15.15:9847\"\n\
[probe]\nendpoints = [\"http://203.0.113.10/\"]\nexport_addresses = true\n{probe}\n\
[processes]\nextension = [{me:?}]\ndaemon = [{me:?}]\nvpn = [{me:?}]\n\
[fallback]\nmode = {mode:?}\nbackend = \"policy-routing\"\nconsecutive_rounds = 2\ntunnel_down_rounds = 2\ncooldown_secs = 1\n\
state_file = {state:?}\n{more}\n",
            cp = dir.path().join("cp.json"),
            state = dir.path().join("fallback-state.json"),
            me = me.display().to_string(),
        );
        let config_path = dir.path().join("agent.toml");
        std::fs::File::create(&config_path)
            .unwrap()
            .write_all(config.as_bytes())
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.mac(), BIN, "--config"])
            .arg(&config_path)
            .arg("run")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&agent_log).unwrap())
            .spawn()
            .unwrap();
        LabAgent {
            lab,
            child,
            log: agent_log,
            proxy_log: log,
            _dir: dir,
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `url` until `check` holds (or fails after `within`); the last body.
    pub(crate) fn wait_for(
        &self,
        what: &str,
        check: &dyn Fn(&str) -> bool,
        url: &str,
        within: Duration,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let (_, body) = self.lab.get(url);
            if check(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not happen; last {url}: {body}\nagent log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for LabAgent<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) const METRICS: &str = "http://10.0.15.15:9847/metrics";

/// Whole lines: a HELP text may contain the same words.
pub(crate) fn has(body: &str, line: &str) -> bool {
    body.lines().any(|l| l == line)
}

/// The agent in `auto` mode with the policy-routing backend heals the lab by itself, says so
/// on /health, /metrics and in its log; when the tunnel goes, it reverts and leaves no rule.
#[test]
fn agent_heals_the_lab_and_reverts_when_the_tunnel_goes() {
    let lab = Lab::up("e");
    let rules_before = lab.ip(&["rule"]);
    let agent = LabAgent::start(&lab, "interval_secs = 2\ntimeout_secs = 1.5");
    let within = Duration::from_secs(40);
    let wait_for = |what: &str, check: &dyn Fn(&str) -> bool, url: &str| -> String {
        agent.wait_for(what, check, url, within)
    };
    let metrics = METRICS;
    let m = wait_for(
        "the repair",
        &|b| has(b, "pia_split_tunnel_fallback_active 1"),
        metrics,
    );
    assert!(
        has(
            &m,
            "pia_split_tunnel_fallback_actions_total{action=\"apply\",result=\"ok\"} 1"
        ),
        "{m}"
    );
    // Verified: the next rounds see the bypass egress as the home IP.
    let m = wait_for(
        "a repaired bypass",
        &|b| has(b, "pia_split_tunnel_bypass_working 1"),
        metrics,
    );
    assert!(
        has(
            &m,
            &format!("pia_split_tunnel_probe_egress_info{{path=\"bypass\",ip=\"{HOME_IP}\"}} 1")
        ),
        "{m}"
    );
    assert!(
        lab.ip(&["rule"]).contains("from 10.0.15.15 lookup 100"),
        "{}",
        lab.ip(&["rule"])
    );
    let (code, health) = lab.get("http://10.0.15.15:9847/health");
    let h: Value = serde_json::from_str(&health).unwrap_or(Value::Null);
    assert_eq!(h["components"]["probe_bypass"]["status"], "ok", "{health}");
    assert_eq!(h["components"]["fallback"]["status"], "ok", "{health}");
    assert_eq!(code, 200, "{health}");
    assert!(
        agent.log().contains("applied"),
        "the agent's log says what it did"
    );

    // The VPN goes away: the fallback is reverted and nothing of it is left.
    lab.ip(&["link", "del", "utun4"]);
    wait_for(
        "the revert",
        &|b| {
            has(b, "pia_split_tunnel_fallback_active 0") && has(b, "pia_split_tunnel_tunnel_down 1")
        },
        metrics,
    );
    assert_eq!(lab.ip(&["rule"]), rules_before, "no stray rule");
    assert_eq!(
        lab.ip(&["route", "show", "table", "100"]),
        "",
        "table 100 is empty"
    );
}

/// With a heartbeat of five minutes, the VPN's routes appearing start a round at once: the
/// agent sees the bypass break and repairs it within seconds, not at the next heartbeat.
#[test]
fn a_route_change_starts_a_round_without_waiting_for_the_heartbeat() {
    let lab = Lab::up("r");
    // Healthy to begin with: the VPN's halves are not there yet.
    for half in ["0.0.0.0/1", "128.0.0.0/1"] {
        lab.ip(&["route", "del", half]);
    }
    let agent = LabAgent::start(&lab, "interval_secs = 300");
    agent.wait_for(
        "the first round",
        // Without the VPN's halves no interface carries the catch-all: there is no VPN
        // tunnel to speak of (utun4 is up, but routes only its own subnet).
        &|b| has(b, "pia_split_tunnel_verdict{state=\"tunnel_down\"} 1"),
        METRICS,
        Duration::from_secs(20),
    );
    // Only the start round so far.
    assert!(!agent.log().contains("RouteChange"), "{}", agent.log());
    let added = Instant::now();
    for half in ["0.0.0.0/1", "128.0.0.0/1"] {
        lab.ip(&["route", "add", half, "via", "10.16.0.1", "dev", "utun4"]);
    }
    agent.wait_for(
        "the repair after the routes appeared",
        &|b| {
            has(b, "pia_split_tunnel_fallback_active 1")
                && has(b, "pia_split_tunnel_bypass_working 1")
        },
        METRICS,
        Duration::from_secs(30),
    );
    let took = added.elapsed();
    let log = agent.log();
    assert!(log.contains("trigger=route_change"), "{log}");
    assert!(log.contains("trigger=confirm"), "{log}");
    // Far inside the 300 s heartbeat (not a timing target: the bench measures that).
    assert!(took < Duration::from_secs(60), "{took:?}\n{log}");
    assert!(
        lab.ip(&["rule"]).contains("from 10.0.15.15 lookup 100"),
        "{}",
        lab.ip(&["rule"])
    );
}

/// Without route events, the log alone asks for a round: once the zero-byte sessions cross
/// the threshold, a confirming round starts at once (heartbeat of five minutes) and the
/// probes, not the log, decide the repair.
#[test]
fn log_evidence_starts_a_round_without_waiting_for_the_heartbeat() {
    let lab = Lab::up("l");
    for half in ["0.0.0.0/1", "128.0.0.0/1"] {
        lab.ip(&["route", "del", half]);
    }
    let agent = LabAgent::start(&lab, "interval_secs = 300\nwatch_routes = false");
    agent.wait_for(
        "the first round",
        // Without the VPN's halves no interface carries the catch-all: there is no VPN
        // tunnel to speak of (utun4 is up, but routes only its own subnet).
        &|b| has(b, "pia_split_tunnel_verdict{state=\"tunnel_down\"} 1"),
        METRICS,
        Duration::from_secs(20),
    );
    for half in ["0.0.0.0/1", "128.0.0.0/1"] {
        lab.ip(&["route", "add", half, "via", "10.16.0.1", "dev", "utun4"]);
    }
    std::thread::sleep(Duration::from_secs(1));
    let rounds = agent.log().matches("trigger=").count();
    assert_eq!(rounds, 1, "only the start round so far: {}", agent.log());
    // The field failure in the log: 80 sessions, all closed with zero bytes.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&agent.proxy_log)
        .unwrap()
        .write_all(&std::fs::read(fixture("broken.log")).unwrap())
        .unwrap();
    agent.wait_for(
        "the repair after the log showed the failure",
        &|b| {
            has(b, "pia_split_tunnel_fallback_active 1")
                && has(b, "pia_split_tunnel_bypass_working 1")
        },
        METRICS,
        Duration::from_secs(30),
    );
    let log = agent.log();
    assert!(log.contains("trigger=log_evidence"), "{log}");
}

/// Two physical interfaces whose defaults tie and a second tunnel (a work VPN's subnet): the
/// agent names the tunnel that carries the VPN's halves, says on /health and the status page
/// that it cannot tell which interface is physical, and does not apply, however broken the
/// bypass. Once the tie is gone it repairs as usual.
#[test]
fn ambiguous_evidence_refuses_to_apply() {
    let lab = Lab::up("a");
    for args in [
        // Veth pairs inside the namespace (no dummy module on every kernel); the far ends
        // have no address, so nothing takes them for an interface.
        &["link", "add", "en1", "type", "veth", "peer", "name", "x1"][..],
        &["link", "set", "x1", "up"],
        &["addr", "add", "192.0.2.15/24", "dev", "en1"],
        &["link", "set", "en1", "up"],
        &["link", "add", "utun2", "type", "veth", "peer", "name", "x2"],
        &["link", "set", "x2", "up"],
        &["addr", "add", "198.51.100.77/32", "dev", "utun2"],
        &["link", "set", "utun2", "up"],
        &["route", "add", "198.51.100.0/24", "dev", "utun2"],
        // The same metric as en0's default: nothing says which one is primary.
        &[
            "route",
            "append",
            "default",
            "via",
            "192.0.2.1",
            "dev",
            "en1",
        ],
    ] {
        let out = Command::new("ip")
            .args(["-n", &lab.mac()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let agent = LabAgent::start(&lab, "interval_secs = 2\ntimeout_secs = 1.5");
    let within = Duration::from_secs(40);
    let health = agent.wait_for(
        "the doubt on /health",
        &|b| b.contains("uncertain"),
        "http://10.0.15.15:9847/health",
        within,
    );
    let h: Value = serde_json::from_str(&health).unwrap();
    let reason = h["components"]["probe_physical"]["reason"]
        .as_str()
        .unwrap();
    assert!(reason.contains("en0") && reason.contains("en1"), "{health}");
    assert_eq!(h["components"]["probe_physical"]["status"], "degraded");
    let (_, page) = lab.get("http://10.0.15.15:9847/");
    assert!(page.contains("uncertain"), "the status page says it too");
    // Several rounds with the bypass broken (consecutive_rounds = 2): still nothing applied.
    let m = agent.wait_for(
        "broken rounds",
        &|b| {
            b.lines()
                .find_map(|l| l.strip_prefix("pia_split_tunnel_probe_rounds_total "))
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|n| n >= 4.0)
        },
        METRICS,
        within,
    );
    assert!(has(&m, "pia_split_tunnel_fallback_active 0"), "{m}");
    assert!(!m.contains("action=\"apply\",result=\"ok\"} 1"), "{m}");
    assert!(
        !lab.ip(&["rule"]).contains("lookup 100"),
        "no rule for a guessed interface: {}",
        lab.ip(&["rule"])
    );
    let (_, page) = lab.get("http://10.0.15.15:9847/");
    assert!(
        page.contains("<td class=\"k\">VPN tunnel</td><td class=\"why\">utun4</td>")
            && !page.contains("utun2"),
        "the tunnel is the one carrying the halves, not the work VPN's: {page}"
    );

    // The tie resolved: en0's default alone; the agent repairs.
    lab.ip(&["route", "del", "default", "via", "192.0.2.1", "dev", "en1"]);
    agent.wait_for(
        "the repair once the evidence agrees",
        &|b| has(b, "pia_split_tunnel_fallback_active 1"),
        METRICS,
        within,
    );
}

/// `pia_split_tunnel_probe_rounds_total` in a `/metrics` body.
fn rounds(body: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix("pia_split_tunnel_probe_rounds_total "))
        .and_then(|v| v.parse().ok())
}

/// With the bypass broken and `fallback.mode = "observe"` (the default) nothing acts on a
/// confirmation, so none is asked for: with the real schedule (heartbeat 300 s), the start
/// round, then nothing for 12 s (the previous rule ran 12 rounds in 11 s here); the log's
/// evidence asks for one round, then nothing for 15 s more. The decision is written once.
/// (A real window of about 30 s: the next round is the heartbeat, 300 s after the last.)
#[test]
fn observe_with_the_bypass_broken_probes_only_when_something_changes() {
    let lab = Lab::up("o");
    let agent = LabAgent::start_in(&lab, "interval_secs = 300", "observe");
    let m = agent.wait_for(
        "the first round",
        &|b| has(b, "pia_split_tunnel_verdict{state=\"bypass_broken\"} 1"),
        METRICS,
        Duration::from_secs(20),
    );
    assert_eq!(rounds(&m), Some(1.0), "{m}");
    std::thread::sleep(Duration::from_secs(12));
    let (_, m) = lab.get(METRICS);
    assert_eq!(
        rounds(&m),
        Some(1.0),
        "no confirmation rounds in observe\n{}",
        agent.log()
    );
    // The field failure in the log: the sessions cross the threshold, one round confirms.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&agent.proxy_log)
        .unwrap()
        .write_all(&std::fs::read(fixture("broken.log")).unwrap())
        .unwrap();
    agent.wait_for(
        "the round the log asked for",
        &|b| rounds(b) == Some(2.0),
        METRICS,
        Duration::from_secs(20),
    );
    std::thread::sleep(Duration::from_secs(15));
    let (_, m) = lab.get(METRICS);
    let log = agent.log();
    assert_eq!(rounds(&m), Some(2.0), "{m}\n{log}");
    assert!(has(&m, "pia_split_tunnel_fallback_active 0"), "{m}");
    assert!(log.contains("trigger=log_evidence"), "{log}");
    assert!(!log.contains("trigger=confirm"), "{log}");
    assert_eq!(
        log.matches("would apply the repair; mode is observe")
            .count(),
        1,
        "{log}"
    );
    assert!(
        !lab.ip(&["rule"]).contains("lookup 100"),
        "observe installs nothing: {}",
        lab.ip(&["rule"])
    );
}
