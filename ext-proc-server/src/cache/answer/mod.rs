//! A cached answer: recorded from what the client received (JSON, SSE or
//! AWS event-stream frames, in the client's API), and replayed in the same
//! API as JSON or as a well-formed stream.
//!
//! Only plain text answers with one choice are recorded; tool calls,
//! refusals, several choices, errors and truncated recordings are not
//! (the recorder returns nothing and the answer is not stored).
//!
//! OpenAI's and Anthropic's shapes are here; [`gemini`] and [`bedrock`]
//! hold their native clients' shapes.

mod bedrock;
mod gemini;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tollgate_core::eventstream::{Decoder, Message};
use tollgate_core::usage::usage_object;
use tollgate_core::{ApiFamily, ApiKind, SseEvent, SseParser};

/// Longest answer text recorded.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// What the cache keeps of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The model name the client saw.
    pub model: String,
    pub text: String,
    /// `finish_reason` (OpenAI), `stop_reason` (Anthropic), `finishReason`
    /// (Gemini) or `stopReason` (Bedrock): in the client API's words.
    pub finish: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Answer {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    pub fn from_bytes(bytes: &[u8]) -> Option<Answer> {
        serde_json::from_slice(bytes).ok()
    }
}

/// How the client's answer is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Json,
    Sse,
    /// AWS event-stream frames (a Bedrock client's ConverseStream).
    Frames,
}

#[derive(Debug)]
enum Reader {
    Json(Vec<u8>),
    Sse(SseParser, Vec<SseEvent>),
    Frames(Decoder, Vec<Message>),
}

/// Records an answer from the bytes the client receives.
#[derive(Debug)]
pub struct Recorder {
    api: ApiKind,
    reader: Reader,
    answer: Answer,
    /// The model the answer names when its body does not (Bedrock's).
    routed_model: String,
    /// Something made this answer unfit for the cache.
    spoiled: bool,
}

impl Recorder {
    /// A recorder of an answer of `api`, framed as `framing`, from `model`.
    pub fn new(api: ApiKind, framing: Framing, model: &str) -> Recorder {
        let reader = match framing {
            Framing::Json => Reader::Json(Vec::new()),
            Framing::Sse => Reader::Sse(SseParser::new(MAX_ANSWER_BYTES), Vec::new()),
            Framing::Frames => Reader::Frames(Decoder::with_max_message_bytes(MAX_ANSWER_BYTES), Vec::new()),
        };
        Recorder {
            api,
            reader,
            answer: Answer {
                model: String::new(),
                text: String::new(),
                finish: String::new(),
                input_tokens: 0,
                output_tokens: 0,
            },
            routed_model: model.to_owned(),
            spoiled: false,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.spoiled {
            return;
        }
        match &mut self.reader {
            Reader::Sse(parser, events) => {
                if parser.feed(chunk, events).is_err() {
                    self.spoiled = true;
                    return;
                }
                let drained: Vec<SseEvent> = std::mem::take(events);
                for event in &drained {
                    self.event(event);
                }
            }
            Reader::Frames(decoder, messages) => {
                if decoder.feed(chunk, messages).is_err() {
                    self.spoiled = true;
                    return;
                }
                for m in std::mem::take(messages) {
                    self.spoiled |= !bedrock::record_frame(&mut self.answer, &m);
                }
            }
            Reader::Json(json) => {
                if json.len() + chunk.len() > MAX_ANSWER_BYTES * 2 {
                    self.spoiled = true;
                } else {
                    json.extend_from_slice(chunk);
                }
            }
        }
        if self.answer.text.len() > MAX_ANSWER_BYTES {
            self.spoiled = true;
        }
    }

    /// The recorded answer, when it is fit to be served again.
    pub fn finish(mut self) -> Option<Answer> {
        if let Reader::Json(json) = &self.reader {
            if !self.spoiled {
                let v: Value = serde_json::from_slice(json).ok()?;
                self.read_json(&v);
            }
        }
        if let Reader::Frames(decoder, _) = &self.reader {
            // A frame cut short: the answer did not end.
            self.spoiled |= decoder.buffered() > 0;
        }
        if self.answer.model.is_empty() {
            self.answer.model = std::mem::take(&mut self.routed_model);
        }
        let a = &self.answer;
        (!self.spoiled && !a.text.is_empty() && !a.finish.is_empty()).then_some(self.answer)
    }

    fn read_json(&mut self, v: &Value) {
        let a = &mut self.answer;
        match self.api.family() {
            ApiFamily::Gemini => {
                self.spoiled |= !gemini::record(a, v);
                return;
            }
            ApiFamily::Bedrock => {
                self.spoiled |= !bedrock::record_json(a, v);
                return;
            }
            _ => {}
        }
        a.model = str_at(v, "/model");
        match self.api {
            ApiKind::AnthropicMessages => {
                let blocks = v.get("content").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
                for b in blocks {
                    match (b.get("type").and_then(Value::as_str), b.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => a.text.push_str(t),
                        _ => self.spoiled = true,
                    }
                }
                a.finish = str_at(v, "/stop_reason");
                let u = v.get("usage").and_then(|u| usage_object(ApiKind::AnthropicMessages, u)).unwrap_or_default();
                (a.input_tokens, a.output_tokens) = (u.input_tokens, u.output_tokens);
            }
            _ => {
                let choices = v.get("choices").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
                if choices.len() != 1 || choices[0].pointer("/message/tool_calls").is_some_and(|t| !t.is_null()) {
                    self.spoiled = true;
                    return;
                }
                a.text = str_at(&choices[0], "/message/content");
                a.finish = str_at(&choices[0], "/finish_reason");
                a.input_tokens = u64_at(v, "/usage/prompt_tokens");
                a.output_tokens = u64_at(v, "/usage/completion_tokens");
            }
        }
    }

    fn event(&mut self, event: &SseEvent) {
        if event.data == "[DONE]" || event.data.is_empty() {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&event.data) else {
            self.spoiled = true;
            return;
        };
        let a = &mut self.answer;
        if self.api.family() == ApiFamily::Gemini {
            // Each event is a whole response object with the next text.
            self.spoiled |= !gemini::record(a, &v);
            return;
        }
        match self.api {
            ApiKind::AnthropicMessages => match v.get("type").and_then(Value::as_str) {
                Some("message_start") => {
                    a.model = str_at(&v, "/message/model");
                    // The whole prompt: its cache reads and writes too.
                    let u = v.pointer("/message/usage").and_then(|u| usage_object(ApiKind::AnthropicMessages, u));
                    a.input_tokens = u.unwrap_or_default().input_tokens;
                }
                Some("content_block_start")
                    if v.pointer("/content_block/type").and_then(Value::as_str) != Some("text") =>
                {
                    self.spoiled = true
                }
                Some("content_block_delta") => match v.pointer("/delta/type").and_then(Value::as_str) {
                    Some("text_delta") => a.text.push_str(&str_at(&v, "/delta/text")),
                    _ => self.spoiled = true,
                },
                Some("message_delta") => {
                    a.finish = str_at(&v, "/delta/stop_reason");
                    a.output_tokens = u64_at(&v, "/usage/output_tokens");
                    let u = v.get("usage").and_then(|u| usage_object(ApiKind::AnthropicMessages, u));
                    if let Some(u) = u.filter(|u| u.input_tokens > 0) {
                        a.input_tokens = u.input_tokens;
                    }
                }
                Some("error") => self.spoiled = true,
                _ => {}
            },
            _ => {
                if v.get("error").is_some() {
                    self.spoiled = true;
                    return;
                }
                if a.model.is_empty() {
                    a.model = str_at(&v, "/model");
                }
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    a.input_tokens = u64_at(u, "/prompt_tokens");
                    a.output_tokens = u64_at(u, "/completion_tokens");
                }
                for c in v.get("choices").and_then(Value::as_array).map_or(&[][..], Vec::as_slice) {
                    if c.get("index").and_then(Value::as_u64).unwrap_or(0) != 0
                        || c.pointer("/delta/tool_calls").is_some_and(|t| !t.is_null())
                    {
                        self.spoiled = true;
                        return;
                    }
                    if let Some(t) = c.pointer("/delta/content").and_then(Value::as_str) {
                        a.text.push_str(t);
                    }
                    if let Some(f) = c.get("finish_reason").and_then(Value::as_str) {
                        a.finish = f.to_string();
                    }
                }
            }
        }
    }
}

pub(super) fn str_at(v: &Value, pointer: &str) -> String {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("").to_string()
}

pub(super) fn u64_at(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// How a hit is replayed.
#[derive(Debug, Clone, Copy)]
pub struct Replay<'a> {
    pub api: ApiKind,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    /// Names the response (`chatcmpl-…` / `msg_…`).
    pub id: &'a str,
    /// Unix seconds.
    pub created: u64,
}

/// The content type of a replayed answer.
pub fn content_type(replay: &Replay<'_>) -> &'static str {
    match (replay.api.family(), replay.stream) {
        (_, false) => "application/json",
        (ApiFamily::Bedrock, true) => bedrock::CONTENT_TYPE,
        (_, true) => "text/event-stream",
    }
}

/// Pieces a replayed stream is cut into: about one word each.
pub(super) fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c == ' ' && i > start {
            out.push(&text[start..i]);
            start = i;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// The body of a hit (its content type follows `replay.stream`). Usage shows
/// the answer's original token counts, all of the prompt as cached.
pub fn render(answer: &Answer, replay: &Replay<'_>) -> Vec<u8> {
    let a = answer;
    match replay.api.family() {
        ApiFamily::Gemini => return gemini::render(a, replay),
        ApiFamily::Bedrock => return bedrock::render(a, replay),
        _ => {}
    }
    let mut out = Vec::new();
    let mut emit = |event: Option<&str>, data: String| {
        SseEvent { event: event.map(str::to_string), data, ..Default::default() }.write_to(&mut out)
    };
    match (replay.api, replay.stream) {
        (ApiKind::AnthropicMessages, false) => {
            return json!({
                "id": format!("msg_{}", replay.id), "type": "message", "role": "assistant", "model": a.model,
                "content": [{"type": "text", "text": a.text}],
                "stop_reason": a.finish, "stop_sequence": null,
                "usage": anthropic_usage(a),
            })
            .to_string()
            .into_bytes()
        }
        (ApiKind::AnthropicMessages, true) => {
            let mut start_usage = anthropic_usage(a);
            start_usage["output_tokens"] = json!(0);
            emit(
                Some("message_start"),
                json!({"type": "message_start", "message": {
                    "id": format!("msg_{}", replay.id), "type": "message", "role": "assistant", "model": a.model,
                    "content": [], "stop_reason": null, "stop_sequence": null, "usage": start_usage}})
                .to_string(),
            );
            emit(
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
                    .to_string(),
            );
            for p in pieces(&a.text) {
                emit(
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})
                        .to_string(),
                );
            }
            emit(Some("content_block_stop"), json!({"type": "content_block_stop", "index": 0}).to_string());
            emit(
                Some("message_delta"),
                json!({"type": "message_delta", "delta": {"stop_reason": a.finish, "stop_sequence": null},
                    "usage": anthropic_usage(a)})
                .to_string(),
            );
            emit(Some("message_stop"), json!({"type": "message_stop"}).to_string());
        }
        (_, false) => {
            return json!({
                "id": format!("chatcmpl-{}", replay.id), "object": "chat.completion", "created": replay.created,
                "model": a.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": a.text, "refusal": null},
                    "logprobs": null, "finish_reason": a.finish}],
                "usage": openai_usage(a),
            })
            .to_string()
            .into_bytes()
        }
        (_, true) => {
            let chunk = |delta: Value, finish: Value, usage: Value| {
                let mut c = json!({
                    "id": format!("chatcmpl-{}", replay.id), "object": "chat.completion.chunk",
                    "created": replay.created, "model": a.model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
                });
                if replay.include_usage {
                    c["usage"] = usage;
                }
                c.to_string()
            };
            emit(None, chunk(json!({"role": "assistant", "content": "", "refusal": null}), Value::Null, Value::Null));
            for p in pieces(&a.text) {
                emit(None, chunk(json!({"content": p}), Value::Null, Value::Null));
            }
            emit(None, chunk(json!({}), json!(a.finish), Value::Null));
            if replay.include_usage {
                emit(
                    None,
                    json!({"id": format!("chatcmpl-{}", replay.id), "object": "chat.completion.chunk",
                        "created": replay.created, "model": a.model, "choices": [], "usage": openai_usage(a)})
                    .to_string(),
                );
            }
            emit(None, "[DONE]".into());
        }
    }
    out
}

fn openai_usage(a: &Answer) -> Value {
    json!({
        "prompt_tokens": a.input_tokens, "completion_tokens": a.output_tokens,
        "total_tokens": a.input_tokens + a.output_tokens,
        "prompt_tokens_details": {"cached_tokens": a.input_tokens},
    })
}

fn anthropic_usage(a: &Answer) -> Value {
    json!({"input_tokens": 0, "cache_read_input_tokens": a.input_tokens, "cache_creation_input_tokens": 0,
        "output_tokens": a.output_tokens})
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn answer() -> Answer {
        Answer {
            model: "gpt-4o-mini".into(),
            text: "Paris is the capital of France.".into(),
            finish: "stop".into(),
            input_tokens: 14,
            output_tokens: 8,
        }
    }

    pub(super) fn record(api: ApiKind, sse: bool, bytes: &[u8], split: usize) -> Option<Answer> {
        let framing = match (sse, api.family()) {
            (false, _) => Framing::Json,
            (true, ApiFamily::Bedrock) => Framing::Frames,
            (true, _) => Framing::Sse,
        };
        let mut r = Recorder::new(api, framing, "routed-model");
        for chunk in bytes.chunks(split.max(1)) {
            r.feed(chunk);
        }
        r.finish()
    }

    #[test]
    fn every_replay_records_back_to_the_same_answer_at_any_chunking() {
        let mut a = answer();
        for api in [ApiKind::OpenAiChat, ApiKind::AnthropicMessages, ApiKind::GeminiGenerate, ApiKind::BedrockConverse]
        {
            a.finish = match api {
                ApiKind::OpenAiChat => "stop",
                ApiKind::GeminiGenerate => "STOP",
                _ => "end_turn",
            }
            .into();
            for stream in [false, true] {
                let replay = Replay { api, stream, include_usage: true, id: "abc", created: 1 };
                let body = render(&a, &replay);
                for split in [1, 7, 64, body.len()] {
                    let back = record(api, stream, &body, split).unwrap_or_else(|| panic!("{api:?} {stream}"));
                    assert_eq!(back.text, a.text);
                    assert_eq!(back.finish, a.finish);
                    // Bedrock's answers name no model: the routed one stands.
                    let model = if api == ApiKind::BedrockConverse { "routed-model" } else { a.model.as_str() };
                    assert_eq!(back.model, model);
                    assert_eq!(back.input_tokens, a.input_tokens, "{api:?} stream={stream}");
                    assert_eq!(back.output_tokens, a.output_tokens, "{api:?} stream={stream}");
                }
            }
        }
    }

    #[test]
    fn openai_replay_matches_the_recorded_stream_framing() {
        let replay = Replay { api: ApiKind::OpenAiChat, stream: true, include_usage: false, id: "x", created: 5 };
        let text = String::from_utf8(render(&answer(), &replay)).unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert!(events.iter().all(|e| e.starts_with("data: ")), "{text}");
        assert_eq!(*events.last().unwrap(), "data: [DONE]");
        assert!(!text.contains("\"usage\""), "no usage unless asked: {text}");
        let first: Value = serde_json::from_str(&events[0][6..]).unwrap();
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(first["object"], "chat.completion.chunk");
    }

    #[test]
    fn recorded_provider_answers_become_entries() {
        // The fixture shapes: an OpenAI JSON answer and an Anthropic stream.
        let chat = json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}});
        let a = record(ApiKind::OpenAiChat, false, chat.to_string().as_bytes(), 5).unwrap();
        assert_eq!((a.text.as_str(), a.finish.as_str(), a.input_tokens, a.output_tokens), ("Hi there", "stop", 9, 2));
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-haiku-4-5\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n\
            event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
            event: ping\ndata: {\"type\": \"ping\"}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n\
            event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n\
            event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let a = record(ApiKind::AnthropicMessages, true, stream.as_bytes(), 3).unwrap();
        assert_eq!((a.text.as_str(), a.finish.as_str(), a.input_tokens, a.output_tokens), ("Hello", "end_turn", 12, 3));
    }

    #[test]
    fn tool_calls_errors_and_cut_streams_are_not_recorded() {
        let tool = json!({"model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            "finish_reason": "tool_calls"}]});
        assert_eq!(record(ApiKind::OpenAiChat, false, tool.to_string().as_bytes(), 100), None);
        let cut = "data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n\
            data: {\"error\":{\"message\":\"budget\",\"type\":\"rate_limit_error\"}}\n\ndata: [DONE]\n\n";
        assert_eq!(record(ApiKind::OpenAiChat, true, cut.as_bytes(), 10), None);
        let unfinished = "data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n";
        assert_eq!(record(ApiKind::OpenAiChat, true, unfinished.as_bytes(), 10), None);
        let two = json!({"model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "a"}, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "b"}, "finish_reason": "stop"}]});
        assert_eq!(record(ApiKind::OpenAiChat, false, two.to_string().as_bytes(), 100), None);
    }
}
