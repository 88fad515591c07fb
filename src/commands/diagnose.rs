//! `diagnose`: log statistics, the process table, one probe round and what the system says,
//! in plain English: the cause and the repair.

use std::path::PathBuf;
use std::process::ExitCode;

use super::probe::one_round;
use crate::analyze::Report;
use crate::config::Config;
use crate::presence::{Presence, PresenceTracker, SysinfoSource};
use crate::probe::{PathKind, Round, verdicts};
use crate::proxy_log::{ErrorKind, Level};

/// The log files that exist: the archive first, then the live file, then the error log.
fn log_files(config: &Config) -> Vec<PathBuf> {
    let archive = PathBuf::from(format!("{}.1", config.log.path.display()));
    [
        archive,
        config.log.path.clone(),
        config.log.error_path.clone(),
    ]
    .into_iter()
    .filter(|p| !p.as_os_str().is_empty() && p.is_file())
    .collect()
}

/// What the log says, for `diagnose`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogFacts {
    pub sessions_closed: u64,
    pub zero_byte: u64,
    pub errors: Vec<(ErrorKind, u64)>,
    pub bind_ip: Option<String>,
    pub level: Option<Level>,
    pub debug_log_present: bool,
    pub error_log_present: bool,
}

/// `diagnose`; exit 1 when the bypass is broken.
pub fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let files = log_files(config);
    let report = Report::from_files(&files, &config.log)?;
    let facts = LogFacts {
        sessions_closed: report.total_sessions_closed(),
        zero_byte: report.zero_byte_closures(),
        errors: report.errors_by_kind().into_iter().collect(),
        bind_ip: report.bind_ips().into_iter().next(),
        level: report.pipeline.proxy().level(),
        debug_log_present: config.log.path.is_file(),
        error_log_present: !config.log.error_path.as_os_str().is_empty()
            && config.log.error_path.is_file(),
    };
    let mut watch = PresenceTracker::new(SysinfoSource::new()?, config.processes.clone());
    let presence = watch.refresh();
    let round = one_round(&config.probe)?;
    let platform = crate::os::routing_facts(&round.interfaces);
    for line in explain(&round, &facts, &presence, &platform) {
        println!("{line}");
    }
    Ok(if verdicts(&round).bypass_working {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn percent(part: u64, whole: u64) -> u64 {
    (part * 100 + whole / 2) / whole.max(1)
}

/// A few lines of plain English: what was measured, the likely cause, the repair. Findings
/// that explain a silent log come first.
pub fn explain(
    round: &Round,
    log: &LogFacts,
    presence: &Presence,
    platform: &[String],
) -> Vec<String> {
    let mut out = Vec::new();
    let v = verdicts(round);
    let vpn_up = round.interfaces.tunnel.is_some() || presence.vpn > 0;
    if presence.checked && presence.extension == 0 && vpn_up {
        out.push(
            "The split-tunnel extension (com.privateinternetaccess.vpn.splittunnel) is not running while the VPN is up, \
so nothing is split and its log stays quiet. Likely cause: macOS dropped the extension's approval (after a reboot \
or an update). Fix: approve it in System Settings → Privacy & Security, or reinstall PIA."
                .into(),
        );
    }
    if !log.debug_log_present && log.error_log_present
        || log.level.is_some_and(|l| l > Level::Debug)
    {
        out.push(
            "PIA's debug logging is off: the proxy logs only errors (to /tmp/STProxy.log), without session lines. \
Turn on Debug Logging in PIA's settings (Help) to see sessions."
                .into(),
        );
    }
    let bind = log
        .bind_ip
        .clone()
        .or_else(|| {
            round
                .interfaces
                .physical
                .as_ref()
                .map(|p| p.ipv4.to_string())
        })
        .unwrap_or_else(|| "the physical address".into());
    let sessions = if log.sessions_closed > 0 {
        format!(
            "{}% of {} sessions closed with zero bytes",
            percent(log.zero_byte, log.sessions_closed),
            log.sessions_closed
        )
    } else {
        "no session closed in the log".into()
    };
    let tunnel = round
        .interfaces
        .tunnel
        .as_ref()
        .map_or("the tunnel".to_owned(), |t| t.name.clone());
    let bypass = round.result(PathKind::Bypass).map(|r| r.outcome);
    if v.bypass_working {
        out.push(format!(
            "Bypass works: traffic bound to {bind} egresses as {} (the physical path); {sessions}.",
            round
                .egress(PathKind::Bypass)
                .map(|i| i.to_string())
                .unwrap_or_default()
        ));
        if log.sessions_closed > 0 && log.zero_byte * 10 >= log.sessions_closed * 9 {
            out.push("Yet the log shows the failure: the repair may already be in place since, or the remotes do not answer.".into());
        }
    } else {
        let how = match bypass {
            Some(Ok(ip)) if Some(ip) == round.egress(PathKind::Tunnel) => {
                format!("leaves through {tunnel} (egresses as {ip}, the VPN's exit)")
            }
            Some(Ok(ip)) => format!("egresses as {ip}, not as the physical path"),
            Some(Err(e)) => {
                format!("does not get out ({e}): it follows the VPN's routes into {tunnel}")
            }
            None => "was not probed".into(),
        };
        out.push(format!(
            "Bypass apps' traffic is bound to {bind} but {how}; {sessions}. Likely cause: the VPN's 0/1 and 128/1 routes win over \
the physical address. Fix: route-to fallback (`pia-split-tunnel-exporter rules`, or fallback.mode = \"auto\")."
        ));
    }
    if !log.errors.is_empty() {
        let kinds: Vec<String> = log.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let mut line = format!("Error kinds in the log: {}.", kinds.join(", "));
        if log
            .errors
            .iter()
            .any(|(k, n)| *k == ErrorKind::ConnectionRefused && *n > 0)
        {
            line.push_str(
                " A refusal means a remote answered: that part is not a routing failure.",
            );
        }
        out.push(line);
    }
    out.extend(
        v.text
            .iter()
            .filter(|t| t.starts_with("VPN leak") || t.starts_with("tunnel down"))
            .cloned(),
    );
    out.extend(platform.iter().map(|f| format!("Measured: {f}.")));
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::probe::ProbeError;
    use crate::probe::testing::{HOME_IP, VPN_EXIT_IP};

    fn lab_round(bypass: Result<Ipv4Addr, ProbeError>) -> Round {
        crate::probe::testing::lab_round(true, bypass, VPN_EXIT_IP)
    }

    fn running() -> Presence {
        Presence {
            extension: 1,
            daemon: 1,
            vpn: 1,
            checked: true,
        }
    }

    #[test]
    fn broken_bypass_names_cause_and_fix() {
        let log = LogFacts {
            sessions_closed: 37,
            zero_byte: 37,
            bind_ip: Some("10.0.15.15".into()),
            debug_log_present: true,
            errors: vec![(ErrorKind::ConnectTimeout, 12)],
            ..LogFacts::default()
        };
        let lines = explain(&lab_round(Err(ProbeError::Timeout)), &log, &running(), &[]);
        assert_eq!(
            lines[0],
            "Bypass apps' traffic is bound to 10.0.15.15 but does not get out (timeout): it follows the VPN's routes into utun4; \
100% of 37 sessions closed with zero bytes. Likely cause: the VPN's 0/1 and 128/1 routes win over the physical address. \
Fix: route-to fallback (`pia-split-tunnel-exporter rules`, or fallback.mode = \"auto\")."
        );
        assert_eq!(lines[1], "Error kinds in the log: connect_timeout 12.");
        let through = explain(&lab_round(Ok(VPN_EXIT_IP)), &log, &running(), &[]);
        assert!(
            through[0].contains("leaves through utun4 (egresses as 192.0.2.18, the VPN's exit)"),
            "{}",
            through[0]
        );
    }

    #[test]
    fn silence_is_explained_first() {
        let log = LogFacts {
            error_log_present: true,
            ..LogFacts::default()
        };
        let gone = Presence {
            extension: 0,
            daemon: 1,
            vpn: 1,
            checked: true,
        };
        let lines = explain(
            &lab_round(Ok(HOME_IP)),
            &log,
            &gone,
            &["IP forwarding is off".into()],
        );
        assert!(
            lines[0].starts_with("The split-tunnel extension")
                && lines[0].contains("System Settings"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("PIA's debug logging is off"),
            "{lines:?}"
        );
        assert!(
            lines[2]
                .starts_with("Bypass works: traffic bound to 10.0.15.15 egresses as 198.51.100.47"),
            "{lines:?}"
        );
        assert_eq!(lines.last().unwrap(), "Measured: IP forwarding is off.");
    }
}
