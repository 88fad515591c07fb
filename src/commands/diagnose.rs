//! `diagnose`: log statistics, the process table, one probe round and what the system says,
//! in plain English: the cause and the repair. It blames the VPN's routes only when the
//! round's verdict is "bypass broken"; with `probe.enabled = false` it does not probe and says
//! so, reporting the log and the system alone.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;

mod bundle;
mod evidence;
mod redact;
mod report;
mod save;

use bundle::{Bundle, Kind, pia_settings_path};

use super::probe::one_round;
use crate::analyze::Report;
use crate::config::Config;
use crate::os::discovery::{self, Discovery, Evidence, RouteEntry, saved};
use crate::os::linux_output::{parse_ip_addr, parse_ip_route};
use crate::os::macos_output::{parse_anchors, parse_ifconfig, parse_netstat_inet, parse_route_get};
use crate::os::{IfaceInfo, Os as _, ProxyBinding, RoutingFacts, System};
use crate::presence::{Presence, PresenceTracker, SysinfoSource};
use crate::probe::{PathKind, ProbeState, Round, Verdict};
use crate::proxy_log::{ErrorKind, Level};
use crate::sessions::verdict::percent;
use crate::sessions::window::SessionsState;

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
    /// The sessions verdict over the files, with the agent's thresholds.
    pub sessions: Option<SessionsState>,
    /// `log.path` and `log.error_path`, to name them when they are missing.
    pub debug_log_path: String,
    pub error_log_path: String,
    /// Judging saved files (`diagnose --from`): there is nothing to probe.
    pub offline: bool,
}

/// What the log says, over the report of `files`.
fn log_facts(report: &Report, debug_log: &Path, error_log: &Path) -> LogFacts {
    LogFacts {
        sessions_closed: report.total_sessions_closed(),
        zero_byte: report.zero_byte_closures(),
        errors: report.errors_by_kind().into_iter().collect(),
        bind_ip: report.bind_ips().into_iter().next(),
        level: report.pipeline.proxy().level(),
        debug_log_present: debug_log.is_file(),
        error_log_present: !error_log.as_os_str().is_empty() && error_log.is_file(),
        sessions: (report.total_sessions_closed() > 0).then(|| report.sessions()),
        debug_log_path: debug_log.display().to_string(),
        error_log_path: error_log.display().to_string(),
        offline: false,
    }
}

/// What the proxy's log says it binds to, for discovery.
fn binding(report: &Report) -> ProxyBinding {
    let proxy = report.pipeline.proxy();
    ProxyBinding::from_log(proxy.bind_interface.as_deref(), proxy.bind_ip.as_deref())
}

/// `diagnose`; the exit status is the verdict's (3, undetermined, when not probing).
pub fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let files = log_files(config);
    let report = Report::from_files(&files, &config.log, config.sessions.thresholds())?;
    let facts = log_facts(&report, &config.log.path, &config.log.error_path);
    let mut watch = PresenceTracker::new(SysinfoSource::new()?, config.processes.clone());
    let presence = watch.refresh();
    let system = System::new(config.fallback.tools());
    let round = if config.probe.enabled {
        Some(one_round(&config.probe)?)
    } else {
        None
    };
    // Discovery with the proxy's word, as the agent does; no packet leaves.
    let found = crate::os::discover_with(
        &system,
        config.probe.physical_interface.as_deref(),
        config.probe.tunnel_interface.as_deref(),
        &binding(&report),
    );
    let interfaces = found.interfaces.clone();
    let mut platform = discovery_sentences(&found);
    platform.extend(system.routing_facts(&interfaces).describe(&interfaces));
    let doubts = discovery_doubts(&found);
    for line in doubts
        .iter()
        .chain(&explain(round.as_ref(), &facts, &presence, &platform))
    {
        println!("{line}");
    }
    let state = round.map_or(ProbeState::Undetermined, |r| Verdict::of(&r).state);
    Ok(ExitCode::from(state.exit_code()))
}

/// Discovery's doubts, each a sentence for the top of a diagnosis.
pub fn discovery_doubts(d: &Discovery) -> Vec<String> {
    d.interfaces
        .problems
        .iter()
        .map(|p| format!("The interfaces are uncertain, so the fallback will not act: {p}."))
        .collect()
}

/// What discovery chose and why, one fact each.
pub fn discovery_sentences(d: &Discovery) -> Vec<String> {
    let ifs = &d.interfaces;
    let mut out = Vec::new();
    if let Some(p) = &ifs.physical {
        let gateway = p
            .gateway
            .map_or("no gateway".into(), |g| format!("gateway {g}"));
        out.push(format!(
            "the physical interface is {} ({}, {gateway}), named by {}",
            p.name,
            p.ipv4,
            d.physical_from.unwrap_or("nothing")
        ));
    }
    out.push(match (&ifs.tunnel, d.vpn_routes_everything) {
        (Some(t), true) => format!(
            "the VPN's tunnel is {}: it carries all of the public space",
            t.name
        ),
        (Some(t), false) => format!("the tunnel is {} (as configured)", t.name),
        (None, _) => "no tunnel carries the public space: the VPN is not routing everything".into(),
    });
    out
}

/// A bundle judged: discovery on its interfaces and table, its routing facts, its log.
pub struct Judged {
    pub found: Discovery,
    pub proxy: ProxyBinding,
    pub report: Report,
    /// Discovery's and the routing facts' sentences, as `diagnose` prints them after "Measured:".
    pub sentences: Vec<String>,
}

/// A saved file the judgement needs, or why it is not there.
fn need<'a>(b: &'a Bundle, dir: &Path, name: &str) -> anyhow::Result<&'a str> {
    b.get(name).ok_or_else(|| {
        let why = b
            .missing
            .get(name)
            .map_or("not in the folder", String::as_str);
        anyhow::anyhow!("{}: cannot read {name}: {why}", dir.display())
    })
}

/// Interfaces, the table and the routing facts of a saved Mac or Linux machine.
fn saved_system(
    b: &Bundle,
    dir: &Path,
) -> anyhow::Result<(Vec<IfaceInfo>, Vec<RouteEntry>, RoutingFacts)> {
    match b.kind() {
        Some(Kind::Linux) => {
            let rows =
                parse_ip_route(need(b, dir, saved::IP_ROUTE)?).map_err(anyhow::Error::msg)?;
            let ifs = parse_ip_addr(need(b, dir, saved::IP_ADDR)?).map_err(anyhow::Error::msg)?;
            Ok((ifs, discovery::from_proc(&rows), RoutingFacts::default()))
        }
        _ => {
            let rows = parse_netstat_inet(need(b, dir, saved::NETSTAT)?)?;
            let routes = discovery::from_netstat(&rows).map_err(anyhow::Error::msg)?;
            let interfaces = parse_ifconfig(need(b, dir, saved::IFCONFIG)?)?;
            let facts = RoutingFacts {
                route_table: Some(rows),
                default_lookup: b
                    .get(saved::ROUTE_GET_DEFAULT)
                    .map(parse_route_get)
                    .transpose()?,
                pf_anchors: b.get(saved::PF_ANCHORS).map(parse_anchors),
                ..RoutingFacts::default()
            };
            Ok((interfaces, routes, facts))
        }
    }
}

/// The same judgement as the agent's discovery, on a bundle (`dir` names it in errors).
pub fn judge(config: &Config, b: &Bundle, dir: &Path) -> anyhow::Result<Judged> {
    let (interfaces, routes, facts) = saved_system(b, dir)?;
    let log = b.get(saved::PROXY_LOG).unwrap_or_default();
    let report = Report::from_text(log.as_bytes(), &config.log, config.sessions.thresholds())?;
    let proxy = binding(&report);
    let found = discovery::judge(&Evidence {
        interfaces: &interfaces,
        routes: Ok(&routes),
        physical_name: config.probe.physical_interface.as_deref(),
        tunnel_name: config.probe.tunnel_interface.as_deref(),
        proxy: &proxy,
    });
    let mut sentences = discovery_sentences(&found);
    sentences.extend(facts.describe(&found.interfaces));
    Ok(Judged {
        found,
        proxy,
        report,
        sentences,
    })
}

/// `diagnose --from DIR`: the same judgement as the agent's discovery, on a saved Mac's or
/// Linux machine's files; exit 0 when the interfaces are certain, 3 when they are not.
pub fn run_from(config: &Config, dir: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let b = Bundle::read(dir);
    let j = judge(config, &b, dir)?;
    let log = LogFacts {
        offline: true,
        debug_log_present: b.get(saved::PROXY_LOG).is_some(),
        debug_log_path: dir.join(saved::PROXY_LOG).display().to_string(),
        ..log_facts(&j.report, Path::new(""), Path::new(""))
    };
    let mut sentences = discovery_doubts(&j.found);
    sentences.extend(explain(None, &log, &Presence::default(), &j.sentences));
    let ifs = &j.found.interfaces;
    if as_json {
        let out = json!({
            "physical": ifs.physical.as_ref().map(|p| json!({
                "interface": p.name, "address": p.ipv4, "gateway": p.gateway,
                "from": j.found.physical_from,
            })),
            "tunnel": ifs.tunnel.as_ref().map(|t| json!({"interface": t.name, "address": t.ipv4})),
            "vpn_routes_everything": j.found.vpn_routes_everything,
            "public_carrier": j.found.public_carrier,
            "certain": ifs.trusted(),
            "problems": ifs.problems,
            "proxy_binding": j.proxy,
            "sessions_verdict": j.report.verdict(),
            "sessions": j.report.to_json()["_summary"].clone(),
            "sentences": sentences,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for line in &sentences {
            println!("{line}");
        }
    }
    Ok(ExitCode::from(if ifs.trusted() { 0 } else { 3 }))
}

/// What `--save` and `--report` work on.
pub struct BundleArgs<'a> {
    /// A saved folder instead of this machine.
    pub from: Option<&'a Path>,
    pub redact: bool,
    /// PIA's settings.json, read for its split-tunnel keys.
    pub pia_settings: Option<&'a Path>,
}

impl BundleArgs<'_> {
    fn bundle(&self, config: &Config) -> Bundle {
        let mut b = match self.from {
            Some(dir) => Bundle::read(dir),
            None => {
                let settings = self
                    .pia_settings
                    .map_or_else(pia_settings_path, Path::to_path_buf);
                Bundle::gather(config, &settings)
            }
        };
        if self.redact {
            b.redact();
        }
        b
    }
}

/// `diagnose --save DIR`: this machine (or a saved folder, to redact it) into a new folder.
pub fn run_save(config: &Config, out: &Path, args: &BundleArgs) -> anyhow::Result<ExitCode> {
    let b = args.bundle(config);
    save::write(out, &b)?;
    println!("Saved {} files to {}.", b.files.len(), out.display());
    for (name, why) in &b.missing {
        println!("Not saved: {name}: {why}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `diagnose --report`: the bug report, in Markdown, on stdout.
pub fn run_report(config: &Config, args: &BundleArgs) -> anyhow::Result<ExitCode> {
    let b = args.bundle(config);
    let dir = args.from.unwrap_or(Path::new("this machine"));
    let j = judge(config, &b, dir)?;
    print!("{}", report::render(&b, &j, config));
    Ok(ExitCode::SUCCESS)
}

/// A few lines of plain English: what was measured, the likely cause, the repair. Findings
/// that explain a silent log come first.
pub fn explain(
    round: Option<&Round>,
    log: &LogFacts,
    presence: &Presence,
    platform: &[String],
) -> Vec<String> {
    let mut out = why_the_log_is_silent(round, log, presence);
    let sessions = sessions_summary(log);
    match round {
        Some(round) => out.extend(round_sentences(round, log, &sessions)),
        None => out.push(not_probed(log, &sessions)),
    }
    errors_and_facts(&mut out, log, platform);
    out
}

/// The extension not running, no log file, or debug logging off: each keeps the log quiet.
fn why_the_log_is_silent(
    round: Option<&Round>,
    log: &LogFacts,
    presence: &Presence,
) -> Vec<String> {
    let mut out = Vec::new();
    let vpn_up = round.is_some_and(|r| r.interfaces.tunnel.is_some()) || presence.vpn > 0;
    if presence.checked && presence.extension == 0 && vpn_up {
        out.push(
            "The split-tunnel extension (com.privateinternetaccess.vpn.splittunnel) is not running while the VPN is up, \
so nothing is split and its log stays quiet. Likely cause: macOS dropped the extension's approval (after a reboot \
or an update). Fix: approve it in System Settings → Privacy & Security, or reinstall PIA."
                .into(),
        );
    }
    if !log.debug_log_present && !log.error_log_present {
        let error_log = if log.error_log_path.is_empty() {
            String::new()
        } else {
            format!(" nor {}", log.error_log_path)
        };
        out.push(format!(
            "No proxy log: neither {}{error_log} exists, so no session can be counted. Is PIA \
running with Debug Logging on (Settings → Help)? Otherwise set log.path to where the proxy writes.",
            log.debug_log_path
        ));
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
    out
}

/// The log's sessions in one clause.
fn sessions_summary(log: &LogFacts) -> String {
    if log.sessions_closed > 0 {
        format!(
            "{}% of {} sessions closed with zero bytes",
            percent(log.zero_byte, log.sessions_closed),
            log.sessions_closed
        )
    } else {
        "no session closed in the log".into()
    }
}

/// Without a round there is no verdict on the bypass: the log and the system speak alone.
fn not_probed(log: &LogFacts, sessions: &str) -> String {
    let why = if log.offline {
        "saved files, nothing to probe"
    } else {
        "probe.enabled = false"
    };
    format!(
        "Did not probe ({why}): no verdict on the bypass, only what the log \
and the system say. The log: {sessions}{}.",
        match log.sessions {
            Some(SessionsState::Broken) => {
                "; that looks broken, and a probe round (`probe`) would confirm it"
            }
            _ => "",
        }
    )
}

/// What the round's verdict says of the bypass; only "bypass broken" blames the VPN's routes.
fn round_sentences(round: &Round, log: &LogFacts, sessions: &str) -> Vec<String> {
    let mut out = Vec::new();
    let v = Verdict::of(round);
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
    let tunnel = round
        .interfaces
        .tunnel
        .as_ref()
        .map_or("the tunnel".to_owned(), |t| t.name.clone());
    let bypass = round.result(PathKind::Bypass).map(|r| r.outcome);
    match v.state {
        ProbeState::BypassWorking => {
            out.push(format!(
                "Bypass works: traffic bound to {bind} egresses as {} (the physical path); {sessions}.",
                round
                    .egress(PathKind::Bypass)
                    .map(|i| i.to_string())
                    .unwrap_or_default()
            ));
            if log.sessions == Some(SessionsState::Broken) {
                out.push("Yet the log shows the failure: the repair may already be in place since, or the remotes do not answer.".into());
            }
        }
        // Only this state blames the VPN's routes: the physical path works, a tunnel is up.
        ProbeState::BypassBroken => {
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
        // Tunnel down, no network, VPN leak, undetermined: the verdict's words, no blame.
        _ => out.push(format!("Verdict: {}; {sessions}.", v.text)),
    }
    out
}

/// The log's error kinds and the platform's routing facts, the last lines of any diagnosis.
fn errors_and_facts(out: &mut Vec<String>, log: &LogFacts, platform: &[String]) {
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
    out.extend(platform.iter().map(|f| format!("Measured: {f}.")));
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
        let lines = explain(
            Some(&lab_round(Err(ProbeError::Timeout))),
            &log,
            &running(),
            &[],
        );
        assert_eq!(
            lines[0],
            "Bypass apps' traffic is bound to 10.0.15.15 but does not get out (timeout): it follows the VPN's routes into utun4; \
100% of 37 sessions closed with zero bytes. Likely cause: the VPN's 0/1 and 128/1 routes win over the physical address. \
Fix: route-to fallback (`pia-split-tunnel-exporter rules`, or fallback.mode = \"auto\")."
        );
        assert_eq!(lines[1], "Error kinds in the log: connect_timeout 12.");
        let through = explain(Some(&lab_round(Ok(VPN_EXIT_IP))), &log, &running(), &[]);
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
            Some(&lab_round(Ok(HOME_IP))),
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

    #[test]
    fn only_a_broken_verdict_blames_the_routes() {
        let log = LogFacts {
            sessions_closed: 20,
            zero_byte: 20,
            sessions: Some(SessionsState::Broken),
            debug_log_present: true,
            ..LogFacts::default()
        };
        // Tunnel down (VPN disconnected) and no network at all (every path times out).
        let down = crate::probe::testing::lab_round(false, Err(ProbeError::Timeout), HOME_IP);
        let mut dead = lab_round(Err(ProbeError::Timeout));
        for r in &mut dead.results {
            r.outcome = Err(ProbeError::Timeout);
        }
        for round in [down, dead] {
            let lines = explain(Some(&round), &log, &running(), &[]);
            let text = lines.join("\n");
            assert!(!text.contains("0/1 and 128/1"), "{text}");
            assert!(!text.contains("route-to"), "{text}");
            assert!(text.starts_with("Verdict: "), "{text}");
        }
    }

    #[test]
    fn names_the_missing_log_and_says_when_it_did_not_probe() {
        let log = LogFacts {
            debug_log_path: "/var/log/transparent_proxy.log".into(),
            error_log_path: "/tmp/STProxy.log".into(),
            ..LogFacts::default()
        };
        let lines = explain(None, &log, &running(), &["IP forwarding is off".into()]);
        assert_eq!(
            lines[0],
            "No proxy log: neither /var/log/transparent_proxy.log nor /tmp/STProxy.log exists, \
so no session can be counted. Is PIA running with Debug Logging on (Settings → Help)? Otherwise \
set log.path to where the proxy writes."
        );
        assert_eq!(
            lines[1],
            "Did not probe (probe.enabled = false): no verdict on the bypass, only what the log \
and the system say. The log: no session closed in the log."
        );
        assert_eq!(lines[2], "Measured: IP forwarding is off.");
    }
}
