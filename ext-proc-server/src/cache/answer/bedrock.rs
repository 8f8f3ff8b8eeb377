//! A Bedrock-native client's answer: Converse's JSON, and ConverseStream's
//! AWS event-stream frames (one event per frame, its type in the
//! `:event-type` header). Bedrock's answers name no model: the recorder
//! keeps the routed one.

use serde_json::{json, Value};
use tollgate_core::eventstream::Message;
use tollgate_core::usage::usage_object;
use tollgate_core::ApiKind;

use super::{pieces, str_at, Answer, Replay};

/// The content type of ConverseStream's answer.
pub(super) const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

fn usage_into(a: &mut Answer, usage: Option<&Value>) {
    if let Some(u) = usage.and_then(|u| usage_object(ApiKind::BedrockConverse, u)) {
        (a.input_tokens, a.output_tokens) = (u.input_tokens, u.output_tokens);
    }
}

/// Whether a content block or delta is plain text.
fn is_text(block: &Value) -> bool {
    block.as_object().is_some_and(|b| b.len() == 1 && b.get("text").is_some_and(Value::is_string))
}

/// Read Converse's answer into `a`; `false`: unfit (tool use, reasoning,
/// anything but text).
pub(super) fn record_json(a: &mut Answer, v: &Value) -> bool {
    let blocks = v.pointer("/output/message/content").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    for b in blocks {
        if !is_text(b) {
            return false;
        }
        a.text.push_str(b["text"].as_str().unwrap_or_default());
    }
    a.finish = str_at(v, "/stopReason");
    usage_into(a, v.get("usage"));
    true
}

/// Read one ConverseStream frame into `a`; `false`: unfit (an exception,
/// a block other than text, a second block).
pub(super) fn record_frame(a: &mut Answer, m: &Message) -> bool {
    if m.message_type() != Some("event") {
        return false;
    }
    let Some(kind) = m.event_type() else { return false };
    let Ok(v) = serde_json::from_slice::<Value>(&m.payload) else { return false };
    // The payload is the event's body (some recordings wrap it in its name).
    let v = v.get(kind).unwrap_or(&v);
    let first_block = || v.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0) == 0;
    match kind {
        "messageStart" | "contentBlockStop" => true,
        "contentBlockStart" => false,
        "contentBlockDelta" => {
            let Some(delta) = v.get("delta").filter(|d| is_text(d) && first_block()) else { return false };
            a.text.push_str(delta["text"].as_str().unwrap_or_default());
            true
        }
        "messageStop" => {
            a.finish = str_at(v, "/stopReason");
            true
        }
        "metadata" => {
            usage_into(a, v.get("usage"));
            true
        }
        _ => false,
    }
}

/// A hit as Converse's answer, or as ConverseStream's frames.
pub(super) fn render(a: &Answer, replay: &Replay<'_>) -> Vec<u8> {
    // All of the prompt as read from the cache, as the other APIs show it.
    let usage = json!({
        "inputTokens": 0, "outputTokens": a.output_tokens, "totalTokens": a.input_tokens + a.output_tokens,
        "cacheReadInputTokens": a.input_tokens, "cacheWriteInputTokens": 0,
    });
    let metrics = json!({"latencyMs": 0});
    if !replay.stream {
        return json!({
            "output": {"message": {"role": "assistant", "content": [{"text": a.text}]}},
            "stopReason": a.finish, "usage": usage, "metrics": metrics,
        })
        .to_string()
        .into_bytes();
    }
    let mut events = vec![("messageStart", json!({"role": "assistant"}))];
    events.extend(
        pieces(&a.text)
            .into_iter()
            .map(|p| ("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": p}}))),
    );
    events.push(("contentBlockStop", json!({"contentBlockIndex": 0})));
    events.push(("messageStop", json!({"stopReason": a.finish})));
    events.push(("metadata", json!({"usage": usage, "metrics": metrics})));
    let mut out = Vec::new();
    for (kind, body) in events {
        // Encoding fails only for headers or payloads past the format's limits.
        let _ = Message::event(kind, "application/json", body.to_string()).encode_into(&mut out);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::tests::record;
    use super::*;

    fn frames(events: &[(&str, Value)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (kind, body) in events {
            Message::event(kind, "application/json", body.to_string()).encode_into(&mut out).unwrap();
        }
        out
    }

    fn plain() -> Vec<(&'static str, Value)> {
        vec![
            ("messageStart", json!({"role": "assistant", "p": "abc"})),
            ("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Hel"}, "p": "ab"})),
            ("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "lo"}})),
            ("contentBlockStop", json!({"contentBlockIndex": 0})),
            ("messageStop", json!({"stopReason": "end_turn"})),
            (
                "metadata",
                json!({"usage": {"inputTokens": 7, "cacheReadInputTokens": 3, "outputTokens": 2,
                "totalTokens": 12}, "metrics": {"latencyMs": 40}}),
            ),
        ]
    }

    #[test]
    fn a_plain_stream_is_recorded_at_any_chunking_and_anything_else_is_not() {
        let wire = frames(&plain());
        for split in [1, 5, 64, wire.len()] {
            let a = record(ApiKind::BedrockConverse, true, &wire, split).unwrap();
            assert_eq!((a.text.as_str(), a.finish.as_str(), a.model.as_str()), ("Hello", "end_turn", "routed-model"));
            assert_eq!((a.input_tokens, a.output_tokens), (10, 2));
        }
        let mut tool = plain();
        tool.insert(1, ("contentBlockStart", json!({"contentBlockIndex": 0, "start": {"toolUse": {"name": "f"}}})));
        assert_eq!(record(ApiKind::BedrockConverse, true, &frames(&tool), 16), None);
        let mut reasoning = plain();
        reasoning[1].1 = json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "hmm"}}});
        assert_eq!(record(ApiKind::BedrockConverse, true, &frames(&reasoning), 16), None);
        // An exception mid-stream, and a stream cut inside a frame.
        let mut thrown = frames(&plain()[..3]);
        Message::exception("throttlingException", "application/json", "{\"message\":\"slow down\"}")
            .encode_into(&mut thrown)
            .unwrap();
        assert_eq!(record(ApiKind::BedrockConverse, true, &thrown, 16), None);
        let wire = frames(&plain());
        assert_eq!(record(ApiKind::BedrockConverse, true, &wire[..wire.len() - 3], 16), None);
        let tool_json = json!({"output": {"message": {"role": "assistant", "content": [
            {"text": "Let me look"}, {"toolUse": {"toolUseId": "t", "name": "f", "input": {}}}]}},
            "stopReason": "tool_use", "usage": {"inputTokens": 3, "outputTokens": 4}});
        assert_eq!(record(ApiKind::BedrockConverse, false, tool_json.to_string().as_bytes(), 100), None);
    }
}
