//! pia-split-tunnel-exporter: watches PIA's split-tunnel transparent proxy on macOS, exports
//! what it sees as Prometheus metrics, and repairs the bypass when it breaks.
//!
//! Data flow, one module per stage:
//! - log: [`tail`] (lossless follower) → [`proxy_log`] (nom grammar) → [`sessions`]
//!   (correlation by id) → [`metrics`] (per-app counters, custom collector);
//! - network: [`os`] (interface discovery) → [`probe`] (egress per path, verdicts) →
//!   [`health`] → [`fallback`] (policy, PF / policy-routing backends);
//! - surfaces: [`http`] (axum), [`cli`], [`analyze`] (offline), [`demo`].

pub mod agent;
pub mod analyze;
pub mod cli;
pub mod commands;
pub mod config;
pub mod demo;
pub mod fallback;
pub mod health;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod os;
pub mod pipeline;
pub mod probe;
pub mod proxy_log;
pub mod sessions;
pub mod tail;
pub mod watch;
