//! nom grammar of one `transparent_proxy.log` line.
//!
//! ```text
//! [2026-02-16 11:49:40:7270] [ChannelCreatorTCP.swift:50] debug: id: 133 <message>
//! ```
//! The parser works on bytes, borrows from its input and allocates nothing, so it keeps up
//! with a proxy at debug level on one core. It never fails: a line in no known shape is
//! [`Event::Unrecognized`], an unreadable timestamp only loses the time, and invalid UTF-8
//! in the app or addresses makes the line unrecognized rather than lossy.

use nom::bytes::complete::{tag, take_till, take_until};
use nom::character::complete::u64 as dec_u64;
use nom::sequence::{preceded, terminated};
use nom::{IResult, Parser};

use std::sync::LazyLock;

use memchr::memmem::{Finder, FinderRev};

use super::event::{ErrorKind, Event, Level, Line, LocalMillis, Proto, RefusedReason, Size, Text};

/// Parses one line (without its `\n`; a trailing `\r` is dropped).
pub fn parse_line(line: &[u8]) -> Line<'_> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match header(line) {
        Ok((message, (time, source, level))) => Line {
            time,
            level: Some(level),
            event: message_event(message, source),
        },
        // Lines without the `[time] [file:line] level:` prefix: the logger's own messages.
        Err(_) => Line {
            time: None,
            level: None,
            event: bare_event(line),
        },
    }
}

type Header<'a> = (Option<LocalMillis>, &'a [u8], Level);

fn header(input: &[u8]) -> IResult<&[u8], Header<'_>> {
    // Fast path: the usual 24-byte timestamp (all digits and separators, so no `]` inside);
    // any other shape goes through the general rule.
    let (input, time) = match input.get(..27) {
        Some(head)
            if head[0] == b'['
                && &head[25..27] == b"] "
                && let Some(t) = timestamp(&head[1..25]) =>
        {
            (&input[25..], Some(t))
        }
        _ => {
            let (input, stamp) = preceded(tag("["), take_until("] [")).parse(input)?;
            (input, timestamp(stamp))
        }
    };
    if let Some(fast) = source_and_level_fast(input) {
        return Ok((fast.0, (time, fast.1, fast.2)));
    }
    let (input, source) = preceded(tag("] ["), short_until(b']')).parse(input)?;
    let (input, level) = preceded(tag("] "), terminated(level, tag(": "))).parse(input)?;
    Ok((input, (time, source, level)))
}

/// `] [File.swift:NN] level: ` in plain code: the usual layout, on every line. Anything else
/// (or nothing) falls back to the rules above, which accept the same language.
fn source_and_level_fast(input: &[u8]) -> Option<(&[u8], &[u8], Level)> {
    let rest = input.strip_prefix(b"] [")?;
    let end = rest.iter().position(|&b| b == b']')?;
    let (source, rest) = (&rest[..end], rest[end..].strip_prefix(b"] ")?);
    let (level, len) = match rest.first()? {
        b'd' if rest.starts_with(b"debug: ") => (Level::Debug, 7),
        b'i' if rest.starts_with(b"info: ") => (Level::Info, 6),
        b'w' if rest.starts_with(b"warning: ") => (Level::Warning, 9),
        b'e' if rest.starts_with(b"error: ") => (Level::Error, 7),
        _ => return None,
    };
    Some((&rest[len..], source, level))
}

fn level(input: &[u8]) -> IResult<&[u8], Level> {
    let word = |w: &'static [u8], l| input.starts_with(w).then(|| (&input[w.len()..], l));
    let found = match input.first() {
        Some(b'd') => word(b"debug", Level::Debug),
        Some(b'i') => word(b"info", Level::Info),
        Some(b'w') => word(b"warning", Level::Warning),
        Some(b'e') => word(b"error", Level::Error),
        _ => None,
    };
    found.ok_or_else(|| nom::Err::Error(nom::error::Error::new(input, nom::error::ErrorKind::Tag)))
}

/// `yyyy-MM-dd HH:mm:ss:SSSS` (colon before the fraction; any digit in the 4th place).
/// Any other shape (another calendar, AM/PM, other digits) gives `None`: the event is kept.
fn timestamp(s: &[u8]) -> Option<LocalMillis> {
    let b: &[u8; 24] = s.try_into().ok()?;
    let shape_ok = b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b':';
    if !shape_ok {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second, frac) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 24)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = cached_days(&b[..10], || days_from_civil(year, month, day));
    Some(LocalMillis(
        ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + frac / 10,
    ))
}

/// The date changes once a day; its day number is remembered per thread.
fn cached_days(date: &[u8], compute: impl FnOnce() -> i64) -> i64 {
    thread_local! {
        static LAST: std::cell::Cell<([u8; 10], i64)> = const { std::cell::Cell::new(([0; 10], 0)) };
    }
    let key: [u8; 10] = date.try_into().expect("10-byte date");
    LAST.with(|last| {
        let (k, days) = last.get();
        if k == key {
            return days;
        }
        let days = compute();
        last.set((key, days));
        days
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Transport named by the source file (`ProxySessionTCP.swift:31`, `FlowForwarderUDP.swift:34`).
fn source_proto(source: &[u8]) -> Option<Proto> {
    let dot = source.iter().position(|&b| b == b'.')?;
    match &source[dot.saturating_sub(3)..dot] {
        b"TCP" => Some(Proto::Tcp),
        b"UDP" => Some(Proto::Udp),
        _ => None,
    }
}

/// Searchers built once: building one per call cost more than the search itself.
struct Finders {
    flow_markers: [Finder<'static>; 3],
    io_on_closed: Finder<'static>,
    connect_timeout: Finder<'static>,
    refused: Finder<'static>,
    reset: Finder<'static>,
    read_pending: [Finder<'static>; 3],
    errno: FinderRev<'static>,
    quote_in: Finder<'static>,
    log_level: FinderRev<'static>,
}

static FIND: LazyLock<Finders> = LazyLock::new(|| Finders {
    flow_markers: [
        Finder::new(" occurred during "),
        Finder::new(" while sending a "),
        Finder::new(" occurred when writing "),
    ],
    io_on_closed: Finder::new("ioOnClosedChannel"),
    connect_timeout: Finder::new("connectTimeout"),
    refused: Finder::new("Connection refused"),
    reset: Finder::new("Connection reset"),
    read_pending: [
        Finder::new("NEAppProxyFlowErrorDomain error 10."),
        Finder::new("NEAppProxyFlowErrorDomain Code=10 "),
        Finder::new("read is already pending"),
    ],
    errno: FinderRev::new("(errno: "),
    quote_in: Finder::new("\" in "),
    log_level: FinderRev::new("with log level: "),
});

fn message_event<'a>(message: &'a [u8], source: &'a [u8]) -> Event<'a> {
    if let Ok((rest, id)) = session_id(message) {
        return session_event(id, rest, source).unwrap_or(Event::Unrecognized);
    }
    bare_event(message)
}

fn session_id(input: &[u8]) -> IResult<&[u8], u64> {
    // Plain digits and a space, the usual case, without the combinators' overhead.
    if let Some(rest) = input.strip_prefix(b"id: ") {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if (1..=19).contains(&digits) && rest.get(digits) == Some(&b' ') {
            let id = rest[..digits]
                .iter()
                .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            return Ok((&rest[digits + 1..], id));
        }
    }
    terminated(preceded(tag("id: "), dec_u64), tag(" ")).parse(input)
}

const TCP_OPEN: &[u8] = b" Creating, binding and connecting a new TCP socket - endpoint: ";
const UDP_OPEN: &[u8] = b" Creating and binding a new UDP socket with bindIp: ";
const CLOSED: &[u8] = b"Destructor: ProxySession closed. rxBytes=";

/// Message after `id: N `. `None` means a session line in a shape we do not know.
fn session_event<'a>(id: u64, msg: &'a [u8], source: &'a [u8]) -> Option<Event<'a>> {
    // The source file says which shape to try first; each parser still checks the text, so a
    // line moved to another file (a new proxy version) only takes the longer way below.
    let file = source
        .iter()
        .position(|&b| b == b':')
        .map_or(source, |i| &source[..i]);
    let first = match file {
        b"ProxySessionTCP.swift" | b"ProxySessionUDP.swift" => msg
            .strip_prefix(CLOSED)
            .and_then(|r| session_closed(id, r, source)),
        b"ProxySession.swift" if msg == b"Terminating the session" => {
            Some(Event::Terminating { id })
        }
        b"ChannelCreatorTCP.swift" | b"ChannelCreatorUDP.swift" => session_opened(id, msg),
        b"FlowForwarderTCP.swift" | b"FlowForwarderUDP.swift" => flow_error(id, msg, source),
        _ => None,
    };
    if first.is_some() {
        return first;
    }
    if let Some(rest) = msg.strip_prefix(CLOSED) {
        return session_closed(id, rest, source);
    }
    if msg == b"Terminating the session" {
        return Some(Event::Terminating { id });
    }
    if let Some(handler) = msg
        .strip_prefix(b"Destructor called for InboundHandler")
        .or_else(|| msg.strip_prefix(b"Closing channel for InboundHandler"))
    {
        return Some(Event::ChannelClosed {
            id,
            proto: handler_proto(handler),
        });
    }
    if let Some(ev) = session_opened(id, msg) {
        return Some(ev);
    }
    if let Some(ev) = flow_error(id, msg, source) {
        return Some(ev);
    }
    match msg {
        b"Successfully shutdown channel" => Some(Event::Ignored),
        _ if msg.starts_with(b"Could not convert flow.localEndpoint") => Some(Event::Ignored),
        _ => None,
    }
}

fn handler_proto(suffix: &[u8]) -> Option<Proto> {
    match suffix {
        b"TCP" => Some(Proto::Tcp),
        b"UDP" => Some(Proto::Udp),
        _ => None,
    }
}

/// Everything up to the byte `end` (not consumed). A plain loop: on the short fields of a
/// header, a SIMD search costs more to set up than it saves.
fn short_until<'a>(
    end: u8,
) -> impl Parser<&'a [u8], Output = &'a [u8], Error = nom::error::Error<&'a [u8]>> {
    move |input: &'a [u8]| match input.iter().position(|&b| b == end) {
        Some(i) => Ok((&input[i..], &input[..i])),
        None => Err(nom::Err::Error(nom::error::Error::new(
            input,
            nom::error::ErrorKind::TakeUntil,
        ))),
    }
}

/// Everything up to `sep`, consuming `sep`. A plain scan: these fields are a few dozen bytes,
/// where setting up a SIMD search costs more than it saves.
fn upto<'a>(
    sep: &'static str,
) -> impl Parser<&'a [u8], Output = &'a [u8], Error = nom::error::Error<&'a [u8]>> {
    let sep = sep.as_bytes();
    move |input: &'a [u8]| {
        let at = (0..input.len().saturating_sub(sep.len() - 1))
            .find(|&i| input[i] == sep[0] && input[i..].starts_with(sep))
            .ok_or_else(|| {
                nom::Err::Error(nom::error::Error::new(
                    input,
                    nom::error::ErrorKind::TakeUntil,
                ))
            })?;
        Ok((&input[at + sep.len()..], &input[..at]))
    }
}

/// A code-signing identifier: one word, no spaces.
fn app_word(input: &[u8]) -> IResult<&[u8], &[u8]> {
    take_till(|c| c == b' ')(input)
}

fn session_opened(id: u64, msg: &[u8]) -> Option<Event<'_>> {
    let (rest, app) = app_word(msg).ok()?;
    if app.is_empty() {
        return None;
    }
    if let Some(rest) = rest.strip_prefix(TCP_OPEN) {
        let (bind_ip, endpoint) = upto(" with bindIp: ").parse(rest).ok()?;
        return Some(Event::SessionOpened {
            id,
            proto: Proto::Tcp,
            app: Text(app),
            endpoint: Some(Text(endpoint)),
            bind_ip: Text(bind_ip),
            local_endpoint: None,
        });
    }
    if let Some(rest) = rest.strip_prefix(UDP_OPEN) {
        let (local, bind_ip) = upto(" and localEndpoint: ").parse(rest).ok()?;
        return Some(Event::SessionOpened {
            id,
            proto: Proto::Udp,
            app: Text(app),
            endpoint: None,
            bind_ip: Text(bind_ip),
            local_endpoint: if local == b"N/A" {
                None
            } else {
                Some(Text(local))
            },
        });
    }
    None
}

/// `rxBytes=SIZE txBytes=SIZE APP` (sizes contain spaces; the app is the last word).
fn session_closed<'a>(id: u64, rest: &'a [u8], source: &[u8]) -> Option<Event<'a>> {
    let (tail, rx) = upto(" txBytes=").parse(rest).ok()?;
    let (tx, app) = match memchr::memrchr(b' ', tail) {
        // An app id always has a dot; a last word without one is the size's unit.
        Some(i) if tail[i + 1..].contains(&b'.') => (&tail[..i], Some(Text(&tail[i + 1..]))),
        _ => (tail, None),
    };
    Some(Event::SessionClosed {
        id,
        proto: source_proto(source),
        rx: parse_size(rx),
        tx: parse_size(tx),
        app,
    })
}

/// Error lines of a session: the error text, where it happened, sometimes the app.
fn flow_error<'a>(id: u64, msg: &'a [u8], source: &[u8]) -> Option<Event<'a>> {
    let error = |kind, proto, app| {
        Some(Event::FlowError {
            id,
            proto,
            kind,
            app,
        })
    };
    // `Unable to create channel: ERROR, dropping the flow.` (no app)
    if let Some(rest) = msg.strip_prefix(b"Unable to create channel: ") {
        return error(classify_error(rest), source_proto(source), None);
    }
    if let Some(rest) = msg.strip_prefix(b"Failed to close the channel: ") {
        return error(classify_error(rest), source_proto(source), None);
    }
    if msg.starts_with(b"datagram creation failed") {
        return error(ErrorKind::Other, Some(Proto::Udp), None);
    }
    // `ERROR occurred during TCP flow.readData() APP` / `... UDP flow.readDatagrams() APP`
    // `ERROR while sending a TCP datagram through the socket APP`
    // `ERROR occurred when writing TCP data to the flow APP`
    for marker in &FIND.flow_markers {
        if let Some(at) = marker.find(msg) {
            let text = &msg[..at];
            let after = &msg[at + marker.needle().len()..];
            let proto = if after.starts_with(b"TCP ") {
                Some(Proto::Tcp)
            } else if after.starts_with(b"UDP ") {
                Some(Proto::Udp)
            } else {
                source_proto(source)
            };
            let app = match memchr::memrchr(b' ', after) {
                Some(i) if after[i + 1..].contains(&b'.') && !after[i + 1..].ends_with(b")") => {
                    Some(Text(&after[i + 1..]))
                }
                _ => None,
            };
            return error(classify_error(text), proto, app);
        }
    }
    // `ERROR in InboundHandler` (socket errors of the outbound channel)
    if let Some(text) = msg.strip_suffix(b" in InboundHandler") {
        return error(classify_error(text), source_proto(source), None);
    }
    None
}

/// Classifies a swift-nio / Foundation error description.
pub fn classify_error(text: &[u8]) -> ErrorKind {
    if text.starts_with(b"Empty buffer") {
        return ErrorKind::EmptyBuffer;
    }
    let f = &*FIND;
    if f.io_on_closed.find(text).is_some() {
        return ErrorKind::IoOnClosedChannel;
    }
    if f.connect_timeout.find(text).is_some() {
        return ErrorKind::ConnectTimeout;
    }
    // The errno is the most precise word: `connection reset (error set): Connection refused (errno: 61)`
    // names both a reset and a refusal, and the errno says which it was.
    if let Some(errno) = last_errno(text) {
        match errno {
            60 => return ErrorKind::ConnectTimeout,
            61 => return ErrorKind::ConnectionRefused,
            54 => return ErrorKind::ConnectionReset,
            51 | 65 => return ErrorKind::Unreachable,
            _ => {}
        }
    }
    if f.refused.find(text).is_some() {
        return ErrorKind::ConnectionRefused;
    }
    if f.reset.find(text).is_some() {
        return ErrorKind::ConnectionReset;
    }
    if f.read_pending.iter().any(|p| p.find(text).is_some()) {
        return ErrorKind::ReadPending;
    }
    ErrorKind::Other
}

fn last_errno(text: &[u8]) -> Option<u32> {
    let at = FIND.errno.rfind(text)?;
    let (_, n) =
        nom::character::complete::u32::<_, nom::error::Error<&[u8]>>(&text[at + 8..]).ok()?;
    Some(n)
}

/// ByteCountFormatter output, MB only, decimal units, adaptive precision.
pub fn parse_size(text: &[u8]) -> Size {
    if text == b"Zero KB" {
        return Size::Zero;
    }
    let Some(space) = memchr::memrchr(b' ', text) else {
        return Size::Unparsed;
    };
    let (number, unit) = (&text[..space], &text[space + 1..]);
    let scale: u64 = match unit {
        b"bytes" | b"byte" => 1,
        b"KB" => 1_000,
        b"MB" => 1_000_000,
        b"GB" => 1_000_000_000,
        b"TB" => 1_000_000_000_000,
        _ => return Size::Unparsed,
    };
    match decimal_scaled(number, scale) {
        Some(0) => Size::UnderTenth,
        Some(n) => Size::Bytes(n),
        None => Size::Unparsed,
    }
}

/// `1,234.5` / `1.234,5` / `1 234,5` / `12` → value × scale, in integer arithmetic.
/// The decimal mark is the last `.` or `,` followed by one or two digits; other marks group.
fn decimal_scaled(number: &[u8], scale: u64) -> Option<u64> {
    if number.is_empty() || !number[0].is_ascii_digit() {
        return None;
    }
    let last_mark = number.iter().rposition(|&c| c == b'.' || c == b',');
    let (int_part, frac_part) = match last_mark {
        Some(i) if (1..=2).contains(&(number.len() - i - 1)) => (&number[..i], &number[i + 1..]),
        _ => (number, &b""[..]),
    };
    let mut int: u64 = 0;
    for &c in int_part {
        match c {
            b'0'..=b'9' => int = int.checked_mul(10)?.checked_add(u64::from(c - b'0'))?,
            b',' | b'.' | b' ' | b'\'' => {}
            _ => return None,
        }
    }
    let mut value = int.checked_mul(scale)?;
    let mut unit = scale;
    for &c in frac_part {
        if !c.is_ascii_digit() {
            return None;
        }
        unit /= 10;
        value = value.checked_add(u64::from(c - b'0') * unit)?;
    }
    Some(value)
}

/// Lines without a session id, with or without the header.
fn bare_event(msg: &[u8]) -> Event<'_> {
    match msg {
        // The newer proxy branch names its two providers.
        b"Proxy started!" | b"Transparent Proxy started!" => return Event::ProxyStarted,
        b"Proxy stopped!" | b"Transparent Proxy stopped!" => return Event::ProxyStopped,
        b"DNS Proxy started!" => return Event::DnsProxyStarted,
        b"DNS Proxy stopped!" => return Event::DnsProxyStopped,
        b"isConnected: true" => return Event::IsConnected(true),
        b"isConnected: false" => return Event::IsConnected(false),
        b"dnsFollowAppRules: true" => return Event::DnsFollowAppRules(true),
        b"dnsFollowAppRules: false" => return Event::DnsFollowAppRules(false),
        // The logger's re-initialisation message begins with an empty line.
        b"" => return Event::Ignored,
        _ => {}
    }
    if let Some(name) = msg.strip_prefix(b"bindInterface: ") {
        return if name.is_empty() {
            Event::Unrecognized
        } else {
            Event::BindInterface(Text(name))
        };
    }
    if msg.starts_with(b"Logger initialized.") {
        if let Some(at) = FIND.log_level.rfind(msg)
            && let Ok((_, level)) = level(&msg[at + 16..])
        {
            return Event::LoggerLevel(level);
        }
        return Event::Ignored;
    }
    if let Some(list) = msg.strip_prefix(b"Managing bypass apps: ") {
        return Event::BypassApps(Text(list));
    }
    if known_without_id(msg) {
        return Event::Ignored;
    }
    if let Some(refused) = flow_refused(msg) {
        return refused;
    }
    Event::Unrecognized
}

/// FlowHandler.swift's three ways to leave a matched flow without a session.
fn flow_refused(msg: &[u8]) -> Option<Event<'_>> {
    let refused = |app, reason| {
        Some(Event::FlowRefused {
            app: Text(app),
            reason,
        })
    };
    if let Some(rest) = msg.strip_prefix(b"Cannot find ipv4 ip for interface: ") {
        let (app, _interface) = upto(" - ignoring matched flow: ").parse(rest).ok()?;
        return refused(app, RefusedReason::NoBindIp);
    }
    if let Some(app) = msg.strip_prefix(b"blocking a vpnOnly flow from ") {
        return refused(app, RefusedReason::VpnOnlyBlocked);
    }
    // `APP "DESCRIPTION" in FLOW open()`. What the flow prints as is Apple's and not known;
    // the line is told by its opening (an app word, a quote) and the quote closed before ` in `.
    let (rest, app) = app_word(msg).ok()?;
    if rest.starts_with(b" \"") && FIND.quote_in.find(&rest[2..]).is_some() {
        return refused(app, RefusedReason::OpenFailed);
    }
    None
}

/// Statements without an id that carry nothing to count: the start-up block, the app
/// messages, the firewall group, the audit-token warnings, errors of no session.
fn known_without_id(msg: &[u8]) -> bool {
    const EXACT: [&[u8]; 6] = [
        b"Proxy updated!",
        b"Failed to deserialize data",
        b"provided incorrect list of options. They might be missing or an incorrect type",
        b"Audit token is nil",
        b"Could not get a pid from the audit token",
        b"Could not start File Logger, will log only to console.",
    ];
    const PREFIX: [&[u8]; 11] = [
        b"Managing vpnOnly apps: ",
        b"Using server address ",
        b"routeVPN: ",
        b"whitelistGroupName: ",
        b"Trying to set gid of extension",
        b"Should have successfully set gid",
        b"Replacing existing logger",
        // VpnState's missing options; FirewallWhitelister's `unable to get gid` / `set group`.
        b"Error: Cannot find ",
        b"Error: unable to ",
        // InboundHandler.swift:25 has no id to attribute it to.
        b"Failed to close the channel: ",
        b"Found a process with pid ",
    ];
    EXACT.contains(&msg)
        || PREFIX.iter().any(|p| msg.starts_with(p))
        // SplitTunnelNetworkConfig.swift:22: the proxy's network settings were refused.
        || msg.ends_with(b" when setting proxy settings")
        // MessageHandler.swift:21: the options PIA sent, as compact JSON on one line.
        || (msg.first() == Some(&b'{') && msg.last() == Some(&b'}'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain-code fast paths agree with the nom rules wherever they answer.
    fn general_header(input: &[u8]) -> Option<(&[u8], &[u8], Level)> {
        let (input, source) = preceded(
            tag::<_, _, nom::error::Error<&[u8]>>("] ["),
            short_until(b']'),
        )
        .parse(input)
        .ok()?;
        let (input, level) = preceded(tag("] "), terminated(level, tag(": ")))
            .parse(input)
            .ok()?;
        Some((input, source, level))
    }

    proptest::proptest! {
        #[test]
        fn fast_paths_agree_with_the_rules(
            head in "(\\] \\[)?[A-Za-z.:0-9\\]]{0,30}(\\] )?(debug|info|warning|error|verbose)?(: )?(id: )?[0-9 ]{0,22}[a-z ]{0,8}",
        ) {
            let b = head.as_bytes();
            if let Some(fast) = source_and_level_fast(b) {
                proptest::prop_assert_eq!(Some(fast), general_header(b));
            }
            let general = terminated(preceded(tag::<_, _, nom::error::Error<&[u8]>>("id: "), dec_u64), tag(" ")).parse(b).ok();
            proptest::prop_assert_eq!(session_id(b).ok(), general);
        }
    }

    fn ev(line: &str) -> Event<'_> {
        parse_line(line.as_bytes()).event
    }

    #[test]
    fn header_time_level() {
        let l = parse_line(b"[2026-02-16 11:49:40:7270] [ProxySession.swift:25] info: id: 3 Terminating the session\r");
        assert_eq!(l.level, Some(Level::Info));
        assert_eq!(l.event, Event::Terminating { id: 3 });
        // 2026-02-16 is day 20500 since the epoch.
        assert_eq!(
            l.time,
            Some(LocalMillis(
                20_500 * 86_400_000 + ((11 * 60 + 49) * 60 + 40) * 1000 + 727
            ))
        );
    }

    #[test]
    fn odd_timestamp_keeps_the_event() {
        // A short stamp puts a `]` inside the usual 24-byte window.
        let l = parse_line(b"[] [ProxySession.swift:25] info: id: 3 Terminating the session");
        assert_eq!((l.time, l.event), (None, Event::Terminating { id: 3 }));
        let l = parse_line("[2569-02-16 11:49:40 PM:7270] [ProxySession.swift:25] info: id: 3 Terminating the session".as_bytes());
        assert_eq!(l.time, None);
        assert_eq!(l.event, Event::Terminating { id: 3 });
        let l = parse_line("[٢٠٢٦-٠٢-١٦ ١١:٤٩:٤٠:٧٢٧٠] [ProxySession.swift:25] info: id: 3 Terminating the session".as_bytes());
        assert_eq!(l.time, None);
        assert_eq!(l.event, Event::Terminating { id: 3 });
    }

    #[test]
    fn tcp_and_udp_open() {
        assert_eq!(
            ev(
                "[2026-02-16 11:49:40:7270] [ChannelCreatorTCP.swift:50] debug: id: 133 com.plexapp.plexmediaserver Creating, binding and connecting a new TCP socket - endpoint: 203.0.113.7:443 with bindIp: 10.0.15.15"
            ),
            Event::SessionOpened {
                id: 133,
                proto: Proto::Tcp,
                app: "com.plexapp.plexmediaserver".into(),
                endpoint: Some("203.0.113.7:443".into()),
                bind_ip: "10.0.15.15".into(),
                local_endpoint: None
            }
        );
        assert_eq!(
            ev(
                "[2026-02-16 11:49:40:7270] [ChannelCreatorUDP.swift:53] debug: id: 9 com.apple.Safari.SafeBrowsing Creating and binding a new UDP socket with bindIp: 10.0.15.15 and localEndpoint: N/A"
            ),
            Event::SessionOpened {
                id: 9,
                proto: Proto::Udp,
                app: "com.apple.Safari.SafeBrowsing".into(),
                endpoint: None,
                bind_ip: "10.0.15.15".into(),
                local_endpoint: None
            }
        );
        assert_eq!(
            ev(
                "[2026-02-16 11:49:40:7270] [ChannelCreatorUDP.swift:53] debug: id: 9 a.b Creating and binding a new UDP socket with bindIp: 10.0.15.15 and localEndpoint: 10.0.15.15:0"
            ),
            Event::SessionOpened {
                id: 9,
                proto: Proto::Udp,
                app: "a.b".into(),
                endpoint: None,
                bind_ip: "10.0.15.15".into(),
                local_endpoint: Some("10.0.15.15:0".into())
            }
        );
    }

    #[test]
    fn closes_and_sizes() {
        assert_eq!(
            ev(
                "[2026-02-16 11:49:32:4440] [ProxySessionTCP.swift:31] debug: id: 3 Destructor: ProxySession closed. rxBytes=36.2 MB txBytes=Zero KB com.plexapp.plexmediaserver\r"
            ),
            Event::SessionClosed {
                id: 3,
                proto: Some(Proto::Tcp),
                rx: Size::Bytes(36_200_000),
                tx: Size::Zero,
                app: Some("com.plexapp.plexmediaserver".into())
            }
        );
        assert_eq!(
            ev(
                "[2026-02-16 11:49:32:4440] [ProxySessionUDP.swift:31] debug: id: 4 Destructor: ProxySession closed. rxBytes=0 MB txBytes=1,234.5 MB"
            ),
            Event::SessionClosed {
                id: 4,
                proto: Some(Proto::Udp),
                rx: Size::UnderTenth,
                tx: Size::Bytes(1_234_500_000),
                app: None
            }
        );
        assert_eq!(parse_size(b"12 MB"), Size::Bytes(12_000_000));
        assert_eq!(parse_size(b"0.1 MB"), Size::Bytes(100_000));
        assert_eq!(parse_size(b"1,5 MB"), Size::Bytes(1_500_000));
        assert_eq!(parse_size(b"1.234,5 MB"), Size::Bytes(1_234_500_000));
        assert_eq!(parse_size(b"1,234 MB"), Size::Bytes(1_234_000_000));
        assert_eq!(parse_size(b"Null KB"), Size::Unparsed);
        assert_eq!(parse_size(b"12 Mo"), Size::Unparsed);
        assert_eq!(parse_size(b"99999999999999999999 MB"), Size::Unparsed);
        assert_eq!(parse_size(b""), Size::Unparsed);
    }

    #[test]
    fn forwarder_error_lines() {
        let e = ev(
            "[x] [FlowForwarderTCP.swift:32] error: id: 3 Empty buffer occurred during TCP flow.readData() com.plexapp.plexmediaserver",
        );
        assert_eq!(
            e,
            Event::FlowError {
                id: 3,
                proto: Some(Proto::Tcp),
                kind: ErrorKind::EmptyBuffer,
                app: Some("com.plexapp.plexmediaserver".into())
            }
        );
        let e = ev(
            "[x] [FlowForwarderUDP.swift:34] error: id: 5 The flow was aborted occurred during UDP flow.readDatagrams() com.apple.Safari",
        );
        assert_eq!(
            e,
            Event::FlowError {
                id: 5,
                proto: Some(Proto::Udp),
                kind: ErrorKind::Other,
                app: Some("com.apple.Safari".into())
            }
        );
        let e = ev(
            "[x] [FlowForwarderTCP.swift:56] error: id: 7 ioOnClosedChannel while sending a TCP datagram through the socket com.noip.DUC",
        );
        assert_eq!(
            e,
            Event::FlowError {
                id: 7,
                proto: Some(Proto::Tcp),
                kind: ErrorKind::IoOnClosedChannel,
                app: Some("com.noip.DUC".into())
            }
        );
    }

    #[test]
    fn channel_error_lines() {
        let e = ev(
            "[x] [ProxySessionTCP.swift:59] error: id: 8 Unable to create channel: connectTimeout(NIOCore.TimeAmount(nanoseconds: 10000000000)), dropping the flow.",
        );
        assert_eq!(
            e,
            Event::FlowError {
                id: 8,
                proto: Some(Proto::Tcp),
                kind: ErrorKind::ConnectTimeout,
                app: None
            }
        );
        let refused = "[x] [ProxySessionTCP.swift:59] error: id: 9 Unable to create channel: NIOConnectionError(host: \"203.0.113.7\", port: 443, dnsAError: nil, dnsAAAAError: nil, connectionErrors: [NIOPosix.SingleConnectionFailure(target: [IPv4]203.0.113.7/203.0.113.7:443, error: connection reset (error set): Connection refused (errno: 61))]), dropping the flow.";
        assert_eq!(
            ev(refused),
            Event::FlowError {
                id: 9,
                proto: Some(Proto::Tcp),
                kind: ErrorKind::ConnectionRefused,
                app: None
            }
        );
        let unreachable = refused.replace(
            "Connection refused (errno: 61)",
            "No route to host (errno: 65)",
        );
        assert!(matches!(
            ev(&unreachable),
            Event::FlowError {
                kind: ErrorKind::Unreachable,
                ..
            }
        ));
    }

    #[test]
    fn inbound_and_pending_read_error_lines() {
        let e = ev(
            "[x] [InboundHandler.swift:35] error: id: 4 read(descriptor:pointer:size:): Connection reset by peer (errno: 54) in InboundHandler",
        );
        assert_eq!(
            e,
            Event::FlowError {
                id: 4,
                proto: None,
                kind: ErrorKind::ConnectionReset,
                app: None
            }
        );
        let e = ev(
            "[x] [FlowForwarderTCP.swift:32] error: id: 4 The operation couldn’t be completed. (NEAppProxyFlowErrorDomain error 10.) occurred during TCP flow.readData() com.apple.Safari",
        );
        assert!(matches!(
            e,
            Event::FlowError {
                kind: ErrorKind::ReadPending,
                app: Some(Text(b"com.apple.Safari")),
                ..
            }
        ));
        let e = ev(
            "[x] [InboundHandlerUDP.swift:42] error: id: 4 alreadyClosed occurred when writing UDP data to the flow com.apple.Safari",
        );
        assert!(matches!(
            e,
            Event::FlowError {
                kind: ErrorKind::Other,
                proto: Some(Proto::Udp),
                app: Some(Text(b"com.apple.Safari")),
                ..
            }
        ));
    }

    #[test]
    fn proxy_state_lines() {
        assert_eq!(
            ev("[t] [SplitTunnelProxyProvider.swift:60] info: Proxy started!"),
            Event::ProxyStarted
        );
        assert_eq!(
            ev("[t] [VpnState.swift:37] info: bindInterface: en0"),
            Event::BindInterface("en0".into())
        );
        assert_eq!(
            ev("[t] [VpnState.swift:58] info: isConnected: false"),
            Event::IsConnected(false)
        );
        assert_eq!(
            ev(
                "Logger initialized. Writing to file:///Library/Application%20Support/com.privateinternetaccess.vpn/transparent_proxy.log with log level: debug"
            ),
            Event::LoggerLevel(Level::Debug)
        );
        assert_eq!(ev(""), Event::Ignored);
        assert_eq!(
            ev("[t] [VpnState.swift:22] info: Managing bypass apps: [\"a\", \"b]\"]"),
            Event::BypassApps(Text(b"[\"a\", \"b]\"]"))
        );
        assert_eq!(
            ev("[t] [InboundHandler.swift:21] info: id: 3 Successfully shutdown channel"),
            Event::Ignored
        );
        assert_eq!(
            ev(
                "[t] [InboundHandlerTCP.swift:25] debug: id: 3 Destructor called for InboundHandlerTCP"
            ),
            Event::ChannelClosed {
                id: 3,
                proto: Some(Proto::Tcp)
            }
        );
    }

    #[test]
    fn refused_flows_and_the_newer_proxys_lines() {
        let refused = |app: &'static str, reason| Event::FlowRefused {
            app: app.into(),
            reason,
        };
        assert_eq!(
            ev(
                "[t] [FlowHandler.swift:58] error: Cannot find ipv4 ip for interface: en0 - ignoring matched flow: com.a"
            ),
            refused("com.a", RefusedReason::NoBindIp)
        );
        assert_eq!(
            ev("[t] [FlowHandler.swift:44] info: blocking a vpnOnly flow from com.a"),
            refused("com.a", RefusedReason::VpnOnlyBlocked)
        );
        // The flow's description is Apple's: one line or the first of several.
        for line in [
            "[t] [FlowHandler.swift:68] error: com.a \"The operation couldn’t be completed.\" in <NEAppProxyTCPFlow: 0x6000> open()",
            "[t] [FlowHandler.swift:68] error: com.a \"x \" in y\" in NEAppProxyTCPFlow {",
        ] {
            assert_eq!(
                ev(line),
                refused("com.a", RefusedReason::OpenFailed),
                "{line}"
            );
        }
        assert_eq!(
            ev("[t] [FlowHandler.swift:68] error:  \"x\" in y open()"),
            refused("", RefusedReason::OpenFailed)
        );
        assert_eq!(
            ev("[t] [SplitTunnelProxyProvider.swift:56] info: Transparent Proxy started!"),
            Event::ProxyStarted
        );
        assert_eq!(
            ev("[t] [SplitTunnelProxyProvider.swift:77] info: Transparent Proxy stopped!"),
            Event::ProxyStopped
        );
        assert_eq!(
            ev("[t] [SplitTunnelDNSProxyProvider.swift:54] info: DNS Proxy started!"),
            Event::DnsProxyStarted
        );
        assert_eq!(
            ev("[t] [VpnState.swift:65] info: dnsFollowAppRules: false"),
            Event::DnsFollowAppRules(false)
        );
        for line in [
            "[t] [FlowHandler.swift:58] error: Cannot find ipv4 ip for interface: en0",
            "[t] [FlowHandler.swift:68] error: com.a without a quote in x open()",
            "[t] [FlowHandler.swift:68] error: com.a \"never closed open()",
            "[t] [VpnState.swift:65] info: dnsFollowAppRules: maybe",
            "[t] [MessageHandler.swift:21] info: {\"bypassApps\":[",
            "Received message",
        ] {
            assert_eq!(ev(line), Event::Unrecognized, "{line}");
        }
    }

    #[test]
    fn unknown_shapes_are_unrecognized() {
        for line in [
            "hello",
            "[t] [x.swift:1] debug: id: 3 something new",
            "[t] [x.swift:1] verbose: id: 3 Terminating the session",
            "[t] [x.swift:1] debug: id: 99999999999999999999999 Terminating the session",
            "[t] [ChannelCreatorTCP.swift:50] debug: id: 1 Creating, binding and connecting a new TCP socket - endpoint: x with bindIp: y",
        ] {
            assert_eq!(ev(line), Event::Unrecognized, "{line}");
        }
        // Invalid UTF-8 does not lose the event; it is checked where the text is used.
        let bad_utf8 = b"[t] [ChannelCreatorTCP.swift:50] debug: id: 1 com.\xff Creating, binding and connecting a new TCP socket - endpoint: 1:2 with bindIp: 3";
        assert!(matches!(
            parse_line(bad_utf8).event,
            Event::SessionOpened {
                app: Text(b"com.\xff"),
                ..
            }
        ));
    }
}
