//! Egress probes through each path and the one verdict derived from them ([`verdict`]).
//!
//! Each round re-discovers the interfaces, resolves the what-is-my-IP endpoints once (pinned
//! for every path of the round), and asks them through four paths at once: bound to the
//! physical interface, bound to the tunnel, bound only to the physical *address* (what PIA's
//! proxy does, the path that breaks), and unbound. A round is bounded by `probe.timeout_secs`
//! whatever the endpoints do; the bypass path by less once the physical path has answered
//! (see [`prober`]). When rounds run is the agent's decision (`crate::agent::schedule`).

pub mod client;
pub mod lab;
pub mod metrics;
pub mod prober;
pub mod verdict;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use macro_rules_attribute::apply;
use serde::{Deserialize, Serialize};

use crate::labels::label_set;
use crate::os::Interfaces;
pub use metrics::ProbeMetrics;
pub use prober::Prober;
pub use verdict::{ProbeState, Verdict};

/// A way out of the machine.
#[apply(label_set!)]
#[derive(PartialOrd, Ord)]
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

/// Why a probe failed.
#[apply(label_set!)]
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
        self.result(path).and_then(|r| r.outcome.ok())
    }

    pub fn result(&self, path: PathKind) -> Option<&PathResult> {
        self.results.iter().find(|r| r.path == path)
    }
}

/// Where probe rounds come from: the real prober, or a replay (the demo, tests). The round
/// loop and the fallback controller (a fresh round to verify an apply) share one.
pub trait RoundSource: Send + Sync + 'static {
    fn round(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Round> + Send + '_>>;

    /// Where discovery reads the proxy's latest `bindInterface` / `bindIp` from (the log
    /// pipeline); sources that do not discover ignore it.
    fn follow_proxy(&self, _binding: crate::os::discovery::BindingSource) {}
}

/// A closure returning rounds (scripted rounds in tests).
impl<F, Fut> RoundSource for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Round> + Send + 'static,
{
    fn round(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Round> + Send + '_>> {
        Box::pin(self())
    }
}

/// `[probe]`: how and where egress is measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// Off: the agent watches the log only.
    pub enabled: bool,
    /// Heartbeat: a round at least this often; route changes and log evidence start rounds
    /// sooner.
    pub interval_secs: u64,
    /// Start a round when the routing table, a link or an address changes.
    pub watch_routes: bool,
    /// Bound of one path (all its endpoint attempts), and so of a round.
    pub timeout_secs: f64,
    /// What-is-my-IP services (`http://` only); the body is an IPv4 address.
    pub endpoints: Vec<String>,
    /// The physical interface; unset: the interface of the default route that is not a tunnel.
    pub physical_interface: Option<String>,
    /// The VPN's tunnel; unset: an up tunnel-like interface with an IPv4 address.
    pub tunnel_interface: Option<String>,
    /// Export the egress IPs and interface addresses as metric labels (they land in the TSDB).
    pub export_addresses: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            enabled: true,
            interval_secs: 300,
            watch_routes: true,
            timeout_secs: 5.0,
            endpoints: vec![
                "http://api.ipify.org/".into(),
                "http://icanhazip.com/".into(),
                "http://ifconfig.me/ip".into(),
            ],
            physical_interface: None,
            tunnel_interface: None,
            export_addresses: false,
        }
    }
}

impl ProbeConfig {
    pub fn validate(&self) -> Result<(), String> {
        crate::check::in_range("probe.interval_secs", self.interval_secs, 1..=86_400, "300")?;
        if !(self.timeout_secs > 0.0 && self.timeout_secs <= 300.0) {
            return Err(
                "probe.timeout_secs must be a number of seconds in (0, 300] (default 5)".into(),
            );
        }
        if self.timeout_secs >= self.interval_secs as f64 {
            return Err("probe.timeout_secs must be shorter than probe.interval_secs".into());
        }
        if self.enabled && self.endpoints.is_empty() {
            return Err("probe.endpoints is empty: name at least one what-is-my-IP URL, or set probe.enabled = false".into());
        }
        for e in &self.endpoints {
            client::Endpoint::parse(e).map_err(|why| format!("probe.endpoints: {e:?}: {why}"))?;
        }
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_secs)
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }

    /// The real prober, unless probing is off.
    pub fn source(&self) -> Option<Arc<dyn RoundSource>> {
        self.enabled
            .then(|| Arc::new(Prober::new(self.clone())) as Arc<dyn RoundSource>)
    }
}

/// Rounds of the lab's topology, for tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    pub use super::lab::{HOME_IP, VPN_EXIT_IP};
    use super::{PathKind, PathResult, ProbeError, Round};

    /// en0 10.0.15.15 (egress: the home IP) and, with `tunnel`, utun4 (egress: the VPN's exit).
    pub fn lab_round(
        tunnel: bool,
        bypass: Result<Ipv4Addr, ProbeError>,
        default: Ipv4Addr,
    ) -> Round {
        let r = |path, outcome| PathResult {
            path,
            outcome,
            duration: Duration::from_millis(40),
        };
        Round {
            interfaces: super::lab::interfaces(tunnel),
            results: vec![
                r(PathKind::Physical, Ok(HOME_IP)),
                r(
                    PathKind::Tunnel,
                    if tunnel {
                        Ok(VPN_EXIT_IP)
                    } else {
                        Err(ProbeError::NoInterface)
                    },
                ),
                r(PathKind::Bypass, bypass),
                r(PathKind::Default, Ok(default)),
            ],
        }
    }
}
