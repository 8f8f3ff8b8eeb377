//! Incremental server-sent-events parser, following the WHATWG
//! `text/event-stream` rules:
//!
//! - lines end in LF, CR or CRLF, including a CR at the end of one chunk and
//!   an LF at the start of the next (one line ending);
//! - a blank line dispatches the event; an event without `data` lines is not
//!   dispatched;
//! - `data` lines are joined with `\n`; one space after the colon is removed;
//!   a line without a colon is a field with an empty value;
//! - lines starting with `:` are comments; fields other than `data`, `event`
//!   and `id` are ignored; an `id` containing NUL is ignored;
//! - a UTF-8 BOM at the very start of the stream is skipped.
//!
//! Bytes that are not UTF-8 are replaced with U+FFFD; the parser never
//! panics. Each input byte is scanned once. Memory is bounded: the bytes held
//! for one event (the unfinished line plus the event's data, type and id)
//! may not exceed `max_event_bytes`, else [`Error::SseEventTooLarge`].
//!
//! Unlike a browser's `EventSource`, [`SseEvent::id`] is the `id` given in the
//! event's own block (not the last id seen on the stream), an empty `event`
//! value leaves [`SseEvent::event`] as `None`, and [`SseParser::finish`]
//! dispatches a final event that is not followed by a blank line.

use crate::error::Error;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event` field (the event type), if the block set one.
    pub event: Option<String>,
    /// The `data` lines joined with `\n`.
    pub data: String,
    /// The `id` field, if the block set one.
    pub id: Option<String>,
}

impl SseEvent {
    /// OpenAI's end-of-stream sentinel, `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }

    /// Append this event in wire form (`event:`, `id:`, one `data:` line per
    /// line of data, then a blank line), LF line endings. Parsing the output
    /// gives back an equal event, provided `event` and `id` contain no line
    /// breaks (they cannot when they came from the parser).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_fields(out, self.event.as_deref(), self.id.as_deref());
        for line in self.data.split('\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
    }

    /// This event in wire form; see [`SseEvent::write_to`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 16);
        self.write_to(&mut out);
        out
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Incremental parser: feed chunks as they arrive, collect events.
#[derive(Debug)]
pub struct SseParser {
    max_event_bytes: usize,
    /// The unfinished line carried over from earlier chunks.
    line: Vec<u8>,
    /// The last chunk ended in CR: an LF starting the next one belongs to it.
    pending_cr: bool,
    /// No line has been completed yet (a BOM may start the first one).
    at_start: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    id: Option<String>,
    /// Set once the limit was exceeded; the parser then refuses more input.
    failed: bool,
    /// Keep what was held when the limit was exceeded (see [`SseParser::keep_unparsed`]).
    keep: bool,
    unparsed: Vec<u8>,
}

impl SseParser {
    /// A parser that holds at most `max_event_bytes` for one event.
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser {
            max_event_bytes,
            line: Vec::new(),
            pending_cr: false,
            at_start: true,
            data: String::new(),
            has_data: false,
            event: None,
            id: None,
            failed: false,
            keep: false,
            unparsed: Vec::new(),
        }
    }

    /// When the limit is exceeded, keep the bytes not yet given back as
    /// events (the held event, in wire form, and the rest of the chunk) for
    /// [`SseParser::take_unparsed`], so a caller can pass the stream on
    /// unparsed from there without losing any of it.
    pub fn keep_unparsed(mut self) -> Self {
        self.keep = true;
        self
    }

    /// After [`SseParser::feed`] failed on a parser made with
    /// [`SseParser::keep_unparsed`]: what it had not given back as events,
    /// to be sent on before the rest of the stream. Empty otherwise, and
    /// empty once taken.
    pub fn take_unparsed(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.unparsed)
    }

    /// Bytes currently held for the event being assembled.
    pub fn pending_bytes(&self) -> usize {
        self.line.len() + self.retained()
    }

    fn retained(&self) -> usize {
        self.data.len() + self.event.as_ref().map_or(0, String::len) + self.id.as_ref().map_or(0, String::len)
    }

    /// Parse `chunk`, appending every event it completes to `out`.
    ///
    /// On error the events completed before the oversized one are in `out`,
    /// the held bytes are released and every later call fails the same way.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), Error> {
        if self.failed {
            return Err(self.too_large());
        }
        let mut rest = chunk;
        if self.pending_cr {
            if let Some((first, tail)) = rest.split_first() {
                self.pending_cr = false;
                if *first == b'\n' {
                    rest = tail;
                }
            }
        }
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', rest) {
            let (line, after) = (&rest[..pos], &rest[pos + 1..]);
            if rest[pos] == b'\r' {
                match after.first() {
                    Some(b'\n') => rest = &after[1..],
                    Some(_) => rest = after,
                    None => {
                        self.pending_cr = true;
                        rest = after;
                    }
                }
            } else {
                rest = after;
            }
            if self.line.is_empty() {
                self.process_line(line, out);
            } else {
                let mut buf = std::mem::take(&mut self.line);
                buf.extend_from_slice(line);
                self.process_line(&buf, out);
                buf.clear();
                self.line = buf;
            }
            if let Err(err) = self.check() {
                if self.keep {
                    self.unparsed.extend_from_slice(rest);
                }
                return Err(err);
            }
        }
        self.line.extend_from_slice(rest);
        self.check()
    }

    /// End of stream: treat an unfinished line as complete and dispatch a
    /// pending event even without the closing blank line. The parser can
    /// then be reused for a new stream.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), Error> {
        if self.failed {
            return Err(self.too_large());
        }
        if !self.line.is_empty() {
            let buf = std::mem::take(&mut self.line);
            self.process_line(&buf, out);
            self.check()?;
        }
        self.dispatch(out);
        self.pending_cr = false;
        self.at_start = true;
        Ok(())
    }

    fn too_large(&self) -> Error {
        Error::SseEventTooLarge { limit: self.max_event_bytes }
    }

    fn check(&mut self) -> Result<(), Error> {
        if self.pending_bytes() > self.max_event_bytes {
            self.failed = true;
            if self.keep {
                self.write_pending();
            }
            self.line = Vec::new();
            self.data = String::new();
            self.event = None;
            self.id = None;
            self.has_data = false;
            return Err(self.too_large());
        }
        Ok(())
    }

    /// The held event's fields in wire form, then the unfinished line as it came.
    fn write_pending(&mut self) {
        let out = &mut self.unparsed;
        write_fields(out, self.event.as_deref(), self.id.as_deref());
        if self.has_data {
            for line in self.data.split('\n') {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
        }
        out.extend_from_slice(&self.line);
    }

    fn process_line(&mut self, mut line: &[u8], out: &mut Vec<SseEvent>) {
        if self.at_start {
            self.at_start = false;
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.has_data = true;
                push_lossy(&mut self.data, value);
            }
            b"event" => {
                self.event = (!value.is_empty()).then(|| lossy(value));
            }
            b"id" if !value.contains(&0) => self.id = Some(lossy(value)),
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.has_data {
            out.push(SseEvent { event: self.event.take(), data: std::mem::take(&mut self.data), id: self.id.take() });
        } else {
            self.event = None;
            self.id = None;
            self.data.clear();
        }
        self.has_data = false;
    }
}

fn lossy(bytes: &[u8]) -> String {
    let mut s = String::new();
    push_lossy(&mut s, bytes);
    s
}

/// Append `bytes` as text, invalid UTF-8 replaced. Valid text (the usual
/// case) takes `str::from_utf8`, which checks ASCII a word at a time;
/// `from_utf8_lossy` walks it byte by byte.
fn push_lossy(into: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => into.push_str(text),
        Err(_) => into.push_str(&String::from_utf8_lossy(bytes)),
    }
}

/// An event's `event:` and `id:` lines in wire form.
fn write_fields(out: &mut Vec<u8>, event: Option<&str>, id: Option<&str>) {
    for (name, value) in [(&b"event: "[..], event), (&b"id: "[..], id)] {
        if let Some(value) = value {
            out.extend_from_slice(name);
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        p.finish(&mut out).unwrap();
        out
    }

    fn ev(event: Option<&str>, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent { event: event.map(Into::into), data: data.into(), id: id.map(Into::into) }
    }

    #[test]
    fn basic_fields_and_dispatch() {
        let got = parse_chunks(&[b"event: add\nid: 7\ndata: hello\n\ndata:world\n\n"]);
        assert_eq!(got, vec![ev(Some("add"), "hello", Some("7")), ev(None, "world", None)]);
    }

    #[test]
    fn text_that_is_not_utf8_is_replaced_and_utf8_kept() {
        let got = parse_chunks(&[b"event: a\xffb\ndata: caf\xc3\xa9 \xe2\x82\ndata: \xf0\x9f\x98\x80\n\n"]);
        assert_eq!(got, vec![ev(Some("a\u{FFFD}b"), "caf\u{e9} \u{FFFD}\n\u{1F600}", None)]);
    }

    #[test]
    fn multi_line_data_and_space_rules() {
        let got = parse_chunks(&[b"data: a\ndata:  b\ndata\ndata:c\n\n"]);
        assert_eq!(got, vec![ev(None, "a\n b\n\nc", None)]);
        // A single empty data line still dispatches, with empty data.
        assert_eq!(parse_chunks(&[b"data:\n\n"]), vec![ev(None, "", None)]);
    }

    #[test]
    fn comments_unknown_fields_and_no_data() {
        let got = parse_chunks(&[b": keepalive\n\nretry: 10\nfoo: bar\nevent: x\n\n:c\ndata: d\n: mid\n\n"]);
        // The `event: x` block has no data: not dispatched, and its type does not leak.
        assert_eq!(got, vec![ev(None, "d", None)]);
    }

    #[test]
    fn line_endings_cr_crlf_and_split_cr() {
        let want = vec![ev(None, "a", None), ev(Some("e"), "b", None)];
        assert_eq!(parse_chunks(&[b"data: a\r\rdata: b\revent: e\r\r"]), want);
        assert_eq!(parse_chunks(&[b"data: a\r\n\r\ndata: b\r\nevent: e\r\n\r\n"]), want);
        // CR at the end of a chunk, LF at the start of the next: one line end.
        assert_eq!(parse_chunks(&[b"data: a\r", b"\n\r", b"\ndata: b\r", b"\nevent: e\r\n", b"\r", b"\n"]), want);
        // CR at a chunk end followed by a non-LF: the CR alone ended the line.
        assert_eq!(parse_chunks(&[b"data: a\r", b"\r", b"data: b\r", b"event: e\r", b"\r"]), want);
        // Empty chunks between a CR and its LF do not break the pair.
        assert_eq!(parse_chunks(&[b"data: a\r", b"", b"\n\r\ndata: b\nevent: e\n\n"]), want);
    }

    #[test]
    fn bom_skipped_once_even_split() {
        let want = vec![ev(None, "x", None)];
        assert_eq!(parse_chunks(&[b"\xEF\xBB\xBFdata: x\n\n"]), want);
        assert_eq!(parse_chunks(&[b"\xEF", b"\xBB", b"\xBFdata: x\n\n"]), want);
        // Only at the start: a BOM later is part of the field name (unknown field).
        assert_eq!(parse_chunks(&[b"data: x\n\n\xEF\xBB\xBFdata: y\n\n"]), want);
    }

    #[test]
    fn finish_dispatches_trailing_event() {
        assert_eq!(parse_chunks(&[b"data: a\n\ndata: b"]), vec![ev(None, "a", None), ev(None, "b", None)]);
        assert_eq!(parse_chunks(&[b"event: t\ndata: b\n"]), vec![ev(Some("t"), "b", None)]);
        assert_eq!(parse_chunks(&[b"data: a\n\n: trailing comment"]), vec![ev(None, "a", None)]);
        // Reusable after finish.
        let mut p = SseParser::new(100);
        let mut out = Vec::new();
        p.feed(b"data: 1", &mut out).unwrap();
        p.finish(&mut out).unwrap();
        p.feed(b"\xEF\xBB\xBFdata: 2\n\n", &mut out).unwrap();
        assert_eq!(out, vec![ev(None, "1", None), ev(None, "2", None)]);
    }

    #[test]
    fn id_with_nul_ignored_and_empty_event() {
        let got = parse_chunks(&[b"id: a\0b\nevent:\ndata: x\n\nid\ndata: y\n\n"]);
        assert_eq!(got, vec![ev(None, "x", None), ev(None, "y", Some(""))]);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_panicking() {
        let got = parse_chunks(&[b"data: a\xFF\xFEb\nevent: \xC3\n\n"]);
        assert_eq!(got, vec![ev(Some("\u{FFFD}"), "a\u{FFFD}\u{FFFD}b", None)]);
        // A multi-byte char split across chunks is reassembled.
        let got = parse_chunks(&[b"data: caf\xC3", b"\xA9\n\n"]);
        assert_eq!(got, vec![ev(None, "café", None)]);
    }

    #[test]
    fn event_too_large_partial_line() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        p.feed(b"data: 0123456", &mut out).unwrap();
        assert_eq!(p.pending_bytes(), 13);
        let err = p.feed(b"789abcdef", &mut out).unwrap_err();
        assert_eq!(err, Error::SseEventTooLarge { limit: 16 });
        assert_eq!(p.pending_bytes(), 0);
        // Poisoned afterwards.
        assert!(p.feed(b"\n\n", &mut out).is_err());
        assert!(p.finish(&mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn event_too_large_accumulated_lines() {
        let mut p = SseParser::new(10);
        let mut out = Vec::new();
        p.feed(b"data: ok\n\n", &mut out).unwrap();
        assert_eq!(out.len(), 1);
        p.feed(b"data: 12345\n", &mut out).unwrap();
        let err = p.feed(b"data: 67890\n", &mut out).unwrap_err();
        assert_eq!(err, Error::SseEventTooLarge { limit: 10 });
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn limit_counts_held_bytes_only() {
        // Many small events and long comments: nothing accumulates past the limit.
        let mut p = SseParser::new(12);
        let mut out = Vec::new();
        for _ in 0..1000 {
            p.feed(b"data: 123456\n\n: c\n", &mut out).unwrap();
        }
        assert_eq!(out.len(), 1000);
        assert_eq!(p.pending_bytes(), 0);
    }

    #[test]
    fn write_to_round_trips() {
        let events = vec![ev(Some("t"), "a\nb", Some("1")), ev(None, "", None), ev(None, " lead", None)];
        let mut wire = Vec::new();
        for e in &events {
            e.write_to(&mut wire);
        }
        assert_eq!(parse_chunks(&[&wire]), events);
        assert!(ev(None, "[DONE]", None).is_done());
    }
}
