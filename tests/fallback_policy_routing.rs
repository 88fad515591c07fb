//! The policy-routing backend in a network namespace this test creates (never the default
//! namespace): the kernel's own route lookup shows the bypass source leaving through the
//! physical gateway after apply and through the tunnel again after revert, with no stray rule.
//! Needs root and `ip netns`; fails with the reason when they are missing.

mod common;

use std::net::Ipv4Addr;

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
        ns.route_from_source("198.51.100.47").contains("dev utun0"),
        "broken before"
    );
    let mut b = ns.backend();
    assert!(b.status().unwrap().is_empty());

    b.apply(&plan(SRC, GW)).expect("apply");
    let r = ns.route_from_source("198.51.100.47");
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
    assert!(ns.route_from_source("198.51.100.47").contains("dev utun0"));
}

#[test]
fn policy_routing_reload_replaces_and_leftovers_are_removed() {
    let ns = Netns::new();
    let rules_before = ns.rules();
    ns.ip("addr add 10.0.15.16/24 dev phys0");
    let mut b = ns.backend();
    b.apply(&plan(SRC, GW)).unwrap();
    b.apply(&plan(Ipv4Addr::new(10, 0, 15, 16), GW)).unwrap();
    let rules = ns.rules();
    assert_eq!(rules.matches("lookup 100").count(), 1, "{rules}");
    assert!(rules.contains("from 10.0.15.16 lookup 100"), "{rules}");

    // A crash loop's leftovers, plus someone else's rule at the same priority.
    ns.ip("-4 rule add from 10.0.15.15 lookup 100 priority 100");
    ns.ip("-4 rule add from 10.0.15.99 lookup 200 priority 100");
    // A new process, knowing nothing, reverts.
    ns.backend().revert().unwrap();
    let rules = ns.rules();
    assert!(!rules.contains("lookup 100"), "{rules}");
    assert!(
        rules.contains("from 10.0.15.99 lookup 200"),
        "foreign rule kept: {rules}"
    );
    ns.ip("-4 rule del from 10.0.15.99 lookup 200 priority 100");
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
    let r = ns.route_from_source("198.51.100.47");
    assert!(r.contains("table 200") && r.contains("dev phys0"), "{r}");
    // Even a process that knows only the state file, not the new config, finds it.
    ns.backend_with(100, 100, &state).revert().unwrap();
    assert_eq!(ns.rules(), rules_before);
    assert!(ns.ip("-4 route show table 200").trim().is_empty());
}
