//! The status page in a real browser: Debian's headless chromium loads `/` from `demo`, sees
//! the healthy verdict, then the broken one once the replay reaches the failure, with the demo's
//! apps in the table and no console error. At speed 1 the healthy stretch lasts ~23 s. Screenshots of both states land in `target/`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One headless load of `url`: the DOM after load, and chromium's stderr (the console).
fn load(url: &str, screenshot: Option<&Path>) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=420,1400",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(path) => cmd.arg(format!("--screenshot={}", path.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().expect("running chromium");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_no_console_error(stderr: &str) {
    for line in stderr.lines() {
        assert!(
            !(line.contains("Uncaught") || (line.contains("CONSOLE") && line.contains("rror"))),
            "console error: {line}"
        );
    }
}

/// Loads the page until its verdict is `tone`, then screenshots it.
fn wait_for(url: &str, tone: &str, shot: &Path, within: Duration) -> String {
    let start = Instant::now();
    loop {
        let (dom, stderr) = load(url, None);
        assert_no_console_error(&stderr);
        if dom.contains(&format!("data-tone=\"{tone}\"")) {
            let (_, stderr) = load(url, Some(shot));
            assert_no_console_error(&stderr);
            assert!(shot.exists(), "no screenshot at {}", shot.display());
            return dom;
        }
        assert!(
            start.elapsed() < within,
            "the page never showed {tone} within {within:?}; last DOM:\n{dom}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn chromium_shows_the_demo_healthy_then_broken() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is needed: sudo bash .ci/setup (Debian's chromium package)"
    );
    let addr = free_addr();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_pia-split-tunnel-exporter"))
        .args(["demo", "--speed", "1", "--listen", &addr.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    // Kept open to the end: a closed pipe would stop the demo at its next line of output.
    let mut stdout = BufReader::new(demo.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    let _demo = Kill(demo);
    let url = format!("http://{addr}/");
    assert_eq!(first.trim(), format!("demo: status page at {url}"));

    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let healthy = wait_for(
        &url,
        "working",
        &target.join("status-page-healthy.png"),
        Duration::from_secs(20),
    );
    assert!(healthy.contains("The split tunnel is working"));
    let broken = wait_for(
        &url,
        "broken",
        &target.join("status-page-broken.png"),
        Duration::from_secs(90),
    );
    assert!(broken.contains("The split tunnel is broken"));
    assert!(broken.contains("runbook-piasplittunnelbypassbroken"));
    // The demo's apps, as its logs name them.
    for app in ["com.plexapp.plexmediaserver", "com.noip.DUC"] {
        assert!(
            broken.contains(app),
            "{app} missing from the table:\n{broken}"
        );
    }
}
