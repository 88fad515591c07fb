//! The fleet path for Macs a central Prometheus cannot reach: the shipped agent-mode config
//! (`prometheus/agent.yml`), started by the command its header gives, on a real Prometheus,
//! scrapes the `demo` agent on loopback and remote-writes over TLS with basic auth to a second
//! Prometheus (the central store, with `--web.enable-remote-write-receiver` and the exporter
//! toolkit's web config); the central one has the agent's series under the Mac's `instance`.
//! Needs the `prometheus` package (Debian's is 2.42: see [`agent_mode_flag`]).

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::agent::{Demo, free_port, http_get};
use common::prom_server::{Prometheus, value};
use common::tls::{Pki, basic};

const MAC: &str = "mac-mini-test";
const PASSWORD: &str = "remote write secret";

#[test]
fn agent_mode_prometheus_remote_writes_the_agent_to_a_central_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let demo = Demo::start();
    let agent_addr = demo.addr;

    // The central store: HTTPS with basic auth, one user per Mac.
    let pki = Pki::new(d, "central");
    let web = d.join("central-web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {:?}\n  key_file: {:?}\nbasic_auth_users:\n  {MAC}: '{}'\n",
            pki.path("server.pem"),
            pki.path("server.key"),
            bcrypt::hash(PASSWORD, 4).unwrap()
        ),
    )
    .unwrap();
    let web_arg = format!("--web.config.file={}", web.display());
    let central = Prometheus::start_with(
        d,
        "central",
        "global:\n  scrape_interval: 1s\n",
        &["--web.enable-remote-write-receiver", &web_arg],
        Some((pki.client(None), basic(MAC, PASSWORD))),
    );

    // The shipped agent-mode config with its placeholders filled in, as an admin would.
    let pass = d.join("remote-write.pass");
    std::fs::write(&pass, PASSWORD).unwrap();
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus/agent.yml"))
            .unwrap();
    let filled = fill(
        &shipped,
        &[
            ("scrape_interval: 30s", "scrape_interval: 1s".into()),
            ("scrape_timeout: 10s", "scrape_timeout: 1s".into()),
            ("batch_send_deadline: 5s", "batch_send_deadline: 1s".into()),
            ("127.0.0.1:9847", agent_addr.to_string()),
            ("mac-name", MAC.into()),
            ("central.example:9090", central.addr.to_string()),
            (
                "/opt/homebrew/etc/prometheus-agent/remote-write.pass",
                pass.display().to_string(),
            ),
            (
                "/opt/homebrew/etc/prometheus-agent/central-ca.crt",
                pki.path("ca.pem").display().to_string(),
            ),
        ],
    );
    // The 2.x spelling stays in the file's note for those who run 2.x.
    assert!(shipped.contains("`--enable-feature=agent`"), "{shipped}");
    let config = d.join("agent.yml");
    std::fs::write(&config, filled).unwrap();
    let _mac = AgentMode::start(
        &shipped,
        &config,
        &d.join("agent-data"),
        &d.join("agent.log"),
    );

    let within = Duration::from_secs(45);
    let selector = format!("{{job=\"pia-split-tunnel\",instance=\"{MAC}\"}}");
    let up = central.wait_for(&format!("up{selector}"), within, |r| {
        r.iter().any(|s| value(s) == 1.0)
    });
    assert_eq!(up.len(), 1, "{up:?}");
    let lines = central.wait_for(
        &format!("pia_split_tunnel_log_lines_total{selector}"),
        within,
        |r| r.len() == 1 && value(&r[0]) > 0.0,
    );
    assert_eq!(lines[0]["metric"]["instance"], MAC);
    // The agent's own series came through whole, not just `up`.
    let families = central.query(&format!(
        "count(count by (__name__) ({{__name__=~\"pia_split_tunnel_.+\",instance=\"{MAC}\"}}))"
    ));
    assert!(value(&families[0]) >= 10.0, "{families:?}");
    // Nothing arrived as the loopback address the agent-mode server scraped.
    assert!(
        central
            .query(&format!("up{{instance=\"{agent_addr}\"}}"))
            .is_empty()
    );
}

/// Replaces each placeholder, which must be in the shipped file (so the test breaks when the
/// file changes shape, rather than testing something else).
fn fill(text: &str, pairs: &[(&str, String)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in pairs {
        assert!(
            out.contains(from),
            "prometheus/agent.yml no longer has {from:?}"
        );
        out = out.replace(from, to);
    }
    out
}

/// The agent-mode Prometheus of the Mac, started with the command line the shipped file's
/// header gives; killed on drop.
struct AgentMode(Child);

impl AgentMode {
    fn start(shipped: &str, config: &Path, storage: &Path, log: &Path) -> AgentMode {
        let listen = free_port();
        let args = documented_command(shipped)
            .iter()
            .map(|arg| as_run_here(arg, config, storage, listen))
            .collect::<Vec<_>>();
        let child = Command::new("prometheus")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("prometheus starts (sudo bash .ci/setup installs it)");
        let mut p = AgentMode(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = || {
            std::net::TcpStream::connect(listen).is_ok()
                && http_get(listen, "/-/ready").contains("Ready")
        };
        while !ready() {
            let exited = p.0.try_wait().unwrap();
            assert!(
                Instant::now() < deadline && exited.is_none(),
                "prometheus {args:?} exited ({exited:?}) or not ready after 30 s: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }
}

impl Drop for AgentMode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The arguments of the `prometheus ...` command in the shipped file's header comment (with
/// its `\` continuation lines), without the program's name.
fn documented_command(shipped: &str) -> Vec<String> {
    let lines = shipped
        .lines()
        .map(|l| l.trim_start_matches('#').trim())
        .skip_while(|l| !l.starts_with("prometheus "));
    let mut words = Vec::new();
    for line in lines {
        let (text, more) = match line.strip_suffix('\\') {
            Some(t) => (t, true),
            None => (line, false),
        };
        words.extend(text.split_whitespace().map(str::to_owned));
        if !more {
            break;
        }
    }
    assert_eq!(
        words.first().map(String::as_str),
        Some("prometheus"),
        "prometheus/agent.yml no longer gives the command that starts it"
    );
    words.split_off(1)
}

/// One documented argument as this test runs it: the paths and the address are the test's,
/// the mode flag is the installed Prometheus' spelling. Any other argument is a change to the
/// documented command that this test must learn about.
fn as_run_here(arg: &str, config: &Path, storage: &Path, listen: std::net::SocketAddr) -> String {
    let (flag, _) = arg.split_once('=').unwrap_or((arg, ""));
    match flag {
        "--agent" => agent_mode_flag().to_owned(),
        "--config.file" => format!("--config.file={}", config.display()),
        "--storage.agent.path" => format!("--storage.agent.path={}", storage.display()),
        "--web.listen-address" => format!("--web.listen-address={listen}"),
        _ => panic!("prometheus/agent.yml's command has {arg:?}, which this test does not know"),
    }
}

/// The shipped command says `--agent`, Prometheus 3.x's flag (Homebrew's); the Prometheus
/// here may be Debian's 2.42, which knows only `--enable-feature=agent` and refuses `--agent`
/// ("unknown long flag"). The file's note gives both; this picks the one `prometheus --help`
/// lists, so the test runs the example as a user of that version would, and fails if the
/// installed Prometheus knows neither.
fn agent_mode_flag() -> &'static str {
    let out = Command::new("prometheus")
        .arg("--help")
        .output()
        .expect("prometheus --help");
    let help = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    agent_mode_flag_in(&help).unwrap_or_else(|| {
        panic!("this prometheus offers neither --agent nor --enable-feature=agent: {help}")
    })
}

/// `--agent` when the help lists it, else `--enable-feature=agent` when the feature list
/// names `agent`.
fn agent_mode_flag_in(help: &str) -> Option<&'static str> {
    // Kingpin lists a boolean flag as `--agent` or, in newer releases, `--[no-]agent`.
    let has_agent = help.lines().any(|l| {
        let l = l.trim_start();
        ["--agent", "--[no-]agent"].iter().any(|f| {
            l.strip_prefix(f)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
        })
    });
    if has_agent {
        Some("--agent")
    } else if help.contains("Valid options: agent") {
        Some("--enable-feature=agent")
    } else {
        None
    }
}

#[test]
fn the_agent_mode_flag_is_read_from_the_help_of_either_version() {
    // Debian's 2.42 (`prometheus --help`, as installed by .ci/setup).
    let v2 = "      --enable-feature= ...      Comma separated feature names\n                                 \
              to enable. Valid options: agent,\n                                 exemplar-storage,\n";
    // 3.x: cmd/prometheus/main.go declares `a.Flag("agent", "Run Prometheus in 'Agent mode'.")`
    // and its kingpin (v2.4) prints boolean flags as `--[no-]NAME`.
    let v3 = "      --[no-]agent               Run Prometheus in 'Agent mode'.\n      \
              --enable-feature= ...      Comma separated feature names to enable. Valid options:\n";
    assert_eq!(agent_mode_flag_in(v2), Some("--enable-feature=agent"));
    assert_eq!(agent_mode_flag_in(v3), Some("--agent"));
    // A flag that merely starts with the name is not it.
    assert_eq!(agent_mode_flag_in("      --agent-mode-x   other\n"), None);
    assert_eq!(agent_mode_flag_in("      --storage.agent.path=DIR\n"), None);
}

/// docs/operations.md shows the fleet files as they are: the agent-mode command of
/// `prometheus/agent.yml`'s header, and the Alertmanager example's lines verbatim.
#[test]
fn the_operations_doc_shows_the_fleet_files_as_they_are() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let doc = read("docs/operations.md");
    let fleet = section(&doc, "## A fleet of Macs");
    let commands: Vec<_> = code_blocks(fleet, "sh")
        .into_iter()
        .filter(|b| b.starts_with("prometheus "))
        .map(|b| documented_command(&b))
        .collect();
    assert_eq!(
        commands,
        vec![documented_command(&read("prometheus/agent.yml"))],
        "the fleet section's agent-mode command differs from prometheus/agent.yml's"
    );
    let example = read("prometheus/alertmanager.yml");
    let blocks = code_blocks(section(&doc, "## Alertmanager"), "yaml");
    assert!(!blocks.is_empty(), "the Alertmanager section shows no YAML");
    for b in blocks {
        assert!(
            example.contains(&b),
            "docs/operations.md shows YAML that prometheus/alertmanager.yml does not have:\n{b}"
        );
    }
}

/// The text from `heading` to the next heading of the same level.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("docs/operations.md has no {heading:?}"));
    let rest = &doc[start + heading.len() + 2..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    &rest[..end]
}

/// The bodies of the fenced blocks of `lang`.
fn code_blocks(text: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    text.split(&fence)
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(body, _)| body.to_owned()))
        .collect()
}
