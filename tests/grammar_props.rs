//! The grammar never panics, whatever the bytes, and a line is always some event.

use pia_split_tunnel_exporter::config::LogConfig;
use pia_split_tunnel_exporter::pipeline::Pipeline;
use pia_split_tunnel_exporter::proxy_log::{Event, grammar, parse_line};
use proptest::prelude::*;

const SAMPLES: &str = include_str!("fixtures/mixed.log");

fn sample_lines() -> Vec<&'static [u8]> {
    SAMPLES
        .as_bytes()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_line(&bytes);
        let _ = grammar::parse_size(&bytes);
        let _ = grammar::classify_error(&bytes);
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
        let _ = parse_line(&line);
        let mut p = Pipeline::new(&LogConfig::default());
        line.push(b'\n');
        prop_assert_eq!(p.feed(&line), line.len());
        prop_assert_eq!(p.read.lines, 1);
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
