//! `fallback apply|revert|status`. These act on the backend directly; with an agent running in
//! `auto`, prefer the HTTP endpoints so its controller sees the change.

use std::net::Ipv4Addr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::fallback::{FallbackConfig, Plan, build_backend};
use crate::os::PhysicalIf;
use crate::probe::ProbeConfig;

/// The physical side the rules are rendered for.
#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// Physical interface (e.g. en0); default: discovered.
    #[arg(long)]
    pub interface: Option<String>,
    /// Its IPv4 address, the source the bypass binds to (e.g. 10.0.15.15); default: discovered.
    #[arg(long)]
    pub address: Option<Ipv4Addr>,
    /// Its default gateway (e.g. 10.0.15.1); default: discovered.
    #[arg(long)]
    pub gateway: Option<Ipv4Addr>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum FallbackOp {
    /// Install the fallback now (no egress verification: that needs the agent's probes).
    Apply(TargetArgs),
    /// Remove whatever the backend has installed, and release the pf token.
    Revert,
    /// Print what is installed.
    Status,
}

/// The physical interface as discovered (or named in `probe.physical_interface`), with flags
/// overriding each fact.
pub fn plan(cfg: &FallbackConfig, probe: &ProbeConfig, t: &TargetArgs) -> anyhow::Result<Plan> {
    let mut ifs = crate::os::discover(
        &crate::os::System::new(cfg.tools()),
        probe.physical_interface.as_deref(),
        probe.tunnel_interface.as_deref(),
    );
    let found = ifs.physical.take();
    // Every fact named by hand: the admin's word replaces discovery's, doubts included.
    if t.interface.is_some() && t.address.is_some() && t.gateway.is_some() {
        ifs.problems.clear();
    }
    let name = t
        .interface
        .clone()
        .or_else(|| found.as_ref().map(|p| p.name.clone()));
    let ipv4 = t.address.or_else(|| found.as_ref().map(|p| p.ipv4));
    let gateway = t.gateway.or_else(|| found.as_ref().and_then(|p| p.gateway));
    let (Some(name), Some(ipv4), Some(gateway)) = (name, ipv4, gateway) else {
        anyhow::bail!(
            "no physical interface with an address and a default gateway was found; \
             pass --interface, --address and --gateway (or set probe.physical_interface)"
        );
    };
    let index = found
        .as_ref()
        .filter(|p| p.name == name)
        .map_or(0, |p| p.index);
    ifs.physical = Some(PhysicalIf {
        name,
        index,
        ipv4,
        gateway: Some(gateway),
    });
    Plan::from_interfaces(&ifs, cfg).context("cannot build the rules")
}

/// `fallback apply|revert|status`.
pub fn run(cfg: &FallbackConfig, probe: &ProbeConfig, op: &FallbackOp) -> anyhow::Result<ExitCode> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let mut backend = build_backend(cfg);
    let kind = backend.kind();
    match op {
        FallbackOp::Apply(t) => {
            let plan = plan(cfg, probe, t)?;
            backend
                .apply(&plan)
                .with_context(|| format!("{kind}: apply"))?;
            println!("applied ({kind}):\n{}", backend.render(&plan));
        }
        FallbackOp::Revert => {
            backend
                .revert()
                .with_context(|| format!("{kind}: revert"))?;
            println!("reverted ({kind})");
        }
        FallbackOp::Status => {
            let loaded = backend
                .status()
                .with_context(|| format!("{kind}: status"))?;
            println!("mode: {}\nbackend: {kind}", cfg.mode);
            if loaded.is_empty() {
                println!("installed: nothing");
            } else {
                println!("installed:");
                for l in &loaded.rules {
                    println!("  {l}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
