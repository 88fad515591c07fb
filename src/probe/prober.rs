//! A probe round: discovery, one pinned resolution, four paths at once, one deadline.
//!
//! The bypass path gets a shorter deadline of its own once the physical path has answered in
//! the same round: [`bypass_grace`] of the physical path's time (at least 750 ms). A broken
//! bypass is a black hole (no RST, no ICMP: the packets leave through the tunnel with a
//! source the VPN drops), so without this every broken round would wait the full
//! `probe.timeout_secs`. The cut is sound because a working bypass leaves through the same
//! interface to the same servers as the physical path, so it answers in about the same time;
//! when the physical path fails there is nothing to compare with and the full deadline holds.
//! A slow bypass cut short only reads as broken for one round: the policy needs consecutive
//! rounds, and an applied fallback is verified by a fresh round of real requests.

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{Bind, Endpoint, fetch};
use super::{PathKind, PathResult, ProbeConfig, ProbeError, Round, RoundSource};
use crate::os::discovery::BindingSource;
use crate::os::{Interfaces, Os, System};

pub struct Prober {
    config: ProbeConfig,
    endpoints: Vec<Endpoint>,
    os: Arc<dyn Os>,
    /// The proxy's word on its interface, once the agent has wired the log in.
    binding: std::sync::OnceLock<BindingSource>,
}

impl Prober {
    /// `config` is validated: endpoints that do not parse are left out.
    pub fn new(config: ProbeConfig) -> Prober {
        let endpoints = config
            .endpoints
            .iter()
            .filter_map(|e| Endpoint::parse(e).ok())
            .collect();
        Prober {
            config,
            endpoints,
            os: Arc::new(System::default()),
            binding: std::sync::OnceLock::new(),
        }
    }

    /// Discovery through another view of the OS (a fake in tests).
    pub fn with_os(mut self, os: Arc<dyn Os>) -> Prober {
        self.os = os;
        self
    }

    /// One round with the interfaces discovered now.
    pub async fn round_now(&self) -> Round {
        let cfg = &self.config;
        let proxy = self.binding.get().map(|b| b()).unwrap_or_default();
        let interfaces = tokio::task::block_in_place(|| {
            crate::os::discover_with(
                self.os.as_ref(),
                cfg.physical_interface.as_deref(),
                cfg.tunnel_interface.as_deref(),
                &proxy,
            )
            .interfaces
        });
        self.round_with(interfaces).await
    }

    /// One round over given interfaces: every path within `timeout_secs`.
    pub async fn round_with(&self, interfaces: Interfaces) -> Round {
        let deadline = Instant::now() + self.config.timeout();
        // Resolved once and pinned, so every path asks the same servers.
        let targets = tokio::time::timeout_at(deadline.into(), resolve(&self.endpoints))
            .await
            .unwrap_or_default();
        let bind = |path| match path {
            PathKind::Physical => interfaces
                .physical
                .as_ref()
                .map(|p| Bind::Interface(p.index)),
            PathKind::Tunnel => interfaces.tunnel.as_ref().map(|t| Bind::Interface(t.index)),
            PathKind::Bypass => interfaces.physical.as_ref().map(|p| Bind::Source(p.ipv4)),
            PathKind::Default => Some(Bind::None),
        };
        let run = |path| {
            let targets = &targets;
            let b = bind(path);
            async move {
                let started = Instant::now();
                let outcome = match b {
                    None => Err(ProbeError::NoInterface),
                    Some(b) => try_endpoints(b, targets, deadline).await,
                };
                PathResult {
                    path,
                    outcome,
                    duration: started.elapsed(),
                }
            }
        };
        let (answered, physical_time) = tokio::sync::oneshot::channel::<Duration>();
        let physical = async {
            let r = run(PathKind::Physical).await;
            if r.outcome.is_ok() {
                let _ = answered.send(r.duration);
            }
            r
        };
        let bypass = async {
            let started = Instant::now();
            let cut = async {
                match physical_time.await {
                    Ok(d) => tokio::time::sleep_until((started + bypass_grace(d)).into()).await,
                    Err(_) => std::future::pending().await,
                }
            };
            tokio::select! {
                r = run(PathKind::Bypass) => r,
                _ = cut => PathResult {
                    path: PathKind::Bypass,
                    outcome: Err(ProbeError::Timeout),
                    duration: started.elapsed(),
                },
            }
        };
        let (physical, tunnel, bypass, default) = tokio::join!(
            physical,
            run(PathKind::Tunnel),
            bypass,
            run(PathKind::Default)
        );
        Round {
            interfaces,
            results: vec![physical, tunnel, bypass, default],
        }
    }
}

/// How long the bypass path may take once the physical path answered in `physical`.
pub fn bypass_grace(physical: Duration) -> Duration {
    (physical * BYPASS_GRACE_FACTOR).max(BYPASS_GRACE_MIN)
}

/// A working bypass takes the physical path's route; four times its time is ample.
const BYPASS_GRACE_FACTOR: u32 = 4;
/// Floor for LANs where the physical path answers in a millisecond.
const BYPASS_GRACE_MIN: Duration = Duration::from_millis(750);

impl RoundSource for Prober {
    fn round(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Round> + Send + '_>> {
        Box::pin(self.round_now())
    }

    fn follow_proxy(&self, binding: BindingSource) {
        let _ = self.binding.set(binding);
    }
}

async fn resolve(endpoints: &[Endpoint]) -> Vec<(Endpoint, SocketAddrV4)> {
    let mut out = Vec::new();
    for ep in endpoints {
        if let Ok(addrs) = tokio::net::lookup_host((ep.host.as_str(), ep.port)).await
            && let Some(v4) = addrs
                .filter_map(|a| match a {
                    std::net::SocketAddr::V4(v4) => Some(v4),
                    _ => None,
                })
                .next()
        {
            out.push((ep.clone(), v4));
        }
    }
    out
}

/// Endpoints in turn until one answers; each attempt gets a fair share of what is left, so a
/// black-holed first endpoint cannot use up the whole deadline.
async fn try_endpoints(
    bind: Bind,
    targets: &[(Endpoint, SocketAddrV4)],
    deadline: Instant,
) -> Result<std::net::Ipv4Addr, ProbeError> {
    if targets.is_empty() {
        tokio::time::sleep_until(deadline.into()).await;
        return Err(ProbeError::Other);
    }
    let mut last = ProbeError::Timeout;
    for (i, (ep, addr)) in targets.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let share = left / (targets.len() - i) as u32;
        let attempt = share.max(Duration::from_millis(500)).min(left);
        match fetch(bind, ep, *addr, attempt).await {
            Ok(ip) => return Ok(ip),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::os::{IfaceInfo, ProxyBinding, RouteEntry, RoutingFacts};

    /// Two physical interfaces, en0 holding the unscoped default, and PIA's halves on utun4.
    struct TwoNics;

    impl Os for TwoNics {
        fn interfaces(&self) -> Vec<IfaceInfo> {
            [
                ("en0", [10, 0, 15, 15]),
                ("en1", [192, 0, 2, 15]),
                ("utun4", [10, 16, 11, 143]),
            ]
            .iter()
            .enumerate()
            .map(|(i, (name, ip))| IfaceInfo {
                name: (*name).into(),
                index: i as u32 + 2,
                up: true,
                point_to_point: name.starts_with("utun"),
                loopback: false,
                ipv4: vec![Ipv4Addr::from(*ip)],
            })
            .collect()
        }
        fn route_table(&self) -> Result<Vec<RouteEntry>, String> {
            let r = |dst: [u8; 4], prefix, gw: [u8; 4], dev: &str, scoped| RouteEntry {
                dst: dst.into(),
                prefix,
                gateway: Some(gw.into()),
                interface: dev.into(),
                scoped,
                metric: 0,
            };
            Ok(vec![
                r([0; 4], 0, [10, 0, 15, 1], "en0", false),
                r([0; 4], 0, [192, 0, 2, 1], "en1", true),
                r([0; 4], 1, [10, 16, 0, 1], "utun4", false),
                r([128, 0, 0, 0], 1, [10, 16, 0, 1], "utun4", false),
            ])
        }
        fn routing_facts(&self, _ifs: &Interfaces) -> RoutingFacts {
            RoutingFacts::default()
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn rounds_take_the_proxys_word_and_say_when_it_disagrees() {
        let config = ProbeConfig {
            endpoints: vec![],
            timeout_secs: 0.05,
            ..ProbeConfig::default()
        };
        let prober = Prober::new(config).with_os(Arc::new(TwoNics));
        let alone = prober.round_now().await.interfaces;
        assert_eq!(alone.physical.as_ref().unwrap().name, "en0");
        assert!(alone.trusted(), "{:?}", alone.problems);
        prober.follow_proxy(Arc::new(|| ProxyBinding {
            interface: Some("en1".into()),
            ip: None,
        }));
        let told = prober.round_now().await.interfaces;
        assert_eq!(told.physical.as_ref().unwrap().name, "en1");
        assert_eq!(told.tunnel.as_ref().unwrap().name, "utun4");
        assert!(
            !told.trusted(),
            "en1 against the table's en0 is a disagreement"
        );
    }
}
