//! `--web.config.file` (`http.web_config_file`): the web configuration file of the Prometheus
//! exporter toolkit, so one file serves this agent and the Go exporters on the same Mac.
//!
//! Read: `tls_server_config` (cert/key as files or inline, `client_auth_type`, client CA,
//! `min_version`/`max_version`, `cipher_suites`, `curve_preferences`,
//! `prefer_server_cipher_suites`), `http_server_config.headers` and `basic_auth_users` (bcrypt
//! hashes). Served on rustls. Differences, each refused with a message rather than ignored:
//! rustls speaks TLS 1.2 and 1.3 only (a `min_version` of TLS10/TLS11 serves 1.2 and up, a
//! `max_version` below TLS12 is an error); `client_auth_type` RequestClientCert and
//! RequireAnyClientCert (certificates not verified) are not offered; `client_allowed_sans` and
//! `rate_limit` are not implemented; HTTP/2 is not served (`http2` is accepted, the server
//! speaks HTTP/1.1, which Prometheus uses anyway). An unknown key is an error naming it.
//!
//! Unlike the Go toolkit the file is read once at start; the certificate and key files are
//! read again when they change, so a renewed certificate needs no restart.

use crate::metrics::{Counter, CounterCell, Family};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// The file as written; every section and key the toolkit documents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebFile {
    #[serde(default)]
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    http_server_config: Option<HttpFile>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
    #[serde(default)]
    rate_limit: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TlsFile {
    cert: String,
    key: String,
    client_ca: String,
    cert_file: PathBuf,
    key_file: PathBuf,
    client_auth_type: String,
    client_ca_file: PathBuf,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Vec<String>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct HttpFile {
    http2: Option<bool>,
    headers: BTreeMap<String, String>,
}

/// The web configuration in force: TLS, basic auth and extra response headers. The default
/// is plain HTTP with neither.
#[derive(Clone, Default)]
pub struct WebConfig {
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub auth: Option<Arc<BasicAuth>>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field(
                "basic_auth_users",
                &self.auth.as_ref().map(|a| a.users.len()),
            )
            .field("headers", &self.headers)
            .finish()
    }
}

/// Headers the toolkit lets a file set, with the values it allows (empty: any).
const ALLOWED_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

impl WebConfig {
    /// Reads `path` (`None` or an empty path: plain HTTP, no auth). Every error names the
    /// file and the key.
    pub fn load(path: Option<&Path>) -> Result<WebConfig, String> {
        let Some(path) = path.filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(WebConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("web config {}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, dir).map_err(|e| format!("web config {}: {e}", path.display()))
    }

    /// The files `path` names (`tls_server_config.*_file`), as [`Self::parse`] resolves
    /// them, by key: a root agent checks who can write them.
    pub fn named_files(path: &Path) -> Result<Vec<(String, PathBuf)>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("web config {}: {e}", path.display()))?;
        let file: WebFile = if text.trim().is_empty() {
            WebFile::default()
        } else {
            serde_saphyr::from_str(&text)
                .map_err(|e| format!("web config {}: {e}", path.display()))?
        };
        let tls = file.tls_server_config.unwrap_or_default();
        let dir = path.parent().unwrap_or(Path::new("."));
        Ok([
            ("cert_file", tls.cert_file),
            ("key_file", tls.key_file),
            ("client_ca_file", tls.client_ca_file),
        ]
        .into_iter()
        .filter(|(_, p)| !p.as_os_str().is_empty())
        .map(|(k, p)| (format!("tls_server_config.{k}"), dir.join(p)))
        .collect())
    }

    /// Parses the file's text; relative paths in it are taken from `dir` (as the toolkit does).
    pub fn parse(text: &str, dir: &Path) -> Result<WebConfig, String> {
        let file: WebFile = if text.trim().is_empty() {
            WebFile::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| e.to_string())?
        };
        if file.rate_limit.is_some() {
            return Err("rate_limit is not supported by this exporter: remove it".into());
        }
        let http = file.http_server_config.unwrap_or_default();
        let mut headers = Vec::new();
        for (name, value) in &http.headers {
            let Some((_, allowed)) = ALLOWED_HEADERS.iter().find(|(n, _)| n == name) else {
                return Err(format!(
                    "http_server_config.headers: {name:?} cannot be set (one of {:?})",
                    ALLOWED_HEADERS.iter().map(|(n, _)| *n).collect::<Vec<_>>()
                ));
            };
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                return Err(format!(
                    "http_server_config.headers.{name}: {value:?}: use one of {allowed:?}"
                ));
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("http_server_config.headers.{name}: not a header value"))?;
            // Listed names are valid header names: from_bytes cannot fail on them.
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("http_server_config.headers: {name:?}"))?;
            headers.push((name, value));
        }
        let auth = match file.basic_auth_users {
            Some(users) if !users.is_empty() => Some(Arc::new(BasicAuth::new(users)?)),
            _ => None,
        };
        let tls = match file.tls_server_config {
            Some(t) if t.enabled() => Some(t.acceptor(dir)?),
            _ => None,
        };
        Ok(WebConfig { tls, auth, headers })
    }

    /// Requires basic auth (when users are configured) on every route of `app`, counting
    /// refusals in `registry`. Routes merged into the result later are not covered: the
    /// control endpoints carry their own bearer token in the same header.
    pub fn protect(&self, app: Router, registry: &prometheus::Registry) -> Router {
        let Some(auth) = &self.auth else { return app };
        if let Err(e) = crate::metrics::register(registry, auth.refused.clone()) {
            tracing::warn!(error = %e, "cannot register the basic auth refusal counter");
        }
        app.layer(middleware::from_fn_with_state(auth.clone(), require_basic))
    }

    /// The token-protected control `routes`, or (plain HTTP on a non-loopback address, not
    /// allowed by `fallback.allow_plain_http`) the same paths answering 403: the bearer token
    /// would cross the network in clear text.
    pub fn control(
        &self,
        routes: Router,
        local: std::net::SocketAddr,
        allow_plain: bool,
    ) -> Router {
        if self.tls.is_some() || local.ip().is_loopback() {
            return routes;
        }
        if allow_plain {
            tracing::warn!(listen = %local, "control endpoints served over plain HTTP on a non-loopback address (fallback.allow_plain_http = true): their token crosses the network in clear text");
            return routes;
        }
        tracing::warn!(listen = %local, "control endpoints (/fallback/apply, /fallback/revert, /alertmanager) refused: plain HTTP on a non-loopback address would send their token in clear text; set tls_server_config in --web.config.file, listen on 127.0.0.1, or set fallback.allow_plain_http = true");
        routes.layer(middleware::from_fn(refuse_plain))
    }
}

async fn refuse_plain(_req: Request, _next: Next) -> Response {
    (
        StatusCode::FORBIDDEN,
        "control endpoints are disabled over plain HTTP on a non-loopback address: use TLS \
         (--web.config.file) or set fallback.allow_plain_http = true\n",
    )
        .into_response()
}

async fn require_basic(State(auth): State<Arc<BasicAuth>>, req: Request, next: Next) -> Response {
    // Requests made in-process (tests) carry no connection: count them as loopback.
    let peer = req
        .extensions()
        .get::<super::host::Conn>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.peer.ip());
    match auth.check(req.headers(), peer).await {
        Checked::Ok => return next.run(req).await,
        Checked::Wrong => {}
        Checked::TooMany => {
            auth.refused.inc();
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "1")],
                "too many failed logins from this address: try again later\n",
            )
                .into_response();
        }
    }
    auth.refused.inc();
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic")],
        "Unauthorized\n",
    )
        .into_response()
}

/// The outcome of a basic auth check.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    Ok,
    Wrong,
    /// Not checked: the peer failed too often lately, or too many checks wait (429).
    TooMany,
}

/// `basic_auth_users`: user name to bcrypt hash.
///
/// A credential that passed bcrypt once is remembered as an HMAC under a key made at start
/// (never the password itself) and compared in constant time, so a known-good scrape costs
/// no bcrypt and never waits behind others. Unknown credentials go through bcrypt one at a
/// time, at most [`MAX_QUEUED`] waiting (more get 429), and a peer whose checks failed more
/// than [`FAILURE_BURST`] times lately gets 429 without a check until its budget refills
/// ([`FAILURES_PER_SEC`]). So wrong passwords can neither take a core nor queue in front of
/// the right one.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    key: ring::hmac::Key,
    verified: Mutex<HashMap<String, Vec<ring::hmac::Tag>>>,
    gate: tokio::sync::Semaphore,
    queued: AtomicUsize,
    failures: Mutex<HashMap<IpAddr, Budget>>,
    refused: CounterCell,
}

/// Checks waiting for bcrypt at most; more get 429.
pub const MAX_QUEUED: usize = 8;
/// Failed checks a peer may make in a burst, and how fast its budget refills.
pub const FAILURE_BURST: f64 = 10.0;
pub const FAILURES_PER_SEC: f64 = 2.0;
/// Peers whose failures are remembered; over it the fullest budgets are forgotten.
const MAX_PEERS: usize = 4096;
/// Credentials remembered per user (a password being rotated).
const MAX_VERIFIED: usize = 4;

/// A token bucket of failed checks. Hand-written: a dozen lines, where a rate limiter crate
/// would bring its own clock and map.
#[derive(Clone, Copy, Debug)]
struct Budget {
    left: f64,
    at: std::time::Instant,
}

impl Budget {
    fn now(self, now: std::time::Instant) -> f64 {
        (self.left + now.duration_since(self.at).as_secs_f64() * FAILURES_PER_SEC)
            .min(FAILURE_BURST)
    }
}

const HTTP_UNAUTHORIZED: Family<Counter, 0> = Family::new(
    "http_unauthorized_total",
    "Requests refused for missing or wrong basic auth credentials (basic_auth_users in --web.config.file), 429s included.",
    [],
);

/// Longest `Authorization` value looked at: a user and a bcrypt password (72 bytes) fit.
const MAX_AUTHORIZATION: usize = 1024;

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> Result<BasicAuth, String> {
        for (user, hash) in &users {
            hash.parse::<bcrypt::HashParts>().map_err(|e| {
                format!("basic_auth_users.{user}: not a bcrypt hash ({e}); make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`")
            })?;
        }
        let key =
            ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
                .map_err(|_| "basic_auth_users: the system gave no random key".to_string())?;
        Ok(BasicAuth {
            users,
            key,
            verified: Mutex::new(HashMap::new()),
            gate: tokio::sync::Semaphore::new(1),
            queued: AtomicUsize::new(0),
            failures: Mutex::new(HashMap::new()),
            refused: CounterCell::new(&HTTP_UNAUTHORIZED),
        })
    }

    fn tag(&self, user: &str, pass: &[u8]) -> ring::hmac::Tag {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(&(user.len() as u64).to_be_bytes());
        ctx.update(user.as_bytes());
        ctx.update(pass);
        ctx.sign()
    }

    fn known(&self, user: &str, tag: &ring::hmac::Tag) -> bool {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified.get(user).is_some_and(|tags| {
            tags.iter()
                .fold(subtle::Choice::from(0), |acc, t| {
                    acc | t.as_ref().ct_eq(tag.as_ref())
                })
                .into()
        })
    }

    /// Whether `peer` may have a credential checked now.
    fn budget_left(&self, peer: IpAddr) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures
            .get(&peer)
            .is_none_or(|b| b.now(std::time::Instant::now()) >= 1.0)
    }

    fn failed(&self, peer: IpAddr) {
        let now = std::time::Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_PEERS && !failures.contains_key(&peer) {
            failures.retain(|_, b| b.now(now) < FAILURE_BURST);
            if failures.len() >= MAX_PEERS {
                failures.clear();
            }
        }
        let b = failures.entry(peer).or_insert(Budget {
            left: FAILURE_BURST,
            at: now,
        });
        *b = Budget {
            left: (b.now(now) - 1.0).max(0.0),
            at: now,
        };
    }

    /// Whether `headers` carry the credentials of a configured user; `peer` pays for failures.
    pub async fn check(&self, headers: &HeaderMap, peer: IpAddr) -> Checked {
        let Some((user, pass)) = credentials(headers) else {
            return Checked::Wrong;
        };
        let tag = self.tag(&user, &pass);
        if self.known(&user, &tag) {
            return Checked::Ok;
        }
        if !self.budget_left(peer) {
            return Checked::TooMany;
        }
        // At most MAX_QUEUED wait; the one running is not counted.
        if self.queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Checked::TooMany;
        }
        let permit = self.gate.acquire().await;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        let Ok(_one_at_a_time) = permit else {
            return Checked::TooMany;
        };
        let hash = self.users.get(&user).cloned();
        let known_user = hash.is_some();
        let checked = tokio::task::spawn_blocking(move || {
            // An unknown user costs a bcrypt too, so timing does not tell which users exist.
            let hash = hash.unwrap_or_else(|| fake_hash().to_owned());
            bcrypt::non_truncating_verify(&pass, &hash).unwrap_or(false) && known_user
        })
        .await;
        if checked.unwrap_or(false) {
            let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            let tags = verified.entry(user).or_default();
            if tags.len() >= MAX_VERIFIED {
                tags.remove(0);
            }
            tags.push(tag);
            return Checked::Ok;
        }
        self.failed(peer);
        Checked::Wrong
    }
}

/// A user and password from `Authorization: Basic ...`; `None` when absent or malformed.
fn credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    if value.len() > MAX_AUTHORIZATION {
        return None;
    }
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

fn fake_hash() -> &'static str {
    static FAKE: OnceLock<String> = OnceLock::new();
    FAKE.get_or_init(|| bcrypt::hash("not a password", 10).unwrap_or_default())
}

impl TlsFile {
    /// As the toolkit: TLS is on when a certificate, key, client CA or client auth is given.
    fn enabled(&self) -> bool {
        !(self.cert.is_empty()
            && self.key.is_empty()
            && self.cert_file.as_os_str().is_empty()
            && self.key_file.as_os_str().is_empty()
            && self.client_ca_file.as_os_str().is_empty()
            && self.client_ca.is_empty()
            && self.client_auth_type.is_empty())
    }

    fn acceptor(self, dir: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
        let at = |p: &Path| {
            if p.as_os_str().is_empty() || p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            }
        };
        let cert = Pem::pick("cert", self.cert, at(&self.cert_file))?;
        let key = Pem::pick("key", self.key, at(&self.key_file))?;
        if self.client_allowed_sans.is_some() {
            return Err("tls_server_config.client_allowed_sans is not supported by this exporter: use a client CA that issues only the allowed clients' certificates".into());
        }
        let provider = Arc::new(provider(&self.cipher_suites, &self.curve_preferences)?);
        let versions = versions(self.min_version.as_deref(), self.max_version.as_deref())?;
        let resolver = CertFiles::new(cert, key, provider.clone())?;
        let client_ca = client_ca(self.client_ca, &at(&self.client_ca_file))?;
        let verifier = client_verifier(&self.client_auth_type, client_ca, &provider)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| format!("tls_server_config: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(resolver));
        config.ignore_client_order = self.prefer_server_cipher_suites.unwrap_or(true);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// The client CA's PEM, given inline or as a file (`file` already resolved against the
/// config's folder; empty when not given), or none.
fn client_ca(inline: String, file: &Path) -> Result<Option<Vec<u8>>, String> {
    match (inline.is_empty(), file.as_os_str().is_empty()) {
        (true, true) => Ok(None),
        (false, true) => Ok(Some(inline.into_bytes())),
        (true, false) => Ok(Some(std::fs::read(file).map_err(|e| {
            format!("tls_server_config.client_ca_file {}: {e}", file.display())
        })?)),
        (false, false) => {
            Err("tls_server_config: client_ca and client_ca_file are both set: keep one".into())
        }
    }
}

/// How client certificates are checked: as the toolkit's `client_auth_type`, with only the
/// modes that verify a certificate against the client CA (or ask for none).
fn client_verifier(
    auth_type: &str,
    client_ca: Option<Vec<u8>>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    Ok(match (auth_type, client_ca) {
        ("" | "NoClientCert", None) => WebPkiClientVerifier::no_client_auth(),
        ("" | "NoClientCert", Some(_)) => {
            return Err("tls_server_config: a client CA is set without client_auth_type: set client_auth_type: RequireAndVerifyClientCert".into());
        }
        (mode @ ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven"), Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&ca) {
                let c = c.map_err(|e| format!("tls_server_config client CA: {e}"))?;
                roots
                    .add(c)
                    .map_err(|e| format!("tls_server_config client CA: {e}"))?;
            }
            if roots.is_empty() {
                return Err("tls_server_config client CA: no certificate in it".into());
            }
            let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let b = if mode == "VerifyClientCertIfGiven" {
                b.allow_unauthenticated()
            } else {
                b
            };
            b.build()
                .map_err(|e| format!("tls_server_config client CA: {e}"))?
        }
        ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", None) => {
            return Err(format!(
                "tls_server_config.client_auth_type {auth_type}: needs client_ca_file"
            ));
        }
        ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert", _) => {
            return Err(format!(
                "tls_server_config.client_auth_type {auth_type}: not supported (client certificates would not be verified): use RequireAndVerifyClientCert"
            ));
        }
        (other, _) => {
            return Err(format!(
                "tls_server_config.client_auth_type {other:?}: use NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            ));
        }
    })
}

/// The ring provider narrowed to the listed TLS 1.2 suites (TLS 1.3's are not configurable,
/// as in Go) and curves, in the listed order.
fn provider(suites: &[String], curves: &[String]) -> Result<CryptoProvider, String> {
    let base = rustls::crypto::ring::default_provider();
    let mut out = base.clone();
    if !suites.is_empty() {
        out.cipher_suites = base
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied()
            .collect();
        for name in suites {
            // Go also names the ChaCha20 suites without their hash.
            let found = base.cipher_suites.iter().find(|s| {
                let n = format!("{:?}", s.suite());
                n == *name || n == format!("{name}_SHA256")
            });
            let Some(s) = found.filter(|s| s.version() != &rustls::version::TLS13) else {
                return Err(format!(
                    "tls_server_config.cipher_suites: {name:?} is not one rustls offers for TLS 1.2"
                ));
            };
            out.cipher_suites.push(*s);
        }
    }
    if !curves.is_empty() {
        use rustls::crypto::ring::kx_group;
        out.kx_groups = curves
            .iter()
            .map(|c| match c.as_str() {
                "X25519" => Ok(kx_group::X25519),
                "CurveP256" => Ok(kx_group::SECP256R1),
                "CurveP384" => Ok(kx_group::SECP384R1),
                other => Err(format!(
                    "tls_server_config.curve_preferences: {other:?}: use X25519, CurveP256 or CurveP384"
                )),
            })
            .collect::<Result<_, _>>()?;
    }
    Ok(out)
}

fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let rank = |key: &str, v: &str| match v {
        "TLS10" => Ok(10),
        "TLS11" => Ok(11),
        "TLS12" => Ok(12),
        "TLS13" => Ok(13),
        other => Err(format!(
            "tls_server_config.{key}: {other:?}: use TLS12 or TLS13"
        )),
    };
    let min = min
        .map(|v| rank("min_version", v))
        .transpose()?
        .unwrap_or(12);
    let max = max
        .map(|v| rank("max_version", v))
        .transpose()?
        .unwrap_or(13);
    if max < 12 {
        return Err("tls_server_config.max_version: rustls serves TLS 1.2 and 1.3 only".into());
    }
    if min > max {
        return Err("tls_server_config: min_version is above max_version".into());
    }
    let mut out = Vec::new();
    if min <= 12 {
        out.push(&rustls::version::TLS12);
    }
    if max >= 13 {
        out.push(&rustls::version::TLS13);
    }
    Ok(out)
}

/// A certificate or key given inline or as a file.
#[derive(Debug)]
enum Pem {
    Inline(Vec<u8>),
    File(PathBuf),
}

impl Pem {
    fn pick(key: &str, inline: String, file: PathBuf) -> Result<Pem, String> {
        match (inline.is_empty(), file.as_os_str().is_empty()) {
            (false, true) => Ok(Pem::Inline(inline.into_bytes())),
            (true, false) => Ok(Pem::File(file)),
            (true, true) => Err(format!(
                "tls_server_config: missing one of {key} or {key}_file"
            )),
            (false, false) => Err(format!(
                "tls_server_config: {key} and {key}_file are both set: keep one"
            )),
        }
    }

    fn read(&self, key: &str) -> Result<Vec<u8>, String> {
        match self {
            Pem::Inline(b) => Ok(b.clone()),
            Pem::File(p) => std::fs::read(p)
                .map_err(|e| format!("tls_server_config.{key}_file {}: {e}", p.display())),
        }
    }

    fn modified(&self) -> Option<SystemTime> {
        match self {
            Pem::Inline(_) => None,
            Pem::File(p) => std::fs::metadata(p).and_then(|m| m.modified()).ok(),
        }
    }
}

/// The server certificate, read again when its files change (checked at each handshake: two
/// `stat` calls). A renewal that does not load is logged and the previous pair kept.
#[derive(Debug)]
struct CertFiles {
    cert: Pem,
    key: Pem,
    provider: Arc<CryptoProvider>,
    current: Mutex<(Stamp, Arc<CertifiedKey>)>,
}

type Stamp = (Option<SystemTime>, Option<SystemTime>);

impl CertFiles {
    fn new(cert: Pem, key: Pem, provider: Arc<CryptoProvider>) -> Result<CertFiles, String> {
        let stamp = (cert.modified(), key.modified());
        let loaded = load_pair(&cert, &key, &provider)?;
        Ok(CertFiles {
            cert,
            key,
            provider,
            current: Mutex::new((stamp, Arc::new(loaded))),
        })
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let stamp = (self.cert.modified(), self.key.modified());
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 != stamp {
            match load_pair(&self.cert, &self.key, &self.provider) {
                Ok(k) => {
                    tracing::info!("TLS certificate reloaded");
                    *current = (stamp, Arc::new(k));
                }
                // Half-written renewal: keep serving the old pair, try again next handshake.
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate changed but does not load; keeping the previous one")
                }
            }
        }
        Some(current.1.clone())
    }
}

fn load_pair(cert: &Pem, key: &Pem, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(&cert.read("cert")?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls_server_config cert: {e}"))?;
    if chain.is_empty() {
        return Err("tls_server_config cert: no PEM certificate in it".into());
    }
    let der = PrivateKeyDer::from_pem_slice(&key.read("key")?)
        .map_err(|e| format!("tls_server_config key: {e}"))?;
    let signer = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("tls_server_config key: {e}"))?;
    let pair = CertifiedKey::new(chain, signer);
    pair.keys_match().map_err(|e| {
        format!("tls_server_config: the key does not belong to the certificate ({e})")
    })?;
    Ok(pair)
}

/// Adds the configured headers to every response.
pub async fn add_headers(
    State(headers): State<Arc<Vec<(HeaderName, HeaderValue)>>>,
    mut response: Response,
) -> Response {
    for (name, value) in headers.iter() {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        WebConfig::parse(yaml, Path::new("/nonexistent")).unwrap_err()
    }

    #[test]
    fn unknown_and_unsupported_keys_are_errors_naming_them() {
        assert!(err("tls_server_config:\n  cert_fil: x\n").contains("cert_fil"));
        assert!(err("basic_auth_user:\n  a: b\n").contains("basic_auth_user"));
        assert!(err("http_server_config:\n  headers:\n    X-Evil: 1\n").contains("X-Evil"));
        assert!(err("rate_limit:\n  burst: 1\n").contains("rate_limit"));
        assert!(err("basic_auth_users:\n  alice: plaintext\n").contains("basic_auth_users.alice"));
        assert!(
            err("tls_server_config:\n  cert_file: a.pem\n")
                .contains("missing one of key or key_file")
        );
        let e = err("tls_server_config:\n  cert_file: a.pem\n  key_file: a.key\n");
        assert!(
            e.contains("/nonexistent/a.pem"),
            "relative to the file: {e}"
        );
    }

    #[test]
    fn empty_file_and_tls_without_certificate_mean_plain_http() {
        let w = WebConfig::parse("", Path::new(".")).unwrap();
        assert!(w.tls.is_none() && w.auth.is_none());
        // As the toolkit: versions alone do not turn TLS on.
        let w =
            WebConfig::parse("tls_server_config:\n  min_version: TLS13\n", Path::new(".")).unwrap();
        assert!(w.tls.is_none());
    }

    #[test]
    fn versions_map_onto_what_rustls_speaks() {
        assert_eq!(versions(None, None).unwrap().len(), 2);
        assert_eq!(versions(Some("TLS10"), None).unwrap().len(), 2);
        assert_eq!(
            versions(Some("TLS13"), None).unwrap(),
            vec![&rustls::version::TLS13]
        );
        assert!(
            versions(None, Some("TLS11"))
                .unwrap_err()
                .contains("max_version")
        );
        assert!(versions(Some("SSL3"), None).unwrap_err().contains("SSL3"));
        assert!(versions(Some("TLS13"), Some("TLS12")).is_err());
    }

    #[test]
    fn cipher_suites_and_curves_use_the_go_names() {
        let p = provider(
            &["TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305".into()],
            &["CurveP256".into()],
        )
        .unwrap();
        let tls12: Vec<_> = p
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS12)
            .collect();
        assert_eq!(tls12.len(), 1);
        assert_eq!(p.kx_groups.len(), 1);
        assert!(provider(&["TLS_RSA_WITH_RC4_128_SHA".into()], &[]).is_err());
        assert!(
            provider(&[], &["CurveP521".into()])
                .unwrap_err()
                .contains("CurveP521")
        );
    }

    fn basic(user: &str, pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        h.insert(header::AUTHORIZATION, format!("Basic {v}").parse().unwrap());
        h
    }

    #[tokio::test]
    async fn basic_auth_checks_bcrypt_and_remembers_only_successes() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = BasicAuth::new(BTreeMap::from([("prom".to_owned(), hash)])).unwrap();
        let peer = IpAddr::from([192, 0, 2, 1]);
        let ok = |h: HeaderMap| {
            let auth = &auth;
            async move { auth.check(&h, peer).await == Checked::Ok }
        };
        assert!(ok(basic("prom", "s3cret")).await);
        assert!(ok(basic("prom", "s3cret")).await, "from memory");
        assert!(!ok(basic("prom", "s3cre")).await);
        assert!(!ok(basic("prom", "s3cretx")).await);
        assert!(!ok(basic("other", "s3cret")).await);
        assert!(!ok(HeaderMap::new()).await);
        let long = "a".repeat(100);
        assert!(!ok(basic("prom", &long)).await);
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert!(!ok(h).await);
        // Over MAX_AUTHORIZATION: not even decoded.
        assert!(credentials(&basic("prom", &"a".repeat(MAX_AUTHORIZATION))).is_none());
        assert_eq!(
            credentials(&basic("prom", "p:w")),
            Some(("prom".to_owned(), b"p:w".to_vec()))
        );
        let verified = auth.verified.lock().unwrap();
        assert_eq!(verified.len(), 1);
        assert_eq!(verified["prom"].len(), 1, "an HMAC tag, not the password");
    }

    #[tokio::test]
    async fn failing_peers_get_429_and_a_known_credential_still_passes() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = BasicAuth::new(BTreeMap::from([("prom".to_owned(), hash)])).unwrap();
        let attacker = IpAddr::from([192, 0, 2, 66]);
        let other = IpAddr::from([192, 0, 2, 67]);
        assert_eq!(
            auth.check(&basic("prom", "s3cret"), attacker).await,
            Checked::Ok
        );
        let mut outcomes = Vec::new();
        for i in 0..(FAILURE_BURST as usize + 5) {
            outcomes.push(
                auth.check(&basic("prom", &format!("wrong{i}")), attacker)
                    .await,
            );
        }
        let wrong = outcomes.iter().filter(|o| **o == Checked::Wrong).count();
        assert!(
            (FAILURE_BURST as usize..FAILURE_BURST as usize + 2).contains(&wrong),
            "{outcomes:?}"
        );
        assert_eq!(outcomes.last(), Some(&Checked::TooMany));
        // The same peer, the known password: no bcrypt, no wait.
        assert_eq!(
            auth.check(&basic("prom", "s3cret"), attacker).await,
            Checked::Ok
        );
        // Another peer still has its own budget.
        assert_eq!(
            auth.check(&basic("prom", "nope"), other).await,
            Checked::Wrong
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn at_most_max_queued_checks_wait_for_bcrypt() {
        // Cost 10: each check takes long enough for the others to queue behind it.
        let hash = bcrypt::hash("s3cret", 10).unwrap();
        let auth = Arc::new(BasicAuth::new(BTreeMap::from([("prom".to_owned(), hash)])).unwrap());
        let checks: Vec<_> = (0..MAX_QUEUED + 8)
            .map(|i| {
                let auth = auth.clone();
                // Distinct peers: the per-peer budget is not what refuses them here.
                let peer = IpAddr::from([198, 51, 100, i as u8]);
                tokio::spawn(async move { auth.check(&basic("prom", "wrong"), peer).await })
            })
            .collect();
        let mut too_many = 0;
        for c in checks {
            if c.await.unwrap() == Checked::TooMany {
                too_many += 1;
            }
        }
        assert!(too_many >= 8 - 1, "{too_many} refused with 429");
    }
}
