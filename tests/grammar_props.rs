//! The grammar never panics, whatever the bytes, and a line is always some event; parsing
//! allocates nothing, and the pipeline counts every line of any byte stream.
//!
//! `GRAMMAR_CASES` sets the cases per property (2,000 by default, kept short for CI; the long
//! run in the README used 1,000,000).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use pia_split_tunnel_exporter::log_state::{Limits, LogState};
use pia_split_tunnel_exporter::proxy_log::{Event, RefusedReason, Text, grammar, parse_line};
use proptest::prelude::*;

/// Counts this thread's allocations, so a property can check that parsing made none.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn cases() -> u32 {
    std::env::var("GRAMMAR_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

const SAMPLES: &str = include_str!("fixtures/mixed.log");

fn sample_lines() -> Vec<&'static [u8]> {
    SAMPLES
        .as_bytes()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_nor_allocate(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let before = allocations();
        let _ = parse_line(&bytes);
        let _ = grammar::parse_size(&bytes);
        let _ = grammar::classify_error(&bytes);
        prop_assert_eq!(allocations(), before, "parsing allocated");
    }

    /// Any stream, NULs, invalid UTF-8 and stray `\r` included, cut anywhere: every `\n`
    /// ends one counted line, and the partial tail is left for the next read.
    #[test]
    fn any_stream_counts_every_line(
        bytes in proptest::collection::vec(any::<u8>(), 0..1_000).prop_map(|v| {
            // Mostly the bytes that matter: line ends, NUL, invalid UTF-8.
            v.into_iter()
                .map(|b| match b % 8 {
                    0 | 1 => b'\n',
                    2 => b'\r',
                    3 => 0,
                    4 => 0xff,
                    _ => b,
                })
                .collect::<Vec<u8>>()
        }),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut p = LogState::new(Limits::default());
        let newlines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        let first = &bytes[..cut.index(bytes.len() + 1)];
        let used = p.feed(first);
        let rest = [&first[used..], &bytes[first.len()..]].concat();
        let used_rest = p.feed(&rest);
        prop_assert_eq!(p.read().lines, newlines);
        let tail = bytes.len() - bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        prop_assert_eq!(rest.len() - used_rest, tail);
    }

    /// Real lines with bytes replaced, inserted or cut (invalid UTF-8 included) still parse
    /// to an event, and feeding them never loses count of a line.
    #[test]
    fn mutated_real_lines_never_panic(
        index in 0usize..400,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let lines = sample_lines();
        let mut line = lines[index % lines.len()].to_vec();
        for (at, byte, op) in edits {
            let i = at.index(line.len() + 1);
            match op {
                0 if i < line.len() => line[i] = byte,
                1 => line.insert(i, byte),
                _ => line.truncate(i),
            }
        }
        line.retain(|&b| b != b'\n');
        let before = allocations();
        let _ = parse_line(&line);
        prop_assert_eq!(allocations(), before, "parsing allocated");
        let mut p = LogState::new(Limits::default());
        line.push(b'\n');
        prop_assert_eq!(p.feed(&line), line.len());
        prop_assert_eq!(p.read().lines, 1);
    }

    /// FlowHandler.swift's session-less statements with any values where the source
    /// interpolates (app id, interface, Apple's error text and flow description) keep their
    /// event and their app; none is unrecognised.
    #[test]
    fn refused_flows_keep_their_event_whatever_the_values(
        app in "[A-Za-z0-9._-]{1,60}",
        interface in "[A-Za-z0-9]{1,15}",
        error in "[^\\n]{0,80}",
        flow in "[^\\n]{0,80}",
    ) {
        let h = "[2026-02-16 11:49:40:7270] [FlowHandler.swift:68] error: ";
        for (line, reason) in [
            (format!("{h}Cannot find ipv4 ip for interface: {interface} - ignoring matched flow: {app}"), RefusedReason::NoBindIp),
            (format!("{h}blocking a vpnOnly flow from {app}"), RefusedReason::VpnOnlyBlocked),
            (format!("{h}{app} \"{error}\" in {flow} open()"), RefusedReason::OpenFailed),
        ] {
            let parsed = parse_line(line.as_bytes());
            prop_assert_eq!(parsed.event, Event::FlowRefused { app: Text(app.as_bytes()), reason });
        }
    }

    /// Headers with any timestamp text keep the event.
    #[test]
    fn any_timestamp_keeps_the_event(stamp in "[^\\]\\n]{0,40}") {
        let line = format!("[{stamp}] [ProxySession.swift:25] info: id: 3 Terminating the session");
        let parsed = parse_line(line.as_bytes());
        prop_assert_eq!(parsed.event, Event::Terminating { id: 3 });
    }
}

#[test]
fn every_sample_line_is_recognized() {
    for line in sample_lines() {
        assert_ne!(
            parse_line(line).event,
            Event::Unrecognized,
            "{}",
            String::from_utf8_lossy(line)
        );
    }
}
