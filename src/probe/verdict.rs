//! What a round means: is the bypass working, does the VPN leak, is the tunnel down.

use serde::Serialize;

use super::{PathKind, Round};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdicts {
    /// The bypass egresses as the physical path does, and not as the tunnel.
    pub bypass_working: bool,
    /// The default path egresses as the physical path while a tunnel is up.
    pub vpn_leak: bool,
    /// No tunnel interface, or the tunnel path does not answer.
    pub tunnel_down: bool,
    /// The same, in words.
    pub text: Vec<String>,
}

pub fn verdicts(round: &Round) -> Verdicts {
    let (physical, tunnel, bypass, default) = (
        round.egress(PathKind::Physical),
        round.egress(PathKind::Tunnel),
        round.egress(PathKind::Bypass),
        round.egress(PathKind::Default),
    );
    let tunnel_up = round.interfaces.tunnel.is_some() && tunnel.is_some();
    let bypass_working = bypass.is_some() && bypass == physical && bypass != tunnel;
    let vpn_leak = round.interfaces.tunnel.is_some() && default.is_some() && default == physical;
    let mut text = Vec::new();
    text.push(match (bypass_working, bypass, round.result(PathKind::Bypass).map(|r| r.outcome)) {
        (true, Some(ip), _) => format!("bypass working: traffic bound to the physical address egresses as {ip}"),
        (false, Some(ip), _) if Some(ip) == tunnel => format!("bypass broken: traffic bound to the physical address egresses through the tunnel as {ip}"),
        (false, Some(ip), _) => format!("bypass unclear: it egresses as {ip}, the physical path as {}", physical.map_or("nothing".into(), |p| p.to_string())),
        (_, None, Some(Err(e))) => format!("bypass broken: traffic bound to the physical address fails ({e})"),
        _ => "bypass not probed".into(),
    });
    if vpn_leak {
        text.push(
            "VPN leak: unbound traffic egresses as the physical address while the tunnel is up"
                .into(),
        );
    }
    if !tunnel_up {
        text.push("tunnel down: no tunnel interface answers".into());
    }
    Verdicts {
        bypass_working,
        vpn_leak,
        tunnel_down: !tunnel_up,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ProbeError;
    use crate::probe::testing::{HOME_IP, VPN_EXIT_IP, lab_round as round};

    #[test]
    fn field_failure_repair_and_leak() {
        let (home, exit) = (HOME_IP, VPN_EXIT_IP);
        let broken = verdicts(&round(true, Err(ProbeError::Timeout), exit));
        assert_eq!(
            (broken.bypass_working, broken.vpn_leak, broken.tunnel_down),
            (false, false, false)
        );
        assert_eq!(
            broken.text[0],
            "bypass broken: traffic bound to the physical address fails (timeout)"
        );
        let through_tunnel = verdicts(&round(true, Ok(exit), exit));
        assert!(
            !through_tunnel.bypass_working && through_tunnel.text[0].contains("through the tunnel")
        );
        let repaired = verdicts(&round(true, Ok(home), exit));
        assert!(repaired.bypass_working);
        let leak = verdicts(&round(true, Ok(home), home));
        assert!(leak.vpn_leak);
        let down = verdicts(&round(false, Ok(home), home));
        assert!(
            down.tunnel_down && !down.vpn_leak && down.bypass_working,
            "{down:?}"
        );
    }
}
