//! A probe round: discovery, one pinned resolution, four paths at once, one deadline.

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::http::{Bind, Endpoint, fetch};
use super::{PathKind, PathResult, ProbeConfig, ProbeError, Round, RoundSource};
use crate::os::{Interfaces, Os, System};

pub struct Prober {
    config: ProbeConfig,
    endpoints: Vec<Endpoint>,
    os: Arc<dyn Os>,
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
        let interfaces = tokio::task::block_in_place(|| {
            crate::os::discover(
                self.os.as_ref(),
                cfg.physical_interface.as_deref(),
                cfg.tunnel_interface.as_deref(),
            )
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
        let (physical, tunnel, bypass, default) = tokio::join!(
            run(PathKind::Physical),
            run(PathKind::Tunnel),
            run(PathKind::Bypass),
            run(PathKind::Default)
        );
        Round {
            interfaces,
            results: vec![physical, tunnel, bypass, default],
        }
    }
}

impl RoundSource for Prober {
    fn round(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Round> + Send + '_>> {
        Box::pin(self.round_now())
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
