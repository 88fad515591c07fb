//! The integration tests, one binary (as cargo's own `tests/testsuite`): the crate's
//! dependencies are linked once instead of once per file, and `common` is compiled once.
//! Run one file's tests with `cargo test --test it FILE::`.
//!
//! Kept apart, each in its own binary, because they measure the whole process: `floods` and
//! `grammar_props` install a counting global allocator and read live heap bytes,
//! `probe_black_hole` counts the process's open descriptors, `tail_idle` the process's CPU time.
//!
//! Tests here share one process: none changes its environment, current directory, umask or
//! signal dispositions or installs a global subscriber; each works in its own temporary folder,
//! binds port 0 on loopback (fixed ports only inside a namespace of its own) and names its
//! namespaces and labs after its tag and the process id.

mod common;

mod agent_faults;
mod agent_log_only;
mod agent_processes;
mod agent_soak;
mod agent_tailing;
mod analyze;
mod architecture;
mod daemon_signals;
mod diagnose_bundle;
mod diagnose_from;
mod fallback_controller;
mod fallback_http;
mod fallback_netns_e2e;
mod fallback_pf;
mod fallback_policy;
mod fallback_policy_routing;
mod fallback_recheck;
mod fallback_webhook_hostile;
mod fleet_alertmanager;
mod health_model;
mod hostile_local;
mod http_hostile;
mod http_tls;
mod lab_probe;
mod lab_retire;
mod logging;
mod ops_fleet;
mod ops_launchd;
mod ops_prometheus;
mod ops_promtool;
mod presence;
mod probe_bypass_deadline;
mod proxy_statements;
mod release;
mod status_page;
mod tail_checkpoint;
mod tail_follower;
mod tail_model;
mod tail_tailer;
mod verdict_truth_table;
