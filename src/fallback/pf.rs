//! macOS backend: a pf anchor under `com.apple/` whose `route-to` rule sends the bypass
//! (sockets bound to the physical address) out of the physical interface, whatever the VPN's
//! routes say.
//!
//! Facts this follows (measured on macOS): the rule has no `on IF` (pf may see the packet
//! headed for utun) and is `quick` (PIA's own anchor comes last and ends in a non-quick
//! `block return out all`); pf is enabled with `pfctl -E` and our reference released with
//! `pfctl -X TOKEN`, never `pfctl -d`; flushing an anchor keeps established states, so states
//! from the source are killed (`pfctl -k`) after applying and after reverting.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::{Backend, BackendError, BackendKind, FallbackConfig, LOCAL_NETS, Loaded, Plan};
use crate::os::command::{DEFAULT_TIMEOUT, Output, run};
use crate::os::macos_output::{parse_enable_token, parse_rules};

#[derive(Clone, Debug)]
pub struct PfOptions {
    pub pfctl: PathBuf,
    /// Validated by `FallbackConfig::validate`.
    pub anchor: String,
    pub token_file: PathBuf,
}

impl PfOptions {
    pub fn from_config(cfg: &FallbackConfig) -> Self {
        PfOptions {
            pfctl: cfg.pfctl_path.clone(),
            anchor: cfg.anchor.clone(),
            token_file: cfg.pf_token_file.clone(),
        }
    }
}

pub struct Pf {
    opts: PfOptions,
    /// Our `pfctl -E` reference; also kept in `token_file` so another process can release it.
    token: Option<u64>,
    applied: Option<Plan>,
}

impl Pf {
    pub fn new(opts: PfOptions) -> Self {
        // A token left by an earlier process (CLI `fallback apply`, a crash) is ours to release.
        let token = std::fs::read_to_string(&opts.token_file)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Pf {
            opts,
            token,
            applied: None,
        }
    }

    /// The enable reference this backend holds, if any.
    pub fn token(&self) -> Option<u64> {
        self.token
    }

    fn pfctl(&self, args: &[&str], stdin: Option<&str>) -> Result<Output, BackendError> {
        Ok(run(&self.opts.pfctl, args, stdin, DEFAULT_TIMEOUT)?)
    }

    fn enable(&mut self) -> Result<(), BackendError> {
        if self.token.is_some() {
            return Ok(());
        }
        let out = self.pfctl(&["-E"], None)?;
        let token = parse_enable_token(&out.stderr)
            .or_else(|| parse_enable_token(&out.stdout))
            .ok_or_else(|| {
                BackendError::Other(format!(
                    "pfctl -E printed no token (stderr: {:?})",
                    out.stderr.trim()
                ))
            })?;
        self.token = Some(token);
        if let Err(e) = write_token(&self.opts.token_file, token) {
            tracing::warn!(file = %self.opts.token_file.display(), error = %e,
                "could not keep the pf token; a restart will not be able to release it");
        }
        Ok(())
    }

    fn release(&mut self) -> Result<(), BackendError> {
        let Some(token) = self.token.take() else {
            return Ok(());
        };
        // Forget the token whatever pfctl says: it is released now, or invalid (reboot).
        let _ = std::fs::remove_file(&self.opts.token_file);
        self.pfctl(&["-X", &token.to_string()], None).map(|_| ())
    }

    fn kill_states(&self, source: Ipv4Addr) -> Result<(), BackendError> {
        self.pfctl(&["-k", &source.to_string()], None).map(|_| ())
    }

    fn flush(&self) -> Result<(), BackendError> {
        self.pfctl(&["-a", &self.opts.anchor, "-F", "all"], None)
            .map(|_| ())
    }

    fn confirm(&self, plan: &Plan) -> Result<(), BackendError> {
        let loaded = self.status()?;
        let text = loaded.rules.join("\n");
        let ours = parse_rules(&text).into_iter().any(|r| {
            r.quick
                && r.source_v4() == Some(plan.source)
                && r.route_to.as_ref().is_some_and(|t| {
                    t.interface == plan.interface.as_str() && t.gateway == Some(plan.gateway)
                })
        });
        if ours {
            Ok(())
        } else {
            Err(BackendError::ReadBack {
                action: "apply",
                detail: format!(
                    "pfctl -a {} -s rules shows no quick `route-to ({} {}) ... from {}` rule; it \
                     shows {:?}",
                    self.opts.anchor, plan.interface, plan.gateway, plan.source, loaded.rules
                ),
            })
        }
    }

    fn apply_loaded(&mut self, plan: &Plan) -> Result<(), BackendError> {
        self.enable()?;
        self.confirm(plan)?;
        self.kill_states(plan.source)?;
        if let Some(old) = &self.applied
            && old.source != plan.source
        {
            self.kill_states(old.source)?;
        }
        Ok(())
    }
}

impl Backend for Pf {
    fn kind(&self) -> BackendKind {
        BackendKind::Pf
    }

    fn render(&self, plan: &Plan) -> String {
        // Only typed, validated values are interpolated: IfName, Ipv4Addr, Ipv4Net, u16.
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# pia-split-tunnel-exporter: send the split tunnel's bypass out of {}.",
            plan.interface
        );
        let _ = writeln!(s, "# Undo: pfctl -a {} -F all", self.opts.anchor);
        let mut nets: Vec<String> = LOCAL_NETS.iter().map(|n| n.to_string()).collect();
        nets.extend(plan.bypass_subnets.iter().map(|n| n.to_string()));
        let _ = writeln!(s, "table <rfc1918> const {{ {} }}", nets.join(", "));
        for port in &plan.served_ports {
            let _ = writeln!(
                s,
                "pass in quick on {} proto tcp to port {port}",
                plan.interface
            );
        }
        let _ = writeln!(
            s,
            "pass out quick route-to ({} {}) inet from {} to ! <rfc1918>",
            plan.interface, plan.gateway, plan.source
        );
        s
    }

    fn apply(&mut self, plan: &Plan) -> Result<(), BackendError> {
        // `-f` replaces the anchor's rules atomically; a syntax error loads nothing.
        self.pfctl(
            &["-a", &self.opts.anchor, "-f", "-"],
            Some(&self.render(plan)),
        )?;
        match self.apply_loaded(plan) {
            Ok(()) => {
                self.applied = Some(plan.clone());
                Ok(())
            }
            Err(e) => {
                // Leave nothing of ours behind; the first error is the one that matters.
                if let Err(f) = self.flush() {
                    tracing::warn!(error = %f, "rollback: flushing the anchor failed");
                }
                if let Err(f) = self.release() {
                    tracing::warn!(error = %f, "rollback: releasing the pf token failed");
                }
                let _ = self.kill_states(plan.source);
                self.applied = None;
                Err(e)
            }
        }
    }

    fn revert(&mut self) -> Result<(), BackendError> {
        // Sources to kill states for: ours, or those named by a leftover's rules.
        let mut sources: Vec<Ipv4Addr> = self.applied.iter().map(|p| p.source).collect();
        let status = self.status();
        if let Ok(loaded) = &status {
            for ip in parse_rules(&loaded.rules.join("\n"))
                .iter()
                .filter_map(|r| r.source_v4())
            {
                if !sources.contains(&ip) {
                    sources.push(ip);
                }
            }
        }
        let mut first: Option<BackendError> = status.err();
        let mut keep = |r: Result<(), BackendError>| {
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        };
        keep(self.flush());
        for ip in sources {
            keep(self.kill_states(ip));
        }
        keep(self.release());
        self.applied = None;
        match first {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    fn status(&self) -> Result<Loaded, BackendError> {
        let out = self.pfctl(&["-a", &self.opts.anchor, "-s", "rules"], None)?;
        Ok(Loaded {
            rules: parse_rules(&out.stdout)
                .into_iter()
                .map(|r| r.text)
                .collect(),
        })
    }
}

fn write_token(path: &std::path::Path, token: u64) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut f, format!("{token}\n").as_bytes())
}
