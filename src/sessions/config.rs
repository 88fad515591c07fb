//! `[sessions]`: the window of closes the sessions verdict weighs and its thresholds. The
//! verdict is judged here ([`super::verdict`]) and read by the fallback, health, the status
//! page, the metrics, `analyze` and `diagnose`, so the section is the sessions stage's.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::verdict::Thresholds;
use super::window::SessionWindow;
use crate::check::in_range;

/// The keys of `[sessions]`; before it existed they were read from `[fallback]`
/// (`crate::config` still reads them there, with a warning naming the new key).
pub const KEYS: [&str; 4] = [
    "no_reply_ratio",
    "healthy_no_reply_ratio",
    "window_secs",
    "min_sessions",
];

/// The first key's former name, still read.
pub const OLD_NO_REPLY_RATIO: &str = "zero_byte_ratio";

/// `[sessions]` section of the config.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Share of sessions (0..=1) that got no reply from which the sessions say broken: with
    /// one confirming round, that triggers the repair. Read as `zero_byte_ratio` too (its
    /// name before sessions were judged by what they received).
    #[serde(alias = "zero_byte_ratio")]
    pub no_reply_ratio: f64,
    /// Share up to which the sessions say working (what a healthy Mac shows); between it and
    /// `no_reply_ratio` they say inconclusive.
    pub healthy_no_reply_ratio: f64,
    /// How far back the window of closes reaches.
    pub window_secs: u64,
    /// Fewer closes than this in the window: no judgement.
    pub min_sessions: u32,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        let t = Thresholds::default();
        SessionsConfig {
            no_reply_ratio: t.no_reply_ratio,
            healthy_no_reply_ratio: t.healthy_no_reply_ratio,
            window_secs: 300,
            min_sessions: t.min_sessions,
        }
    }
}

impl SessionsConfig {
    /// The session window and the thresholds of its verdict, as configured.
    pub fn window(&self) -> SessionWindow {
        SessionWindow::new(Duration::from_secs(self.window_secs), self.thresholds())
    }

    /// `no_reply_ratio`, `healthy_no_reply_ratio` and `min_sessions`: the verdict's.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            no_reply_ratio: self.no_reply_ratio,
            healthy_no_reply_ratio: self.healthy_no_reply_ratio,
            min_sessions: self.min_sessions,
        }
    }

    /// Checks what serde cannot; the message names the key and the fix.
    pub fn validate(&self) -> Result<(), String> {
        let r = self.no_reply_ratio;
        if !(r > 0.0 && r <= 1.0) {
            return Err(format!(
                "sessions.no_reply_ratio = {r}: use a share in (0, 1], e.g. 0.75"
            ));
        }
        let h = self.healthy_no_reply_ratio;
        if !(0.0..r).contains(&h) {
            return Err(format!(
                "sessions.healthy_no_reply_ratio = {h}: use a share in [0, no_reply_ratio), e.g. 0.2"
            ));
        }
        in_range(
            "sessions.min_sessions",
            self.min_sessions,
            1..=1_000_000,
            "5",
        )?;
        // Added to clocks: bounded so it cannot overflow one.
        in_range("sessions.window_secs", self.window_secs, 1..=86_400, "300")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_key_and_fix() {
        let c = SessionsConfig {
            no_reply_ratio: 1.5,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("no_reply_ratio"));
        let c = SessionsConfig {
            healthy_no_reply_ratio: 0.8,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("healthy_no_reply_ratio"));
        let c = SessionsConfig {
            min_sessions: 0,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("sessions.min_sessions"));
        let c = SessionsConfig {
            window_secs: 0,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("sessions.window_secs"));
        assert_eq!(SessionsConfig::default().validate(), Ok(()));
        // The key's former name is still read.
        let old: SessionsConfig = toml::from_str("zero_byte_ratio = 0.6").unwrap();
        assert_eq!(old.no_reply_ratio, 0.6);
    }

    #[test]
    fn the_window_judges_with_the_configured_thresholds() {
        let c = SessionsConfig {
            min_sessions: 7,
            no_reply_ratio: 0.5,
            ..Default::default()
        };
        assert_eq!(c.thresholds().min_sessions, 7);
        assert_eq!(c.thresholds().no_reply_ratio, 0.5);
        assert_eq!(
            c.window().verdict(std::time::Instant::now()).state,
            super::super::verdict::SessionsState::TooFew
        );
    }
}
