//! The repair: policy, backends (PF on macOS, policy routing on Linux), verification.
//!
//! - [`policy`]: the pure decision state machine (time injected);
//! - [`controller`]: drives a [`Backend`], verifies with a fresh probe, rolls back, backs off;
//! - [`pf`] and [`policy_routing`]: the backends, chosen in one place, [`build_backend`];
//! - the window of session closes it weighs lives in [`crate::sessions::window`];
//! - [`routes`], [`metrics`]: the surfaces (the commands live in `crate::commands`).
//!
//! Undoing the repair by hand (documented because pf is not an API products should build on):
//! macOS `sudo pfctl -a com.apple/250.PiaSplitTunnelFallback -F all` (then `sudo pfctl -X TOKEN`
//! with the token in `pf_token_file`); Linux `ip rule del priority P` and
//! `ip route flush table T`. What an install used is recorded in `state_file` ([`state`]), so
//! these are found after the config changes too.

pub mod controller;
pub mod metrics;
pub mod pf;
pub mod policy;
pub mod policy_routing;
pub mod recheck;
pub mod routes;
pub mod rule_values;
pub mod state;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use macro_rules_attribute::apply;
use serde::{Deserialize, Serialize};

use crate::labels::{label_derives, label_set};
use crate::os::Interfaces;
use crate::os::command::{CommandError, Tools};
pub use rule_values::{IfName, Ipv4Net};

/// Destinations that never take the repair's route: private ranges and loopback (plus the
/// configured `bypass_subnets`). Both backends render from this one list.
const LOCAL_NETS: [&str; 4] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
];

/// What the agent does when the bypass breaks.
#[apply(label_set!)]
#[derive(Default, Deserialize)]
pub enum Mode {
    /// No decisions at all.
    Off,
    /// Decide and report, never act. The default: changing pf is the user's choice.
    #[default]
    Observe,
    /// Decide and act.
    Auto,
}

/// `fallback.backend` as configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendChoice {
    /// pf on macOS, policy routing on Linux, none elsewhere.
    #[default]
    Auto,
    Pf,
    PolicyRouting,
    None,
}

/// The backend actually in use, after `auto` is resolved.
#[apply(label_derives!)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum BackendKind {
    Pf,
    PolicyRouting,
    None,
}

impl BackendChoice {
    /// The one place where `auto` becomes a platform's backend.
    pub fn resolve(self) -> BackendKind {
        match self {
            BackendChoice::Pf => BackendKind::Pf,
            BackendChoice::PolicyRouting => BackendKind::PolicyRouting,
            BackendChoice::None => BackendKind::None,
            BackendChoice::Auto if cfg!(target_os = "macos") => BackendKind::Pf,
            BackendChoice::Auto if cfg!(target_os = "linux") => BackendKind::PolicyRouting,
            BackendChoice::Auto => BackendKind::None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTunnelDown {
    Keep,
    #[default]
    Revert,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStart {
    /// A leftover from a previous run is taken over and managed (revert, reload) as our own.
    #[default]
    Adopt,
    /// A leftover is removed before the first round.
    Remove,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnShutdown {
    Keep,
    /// Without the agent nobody would revert on a gateway change, so removal is the default.
    #[default]
    Remove,
}

/// `[fallback]` section of the config.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FallbackConfig {
    pub mode: Mode,
    pub backend: BackendChoice,
    /// Rounds in a row with the bypass broken and the physical path working before acting.
    pub consecutive_rounds: u32,
    /// No automatic apply or reload sooner than this after any action.
    pub cooldown_secs: u64,
    /// Ceiling of the doubling back-off after failed verifications.
    pub backoff_max_secs: u64,
    /// Automatic actions (apply, reload, revert) in any sliding hour.
    pub max_actions_per_hour: u32,
    /// Rounds in a row without a tunnel before `on_tunnel_down` applies (hysteresis).
    pub tunnel_down_rounds: u32,
    pub on_tunnel_down: OnTunnelDown,
    pub on_start: OnStart,
    pub on_shutdown: OnShutdown,
    /// pf anchor, under `com.apple/` so the stock pf.conf evaluates it.
    pub anchor: String,
    /// TCP ports served on the physical interface, passed in before anything else.
    pub served_ports: Vec<u16>,
    /// Extra destinations that stay local (beside RFC 1918 and loopback).
    pub bypass_subnets: Vec<Ipv4Net>,
    pub pfctl_path: PathBuf,
    /// Where the `pfctl -E` reference token is kept, so a later process (CLI, restart) can
    /// release it (only release it: it is no proof that pf is enabled).
    pub pf_token_file: PathBuf,
    /// What a backend installed (table and priority, or anchor), so a later run with other
    /// settings still finds and removes it.
    pub state_file: PathBuf,
    /// Routing table of the Linux backend; the agent owns it.
    pub route_table: u32,
    pub rule_priority: u32,
    pub ip_path: PathBuf,
    /// Bearer token for the mutating HTTP endpoints (file mode 0600); none disables them.
    pub token_file: Option<PathBuf>,
    /// Serve those endpoints over plain HTTP on a non-loopback address (the token then
    /// crosses the network in clear text); without TLS they answer 403 there.
    pub allow_plain_http: bool,
    /// Alertmanager alerts (by `alertname`) whose firing asks for the repair.
    pub alert_names: Vec<String>,
    /// The `instance` label Prometheus gives this machine: alerts for others are answered
    /// `not_for_this_instance`. Unset: no alert is acted on (whose it is cannot be told).
    pub instance: Option<String>,
    pub max_body_bytes: usize,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            mode: Mode::Observe,
            backend: BackendChoice::Auto,
            consecutive_rounds: 2,
            cooldown_secs: 120,
            backoff_max_secs: 3600,
            max_actions_per_hour: 6,
            tunnel_down_rounds: 2,
            on_tunnel_down: OnTunnelDown::Revert,
            on_start: OnStart::Adopt,
            on_shutdown: OnShutdown::Remove,
            anchor: "com.apple/250.PiaSplitTunnelFallback".into(),
            served_ports: vec![32400],
            bypass_subnets: Vec::new(),
            pfctl_path: "/sbin/pfctl".into(),
            pf_token_file: "/var/db/pia-split-tunnel-exporter/pf-token".into(),
            state_file: "/var/db/pia-split-tunnel-exporter/fallback-state.json".into(),
            route_table: 100,
            rule_priority: 100,
            ip_path: "/sbin/ip".into(),
            token_file: None,
            allow_plain_http: false,
            alert_names: vec!["PiaSplitTunnelBypassBroken".into()],
            instance: None,
            max_body_bytes: 64 * 1024,
        }
    }
}

impl FallbackConfig {
    /// The system tools at their configured paths.
    pub fn tools(&self) -> Tools {
        Tools {
            pfctl: self.pfctl_path.clone(),
            ip: self.ip_path.clone(),
            ..Tools::default()
        }
    }

    /// Checks what serde cannot; the message names the key and the fix.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_ranges()?;
        self.validate_bypass_subnets()?;
        if let Some(path) = &self.token_file {
            token_file_is_private(path)?;
        }
        if self.backoff_max_secs < self.cooldown_secs {
            return Err(format!(
                "fallback.backoff_max_secs = {} is below cooldown_secs = {}: raise it",
                self.backoff_max_secs, self.cooldown_secs
            ));
        }
        self.validate_tool_paths()?;
        validate_anchor(&self.anchor)?;
        if self.served_ports.contains(&0) {
            return Err("fallback.served_ports contains 0: list real TCP ports".into());
        }
        validate_route_table(self.route_table)?;
        validate_rule_priority(self.rule_priority)?;
        self.validate_backend()?;
        self.validate_instance()
    }

    /// Counts and durations, each within its bounds.
    fn validate_ranges(&self) -> Result<(), String> {
        use crate::check::in_range;
        for (key, v, max, default) in [
            (
                "fallback.consecutive_rounds",
                self.consecutive_rounds,
                1000,
                "2",
            ),
            (
                "fallback.max_actions_per_hour",
                self.max_actions_per_hour,
                3600,
                "6",
            ),
            (
                "fallback.tunnel_down_rounds",
                self.tunnel_down_rounds,
                1000,
                "2",
            ),
        ] {
            in_range(key, v, 1..=max, default)?;
        }
        // Durations are added to clocks: bounded so they cannot overflow one.
        in_range(
            "fallback.cooldown_secs",
            self.cooldown_secs,
            0..=86_400,
            "120",
        )?;
        in_range(
            "fallback.backoff_max_secs",
            self.backoff_max_secs,
            0..=604_800,
            "3600",
        )?;
        in_range(
            "fallback.max_body_bytes",
            self.max_body_bytes,
            1024..=1 << 20,
            "65536",
        )?;
        Ok(())
    }

    /// A bypass subnet is a local network, never a /0 to /7.
    fn validate_bypass_subnets(&self) -> Result<(), String> {
        if let Some(n) = self.bypass_subnets.iter().find(|n| n.prefix() < 8) {
            return Err(format!(
                "fallback.bypass_subnets has {}/{}: a subnet that wide keeps (nearly) every \
                 destination off the fallback; list local networks only",
                n.addr(),
                n.prefix()
            ));
        }
        Ok(())
    }

    /// The tools run as root are given by absolute path.
    fn validate_tool_paths(&self) -> Result<(), String> {
        for (key, tool) in [
            ("fallback.pfctl_path", &self.pfctl_path),
            ("fallback.ip_path", &self.ip_path),
        ] {
            // Root runs it: never looked up in $PATH, whose folders anyone may have added.
            if !tool.is_absolute() {
                return Err(format!(
                    "{key} = {:?}: give an absolute path (e.g. \"/sbin/pfctl\", \"/sbin/ip\")",
                    tool.display().to_string()
                ));
            }
        }
        Ok(())
    }

    /// `auto` needs a backend that can act here.
    fn validate_backend(&self) -> Result<(), String> {
        if self.mode == Mode::Auto && self.backend.resolve() == BackendKind::None {
            return Err(
                "fallback.mode = \"auto\" with no backend on this platform: set fallback.backend \
                 to \"pf\" or \"policy-routing\", or mode to \"observe\""
                    .into(),
            );
        }
        Ok(())
    }

    /// `instance`, when given, is a label value.
    fn validate_instance(&self) -> Result<(), String> {
        if self
            .instance
            .as_deref()
            .is_some_and(|i| i.trim().is_empty())
        {
            return Err(
                "fallback.instance is empty: give this machine's `instance` label (e.g. \
                 \"mac1.example:9847\") or remove the key"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The token guards actions taken as root: a file others can read (or that is not a regular
/// file) is an error at load, not a warning at start.
/// Also checked by the HTTP endpoints when they read the token.
fn token_file_is_private(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| format!("fallback.token_file {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "fallback.token_file {}: not a regular file",
            path.display()
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "fallback.token_file {} has mode {mode:o}: others can read it; run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    // Whoever can replace the token can order root's repair: as root, only root's file.
    if let Some(writers) = crate::os::trusted::Writers::of_root_process() {
        crate::os::trusted::check_writers(path, writers).map_err(|e| {
            format!(
                "fallback.token_file {}: the agent runs as root and trusts only what root (or \
                 the owner of its executable) can change: {e}",
                path.display()
            )
        })?;
    }
    Ok(())
}

/// Also checks a table read back from the state file: the agent flushes it.
fn validate_route_table(table: u32) -> Result<(), String> {
    if matches!(table, 0 | 253..=255) {
        return Err(format!(
            "fallback.route_table = {table}: 0, 253 (default), 254 (main) and 255 (local) are \
             the system's; pick another, e.g. 100"
        ));
    }
    Ok(())
}

fn validate_rule_priority(priority: u32) -> Result<(), String> {
    if !(1..=32765).contains(&priority) {
        return Err(format!(
            "fallback.rule_priority = {priority}: use 1..=32765 so the rule runs before the \
             main table (32766)"
        ));
    }
    Ok(())
}

fn validate_anchor(anchor: &str) -> Result<(), String> {
    let Some(rest) = anchor.strip_prefix("com.apple/") else {
        return Err(format!(
            "fallback.anchor = {anchor:?}: it must be under \"com.apple/\" (the stock pf.conf \
             evaluates com.apple/*), e.g. \"com.apple/250.PiaSplitTunnelFallback\""
        ));
    };
    let ok = !rest.is_empty()
        && rest.len() <= 64
        && rest.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "fallback.anchor = {anchor:?}: after \"com.apple/\" use letters, digits, '.', '_', \
             '-' (e.g. \"com.apple/250.PiaSplitTunnelFallback\")"
        ))
    }
}

/// Everything a backend needs to install the repair, built only from validated values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub interface: IfName,
    pub gateway: Ipv4Addr,
    /// The physical interface's address: the source the bypass sockets are bound to.
    pub source: Ipv4Addr,
    pub served_ports: Vec<u16>,
    pub bypass_subnets: Vec<Ipv4Net>,
}

/// Why no plan can be made from what discovery found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no physical interface")]
    NoPhysical,
    #[error("physical interface {0} has no default gateway")]
    NoGateway(String),
    #[error("{0}")]
    BadInterface(String),
    /// Discovery's evidence is missing or disagrees: a route-to for a guessed interface is
    /// worse than none.
    #[error("the interfaces are uncertain: {0}")]
    Uncertain(String),
}

impl Plan {
    pub fn from_interfaces(ifs: &Interfaces, cfg: &FallbackConfig) -> Result<Plan, PlanError> {
        if !ifs.trusted() {
            return Err(PlanError::Uncertain(ifs.problems.join("; ")));
        }
        let phys = ifs.physical.as_ref().ok_or(PlanError::NoPhysical)?;
        let gateway = phys
            .gateway
            .ok_or_else(|| PlanError::NoGateway(phys.name.clone()))?;
        let interface = phys.name.parse().map_err(PlanError::BadInterface)?;
        Ok(Plan {
            interface,
            gateway,
            source: phys.ipv4,
            served_ports: cfg.served_ports.clone(),
            bypass_subnets: cfg.bypass_subnets.clone(),
        })
    }
}

/// What a backend finds installed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Loaded {
    /// The backend's rules as the system prints them; empty when nothing is installed.
    pub rules: Vec<String>,
}

impl Loaded {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// A failed backend operation, with what the system said.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{command}: could not run: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command}: {status}: {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{command}: no answer within {} s; killed", timeout.as_secs_f64())]
    Timeout {
        command: String,
        timeout: std::time::Duration,
    },
    #[error("read-back after {action}: {detail}")]
    ReadBack {
        action: &'static str,
        detail: String,
    },
    #[error("no backend configured (fallback.backend = \"none\" or unsupported platform)")]
    NoBackend,
    #[error("{0}")]
    Other(String),
}

impl From<CommandError> for BackendError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Spawn { command, source } => BackendError::Spawn { command, source },
            CommandError::Failed {
                command,
                status,
                stderr,
                ..
            } => BackendError::Failed {
                command,
                status,
                stderr: match stderr.trim() {
                    "" => "(no stderr)".into(),
                    s => s.to_owned(),
                },
            },
            CommandError::Timeout { command, timeout } => {
                BackendError::Timeout { command, timeout }
            }
        }
    }
}

/// A way to install the repair. Calls are blocking and short (one or a few commands).
pub trait Backend: Send {
    fn kind(&self) -> BackendKind;
    /// The rules text (pf) or commands (policy routing) that `apply` would install.
    fn render(&self, plan: &Plan) -> String;
    /// Installs or replaces the repair and confirms it by reading it back; on any failure
    /// leaves nothing of its own installed.
    fn apply(&mut self, plan: &Plan) -> Result<(), BackendError>;
    /// Removes everything the backend owns (also a leftover of a previous run).
    fn revert(&mut self) -> Result<(), BackendError>;
    fn status(&self) -> Result<Loaded, BackendError>;
    /// Where the backend keeps its state file, which also holds the recheck's memory; none
    /// without one.
    fn record(&self) -> Option<state::Record> {
        None
    }
}

/// Stands in when no backend is configured: reports nothing loaded and refuses to act.
#[derive(Debug, Default)]
pub struct NoBackend;

impl Backend for NoBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::None
    }
    fn render(&self, _plan: &Plan) -> String {
        String::new()
    }
    fn apply(&mut self, _plan: &Plan) -> Result<(), BackendError> {
        Err(BackendError::NoBackend)
    }
    fn revert(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
    fn status(&self) -> Result<Loaded, BackendError> {
        Ok(Loaded::default())
    }
}

/// The one place a configured backend is built.
pub fn build_backend(cfg: &FallbackConfig) -> Box<dyn Backend> {
    match cfg.backend.resolve() {
        BackendKind::Pf => Box::new(pf::Pf::new(pf::PfOptions::from_config(cfg))),
        BackendKind::PolicyRouting => Box::new(policy_routing::PolicyRouting::new(
            policy_routing::PolicyRoutingOptions::from_config(cfg),
        )),
        BackendKind::None => Box::new(NoBackend),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_mode_as_the_config_spells_it() {
        let e = controller::ControlError::NotAuto(Mode::Observe).to_string();
        assert_eq!(
            e,
            "fallback.mode is observe: alerts are acted on only in auto mode"
        );
    }

    #[test]
    fn defaults_validate_and_round_trip() {
        let c = FallbackConfig::default();
        c.validate().unwrap();
        assert_eq!(c.mode, Mode::Observe);
        let text = toml::to_string(&c).unwrap();
        let back: FallbackConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn parse_keys() {
        let c: FallbackConfig = toml::from_str(
            r#"mode = "auto"
backend = "policy-routing"
bypass_subnets = ["10.16.0.0/16"]
on_tunnel_down = "keep"
"#,
        )
        .unwrap();
        assert_eq!(c.mode, Mode::Auto);
        assert_eq!(c.backend, BackendChoice::PolicyRouting);
        assert_eq!(c.on_tunnel_down, OnTunnelDown::Keep);
        assert!(toml::from_str::<FallbackConfig>("bypass_subnets = [\"10.16.0.1/16\"]").is_err());
        assert!(toml::from_str::<FallbackConfig>("nope = 1").is_err());
    }

    #[test]
    fn validate_names_key_and_fix() {
        let mut c = FallbackConfig {
            anchor: "mine".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("fallback.anchor"));
        c.anchor = "com.apple/../x".into();
        assert!(c.validate().is_err());
        c.anchor = "com.apple/a b".into();
        assert!(c.validate().is_err());
        c = FallbackConfig {
            route_table: 254,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("route_table"));
        c = FallbackConfig {
            mode: Mode::Auto,
            backend: BackendChoice::None,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("fallback.mode"));
    }
}
