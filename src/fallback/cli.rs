//! `rules` and `fallback apply|revert|status`. These act on the backend directly; with an agent
//! running in `auto`, prefer the HTTP endpoints so its controller sees the change.

use std::net::Ipv4Addr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::{Plan, build_backend};
use crate::config::Config;
use crate::os::{Interfaces, PhysicalIf};

/// The physical side the rules are rendered for.
#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// Physical interface (e.g. en0).
    #[arg(long)]
    pub interface: Option<String>,
    /// Its IPv4 address, the source the bypass binds to (e.g. 10.0.15.15).
    #[arg(long)]
    pub address: Option<Ipv4Addr>,
    /// Its default gateway (e.g. 10.0.15.1).
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

fn plan(config: &Config, t: &TargetArgs) -> anyhow::Result<Plan> {
    // Discovery belongs to `os`; until it is wired here, the three facts come from flags.
    let (Some(name), Some(ipv4), Some(gateway)) = (&t.interface, t.address, t.gateway) else {
        anyhow::bail!("pass --interface, --address and --gateway of the physical interface");
    };
    let ifs = Interfaces {
        physical: Some(PhysicalIf {
            name: name.clone(),
            index: 0,
            ipv4,
            gateway: Some(gateway),
        }),
        tunnel: None,
    };
    Plan::from_interfaces(&ifs, &config.fallback).context("cannot build the rules")
}

/// `rules`: print what `fallback apply` would load.
pub fn rules_command(config: &Config, target: &TargetArgs) -> anyhow::Result<ExitCode> {
    config.fallback.validate().map_err(anyhow::Error::msg)?;
    let plan = plan(config, target)?;
    print!("{}", build_backend(&config.fallback).render(&plan));
    Ok(ExitCode::SUCCESS)
}

/// `fallback apply|revert|status`.
pub fn fallback_command(config: &Config, op: &FallbackOp) -> anyhow::Result<ExitCode> {
    let cfg = &config.fallback;
    cfg.validate().map_err(anyhow::Error::msg)?;
    let mut backend = build_backend(cfg);
    let kind = backend.kind().as_str();
    match op {
        FallbackOp::Apply(t) => {
            let plan = plan(config, t)?;
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
            println!("mode: {}\nbackend: {kind}", cfg.mode.as_str());
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
