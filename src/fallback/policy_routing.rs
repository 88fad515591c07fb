//! Linux backend, the twin of the pf rule: `ip rule from SOURCE lookup T priority P` and, in
//! table T (owned by the agent), a default route via the physical gateway plus `throw` routes
//! for private ranges, loopback and the bypass subnets, so those fall through to the main
//! table exactly as `to ! <rfc1918>` leaves them alone in pf.
//!
//! Only what it installed: the backend sees, keeps and removes only a slot (table and
//! priority) that `fallback.state_file` (or this process) records it installed. Routes another
//! tool keeps in the configured table are never adopted nor flushed: apply refuses that table,
//! naming a free one. Without a record (no `state_file`, or an install by a version before it)
//! nothing is removed: a leftover is then for the admin (docs/operations.md, "What the fallback changes").

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;

use super::state::{Installed, Record};
use super::{Backend, BackendError, BackendKind, FallbackConfig, LOCAL_NETS, Loaded, Plan};
use crate::os::command::{DEFAULT_TIMEOUT, Output, run};

#[derive(Clone, Debug)]
pub struct PolicyRoutingOptions {
    pub ip: PathBuf,
    pub table: u32,
    pub priority: u32,
    /// Run every `ip` command as `ip -n NETNS ...`: tests work in a namespace of their own.
    pub netns: Option<String>,
    /// Where the table and priority in use are recorded; none: not recorded.
    pub state_file: Option<PathBuf>,
}

impl PolicyRoutingOptions {
    pub fn from_config(cfg: &FallbackConfig) -> Self {
        PolicyRoutingOptions {
            ip: cfg.ip_path.clone(),
            table: cfg.route_table,
            priority: cfg.rule_priority,
            netns: None,
            state_file: Some(cfg.state_file.clone()),
        }
    }
}

/// Where an install lives: the rule's priority and the table it looks up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    table: u32,
    priority: u32,
}

pub struct PolicyRouting {
    opts: PolicyRoutingOptions,
    record: Record,
    /// The slot this backend (this process, or an earlier one by its record) installed into;
    /// nothing else is ever looked at, kept or removed.
    mine: Option<Slot>,
}

impl PolicyRouting {
    pub fn new(opts: PolicyRoutingOptions) -> Self {
        let record = Record::new(opts.state_file.clone());
        let recorded = record.load(|i| {
            i.route_table.map_or(Ok(()), super::validate_route_table)?;
            i.rule_priority
                .map_or(Ok(()), super::validate_rule_priority)
        });
        // A record without a table is another backend's (pf's anchor): nothing of ours.
        let mine = recorded.route_table.map(|table| Slot {
            table,
            priority: recorded.rule_priority.unwrap_or(opts.priority),
        });
        PolicyRouting { opts, record, mine }
    }

    fn configured(&self) -> Slot {
        Slot {
            table: self.opts.table,
            priority: self.opts.priority,
        }
    }

    /// Who else uses `table`: its routes, or rules that look it up; `None` when it is free.
    fn used_by_others(&self, table: u32) -> Result<Option<String>, BackendError> {
        let routes = self.routes(table)?;
        let t = table.to_string();
        let rules: Vec<String> = lines(&self.ip(&["rule", "list"])?.stdout)
            .into_iter()
            .filter(|r| {
                let words: Vec<&str> = r.split_whitespace().collect();
                words.windows(2).any(|w| w[0] == "lookup" && w[1] == t)
            })
            .collect();
        Ok(match (routes.first(), rules.first()) {
            (None, None) => None,
            (Some(r), _) => Some(format!("{} route(s), e.g. `{r}`", routes.len())),
            (None, Some(r)) => Some(format!("a rule `{r}`")),
        })
    }

    /// The lowest table from 100 that no route and no rule names.
    fn free_table(&self) -> Result<u32, BackendError> {
        let mut text = self.ip(&["route", "show", "table", "all"])?.stdout;
        text.push_str(&self.ip(&["rule", "list"])?.stdout);
        let used: std::collections::BTreeSet<u32> = text
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        Ok((100..253)
            .chain(256..65_536)
            .find(|t| !used.contains(t))
            .unwrap_or(100))
    }

    fn ip(&self, args: &[&str]) -> Result<Output, BackendError> {
        let mut full: Vec<OsString> = Vec::with_capacity(args.len() + 3);
        if let Some(ns) = &self.opts.netns {
            full.push("-n".into());
            full.push(ns.into());
        }
        full.push("-4".into());
        full.extend(args.iter().map(OsString::from));
        Ok(run(&self.opts.ip, &full, None, DEFAULT_TIMEOUT)?)
    }

    /// Each command of the plan, as arguments after `ip -4`.
    fn commands(&self, plan: &Plan) -> Vec<Vec<String>> {
        let table = self.opts.table.to_string();
        let mut cmds = vec![vec![
            "rule".into(),
            "add".into(),
            "from".into(),
            plan.source.to_string(),
            "lookup".into(),
            table.clone(),
            "priority".into(),
            self.opts.priority.to_string(),
        ]];
        cmds.push(
            [
                "route",
                "replace",
                "default",
                "via",
                &plan.gateway.to_string(),
                "dev",
                plan.interface.as_str(),
                "table",
                &table,
            ]
            .map(String::from)
            .to_vec(),
        );
        let subnets = LOCAL_NETS
            .iter()
            .map(|s| s.to_string())
            .chain(plan.bypass_subnets.iter().map(|n| n.to_string()));
        for net in subnets {
            cmds.push(
                ["route", "replace", "throw", &net, "table", &table]
                    .map(String::from)
                    .to_vec(),
            );
        }
        cmds
    }

    fn rules(&self, slot: Slot) -> Result<Vec<String>, BackendError> {
        let out = self.ip(&[
            "rule",
            "list",
            "priority",
            &slot.priority.to_string(),
            "table",
            &slot.table.to_string(),
        ])?;
        Ok(lines(&out.stdout))
    }

    fn routes(&self, table: u32) -> Result<Vec<String>, BackendError> {
        match self.ip(&["route", "show", "table", &table.to_string()]) {
            Ok(out) => Ok(lines(&out.stdout)),
            // A table that never held a route does not exist yet: nothing is installed.
            Err(BackendError::Failed { stderr, .. }) if stderr.contains("does not exist") => {
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    /// Removes our install (the recorded slot), whatever the config says now; nothing without
    /// a record.
    fn remove_all(&mut self) -> Result<(), BackendError> {
        let Some(slot) = self.mine else {
            return Ok(());
        };
        let (prio, table) = (slot.priority.to_string(), slot.table.to_string());
        // One `del` removes one rule; a crash loop could have left several. Bounded.
        for _ in 0..64 {
            if self.rules(slot)?.is_empty() {
                break;
            }
            self.ip(&["rule", "del", "priority", &prio, "table", &table])?;
        }
        if !self.routes(slot.table)?.is_empty() {
            self.ip(&["route", "flush", "table", &table])?;
        }
        let left = self.status()?;
        if left.is_empty() {
            Ok(())
        } else {
            Err(BackendError::ReadBack {
                action: "revert",
                detail: format!("still installed: {:?}", left.rules),
            })
        }
    }

    fn install(&self, plan: &Plan) -> Result<(), BackendError> {
        for cmd in self.commands(plan) {
            let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            self.ip(&args)?;
        }
        let rules = self.rules(self.configured())?;
        let want_rule = format!("from {} lookup {}", plan.source, self.opts.table);
        let want_route = format!("default via {} dev {}", plan.gateway, plan.interface);
        let routes = self.routes(self.opts.table)?;
        if rules.len() == 1
            && rules[0].contains(&want_rule)
            && routes.iter().any(|r| r.starts_with(&want_route))
        {
            Ok(())
        } else {
            Err(BackendError::ReadBack {
                action: "apply",
                detail: format!(
                    "want one `{want_rule}` rule and `{want_route}`; found rules {rules:?}, \
                     routes {routes:?}"
                ),
            })
        }
    }
}

impl Backend for PolicyRouting {
    fn kind(&self) -> BackendKind {
        BackendKind::PolicyRouting
    }

    fn record(&self) -> Option<Record> {
        Some(self.record.clone())
    }

    fn render(&self, plan: &Plan) -> String {
        let mut s = String::new();
        for cmd in self.commands(plan) {
            let _ = writeln!(s, "ip -4 {}", cmd.join(" "));
        }
        s
    }

    fn apply(&mut self, plan: &Plan) -> Result<(), BackendError> {
        // Replace, never stack: a reload with a new address must not leave the old rule.
        self.remove_all()?;
        let table = self.opts.table;
        if let Some(use_) = self.used_by_others(table)? {
            return Err(BackendError::Other(format!(
                "fallback.route_table = {table} is in use by another tool ({use_}); the agent \
                 touches only what it installed: set fallback.route_table to a free table, e.g. \
                 {}",
                self.free_table()?
            )));
        }
        self.mine = Some(self.configured());
        self.record.save(&Installed {
            route_table: Some(self.opts.table),
            rule_priority: Some(self.opts.priority),
            ..Installed::default()
        });
        let result = self.install(plan);
        if result.is_err() {
            match self.remove_all() {
                Ok(()) => {
                    self.mine = None;
                    self.record.clear();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rollback after a failed apply did not finish")
                }
            }
        }
        result
    }

    fn revert(&mut self) -> Result<(), BackendError> {
        self.remove_all()?;
        self.mine = None;
        self.record.clear();
        Ok(())
    }

    /// What is in place of our recorded install; nothing without a record, whatever the
    /// configured table holds.
    fn status(&self) -> Result<Loaded, BackendError> {
        let Some(slot) = self.mine else {
            return Ok(Loaded::default());
        };
        let mut rules = self.rules(slot)?;
        rules.extend(
            self.routes(slot.table)?
                .into_iter()
                .map(|r| format!("table {}: {r}", slot.table)),
        );
        Ok(Loaded { rules })
    }
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}
