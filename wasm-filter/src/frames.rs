//! A Bedrock ConverseStream answer (AWS event-stream frames, not SSE) read
//! and rewritten by the filter: each frame is decoded (both checksums
//! checked), handed to the same restorer and output guard as an SSE event
//! named by its `:event-type` (an exception frame as
//! `exception:<:exception-type>`), and what comes out is framed again with
//! new checksums. Placeholders and guarded text split across frames are
//! handled by the restorer's channels, as for SSE. Usage comes from the
//! `metadata` frame.

use tollgate_core::eventstream::{Decoder, Message};
use tollgate_core::pii::MaskMap;
use tollgate_core::restore::{SseRestorer, BEDROCK_EXCEPTION};
use tollgate_core::translate::openai_to_bedrock::usage_from_message;
use tollgate_core::{SseEvent, SseParser, Usage};

/// What one chunk of the answer became.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The bytes the client gets for the chunk (with a restorer; without
    /// one the chunk passes unchanged).
    pub out: Vec<u8>,
    /// The stream could not be read (a bad or truncated frame): what.
    pub unreadable: Option<String>,
}

#[derive(Debug)]
pub struct FrameState {
    decoder: Decoder,
    pub restorer: Option<SseRestorer>,
    usage: Option<Usage>,
    /// The restorer's SSE output, parsed back into events to frame again.
    parser: SseParser,
    messages: Vec<Message>,
    events: Vec<SseEvent>,
    sse: Vec<u8>,
}

impl FrameState {
    /// `max_frame`: the largest frame read (`inspection.maxSseEventBytes`).
    pub fn new(max_frame: usize, restorer: Option<SseRestorer>) -> FrameState {
        FrameState {
            decoder: Decoder::with_max_message_bytes(max_frame),
            restorer,
            usage: None,
            parser: SseParser::new(usize::MAX / 2),
            messages: Vec::new(),
            events: Vec::new(),
            sse: Vec::new(),
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Read one chunk; with a restorer, rewrite it.
    pub fn chunk(&mut self, masks: &MaskMap, bytes: &[u8], end_of_stream: bool) -> Chunk {
        let mut result = Chunk::default();
        self.messages.clear();
        let mut fed = self.decoder.feed(bytes, &mut self.messages);
        if fed.is_ok() && end_of_stream {
            fed = self.decoder.finish();
        }
        for m in &self.messages {
            if m.event_type() == Some("metadata") {
                if let Some(u) = usage_from_message(m) {
                    self.usage = Some(u);
                }
            }
        }
        if let Err(err) = &fed {
            result.unreadable = Some(err.to_string());
        }
        // Nothing to rewrite: the chunk flows on as it came.
        let Some(restorer) = self.restorer.as_mut() else { return result };
        self.sse.clear();
        for m in &self.messages {
            let name = match (m.message_type(), m.exception_type(), m.event_type()) {
                (Some("exception"), Some(kind), _) => format!("{BEDROCK_EXCEPTION}{kind}"),
                (_, _, Some(kind)) => kind.to_owned(),
                _ => continue,
            };
            let data = String::from_utf8_lossy(&m.payload).into_owned();
            restorer.on_event(masks, &SseEvent { event: Some(name), data, id: None }, &mut self.sse);
        }
        if end_of_stream && fed.is_ok() {
            restorer.finish(masks, &mut self.sse);
        }
        self.events.clear();
        // The restorer writes well-formed SSE: its events are whole.
        let _ = self.parser.feed(&self.sse, &mut self.events);
        for e in &self.events {
            let name = e.event.as_deref().unwrap_or("");
            let message = match name.strip_prefix(BEDROCK_EXCEPTION) {
                Some(kind) => Message::exception(kind, "application/json", e.data.as_bytes()),
                None => Message::event(name, "application/json", e.data.as_bytes()),
            };
            if let Err(err) = message.encode_into(&mut result.out) {
                result.unreadable = Some(err.to_string());
            }
        }
        result
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn frame(name: &str, payload: Value) -> Vec<u8> {
        Message::event(name, "application/json", payload.to_string()).encode().unwrap()
    }

    fn stream() -> Vec<u8> {
        let delta = |t: &str| json!({"contentBlockIndex": 0, "delta": {"text": t}, "p": "abc"});
        [
            frame("messageStart", json!({"role": "assistant"})),
            frame("contentBlockDelta", delta("Write to <EMAIL_AD")),
            frame("contentBlockDelta", delta("DRESS_1> now")),
            frame("contentBlockStop", json!({"contentBlockIndex": 0})),
            frame("messageStop", json!({"stopReason": "end_turn"})),
            frame(
                "metadata",
                json!({"usage": {"inputTokens": 5, "outputTokens": 7, "totalTokens": 12}, "metrics": {"latencyMs": 1}}),
            ),
        ]
        .concat()
    }

    fn text_of(bytes: &[u8]) -> String {
        let mut decoder = Decoder::new();
        let mut messages = Vec::new();
        decoder.feed(bytes, &mut messages).unwrap();
        decoder.finish().unwrap();
        messages
            .iter()
            .filter(|m| m.event_type() == Some("contentBlockDelta"))
            .map(|m| {
                serde_json::from_slice::<Value>(&m.payload).unwrap()["delta"]["text"].as_str().unwrap_or("").to_owned()
            })
            .collect()
    }

    #[test]
    fn a_placeholder_split_across_frames_is_restored_at_any_chunking_with_valid_checksums() {
        let mut masks = MaskMap::new(4096);
        masks.placeholder("EMAIL_ADDRESS", "ada@example.com").unwrap();
        let wire = stream();
        for cut in 0..wire.len() {
            let mut state = FrameState::new(1 << 16, Some(SseRestorer::new(tollgate_core::ApiKind::BedrockConverse)));
            let mut out = state.chunk(&masks, &wire[..cut], false).out;
            out.extend(state.chunk(&masks, &wire[cut..], true).out);
            // Decoding checks both checksums of every frame written.
            assert_eq!(text_of(&out), "Write to ada@example.com now", "cut at {cut}");
            assert_eq!(state.usage().unwrap().total_tokens, 12);
        }
    }

    #[test]
    fn a_truncated_or_corrupt_stream_is_reported() {
        let masks = MaskMap::new(0);
        let wire = stream();
        let mut state = FrameState::new(1 << 16, None);
        assert!(state.chunk(&masks, &wire[..wire.len() - 3], true).unreadable.is_some());
        let mut bad = wire.clone();
        bad[20] ^= 0xff;
        let mut state = FrameState::new(1 << 16, Some(SseRestorer::new(tollgate_core::ApiKind::BedrockConverse)));
        assert!(state.chunk(&masks, &bad, true).unreadable.is_some());
    }
}
