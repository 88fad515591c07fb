//! Egress probes through each path and the verdicts derived from them.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

use crate::os::Interfaces;

/// A way out of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// Socket bound to the physical interface (IP_BOUND_IF / SO_BINDTODEVICE).
    Physical,
    /// Socket bound to the tunnel interface.
    Tunnel,
    /// Socket bound only to the physical interface's source IP: what the proxy does.
    Bypass,
    /// No binding: the routing table decides.
    Default,
}

impl PathKind {
    pub const ALL: [PathKind; 4] = [
        PathKind::Physical,
        PathKind::Tunnel,
        PathKind::Bypass,
        PathKind::Default,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Physical => "physical",
            PathKind::Tunnel => "tunnel",
            PathKind::Bypass => "bypass",
            PathKind::Default => "default",
        }
    }
}

/// Why a probe failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeError {
    /// The path cannot be tried (its interface is missing).
    NoInterface,
    Timeout,
    Refused,
    Unreachable,
    BadBody,
    Http,
    Other,
}

/// Result of one path in one round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PathResult {
    pub path: PathKind,
    pub outcome: Result<Ipv4Addr, ProbeError>,
    pub duration: Duration,
}

/// One probe round: what discovery found and what each path answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Round {
    pub interfaces: Interfaces,
    pub results: Vec<PathResult>,
}

impl Round {
    pub fn egress(&self, path: PathKind) -> Option<Ipv4Addr> {
        self.results
            .iter()
            .find(|r| r.path == path)
            .and_then(|r| r.outcome.ok())
    }
}

/// `[probe]` section of the config.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {}

pub mod cli {
    //! `probe` and `diagnose` subcommands.
    use std::process::ExitCode;
    pub fn probe_command(_config: &crate::config::Config) -> anyhow::Result<ExitCode> {
        anyhow::bail!("not built yet")
    }
}

/// Where probe rounds come from: the real prober, or a replay (the demo, tests).
pub trait RoundSource: Send + Sync + 'static {
    fn round(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Round> + Send + '_>>;
}
mod glue;
pub use glue::{interval, real_source, record_round, register_metrics};
