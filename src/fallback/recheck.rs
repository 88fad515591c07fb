//! A workaround that retires itself: whether the fallback is still needed.
//!
//! The fallback works around a bug of PIA's (or of macOS's routing under PIA's routes). Once a
//! new PIA or macOS fixes it, the rules should go. A recheck is due when the fallback is in
//! place and PIA's version or the macOS build differs from those it was applied (or last found
//! needed) under, or when `POST /fallback/recheck` asks. A due recheck is only a request: the
//! controller lifts its rules for one probe round of its own (bounded by [`LIFT_WINDOW`]) and
//! keeps them off only when that round shows the bypass egressing as the physical path;
//! otherwise it puts them back at once. A version string comes from a file other programs
//! install, so it never decides anything by itself.
//!
//! Pure parts here (the versions compared, the status text); the controller carries it out and
//! the state file ([`super::state`]) remembers it across restarts.

use std::time::Duration;

use macro_rules_attribute::apply;
use serde::{Deserialize, Serialize};

use crate::labels::label_set;

/// Longest a recheck keeps the rules lifted before putting them back, counted from the start
/// of the lift (putting them back takes a few commands more, so the whole gap stays under a
/// second): a round that has not shown the bypass working by then counts as "still broken".
/// A working bypass answers in about the physical path's time, well inside it; a broken one
/// is a black hole that would otherwise hold the rules off for the probe's whole deadline.
pub const LIFT_WINDOW: Duration = Duration::from_millis(750);

/// Longest version string kept: the state file is small and a version is a few characters.
const MAX_VERSION_CHARS: usize = 64;

/// The versions the need for the fallback is tied to. `None`: not known on this system (no
/// PIA installed, not a Mac, a read that failed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Versions {
    /// PIA's `CFBundleShortVersionString`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pia: Option<String>,
    /// `sw_vers -productVersion`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macos: Option<String>,
    /// `sw_vers -buildVersion`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macos_build: Option<String>,
}

impl Versions {
    /// From what the system says, each cut to a sane length and trimmed.
    pub fn new(pia: Option<&str>, macos: Option<&str>, macos_build: Option<&str>) -> Versions {
        let clean = |s: Option<&str>| {
            s.map(|v| v.trim().chars().take(MAX_VERSION_CHARS).collect::<String>())
                .filter(|v| !v.is_empty())
        };
        Versions {
            pia: clean(pia),
            macos: clean(macos),
            macos_build: clean(macos_build),
        }
    }

    /// What changed from `before` to `self`, in words; `None` when nothing did. A version
    /// known on one side only is no change (a failed read must not look like an upgrade).
    pub fn changed_since(&self, before: &Versions) -> Option<String> {
        let fields = [
            ("PIA", &before.pia, &self.pia),
            ("macOS", &before.macos, &self.macos),
            ("macOS build", &before.macos_build, &self.macos_build),
        ];
        let changes: Vec<String> = fields
            .iter()
            .filter_map(|(name, was, now)| match (was, now) {
                (Some(a), Some(b)) if a != b => Some(format!("{name} {a} → {b}")),
                _ => None,
            })
            .collect();
        (!changes.is_empty()).then(|| changes.join(", "))
    }

    /// "PIA 3.6.2, macOS 15.3 (24D60)", naming what is known.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.pia {
            parts.push(format!("PIA {p}"));
        }
        match (&self.macos, &self.macos_build) {
            (Some(v), Some(b)) => parts.push(format!("macOS {v} ({b})")),
            (Some(v), None) => parts.push(format!("macOS {v}")),
            (None, Some(b)) => parts.push(format!("macOS build {b}")),
            (None, None) => {}
        }
        if parts.is_empty() {
            "unknown versions".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Why a recheck runs (the `cause` of its log line and record).
#[apply(label_set!)]
pub enum RecheckCause {
    /// PIA's version or the macOS build changed while the fallback was in place.
    VersionChanged,
    /// `POST /fallback/recheck`.
    Manual,
}

/// Why the fallback was retired: the `reason` label of `fallback_retired_total`.
#[apply(label_set!)]
#[derive(Deserialize)]
pub enum RetireReason {
    /// With the rules lifted, the agent's own round saw the bypass egress as the physical path.
    BypassWorksWithout,
}

/// How a recheck ended: the `result` label of `fallback_rechecks_total`.
#[apply(label_set!)]
pub enum RecheckResult {
    /// The bypass works without the rules: they stay off.
    Retired,
    /// The bypass is still broken without them (or the round did not show it working in
    /// time): they are back.
    StillNeeded,
    /// The rules could not be lifted, or not put back (the backend's error is logged).
    Failed,
}

/// The fallback was retired: under which versions, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retirement {
    pub reason: RetireReason,
    pub versions: Versions,
    pub at_unix: u64,
}

/// The last recheck, for `/health`, `/` and the HTTP answer.
#[derive(Clone, Debug, Serialize)]
pub struct RecheckRecord {
    pub cause: RecheckCause,
    pub result: RecheckResult,
    /// How long the rules were lifted, in seconds.
    pub lifted_seconds: f64,
    /// What the round without the rules showed, or the backend's error.
    pub detail: String,
    pub versions: Versions,
    pub at_unix: f64,
}

/// The recheck side of the fallback's status.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RecheckStatus {
    /// Why a recheck is due and has not run (observe mode, or held back by the cooldown or
    /// the hourly cap); `None` when none is.
    pub due: Option<String>,
    pub last: Option<RecheckRecord>,
    /// Set when the fallback retired itself and has not been applied since.
    pub retired: Option<Retirement>,
}

impl RecheckStatus {
    /// One line for the status page and `/health`; `None` when there is nothing to say.
    pub fn line(&self) -> Option<String> {
        if let Some(due) = &self.due {
            return Some(format!("recheck due ({due})"));
        }
        self.retired.as_ref().map(|r| {
            format!(
                "retired: the bypass works without the rules since {}",
                r.versions.describe()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_needs_both_sides_known() {
        let a = Versions::new(Some("3.6.1"), Some("15.3"), Some("24D60"));
        let b = Versions::new(Some("3.6.2"), Some("15.3"), Some("24D60"));
        assert_eq!(b.changed_since(&a).as_deref(), Some("PIA 3.6.1 → 3.6.2"));
        assert_eq!(a.changed_since(&a), None);
        // A read that failed is not an upgrade.
        let unknown = Versions::new(None, Some("15.3"), None);
        assert_eq!(unknown.changed_since(&a), None);
        assert_eq!(a.changed_since(&unknown), None);
        let c = Versions::new(Some("3.6.1"), Some("15.4"), Some("24E248"));
        assert_eq!(
            c.changed_since(&a).as_deref(),
            Some("macOS 15.3 → 15.4, macOS build 24D60 → 24E248")
        );
    }

    #[test]
    fn versions_are_cut_and_described() {
        let long = "9".repeat(500);
        let v = Versions::new(Some(&long), Some("  "), Some(" 24D60\n"));
        assert_eq!(v.pia.as_ref().unwrap().len(), MAX_VERSION_CHARS);
        assert_eq!(v.macos, None);
        assert_eq!(v.macos_build.as_deref(), Some("24D60"));
        assert_eq!(
            Versions::new(Some("3.6.2"), Some("15.3"), Some("24D60")).describe(),
            "PIA 3.6.2, macOS 15.3 (24D60)"
        );
        assert_eq!(Versions::default().describe(), "unknown versions");
    }

    #[test]
    fn the_line_says_due_before_retired() {
        let mut s = RecheckStatus::default();
        assert_eq!(s.line(), None);
        s.retired = Some(Retirement {
            reason: RetireReason::BypassWorksWithout,
            versions: Versions::new(Some("3.6.2"), None, None),
            at_unix: 1,
        });
        assert_eq!(
            s.line().unwrap(),
            "retired: the bypass works without the rules since PIA 3.6.2"
        );
        s.due = Some("PIA 3.6.1 → 3.6.2; mode is observe".into());
        assert!(s.line().unwrap().starts_with("recheck due (PIA 3.6.1"));
    }
}
