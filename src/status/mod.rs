//! `/`: the status page for the Mac's own user (no Prometheus, no Grafana).
//!
//! [`render`] is a pure function of a [`StatusView`] (plain data, every string as the log or
//! the OS gave it); [`adapter`] builds the view from the agent's health, session window, last
//! probe round and fallback. The page is server-rendered HTML with its CSS inline and no
//! script or external asset (it must work with no internet), refreshes itself every 5 s, and
//! holds no secret and no control.

pub mod adapter;

use std::fmt::Write;

use crate::sessions::verdict::percent;

/// The one-sentence state of the split tunnel, with its colour; its snake_case name is the
/// page's `data-tone`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::Display)]
#[strum(serialize_all = "snake_case")]
pub enum Tone {
    Working,
    Broken,
    /// No probe round, and the sessions say partial or inconclusive.
    Failing,
    Repaired,
    VpnDown,
    NotMeasured,
}

impl Tone {
    pub fn sentence(self) -> &'static str {
        match self {
            Tone::Working => {
                "The split tunnel is working: bypass apps reach the internet directly."
            }
            Tone::Broken => "The split tunnel is broken: bypass apps' sessions go nowhere.",
            Tone::Failing => {
                "Some bypass sessions get no reply (see the sessions line below); no probe has \
                 confirmed whether the split tunnel works."
            }
            Tone::Repaired => "The split tunnel is broken, and the fallback's rules repair it.",
            Tone::VpnDown => "The VPN is down: there is no tunnel to bypass.",
            Tone::NotMeasured => "Not measured yet: no probe round or session seen.",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Tone::Working => "#1b7f3b",
            Tone::Broken => "#b3261e",
            Tone::Failing => "#b36b00",
            Tone::Repaired => "#b36b00",
            Tone::VpnDown => "#5b5b9f",
            Tone::NotMeasured => "#666",
        }
    }

    /// The runbook (docs/runbooks.md) for this state, when there is a problem.
    fn runbook(self) -> Option<&'static str> {
        match self {
            Tone::Broken | Tone::Failing | Tone::Repaired => {
                Some("runbook-piasplittunnelbypassbroken")
            }
            Tone::Working | Tone::VpnDown | Tone::NotMeasured => None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppRow {
    pub app: String,
    /// Proxied sessions closed in the last window, and those that got no reply.
    pub window_sessions: u64,
    pub window_zero: u64,
    /// Since the agent started (the numbers `analyze` gives).
    pub total_sessions: u64,
    /// Of them, those that got no reply.
    pub total_zero: u64,
    pub total_bytes: u64,
    /// The most frequent error kinds, e.g. "timeout 12, refused 3".
    pub top_errors: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeRow {
    pub path: String,
    pub bound_to: String,
    pub egress: String,
    pub millis: u64,
    pub error: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FallbackView {
    pub mode: String,
    pub backend: String,
    pub active: bool,
    /// The rules in place (as `rules` prints them), empty when none.
    pub rules: String,
    /// Last decision and last action, one line each.
    pub last: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StatusView {
    pub version: String,
    pub tone: Tone,
    /// When the tone last changed, as the agent saw it (e.g. "12 s ago").
    pub since: Option<String>,
    /// Health components: name, status, reason.
    pub components: Vec<(String, String, String)>,
    pub window_seconds: u64,
    pub apps: Vec<AppRow>,
    pub probe: Vec<ProbeRow>,
    pub fallback: Option<FallbackView>,
}

/// Longest string shown from a log or the OS; the rest is cut (an app id of 1 MB must not make
/// a page of 1 MB every 5 s).
pub const MAX_TEXT: usize = 200;

/// HTML-escapes `s`, cut to [`MAX_TEXT`] characters. Hand-written: five characters to replace,
/// not worth a dependency.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_TEXT) + 8);
    let mut chars = s.chars();
    for c in chars.by_ref().take(MAX_TEXT) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// Apps shown at most, worst first; the rest are counted.
pub const MAX_APPS: usize = 50;

const CSS: &str = "body{font-family:-apple-system,system-ui,sans-serif;margin:0;padding:1em;\
max-width:60em;color:#222}h1{font-size:1.2em}h2{font-size:1.05em;margin-top:1.5em}\
.verdict{color:#fff;padding:.8em 1em;border-radius:.4em;font-size:1.1em}\
table{border-collapse:collapse;width:100%;font-size:.9em}td,th{text-align:left;padding:.25em .4em;\
border-bottom:1px solid #ddd;word-break:break-all}pre{background:#f4f4f4;padding:.5em;\
overflow-x:auto;font-size:.8em}.ok{color:#1b7f3b}.degraded{color:#b36b00}.failing{color:#b3261e}";

/// The whole page: head, verdict, then one section per source, then the links.
pub fn render(view: &StatusView) -> String {
    let mut h = String::with_capacity(8 * 1024);
    head(&mut h, &view.version);
    verdict(&mut h, view);
    health_table(&mut h, &view.components);
    apps_table(&mut h, view.window_seconds, &view.apps);
    probe_table(&mut h, &view.probe);
    fallback_section(&mut h, view.fallback.as_ref());
    links(&mut h, view.tone);
    h
}

fn head(h: &mut String, version: &str) {
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"5\">\
         <title>PIA split tunnel: status</title><style>{CSS}</style></head><body>\
         <h1>PIA split tunnel <small>pia-split-tunnel-exporter {}</small></h1>",
        escape(version)
    );
}

fn verdict(h: &mut String, view: &StatusView) {
    let _ = write!(
        h,
        "<p class=\"verdict\" id=\"verdict\" data-tone=\"{}\" style=\"background:{}\">{}",
        view.tone,
        view.tone.colour(),
        view.tone.sentence()
    );
    if let Some(since) = &view.since {
        let _ = write!(h, " <small>(since {})</small>", escape(since));
    }
    h.push_str("</p>");
}

fn health_table(h: &mut String, components: &[(String, String, String)]) {
    h.push_str("<h2>Health</h2><table><tr><th>component</th><th>status</th><th>reason</th></tr>");
    for (name, status, reason) in components {
        let (name, status, reason) = (escape(name), escape(status), escape(reason));
        let _ = write!(
            h,
            "<tr><td>{name}</td><td class=\"{status}\">{status}</td><td>{reason}</td></tr>"
        );
    }
    h.push_str("</table>");
}

fn apps_table(h: &mut String, window_seconds: u64, apps: &[AppRow]) {
    let _ = write!(
        h,
        "<h2>Apps (last {} s, worst first)</h2><table id=\"apps\"><tr><th>app</th>\
         <th>sessions</th><th>no reply</th><th>since start</th><th>no reply</th><th>bytes</th>\
         <th>top errors</th></tr>",
        window_seconds
    );
    let apps = worst_first(apps);
    for a in apps.iter().take(MAX_APPS) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{} %</td><td>{}</td><td>{} %</td><td>{}</td>\
             <td>{}</td></tr>",
            escape(&a.app),
            a.window_sessions,
            percent(a.window_zero, a.window_sessions),
            a.total_sessions,
            percent(a.total_zero, a.total_sessions),
            a.total_bytes,
            escape(&a.top_errors)
        );
    }
    if apps.len() > MAX_APPS {
        let _ = write!(
            h,
            "<tr><td colspan=\"7\">and {} more</td></tr>",
            apps.len() - MAX_APPS
        );
    }
    if apps.is_empty() {
        h.push_str("<tr><td colspan=\"7\">no proxied session closed in the window</td></tr>");
    }
    h.push_str("</table>");
}

/// Worst first: most sessions without a reply, then the highest share.
fn worst_first(apps: &[AppRow]) -> Vec<&AppRow> {
    let mut apps: Vec<&AppRow> = apps.iter().collect();
    apps.sort_by(|a, b| {
        b.window_zero
            .cmp(&a.window_zero)
            .then(share(b).total_cmp(&share(a)))
            .then(b.total_zero.cmp(&a.total_zero))
            .then(a.app.cmp(&b.app))
    });
    apps
}

fn probe_table(h: &mut String, probe: &[ProbeRow]) {
    h.push_str(
        "<h2>Last probe round</h2><table><tr><th>path</th><th>bound to</th><th>egress</th>\
         <th>time</th><th>error</th></tr>",
    );
    for p in probe {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td><td>{}</td></tr>",
            escape(&p.path),
            escape(&p.bound_to),
            escape(&p.egress),
            p.millis,
            escape(&p.error)
        );
    }
    if probe.is_empty() {
        h.push_str("<tr><td colspan=\"5\">no round yet (or probing is off)</td></tr>");
    }
    h.push_str("</table>");
}

fn fallback_section(h: &mut String, fallback: Option<&FallbackView>) {
    h.push_str("<h2>Fallback</h2>");
    let Some(f) = fallback else {
        h.push_str("<p>not configured</p>");
        return;
    };
    let _ = write!(
        h,
        "<p>mode <b>{}</b>, backend <b>{}</b>, {}</p>",
        escape(&f.mode),
        escape(&f.backend),
        if f.active {
            "<b>active</b>: its rules are in place"
        } else {
            "not active"
        }
    );
    if !f.rules.is_empty() {
        let _ = write!(h, "<pre>{}</pre>", escape_block(&f.rules));
    }
    if !f.last.is_empty() {
        h.push_str("<ul>");
        for l in &f.last {
            let _ = write!(h, "<li>{}</li>", escape(l));
        }
        h.push_str("</ul>");
    }
}

fn links(h: &mut String, tone: Tone) {
    h.push_str(
        "<h2>More</h2><ul><li><a href=\"/metrics\">/metrics</a>: Prometheus metrics</li>\
         <li><a href=\"/health\">/health</a>: health as JSON</li>",
    );
    if let Some(anchor) = tone.runbook() {
        let _ = write!(
            h,
            "<li><a id=\"runbook\" href=\"{}/blob/main/docs/runbooks.md#{anchor}\">the runbook for this problem</a> \
             (docs/runbooks.md)</li>",
            env!("CARGO_PKG_REPOSITORY")
        );
    }
    h.push_str("</ul></body></html>\n");
}

/// Rules text: several lines, each escaped and bounded, at most 100 lines.
fn escape_block(s: &str) -> String {
    let mut out = String::new();
    for line in s.lines().take(100) {
        out.push_str(&escape(line));
        out.push('\n');
    }
    out
}

/// The window's share without a reply, for sorting.
fn share(a: &AppRow) -> f64 {
    if a.window_sessions == 0 {
        0.0
    } else {
        a.window_zero as f64 / a.window_sessions as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(apps: Vec<AppRow>) -> StatusView {
        StatusView {
            version: "0.0.0".into(),
            tone: Tone::Broken,
            since: Some("3 s ago".into()),
            components: vec![("sessions".into(), "failing".into(), "90 % zero".into())],
            window_seconds: 300,
            apps,
            probe: vec![ProbeRow {
                path: "bypass".into(),
                bound_to: "en0 <b>".into(),
                egress: String::new(),
                millis: 3000,
                error: "timeout".into(),
            }],
            fallback: Some(FallbackView {
                mode: "auto".into(),
                backend: "pf".into(),
                active: true,
                rules: "pass out route-to (en0 10.0.15.1) from 10.0.15.15 to ! <x>".into(),
                last: vec!["apply: applied".into()],
            }),
        }
    }

    fn row(app: &str, sessions: u64, zero: u64) -> AppRow {
        AppRow {
            app: app.into(),
            window_sessions: sessions,
            window_zero: zero,
            top_errors: "timeout 3".into(),
            ..AppRow::default()
        }
    }

    #[test]
    fn shows_verdict_apps_worst_first_probe_and_fallback() {
        let page = render(&view(vec![row("com.good", 10, 0), row("com.plex", 10, 9)]));
        assert!(page.contains("The split tunnel is broken"));
        assert!(page.contains("data-tone=\"broken\""));
        assert_eq!(Tone::VpnDown.to_string(), "vpn_down");
        assert!(page.contains("http-equiv=\"refresh\" content=\"5\""));
        assert!(page.contains("name=\"viewport\""));
        assert!(page.find("com.plex").unwrap() < page.find("com.good").unwrap());
        assert!(page.contains("<td>90 %</td>"));
        let eighth = render(&view(vec![row("com.a", 8, 1)]));
        assert!(eighth.contains("<td>13 %</td>"), "12.5 % rounds half up");
        assert!(page.contains("en0 &lt;b&gt;"));
        assert!(page.contains("to ! &lt;x&gt;"));
        assert!(page.contains("#runbook-piasplittunnelbypassbroken"));
        // No external asset, no script, no form.
        assert!(!page.contains("<script"));
        assert!(!page.contains("<form"));
        assert!(!page.contains("src="));
    }

    #[test]
    fn hostile_ids_are_escaped_and_bounded() {
        let huge = "<".repeat(1 << 20);
        let hostile = [
            "<script>alert(1)</script>",
            "\"><img onerror=x>",
            "a&b'c",
            huge.as_str(),
        ];
        let apps = hostile.iter().map(|id| row(id, 1, 1)).collect();
        let mut v = view(apps);
        v.components.push(("x".into(), "<i>".into(), huge.clone()));
        v.fallback.as_mut().unwrap().rules = format!("{huge}\n").repeat(1000);
        let page = render(&v);
        assert!(!page.contains("<script"));
        assert!(!page.contains("<img"));
        assert!(page.contains("&quot;&gt;&lt;img onerror=x&gt;"));
        assert!(!page.contains("<i>"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("a&amp;b&#39;c"));
        // Bounded: the 1 MB id (and 1000 lines of it) take at most MAX_TEXT characters each.
        assert!(page.len() < 200_000, "page of {} bytes", page.len());
        assert!(escape(&huge).len() <= MAX_TEXT * 6 + 3);
    }

    #[test]
    fn many_apps_are_cut_with_a_count() {
        let apps = (0..(MAX_APPS + 7))
            .map(|i| row(&format!("app{i}"), 1, 0))
            .collect();
        let page = render(&view(apps));
        assert!(page.contains("and 7 more"));
    }
}
