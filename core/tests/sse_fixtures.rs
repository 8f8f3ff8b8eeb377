//! The SSE parser on recorded streams: split anywhere, with any line endings,
//! it yields exactly the events of a one-shot parse.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::OnceLock;

use proptest::prelude::*;
use tollgate_core::{ApiKind, Error, SseEvent, SseParser};

struct Stream {
    name: String,
    api: ApiKind,
    bytes: Vec<u8>,
    events: Vec<SseEvent>,
}

fn streams() -> &'static [Stream] {
    static STREAMS: OnceLock<Vec<Stream>> = OnceLock::new();
    STREAMS.get_or_init(|| {
        common::recorded_streams()
            .into_iter()
            .map(|(name, api, bytes)| {
                let events = common::parse_all(&bytes);
                Stream { name, api, bytes, events }
            })
            .collect()
    })
}

/// The one-shot parse itself, checked against the text: one event per block
/// of lines holding a `data` line, with that line's value (these recordings
/// use one data line per event), and each event's data is JSON or `[DONE]`.
#[test]
fn one_shot_parse_matches_the_recordings() {
    let all = streams();
    assert_eq!(all.len(), 10, "{:?}", all.iter().map(|s| &s.name).collect::<Vec<_>>());
    for s in all {
        let text = std::str::from_utf8(&s.bytes).unwrap();
        let data_lines: Vec<&str> =
            text.lines().filter_map(|l| l.strip_prefix("data:")).map(|v| v.strip_prefix(' ').unwrap_or(v)).collect();
        assert!(data_lines.len() >= 3, "{}", s.name);
        let got: Vec<&str> = s.events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(got, data_lines, "{}", s.name);
        for e in &s.events {
            assert_eq!(e.id, None);
            if e.is_done() {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("{}: {err}: {}", s.name, e.data));
            match s.api {
                // Anthropic names every event after its data's `type`.
                ApiKind::AnthropicMessages => assert_eq!(e.event.as_deref(), v["type"].as_str(), "{}", s.name),
                _ => assert_eq!(e.event, None, "{}", s.name),
            }
        }
        if s.api != ApiKind::AnthropicMessages {
            assert!(s.events.last().unwrap().is_done(), "{}", s.name);
            assert_eq!(s.events.iter().filter(|e| e.is_done()).count(), 1, "{}", s.name);
        }
    }
}

#[test]
fn every_two_way_split_gives_the_same_events() {
    for s in streams() {
        for at in 0..=s.bytes.len() {
            let (a, b) = s.bytes.split_at(at);
            let got = common::parse_pieces(&[a, b]);
            assert!(got == s.events, "{}: split at {at}", s.name);
        }
    }
}

#[test]
fn byte_at_a_time_gives_the_same_events() {
    for s in streams() {
        let pieces: Vec<&[u8]> = s.bytes.chunks(1).collect();
        assert_eq!(common::parse_pieces(&pieces), s.events, "{}", s.name);
    }
}

#[test]
fn events_are_dispatched_as_soon_as_their_blank_line_arrives() {
    for s in streams() {
        let mut parser = SseParser::new(1 << 20);
        let mut out = Vec::new();
        parser.feed(&s.bytes, &mut out).unwrap();
        // All recordings end with a blank line (or a comment after one):
        // nothing is left for finish.
        assert_eq!(out, s.events, "{}", s.name);
        parser.finish(&mut out).unwrap();
        assert_eq!(out.len(), s.events.len(), "{}", s.name);
    }
}

#[test]
fn re_encoded_events_parse_back_identically() {
    for s in streams() {
        let mut wire = Vec::new();
        for e in &s.events {
            e.write_to(&mut wire);
        }
        assert_eq!(common::parse_all(&wire), s.events, "{}", s.name);
    }
}

/// The most bytes the parser must hold at once for `sse` (LF endings): per
/// event block, the values of its fields so far plus the raw line being read.
fn most_bytes_held(sse: &[u8]) -> usize {
    let (mut most, mut held, mut has_data) = (0, 0, false);
    for line in sse.split(|&b| b == b'\n') {
        most = most.max(held + line.len());
        if line.is_empty() {
            (held, has_data) = (0, false);
            continue;
        }
        let text = std::str::from_utf8(line).unwrap();
        if let Some((name, value)) = text.split_once(':') {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match name {
                // Data lines after the first are joined with a newline.
                "data" => {
                    held += value.len() + usize::from(has_data);
                    has_data = true;
                }
                "event" | "id" => held += value.len(),
                _ => {}
            }
        }
    }
    most
}

#[test]
fn limit_below_the_largest_event_fails_and_at_it_succeeds() {
    for s in streams() {
        let need = most_bytes_held(&s.bytes);
        let run = |limit: usize, chunk: usize| -> Result<Vec<SseEvent>, Error> {
            let mut p = SseParser::new(limit);
            let mut out = Vec::new();
            for piece in s.bytes.chunks(chunk) {
                p.feed(piece, &mut out)?;
            }
            p.finish(&mut out)?;
            Ok(out)
        };
        assert_eq!(run(need, 1).unwrap(), s.events, "{}", s.name);
        assert_eq!(run(need - 1, 1), Err(Error::SseEventTooLarge { limit: need - 1 }), "{}", s.name);
    }
}

#[test]
fn bom_prefixed_recordings_parse_the_same() {
    for s in streams() {
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend_from_slice(&s.bytes);
        assert_eq!(common::parse_pieces(&[&bytes[..1], &bytes[1..2], &bytes[2..]]), s.events, "{}", s.name);
    }
}

/// Rewrite LF line endings: per line, LF, CRLF or CR as `choices` say. A CR
/// directly followed by an LF ending would read as one CRLF, so an empty line
/// after a CR ending never gets a bare LF.
fn with_line_endings(bytes: &[u8], choices: &[u8]) -> Vec<u8> {
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let mut out = Vec::with_capacity(bytes.len() * 2);
    let mut prev_cr = false;
    for (i, line) in lines.iter().enumerate() {
        out.extend_from_slice(line);
        if i + 1 == lines.len() {
            break;
        }
        let mut choice = choices[i % choices.len()] % 3;
        if choice == 0 && prev_cr && line.is_empty() {
            choice = 1;
        }
        out.extend_from_slice([&b"\n"[..], b"\r\n", b"\r"][usize::from(choice)]);
        prev_cr = choice == 2;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_splits_and_line_endings(
        which in any::<prop::sample::Index>(),
        endings in prop::collection::vec(0u8..3, 1..48),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
    ) {
        let s = which.get(streams());
        let bytes = with_line_endings(&s.bytes, &endings);
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        let pieces: Vec<&[u8]> = at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
        let got = common::parse_pieces(&pieces);
        prop_assert!(got == s.events, "{}: endings {:?} cuts {:?}", s.name, endings, at);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_splitting_never_matters(
        bytes in prop::collection::vec(prop::sample::select(vec![b'a', b':', b' ', b'\r', b'\n', 0xFF, 0xEF, 0xBB, 0xBF, b'd']), 0..200),
        extra in prop::collection::vec(any::<u8>(), 0..40),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = bytes;
        bytes.extend_from_slice(&extra);
        // Field names the parser knows, sprinkled in.
        bytes.extend_from_slice(b"\ndata\nevent:e\nid:i\ndata: x\r");
        let at = cut.index(bytes.len() + 1);
        let whole = common::parse_all(&bytes);
        let split = common::parse_pieces(&[&bytes[..at], &bytes[at..]]);
        prop_assert_eq!(&whole, &split);
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(&whole, &common::parse_pieces(&bytewise));
    }
}

/// Over the limit, a parser made with `keep_unparsed` hands back every byte
/// it had not given back as events: the events so far plus a fresh parse of
/// those bytes and the rest of the stream are the stream's events.
#[test]
fn over_the_limit_nothing_is_lost_with_keep_unparsed() {
    for s in streams() {
        let need = most_bytes_held(&s.bytes);
        for limit in [need / 4, need / 2, need - 1] {
            for chunk in [1, 7, 64, s.bytes.len()] {
                let mut p = SseParser::new(limit.max(1)).keep_unparsed();
                let mut out = Vec::new();
                let mut pieces = s.bytes.chunks(chunk);
                let mut raw = Vec::new();
                for piece in pieces.by_ref() {
                    if p.feed(piece, &mut out).is_err() {
                        raw = p.take_unparsed();
                        break;
                    }
                }
                if raw.is_empty() {
                    // Larger chunks hold less at once: the limit may not be hit.
                    assert!(chunk > 1, "{} limit {limit}: the limit was not hit", s.name);
                    continue;
                }
                assert!(p.take_unparsed().is_empty(), "taken once");
                for piece in pieces {
                    raw.extend_from_slice(piece);
                }
                out.extend(common::parse_all(&raw));
                assert_eq!(out, s.events, "{} limit {limit} chunk {chunk}", s.name);
            }
        }
    }
    // Without it nothing is kept.
    let mut p = SseParser::new(4);
    assert!(p.feed(b"data: 0123456789\n\n", &mut Vec::new()).is_err());
    assert!(p.take_unparsed().is_empty());
}
