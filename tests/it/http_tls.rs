//! `--web.config.file` on the running agent: TLS with a test CA, basic auth (bcrypt), client
//! certificates, the header timeout and connection cap over TLS, the control endpoints off
//! loopback, and a real Prometheus scraping over TLS with and without credentials.

use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::agent::{Agent, free_port};
use common::prom_server::Prometheus;
use common::tls::{Pki, basic, request};

const USER: &str = "prometheus";
const PASSWORD: &str = "correct horse battery staple";
const TOKEN: &str = "tls-test-token-0123456789abcdef";

fn log_in(dir: &Path) -> std::path::PathBuf {
    let log = dir.join("transparent_proxy.log");
    std::fs::copy(common::fixture("mixed.log"), &log).unwrap();
    log
}

/// A web config with the server certificate of `pki`, basic auth for USER, and `extra` lines
/// under `tls_server_config`.
fn web_config(dir: &Path, pki: &Pki, extra: &str) -> std::path::PathBuf {
    // Cost 4: the lowest bcrypt allows; the test is about the protocol, not the cost.
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let text = format!(
        "tls_server_config:\n  cert_file: {:?}\n  key_file: {:?}\n{extra}\
         http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
         basic_auth_users:\n  {USER}: '{hash}'\n",
        pki.path("server.pem"),
        pki.path("server.key"),
    );
    let path = dir.join("web.yml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start(dir: &Path, web: &Path, sets: &[&str]) -> Agent {
    let mut args = vec!["--web.config.file", web.to_str().unwrap()];
    for s in sets {
        args.extend(["--set", s]);
    }
    Agent::start_with(&log_in(dir), &dir.join("cp.json"), &args, &[])
}

#[test]
fn tls_and_basic_auth_answer_only_the_right_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    let agent = start(dir.path(), &web_config(dir.path(), &pki, ""), &[]);
    let client = pki.client(None);
    let good = basic(USER, PASSWORD);
    let (status, text) = request(
        agent.addr,
        client.clone(),
        "GET",
        "/metrics",
        &[("Authorization", &good)],
    )
    .unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("\npia_split_tunnel_log_lines_total "),
        "{text}"
    );
    assert!(
        text.to_ascii_lowercase()
            .contains("x-content-type-options: nosniff"),
        "configured header: {text}"
    );
    let wrong = basic(USER, "correct horse battery stapl");
    let stranger = basic("grafana", PASSWORD);
    for (what, auth) in [
        ("no credentials", None),
        ("wrong password", Some(wrong.as_str())),
        ("unknown user", Some(stranger.as_str())),
        ("bearer instead of basic", Some("Bearer abc")),
        ("not base64", Some("Basic %%%")),
    ] {
        for path in ["/metrics", "/health", "/-/healthy", "/"] {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| ("Authorization", a)).into_iter().collect();
            let (status, text) =
                request(agent.addr, client.clone(), "GET", path, &headers).unwrap();
            assert_eq!(status, 401, "{what} on {path}: {text}");
            assert!(
                text.to_ascii_lowercase()
                    .contains("www-authenticate: basic"),
                "{text}"
            );
        }
    }
    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut s = TcpStream::connect(agent.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        !out.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    // A client that trusts another CA refuses the server.
    let other = Pki::new(dir.path(), "other");
    let e = request(agent.addr, other.client(None), "GET", "/metrics", &[]).unwrap_err();
    assert!(e.contains("certificate"), "{e}");
    // The refusals are counted.
    let (_, text) = request(
        agent.addr,
        client,
        "GET",
        "/metrics",
        &[("Authorization", &good)],
    )
    .unwrap();
    let refused: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("pia_split_tunnel_http_unauthorized_total "))
        .expect("refusal counter")
        .parse()
        .unwrap();
    assert_eq!(refused, 20.0);
}

#[test]
fn client_certificates_are_required_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    let extra = format!(
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {:?}\n  min_version: TLS13\n",
        pki.path("ca.pem")
    );
    let agent = start(dir.path(), &web_config(dir.path(), &pki, &extra), &[]);
    let good = basic(USER, PASSWORD);
    let auth = [("Authorization", good.as_str())];
    let (status, _) =
        request(agent.addr, pki.client(Some(&pki)), "GET", "/metrics", &auth).unwrap();
    assert_eq!(status, 200);
    let e = request(agent.addr, pki.client(None), "GET", "/metrics", &auth).unwrap_err();
    assert!(
        e.to_lowercase().contains("certificate"),
        "no client certificate: {e}"
    );
    let stranger = Pki::new(dir.path(), "stranger");
    let e = request(
        agent.addr,
        pki.client(Some(&stranger)),
        "GET",
        "/metrics",
        &auth,
    )
    .unwrap_err();
    assert!(
        e.to_lowercase().contains("certificate") || e.contains("alert"),
        "certificate from another CA: {e}"
    );
}

#[test]
fn header_timeout_and_connection_cap_hold_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    let agent = start(
        dir.path(),
        &web_config(dir.path(), &pki, ""),
        &["http.header_timeout_secs=2", "http.max_connections=8"],
    );
    let client = pki.client(None);
    let good = basic(USER, PASSWORD);
    let metrics = || {
        request(
            agent.addr,
            client.clone(),
            "GET",
            "/metrics",
            &[("Authorization", &good)],
        )
    };
    // A client that connects and never starts its handshake is cut at the header timeout.
    let silent = TcpStream::connect(agent.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t = Instant::now();
    let r = (&silent).read(&mut [0u8; 16]);
    let cut = t.elapsed();
    assert!(
        matches!(r, Ok(0) | Err(_))
            && cut >= Duration::from_millis(1500)
            && cut < Duration::from_secs(5),
        "silent client: {r:?} after {cut:?}"
    );
    // One that completes the handshake, then sends its head a byte at a time, is cut too.
    let tcp = TcpStream::connect(agent.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let conn =
        rustls::ClientConnection::new(client.clone(), "127.0.0.1".try_into().unwrap()).unwrap();
    let mut slow = rustls::StreamOwned::new(conn, tcp);
    let t = Instant::now();
    let mut was_cut = false;
    for b in b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
        if slow.write_all(&[*b]).and_then(|()| slow.flush()).is_err() {
            was_cut = true;
            break;
        }
        match slow.read(&mut [0u8; 256]) {
            Ok(0) => {
                was_cut = true;
                break;
            }
            Ok(_) => panic!("a slow head got an answer"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                was_cut = true;
                break;
            }
        }
    }
    assert!(
        was_cut && t.elapsed() < Duration::from_secs(6),
        "slow head over TLS: cut={was_cut} after {:?}",
        t.elapsed()
    );
    // Twice the cap in idle connections: those over it push out the first ones at once.
    let idle: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(agent.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let closed_at_once = idle.iter().filter(|s| closed(s)).count();
    assert!(closed_at_once >= 6, "{closed_at_once} of 16 closed at once");
    let deadline = Instant::now() + Duration::from_secs(8);
    while metrics().map(|(s, _)| s) != Ok(200) {
        assert!(
            Instant::now() < deadline,
            "/metrics over TLS never came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The held ones are cut at the header timeout (an idle one is pushed out at once by a
    // newcomer, so /metrics did not have to wait for that).
    std::thread::sleep(Duration::from_secs(3));
    assert!(idle.iter().all(closed), "every idle connection was cut");
}

fn closed(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let r = (&*s).read(&mut [0u8; 16]);
    s.set_nonblocking(false).unwrap();
    !matches!(r, Err(e) if e.kind() == ErrorKind::WouldBlock)
}

/// The agent listening on every address (`:PORT`, not loopback), killed on drop; stderr kept.
struct Wide {
    child: Child,
    addr: SocketAddr,
    stderr: std::path::PathBuf,
}

impl Drop for Wide {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_wide(dir: &Path, name: &str, extra: &[&str]) -> Wide {
    let port = free_port().port();
    let token = dir.join("token");
    if !token.exists() {
        common::write_secret(&token, TOKEN);
    }
    let stderr = dir.join(format!("{name}.stderr"));
    let child = Command::new(common::BIN)
        .args([
            "run",
            "--web.listen-address",
            &format!(":{port}"),
            "--log-path",
        ])
        .arg(log_in(dir))
        .arg("--checkpoint")
        .arg(dir.join(format!("{name}.json")))
        .args([
            "--set",
            "probe.enabled=false",
            "--set",
            "fallback.backend=\"none\"",
            "--set",
        ])
        .arg(format!("log.error_path={:?}", dir.join("STProxy.log")))
        .arg("--set")
        .arg(format!("fallback.token_file={token:?}"))
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    common::agent::wait_listening(addr, "agent on :PORT");
    Wide {
        child,
        addr,
        stderr,
    }
}

fn post_apply(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /fallback/apply HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn control_endpoints_refuse_plain_http_off_loopback_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let wide = start_wide(dir.path(), "plain", &[]);
    let r = post_apply(wide.addr);
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(r.contains("fallback.allow_plain_http"), "{r}");
    assert!(common::agent::http_get(wide.addr, "/metrics").contains("pia_split_tunnel_"));
    let said = std::fs::read_to_string(&wide.stderr).unwrap();
    assert!(
        said.contains("control endpoints") && said.contains("fallback.allow_plain_http"),
        "startup message: {said}"
    );
    drop(wide);
    // Said explicitly: served (observe mode, so applying is a conflict, not a refusal).
    let wide = start_wide(
        dir.path(),
        "allowed",
        &["--set", "fallback.allow_plain_http=true"],
    );
    let r = post_apply(wide.addr);
    assert!(r.starts_with("HTTP/1.1 409"), "{r}");
    drop(wide);
    // Over TLS: served, basic auth not asked (the bearer token is the credential).
    let pki = Pki::new(dir.path(), "main");
    let web = web_config(dir.path(), &pki, "");
    let wide = start_wide(
        dir.path(),
        "tls",
        &["--web.config.file", web.to_str().unwrap()],
    );
    let bearer = format!("Bearer {TOKEN}");
    let (status, text) = request(
        wide.addr,
        pki.client(None),
        "POST",
        "/fallback/apply",
        &[("Authorization", &bearer)],
    )
    .unwrap();
    assert_eq!(status, 409, "{text}");
    let (status, _) = request(wide.addr, pki.client(None), "POST", "/fallback/apply", &[]).unwrap();
    assert_eq!(status, 401);
}

#[test]
fn a_bad_web_config_stops_the_agent_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    for (text, named) in [
        ("tls_server_config:\n  cert_fil: x.pem\n", "cert_fil"),
        (
            "basic_auth_users:\n  prometheus: hunter2\n",
            "basic_auth_users.prometheus",
        ),
        (
            "tls_server_config:\n  cert_file: missing.pem\n  key_file: missing.key\n",
            "missing.pem",
        ),
    ] {
        std::fs::write(&web, text).unwrap();
        let out = Command::new(common::BIN)
            .args(["check-config", "--web.config.file"])
            .arg(&web)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(
            err.contains(named) && err.contains("web.yml"),
            "{text}: {err}"
        );
    }
}

#[test]
fn real_prometheus_scrapes_over_tls_with_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    let agent = start(dir.path(), &web_config(dir.path(), &pki, ""), &[]);
    let ca = pki.path("ca.pem");
    let job = |name: &str, auth: &str| {
        format!(
            r#"  - job_name: {name}
    scheme: https
    tls_config:
      ca_file: {ca:?}
{auth}    static_configs:
      - targets: ["{addr}"]
"#,
            addr = agent.addr
        )
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}",
        job(
            "with-credentials",
            &format!("    basic_auth:\n      username: {USER}\n      password: '{PASSWORD}'\n")
        ),
        job("without-credentials", ""),
    );
    let prom = Prometheus::start(dir.path(), "prometheus", &config, &[]);
    let within = Duration::from_secs(30);
    prom.wait_for("up{job=\"with-credentials\"} == 1", within, |r| {
        r.len() == 1
    });
    prom.wait_for("up{job=\"without-credentials\"} == 0", within, |r| {
        r.len() == 1
    });
    let lines = prom.wait_for(
        "pia_split_tunnel_log_lines_total{job=\"with-credentials\"}",
        within,
        |r| r.len() == 1,
    );
    assert!(common::prom_server::value(&lines[0]) > 0.0, "{lines:?}");
    assert!(
        prom.query("pia_split_tunnel_log_lines_total{job=\"without-credentials\"}")
            .is_empty()
    );
    // Prometheus's own view of the refused target says why.
    let targets = prom.get("/api/v1/targets").unwrap();
    assert!(targets.contains("401"), "{targets}");
}

#[test]
fn clients_without_credentials_over_tls_do_not_hold_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    let agent = start(dir.path(), &web_config(dir.path(), &pki, ""), &[]);
    let ca = std::fs::read_to_string(pki.path("ca.pem")).unwrap();
    let mut attacker = common::attacker::start_with_ca("tls-nocreds", agent.addr, &ca);
    std::thread::sleep(Duration::from_secs(4));
    let client = pki.client(None);
    let good = basic(USER, PASSWORD);
    let mut answered = 0;
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        let r = request(
            agent.addr,
            client.clone(),
            "GET",
            "/metrics",
            &[("Authorization", &good)],
        );
        if matches!(r, Ok((200, _))) && t.elapsed() < Duration::from_secs(3) {
            answered += 1;
            worst = worst.max(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = attacker.kill();
    let _ = attacker.wait();
    eprintln!(
        "FIGURES tls-nocreds: {answered} of 10 scrapes answered within 3 s, slowest {worst:?}"
    );
    assert!(
        answered >= 9,
        "only {answered} of 10 scrapes answered within 3 s"
    );
}

/// ClientHellos naming an IP address as server name (which RFC 6066 forbids: rustls warns
/// about each) write nothing to the agent's log unless it is debugging.
#[test]
fn hostile_handshakes_leave_no_warning_lines() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    let web = web_config(dir.path(), &pki, "");
    let lines = |level: &str| {
        let run = dir.path().join(level);
        std::fs::create_dir(&run).unwrap();
        let stderr = run.join("agent.log");
        let agent = Agent::start_logged(
            &log_in(&run),
            &run.join("cp.json"),
            &[
                "--web.config.file",
                web.to_str().unwrap(),
                "--log.level",
                level,
            ],
            &stderr,
        );
        for _ in 0..20 {
            let out = Command::new("openssl")
                .args(["s_client", "-connect", &agent.addr.to_string()])
                .args(["-servername", "127.0.0.1"])
                .stdin(Stdio::null())
                .output()
                .expect("openssl runs (the test sends ClientHellos with it)");
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("BEGIN CERTIFICATE")
                    || String::from_utf8_lossy(&out.stdout).contains("Server certificate"),
                "the handshake went through: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        agent.stop();
        std::fs::read_to_string(&stderr)
            .unwrap()
            .lines()
            .filter(|l| l.contains("Illegal SNI"))
            .count()
    };
    assert!(lines("debug") >= 20, "at debug, rustls's line is shown");
    assert_eq!(lines("info"), 0, "at info, no line per hostile handshake");
}
