//! Who is asking, by name: the `Host` allow-list (DNS rebinding) and who may see addresses.
//!
//! A web page the user opens can point a name it owns at 127.0.0.1 and read the agent's
//! answers as its own origin; the browser still sends that name as `Host`. So every route
//! answers 421 unless the name is a loopback name (`localhost`, `*.localhost`, a loopback
//! address), an address the connection came in on, the listen address's host, or one of
//! `http.allowed_hosts`. A request with no `Host` at all (HTTP/1.0 from a script) is not a
//! browser's and passes.
//!
//! `/` and `/health` name the home address and the VPN's exit address. Unless
//! `probe.export_addresses` is set, they are shown only to a loopback peer that asked by a
//! loopback name; everyone else gets them replaced by `(hidden)`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

/// The connection a request came on, set by the server on every request.
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// Set on every request that passed [`check`]: may this one see addresses.
#[derive(Clone, Copy, Debug)]
pub struct LocalView(pub bool);

/// The names allowed besides loopback ones and the connection's own address, lowercased.
#[derive(Clone, Debug, Default)]
pub struct Allowed(Vec<String>);

impl Allowed {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Allowed(
            names
                .into_iter()
                .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .collect(),
        )
    }
}

/// The host part of an authority (`name`, `name:port`, `[v6]:port`), without a final dot.
pub fn host_part(authority: &str) -> &str {
    let h = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    h.strip_suffix('.').unwrap_or(h)
}

fn is_loopback_name(host: &str) -> bool {
    let lower = host.to_ascii_lowercase();
    lower == "localhost"
        || lower.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `host` may be asked for on a connection to `local`.
fn allowed(host: &str, local: IpAddr, names: &Allowed) -> bool {
    if is_loopback_name(host) {
        return true;
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return ip == local || ip.to_canonical() == local.to_canonical();
    }
    let lower = host.to_ascii_lowercase();
    names.0.contains(&lower)
}

/// The names a request gives: its `Host` header and the authority of an absolute URI.
fn names_of(req: &Request) -> Result<Vec<String>, ()> {
    let mut out = Vec::new();
    for v in req.headers().get_all(header::HOST) {
        out.push(host_part(v.to_str().map_err(|_| ())?).to_owned());
    }
    if let Some(a) = req.uri().authority() {
        out.push(host_part(a.as_str()).to_owned());
    }
    Ok(out)
}

/// Answers 421 to a foreign `Host` on every route of `app`, and tells the handlers whether
/// the asker may see addresses ([`LocalView`]).
pub fn check(app: Router, names: Allowed) -> Router {
    app.layer(middleware::from_fn_with_state(Arc::new(names), host_check))
}

async fn host_check(State(names): State<Arc<Allowed>>, mut req: Request, next: Next) -> Response {
    // Requests made in-process (tests' `oneshot`) carry no connection: they are local.
    let conn = req.extensions().get::<Conn>().copied();
    let local = conn.map_or(IpAddr::from([127, 0, 0, 1]), |c| c.local.ip());
    let peer_loopback = conn.is_none_or(|c| c.peer.ip().to_canonical().is_loopback());
    let Ok(hosts) = names_of(&req) else {
        return misdirected();
    };
    if !hosts.iter().all(|h| allowed(h, local, &names)) {
        tracing::debug!(host = ?hosts, "request for a foreign Host refused (421)");
        return misdirected();
    }
    let view = peer_loopback && hosts.iter().all(|h| is_loopback_name(h));
    req.extensions_mut().insert(LocalView(view));
    next.run(req).await
}

fn misdirected() -> Response {
    (
        StatusCode::MISDIRECTED_REQUEST,
        "this agent does not answer for that Host: use localhost, its address, or add the name \
         to http.allowed_hosts\n",
    )
        .into_response()
}

/// Hides addresses in the responses of `/` and `/health` from askers without a
/// [`LocalView`], unless `export` (`probe.export_addresses`).
pub fn hide_addresses(app: Router, export: bool) -> Router {
    if export {
        return app;
    }
    app.layer(middleware::from_fn(redact_response))
}

/// Largest page rewritten; `/` and `/health` are far smaller (their texts are cut).
const MAX_PAGE: usize = 4 << 20;

async fn redact_response(req: Request, next: Next) -> Response {
    let shows = matches!(req.uri().path(), "/" | "/health");
    let view = req.extensions().get::<LocalView>().is_some_and(|v| v.0);
    let resp = next.run(req).await;
    if !shows || view {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_PAGE).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    let text = redact(&String::from_utf8_lossy(&bytes));
    Response::from_parts(parts, Body::from(text))
}

/// `s` with every IPv4 or IPv6 address replaced by `(hidden)`. Hand-written: a scan for runs
/// of address characters, each parsed by std; no pattern library needed.
pub fn redact(s: &str) -> String {
    let is_addr_char = |c: char| c.is_ascii_hexdigit() || c == '.' || c == ':';
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find(is_addr_char) {
        out.push_str(&rest[..start]);
        let run_len = rest[start..]
            .find(|c: char| !is_addr_char(c))
            .unwrap_or(rest.len() - start);
        let run = &rest[start..start + run_len];
        // A sentence's full stop or a label's colon may follow an address.
        let core = run.trim_end_matches(['.', ':']);
        // Only whole words: "en0" must not lose its "0".
        let word_start = out.chars().last().is_none_or(|c| !c.is_alphanumeric());
        if word_start && core.parse::<IpAddr>().is_ok() {
            out.push_str("(hidden)");
            out.push_str(&run[core.len()..]);
        } else {
            out.push_str(run);
        }
        rest = &rest[start + run_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_allowed_are_loopback_names_the_local_address_and_configured_names() {
        let local: IpAddr = "192.0.2.10".parse().unwrap();
        let names = Allowed::new(["Mac.lan.", "prom.example"]);
        for ok in [
            "localhost",
            "LOCALHOST",
            "app.localhost",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "192.0.2.10",
            "mac.lan",
            "prom.example",
        ] {
            assert!(allowed(ok, local, &names), "{ok}");
        }
        for bad in [
            "evil.example",
            "localhost.evil.example",
            "192.0.2.11",
            "mac.lan.evil",
            "",
            "0.0.0.0",
        ] {
            assert!(!allowed(bad, local, &names), "{bad}");
        }
        assert_eq!(host_part("localhost:9847"), "localhost");
        assert_eq!(host_part("[::1]:9847"), "::1");
        assert_eq!(host_part("[::1]"), "::1");
        assert_eq!(host_part("evil.example."), "evil.example");
        assert_eq!(host_part("evil.example.:80"), "evil.example");
    }

    #[test]
    fn addresses_are_hidden_and_the_rest_kept() {
        assert_eq!(
            redact("egresses as 203.0.113.5 in 30 ms; via en0 10.0.15.15."),
            "egresses as (hidden) in 30 ms; via en0 (hidden)."
        );
        assert_eq!(redact("tun 2001:db8::1, up"), "tun (hidden), up");
        assert_eq!(
            redact("\"reason\":\"from 10.0.15.15/32 to 192.0.2.1:\""),
            "\"reason\":\"from (hidden)/32 to (hidden):\""
        );
        for kept in [
            "version 0.3.7",
            "at 12:30:01",
            "en0 utun4",
            "cafe 1.2",
            "a0.1.2.3",
        ] {
            assert_eq!(redact(kept), kept);
        }
    }

    #[tokio::test]
    async fn addresses_are_shown_only_to_a_loopback_asker_by_a_loopback_name() {
        use tower::ServiceExt;
        let page = "egresses as 203.0.113.5";
        let app = || {
            let app = Router::new()
                .route("/health", axum::routing::get(move || async move { page }))
                .route("/metrics", axum::routing::get(move || async move { page }));
            check(hide_addresses(app, false), Allowed::new(["mac.example"]))
        };
        let ask = |path: &'static str, host: &'static str, peer: [u8; 4]| async move {
            let mut req = Request::get(path)
                .header(header::HOST, host)
                .body(Body::empty())
                .unwrap();
            req.extensions_mut().insert(Conn {
                peer: SocketAddr::from((peer, 40000)),
                local: SocketAddr::from(([192, 0, 2, 10], 9847)),
            });
            let resp = app().oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, String::from_utf8(body.to_vec()).unwrap())
        };
        let local = [127, 0, 0, 1];
        assert_eq!(ask("/health", "localhost:9847", local).await.1, page);
        assert_eq!(
            ask("/health", "mac.example", local).await.1,
            "egresses as (hidden)"
        );
        assert_eq!(
            ask("/health", "192.0.2.10", [192, 0, 2, 99]).await.1,
            "egresses as (hidden)"
        );
        // Only `/` and `/health` are rewritten.
        assert_eq!(ask("/metrics", "mac.example", local).await.1, page);
        assert_eq!(ask("/health", "evil.example", local).await.0, 421);
        // With probe.export_addresses, everyone allowed sees them.
        let shown = check(
            hide_addresses(
                Router::new().route("/health", axum::routing::get(move || async move { page })),
                true,
            ),
            Allowed::default(),
        );
        let mut req = Request::get("/health")
            .header(header::HOST, "192.0.2.10")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(Conn {
            peer: SocketAddr::from(([192, 0, 2, 99], 40000)),
            local: SocketAddr::from(([192, 0, 2, 10], 9847)),
        });
        let body = shown.oneshot(req).await.unwrap().into_body();
        assert_eq!(axum::body::to_bytes(body, 1 << 20).await.unwrap(), page);
    }
}
