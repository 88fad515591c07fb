//! `rules`: the rules the fallback would load, for the physical side discovered or given.

use std::process::ExitCode;

use super::fallback::{TargetArgs, plan};
use crate::fallback::{FallbackConfig, build_backend};
use crate::probe::ProbeConfig;

/// `rules`: print what `fallback apply` would load.
pub fn run(
    cfg: &FallbackConfig,
    probe: &ProbeConfig,
    target: &TargetArgs,
) -> anyhow::Result<ExitCode> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let plan = plan(cfg, probe, target)?;
    print!("{}", build_backend(cfg).render(&plan));
    Ok(ExitCode::SUCCESS)
}
