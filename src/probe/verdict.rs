//! What a probe round means, decided once: the one [`Verdict`] that metrics, `/health`, the
//! fallback's policy and controller, `probe`, `diagnose` and their exit codes all read.
//!
//! Each path's outcome falls in one of five classes: an egress address (the physical path's,
//! "A", or another, "B"), a timeout, another failure (refused, unreachable, a bad answer), or
//! absent (its interface is missing, or the path was not tried). The rules, first match wins
//! (P physical, T tunnel, X bypass, D default; "fail" is timeout, failed or absent; "same" is
//! the physical path's address; "T's" and "D's" the address the tunnel or default path
//! egresses as; "other" any other address):
//!
//! | P      | T       | X       | D     | state          |
//! |--------|---------|---------|-------|----------------|
//! | fail   | fail    | fail    | fail  | no network     |
//! | fail   | *       | *       | *     | undetermined   |
//! | egress | absent  | *       | *     | tunnel down    |
//! | egress | same    | *       | *     | undetermined   |
//! | egress | *       | *       | same  | VPN leak       |
//! | egress | *       | same    | *     | bypass working |
//! | egress | *       | T's     | *     | bypass broken  |
//! | egress | *       | D's     | *     | bypass broken  |
//! | egress | *       | other   | *     | undetermined   |
//! | egress | *       | timeout | *     | bypass broken  |
//! | egress | *       | failed  | *     | bypass broken  |
//! | egress | *       | absent  | *     | undetermined   |
//!
//! Every one of the 625 combinations, expanded, is in `docs/verdict-truth-table.md` (a test
//! checks the file against this code, another walks the rules above over every combination).
//! "Bypass broken" always means the physical path works and a tunnel is there: it is the only
//! state the fallback may act on.

use std::net::Ipv4Addr;

use macro_rules_attribute::apply;
use serde::Serialize;

use super::{PathKind, ProbeError, Round};
use crate::labels::label_set;

/// The state a probe round shows; its snake_case name is the `state` label of `verdict`.
#[apply(label_set!)]
pub enum ProbeState {
    /// Traffic bound to the physical address egresses as the physical path does.
    BypassWorking,
    /// The physical path works, a tunnel is up, and traffic bound to the physical address
    /// fails or egresses through the tunnel: what the fallback repairs.
    BypassBroken,
    /// Unbound traffic egresses as the physical path while a tunnel is up.
    VpnLeak,
    /// No tunnel interface: the VPN is disconnected, there is nothing to bypass.
    TunnelDown,
    /// No path gets out.
    NoNetwork,
    /// The paths cannot be told apart, or contradict each other.
    Undetermined,
}

impl ProbeState {
    /// In words, as the truth table names it.
    pub fn words(self) -> &'static str {
        match self {
            ProbeState::BypassWorking => "bypass working",
            ProbeState::BypassBroken => "bypass broken",
            ProbeState::VpnLeak => "VPN leak",
            ProbeState::TunnelDown => "tunnel down",
            ProbeState::NoNetwork => "no network",
            ProbeState::Undetermined => "undetermined",
        }
    }

    /// The exit status of `probe`, `diagnose` and `analyze`: 0 when there is nothing to
    /// repair, 1 when the bypass is broken, 3 for the other problems (2 is a usage error).
    pub fn exit_code(self) -> u8 {
        match self {
            ProbeState::BypassWorking | ProbeState::TunnelDown => 0,
            ProbeState::BypassBroken => 1,
            ProbeState::VpnLeak | ProbeState::NoNetwork | ProbeState::Undetermined => 3,
        }
    }
}

/// One path's outcome, as the truth table classes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    Egress(Ipv4Addr),
    Timeout,
    /// Refused, unreachable, or an answer that is not an address.
    Failed,
    /// Its interface is missing, or it was not tried.
    Absent,
}

impl Seen {
    pub fn of(round: &Round, path: PathKind) -> Seen {
        match round.result(path).map(|r| r.outcome) {
            None | Some(Err(ProbeError::NoInterface)) => Seen::Absent,
            Some(Ok(ip)) => Seen::Egress(ip),
            Some(Err(ProbeError::Timeout)) => Seen::Timeout,
            Some(Err(_)) => Seen::Failed,
        }
    }

    pub fn egress(self) -> Option<Ipv4Addr> {
        match self {
            Seen::Egress(ip) => Some(ip),
            _ => None,
        }
    }
}

/// The truth table: physical, tunnel, bypass, default.
pub fn decide(p: Seen, t: Seen, x: Seen, d: Seen) -> ProbeState {
    let Some(a) = p.egress() else {
        return if [t, x, d].iter().any(|s| s.egress().is_some()) {
            ProbeState::Undetermined
        } else {
            ProbeState::NoNetwork
        };
    };
    if t == Seen::Absent {
        return ProbeState::TunnelDown;
    }
    if t.egress() == Some(a) {
        return ProbeState::Undetermined;
    }
    if d.egress() == Some(a) {
        return ProbeState::VpnLeak;
    }
    match x {
        Seen::Egress(ip) if ip == a => ProbeState::BypassWorking,
        Seen::Egress(ip) if t.egress() == Some(ip) || d.egress() == Some(ip) => {
            ProbeState::BypassBroken
        }
        Seen::Egress(_) | Seen::Absent => ProbeState::Undetermined,
        Seen::Timeout | Seen::Failed => ProbeState::BypassBroken,
    }
}

/// A round's verdict: its state and the sentence that explains it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub state: ProbeState,
    /// What the physical path egresses as, when it gets out.
    pub physical_egress: Option<Ipv4Addr>,
    /// The state in one sentence, with the addresses measured.
    pub text: String,
}

impl Verdict {
    pub fn of(round: &Round) -> Verdict {
        let [p, t, x, d] = [
            PathKind::Physical,
            PathKind::Tunnel,
            PathKind::Bypass,
            PathKind::Default,
        ]
        .map(|k| Seen::of(round, k));
        let state = decide(p, t, x, d);
        Verdict {
            state,
            physical_egress: p.egress(),
            text: explain(state, p, t, x, d),
        }
    }

    pub fn is(&self, state: ProbeState) -> bool {
        self.state == state
    }
}

fn show(s: Seen) -> String {
    match s {
        Seen::Egress(ip) => ip.to_string(),
        Seen::Timeout => "nothing (timeout)".into(),
        Seen::Failed => "nothing (failed)".into(),
        Seen::Absent => "nothing (not tried)".into(),
    }
}

fn explain(state: ProbeState, p: Seen, t: Seen, x: Seen, d: Seen) -> String {
    let (ps, ts, xs, ds) = (show(p), show(t), show(x), show(d));
    match state {
        ProbeState::BypassWorking => format!(
            "bypass working: traffic bound to the physical address egresses as {xs}, as the \
             physical path does"
        ),
        ProbeState::BypassBroken if x.egress().is_some() => format!(
            "bypass broken: traffic bound to the physical address egresses through the tunnel \
             as {xs}, while the physical path egresses as {ps}"
        ),
        ProbeState::BypassBroken => format!(
            "bypass broken: traffic bound to the physical address gets {xs}, while the \
             physical path egresses as {ps} and a tunnel is up"
        ),
        ProbeState::VpnLeak => format!(
            "VPN leak: unbound traffic egresses as {ds}, the physical path's address, while \
             a tunnel is up"
        ),
        ProbeState::TunnelDown => format!(
            "tunnel down: no tunnel interface, so nothing is bypassed (the physical path \
             egresses as {ps})"
        ),
        ProbeState::NoNetwork => "no network: no path gets out (physical, tunnel, bypass and \
             default all fail)"
            .into(),
        ProbeState::Undetermined if p.egress().is_none() => format!(
            "undetermined: the physical path gets {ps} while another path gets out (tunnel \
             {ts}, bypass {xs}, default {ds})"
        ),
        ProbeState::Undetermined if t.egress() == p.egress() => format!(
            "undetermined: the tunnel and the physical path both egress as {ps}, so the \
             bypass cannot be told apart from either"
        ),
        ProbeState::Undetermined => format!(
            "undetermined: the bypass gets {xs}, the physical path {ps}, the tunnel {ts}, \
             the default path {ds}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::testing::{HOME_IP, VPN_EXIT_IP, lab_round as round};

    #[test]
    fn lab_rounds() {
        let (home, exit) = (HOME_IP, VPN_EXIT_IP);
        let broken = Verdict::of(&round(true, Err(ProbeError::Timeout), exit));
        assert_eq!(broken.state, ProbeState::BypassBroken);
        assert_eq!(
            broken.text,
            "bypass broken: traffic bound to the physical address gets nothing (timeout), \
             while the physical path egresses as 198.51.100.47 and a tunnel is up"
        );
        let through = Verdict::of(&round(true, Ok(exit), exit));
        assert_eq!(through.state, ProbeState::BypassBroken);
        assert!(through.text.contains("through the tunnel as 192.0.2.18"));
        assert_eq!(
            Verdict::of(&round(true, Ok(home), exit)).state,
            ProbeState::BypassWorking
        );
        assert_eq!(
            Verdict::of(&round(true, Ok(home), home)).state,
            ProbeState::VpnLeak
        );
        let down = Verdict::of(&round(false, Ok(home), home));
        assert_eq!(down.state, ProbeState::TunnelDown);
        assert_eq!(down.physical_egress, Some(home));
    }
}
