//! The policy-routing backend in a network namespace this test creates (never the default
//! namespace): the kernel's own route lookup shows the bypass source leaving through the
//! physical gateway after apply and through the tunnel again after revert, with no stray rule.
//! Needs root and `ip netns`; fails with the reason when they are missing.

use crate::common;

use std::net::Ipv4Addr;

use common::PHYS_EGRESS;
use common::netns::{Netns, PRIORITY, TABLE};

use pia_split_tunnel_exporter::fallback::policy_routing::{PolicyRouting, PolicyRoutingOptions};
use pia_split_tunnel_exporter::fallback::{Backend, BackendError, FallbackConfig, Plan};
use pia_split_tunnel_exporter::os::{Interfaces, PhysicalIf};

fn plan(source: Ipv4Addr, gateway: Ipv4Addr) -> Plan {
    let cfg = FallbackConfig {
        bypass_subnets: vec!["203.0.113.0/24".parse().unwrap()],
        ..FallbackConfig::default()
    };
    let ifs = Interfaces {
        physical: Some(PhysicalIf {
            name: "phys0".into(),
            index: 2,
            ipv4: source,
            gateway: Some(gateway),
        }),
        tunnel: None,
        problems: Vec::new(),
    };
    Plan::from_interfaces(&ifs, &cfg).unwrap()
}

const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 15, 15);
const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 15, 1);

#[test]
fn policy_routing_apply_steers_the_bypass_and_revert_leaves_nothing() {
    let ns = Netns::new();
    let rules_before = ns.rules();
    assert!(
        ns.route_from_source(PHYS_EGRESS).contains("dev utun0"),
        "broken before"
    );
    let mut b = ns.backend();
    assert!(b.status().unwrap().is_empty());

    b.apply(&plan(SRC, GW)).expect("apply");
    let r = ns.route_from_source(PHYS_EGRESS);
    assert!(
        r.contains("via 10.0.15.1 dev phys0") && r.contains("table 100"),
        "{r}"
    );
    // Private ranges, loopback and the bypass subnets fall through to the main table.
    assert!(ns.route_from_source("10.0.15.20").contains("dev phys0"));
    assert!(!ns.route_from_source("10.0.15.20").contains("table 100"));
    assert!(ns.route_from_source("10.16.0.1").contains("dev utun0"));
    assert!(ns.route_from_source("203.0.113.5").contains("dev utun0"));
    // Other sources still follow the tunnel.
    let other = ns.ip("-4 route get 198.51.100.47");
    assert!(other.contains("dev utun0"), "{other}");
    let loaded = b.status().unwrap();
    assert!(
        loaded
            .rules
            .iter()
            .any(|l| l.contains("from 10.0.15.15 lookup 100")),
        "{loaded:?}"
    );

    b.revert().expect("revert");
    assert_eq!(ns.rules(), rules_before, "no stray rule");
    assert!(b.status().unwrap().is_empty());
    assert!(ns.route_from_source(PHYS_EGRESS).contains("dev utun0"));
}

#[test]
fn policy_routing_reload_replaces_and_leftovers_are_removed() {
    let ns = Netns::new();
    let rules_before = ns.rules();
    ns.ip("addr add 10.0.15.16/24 dev phys0");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("fallback-state.json");
    let mut b = ns.backend_with(TABLE, PRIORITY, &state);
    b.apply(&plan(SRC, GW)).unwrap();
    b.apply(&plan(Ipv4Addr::new(10, 0, 15, 16), GW)).unwrap();
    let rules = ns.rules();
    assert_eq!(rules.matches("lookup 100").count(), 1, "{rules}");
    assert!(rules.contains("from 10.0.15.16 lookup 100"), "{rules}");

    // A crash loop's leftovers, plus someone else's rule at the same priority.
    ns.ip("-4 rule add from 10.0.15.15 lookup 100 priority 100");
    ns.ip("-4 rule add from 10.0.15.99 lookup 200 priority 100");
    // A new process reverts what the state file says was installed, and only that.
    ns.backend_with(TABLE, PRIORITY, &state).revert().unwrap();
    let rules = ns.rules();
    assert!(!rules.contains("lookup 100"), "{rules}");
    assert!(
        rules.contains("from 10.0.15.99 lookup 200"),
        "foreign rule kept: {rules}"
    );
    ns.ip("-4 rule del from 10.0.15.99 lookup 200 priority 100");
    assert_eq!(ns.rules(), rules_before);
    // Without a record, a new process knows of nothing to remove.
    b.apply(&plan(SRC, GW)).unwrap();
    std::fs::remove_file(&state).unwrap();
    let mut unaware = ns.backend_with(TABLE, PRIORITY, &state);
    assert!(unaware.status().unwrap().is_empty());
    unaware.revert().unwrap();
    assert!(ns.rules().contains("from 10.0.15.15 lookup 100"));
    b.revert().unwrap();
    assert_eq!(ns.rules(), rules_before);
}

#[test]
fn policy_routing_failure_carries_stderr_and_rolls_back() {
    let ns = Netns::new();
    let rules_before = ns.rules();
    let mut b = ns.backend();
    // A gateway that is not on the physical link: the route is refused.
    let err = b
        .apply(&plan(SRC, Ipv4Addr::new(192, 0, 2, 1)))
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BackendError::Failed { .. }), "{msg}");
    assert!(msg.contains("route replace default via 192.0.2.1"), "{msg}");
    assert!(
        msg.to_lowercase().contains("gateway") || msg.contains("unreachable"),
        "stderr kept: {msg}"
    );
    assert_eq!(ns.rules(), rules_before, "rolled back");
    assert!(b.status().unwrap().is_empty());

    let mut missing = PolicyRouting::new(PolicyRoutingOptions {
        ip: "/nonexistent/ip".into(),
        table: TABLE,
        priority: PRIORITY,
        netns: Some(ns.0.clone()),
        state_file: None,
    });
    let err = missing.apply(&plan(SRC, GW)).unwrap_err();
    assert!(matches!(err, BackendError::Spawn { .. }), "{err}");
}

#[test]
fn policy_routing_changed_table_and_priority_still_remove_the_earlier_install() {
    let ns = Netns::new();
    let rules_before = ns.rules();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state/fallback-state.json");
    ns.backend_with(100, 100, &state)
        .apply(&plan(SRC, GW))
        .unwrap();
    assert!(ns.rules().contains("from 10.0.15.15 lookup 100"));

    // The config now says table 200, priority 300; a new process (restart, CLI) starts.
    let mut b = ns.backend_with(200, 300, &state);
    let seen = b.status().unwrap();
    assert!(
        seen.rules.iter().any(|r| r.contains("lookup 100")),
        "adopt sees the earlier install: {seen:?}"
    );
    b.revert().unwrap();
    assert_eq!(ns.rules(), rules_before, "earlier rule removed");
    assert!(
        ns.ip("-4 route show table 100").trim().is_empty(),
        "earlier table flushed"
    );
    assert!(!state.exists(), "nothing installed, nothing recorded");

    // Apply under the new values replaces the earlier install instead of stacking on it.
    ns.backend_with(100, 100, &state)
        .apply(&plan(SRC, GW))
        .unwrap();
    let mut b = ns.backend_with(200, 300, &state);
    b.apply(&plan(SRC, GW)).unwrap();
    let rules = ns.rules();
    assert!(!rules.contains("lookup 100"), "{rules}");
    assert!(
        rules.contains("300:\tfrom 10.0.15.15 lookup 200"),
        "{rules}"
    );
    assert!(ns.ip("-4 route show table 100").trim().is_empty());
    let r = ns.route_from_source(PHYS_EGRESS);
    assert!(r.contains("table 200") && r.contains("dev phys0"), "{r}");
    // Even a process that knows only the state file, not the new config, finds it.
    ns.backend_with(100, 100, &state).revert().unwrap();
    assert_eq!(ns.rules(), rules_before);
    assert!(ns.ip("-4 route show table 200").trim().is_empty());
}

/// Another tool's routes and rule in table 100 (at the agent's own priority, even): a backend
/// with no record of installing them neither sees (adopts) nor removes them, and apply refuses
/// the table, naming a free one.
#[test]
fn policy_routing_never_adopts_nor_flushes_another_tools_table() {
    let ns = Netns::new();
    ns.ip("-4 route add 198.51.100.0/24 via 10.0.15.1 dev phys0 table 100");
    ns.ip("-4 rule add from 10.0.15.77 lookup 100 priority 100");
    let theirs = (ns.ip("-4 route show table 100"), ns.rules());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("fallback-state.json");
    let mut b = ns.backend_with(TABLE, PRIORITY, &state);
    assert!(b.status().unwrap().is_empty(), "not ours: not adopted");
    b.revert().unwrap();
    assert_eq!((ns.ip("-4 route show table 100"), ns.rules()), theirs);
    let err = b.apply(&plan(SRC, GW)).unwrap_err().to_string();
    assert!(
        err.contains("fallback.route_table = 100 is in use by another tool")
            && err.contains("e.g. 101"),
        "{err}"
    );
    assert_eq!((ns.ip("-4 route show table 100"), ns.rules()), theirs);
    assert!(!state.exists(), "nothing installed, nothing recorded");
    assert!(b.status().unwrap().is_empty());

    // On the free table it names, the fallback works and its revert leaves theirs alone.
    let mut b = ns.backend_with(101, PRIORITY, &state);
    b.apply(&plan(SRC, GW)).unwrap();
    assert!(ns.route_from_source(PHYS_EGRESS).contains("table 101"));
    b.revert().unwrap();
    assert_eq!((ns.ip("-4 route show table 100"), ns.rules()), theirs);
}

/// The agent itself (observe mode, `on_start = "adopt"`, `on_shutdown = "remove"`, the
/// defaults) in the namespace, beside another tool's table 100: `fallback_active` stays 0,
/// `/health` does not call the fallback active, and a stop flushes nothing.
#[test]
fn agent_leaves_another_tools_table_alone_from_start_to_stop() {
    use common::agent::Metrics;
    use common::lab::http_in;
    use std::time::{Duration, Instant};
    let ns = Netns::new();
    ns.ip("-4 route add 198.51.100.0/24 via 10.0.15.1 dev phys0 table 100");
    ns.ip("-4 rule add from 10.0.15.15 lookup 100 priority 100");
    let theirs = (ns.ip("-4 route show table 100"), ns.rules());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("proxy.log"), "").unwrap();
    let mut agent = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            common::BIN,
            "run",
            "--listen",
            "127.0.0.1:9847",
        ])
        .arg("--log-path")
        .arg(d.join("proxy.log"))
        .arg("--checkpoint")
        .arg(d.join("checkpoint.json"))
        .args(["--set", "probe.enabled=false", "--set"])
        .arg(format!("log.error_path={:?}", d.join("STProxy.log")))
        .args(["--set", "fallback.backend=\"policy-routing\"", "--set"])
        .arg(format!("fallback.state_file={:?}", d.join("state.json")))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed if an assertion fails first.
    struct Guard(u32);
    impl Drop for Guard {
        fn drop(&mut self) {
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
    let _guard = Guard(agent.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let (code, body) = http_in(&ns.0, "GET", "http://127.0.0.1:9847/metrics", None);
        if code == 200 {
            break Metrics::parse(&body);
        }
        assert!(
            Instant::now() < deadline,
            "agent not serving: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(metrics.0.contains_key("pia_split_tunnel_fallback_active"));
    assert_eq!(metrics.value("pia_split_tunnel_fallback_active", &[]), 0.0);
    let (_, health) = http_in(&ns.0, "GET", "http://127.0.0.1:9847/health", None);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    let fallback = &health["components"]["fallback"];
    println!("/health fallback: {fallback}");
    assert!(
        fallback["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("inactive")),
        "{fallback}"
    );
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    assert!(agent.wait().unwrap().success());
    assert_eq!(
        (ns.ip("-4 route show table 100"), ns.rules()),
        theirs,
        "nothing flushed"
    );
}
