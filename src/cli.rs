//! Command line: one subcommand per job; each dispatches to the module that owns it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Parser, Debug)]
#[command(name = "pia-split-tunnel-exporter", version, about)]
pub struct Cli {
    /// Config file (TOML). Missing keys take their defaults.
    #[arg(long, short, global = true, env = "PIA_STE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent (the default).
    Run,
    /// Probe every egress path once and print a table; exit 1 when the bypass is broken.
    Probe,
    /// Print the rules the fallback would load.
    Rules(crate::fallback::cli::TargetArgs),
    /// Install, remove or show the fallback by hand.
    Fallback {
        #[command(subcommand)]
        op: crate::fallback::cli::FallbackOp,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = Config::default();
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => Ok(ExitCode::SUCCESS),
        Command::Probe => crate::probe::cli::probe_command(&config),
        Command::Rules(target) => crate::fallback::cli::rules_command(&config, &target),
        Command::Fallback { op } => crate::fallback::cli::fallback_command(&config, &op),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
