//! Per-(app, proto) counters that the metrics and `analyze` render.

use macro_rules_attribute::apply;
use serde::{Deserialize, Serialize};
use strum::EnumCount;

use super::apps::AppId;
use crate::labels::label_set;
use crate::proxy_log::{ErrorKind, Proto};

/// How a session ended.
#[apply(label_set!)]
#[derive(Deserialize)]
pub enum CloseOutcome {
    /// Some bytes moved (`0 MB` counts: it is under 0.05 MB, not zero).
    Transferred,
    /// Both sizes `Zero KB`: the failure signature.
    ZeroBytes,
    /// Sizes in a shape we could not read, none of them non-zero.
    Unknown,
}

/// What a closed session received: the outcome the sessions verdict counts.
#[apply(label_set!)]
#[derive(Deserialize)]
pub enum Reply {
    /// It received something (`rxBytes` not `Zero KB`, and no failure of its own with `0 MB`).
    Received,
    /// It received nothing: `rxBytes=Zero KB`, or `0 MB` after a failure of its outbound
    /// channel (PIA's #93: `ioOnClosedChannel` then `rxBytes=0 MB`).
    NoReply,
    /// `rxBytes` in a shape we could not read: not judged.
    Unknown,
}

/// Whether an error of a session's own channel means its `0 MB` received nothing useful.
/// `Empty buffer` is not one: every healthy flow ends with it (FORMAT.md's lifecycles), and
/// with `Zero KB` the size already says "nothing"; `a read is already pending` is not fatal,
/// and an error we could not classify says nothing about the channel.
pub fn channel_failure(kind: ErrorKind) -> bool {
    match kind {
        ErrorKind::IoOnClosedChannel
        | ErrorKind::ConnectTimeout
        | ErrorKind::ConnectionRefused
        | ErrorKind::ConnectionReset
        | ErrorKind::Unreachable => true,
        ErrorKind::EmptyBuffer | ErrorKind::ReadPending | ErrorKind::Other => false,
    }
}

/// Upper bounds (seconds) of the session duration histogram. Connect timeouts end at 10 s.
pub const DURATION_BUCKETS_SECS: [f64; 13] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 300.0, 1800.0,
];

/// Counters of one app over one transport.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AppCounts {
    pub opened: u64,
    pub closed: [u64; CloseOutcome::COUNT],
    pub errors: [u64; ErrorKind::COUNT],
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Sessions of this app now in the open table.
    pub open: u64,
    /// Non-cumulative bucket counts; the last slot is `+Inf`.
    pub duration_buckets: [u64; DURATION_BUCKETS_SECS.len() + 1],
    pub duration_count: u64,
    pub duration_sum_ms: u64,
    /// Closes by what they received ([`Reply`]).
    #[serde(default)]
    pub replies: [u64; Reply::COUNT],
}

impl AppCounts {
    pub fn closed(&self, outcome: CloseOutcome) -> u64 {
        self.closed[outcome as usize]
    }
    pub fn replies(&self, reply: Reply) -> u64 {
        self.replies[reply as usize]
    }
    /// Closes the sessions verdict judges, and those that got no reply.
    pub fn reply_ratio(&self) -> super::verdict::Ratio {
        super::verdict::Ratio {
            no_reply: self.replies(Reply::NoReply),
            total: self.replies(Reply::NoReply) + self.replies(Reply::Received),
        }
    }
    pub fn sessions_closed(&self) -> u64 {
        self.closed.iter().sum()
    }
    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind.index()]
    }
    /// Adds `other`'s counts to these (an app folded into another at restore). `other` is taken
    /// apart field by field, so a counter added later cannot be forgotten here.
    pub fn absorb(&mut self, other: &AppCounts) {
        let AppCounts {
            opened,
            closed,
            errors,
            rx_bytes,
            tx_bytes,
            open,
            duration_buckets,
            duration_count,
            duration_sum_ms,
            replies,
        } = other;
        let add = |a: &mut u64, b: &u64| *a = a.saturating_add(*b);
        let add_all = |a: &mut [u64], b: &[u64]| a.iter_mut().zip(b).for_each(|(a, b)| add(a, b));
        add(&mut self.opened, opened);
        add_all(&mut self.closed, closed);
        add_all(&mut self.errors, errors);
        add(&mut self.rx_bytes, rx_bytes);
        add(&mut self.tx_bytes, tx_bytes);
        add(&mut self.open, open);
        add_all(&mut self.duration_buckets, duration_buckets);
        add(&mut self.duration_count, duration_count);
        add(&mut self.duration_sum_ms, duration_sum_ms);
        add_all(&mut self.replies, replies);
    }

    pub fn observe_duration(&mut self, ms: u64) {
        let secs = ms as f64 / 1000.0;
        let slot = DURATION_BUCKETS_SECS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(DURATION_BUCKETS_SECS.len());
        self.duration_buckets[slot] += 1;
        self.duration_count += 1;
        // Forged times can be centuries apart: saturate, never wrap.
        self.duration_sum_ms = self.duration_sum_ms.saturating_add(ms);
    }
}

/// Transport of a counter row; `None` when no line said it (an error of an unseen session).
pub type ProtoKey = Option<Proto>;

pub fn proto_label(p: ProtoKey) -> &'static str {
    p.map_or("unknown", <&str>::from)
}

/// All rows, dense by app id (app ids are small: the app cap bounds them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    rows: Vec<Option<Box<AppCounts>>>,
}

fn slot(app: AppId, proto: ProtoKey) -> usize {
    app.0 as usize * 3
        + match proto {
            Some(Proto::Tcp) => 0,
            Some(Proto::Udp) => 1,
            None => 2,
        }
}

impl Counts {
    pub fn row(&mut self, app: AppId, proto: ProtoKey) -> &mut AppCounts {
        let i = slot(app, proto);
        if i >= self.rows.len() {
            self.rows.resize_with(i + 1, || None);
        }
        self.rows[i].get_or_insert_with(Default::default)
    }

    /// Rows that were ever touched, in app-id order.
    pub fn iter(&self) -> impl Iterator<Item = (AppId, ProtoKey, &AppCounts)> {
        self.rows.iter().enumerate().filter_map(|(i, r)| {
            let proto = [Some(Proto::Tcp), Some(Proto::Udp), None][i % 3];
            r.as_deref().map(|c| (AppId((i / 3) as u32), proto, c))
        })
    }
}
