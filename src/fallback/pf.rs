//! macOS backend: a pf anchor under `com.apple/` whose `route-to` rule sends the bypass
//! (sockets bound to the physical address) out of the physical interface, whatever the VPN's
//! routes say.
//!
//! Facts this follows (measured on macOS): the rule has no `on IF` (pf may see the packet
//! headed for utun) and is `quick` (PIA's own anchor comes last and ends in a non-quick
//! `block return out all`); pf is enabled with `pfctl -E` and our reference released with
//! `pfctl -X TOKEN`, never `pfctl -d`; flushing an anchor keeps established states, so states
//! from the source are killed (`pfctl -k`) after applying and after reverting.
//!
//! The token is kept in `pf_token_file` for a later process (the CLI, the agent after a crash)
//! to release. A token read there is never taken as proof that pf is enabled for us: tokens do
//! not survive a reboot, and after an unclean stop the file may name a dead one. So every
//! process takes its own reference (`pfctl -E`) before it relies on pf, and an earlier one's
//! is only released, best-effort. The file is read and written under [`super::state`]'s rules
//! (root's own file, no link, mode 0600): a planted token cannot make root release someone
//! else's reference. The anchor is recorded in `state_file`, so a changed `anchor` still finds
//! the rules an earlier run loaded.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::state::{Installed, Record, read_private, write_private};
use super::{Backend, BackendError, BackendKind, FallbackConfig, LOCAL_NETS, Loaded, Plan};
use crate::os::command::{DEFAULT_TIMEOUT, Output, run};
use crate::os::macos_output::{parse_enable_token, parse_rules};

#[derive(Clone, Debug)]
pub struct PfOptions {
    pub pfctl: PathBuf,
    /// Validated by `FallbackConfig::validate`.
    pub anchor: String,
    pub token_file: PathBuf,
    /// Where the anchor in use is recorded; none: not recorded.
    pub state_file: Option<PathBuf>,
}

impl PfOptions {
    pub fn from_config(cfg: &FallbackConfig) -> Self {
        PfOptions {
            pfctl: cfg.pfctl_path.clone(),
            anchor: cfg.anchor.clone(),
            token_file: cfg.pf_token_file.clone(),
            state_file: Some(cfg.state_file.clone()),
        }
    }
}

pub struct Pf {
    opts: PfOptions,
    /// Our own `pfctl -E` reference, taken by this process; also kept in `token_file`.
    token: Option<u64>,
    /// The reference an earlier process left in `token_file`: only ever released.
    stale: Option<u64>,
    record: Record,
    /// An anchor an earlier run recorded that is not the configured one.
    old_anchor: Option<String>,
    applied: Option<Plan>,
}

impl Pf {
    pub fn new(opts: PfOptions) -> Self {
        let stale = read_private::<u64>(&opts.token_file).unwrap_or_else(|why| {
            tracing::warn!(file = %opts.token_file.display(), reason = %why,
                "pf token file refused: the reference it names is left alone");
            None
        });
        let record = Record::new(opts.state_file.clone());
        let old_anchor = record
            .load(|i| i.anchor.as_deref().map_or(Ok(()), super::validate_anchor))
            .anchor
            .filter(|a| *a != opts.anchor);
        Pf {
            opts,
            token: None,
            stale,
            record,
            old_anchor,
            applied: None,
        }
    }

    /// The enable reference this process holds, if any.
    pub fn token(&self) -> Option<u64> {
        self.token
    }

    fn pfctl(&self, args: &[&str], stdin: Option<&str>) -> Result<Output, BackendError> {
        Ok(run(&self.opts.pfctl, args, stdin, DEFAULT_TIMEOUT)?)
    }

    /// Takes our own reference, then lets go of an earlier process's (in that order, so pf
    /// never runs without one of ours in between).
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
        if let Err(e) = write_private(&self.opts.token_file, &token) {
            tracing::warn!(file = %self.opts.token_file.display(), error = %e,
                "could not keep the pf token; a restart will not be able to release it");
            // The file must not keep naming the stale reference released next.
            self.forget_token_file();
        }
        self.release_stale();
        Ok(())
    }

    /// Best-effort: after a reboot the earlier token is invalid (`pfctl -X` says so), and
    /// that is fine. One equal to ours is ours now (the kernel reuses numbers).
    fn release_stale(&mut self) {
        let Some(stale) = self.stale.take() else {
            return;
        };
        if Some(stale) == self.token {
            return;
        }
        match self.pfctl(&["-X", &stale.to_string()], None) {
            Ok(_) => tracing::info!(token = stale, "released an earlier process's pf reference"),
            Err(e) => tracing::info!(token = stale, error = %e,
                "an earlier process's pf reference was not released (gone after a reboot, or \
                 released already)"),
        }
    }

    fn release(&mut self) -> Result<(), BackendError> {
        if self.token.is_none() && self.stale.is_none() {
            return Ok(());
        }
        // Forget the file first whatever pfctl says: a released number must not be released
        // again by a later process (the kernel may have handed it to someone else by then).
        self.forget_token_file();
        self.release_stale();
        let Some(token) = self.token.take() else {
            return Ok(());
        };
        self.pfctl(&["-X", &token.to_string()], None).map(|_| ())
    }

    /// Removes the token file, if it is ours: a refused one (a link, another user's file)
    /// stays as it is.
    fn forget_token_file(&self) {
        let path = &self.opts.token_file;
        if matches!(read_private::<u64>(path), Ok(Some(_)))
            && let Err(e) = super::state::remove(path)
        {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove the pf token file");
        }
    }

    /// The configured anchor, then an earlier run's.
    fn anchors(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.opts.anchor.as_str()).chain(self.old_anchor.as_deref())
    }

    fn rules_in(&self, anchor: &str) -> Result<Vec<String>, BackendError> {
        let out = self.pfctl(&["-a", anchor, "-s", "rules"], None)?;
        Ok(parse_rules(&out.stdout)
            .into_iter()
            .map(|r| r.text)
            .collect())
    }

    /// Empties an earlier run's anchor before ours is loaded, killing the states of the
    /// sources its rules named.
    fn retire_old_anchor(&mut self) -> Result<(), BackendError> {
        let Some(old) = self.old_anchor.clone() else {
            return Ok(());
        };
        let sources = sources_of(&self.rules_in(&old)?);
        self.flush(&old)?;
        for ip in sources {
            self.kill_states(ip)?;
        }
        self.old_anchor = None;
        Ok(())
    }

    fn kill_states(&self, source: Ipv4Addr) -> Result<(), BackendError> {
        self.pfctl(&["-k", &source.to_string()], None).map(|_| ())
    }

    fn flush(&self, anchor: &str) -> Result<(), BackendError> {
        self.pfctl(&["-a", anchor, "-F", "all"], None).map(|_| ())
    }

    fn confirm(&self, plan: &Plan) -> Result<(), BackendError> {
        let loaded = self.rules_in(&self.opts.anchor)?;
        let text = loaded.join("\n");
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
                    self.opts.anchor, plan.interface, plan.gateway, plan.source, loaded
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

    fn record(&self) -> Option<Record> {
        Some(self.record.clone())
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
        self.retire_old_anchor()?;
        self.record.save(&Installed {
            anchor: Some(self.opts.anchor.clone()),
            ..Installed::default()
        });
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
                if let Err(f) = self.flush(&self.opts.anchor) {
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
        let mut first: Option<BackendError> = None;
        let anchors: Vec<String> = self.anchors().map(str::to_owned).collect();
        for anchor in &anchors {
            match self.rules_in(anchor) {
                Ok(rules) => {
                    for ip in sources_of(&rules) {
                        if !sources.contains(&ip) {
                            sources.push(ip);
                        }
                    }
                }
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        let mut keep = |r: Result<(), BackendError>| {
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        };
        for anchor in &anchors {
            keep(self.flush(anchor));
        }
        for ip in sources {
            keep(self.kill_states(ip));
        }
        keep(self.release());
        self.applied = None;
        match first {
            None => {
                self.old_anchor = None;
                self.record.clear();
                Ok(())
            }
            Some(e) => Err(e),
        }
    }

    fn status(&self) -> Result<Loaded, BackendError> {
        let mut rules = Vec::new();
        for anchor in self.anchors() {
            rules.extend(self.rules_in(anchor)?);
        }
        Ok(Loaded { rules })
    }
}

/// The source addresses a set of our rules names.
fn sources_of(rules: &[String]) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for ip in parse_rules(&rules.join("\n"))
        .iter()
        .filter_map(|r| r.source_v4())
    {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}
