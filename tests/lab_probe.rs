//! The split-tunnel failure reproduced in network namespaces (`lab/lab.sh`): `probe`,
//! `diagnose` and the agent itself, before and after the repair. Needs root (CI runs as root);
//! without it, or without iproute2/nftables/python3, these tests fail and say why.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::lab::Lab;
use common::{BIN, fixture};
use serde_json::Value;

const HOME_IP: &str = "198.51.100.47";
const VPN_EXIT_IP: &str = "192.0.2.18";

const PROBE_SETTINGS: [&str; 6] = [
    "--set",
    "probe.endpoints=[\"http://203.0.113.10/\"]",
    "--set",
    "probe.timeout_secs=2",
    "--set",
    "log.error_path=\"\"",
];

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
    assert_eq!(path(&v, "physical")["egress_ip"], HOME_IP);
    assert_eq!(path(&v, "physical")["error"], Value::Null);
    assert_eq!(path(&v, "physical")["bound_to"], "en0");
    assert!(path(&v, "physical")["duration_seconds"].as_f64().unwrap() < 5.0);
    assert_eq!(path(&v, "tunnel")["egress_ip"], VPN_EXIT_IP);
    assert_eq!(path(&v, "default")["egress_ip"], VPN_EXIT_IP);
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
    assert_eq!(path(&v, "bypass")["egress_ip"], HOME_IP);
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

/// The agent in `auto` mode with the policy-routing backend heals the lab by itself, says so
/// on /health, /metrics and in its log; when the tunnel goes, it reverts and leaves no rule.
#[test]
fn agent_heals_the_lab_and_reverts_when_the_tunnel_goes() {
    let lab = Lab::up("e");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("transparent_proxy.log");
    std::fs::write(&log, b"").unwrap();
    let agent_log = dir.path().join("agent.log");
    let rules_before = lab.ip(&["rule"]);
    // No PIA in the lab: the agent stands in for its processes so the processes check is quiet.
    let config = format!(
        "[log]\npath = {log:?}\nerror_path = \"\"\ncheckpoint = {cp:?}\n\
[http]\nlisten = \"10.0.15.15:9847\"\n\
[probe]\nendpoints = [\"http://203.0.113.10/\"]\ninterval_secs = 2\ntimeout_secs = 1.5\n\
[processes]\nextension = [\"pia-split-tunnel\"]\ndaemon = [\"pia-split-tunnel\"]\nvpn = [\"pia-split-tunnel\"]\n\
[fallback]\nmode = \"auto\"\nbackend = \"policy-routing\"\nconsecutive_rounds = 2\ntunnel_down_rounds = 2\ncooldown_secs = 1\n",
        cp = dir.path().join("cp.json"),
    );
    let config_path = dir.path().join("agent.toml");
    std::fs::File::create(&config_path)
        .unwrap()
        .write_all(config.as_bytes())
        .unwrap();
    let mut child: Child = Command::new("ip")
        .args(["netns", "exec", &lab.mac(), BIN, "--config"])
        .arg(&config_path)
        .arg("run")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&agent_log).unwrap())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(&mut child);
    let wait_for = |what: &str, check: &dyn Fn(&str) -> bool, url: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let (_, body) = lab.get(url);
            if check(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not happen; last {url}: {body}\nagent log:\n{}",
                std::fs::read_to_string(&agent_log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let metrics = "http://10.0.15.15:9847/metrics";
    // Whole lines: a HELP text may contain the same words.
    let has = |body: &str, line: &str| body.lines().any(|l| l == line);
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
        std::fs::read_to_string(&agent_log)
            .unwrap()
            .contains("applied"),
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
