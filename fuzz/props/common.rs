//! Helpers shared by the property checks: input decoding, parsing a stream
//! in chunks, the test PII scanner, streams that carry one text.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "input.rs"]
pub mod input;

use std::sync::OnceLock;

use serde_json::{json, Value};
use tollgate_core::pii::{CustomEntity, MaskMap, PiiAction, PiiPolicy, PiiScanner};
use tollgate_core::{ApiKind, SseEvent, SseParser};

use input::{chunks, str_chunks};

/// The default PII policy plus a custom pattern and a custom term, all masked.
pub fn scanner() -> &'static PiiScanner {
    static S: OnceLock<PiiScanner> = OnceLock::new();
    S.get_or_init(|| {
        let mut policy = PiiPolicy::default();
        policy.custom.push(CustomEntity {
            name: "EMPLOYEE_ID".into(),
            patterns: vec!["EMP-[0-9]{6}".into()],
            terms: Vec::new(),
            action: PiiAction::Mask,
        });
        policy.custom.push(CustomEntity {
            name: "PROJECT".into(),
            patterns: Vec::new(),
            terms: vec!["bluebird".into()],
            action: PiiAction::Mask,
        });
        PiiScanner::new(&policy).expect("the test PII policy is valid")
    })
}

/// Parse a whole stream fed in chunks; `Err` carries the events before the failure.
pub fn parse_stream(bytes: &[u8], seed: u16, cap: usize) -> Result<Vec<SseEvent>, Vec<SseEvent>> {
    let mut parser = SseParser::new(cap);
    let mut events = Vec::new();
    for c in chunks(bytes, seed) {
        if parser.feed(c, &mut events).is_err() {
            return Err(events);
        }
        assert!(parser.pending_bytes() <= cap, "the parser holds more than its cap");
    }
    match parser.finish(&mut events) {
        Ok(()) => Ok(events),
        Err(_) => Err(events),
    }
}

/// Parse wire bytes the gateway produced itself: they must parse completely.
pub fn reparse(bytes: &[u8]) -> Vec<SseEvent> {
    parse_stream(bytes, 0, usize::MAX).expect("output SSE parses")
}

pub fn write_all(events: &[SseEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        e.write_to(&mut out);
    }
    out
}

/// Whether `text` already holds one of the map's placeholders verbatim (a
/// client can write `<EMAIL_ADDRESS_1>` itself; it is restored like one the
/// gateway made, a documented limit, so the round trip is not checked then).
pub fn holds_placeholder(map: &MaskMap, text: &str) -> bool {
    map.entries().any(|(p, _)| text.contains(p))
}

/// The streamed shapes a text channel can take.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    Chat,
    ChatToolArgs,
    Completions,
    AnthropicText,
    AnthropicJson,
    Responses,
}

impl Shape {
    pub const ALL: [Shape; 6] = [
        Shape::Chat,
        Shape::ChatToolArgs,
        Shape::Completions,
        Shape::AnthropicText,
        Shape::AnthropicJson,
        Shape::Responses,
    ];

    pub fn api(self) -> ApiKind {
        match self {
            Shape::Chat | Shape::ChatToolArgs => ApiKind::OpenAiChat,
            Shape::Completions => ApiKind::OpenAiCompletions,
            Shape::AnthropicText | Shape::AnthropicJson => ApiKind::AnthropicMessages,
            Shape::Responses => ApiKind::OpenAiResponses,
        }
    }

    /// Whether the channel carries JSON source (the text sits in a JSON string).
    fn json(self) -> bool {
        matches!(self, Shape::ChatToolArgs | Shape::AnthropicJson)
    }

    /// A stream whose channel carries `text` cut into deltas.
    pub fn stream(self, text: &str, seed: u16) -> Vec<SseEvent> {
        let source;
        let text = if self.json() {
            source = json!({ "q": text }).to_string();
            source.as_str()
        } else {
            text
        };
        let data = |v: Value| SseEvent { event: None, data: v.to_string(), id: None };
        let named = |name: &str, v: Value| SseEvent { event: Some(name.into()), data: v.to_string(), id: None };
        let chunk = |choice: Value| {
            data(
                json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}),
            )
        };
        let mut out = Vec::new();
        let pieces = str_chunks(text, seed);
        match self {
            Shape::Chat => {
                out.push(chunk(
                    json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}),
                ));
                for p in pieces {
                    out.push(chunk(json!({"index": 0, "delta": {"content": p}, "finish_reason": null})));
                }
                out.push(chunk(json!({"index": 0, "delta": {}, "finish_reason": "stop"})));
                out.push(SseEvent { data: "[DONE]".into(), ..SseEvent::default() });
            }
            Shape::ChatToolArgs => {
                out.push(chunk(json!({"index": 0, "delta": {"role": "assistant", "tool_calls": [
                    {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
                    "finish_reason": null})));
                for p in pieces {
                    out.push(chunk(json!({"index": 0, "delta": {"tool_calls": [
                        {"index": 0, "function": {"arguments": p}}]}, "finish_reason": null})));
                }
                out.push(chunk(json!({"index": 0, "delta": {}, "finish_reason": "tool_calls"})));
                out.push(SseEvent { data: "[DONE]".into(), ..SseEvent::default() });
            }
            Shape::Completions => {
                for p in pieces {
                    out.push(data(json!({"id": "c1", "object": "text_completion", "created": 1, "model": "m",
                        "choices": [{"index": 0, "text": p, "finish_reason": null}]})));
                }
                out.push(data(json!({"id": "c1", "object": "text_completion", "created": 1, "model": "m",
                    "choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})));
                out.push(SseEvent { data: "[DONE]".into(), ..SseEvent::default() });
            }
            Shape::AnthropicText | Shape::AnthropicJson => {
                out.push(named(
                    "message_start",
                    json!({"type": "message_start", "message": {"id": "msg_1",
                    "type": "message", "role": "assistant", "model": "m", "content": [], "stop_reason": null,
                    "usage": {"input_tokens": 3, "output_tokens": 1}}}),
                ));
                let (block, delta) = if self.json() {
                    (json!({"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}), "input_json_delta")
                } else {
                    (json!({"type": "text", "text": ""}), "text_delta")
                };
                out.push(named(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0, "content_block": block}),
                ));
                for p in pieces {
                    let d = if self.json() {
                        json!({"type": delta, "partial_json": p})
                    } else {
                        json!({"type": delta, "text": p})
                    };
                    out.push(named(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": 0, "delta": d}),
                    ));
                }
                out.push(named("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
                out.push(named(
                    "message_delta",
                    json!({"type": "message_delta",
                    "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}),
                ));
                out.push(named("message_stop", json!({"type": "message_stop"})));
            }
            Shape::Responses => {
                for p in pieces {
                    out.push(named(
                        "response.output_text.delta",
                        json!({"type": "response.output_text.delta",
                        "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": p}),
                    ));
                }
                out.push(named(
                    "response.completed",
                    json!({"type": "response.completed",
                    "response": {"id": "resp_1", "status": "completed", "output": [],
                    "usage": {"input_tokens": 3, "output_tokens": 5, "total_tokens": 8}}}),
                ));
            }
        }
        out
    }

    /// The channel's text, as a client reassembles it from `events`.
    pub fn text(self, events: &[SseEvent]) -> String {
        let mut out = String::new();
        for e in events {
            let Ok(v) = serde_json::from_str::<Value>(&e.data) else { continue };
            let piece = match self {
                Shape::Chat => &v["choices"][0]["delta"]["content"],
                Shape::ChatToolArgs => &v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
                Shape::Completions => &v["choices"][0]["text"],
                Shape::AnthropicText => &v["delta"]["text"],
                Shape::AnthropicJson => &v["delta"]["partial_json"],
                Shape::Responses if v["type"] == "response.output_text.delta" => &v["delta"],
                Shape::Responses => &Value::Null,
            };
            if let Some(s) = piece.as_str() {
                out.push_str(s);
            }
        }
        if self.json() {
            let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("restored JSON {out:?}: {e}"));
            return v["q"].as_str().expect("the JSON keeps its string").to_string();
        }
        out
    }
}
