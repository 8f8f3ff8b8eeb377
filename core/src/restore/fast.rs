//! The common streamed event, rewritten without building a JSON tree.
//!
//! Most events of a streamed answer are text deltas: an OpenAI chunk with
//! `choices[i].delta.content`, an Anthropic `content_block_delta`. With the
//! output guard on, nearly every one of them changes (the guard's window
//! shifts text to later events), so the general path — parse the event into
//! a `serde_json::Value`, edit it, serialize it again — ran for every event
//! and was most of the filter's work on a stream. Here the event is read
//! into borrowed structs that keep each text slot as raw JSON; only those
//! slots are decoded, pushed through the same channels, and spliced back
//! into the original bytes. Everything else (key order, numbers, unknown
//! fields) is left exactly as the provider sent it.
//!
//! Anything unusual — a finished choice, an error, a malformed or unexpected
//! shape, the first text event of a stream (whose header fields are kept for
//! synthesized chunks) — returns `false` and takes the general path.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{write_event, Field, Key, SseRestorer};
use crate::api::ApiKind;
use crate::pii::MaskMap;
use crate::sse::SseEvent;

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    choices: Option<Vec<Choice<'a>>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    refusal: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reasoning_content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
    #[serde(borrow, default)]
    function_call: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct AnthropicEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow)]
    delta: Option<AnthropicDelta<'a>>,
}

#[derive(Deserialize)]
struct AnthropicDelta<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    partial_json: Option<&'a RawValue>,
    #[serde(borrow, default)]
    thinking: Option<&'a RawValue>,
}

/// Replacements of raw slots of one event's data.
struct Splices<'a> {
    data: &'a str,
    edits: Vec<(usize, usize, String)>,
}

impl<'a> Splices<'a> {
    fn new(data: &'a str) -> Self {
        Splices { data, edits: Vec::new() }
    }

    /// Push the string in `raw` (skipped unless a JSON string, as the general
    /// path skips non-strings) through channel `key`; remember the new text.
    fn channel(&mut self, r: &mut SseRestorer, map: &MaskMap, key: Key, raw: Option<&RawValue>) {
        let Some(raw) = raw else { return };
        let src = raw.get();
        if !src.starts_with('"') {
            return;
        }
        let Ok(mut s) = serde_json::from_str::<String>(src) else { return };
        if r.channel(map, key, None, &mut s) {
            let start = (src.as_ptr() as usize).wrapping_sub(self.data.as_ptr() as usize);
            if let Some(end) = start.checked_add(src.len()).filter(|&end| end <= self.data.len()) {
                self.edits.push((start, end, s));
            }
        }
    }

    /// Write the event with the remembered replacements.
    fn write(self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.edits.is_empty() {
            event.write_to(out);
            return;
        }
        let mut data = String::with_capacity(self.data.len() + 16);
        let mut at = 0;
        for (start, end, s) in &self.edits {
            data.push_str(&self.data[at..*start]);
            // A JSON string serializes infallibly; the fallback keeps the text valid JSON.
            data.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
            at = *end;
        }
        data.push_str(&self.data[at..]);
        write_event(out, event.event.as_deref(), event.id.as_deref(), &data);
    }
}

impl SseRestorer {
    /// Rewrite a plain text-delta event without building a JSON tree.
    /// `false`: not such an event, nothing was done; take the general path.
    pub(super) fn fast_event(&mut self, map: &MaskMap, event: &SseEvent, out: &mut Vec<u8>) -> bool {
        if !self.fast || event.event.as_deref() == Some("error") || self.blocked.is_some() {
            return false;
        }
        match self.api {
            ApiKind::OpenAiChat | ApiKind::OpenAiCompletions => self.fast_openai(map, event, out),
            ApiKind::AnthropicMessages => self.fast_anthropic(map, event, out),
            ApiKind::OpenAiResponses
            | ApiKind::OpenAiEmbeddings
            | ApiKind::GeminiGenerate
            | ApiKind::GeminiCountTokens
            | ApiKind::GeminiEmbed
            | ApiKind::GeminiBatchEmbed
            | ApiKind::BedrockConverse => false,
        }
    }

    fn fast_openai(&mut self, map: &MaskMap, event: &SseEvent, out: &mut Vec<u8>) -> bool {
        // The first chunk that leaves text held also provides the header
        // fields of synthesized chunks: the general path records them.
        if self.meta.is_none() {
            return false;
        }
        let Ok(Chunk { choices: Some(choices) }) = serde_json::from_str::<Chunk>(&event.data) else {
            return false;
        };
        if choices.iter().any(|c| c.finish_reason.is_some()) {
            return false;
        }
        let completions = self.api == ApiKind::OpenAiCompletions;
        let mut splices = Splices::new(&event.data);
        for (pos, choice) in choices.iter().enumerate() {
            let i = choice.index.unwrap_or(pos as u64);
            let key = |field, b| Key { field, a: i, b };
            if completions {
                splices.channel(self, map, key(Field::CompletionText, 0), choice.text);
                continue;
            }
            let Some(delta) = &choice.delta else { continue };
            splices.channel(self, map, key(Field::ChatContent, 0), delta.content);
            splices.channel(self, map, key(Field::ChatRefusal, 0), delta.refusal);
            splices.channel(self, map, key(Field::ChatReasoning, 0), delta.reasoning_content);
            for (j, call) in delta.tool_calls.iter().flatten().enumerate() {
                let j = call.index.unwrap_or(j as u64);
                let args = call.function.as_ref().and_then(|f| f.arguments);
                splices.channel(self, map, key(Field::ChatToolArgs, j), args);
            }
            let args = delta.function_call.as_ref().and_then(|f| f.arguments);
            splices.channel(self, map, key(Field::ChatFunctionArgs, 0), args);
        }
        splices.write(event, out);
        true
    }

    fn fast_anthropic(&mut self, map: &MaskMap, event: &SseEvent, out: &mut Vec<u8>) -> bool {
        let Ok(AnthropicEvent { kind: "content_block_delta", index, delta: Some(delta) }) =
            serde_json::from_str::<AnthropicEvent>(&event.data)
        else {
            return false;
        };
        let Some(field) = Field::anthropic_from(delta.kind) else { return false };
        let raw = match field {
            Field::AnthJson => delta.partial_json,
            Field::AnthThinking => delta.thinking,
            _ => delta.text,
        };
        let mut splices = Splices::new(&event.data);
        splices.channel(self, map, Key { field, a: index.unwrap_or(0), b: 0 }, raw);
        splices.write(event, out);
        true
    }
}
