//! Counting an answer as it passes through the sidecar: the provider's own
//! usage when it reports one, and meanwhile an estimate of the output tokens
//! streamed so far (so a budget holds during a stream, not only after it).

use serde_json::Value;
use tollgate_core::policy::{DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_MAX_SSE_EVENT_BYTES};
use tollgate_core::usage::{usage_from_json, StreamUsage, Usage};
use tollgate_core::{ApiKind, SseEvent, SseParser};

use crate::tokens;

#[derive(Debug)]
pub struct Meter {
    api: ApiKind,
    model: String,
    kind: Body,
    output_tokens: u64,
    /// The streamed text, kept up to `TEXT_CAP` bytes for the audit record.
    text: String,
}

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
    pub fn new(api: ApiKind, model: &str, sse: bool) -> Meter {
        let kind = if sse {
            Body::Stream(Box::new(StreamBody {
                parser: SseParser::new(DEFAULT_MAX_SSE_EVENT_BYTES),
                usage: StreamUsage::new(api),
                events: Vec::new(),
            }))
        } else {
            Body::Json { bytes: Vec::new(), overflow: false }
        };
        Meter { api, model: model.to_string(), kind, output_tokens: 0, text: String::new() }
    }

    pub fn is_stream(&self) -> bool {
        matches!(self.kind, Body::Stream(_))
    }

    /// Output tokens counted from the streamed text so far.
    pub fn output_tokens(&self) -> u64 {
        self.output_tokens
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        match &mut self.kind {
            Body::Stream(body) => {
                let StreamBody { parser, usage, events } = body.as_mut();
                // An oversized event only stops the counting, never the answer.
                if parser.feed(chunk, events).is_err() {
                    events.clear();
                    return;
                }
                for event in events.drain(..) {
                    usage.observe(&event);
                    let text = generated_text(&event);
                    if !text.is_empty() {
                        self.output_tokens += tokens::count(&self.model, &text);
                        push_capped(&mut self.text, &text);
                    }
                }
            }
            Body::Json { bytes, overflow } => {
                if bytes.len() + chunk.len() > DEFAULT_MAX_RESPONSE_BYTES {
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
                let mut out = String::new();
                if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
                    answer_text(&v, &mut out, 0);
                }
                out
            }
            Body::Json { .. } => String::new(),
        }
    }

    /// The provider's usage if it reported one; otherwise the estimate
    /// (`input_tokens` as reserved plus the output counted).
    pub fn usage(&self, input_tokens: u64) -> Usage {
        let reported = match &self.kind {
            Body::Stream(body) => body.usage.usage(),
            Body::Json { bytes, overflow: false } => usage_from_json(self.api, bytes).ok().flatten(),
            Body::Json { .. } => None,
        };
        reported.unwrap_or(Usage {
            input_tokens,
            output_tokens: self.output_tokens,
            cached_tokens: 0,
            total_tokens: input_tokens + self.output_tokens,
        })
    }
}

/// The model-generated text in one stream event, from any supported API:
/// OpenAI chat and completion deltas, tool-call argument fragments, Responses
/// API deltas, and Anthropic text, thinking and tool-input deltas.
pub fn generated_text(event: &SseEvent) -> String {
    let mut out = String::new();
    if let Ok(v) = serde_json::from_str::<Value>(&event.data) {
        collect(&v, &mut out, 0);
    }
    out
}

fn collect(v: &Value, out: &mut String, depth: usize) {
    if depth > 8 {
        return;
    }
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    (
                        "content" | "text" | "partial_json" | "arguments" | "thinking" | "refusal" | "delta",
                        Value::String(s),
                    ) => out.push_str(s),
                    // Whole objects repeated at the end of a stream, not new output.
                    ("response" | "message" | "usage" | "item" | "part", _) => {}
                    _ => collect(v, out, depth + 1),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, out, depth + 1)),
        _ => {}
    }
}

/// The text of a whole (non-streamed) answer: message contents, output
/// text and tool-call arguments, in document order.
fn answer_text(v: &Value, out: &mut String, depth: usize) {
    if depth > 8 {
        return;
    }
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("content" | "text" | "arguments" | "refusal", Value::String(s)) => push_capped(out, s),
                    ("usage", _) => {}
                    _ => answer_text(v, out, depth + 1),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| answer_text(v, out, depth + 1)),
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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

    #[test]
    fn stream_meter_counts_and_prefers_reported_usage() {
        let mut m = Meter::new(ApiKind::OpenAiChat, "gpt-4o", true);
        m.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"hello wor");
        m.feed(b"ld\"}}]}\n\n");
        assert_eq!(m.output_tokens(), 2);
        assert_eq!(m.usage(10).output_tokens, 2);
        m.feed(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\n",
        );
        let u = m.usage(10);
        assert_eq!((u.input_tokens, u.output_tokens), (7, 3));
    }

    #[test]
    fn json_meter_reads_usage_at_the_end() {
        let mut m = Meter::new(ApiKind::AnthropicMessages, "claude-haiku-4-5", false);
        m.feed(br#"{"type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":5,"#);
        m.feed(br#""output_tokens":2}}"#);
        let u = m.usage(99);
        assert_eq!((u.input_tokens, u.output_tokens), (5, 2));
        assert_eq!(m.text(), "hi");
    }
}
