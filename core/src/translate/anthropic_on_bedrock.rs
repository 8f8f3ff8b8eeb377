//! Claude on Bedrock through InvokeModel, for an Anthropic Messages client:
//! nothing of the conversation is translated, only its envelope.
//!
//! | Messages API | InvokeModel |
//! |---|---|
//! | `POST /v1/messages`, `model` and `stream` in the body | `POST /model/{modelId}/invoke` or `/invoke-with-response-stream`; neither key in the body (Bedrock refuses them) |
//! | the `anthropic-version` header | `anthropic_version: "bedrock-2023-05-31"` in the body |
//! | a JSON answer | the same JSON (its `model` the client's, as every translation answers) |
//! | an SSE stream, one event per Anthropic event | AWS event-stream `chunk` frames, each `{"bytes": base64 of one Anthropic event}` (the last one with Bedrock's `amazon-bedrock-invocationMetrics`, passed on) |
//! | an error `{"type": "error", "error": {...}}` | `{"message"}` with `x-amzn-errortype`; mid-stream an exception frame |
//!
//! Everything else (tools, images, documents, thinking, `cache_control`,
//! `anthropic_beta` in the body) passes as the client sent it: Bedrock's
//! Claude takes Anthropic's own request.

use base64::Engine as _;
use serde_json::{json, Value};

use super::{anthropic_to_openai, invalid, json_event, openai_to_bedrock};
use crate::error::Error;
use crate::eventstream::{self, Decoder, Message};
use crate::sse::SseEvent;

/// The `anthropic_version` InvokeModel takes for Anthropic's models.
pub const BEDROCK_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// The InvokeModel body of a Messages request: `model` and `stream` taken
/// out (the path says both), `anthropic_version` put in.
pub fn request(body: &Value) -> Result<Value, Error> {
    let mut out = body.as_object().cloned().ok_or_else(|| invalid("the request body must be a JSON object"))?;
    out.remove("model");
    out.remove("stream");
    out.entry("anthropic_version").or_insert_with(|| Value::from(BEDROCK_ANTHROPIC_VERSION));
    Ok(Value::Object(out))
}

/// The answer, as Anthropic's, naming the model the client asked for.
pub fn response(body: &Value, client_model: &str) -> Value {
    let mut out = body.clone();
    if let Some(obj) = out.as_object_mut().filter(|o| o.contains_key("model")) {
        obj.insert("model".into(), Value::from(client_model));
    }
    out
}

/// A Bedrock error (`{"message"}`, its type in `x-amzn-errortype`) in
/// Anthropic's shape, with the status its type means.
pub fn error(body: &Value, status: u16, error_type: Option<&str>) -> Value {
    anthropic_to_openai::error(&openai_to_bedrock::error(body, status, error_type), status)
}

/// InvokeModelWithResponseStream's frames → the Anthropic events they carry.
#[derive(Debug)]
pub struct StreamTranslator {
    decoder: Decoder,
    /// The model the client asked for, named in `message_start`.
    client_model: String,
    /// An error event was written: nothing follows it.
    done: bool,
    /// `message_stop` passed: the answer is whole.
    stopped: bool,
    /// After a bad frame: the events of the frames before it in the same
    /// chunk and the error event, for [`StreamTranslator::finish`].
    pending: Vec<SseEvent>,
}

impl StreamTranslator {
    pub fn new(client_model: &str) -> Self {
        StreamTranslator {
            decoder: Decoder::new(),
            client_model: client_model.to_owned(),
            done: false,
            stopped: false,
            pending: Vec::new(),
        }
    }

    /// The client's events for a chunk of the provider's bytes, at any
    /// split. A bad frame is an error and ends the stream:
    /// [`StreamTranslator::finish`] then gives the events of the frames
    /// before it in this chunk, and one error event (as the Converse
    /// translator does).
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, eventstream::Error> {
        let mut messages = Vec::new();
        let result = self.decoder.feed(bytes, &mut messages);
        let mut out = Vec::new();
        for m in &messages {
            out.extend(self.push_message(m));
        }
        match result {
            Ok(()) => Ok(out),
            Err(e) => {
                self.pending.extend(out);
                let body = json!({"message": format!("the provider's event stream is unreadable: {e}")});
                let failed = self.error_event(&body, "ModelStreamErrorException");
                self.pending.extend(failed);
                Err(e)
            }
        }
    }

    /// The client's events for one decoded frame.
    pub fn push_message(&mut self, message: &Message) -> Vec<SseEvent> {
        if self.done {
            return Vec::new();
        }
        match message.message_type().unwrap_or("event") {
            "exception" => {
                let kind = message.exception_type().unwrap_or("InternalServerException").to_owned();
                let body = serde_json::from_slice::<Value>(&message.payload).unwrap_or(Value::Null);
                self.error_event(&body, &kind)
            }
            "error" => {
                let kind = message.header_str(":error-code").unwrap_or("InternalServerException").to_owned();
                let text = message.header_str(":error-message").unwrap_or("the provider's stream failed").to_owned();
                self.error_event(&json!({ "message": text }), &kind)
            }
            _ => match chunk_event(&message.payload, &self.client_model) {
                Some(event) => {
                    self.stopped |= event.event.as_deref() == Some("message_stop");
                    vec![event]
                }
                None => self.error_event(
                    &json!({"message": "the provider's stream carried an event that is not an Anthropic event"}),
                    "ModelStreamErrorException",
                ),
            },
        }
    }

    /// What ends the client's stream when the provider's bytes end or
    /// broke: what a bad frame left (see [`StreamTranslator::push_bytes`]);
    /// nothing more after `message_stop`; a stream that ended before it (cut
    /// short, at a frame's edge or inside one) gets one error event, as
    /// every stream the gateway cannot vouch for does.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = std::mem::take(&mut self.pending);
        if !self.stopped {
            let body = json!({"message": "the provider's stream ended before the answer did"});
            out.extend(self.error_event(&body, "ModelStreamErrorException"));
        }
        out
    }

    fn error_event(&mut self, body: &Value, kind: &str) -> Vec<SseEvent> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        let status = openai_to_bedrock::client_status(Some(kind), 500);
        vec![json_event(Some("error"), &error(body, status, Some(kind)))]
    }
}

/// The Anthropic event a `chunk` frame's payload carries (`{"bytes": ...}`,
/// base64 of the event's JSON), as the SSE event an Anthropic client reads
/// (`message_start` naming the client's model).
fn chunk_event(payload: &[u8], client_model: &str) -> Option<SseEvent> {
    let frame: Value = serde_json::from_slice(payload).ok()?;
    let encoded = frame.get("bytes")?.as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let mut event: Value = serde_json::from_slice(&decoded).ok()?;
    let name = event.get("type")?.as_str()?.to_owned();
    // The name goes on an SSE `event:` line: one that is empty or breaks the
    // line names no event.
    if name.is_empty() || name.contains(['\n', '\r']) {
        return None;
    }
    if let Some(message) = event.get_mut("message").filter(|_| name == "message_start") {
        message["model"] = Value::from(client_model);
        return Some(json_event(Some(&name), &event));
    }
    // The event's own bytes, as Anthropic would have sent them; but SSE
    // reads a CR as a line break, so JSON spaced with CRs (a CR can only be
    // whitespace there) is written again compactly.
    let data = String::from_utf8(decoded).ok()?;
    if data.contains('\r') {
        return Some(json_event(Some(&name), &event));
    }
    Some(SseEvent { event: Some(name), data, id: None })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn chunk(event: &Value) -> Vec<u8> {
        let bytes = base64::engine::general_purpose::STANDARD.encode(event.to_string());
        Message::event("chunk", "application/json", json!({"bytes": bytes, "p": "abc"}).to_string().into_bytes())
            .encode()
            .unwrap()
    }

    #[test]
    fn the_body_loses_model_and_stream_and_gains_the_version() {
        let body = json!({"model": "claude", "stream": true, "max_tokens": 5, "messages": [], "anthropic_beta": ["x"]});
        let out = request(&body).unwrap();
        assert_eq!(
            out,
            json!({"max_tokens": 5, "messages": [], "anthropic_beta": ["x"], "anthropic_version": BEDROCK_ANTHROPIC_VERSION})
        );
        // A version the client chose stays.
        let out = request(&json!({"anthropic_version": "bedrock-2099-01-01"})).unwrap();
        assert_eq!(out["anthropic_version"], "bedrock-2099-01-01");
        assert!(request(&json!([1])).is_err());
    }

    #[test]
    fn frames_become_the_events_they_carry_at_any_split() {
        let events = [
            json!({"type": "message_start", "message": {"id": "msg_1", "model": "sonnet", "usage": {"input_tokens": 3, "output_tokens": 1}}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "héllo"}}),
            json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 3}}),
        ];
        let mut sent = events.clone();
        sent[0]["message"]["model"] = json!("claude-sonnet-4-5-20250929");
        let bytes: Vec<u8> = sent.iter().flat_map(chunk).collect();
        for split in [1, 7, 50, bytes.len()] {
            let mut t = StreamTranslator::new("sonnet");
            let mut out = Vec::new();
            for piece in bytes.chunks(split) {
                out.extend(t.push_bytes(piece).unwrap());
            }
            let names: Vec<_> = out.iter().map(|e| e.event.clone().unwrap()).collect();
            assert_eq!(names, ["message_start", "content_block_delta", "message_stop"], "split {split}");
            let datas: Vec<Value> = out.iter().map(|e| serde_json::from_str(&e.data).unwrap()).collect();
            assert_eq!(datas, events);
        }
    }

    #[test]
    fn exceptions_and_bad_frames_end_the_stream_with_one_error_event() {
        let mut t = StreamTranslator::new("sonnet");
        let throttled =
            Message::exception("throttlingException", "application/json", br#"{"message":"slow down"}"#.to_vec())
                .encode()
                .unwrap();
        let out = t.push_bytes(&throttled).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].event.as_deref(), Some("error"));
        let body: Value = serde_json::from_str(&out[0].data).unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
        assert_eq!(body["error"]["message"], "slow down");
        // Nothing after the error.
        assert!(t.push_bytes(&chunk(&json!({"type": "ping"}))).unwrap().is_empty());

        let mut t = StreamTranslator::new("sonnet");
        let mut bad = chunk(&json!({"type": "ping"}));
        let last = bad.len() - 1;
        bad[last] ^= 0xff; // the message checksum no longer matches
        t.push_bytes(&bad).unwrap_err();
        let out = t.finish();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].event.as_deref(), Some("error"));
        assert!(t.finish().is_empty(), "one error event");

        // A chunk that is not an Anthropic event.
        let mut t = StreamTranslator::new("sonnet");
        let odd =
            Message::event("chunk", "application/json", br#"{"bytes":"bm90IGpzb24="}"#.to_vec()).encode().unwrap();
        let out = t.push_bytes(&odd).unwrap();
        assert_eq!(out[0].event.as_deref(), Some("error"));
    }

    /// Found by the `translate_frames` fuzz target: a chunk holding good
    /// frames and then a bad one lost the good ones' events (the client got
    /// only the error event), so what the client got depended on how the
    /// bytes were split.
    #[test]
    fn the_events_before_a_bad_frame_reach_the_client_at_any_split() {
        let start =
            json!({"type": "message_start", "message": {"id": "msg_1", "model": "m", "usage": {"input_tokens": 3}}});
        let mut bytes: Vec<u8> = [start, json!({"type": "ping"})].iter().flat_map(chunk).collect();
        let mut bad = chunk(&json!({"type": "ping"}));
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        bytes.extend(bad);
        bytes.extend(chunk(&json!({"type": "message_stop"})));
        for split in [1, 7, 50, bytes.len()] {
            let mut t = StreamTranslator::new("sonnet");
            let mut out = Vec::new();
            for piece in bytes.chunks(split) {
                match t.push_bytes(piece) {
                    Ok(events) => out.extend(events),
                    Err(_) => {
                        out.extend(t.finish());
                        break;
                    }
                }
            }
            let names: Vec<_> = out.iter().map(|e| e.event.clone().unwrap()).collect();
            assert_eq!(names, ["message_start", "ping", "error"], "split {split}");
        }
    }

    /// Found by the `translate_frames` fuzz target: an event whose JSON is
    /// spaced with CRLF went to the client as it was, one `data:` line that
    /// SSE reads as several (the client got a broken event). Names that
    /// cannot be an `event:` line are not events.
    #[test]
    fn every_event_is_well_formed_sse() {
        let pretty = "{\r\n  \"type\": \"content_block_delta\",\r\n  \"index\": 0,\r\n  \"delta\": {\"type\": \"text_delta\", \"text\": \"a\\r\\nb\"}\r\n}";
        let bytes = base64::engine::general_purpose::STANDARD.encode(pretty);
        let frame = Message::event("chunk", "application/json", json!({ "bytes": bytes }).to_string().into_bytes());
        let mut t = StreamTranslator::new("sonnet");
        let out = t.push_bytes(&frame.encode().unwrap()).unwrap();
        assert_eq!(out.len(), 1);
        let mut parser = crate::sse::SseParser::new(1 << 16);
        let mut parsed = Vec::new();
        parser.feed(&out[0].to_bytes(), &mut parsed).unwrap();
        assert_eq!(parsed, out, "the event as the client reads it");
        let data: Value = serde_json::from_str(&out[0].data).unwrap();
        assert_eq!(data["delta"]["text"], "a\r\nb");
        // LF-spaced JSON stays as it was sent (SSE carries it on several `data:` lines).
        let spaced = "{\n  \"type\": \"ping\"\n}";
        let out = t.push_bytes(&chunk_text(spaced)).unwrap();
        assert_eq!(out[0].data, spaced);

        for odd in ["", "message_start\r\nevent: x", "a\nb"] {
            let mut t = StreamTranslator::new("sonnet");
            let out = t.push_bytes(&chunk(&json!({ "type": odd }))).unwrap();
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].event.as_deref(), Some("error"), "type {odd:?}");
        }
    }

    fn chunk_text(text: &str) -> Vec<u8> {
        let bytes = base64::engine::general_purpose::STANDARD.encode(text);
        Message::event("chunk", "application/json", json!({ "bytes": bytes }).to_string().into_bytes())
            .encode()
            .unwrap()
    }

    #[test]
    fn a_stream_that_ends_before_message_stop_ends_with_an_error_event() {
        let start = chunk(&json!({"type": "message_start", "message": {"id": "m", "model": "x"}}));
        let delta =
            chunk(&json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}));
        for cut in [start.len() + delta.len(), start.len() + delta.len() / 2] {
            let bytes: Vec<u8> = [start.clone(), delta.clone()].concat();
            let mut t = StreamTranslator::new("sonnet");
            let mut out = t.push_bytes(&bytes[..cut]).unwrap();
            out.extend(t.finish());
            let last = out.last().unwrap();
            assert_eq!(last.event.as_deref(), Some("error"), "cut at {cut}: {out:?}");
            assert!(last.data.contains("ended before the answer"), "{last:?}");
            assert!(t.finish().is_empty(), "one error event");
        }
        // A whole answer ends with its own message_stop, nothing after.
        let mut t = StreamTranslator::new("sonnet");
        let whole = [start, chunk(&json!({"type": "message_stop"}))].concat();
        let out = t.push_bytes(&whole).unwrap();
        assert_eq!(out.last().unwrap().event.as_deref(), Some("message_stop"));
        assert!(t.finish().is_empty());
    }

    #[test]
    fn the_answer_names_the_clients_model() {
        let answer = json!({"id": "msg_1", "type": "message", "model": "claude-sonnet-4-5-20250929", "content": []});
        assert_eq!(response(&answer, "sonnet")["model"], "sonnet");
        assert_eq!(response(&json!({"type": "error"}), "sonnet"), json!({"type": "error"}));
    }

    #[test]
    fn errors_take_anthropics_shape_and_the_status_of_their_type() {
        let e = error(&json!({"message": "bad input"}), 400, Some("ValidationException:http://internal"));
        assert_eq!(e["type"], "error");
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert_eq!(e["error"]["message"], "bad input");
    }
}
