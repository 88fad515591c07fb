//! One module per subcommand, each thin over the stages it composes; `cli` parses and
//! dispatches here. The one-liners (run, demo, check-config) live in this file.

pub mod analyze;
pub mod diagnose;
pub mod fallback;
pub mod probe;
pub mod rules;

use std::process::ExitCode;

use crate::config::Config;

/// `run` (the default): the agent, until SIGINT or SIGTERM.
pub fn run(config: Config) -> anyhow::Result<ExitCode> {
    crate::agent::run_blocking(config)
}

/// `demo`: the real agent on replayed sample logs.
pub fn demo(config: Config, speed: f64) -> anyhow::Result<ExitCode> {
    crate::demo::run_blocking(config, speed)
}

/// `check-config`: the effective config, as TOML.
pub fn check_config(config: &Config) -> anyhow::Result<ExitCode> {
    print!("{}", config.to_toml());
    Ok(ExitCode::SUCCESS)
}
