//! The fleet path for Macs a central Prometheus cannot reach: the shipped agent-mode config
//! (`prometheus/agent.yml`) on a real Prometheus 2.42 scrapes the `demo` agent on loopback and
//! remote-writes over TLS with basic auth to a second Prometheus (the central store, with
//! `--web.enable-remote-write-receiver` and the exporter toolkit's web config); the central one
//! has the agent's series under the Mac's `instance`. Needs the `prometheus` package.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::agent::Demo;
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
                "/usr/local/etc/prometheus-agent/remote-write.pass",
                pass.display().to_string(),
            ),
            (
                "/usr/local/etc/prometheus-agent/central-ca.crt",
                pki.path("ca.pem").display().to_string(),
            ),
        ],
    );
    let _mac = Prometheus::start(d, "agent-mode", &filled, &["--enable-feature=agent"]);

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
