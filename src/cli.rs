//! Command line: parses the flags and the config, and dispatches each subcommand to its module
//! in [`crate::commands`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::config::Config;
use crate::server::ListenAddr;

#[derive(Parser, Debug)]
#[command(
    name = "pia-split-tunnel-exporter",
    version = crate::build_info::LONG_VERSION,
    about = "Watches PIA's split tunnel, exports Prometheus metrics, repairs the bypass."
)]
pub struct Cli {
    /// Config file (TOML). Missing keys take their defaults.
    #[arg(long, short, global = true, env = "PIA_STE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override any config key: `--set section.key=value` (repeatable), e.g. `--set log.max_apps=128`.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[command(flatten)]
    pub common: CommonFlags,
    #[command(flatten)]
    pub log: crate::logging::LogFlags,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Shorthands for the keys people change most (same as `--set`).
#[derive(Args, Debug, Default)]
pub struct CommonFlags {
    /// `http.listen`: address of /metrics: HOST:PORT, [IPV6]:PORT, or :PORT for every address.
    #[arg(
        long = "web.listen-address",
        visible_alias = "listen",
        global = true,
        value_name = "ADDR:PORT"
    )]
    pub listen: Option<ListenAddr>,
    /// `http.web_config_file`: TLS and basic auth, in the Prometheus exporter toolkit's format.
    #[arg(long = "web.config.file", global = true, value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// `log.path`: the proxy's log file.
    #[arg(long, global = true, value_name = "FILE")]
    pub log_path: Option<PathBuf>,
    /// `log.checkpoint`: where the agent keeps its position.
    #[arg(long, global = true, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent: tail the log, probe, serve /metrics (the default).
    Run,
    /// Read log files (archives `.1` included) and print a per-app report and a verdict.
    Analyze {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long, conflicts_with = "prom")]
        json: bool,
        /// Print the metrics the agent would export after these files (Prometheus text format,
        /// e.g. for node_exporter's textfile collector).
        #[arg(long)]
        prom: bool,
        /// Also print throughput and peak memory (to stderr).
        #[arg(long)]
        stats: bool,
    },
    /// Replay embedded sample logs (healthy, then the failure) and run the real agent on them.
    Demo {
        /// Replay speed: 1 is the logs' own pace.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
    /// Validate the config and print the effective values.
    CheckConfig,
    /// Probe every egress path once and print a table; exit 1 when the bypass is broken.
    Probe {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Log statistics, one probe round and what the system says, in plain English: the cause
    /// and the repair. Exit 1 when the bypass is broken.
    Diagnose {
        /// Judge a saved machine instead, offline: a folder with netstat-rn.txt (`netstat -rn -f
        /// inet`) and ifconfig.txt (`ifconfig -a`), or Linux's ip-route.txt and ip-addr.txt,
        /// and optionally route-get-default.txt, transparent_proxy.log, pfctl-anchors.txt (what
        /// --save writes). Exit 3 when the interfaces are uncertain.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// With --from: print JSON.
        #[arg(long, requires = "from", conflicts_with_all = ["save", "report"])]
        json: bool,
        /// Save a support bundle (this machine's, or the --from folder's) into DIR, a new or
        /// empty folder made with mode 0700: what --from reads back, and more (versions,
        /// PIA's split-tunnel settings, the end of the proxy's log, a probe round, /health).
        #[arg(long, value_name = "DIR", conflicts_with = "report")]
        save: Option<PathBuf>,
        /// Print a bug report for PIA's tracker in Markdown (this machine's, or the --from
        /// folder's).
        #[arg(long)]
        report: bool,
        /// With --save or --report: replace public addresses, MAC addresses and home folders
        /// by stable placeholders.
        #[arg(long)]
        redact: bool,
        /// PIA's settings.json, read for its split-tunnel keys only (default: PIA's own path).
        #[arg(long, value_name = "FILE")]
        pia_settings: Option<PathBuf>,
    },
    /// Print the rules the fallback would load.
    Rules(commands::fallback::TargetArgs),
    /// Install, remove or show the fallback by hand.
    Fallback {
        #[command(subcommand)]
        op: commands::fallback::FallbackOp,
    },
}

impl Cli {
    fn config(&self) -> anyhow::Result<Config> {
        Ok(Config::load(self.config.as_deref(), &self.overrides())?)
    }

    /// The `--set` flags and the shorthands, as `section.key=value`.
    fn overrides(&self) -> Vec<String> {
        let mut set = self.set.clone();
        let c = &self.common;
        if let Some(l) = &c.listen {
            set.push(format!("http.listen=\"{l}\""));
        }
        if let Some(p) = &c.web_config_file {
            set.push(format!("http.web_config_file={}", toml_string(p)));
        }
        if let Some(p) = &c.log_path {
            set.push(format!("log.path={}", toml_string(p)));
        }
        if let Some(p) = &c.checkpoint {
            set.push(format!("log.checkpoint={}", toml_string(p)));
        }
        set
    }
}

fn toml_string(p: &std::path::Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(mut cli: Cli) -> anyhow::Result<ExitCode> {
    // The config first: it sets the log's level and format (an error is printed by `main`);
    // what loading it had to say is logged once the log is set up.
    let (config, warnings) = Config::load_quietly(cli.config.as_deref(), &cli.overrides())?;
    crate::logging::init(&cli.log, &config.agent_log);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    match cli.command.take().unwrap_or(Command::Run) {
        // SIGHUP reads the same file with the same flags again.
        Command::Run => commands::run(config, move || cli.config()),
        Command::Analyze {
            files,
            json,
            prom,
            stats,
        } => commands::analyze::run(
            &config.log,
            config.sessions.thresholds(),
            &files,
            json,
            prom,
            stats,
        ),
        Command::Demo { speed } => commands::demo(config, speed),
        Command::CheckConfig => commands::check_config(&config),
        Command::Probe { json } => commands::probe::run(&config.probe, json),
        Command::Diagnose {
            from,
            json,
            save,
            report,
            redact,
            pia_settings,
        } => {
            let args = commands::diagnose::BundleArgs {
                from: from.as_deref(),
                redact,
                pia_settings: pia_settings.as_deref(),
            };
            if (redact || args.pia_settings.is_some()) && save.is_none() && !report {
                anyhow::bail!("--redact and --pia-settings go with --save or --report");
            }
            match (save, report, &from) {
                (Some(out), _, _) => commands::diagnose::run_save(&config, &out, &args),
                (None, true, _) => commands::diagnose::run_report(&config, &args),
                (None, false, Some(dir)) => commands::diagnose::run_from(&config, dir, json),
                (None, false, None) => commands::diagnose::run(&config),
            }
        }
        Command::Rules(target) => commands::rules::run(&config.fallback, &config.probe, &target),
        Command::Fallback { op } => commands::fallback::run(&config.fallback, &config.probe, &op),
    }
}
