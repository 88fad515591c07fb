//! pia-split-tunnel-exporter: watches PIA's split-tunnel transparent proxy on macOS, exports
//! what it sees as Prometheus metrics, and repairs the bypass when it breaks.
//!
//! Data flow, one module per stage:
//! - log: [`tail`] (lossless follower) → [`proxy_log`] (nom grammar) → [`sessions`]
//!   (correlation by id, the window of closes) → [`pipeline`] → [`metrics`] (custom
//!   collector); [`ingest`] runs that side live, with its checkpoint;
//! - network: [`os`] (interface discovery) → [`probe`] (egress per path, verdicts) →
//!   [`fallback`] (policy, PF / policy-routing backends); [`presence`] (PIA's processes);
//! - [`health`] reads every stage, the fallback included; [`agent`] wires the stages;
//! - surfaces: [`http`] (axum), [`cli`] → [`commands`], [`analyze`] (offline), [`demo`];
//! - [`labels`] at the bottom: how the stages declare their fixed label sets.
//!
//! Imports go one way only; `tests/it/architecture.rs` states the layers and checks them.

pub mod agent;
pub mod analyze;
pub mod build_info;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod fallback;
pub mod health;
pub mod http;
pub mod ingest;
pub mod labels;
pub mod logging;
pub mod metrics;
pub mod netwatch;
pub mod os;
pub mod pipeline;
pub mod presence;
pub mod probe;
pub mod proxy_log;
pub mod sessions;
pub mod status;
pub mod tail;
