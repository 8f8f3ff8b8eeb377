//! Counting an answer as it passes through the sidecar: the provider's own
//! usage when it reports one, and meanwhile an estimate of the output tokens
//! streamed so far (so a budget holds during a stream, not only after it).

use std::borrow::Cow;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use tollgate_core::policy::{DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_MAX_SSE_EVENT_BYTES};
use tollgate_core::usage::{usage_from_json, StreamUsage, Usage};
use tollgate_core::{ApiFamily, ApiKind, SseEvent, SseParser};

use crate::tokens;

#[derive(Debug)]
pub struct Meter {
    api: ApiKind,
    model: String,
    kind: Body,
    /// Count the output as it streams (a budget is enforced mid-stream);
    /// otherwise the text is counted in batches, or not at all when the
    /// provider reports its usage.
    live: bool,
    output_tokens: u64,
    /// Streamed text not counted yet.
    uncounted: String,
    /// The streamed text, kept up to `TEXT_CAP` bytes for the audit record.
    text: String,
}

/// Streamed text counted together when the count is not needed live:
/// one tokenizer pass per batch instead of one per delta.
const COUNT_BATCH: usize = 4096;

/// Most answer text kept for the audit record.
pub const TEXT_CAP: usize = 16 * 1024;

fn push_capped(out: &mut String, s: &str) {
    if out.len() >= TEXT_CAP {
        return;
    }
    let room = TEXT_CAP - out.len();
    let end = (0..=room.min(s.len())).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    out.push_str(&s[..end]);
}

#[derive(Debug)]
struct StreamBody {
    parser: SseParser,
    usage: StreamUsage,
    events: Vec<SseEvent>,
    /// An Anthropic stream sent its `message_delta`, the usage of the whole
    /// answer (`message_start`'s output count is only a placeholder).
    final_usage: bool,
}

#[derive(Debug)]
enum Body {
    Stream(Box<StreamBody>),
    /// A JSON answer, kept up to a cap to read its usage at the end.
    Json {
        bytes: Vec<u8>,
        overflow: bool,
    },
}

impl Meter {
    /// `live`: keep [`Meter::output_tokens`] current after every chunk.
    pub fn new(api: ApiKind, model: &str, sse: bool, live: bool) -> Meter {
        let kind = if sse {
            Body::Stream(Box::new(StreamBody {
                parser: SseParser::new(DEFAULT_MAX_SSE_EVENT_BYTES),
                usage: StreamUsage::new(api),
                events: Vec::new(),
                final_usage: false,
            }))
        } else {
            Body::Json { bytes: Vec::new(), overflow: false }
        };
        Meter {
            api,
            model: model.to_string(),
            kind,
            live,
            output_tokens: 0,
            uncounted: String::new(),
            text: String::new(),
        }
    }

    pub fn is_stream(&self) -> bool {
        matches!(self.kind, Body::Stream(_))
    }

    /// Output tokens counted from the streamed text so far (all of it when
    /// live; up to the last batch otherwise).
    pub fn output_tokens(&self) -> u64 {
        self.output_tokens
    }

    fn count_uncounted(&mut self) {
        if !self.uncounted.is_empty() {
            self.output_tokens = self.output_tokens.saturating_add(tokens::count(&self.model, &self.uncounted));
            self.uncounted.clear();
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        match &mut self.kind {
            Body::Stream(body) => {
                let StreamBody { parser, usage, events, final_usage } = body.as_mut();
                // An oversized event only stops the counting, never the answer.
                if parser.feed(chunk, events).is_err() {
                    events.clear();
                    return;
                }
                for event in events.drain(..) {
                    usage.observe(&event);
                    if self.api.family() == ApiFamily::Anthropic && !*final_usage {
                        *final_usage =
                            event.event.as_deref() == Some("message_delta") || event.data.contains("\"message_delta\"");
                    }
                    let text = generated_text(&event);
                    if !text.is_empty() {
                        push_capped(&mut self.text, &text);
                        self.uncounted.push_str(&text);
                    }
                }
                if self.live || self.uncounted.len() >= COUNT_BATCH {
                    self.count_uncounted();
                }
            }
            Body::Json { bytes, overflow } => {
                if bytes.len().saturating_add(chunk.len()) > DEFAULT_MAX_RESPONSE_BYTES {
                    *overflow = true;
                    bytes.clear();
                } else if !*overflow {
                    bytes.extend_from_slice(chunk);
                }
            }
        }
    }

    /// The answer's text (capped at `TEXT_CAP` bytes).
    pub fn text(&self) -> String {
        match &self.kind {
            Body::Stream(_) => self.text.clone(),
            Body::Json { bytes, overflow: false } => {
                let mut capped = String::new();
                push_capped(&mut capped, &text_of(bytes, &WHOLE_ANSWER));
                capped
            }
            Body::Json { .. } => String::new(),
        }
    }

    /// The provider's usage if it reported one; otherwise the estimate:
    /// `input_tokens()` (asked only then) plus the output counted.
    pub fn usage(&self, input_tokens: impl FnOnce() -> u64) -> Usage {
        self.reported().unwrap_or_else(|| self.estimate(input_tokens()))
    }

    /// The usage the provider reported, if it did. An Anthropic stream that
    /// ended before its `message_delta` (cut by a budget, or the client
    /// left) reported its input only: its output is what was streamed.
    fn reported(&self) -> Option<Usage> {
        match &self.kind {
            Body::Stream(body) if self.api.family() == ApiFamily::Anthropic && !body.final_usage => {
                let reported = body.usage.usage()?;
                let output_tokens = reported.output_tokens.max(self.counted());
                Some(Usage {
                    output_tokens,
                    total_tokens: reported.input_tokens.saturating_add(output_tokens),
                    ..reported
                })
            }
            Body::Stream(body) => body.usage.usage(),
            Body::Json { bytes, overflow: false } => usage_from_json(self.api, bytes).ok().flatten(),
            Body::Json { .. } => None,
        }
    }

    /// The output counted from the streamed text, all of it.
    fn counted(&self) -> u64 {
        let rest = if self.uncounted.is_empty() { 0 } else { tokens::count(&self.model, &self.uncounted) };
        self.output_tokens.saturating_add(rest)
    }

    /// `input_tokens` and the output counted from the streamed text.
    fn estimate(&self, input_tokens: u64) -> Usage {
        let output_tokens = self.counted();
        Usage {
            input_tokens,
            output_tokens,
            cached_tokens: 0,
            total_tokens: input_tokens.saturating_add(output_tokens),
        }
    }
}

/// The model-generated text in one stream event, from any supported API:
/// OpenAI chat and completion deltas, tool-call argument fragments, Responses
/// API deltas, and Anthropic text, thinking and tool-input deltas.
///
/// The event is walked as it is read (no JSON tree is built: this runs for
/// every event of every metered stream), in document order.
pub fn generated_text(event: &SseEvent) -> String {
    text_of(event.data.as_bytes(), &STREAM_EVENT)
}

/// Which object keys hold text and which whole values to pass over.
struct Fields {
    text: &'static [&'static str],
    skip: &'static [&'static str],
}

/// A stream event: deltas; whole objects repeated at the end of a stream
/// are not new output.
const STREAM_EVENT: Fields = Fields {
    text: &["content", "text", "partial_json", "arguments", "thinking", "refusal", "delta"],
    skip: &["response", "message", "usage", "item", "part"],
};

/// A whole answer: message contents, output text, tool-call arguments.
const WHOLE_ANSWER: Fields = Fields { text: &["content", "text", "arguments", "refusal"], skip: &["usage"] };

/// The strings of `fields.text` keys in the JSON `bytes`, in document order;
/// empty when `bytes` is not one JSON value.
fn text_of(bytes: &[u8], fields: &'static Fields) -> String {
    let mut out = String::new();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let walked = Collect { out: &mut out, fields, depth: 0, text: false }.deserialize(&mut de);
    if walked.and_then(|()| de.end()).is_err() {
        out.clear();
    }
    out
}

/// Walks one JSON value as it is read (no tree is built), appending the
/// strings of text fields to `out`. `text`: the value is a text field's (a
/// string there is output). Objects and arrays nested deeper than 8 are
/// passed over.
struct Collect<'a> {
    out: &'a mut String,
    fields: &'static Fields,
    depth: usize,
    text: bool,
}

impl<'de> DeserializeSeed<'de> for Collect<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Collect<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        if self.text {
            self.out.push_str(s);
        }
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth > 8 {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        let depth = self.depth + 1;
        let fields = self.fields;
        while seq.next_element_seed(Collect { out: &mut *self.out, fields, depth, text: false })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth > 8 {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        let depth = self.depth + 1;
        let fields = self.fields;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if fields.skip.contains(&key.as_ref()) {
                map.next_value::<IgnoredAny>()?;
            } else {
                let text = fields.text.contains(&key.as_ref());
                map.next_value_seed(Collect { out: &mut *self.out, fields, depth, text })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn ev(data: &str) -> SseEvent {
        SseEvent { data: data.into(), ..Default::default() }
    }

    #[test]
    fn generated_text_across_apis() {
        assert_eq!(
            generated_text(&ev(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}"#)),
            "Hel"
        );
        assert_eq!(
            generated_text(&ev(
                r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\""}}]}}]}"#
            )),
            "{\"a\""
        );
        assert_eq!(
            generated_text(&ev(
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo"}}"#
            )),
            "lo"
        );
        assert_eq!(generated_text(&ev(r#"{"type":"response.output_text.delta","delta":"x"}"#)), "x");
        assert_eq!(generated_text(&ev(r#"{"type":"message_start","message":{"content":[{"text":"no"}]}}"#)), "");
        assert_eq!(generated_text(&ev("[DONE]")), "");
    }

    /// The text a JSON tree gives (object keys sorted): what the meter read
    /// before it walked JSON as it is parsed.
    fn tree_text(v: &Value, fields: &Fields, out: &mut String, depth: usize) {
        if depth > 8 {
            return;
        }
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    if fields.skip.contains(&k.as_str()) {
                        continue;
                    }
                    match v {
                        Value::String(s) if fields.text.contains(&k.as_str()) => out.push_str(s),
                        _ => tree_text(v, fields, out, depth + 1),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| tree_text(v, fields, out, depth + 1)),
            _ => {}
        }
    }

    /// Every event of every recorded stream (OpenAI chat, completions and
    /// Responses, Anthropic), and every recorded whole answer, gives the same
    /// text walked as read as from a tree.
    #[test]
    fn text_matches_the_tree_on_recorded_streams_and_answers() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures");
        let (mut streams, mut answers): (Vec<Vec<u8>>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
        for dir in ["openai-recorded", "anthropic-responses"] {
            for entry in std::fs::read_dir(fixtures.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                let text = std::fs::read_to_string(&path).unwrap();
                match path.extension().and_then(|e| e.to_str()) {
                    Some("yaml") => {
                        let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
                        for it in doc["interactions"].as_array().into_iter().flatten() {
                            match it["response"]["body"].as_str() {
                                Some(body) if body.contains("data:") => streams.push(body.as_bytes().to_vec()),
                                Some(body) => answers.push(body.as_bytes().to_vec()),
                                None => {}
                            }
                        }
                    }
                    Some("json") if text.contains("data:") => streams.push(text.into_bytes()),
                    Some("json") => answers.push(text.into_bytes()),
                    _ => {}
                }
            }
        }
        let (mut events, mut with_text) = (0, 0);
        for stream in &streams {
            let mut parser = SseParser::new(1 << 20);
            let mut parsed = Vec::new();
            parser.feed(stream, &mut parsed).unwrap();
            parser.finish(&mut parsed).unwrap();
            for e in parsed {
                let mut expected = String::new();
                if let Ok(v) = serde_json::from_str::<Value>(&e.data) {
                    tree_text(&v, &STREAM_EVENT, &mut expected, 0);
                }
                assert_eq!(generated_text(&e), expected, "{}", e.data);
                events += 1;
                with_text += usize::from(!expected.is_empty());
            }
        }
        assert!(
            streams.len() >= 8 && with_text > 100,
            "{} streams, {events} events, {with_text} with text",
            streams.len()
        );
        // Whole answers, as the audit record takes their text.
        let mut answered = 0;
        for body in &answers {
            let mut expected = String::new();
            if let Ok(v) = serde_json::from_slice::<Value>(body) {
                tree_text(&v, &WHOLE_ANSWER, &mut expected, 0);
            }
            assert_eq!(text_of(body, &WHOLE_ANSWER), expected, "{}", String::from_utf8_lossy(body));
            answered += usize::from(!expected.is_empty());
        }
        assert!(answered >= 8, "{answered} answers with text");
        // Not JSON, trailing bytes, nested deeper than the walk goes: no text.
        for data in ["[DONE]", r#"{"delta":"a"} x"#, r#"{"delta":"a""#] {
            assert_eq!(generated_text(&ev(data)), "", "{data}");
        }
        let deep = format!("{}{{\"text\":\"hidden\"}}{}", "[".repeat(9), "]".repeat(9));
        assert_eq!(generated_text(&ev(&deep)), "");
        let shallow = format!("{}{{\"text\":\"seen\"}}{}", "[".repeat(8), "]".repeat(8));
        assert_eq!(generated_text(&ev(&shallow)), "seen");
    }

    #[test]
    fn stream_meter_counts_and_prefers_reported_usage() {
        let mut m = Meter::new(ApiKind::OpenAiChat, "gpt-4o", true, true);
        m.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"hello wor");
        m.feed(b"ld\"}}]}\n\n");
        assert_eq!(m.output_tokens(), 2);
        assert_eq!(m.usage(|| 10).output_tokens, 2);
        m.feed(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\n",
        );
        let u = m.usage(|| 10);
        assert_eq!((u.input_tokens, u.output_tokens), (7, 3));
    }

    #[test]
    fn a_meter_not_live_counts_in_batches_and_the_rest_at_the_end() {
        let delta = |t: &str| format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{t}\"}}}}]}}\n\n");
        let mut live = Meter::new(ApiKind::OpenAiChat, "gpt-4o", true, true);
        let mut batched = Meter::new(ApiKind::OpenAiChat, "gpt-4o", true, false);
        for m in [&mut live, &mut batched] {
            m.feed(delta("hello").as_bytes());
            m.feed(delta(" world").as_bytes());
        }
        assert_eq!(live.output_tokens(), 2);
        assert_eq!(batched.output_tokens(), 0, "not counted yet");
        assert_eq!(batched.usage(|| 5).output_tokens, 2);
        assert_eq!(batched.usage(|| 5).input_tokens, 5);
        // A long stream is counted as it goes, one batch at a time.
        let word = " harbour";
        for _ in 0..(COUNT_BATCH / word.len() + 1) {
            batched.feed(delta(word).as_bytes());
        }
        assert!(batched.output_tokens() > 500, "{}", batched.output_tokens());
        let total = batched.usage(|| 0).output_tokens;
        let exact = tokens::count("gpt-4o", &format!("hello world{}", word.repeat(COUNT_BATCH / word.len() + 1)));
        assert!(total.abs_diff(exact) <= 2, "{total} vs {exact}");
        assert_eq!(batched.reported(), None);
    }

    /// `message_start` reports the input and a placeholder output count: a
    /// stream that ends before `message_delta` (cut by a budget, or the
    /// client left) spent what was streamed, not that placeholder.
    #[test]
    fn an_anthropic_stream_ended_before_its_message_delta_spent_what_was_streamed() {
        let start = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":6,\"output_tokens\":1}}}\n\n",
        );
        let delta = |t: &str| {
            format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\
                 \"delta\":{{\"type\":\"text_delta\",\"text\":\"{t}\"}}}}\n\n"
            )
        };
        for live in [true, false] {
            let mut m = Meter::new(ApiKind::AnthropicMessages, "claude-haiku-4-5", true, live);
            m.feed(start.as_bytes());
            for _ in 0..10 {
                m.feed(delta(" harbour wall").as_bytes());
            }
            let streamed = tokens::count("claude-haiku-4-5", &" harbour wall".repeat(10));
            let u = m.usage(|| 99);
            assert_eq!((u.input_tokens, u.output_tokens, u.total_tokens), (6, streamed, 6 + streamed), "{live}");
            // The whole answer's usage, as the provider counts it, once it came.
            m.feed(
                b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\
                  \"usage\":{\"output_tokens\":12}}\n\n",
            );
            let u = m.usage(|| 99);
            assert_eq!((u.input_tokens, u.output_tokens), (6, 12), "{live}");
        }
    }

    #[test]
    fn json_meter_reads_usage_at_the_end() {
        let mut m = Meter::new(ApiKind::AnthropicMessages, "claude-haiku-4-5", false, false);
        m.feed(br#"{"type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":5,"#);
        m.feed(br#""output_tokens":2}}"#);
        let u = m.usage(|| 99);
        assert_eq!((u.input_tokens, u.output_tokens), (5, 2));
        assert_eq!(m.text(), "hi");
    }
}
