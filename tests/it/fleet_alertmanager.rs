//! Alertmanager in the repair chain, with the shipped example `prometheus/alertmanager.yml`.
//!
//! As written: `amtool check-config` passes it and `amtool config routes test` routes as its
//! comments say; a real Alertmanager running it (addresses, files and waits substituted, nothing
//! else) brings a Mac its own `PiaSplitTunnelBypassBroken` over https (the example's CA, the
//! Mac's token), to a real agent serving TLS, and every alert to the `humans` receiver (a
//! loopback listener), never another Mac's alert nor an ExporterDown to a Mac.
//!
//! In a fleet of two "Macs": two labs (`lab/lab.sh`), each with an agent serving TLS; mac A's
//! bypass is broken, mac B's is repaired by hand. A monitoring namespace runs Debian's
//! Prometheus (scraping both agents over https, the shipped rules, a `site` target label) and
//! Alertmanager with the shipped example (mac-mini is mac A, studio mac B, `humans` a listener
//! in the namespace). Only mac A's alert may fire, reach a Mac (mac A only) and the humans, only
//! mac A may repair, and the alert must resolve after the repair. The agents' own
//! policy is kept from acting (`consecutive_rounds = 1000`) so the repair can only come from
//! the alert. Intervals are short (scrape and evaluation 1 s, the alert's `for` 2 s, group
//! wait and interval 1 s) to keep the wall time modest; the timeline is printed.
//!
//! Needs root, iproute2, nftables, python3, prometheus and prometheus-alertmanager
//! (`sudo bash .ci/setup`); without them the test fails and says why.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::BIN;
use common::lab::{Lab, http_in, require_prerequisites};
use serde_json::Value;

const ALERT: &str = "PiaSplitTunnelBypassBroken";
const TOKEN: &str = "fleet-token-0123456789abcdef";
const MAC_A: &str = "203.0.113.66:9847";
const MAC_B: &str = "203.0.113.70:9847";
const PROM: &str = "127.0.0.1:9090";
const AM: &str = "127.0.0.1:9093";

/// A namespace of the test's own, deleted on drop.
struct Ns(String);

impl Ns {
    fn new(name: String) -> Ns {
        run("ip", &["netns", "add", &name]);
        let ns = Ns(name);
        run("ip", &["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("{cmd}: {e} (sudo bash .ci/setup installs what this test needs)")
    });
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Processes killed on drop, also when the test fails.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_in(ns: &str, program: &str, args: &[&str], log: &Path, env: &[(&str, &str)]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// A point-to-point link from the monitoring namespace to a Mac: `mon_ip` there, `mac_ip` in
/// the Mac (a /30 from 203.0.113.64/28, more specific than the VPN's 0/1 routes).
fn link(mon: &Ns, lab: &Lab, name: &str, mon_ip: &str, mac_ip: &str) {
    let mac = lab.mac();
    run(
        "ip",
        &[
            "-n", &mon.0, "link", "add", "name", name, "type", "veth", "peer", "name", "mon0",
            "netns", &mac,
        ],
    );
    run(
        "ip",
        &[
            "-n",
            &mon.0,
            "addr",
            "add",
            &format!("{mon_ip}/30"),
            "dev",
            name,
        ],
    );
    run(
        "ip",
        &[
            "-n",
            &mac,
            "addr",
            "add",
            &format!("{mac_ip}/30"),
            "dev",
            "mon0",
        ],
    );
    run("ip", &["-n", &mon.0, "link", "set", name, "up"]);
    run("ip", &["-n", &mac, "link", "set", "mon0", "up"]);
}

fn agent_config(dir: &Path, name: &str, instance: &str, table: u32) -> std::path::PathBuf {
    let log = dir.join(format!("{name}-proxy.log"));
    std::fs::write(&log, b"").unwrap();
    let config = format!(
        "[log]\npath = {log:?}\nerror_path = \"\"\ncheckpoint = {cp:?}\n\
[http]\nlisten = \"0.0.0.0:9847\"\nweb_config_file = {web:?}\n\
[probe]\nendpoints = [\"http://203.0.113.10/\"]\ninterval_secs = 1\ntimeout_secs = 0.5\n\
[processes]\nextension = [{me:?}]\ndaemon = [{me:?}]\nvpn = [{me:?}]\n\
[fallback]\nmode = \"auto\"\nbackend = \"policy-routing\"\nconsecutive_rounds = 1000\n\
route_table = {table}\nrule_priority = {table}\ntoken_file = {token:?}\ninstance = {instance:?}\n\
state_file = {state:?}\n",
        cp = dir.join(format!("{name}-cp.json")),
        // No PIA here: the agent stands in for its processes (recognised by executable path).
        me = std::fs::canonicalize(BIN).unwrap().display().to_string(),
        token = dir.join(format!("{name}.token")),
        web = dir.join("web.yml"),
        state = dir.join(format!("{name}-fallback-state.json")),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    path
}

/// The shipped rules with the bypass alert's `for` shortened to 2 s (the test's only change).
fn rules(dir: &Path) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts/pia-split-tunnel.rules.yml"),
    )
    .unwrap();
    let start = shipped.find(&format!("- alert: {ALERT}")).unwrap();
    let at = shipped[start..].find("for: 5m").unwrap() + start;
    let rules = format!(
        "{}for: 2s{}",
        &shipped[..at],
        &shipped[at + "for: 5m".len()..]
    );
    let path = dir.join("rules.yml");
    std::fs::write(&path, rules).unwrap();
    path
}

/// The shipped example with the lab's Macs for mac-mini and studio (their addresses are their
/// `instance`), the `humans` receiver at `humans`, the test's files and 1 s waits.
fn alertmanager_config(dir: &Path, humans: std::net::SocketAddr) -> std::path::PathBuf {
    let etc = "/etc/alertmanager/pia-split-tunnel";
    let file = |name: &str| dir.join(name).display().to_string();
    let config = fill(
        &shipped_alertmanager(),
        &[
            (MAC_MINI, MAC_A.into()),
            (STUDIO, MAC_B.into()),
            (
                "https://chat.example/hooks/pia-split-tunnel",
                format!("http://{humans}/humans"),
            ),
            (&format!("{etc}/mac-mini.token"), file("mac-mini.token")),
            (&format!("{etc}/studio.token"), file("studio.token")),
            (&format!("{etc}/macs-ca.crt"), file("macs/ca.pem")),
            ("group_wait: 30s", "group_wait: 1s".into()),
            ("group_interval: 5m", "group_interval: 1s".into()),
        ],
    );
    let path = dir.join("alertmanager.yml");
    std::fs::write(&path, config).unwrap();
    path
}

fn prometheus_config(dir: &Path, rules: &Path) -> std::path::PathBuf {
    let ca = dir.join("macs/ca.pem");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
rule_files:\n  - {rules:?}\n\
alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"{AM}\"]\n\
scrape_configs:\n  - job_name: pia-split-tunnel\n    scheme: https\n    \
tls_config:\n      ca_file: {ca:?}\n    static_configs:\n      \
- targets: [\"{MAC_A}\", \"{MAC_B}\"]\n        labels:\n          site: lab\n"
    );
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    path
}

fn require_tools() {
    require_prerequisites();
    for tool in ["prometheus", "prometheus-alertmanager"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "this test needs `{tool}`: sudo bash .ci/setup (installs Debian's prometheus and \
             prometheus-alertmanager)"
        );
    }
}

/// Active alerts in Alertmanager as (alertname, instance, site, job).
fn am_alerts(mon: &str) -> Vec<(String, String, String, String)> {
    let (code, body) = http_in(
        mon,
        "GET",
        &format!("http://{AM}/api/v2/alerts?active=true&silenced=false&inhibited=false"),
        None,
    );
    if code != 200 {
        return vec![];
    }
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let l = |k: &str| a["labels"][k].as_str().unwrap_or("").to_owned();
            (l("alertname"), l("instance"), l("site"), l("job"))
        })
        .collect()
}

/// A GET in namespace `ns` over https, trusting the CA at `ca` only.
fn https_in(ns: &str, url: &str, ca: &Path) -> (u16, String) {
    let script = "import sys, ssl, urllib.request, urllib.error\n\
ctx = ssl.create_default_context(cafile=sys.argv[2])\n\
try:\n    r = urllib.request.urlopen(sys.argv[1], timeout=5, context=ctx); print(r.status); \
print(r.read().decode())\n\
except urllib.error.HTTPError as e:\n    print(e.code); print(e.read().decode())\n\
except Exception as e:\n    print(0); print(e)\n";
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", script, url])
        .arg(ca)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, body) = text.split_once('\n').unwrap_or(("0", ""));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// The sum of the samples of `target`'s metrics whose line starts with `line_prefix`.
fn metric(mon: &str, target: &str, line_prefix: &str, ca: &Path) -> Option<f64> {
    let (_, body) = https_in(mon, &format!("https://{target}/metrics"), ca);
    body.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// The Macs' TLS (one certificate for both addresses, `macs/ca.pem` the example's CA) and their
/// tokens, one per Mac as the example has them; returns the CA's path.
fn lab_tls(d: &Path) -> std::path::PathBuf {
    let pki = common::tls::Pki::with_server_names(d, "macs", &["203.0.113.66", "203.0.113.70"]);
    std::fs::write(
        d.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: {:?}\n  key_file: {:?}\n",
            pki.path("server.pem"),
            pki.path("server.key")
        ),
    )
    .unwrap();
    for mac in ["mac-mini", "studio"] {
        let token = d.join(format!("{mac}.token"));
        std::fs::write(&token, format!("{mac}-{TOKEN}")).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    pki.path("ca.pem")
}

#[allow(clippy::too_many_lines, reason = "one scenario; the rule is for src/")]
#[test]
fn only_the_broken_mac_is_alerted_and_repaired_and_the_alert_resolves() {
    require_tools();
    let a = Lab::up("fa");
    let b = Lab::up("fb");
    b.script(&["repair"]);
    let mon = Ns::new(format!("pstemon{}", std::process::id() % 100_000));
    link(&mon, &a, "tomaca", "203.0.113.65", "203.0.113.66");
    link(&mon, &b, "tomacb", "203.0.113.69", "203.0.113.70");

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = lab_tls(d);
    let rules_a_before = a.ip(&["rule"]);
    let rules_b_before = b.ip(&["rule"]);
    let (log_a, log_b) = (d.join("agent-a.log"), d.join("agent-b.log"));
    let env = [("RUST_LOG", "info")];
    let mut procs = Procs(vec![]);
    let (cfg_a, cfg_b) = (
        agent_config(d, "mac-mini", MAC_A, 100),
        agent_config(d, "studio", MAC_B, 101),
    );
    for (lab, cfg, log) in [(&a, &cfg_a, &log_a), (&b, &cfg_b, &log_b)] {
        let args = ["--config", cfg.to_str().unwrap(), "run"];
        procs.0.push(spawn_in(&lab.mac(), BIN, &args, log, &env));
    }
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let logs = || format!("agent A:\n{}\nagent B:\n{}", read(&log_a), read(&log_b));
    let until = |what: &str, secs: u64, check: &mut dyn FnMut() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !check() {
            assert!(
                Instant::now() < deadline,
                "{what} did not happen within {secs} s\n{}\nprometheus:\n{}\nalertmanager:\n{}",
                logs(),
                read(&d.join("prometheus.log")),
                read(&d.join("alertmanager.log"))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for target in [MAC_A, MAC_B] {
        until("the agents' first round", 30, &mut || {
            https_in(&mon.0, &format!("https://{target}/-/ready"), &ca).0 == 200
        });
    }
    let verdict = |target: &str, state: &str| {
        metric(
            &mon.0,
            target,
            &format!("pia_split_tunnel_verdict{{state=\"{state}\"}} "),
            &ca,
        )
    };
    assert_eq!(verdict(MAC_A, "bypass_broken"), Some(1.0), "{}", logs());
    assert_eq!(verdict(MAC_B, "bypass_working"), Some(1.0), "{}", logs());

    let rules = rules(d);
    let prom_cfg = prometheus_config(d, &rules);
    let humans = Listener::start_in(Some(&mon.0));
    let am_cfg = alertmanager_config(d, humans.addr);
    let t0 = Instant::now();
    procs.0.push(spawn_in(
        &mon.0,
        "prometheus-alertmanager",
        &[
            &format!("--config.file={}", am_cfg.display()),
            &format!("--storage.path={}", d.join("am-data").display()),
            &format!("--web.listen-address={AM}"),
            "--cluster.listen-address=",
        ],
        &d.join("alertmanager.log"),
        &[],
    ));
    procs.0.push(spawn_in(
        &mon.0,
        "prometheus",
        &[
            &format!("--config.file={}", prom_cfg.display()),
            &format!("--storage.tsdb.path={}", d.join("prom-data").display()),
            &format!("--web.listen-address={PROM}"),
            "--rules.alert.resend-delay=1s",
        ],
        &d.join("prometheus.log"),
        &[],
    ));
    let at = |t: Instant| t.duration_since(t0).as_secs_f64();
    let mut timeline: Vec<(f64, String)> = Vec::new();

    // Firing: mac A's alert, one, with its labels; never mac B's.
    let mut seen = Vec::new();
    until("mac A's alert firing in Alertmanager", 60, &mut || {
        seen = am_alerts(&mon.0);
        !seen.is_empty()
    });
    timeline.push((
        at(Instant::now()),
        format!("alert firing in Alertmanager: {seen:?}"),
    ));
    let ours: Vec<_> = seen.iter().filter(|x| x.0 == ALERT).collect();
    assert_eq!(ours.len(), 1, "one alert per incident: {seen:?}");
    assert_eq!(
        ours[0],
        &(
            ALERT.into(),
            MAC_A.into(),
            "lab".into(),
            "pia-split-tunnel".into()
        )
    );

    until("the webhook reaching mac A", 30, &mut || {
        read(&log_a).contains("Alertmanager asks for the repair")
    });
    timeline.push((
        at(Instant::now()),
        "webhook at mac A (it probes first)".into(),
    ));
    until("the alert at the humans' receiver", 30, &mut || {
        humans.seen().contains(&(ALERT.into(), MAC_A.into()))
    });
    timeline.push((at(Instant::now()), "alert at the humans' receiver".into()));
    until("mac A's repair verified", 30, &mut || {
        read(&log_a).contains("applied and verified")
    });
    timeline.push((at(Instant::now()), "repair verified at mac A".into()));

    // Resolved: no active alert, and the resolved notice delivered to mac A.
    until("the alert resolving", 60, &mut || {
        am_alerts(&mon.0).iter().all(|x| x.0 != ALERT)
    });
    timeline.push((at(Instant::now()), "alert resolved in Alertmanager".into()));
    until("the resolved notice reaching mac A", 30, &mut || {
        metric(
            &mon.0,
            MAC_A,
            "pia_split_tunnel_fallback_alert_requests_total{result=\"ignored\"} ",
            &ca,
        )
        .is_some_and(|n| n >= 1.0)
    });
    timeline.push((
        at(Instant::now()),
        "resolved notice at mac A (ignored)".into(),
    ));

    println!("fleet timeline (seconds after Prometheus and Alertmanager started):");
    for (t, what) in &timeline {
        println!("  {t:6.1} s  {what}");
    }

    // Only mac A repaired; mac B untouched and never alerted.
    let applied = |target| {
        metric(
            &mon.0,
            target,
            "pia_split_tunnel_fallback_actions_total{action=\"apply\",result=\"ok\"} ",
            &ca,
        )
    };
    assert_eq!(applied(MAC_A), Some(1.0), "{}", logs());
    assert_eq!(applied(MAC_B), Some(0.0), "{}", logs());
    assert_eq!(verdict(MAC_A, "bypass_working"), Some(1.0));
    assert!(a.ip(&["rule"]).contains("from 10.0.15.15 lookup 100"));
    assert_ne!(a.ip(&["rule"]), rules_a_before);
    assert_eq!(b.ip(&["rule"]), rules_b_before, "mac B unchanged");
    // Mac B never heard of mac A's alert (its own route only matches its own instance).
    let (_, b_metrics) = https_in(&mon.0, &format!("https://{MAC_B}/metrics"), &ca);
    let b_alerts: Vec<_> = b_metrics
        .lines()
        .filter(|l| l.starts_with("pia_split_tunnel_fallback_alert_requests_total{"))
        .filter(|l| !l.ends_with(" 0"))
        .collect();
    assert!(b_alerts.is_empty(), "{b_alerts:?}");
    assert!(
        !humans.seen().iter().any(|(_, i)| i == MAC_B),
        "{:?}",
        humans.seen()
    );
    assert!(
        !read(&log_b).contains("Alertmanager asks for the repair"),
        "{}",
        logs()
    );
    let (_, prom_alerts) = http_in(&mon.0, "GET", &format!("http://{PROM}/api/v1/alerts"), None);
    assert!(!prom_alerts.contains(MAC_B), "{prom_alerts}");
}

// The shipped example, `prometheus/alertmanager.yml`, as written.

const MAC_MINI: &str = "mac-mini.lan:9847";
const STUDIO: &str = "studio.lan:9847";
const EXPORTER_DOWN: &str = "PiaSplitTunnelExporterDown";

fn shipped_alertmanager() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus/alertmanager.yml"),
    )
    .unwrap()
}

/// Replaces each placeholder, which must be in the shipped file (so the test breaks when the
/// file changes shape, rather than testing something else).
fn fill(text: &str, pairs: &[(&str, String)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in pairs {
        assert!(
            out.contains(from),
            "prometheus/alertmanager.yml no longer has {from:?}"
        );
        out = out.replace(from, to);
    }
    out
}

fn amtool(args: &[&str]) -> std::process::Output {
    Command::new("amtool")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "amtool: {e} (sudo bash .ci/setup installs prometheus-alertmanager, which has it)"
            )
        })
}

#[test]
fn the_shipped_alertmanager_example_passes_amtool_and_routes_as_it_says() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus/alertmanager.yml");
    let file = file.to_str().unwrap();
    let out = amtool(&["check-config", file]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let config = format!("--config.file={file}");
    let routed = |labels: &[&str]| {
        let out = amtool(&[&["config", "routes", "test", &config], labels].concat());
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let broken = format!("alertname={ALERT}");
    let down = format!("alertname={EXPORTER_DOWN}");
    let on = |i: &str| format!("instance={i}");
    assert_eq!(routed(&[&broken, &on(MAC_MINI)]), "humans,mac-mini");
    assert_eq!(routed(&[&broken, &on(STUDIO)]), "humans,studio");
    // Every other alert, and a Mac without a route of its own, reach a person only.
    assert_eq!(routed(&[&down, &on(MAC_MINI)]), "humans");
    assert_eq!(routed(&[&broken, "instance=laptop.lan:9847"]), "humans");
    assert_eq!(routed(&["alertname=PiaSplitTunnelLogStale"]), "humans");
}

/// A loopback listener standing in for the `humans` receiver: records each notification's
/// alerts as (alertname, instance).
struct Listener {
    addr: std::net::SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Moves the calling thread (only) into the network namespace at `path`.
#[cfg(target_os = "linux")]
fn enter_netns(path: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "{path}: {}", std::io::Error::last_os_error());
}

/// Network namespaces are Linux's: the lab tests type-check on macOS but cannot run there.
#[cfg(not(target_os = "linux"))]
fn enter_netns(path: &str) {
    panic!("{path}: network namespaces need Linux");
}

impl Listener {
    fn start() -> Listener {
        Listener::start_in(None)
    }

    /// On 127.0.0.1 of network namespace `ns` (by name), or of the test's own.
    fn start_in(ns: Option<&str>) -> Listener {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (into, stopped) = (seen.clone(), stop.clone());
        let ns = ns.map(|n| format!("/var/run/netns/{n}"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // setns moves this thread only; the socket stays in that namespace.
            if let Some(path) = ns {
                enter_netns(&path);
            }
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.set_nonblocking(true).unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                match l.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        if let Some(body) = read_post(conn) {
                            into.lock().unwrap().extend(alerts_of(&body));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the listener starts");
        Listener { addr, seen, stop }
    }

    fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

/// One HTTP/1.1 request's body (by Content-Length), answered 200.
fn read_post(mut conn: std::net::TcpStream) -> Option<String> {
    use std::io::{Read, Write};
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = conn.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())?;
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    Some(String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned())
}

fn alerts_of(webhook: &str) -> Vec<(String, String)> {
    let v: Value = serde_json::from_str(webhook).unwrap_or(Value::Null);
    v["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let l = |k: &str| a["labels"][k].as_str().unwrap_or("").to_owned();
            (l("alertname"), l("instance"))
        })
        .collect()
}

/// An agent as a Mac of the example runs it: TLS and basic auth from its web config, the
/// token and its own `instance`.
fn tls_agent(d: &Path, name: &str, pki: &common::tls::Pki, instance: &str) -> common::agent::Agent {
    let web = d.join(format!("{name}-web.yml"));
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {:?}\n  key_file: {:?}\nbasic_auth_users:\n  \
             prometheus: '{}'\n",
            pki.path("server.pem"),
            pki.path("server.key"),
            bcrypt::hash("scrape secret", 4).unwrap()
        ),
    )
    .unwrap();
    let token = d.join(format!("{name}.token"));
    std::fs::write(&token, format!("{name}-{TOKEN}")).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = d.join(format!("{name}-proxy.log"));
    std::fs::write(&log, b"").unwrap();
    let (token_set, instance_set) = (
        format!("fallback.token_file={token:?}"),
        format!("fallback.instance={instance:?}"),
    );
    let args = [
        "--web.config.file",
        web.to_str().unwrap(),
        "--set",
        &token_set,
        "--set",
        &instance_set,
    ];
    common::agent::Agent::start_with(&log, &d.join(format!("{name}-cp.json")), &args, &[])
}

/// `fallback_alert_requests_total` by result, read over TLS with the scrape credentials.
fn alert_requests(agent: &common::agent::Agent, pki: &common::tls::Pki) -> Vec<(String, f64)> {
    let auth = common::tls::basic("prometheus", "scrape secret");
    let (code, text) = common::tls::request(
        agent.addr,
        pki.client(None),
        "GET",
        "/metrics",
        &[("Authorization", &auth)],
    )
    .unwrap();
    assert_eq!(code, 200, "{text}");
    let prefix = "pia_split_tunnel_fallback_alert_requests_total{result=\"";
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|l| {
            let (result, value) = l.split_once("\"} ")?;
            Some((result.to_owned(), value.parse().ok()?))
        })
        .filter(|(_, n)| *n > 0.0)
        .collect()
}

/// Alertmanager on a free loopback port with `config`; killed on drop.
fn start_alertmanager(d: &Path, config: &str) -> (Procs, std::net::SocketAddr) {
    let file = d.join("alertmanager.yml");
    std::fs::write(&file, config).unwrap();
    let addr = common::agent::free_port();
    let log = d.join("alertmanager.log");
    let child = Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", file.display()))
        .arg(format!("--storage.path={}", d.join("am-data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("prometheus-alertmanager: {e} (sudo bash .ci/setup)"));
    let mut am = Procs(vec![child]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = std::net::TcpStream::connect(addr).is_ok()
            && common::agent::http_get(addr, "/-/ready").contains("OK");
        if up {
            return (am, addr);
        }
        let exited = am.0[0].try_wait().unwrap();
        assert!(
            Instant::now() < deadline && exited.is_none(),
            "alertmanager exited ({exited:?}) or not ready after 30 s: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_shipped_example_brings_each_mac_its_own_repair_alert_over_https_and_every_alert_to_humans() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = common::tls::Pki::new(d, "macs");
    let mini = tls_agent(d, "mac-mini", &pki, MAC_MINI);
    let studio = tls_agent(d, "studio", &pki, STUDIO);
    let humans = Listener::start();
    let config = example_config(d, &pki, [mini.addr, studio.addr], humans.addr);
    let (_am, am) = start_alertmanager(d, &config);
    post_alerts(am);

    // mac-mini's own alert reaches it over https with its token, and is accepted: answered
    // (observe mode, probes off: "not_acted") and counted, not refused (401, 403, TLS).
    let why = || {
        format!(
            "humans saw {:?}; alertmanager:\n{}",
            humans.seen(),
            std::fs::read_to_string(d.join("alertmanager.log")).unwrap_or_default()
        )
    };
    wait_until("an alert at mac-mini", &why, || {
        !alert_requests(&mini, &pki).is_empty()
    });
    let want = [
        (ALERT, MAC_MINI),
        (EXPORTER_DOWN, MAC_MINI),
        (EXPORTER_DOWN, STUDIO),
    ];
    wait_until("every alert at humans", &why, || {
        want.iter()
            .all(|(n, i)| humans.seen().contains(&((*n).to_owned(), (*i).to_owned())))
    });
    // Give a misrouted notification the time to arrive (groups flush every second).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        alert_requests(&mini, &pki),
        vec![("not_acted".to_owned(), 1.0)],
        "mac-mini: its own alert, once, and not ExporterDown (which would be \"ignored\")"
    );
    assert_eq!(
        alert_requests(&studio, &pki),
        vec![],
        "studio: nothing of mac-mini's"
    );
}

/// The shipped example with the test's addresses and files, and seconds where it waits minutes.
fn example_config(
    d: &Path,
    pki: &common::tls::Pki,
    [mini, studio]: [std::net::SocketAddr; 2],
    humans: std::net::SocketAddr,
) -> String {
    let etc = "/etc/alertmanager/pia-split-tunnel";
    fill(
        &shipped_alertmanager(),
        &[
            ("https://mac-mini.lan:9847/", format!("https://{}/", mini)),
            ("https://studio.lan:9847/", format!("https://{}/", studio)),
            (
                "https://chat.example/hooks/pia-split-tunnel",
                format!("http://{}/humans", humans),
            ),
            (
                &format!("{etc}/mac-mini.token"),
                d.join("mac-mini.token").display().to_string(),
            ),
            (
                &format!("{etc}/studio.token"),
                d.join("studio.token").display().to_string(),
            ),
            (
                &format!("{etc}/macs-ca.crt"),
                pki.path("ca.pem").display().to_string(),
            ),
            ("group_wait: 30s", "group_wait: 1s".into()),
            ("group_interval: 5m", "group_interval: 1s".into()),
        ],
    )
}

/// mac-mini's repair alert and an ExporterDown for each Mac, posted with amtool.
fn post_alerts(am: std::net::SocketAddr) {
    let url = format!("--alertmanager.url=http://{am}");
    for labels in [
        [ALERT, MAC_MINI],
        [EXPORTER_DOWN, MAC_MINI],
        [EXPORTER_DOWN, STUDIO],
    ] {
        let (name, instance) = (
            format!("alertname={}", labels[0]),
            format!("instance={}", labels[1]),
        );
        let out = amtool(&[
            "alert",
            "add",
            &url,
            &name,
            &instance,
            "job=pia-split-tunnel",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Polls `done` every 200 ms for 30 s; fails with `what` and `why()`.
fn wait_until(what: &str, why: &dyn Fn() -> String, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 30 s; {}",
            why()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_agent_with_a_token_and_no_instance_says_at_start_that_alerts_will_not_act() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let token = d.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = d.join("transparent_proxy.log");
    std::fs::write(&log, b"").unwrap();
    let stderr = d.join("agent.log");
    let set = format!("fallback.token_file={token:?}");
    let agent =
        common::agent::Agent::start_logged(&log, &d.join("cp.json"), &["--set", &set], &stderr);
    let deadline = Instant::now() + Duration::from_secs(10);
    let said = || std::fs::read_to_string(&stderr).unwrap_or_default();
    while !said().contains("fallback.instance is unset") {
        assert!(Instant::now() < deadline, "no warning in 10 s: {}", said());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(agent);
}
