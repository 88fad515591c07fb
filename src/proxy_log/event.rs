//! Typed events of `transparent_proxy.log`: what one line means, independent of its text.

use macro_rules_attribute::apply;
use serde::{Deserialize, Serialize};

use crate::labels::label_set;

/// Transport of a proxied flow.
#[apply(label_set!)]
#[derive(PartialOrd, Ord, Deserialize)]
pub enum Proto {
    Tcp,
    Udp,
}

/// Log level printed by the proxy's logger, from most to least verbose.
#[apply(label_set!)]
#[derive(PartialOrd, Ord, Deserialize)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
}

/// Classified error of a flow or its outbound channel.
#[apply(label_set!)]
#[derive(PartialOrd, Ord, Deserialize)]
pub enum ErrorKind {
    /// `Empty buffer occurred during ...`: the app side returned no data (normal end if bytes moved).
    EmptyBuffer,
    /// `ioOnClosedChannel`: write after the outbound channel closed.
    IoOnClosedChannel,
    /// `connectTimeout(...)` or errno 60.
    ConnectTimeout,
    /// errno 61, `Connection refused`.
    ConnectionRefused,
    /// errno 54, `Connection reset by peer`.
    ConnectionReset,
    /// errno 65 (no route to host) or 51 (network unreachable): a routing failure.
    Unreachable,
    /// NEAppProxyFlowErrorDomain error 10, "a read is already pending": not fatal.
    ReadPending,
    Other,
}

/// Why the proxy matched an app's flow and opened no session for it (`FlowHandler.swift`).
#[apply(label_set!)]
#[derive(PartialOrd, Ord, Deserialize)]
pub enum RefusedReason {
    /// `Cannot find ipv4 ip for interface: IF - ignoring matched flow: APP`: the bind
    /// interface has no IPv4 address; the flow is left to the OS, so it does not bypass.
    NoBindIp,
    /// `blocking a vpnOnly flow from APP`: a vpnOnly app while the VPN is down (by design).
    VpnOnlyBlocked,
    /// `APP "ERROR" in FLOW open()`: the flow could not be opened; no session follows.
    OpenFailed,
}

impl ErrorKind {
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A byte count as printed by ByteCountFormatter (MB only, decimal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Size {
    /// `Zero KB`: exactly zero bytes.
    Zero,
    /// `0 MB`: more than zero but under about 0.05 MB; adds 0 to byte counters.
    UnderTenth,
    /// `12.3 MB` and the like, in bytes (1 MB = 1,000,000 bytes).
    Bytes(u64),
    /// A shape we do not know (another locale's words); the session is kept.
    Unparsed,
}

impl Size {
    /// Bytes this size adds to a byte counter.
    pub fn counted_bytes(self) -> u64 {
        match self {
            Size::Bytes(b) => b,
            _ => 0,
        }
    }
}

/// Local wall-clock time of a line, without zone, as milliseconds since 1970-01-01T00:00 local.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LocalMillis(pub i64);

/// Text from the log, not yet checked to be UTF-8: most of it is never looked at, and
/// checking only what is used keeps parsing cheap. Invalid bytes never reach a label raw.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Text<'a>(pub &'a [u8]);

impl<'a> Text<'a> {
    pub fn bytes(self) -> &'a [u8] {
        self.0
    }
    /// The text, or `None` when it is not UTF-8.
    pub fn as_str(self) -> Option<&'a str> {
        std::str::from_utf8(self.0).ok()
    }
    /// The text with invalid bytes replaced by U+FFFD.
    pub fn lossy(self) -> std::borrow::Cow<'a, str> {
        String::from_utf8_lossy(self.0)
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(s: &'a str) -> Self {
        Text(s.as_bytes())
    }
}

impl std::fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.lossy())
    }
}

/// One parsed line.
#[derive(Clone, Debug, PartialEq)]
pub struct Line<'a> {
    /// `None` when the timestamp is missing or in a shape we cannot read; the event is kept.
    pub time: Option<LocalMillis>,
    pub level: Option<Level>,
    pub event: Event<'a>,
}

/// What a line says. Borrowed from the input: parsing allocates nothing.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<'a> {
    SessionOpened {
        id: u64,
        proto: Proto,
        app: Text<'a>,
        /// TCP: `HOST:PORT`; UDP: none.
        endpoint: Option<Text<'a>>,
        bind_ip: Text<'a>,
        /// UDP: the flow's local endpoint, `None` for `N/A`.
        local_endpoint: Option<Text<'a>>,
    },
    FlowError {
        id: u64,
        /// Known when the line says it (`TCP flow`, `ProxySessionUDP.swift`), else from the session.
        proto: Option<Proto>,
        kind: ErrorKind,
        /// Present on lines that name the app (`... readData() APP`).
        app: Option<Text<'a>>,
    },
    Terminating {
        id: u64,
    },
    /// The outbound channel's handler was destroyed or closed (`Destructor called for InboundHandlerTCP`).
    ChannelClosed {
        id: u64,
        proto: Option<Proto>,
    },
    SessionClosed {
        id: u64,
        /// From the source file (`ProxySessionTCP.swift`); else from the session.
        proto: Option<Proto>,
        rx: Size,
        tx: Size,
        app: Option<Text<'a>>,
    },
    /// `Proxy started!`, or `Transparent Proxy started!` on the newer proxy branch: ids restart.
    ProxyStarted,
    /// `Proxy stopped!` / `Transparent Proxy stopped!`.
    ProxyStopped,
    /// `DNS Proxy started!` (newer proxy branch): the DNS provider in the same process, with
    /// an id sequence of its own, so the transparent proxy's sessions go on.
    DnsProxyStarted,
    /// `DNS Proxy stopped!` (newer proxy branch).
    DnsProxyStopped,
    /// A flow of `app` matched and got no session (see [`RefusedReason`]).
    FlowRefused {
        app: Text<'a>,
        reason: RefusedReason,
    },
    /// `Managing bypass apps: [...]`: the list as printed (`["com.a", "com.b"]`).
    BypassApps(Text<'a>),
    BindInterface(Text<'a>),
    IsConnected(bool),
    /// `dnsFollowAppRules: BOOL` (newer proxy branch, beside `bindInterface:`).
    DnsFollowAppRules(bool),
    /// `Logger initialized ... with log level: X`.
    LoggerLevel(Level),
    /// A line we know and ignore: it carries nothing to count (start-up block, `Successfully shutdown channel`, ...).
    Ignored,
    /// A line in no shape we know: counted, never an error.
    Unrecognized,
}
