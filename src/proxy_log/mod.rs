//! `transparent_proxy.log`: typed events ([`event`]) and the nom grammar that produces them ([`grammar`]).

pub mod event;
pub mod grammar;

pub use event::{ErrorKind, Event, Level, Line, LocalMillis, Proto, RefusedReason, Size, Text};
pub use grammar::parse_line;
