//! Restoring masked PII in responses: placeholders such as
//! `<EMAIL_ADDRESS_1>` that the model repeats are replaced by the originals
//! held in the request's [`MaskMap`] before the client sees them.
//!
//! - [`TextRestorer`] restores one logical text channel that arrives in
//!   pieces, holding back only a trailing part that could still become a
//!   placeholder (at most [`MaskMap::max_placeholder_len`] bytes).
//! - [`SseRestorer`] rewrites a streamed response event by event, keeping one
//!   [`TextRestorer`] per channel (choice / tool call / content block) that
//!   currently holds text, and flushing it before the event that ends it.
//! - [`restore_json`] rewrites a whole (non-streamed) JSON body.
//!
//! Inside JSON text (OpenAI tool-call `arguments`, Anthropic
//! `input_json_delta.partial_json`) a placeholder sits inside a JSON string,
//! so the original is inserted JSON-escaped (without quotes).

mod fast;

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::api::ApiKind;
use crate::guard::{guard_responses_value, write_block_event, write_end_marker, write_error_event, OutputGuard};
use crate::pii::{MaskMap, PLACEHOLDER_CLOSE, PLACEHOLDER_OPEN};
use crate::sse::SseEvent;

/// Incremental restorer for one text channel.
#[derive(Debug, Clone, Default)]
pub struct TextRestorer {
    held: String,
    json: bool,
}

impl TextRestorer {
    /// A restorer for plain text.
    pub fn new() -> Self {
        TextRestorer::default()
    }

    /// A restorer for a channel whose text is a fragment of JSON source
    /// (tool-call arguments): originals are inserted JSON-string-escaped.
    pub fn json_fragment() -> Self {
        TextRestorer { held: String::new(), json: true }
    }

    /// Whether this restorer escapes originals for JSON source.
    pub fn is_json_fragment(&self) -> bool {
        self.json
    }

    /// The text currently held back (a possible placeholder prefix).
    pub fn held(&self) -> &str {
        &self.held
    }

    /// Whether any text is held back.
    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Append the restored form of `piece` (preceded by whatever was held) to
    /// `out`, holding back a trailing possible placeholder prefix.
    pub fn push(&mut self, map: &MaskMap, piece: &str, out: &mut String) {
        if self.held.is_empty() {
            if !piece.contains(PLACEHOLDER_OPEN) {
                out.push_str(piece);
                return;
            }
            self.process(map, piece, out);
        } else {
            let mut buf = std::mem::take(&mut self.held);
            buf.push_str(piece);
            self.process(map, &buf, out);
        }
    }

    /// Emit whatever is held (restored where complete, verbatim otherwise).
    pub fn flush(&mut self, map: &MaskMap, out: &mut String) {
        if !self.held.is_empty() {
            restore_into(map, &self.held, self.json, out);
            self.held.clear();
        }
    }

    fn process(&mut self, map: &MaskMap, text: &str, out: &mut String) {
        // Placeholders contain exactly one `<`, at the start: a possible
        // prefix can only begin at the last one.
        if let Some(p) = text.rfind(PLACEHOLDER_OPEN) {
            if map.could_be_prefix(&text[p..]) {
                restore_into(map, &text[..p], self.json, out);
                self.held.push_str(&text[p..]);
                return;
            }
        }
        restore_into(map, text, self.json, out);
    }
}

/// Append `text` to `out` with every complete placeholder replaced by its
/// original (JSON-escaped when `json`).
fn restore_into(map: &MaskMap, text: &str, json: bool, out: &mut String) {
    let limit = map.max_placeholder_len();
    let mut rest = text;
    while let Some(open) = rest.find(PLACEHOLDER_OPEN) {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        let found = tail
            .bytes()
            .take(limit)
            .position(|b| b == PLACEHOLDER_CLOSE as u8)
            .and_then(|c| map.original(&tail[..=c]).map(|v| (c, v)));
        match found {
            Some((c, value)) => {
                if json {
                    escape_json_into(value, out);
                } else {
                    out.push_str(value);
                }
                rest = &tail[c + 1..];
            }
            None => {
                out.push(PLACEHOLDER_OPEN);
                rest = &tail[PLACEHOLDER_OPEN.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
}

/// Append `s` escaped as the inside of a JSON string.
fn escape_json_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let n = c as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[n >> 4]));
                out.push(char::from(HEX[n & 0xF]));
            }
            c => out.push(c),
        }
    }
}

/// Restore a JSON string value in place; true when it changed.
fn restore_string(map: &MaskMap, s: &mut String, json: bool) -> bool {
    if !s.contains(PLACEHOLDER_OPEN) {
        return false;
    }
    let mut out = String::with_capacity(s.len() + 16);
    restore_into(map, s, json, &mut out);
    if out != *s {
        *s = out;
        true
    } else {
        false
    }
}

/// Restore every string in `v`; strings under an `arguments` key are JSON
/// text when `json_arguments`. True when anything changed.
fn restore_value(map: &MaskMap, v: &mut Value, json_arguments: bool) -> bool {
    match v {
        Value::String(s) => restore_string(map, s, false),
        Value::Array(items) => {
            let mut changed = false;
            for item in items {
                changed |= restore_value(map, item, json_arguments);
            }
            changed
        }
        Value::Object(fields) => {
            let mut changed = false;
            for (key, item) in fields.iter_mut() {
                changed |= match item {
                    Value::String(s) if json_arguments && key == "arguments" => restore_string(map, s, true),
                    _ => restore_value(map, item, json_arguments),
                };
            }
            changed
        }
        _ => false,
    }
}

/// Whether JSON source may hold a placeholder (also as a `\u003c` escape).
fn may_contain_placeholder(data: &str) -> bool {
    data.contains(PLACEHOLDER_OPEN) || data.contains("\\u003c") || data.contains("\\u003C")
}

/// Restore the placeholders in a non-streamed JSON response body of `api`.
/// Returns the rewritten body when anything changed; `None` when nothing
/// did, the map is empty or the body is not JSON.
pub fn restore_json(api: ApiKind, map: &MaskMap, body: &[u8]) -> Option<Vec<u8>> {
    if map.is_empty() || !api.answers_text() {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    if !may_contain_placeholder(text) {
        return None;
    }
    let mut v: Value = serde_json::from_str(text).ok()?;
    let json_arguments =
        !matches!(api, ApiKind::AnthropicMessages | ApiKind::GeminiGenerate | ApiKind::BedrockConverse);
    if restore_value(map, &mut v, json_arguments) {
        serde_json::to_vec(&v).ok()
    } else {
        None
    }
}

/// Which streamed field a channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ChatContent,
    ChatRefusal,
    ChatReasoning,
    ChatToolArgs,
    ChatFunctionArgs,
    CompletionText,
    RespText,
    RespRefusal,
    RespArgs,
    RespReasoningSummary,
    AnthText,
    AnthJson,
    AnthThinking,
    /// A Gemini candidate's text parts (each event's parts continue the text).
    GeminiText,
    /// A Bedrock content block's text, tool input (JSON) and reasoning deltas.
    BedrockText,
    BedrockJson,
    BedrockReasoning,
}

impl Field {
    fn json(self) -> bool {
        matches!(
            self,
            Field::ChatToolArgs | Field::ChatFunctionArgs | Field::RespArgs | Field::AnthJson | Field::BedrockJson
        )
    }

    /// Anthropic delta type and its text field.
    fn anthropic(self) -> (&'static str, &'static str) {
        match self {
            Field::AnthJson => ("input_json_delta", "partial_json"),
            Field::AnthThinking => ("thinking_delta", "thinking"),
            _ => ("text_delta", "text"),
        }
    }

    fn anthropic_from(delta_type: &str) -> Option<Field> {
        match delta_type {
            "text_delta" => Some(Field::AnthText),
            "input_json_delta" => Some(Field::AnthJson),
            "thinking_delta" => Some(Field::AnthThinking),
            _ => None,
        }
    }

    /// Responses API delta event type for this field.
    fn responses_type(self) -> &'static str {
        match self {
            Field::RespRefusal => "response.refusal.delta",
            Field::RespArgs => "response.function_call_arguments.delta",
            Field::RespReasoningSummary => "response.reasoning_summary_text.delta",
            _ => "response.output_text.delta",
        }
    }

    fn responses_from(event_type: &str) -> Option<Field> {
        match event_type {
            "response.output_text.delta" => Some(Field::RespText),
            "response.refusal.delta" => Some(Field::RespRefusal),
            "response.function_call_arguments.delta" => Some(Field::RespArgs),
            "response.reasoning_summary_text.delta" => Some(Field::RespReasoningSummary),
            _ => None,
        }
    }
}

/// A channel: its field and up to two indexes (choice + tool call, output +
/// content part, content block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    field: Field,
    a: u64,
    b: u64,
}

/// A channel that currently holds text.
#[derive(Debug, Clone)]
struct Held {
    key: Key,
    restorer: TextRestorer,
    /// Responses API `item_id`, for a synthesized delta.
    item_id: Option<String>,
    /// Output guard window: restored text not yet released.
    win: String,
    /// How much of `win` moderation has judged.
    judged: usize,
}

/// Restores placeholders in one streamed response of a given API.
#[derive(Debug, Clone)]
pub struct SseRestorer {
    api: ApiKind,
    /// Only channels holding text; usually empty.
    held: Vec<Held>,
    /// OpenAI chunk fields (`id`, `object`, `created`, `model`) for a
    /// synthesized chunk.
    meta: Option<Map<String, Value>>,
    /// Whether the stream names its events (`event:` lines).
    named: bool,
    /// Optional output guard (only when active).
    guard: Option<Arc<OutputGuard>>,
    /// Set once the guard blocked the stream.
    blocked: Option<String>,
    /// Whether the block error event was written.
    block_sent: bool,
    /// Set once [`SseRestorer::end_with_error`] ended the stream.
    ended: bool,
    /// Entity types / rule ids redacted so far.
    hits: Vec<String>,
    /// Whether plain text deltas take the splicing path ([`fast`]).
    fast: bool,
    /// Whether the stream's end marker came (`[DONE]`, `message_stop`,
    /// `response.completed` ...); see [`SseRestorer::end_of_stream`].
    complete: bool,
}

/// Whether `api`'s streams end with an event of their own, so that a
/// stream without it was cut short.
fn has_end_marker(api: ApiKind) -> bool {
    matches!(
        api,
        ApiKind::OpenAiChat | ApiKind::OpenAiCompletions | ApiKind::AnthropicMessages | ApiKind::OpenAiResponses
    )
}

/// Whether `event` is the end marker of a stream of `api` (by its `event:`
/// name; `[DONE]` for OpenAI's chat and completions).
pub fn is_stream_end(api: ApiKind, event: &SseEvent) -> bool {
    event.is_done() || event.event.as_deref().is_some_and(|kind| is_end_marker(api, kind))
}

/// What ends a stream of `api` that stopped before its end marker: an
/// error event (`upstream_stream_truncated`) and the end marker, so that
/// the client can tell the answer is incomplete. `None` for APIs whose
/// streams have no end marker (Gemini, Bedrock). `named`: whether the
/// stream names its events.
pub fn truncated_stream_ending(api: ApiKind, named: bool) -> Option<Vec<u8>> {
    has_end_marker(api).then(|| {
        let mut out = Vec::new();
        write_error_event(api, named, TRUNCATED_MESSAGE, TRUNCATED_CODE, &mut out);
        out
    })
}

/// Whether an event is one a provider's stream carries: JSON, OpenAI's
/// `[DONE]`, or no data at all (a keep-alive: nothing in it to read).
/// Anything else is never passed on: it ends the stream.
pub fn is_well_formed(event: &SseEvent) -> bool {
    let data = event.data.trim_ascii();
    data.is_empty() || event.is_done() || serde_json::from_str::<serde::de::IgnoredAny>(data).is_ok()
}

/// What an event is, read before it passes on with nothing to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventCheck {
    /// Passes as it came.
    Pass,
    /// Not well formed ([`is_well_formed`]): the stream ends in its place
    /// ([`invalid_event_ending`]).
    Invalid,
    /// The provider's own error: it passes, then the end marker
    /// ([`end_marker`]) and nothing more.
    ProviderError,
}

/// Read an event: see [`EventCheck`].
pub fn check_event(event: &SseEvent) -> EventCheck {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        error: Option<Value>,
        #[serde(default)]
        choices: Option<serde::de::IgnoredAny>,
    }
    let data = event.data.trim_ascii();
    if data.is_empty() || event.is_done() {
        return EventCheck::Pass;
    }
    let named_error = event.event.as_deref() == Some("error");
    match serde_json::from_str::<Probe>(data) {
        Ok(p) if named_error || p.error.as_ref().is_some_and(Value::is_object) && p.choices.is_none() => {
            EventCheck::ProviderError
        }
        Ok(_) => EventCheck::Pass,
        // JSON, but not an object.
        Err(_) if !named_error && serde_json::from_str::<serde::de::IgnoredAny>(data).is_ok() => EventCheck::Pass,
        Err(_) => EventCheck::Invalid,
    }
}

/// The end marker of a stream of `api` (`data: [DONE]` for OpenAI's chat
/// and completions; nothing for the APIs whose last event ends them).
pub fn end_marker(api: ApiKind) -> Vec<u8> {
    let mut out = Vec::new();
    write_end_marker(api, &mut out);
    out
}

/// The bytes that end a stream of `api` at an event that is not well formed
/// ([`is_well_formed`]): one error event and the end marker.
pub fn invalid_event_ending(api: ApiKind, named: bool) -> Vec<u8> {
    error_ending(api, named, INVALID_EVENT_MESSAGE, INVALID_EVENT_CODE)
}

/// One error event in `api`'s shape and the end marker (`named`: the
/// stream names its events).
pub fn error_ending(api: ApiKind, named: bool, message: &str, code: &str) -> Vec<u8> {
    let mut out = Vec::new();
    write_error_event(api, named, message, code, &mut out);
    out
}

const INVALID_EVENT_MESSAGE: &str = "the provider sent an event that is not JSON; the rest of the answer was withheld";
const INVALID_EVENT_CODE: &str = "upstream_invalid_event";

const TRUNCATED_MESSAGE: &str = "the provider's stream ended before the answer was complete";
const TRUNCATED_CODE: &str = "upstream_stream_truncated";

/// Whether the event named `kind` ends a stream of `api`.
fn is_end_marker(api: ApiKind, kind: &str) -> bool {
    match api {
        ApiKind::AnthropicMessages => kind == "message_stop",
        ApiKind::OpenAiResponses => {
            matches!(kind, "response.completed" | "response.failed" | "response.incomplete" | "error")
        }
        _ => false,
    }
}

impl SseRestorer {
    pub fn new(api: ApiKind) -> Self {
        SseRestorer {
            api,
            held: Vec::new(),
            meta: None,
            named: false,
            guard: None,
            blocked: None,
            block_sent: false,
            ended: false,
            hits: Vec::new(),
            fast: true,
            complete: false,
        }
    }

    /// Rewrite every event through the general path (parse, edit,
    /// serialize), never by splicing text slots: for tests and benchmarks
    /// that compare the two.
    #[doc(hidden)]
    pub fn general_path_only(mut self) -> Self {
        self.fast = false;
        self
    }

    /// Also run `guard` over every streamed text channel (after restore).
    /// An inactive guard is ignored. Text is then released only once it is
    /// more than the guard's window behind the newest byte of its channel,
    /// in steps of an eighth of the window (or at the channel's end); see
    /// [`crate::guard`].
    pub fn with_guard(mut self, guard: Arc<OutputGuard>) -> Self {
        self.guard = guard.is_active().then_some(guard);
        self
    }

    /// The entity type or rule id that blocked the stream, once blocked.
    /// After that every event is swallowed (one error event was written).
    pub fn blocked(&self) -> Option<&str> {
        self.blocked.as_deref()
    }

    /// Whether the stream has had its last event: the guard blocked it or
    /// [`SseRestorer::end_with_error`] ended it. Every later event is
    /// swallowed, and the client must get nothing after what was written.
    pub fn is_ended(&self) -> bool {
        self.blocked.is_some() || self.ended
    }

    /// An event passed as it came, once it is known to be well formed.
    fn write_checked(&mut self, map: &MaskMap, event: &SseEvent, out: &mut Vec<u8>) {
        if is_well_formed(event) {
            event.write_to(out);
        } else {
            self.end_with_error(map, INVALID_EVENT_MESSAGE, INVALID_EVENT_CODE, out);
        }
    }

    /// End the stream here, in place of the rest of the answer: text still
    /// held is flushed first (still guarded: a `block` hit in it ends the
    /// stream with the block event instead), then one error event
    /// (`message`, machine-readable `code`) in the API's stream shape,
    /// followed by its end marker (OpenAI chat and completions:
    /// `data: [DONE]`). Nothing is written once the stream has ended.
    pub fn end_with_error(&mut self, map: &MaskMap, message: &str, code: &str, out: &mut Vec<u8>) {
        if self.is_ended() {
            return;
        }
        let start = out.len();
        self.flush_all(map, out);
        if self.blocked.is_some() {
            self.emit_block(out, start);
            return;
        }
        write_error_event(self.api, self.named, message, code, out);
        self.ended = true;
        self.held.clear();
    }

    /// Entity types / rule ids the guard redacted so far (unique, in order
    /// of first hit).
    pub fn guard_hits(&self) -> &[String] {
        &self.hits
    }

    /// After a block was detected while writing to `out` from `start`:
    /// drop what this call wrote and write the single error event.
    fn emit_block(&mut self, out: &mut Vec<u8>, start: usize) {
        if self.block_sent {
            return;
        }
        if let Some(label) = &self.blocked {
            out.truncate(start);
            write_block_event(self.api, self.named, label, out);
            self.block_sent = true;
            self.held.clear();
        }
    }

    /// Whether any channel holds text (nothing is held after [`finish`]).
    ///
    /// [`finish`]: SseRestorer::finish
    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Bytes currently held across all channels.
    pub fn held_bytes(&self) -> usize {
        self.held.iter().map(|h| h.restorer.held().len() + h.win.len()).sum()
    }

    /// Rewrite one event, appending it (preceded by any synthesized delta
    /// events) to `out` in wire form.
    ///
    /// With the output guard on, or text held for restoring, every event is
    /// read: one whose data is not JSON is never passed on (the stream ends
    /// there with an error event, `upstream_invalid_event`), and a
    /// provider's error event is passed on (after the text held before it)
    /// and ends the stream, with the end marker the client's API expects
    /// after it. (Restoring alone passes an event without a placeholder as
    /// it came, unread.)
    pub fn on_event(&mut self, map: &MaskMap, event: &SseEvent, out: &mut Vec<u8>) {
        if self.is_ended() {
            return;
        }
        // A stream that names its events names them all (an event without
        // a name, e.g. one that is not JSON, does not change that).
        self.named |= event.event.is_some();
        if is_stream_end(self.api, event) {
            self.complete = true;
        }
        if self.guard.is_some() && self.api.answers_text() {
            let start = out.len();
            self.rewrite_event(map, event, out);
            self.emit_block(out, start);
            return;
        }
        self.rewrite_event(map, event, out);
    }

    fn rewrite_event(&mut self, map: &MaskMap, event: &SseEvent, out: &mut Vec<u8>) {
        if (map.is_empty() && self.guard.is_none()) || !self.api.answers_text() {
            self.write_checked(map, event, out);
            return;
        }
        if event.is_done() {
            self.flush_all(map, out);
            event.write_to(out);
            return;
        }
        if event.data.trim_ascii().is_empty() {
            event.write_to(out); // a keep-alive
            return;
        }
        if self.guard.is_none() && self.held.is_empty() && !may_contain_placeholder(&event.data) {
            self.write_checked(map, event, out);
            return;
        }
        if self.fast_event(map, event, out) {
            return;
        }
        let Ok(mut v) = serde_json::from_str::<Value>(&event.data) else {
            self.end_with_error(map, INVALID_EVENT_MESSAGE, INVALID_EVENT_CODE, out);
            return;
        };
        if is_error_event(event, &v) {
            // An error ends the answer: the text before it goes first, then
            // the error, then nothing but the end marker.
            self.flush_all(map, out);
            event.write_to(out);
            write_end_marker(self.api, out);
            self.ended = true;
            self.held.clear();
            return;
        }
        let changed = match self.api {
            ApiKind::OpenAiChat | ApiKind::OpenAiCompletions => self.openai_chunk(map, &mut v),
            ApiKind::OpenAiResponses => self.responses_event(map, &mut v, out),
            ApiKind::AnthropicMessages => self.anthropic_event(map, &mut v, out),
            ApiKind::OpenAiEmbeddings
            | ApiKind::GeminiCountTokens
            | ApiKind::GeminiEmbed
            | ApiKind::GeminiBatchEmbed => false,
            ApiKind::GeminiGenerate => self.gemini_event(map, &mut v, out),
            ApiKind::BedrockConverse => self.bedrock_event(map, event.event.as_deref(), &mut v, out),
        };
        match changed.then(|| serde_json::to_string(&v)) {
            Some(Ok(data)) => write_event(out, event.event.as_deref(), event.id.as_deref(), &data),
            _ => event.write_to(out),
        }
    }

    /// End of stream: flush every held channel as a final delta event.
    pub fn finish(&mut self, map: &MaskMap, out: &mut Vec<u8>) {
        if self.is_ended() {
            return;
        }
        let start = out.len();
        self.flush_all(map, out);
        self.emit_block(out, start);
    }

    /// The provider's stream is over: [`SseRestorer::finish`], and when the
    /// API's end marker never came (the stream was cut short) an error event
    /// (`upstream_stream_truncated`) and the end marker, so that the client
    /// can tell the answer is incomplete. Returns whether it was cut short.
    pub fn end_of_stream(&mut self, map: &MaskMap, out: &mut Vec<u8>) -> bool {
        if self.is_ended() {
            return false;
        }
        if has_end_marker(self.api) && !self.complete {
            self.end_with_error(map, TRUNCATED_MESSAGE, TRUNCATED_CODE, out);
            return true;
        }
        self.finish(map, out);
        false
    }

    /// Push `s` through channel `key`, replacing it with the restored text.
    fn channel(&mut self, map: &MaskMap, key: Key, item_id: Option<&str>, s: &mut String) -> bool {
        if self.blocked.is_some() {
            return false;
        }
        let pos = self.held.iter().position(|h| h.key == key);
        if pos.is_none() && self.guard.is_none() && !s.contains(PLACEHOLDER_OPEN) {
            return false;
        }
        let mut h = match pos {
            Some(p) => self.held.remove(p),
            None => Held {
                key,
                restorer: if key.field.json() { TextRestorer::json_fragment() } else { TextRestorer::new() },
                item_id: None,
                win: String::new(),
                judged: 0,
            },
        };
        let mut out = String::with_capacity(s.len());
        h.restorer.push(map, s, &mut out);
        if let Some(g) = &self.guard {
            h.win.push_str(&out);
            match g.release(&mut h.win, &mut h.judged, map, key.field.json(), false, &mut self.hits) {
                Ok(released) => out = released,
                Err(label) => {
                    self.blocked = Some(label);
                    return false;
                }
            }
        }
        if h.restorer.is_holding() || !h.win.is_empty() {
            if let Some(id) = item_id {
                h.item_id = Some(id.to_owned());
            }
            self.held.push(h);
        }
        if out != *s {
            *s = out;
            true
        } else {
            false
        }
    }

    /// Remove and flush the held channels matching `pred`, in order.
    fn take_flushed(&mut self, map: &MaskMap, pred: impl Fn(&Key) -> bool) -> Vec<(Held, String)> {
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.held.len() {
            if pred(&self.held[i].key) {
                let mut h = self.held.remove(i);
                let mut s = String::new();
                h.restorer.flush(map, &mut s);
                if let Some(g) = &self.guard {
                    h.win.push_str(&s);
                    match g.release(&mut h.win, &mut h.judged, map, h.key.field.json(), true, &mut self.hits) {
                        Ok(released) => s = released,
                        Err(label) => {
                            self.blocked.get_or_insert(label);
                            s.clear();
                        }
                    }
                }
                if !s.is_empty() {
                    done.push((h, s));
                }
            } else {
                i += 1;
            }
        }
        done
    }

    fn flush_all(&mut self, map: &MaskMap, out: &mut Vec<u8>) {
        if self.held.is_empty() {
            return;
        }
        let flushed = self.take_flushed(map, |_| true);
        match self.api {
            ApiKind::OpenAiChat | ApiKind::OpenAiCompletions => {
                for (h, s) in flushed {
                    let mut chunk = self.meta.clone().unwrap_or_default();
                    let mut choice = if self.api == ApiKind::OpenAiCompletions {
                        serde_json::json!({"text": "", "index": h.key.a, "logprobs": null, "finish_reason": null})
                    } else {
                        serde_json::json!({"index": h.key.a, "delta": {}, "finish_reason": null})
                    };
                    merge_openai(&mut choice, h.key, &s);
                    chunk.insert("choices".into(), Value::Array(vec![choice]));
                    write_value(out, None, &Value::Object(chunk));
                }
            }
            ApiKind::OpenAiResponses => self.write_responses_deltas(flushed, out),
            ApiKind::AnthropicMessages => self.write_anthropic_deltas(flushed, out),
            ApiKind::GeminiGenerate => self.write_gemini_parts(flushed, out),
            ApiKind::BedrockConverse => self.write_bedrock_deltas(flushed, out),
            ApiKind::OpenAiEmbeddings
            | ApiKind::GeminiCountTokens
            | ApiKind::GeminiEmbed
            | ApiKind::GeminiBatchEmbed => {}
        }
    }

    fn openai_chunk(&mut self, map: &MaskMap, v: &mut Value) -> bool {
        let completions = self.api == ApiKind::OpenAiCompletions;
        let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) else {
            return restore_value(map, v, true);
        };
        let mut changed = false;
        for (pos, choice) in choices.iter_mut().enumerate() {
            let i = choice.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
            let key = |field, b| Key { field, a: i, b };
            if completions {
                if let Some(Value::String(s)) = choice.get_mut("text") {
                    changed |= self.channel(map, key(Field::CompletionText, 0), None, s);
                }
            } else if let Some(delta) = choice.get_mut("delta") {
                for (name, field) in [
                    ("content", Field::ChatContent),
                    ("refusal", Field::ChatRefusal),
                    ("reasoning_content", Field::ChatReasoning),
                ] {
                    if let Some(Value::String(s)) = delta.get_mut(name) {
                        changed |= self.channel(map, key(field, 0), None, s);
                    }
                }
                if let Some(calls) = delta.get_mut("tool_calls").and_then(Value::as_array_mut) {
                    for (j, call) in calls.iter_mut().enumerate() {
                        let j = call.get("index").and_then(Value::as_u64).unwrap_or(j as u64);
                        if let Some(Value::String(s)) = call.get_mut("function").and_then(|f| f.get_mut("arguments")) {
                            changed |= self.channel(map, key(Field::ChatToolArgs, j), None, s);
                        }
                    }
                }
                if let Some(Value::String(s)) = delta.get_mut("function_call").and_then(|f| f.get_mut("arguments")) {
                    changed |= self.channel(map, key(Field::ChatFunctionArgs, 0), None, s);
                }
            }
            if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
                for (h, s) in self.take_flushed(map, |k| k.a == i) {
                    merge_openai(choice, h.key, &s);
                    changed = true;
                }
            }
        }
        if !self.held.is_empty() && self.meta.is_none() {
            let mut meta = Map::new();
            for name in ["id", "object", "created", "model", "system_fingerprint"] {
                if let Some(x) = v.get(name) {
                    meta.insert(name.into(), x.clone());
                }
            }
            self.meta = Some(meta);
        }
        changed
    }

    fn responses_event(&mut self, map: &MaskMap, v: &mut Value, out: &mut Vec<u8>) -> bool {
        let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
        let output = v.get("output_index").and_then(Value::as_u64);
        let part = v.get("content_index").or_else(|| v.get("summary_index")).and_then(Value::as_u64);
        if let Some(field) = Field::responses_from(ty) {
            let key = Key { field, a: output.unwrap_or(0), b: part.unwrap_or(0) };
            let item_id = v.get("item_id").and_then(Value::as_str).map(str::to_owned);
            if let Some(Value::String(s)) = v.get_mut("delta") {
                return self.channel(map, key, item_id.as_deref(), s);
            }
            return false;
        }
        if !self.held.is_empty() {
            let flushed = match output {
                Some(o) => self.take_flushed(map, |k| k.a == o && part.is_none_or(|p| k.b == p)),
                None => self.take_flushed(map, |_| true),
            };
            self.write_responses_deltas(flushed, out);
        }
        let mut changed = restore_value(map, v, true);
        if let Some(g) = &self.guard {
            match guard_responses_value(g, map, v, &mut self.hits) {
                Ok(c) => changed |= c,
                Err(label) => {
                    self.blocked.get_or_insert(label);
                }
            }
        }
        changed
    }

    fn write_responses_deltas(&self, flushed: Vec<(Held, String)>, out: &mut Vec<u8>) {
        for (h, s) in flushed {
            let ty = h.key.field.responses_type();
            let mut m = Map::new();
            m.insert("type".into(), Value::from(ty));
            if let Some(id) = h.item_id {
                m.insert("item_id".into(), Value::from(id));
            }
            m.insert("output_index".into(), Value::from(h.key.a));
            match h.key.field {
                Field::RespArgs => {}
                Field::RespReasoningSummary => {
                    m.insert("summary_index".into(), Value::from(h.key.b));
                }
                _ => {
                    m.insert("content_index".into(), Value::from(h.key.b));
                }
            }
            m.insert("delta".into(), Value::from(s));
            write_value(out, self.named.then_some(ty), &Value::Object(m));
        }
    }

    fn anthropic_event(&mut self, map: &MaskMap, v: &mut Value, out: &mut Vec<u8>) -> bool {
        let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
        let index = v.get("index").and_then(Value::as_u64);
        match ty {
            "content_block_delta" => {
                let index = index.unwrap_or(0);
                let Some(delta) = v.get_mut("delta") else { return false };
                let Some(field) = delta.get("type").and_then(Value::as_str).and_then(Field::anthropic_from) else {
                    return restore_value(map, delta, false);
                };
                let name = field.anthropic().1;
                match delta.get_mut(name) {
                    Some(Value::String(s)) => self.channel(map, Key { field, a: index, b: 0 }, None, s),
                    _ => false,
                }
            }
            "content_block_stop" => {
                if let Some(i) = index {
                    let flushed = self.take_flushed(map, |k| k.a == i);
                    self.write_anthropic_deltas(flushed, out);
                }
                false
            }
            _ => {
                if matches!(ty, "message_delta" | "message_stop" | "error") {
                    self.flush_all(map, out);
                }
                restore_value(map, v, false)
            }
        }
    }

    /// A Gemini stream event: each candidate's text parts go through the
    /// candidate's text channel (a placeholder may be split across events);
    /// function calls arrive whole and are restored in place. The event
    /// with a candidate's `finishReason` also carries whatever its channels
    /// still hold, as text parts at its end.
    fn gemini_event(&mut self, map: &MaskMap, v: &mut Value, _out: &mut Vec<u8>) -> bool {
        let Some(candidates) = v.get_mut("candidates").and_then(Value::as_array_mut) else {
            return restore_value(map, v, false);
        };
        let mut changed = false;
        for (pos, cand) in candidates.iter_mut().enumerate() {
            let i = cand.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
            let ends = cand.get("finishReason").is_some();
            let Some(content) = cand.get_mut("content") else { continue };
            let parts = content.get_mut("parts").and_then(Value::as_array_mut);
            for part in parts.into_iter().flatten() {
                let thought = part.get("thought").and_then(Value::as_bool) == Some(true);
                match part.get_mut("text") {
                    Some(Value::String(s)) => {
                        let key = Key { field: Field::GeminiText, a: i, b: u64::from(thought) };
                        changed |= self.channel(map, key, None, s);
                    }
                    _ => changed |= restore_value(map, part, false),
                }
            }
            if ends {
                let flushed = self.take_flushed(map, |k| k.a == i);
                if let (false, Some(obj)) = (flushed.is_empty(), content.as_object_mut()) {
                    let parts = obj.entry("parts").or_insert_with(|| Value::Array(Vec::new()));
                    if let Some(parts) = parts.as_array_mut() {
                        for (h, s) in flushed {
                            parts.push(gemini_part(h.key, s));
                        }
                        changed = true;
                    }
                }
            }
        }
        changed
    }

    fn write_gemini_parts(&self, flushed: Vec<(Held, String)>, out: &mut Vec<u8>) {
        for (h, s) in flushed {
            let event = serde_json::json!({
                "candidates": [{"content": {"role": "model", "parts": [gemini_part(h.key, s)]}, "index": h.key.a}]
            });
            write_value(out, None, &event);
        }
    }

    /// A Bedrock ConverseStream event (the filter hands each frame over as
    /// an event named by its `:event-type`): `contentBlockDelta` text, tool
    /// input and reasoning go through the block's channels; a block's
    /// `contentBlockStop`, and `messageStop` / `metadata`, first release
    /// what the channels hold.
    fn bedrock_event(&mut self, map: &MaskMap, name: Option<&str>, v: &mut Value, out: &mut Vec<u8>) -> bool {
        let index = v.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
        match name.unwrap_or("") {
            "contentBlockDelta" => {
                let Some(delta) = v.get_mut("delta") else { return false };
                let mut changed = false;
                for (pointer, field) in [
                    ("/text", Field::BedrockText),
                    ("/toolUse/input", Field::BedrockJson),
                    ("/reasoningContent/text", Field::BedrockReasoning),
                ] {
                    if let Some(Value::String(s)) = delta.pointer_mut(pointer) {
                        changed |= self.channel(map, Key { field, a: index, b: 0 }, None, s);
                    }
                }
                changed
            }
            "contentBlockStop" => {
                let flushed = self.take_flushed(map, |k| k.a == index);
                self.write_bedrock_deltas(flushed, out);
                false
            }
            other => {
                if matches!(other, "messageStop" | "metadata") || other.starts_with("exception:") {
                    self.flush_all(map, out);
                }
                restore_value(map, v, false)
            }
        }
    }

    fn write_bedrock_deltas(&self, flushed: Vec<(Held, String)>, out: &mut Vec<u8>) {
        for (h, s) in flushed {
            let delta = match h.key.field {
                Field::BedrockJson => serde_json::json!({"toolUse": {"input": s}}),
                Field::BedrockReasoning => serde_json::json!({"reasoningContent": {"text": s}}),
                _ => serde_json::json!({"text": s}),
            };
            let event = serde_json::json!({"contentBlockIndex": h.key.a, "delta": delta});
            write_value(out, Some("contentBlockDelta"), &event);
        }
    }

    fn write_anthropic_deltas(&self, flushed: Vec<(Held, String)>, out: &mut Vec<u8>) {
        for (h, s) in flushed {
            let (delta_type, name) = h.key.field.anthropic();
            let mut delta = Map::new();
            delta.insert("type".into(), Value::from(delta_type));
            delta.insert(name.into(), Value::from(s));
            let mut m = Map::new();
            m.insert("type".into(), Value::from("content_block_delta"));
            m.insert("index".into(), Value::from(h.key.a));
            m.insert("delta".into(), Value::Object(delta));
            write_value(out, self.named.then_some("content_block_delta"), &Value::Object(m));
        }
    }
}

/// The event name a Bedrock exception frame takes while the filter inspects
/// a stream: `exception:<:exception-type>`.
pub const BEDROCK_EXCEPTION: &str = "exception:";

/// A Gemini text part holding released text `s` of channel `key`.
fn gemini_part(key: Key, s: String) -> Value {
    if key.b == 1 {
        serde_json::json!({"text": s, "thought": true})
    } else {
        serde_json::json!({"text": s})
    }
}

/// Add flushed text `s` of channel `key` to an OpenAI choice object.
fn merge_openai(choice: &mut Value, key: Key, s: &str) {
    let slot = match key.field {
        Field::CompletionText => child(choice, "text"),
        Field::ChatRefusal => child(child(choice, "delta"), "refusal"),
        Field::ChatReasoning => child(child(choice, "delta"), "reasoning_content"),
        Field::ChatFunctionArgs => child(child(child(choice, "delta"), "function_call"), "arguments"),
        Field::ChatToolArgs => {
            let calls = child(child(choice, "delta"), "tool_calls");
            if !calls.is_array() {
                *calls = Value::Array(Vec::new());
            }
            let Value::Array(items) = calls else { return };
            let found = items.iter().position(|c| c.get("index").and_then(Value::as_u64) == Some(key.b));
            match found {
                Some(p) => child(child(&mut items[p], "function"), "arguments"),
                None => {
                    items.push(serde_json::json!({"index": key.b, "function": {"arguments": s}}));
                    return;
                }
            }
        }
        _ => child(child(choice, "delta"), "content"),
    };
    match slot {
        Value::String(x) => x.push_str(s),
        other => *other = Value::from(s),
    }
}

/// The value under `key` in `v`, making `v` an object and inserting null
/// when needed.
fn child<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m.entry(key).or_insert(Value::Null),
        other => other,
    }
}

fn write_value(out: &mut Vec<u8>, event: Option<&str>, v: &Value) {
    if let Ok(data) = serde_json::to_string(v) {
        write_event(out, event, None, &data);
    }
}

/// An event in wire form; `data` is compact JSON (no line breaks).
fn write_event(out: &mut Vec<u8>, event: Option<&str>, id: Option<&str>, data: &str) {
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
}
/// An in-stream error: OpenAI's `{"error": ...}` chunk or Anthropic's `error` event.
fn is_error_event(event: &SseEvent, v: &Value) -> bool {
    event.event.as_deref() == Some("error")
        || event.event.as_deref().is_some_and(|e| e.starts_with(BEDROCK_EXCEPTION))
        || v.get("error").is_some_and(Value::is_object) && v.get("choices").is_none()
}
