//! pia-split-tunnel-exporter: watches PIA's split-tunnel transparent proxy on macOS, exports
//! what it sees as Prometheus metrics, and repairs the bypass when it breaks.
//!
//! The modules form two columns on one ground floor: the log's ([`tail`] → [`proxy_log`] →
//! [`sessions`] → [`log_state`] → [`ingest`], [`analyze`]) and the network's ([`netwatch`],
//! [`probe`], [`presence`]) on [`os`], [`check`], [`metrics`], [`labels`], [`logging`] and
//! [`build_info`]; [`health`], [`fallback`], [`status`] and [`agent`] join them, [`server`]
//! serves them, [`config`], [`daemon`], [`demo`], [`commands`] and [`cli`] sit on top.
//! `docs/architecture.md` is the map (a code map with its invariants); `tests/it/architecture.rs`
//! checks that imports only go down and never between the columns.

pub mod agent;
pub mod analyze;
pub mod build_info;
pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod fallback;
pub mod health;
pub mod ingest;
pub mod labels;
pub mod log_state;
pub mod logging;
pub mod metrics;
pub mod netwatch;
pub mod os;
pub mod presence;
pub mod probe;
pub mod proxy_log;
pub mod server;
pub mod sessions;
pub mod status;
pub mod tail;
