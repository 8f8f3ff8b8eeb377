//! A Gemini-native client's answer: `generateContent`'s response, and each
//! event of `streamGenerateContent?alt=sse` (a response object carrying the
//! next text).

use serde_json::{json, Value};
use tollgate_core::usage::usage_object;
use tollgate_core::{ApiKind, SseEvent};

use super::{pieces, Answer, Replay};

/// Read one response object (a whole answer or a stream event) into `a`.
/// `false`: the answer is unfit for the cache (an error, a block, several
/// candidates, anything but plain text: function calls, thoughts, images).
pub(super) fn record(a: &mut Answer, v: &Value) -> bool {
    if v.get("error").is_some() || v.pointer("/promptFeedback/blockReason").is_some() {
        return false;
    }
    if let Some(model) = v.get("modelVersion").and_then(Value::as_str) {
        a.model = model.to_owned();
    }
    let candidates = v.get("candidates").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    if candidates.len() > 1 {
        return false;
    }
    for c in candidates {
        if c.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
            return false;
        }
        let parts = c.pointer("/content/parts").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        for part in parts {
            let plain = part.as_object().is_some_and(|p| p.keys().all(|k| k == "text" || k == "thoughtSignature"));
            match part.get("text").and_then(Value::as_str) {
                Some(text) if plain => a.text.push_str(text),
                _ => return false,
            }
        }
        if let Some(finish) = c.get("finishReason").and_then(Value::as_str) {
            a.finish = finish.to_owned();
        }
    }
    if let Some(u) = v.get("usageMetadata").and_then(|u| usage_object(ApiKind::GeminiGenerate, u)) {
        (a.input_tokens, a.output_tokens) = (u.input_tokens, u.output_tokens);
    }
    true
}

/// A hit as `generateContent`'s answer, or as the stream's events.
pub(super) fn render(a: &Answer, replay: &Replay<'_>) -> Vec<u8> {
    let usage = json!({
        "promptTokenCount": a.input_tokens, "candidatesTokenCount": a.output_tokens,
        "totalTokenCount": a.input_tokens + a.output_tokens, "cachedContentTokenCount": a.input_tokens,
    });
    let response = |text: &str, last: bool| {
        let mut candidate = json!({"content": {"role": "model", "parts": [{"text": text}]}, "index": 0});
        let mut v = json!({"candidates": [], "modelVersion": a.model, "responseId": replay.id});
        if last {
            candidate["finishReason"] = json!(a.finish);
            v["usageMetadata"] = usage.clone();
        }
        v["candidates"] = json!([candidate]);
        v
    };
    if !replay.stream {
        return response(&a.text, true).to_string().into_bytes();
    }
    let mut out = Vec::new();
    let pieces = pieces(&a.text);
    for (i, p) in pieces.iter().enumerate() {
        let data = response(p, i + 1 == pieces.len()).to_string();
        SseEvent { data, ..Default::default() }.write_to(&mut out);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::tests::record;
    use super::*;

    fn event(parts: Value, finish: Option<&str>) -> String {
        let mut c = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(f) = finish {
            c["finishReason"] = json!(f);
        }
        let mut v = json!({"candidates": [c], "modelVersion": "gemini-2.5-flash"});
        if finish.is_some() {
            v["usageMetadata"] = json!({"promptTokenCount": 5, "candidatesTokenCount": 2, "thoughtsTokenCount": 3,
                "totalTokenCount": 10});
        }
        format!("data: {v}\r\n\r\n")
    }

    #[test]
    fn a_plain_stream_is_recorded_and_anything_else_is_not() {
        let wire = event(json!([{"text": "Hel"}]), None) + &event(json!([{"text": "lo"}]), Some("STOP"));
        let a = record(ApiKind::GeminiGenerate, true, wire.as_bytes(), 9).unwrap();
        assert_eq!((a.text.as_str(), a.finish.as_str(), a.model.as_str()), ("Hello", "STOP", "gemini-2.5-flash"));
        // Thinking tokens are output the answer cost.
        assert_eq!((a.input_tokens, a.output_tokens), (5, 5));
        for unfit in [
            json!([{"functionCall": {"name": "f", "args": {}}}]),
            json!([{"text": "hmm", "thought": true}]),
            json!([{"inlineData": {"mimeType": "image/png", "data": "AA"}}]),
        ] {
            let wire = event(json!([{"text": "Hel"}]), None) + &event(unfit.clone(), Some("STOP"));
            assert_eq!(record(ApiKind::GeminiGenerate, true, wire.as_bytes(), 7), None, "{unfit}");
        }
        let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}});
        assert_eq!(record(ApiKind::GeminiGenerate, false, blocked.to_string().as_bytes(), 100), None);
        let error = "data: {\"error\": {\"code\": 429, \"status\": \"RESOURCE_EXHAUSTED\"}}\r\n\r\n";
        let wire = event(json!([{"text": "Hel"}]), None) + error;
        assert_eq!(record(ApiKind::GeminiGenerate, true, wire.as_bytes(), 7), None);
        // Cut before the finish: not an answer.
        let cut = event(json!([{"text": "Hel"}]), None);
        assert_eq!(record(ApiKind::GeminiGenerate, true, cut.as_bytes(), 7), None);
    }
}
