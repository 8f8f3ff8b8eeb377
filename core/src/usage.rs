//! Token usage from provider responses, whole (JSON) and streamed (SSE).
//!
//! Field mapping:
//!
//! | API | input | output | cached | total |
//! |---|---|---|---|---|
//! | OpenAI chat, completions | `prompt_tokens` | `completion_tokens` | `prompt_tokens_details.cached_tokens` | `total_tokens` |
//! | OpenAI embeddings | `prompt_tokens` | 0 | 0 | `total_tokens` |
//! | OpenAI responses | `input_tokens` | `output_tokens` | `input_tokens_details.cached_tokens` | `total_tokens` |
//! | Anthropic messages | `input_tokens + cache_read_input_tokens + cache_creation_input_tokens` | `output_tokens` | `cache_read_input_tokens` | input + output |
//! | Gemini `generateContent` (`usageMetadata`) | `promptTokenCount + toolUsePromptTokenCount` | `candidatesTokenCount + thoughtsTokenCount` | `cachedContentTokenCount` | `totalTokenCount` |
//! | Gemini `countTokens` (free) | 0 | 0 | 0 | 0 |
//! | Gemini `embedContent`, `batchEmbedContents` | `usageMetadata.promptTokenCount` when sent (else the gateway's estimate) | 0 | 0 | input |
//! | Bedrock Converse (`usage`) | `inputTokens + cacheReadInputTokens + cacheWriteInputTokens` | `outputTokens` | `cacheReadInputTokens` | input + output |
//!
//! The OpenAI-family APIs accept either naming (`prompt_tokens` or
//! `input_tokens` ...), since OpenAI-compatible servers mix them; a missing
//! `total_tokens` is input + output. Anthropic reports `input_tokens` as only
//! the uncached part of the prompt; Tollgate's `input_tokens` is the whole
//! prompt (uncached + read from cache + written to cache) so that it means the
//! same thing for every provider, and `cached_tokens` is the part read from
//! cache. Cache writes are counted in `input_tokens` and not reported apart.

use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::api::{ApiFamily, ApiKind};
use crate::error::Error;
use crate::sse::SseEvent;

/// Tokens one request consumed. See the module docs for the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// All prompt tokens, cached or not.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The part of `input_tokens` served from the provider's prompt cache.
    pub cached_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    /// Usage from counters that report cache reads and writes apart from
    /// the uncached input (Anthropic, Bedrock): all three make the input,
    /// the reads are its cached part.
    fn with_cache(uncached: Option<u64>, read: Option<u64>, written: Option<u64>, output: Option<u64>) -> Usage {
        let cached = read.unwrap_or(0);
        let input = uncached.unwrap_or(0).saturating_add(cached).saturating_add(written.unwrap_or(0));
        let output = output.unwrap_or(0);
        Usage {
            input_tokens: input,
            output_tokens: output,
            cached_tokens: cached,
            total_tokens: input.saturating_add(output),
        }
    }
}

/// Just the `usage` member; every other member is skipped without being
/// materialized (embedding vectors can be megabytes).
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    usage: Option<Value>,
    /// Gemini's name for it.
    #[serde(default, rename = "usageMetadata")]
    usage_metadata: Option<Value>,
}

impl Envelope {
    fn take(self) -> Option<Value> {
        self.usage.or(self.usage_metadata)
    }
}

/// A responses-API stream event: usage sits in `response.usage`.
#[derive(Deserialize)]
struct ResponsesEvent {
    #[serde(default)]
    response: Option<Envelope>,
}

/// An Anthropic stream event: `message_start` has `message.usage`,
/// `message_delta` has `usage`.
#[derive(Deserialize)]
struct AnthropicEvent {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<Envelope>,
    #[serde(default)]
    usage: Option<Value>,
}

/// Usage from a complete (non-streamed) response body. `Ok(None)` when the
/// body is JSON without a usage object (error bodies, for instance);
/// `Err(InvalidJson)` when it is not JSON.
pub fn usage_from_json(api: ApiKind, body: &[u8]) -> Result<Option<Usage>, Error> {
    let json_err = |e: serde_json::Error| Error::InvalidJson(e.to_string());
    if !starts_with_brace(body) {
        // Not an object: validate it, but it carries no usage.
        serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(json_err)?;
        return Ok(None);
    }
    let env: Envelope = serde_json::from_slice(body).map_err(json_err)?;
    if api == ApiKind::GeminiCountTokens {
        // Counting tokens is free: it spends none.
        return Ok(Some(Usage::default()));
    }
    Ok(env.take().as_ref().and_then(|u| usage_object(api, u)))
}

/// Usage from an already parsed response body.
pub fn usage_from_value(api: ApiKind, response: &Value) -> Option<Usage> {
    let key = if api.family() == ApiFamily::Gemini { "usageMetadata" } else { "usage" };
    usage_object(api, response.get(key)?)
}

/// Usage from a provider's `usage` object itself.
pub fn usage_object(api: ApiKind, usage: &Value) -> Option<Usage> {
    let u = usage.as_object()?;
    match api.family() {
        ApiFamily::OpenAi => openai_usage(u),
        ApiFamily::Anthropic => {
            let mut raw = AnthropicRaw::default();
            raw.merge(u);
            raw.usage()
        }
        ApiFamily::Gemini => gemini_usage(u),
        ApiFamily::Bedrock => BedrockRaw::of(usage).usage(),
    }
}

fn gemini_usage(u: &Map<String, Value>) -> Option<Usage> {
    let prompt = num(u, "promptTokenCount");
    let candidates = num(u, "candidatesTokenCount");
    let total = num(u, "totalTokenCount");
    if prompt.is_none() && candidates.is_none() && total.is_none() {
        return None;
    }
    let input = prompt.unwrap_or(0).saturating_add(num(u, "toolUsePromptTokenCount").unwrap_or(0));
    let output = candidates.unwrap_or(0).saturating_add(num(u, "thoughtsTokenCount").unwrap_or(0));
    Some(Usage {
        input_tokens: input,
        output_tokens: output,
        cached_tokens: num(u, "cachedContentTokenCount").unwrap_or(0),
        total_tokens: total.unwrap_or(input.saturating_add(output)),
    })
}

fn starts_with_brace(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn num(obj: &Map<String, Value>, key: &str) -> Option<u64> {
    obj.get(key).and_then(Value::as_u64)
}

fn openai_usage(u: &Map<String, Value>) -> Option<Usage> {
    let input = num(u, "prompt_tokens").or_else(|| num(u, "input_tokens"));
    let output = num(u, "completion_tokens").or_else(|| num(u, "output_tokens"));
    let total = num(u, "total_tokens");
    if input.is_none() && output.is_none() && total.is_none() {
        return None;
    }
    let cached = ["prompt_tokens_details", "input_tokens_details"]
        .iter()
        .find_map(|k| u.get(*k).and_then(Value::as_object).and_then(|d| num(d, "cached_tokens")))
        .unwrap_or(0);
    let (input, output) = (input.unwrap_or(0), output.unwrap_or(0));
    Some(Usage {
        input_tokens: input,
        output_tokens: output,
        cached_tokens: cached,
        total_tokens: total.unwrap_or(input.saturating_add(output)),
    })
}

/// Anthropic's counters as reported; fields seen later replace earlier ones.
#[derive(Debug, Clone, Copy, Default)]
struct AnthropicRaw {
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_creation: Option<u64>,
}

impl AnthropicRaw {
    fn merge(&mut self, u: &Map<String, Value>) {
        let fields = [
            (&mut self.input, "input_tokens"),
            (&mut self.output, "output_tokens"),
            (&mut self.cache_read, "cache_read_input_tokens"),
            (&mut self.cache_creation, "cache_creation_input_tokens"),
        ];
        for (slot, key) in fields {
            if let Some(n) = num(u, key) {
                *slot = Some(n);
            }
        }
    }

    fn usage(&self) -> Option<Usage> {
        if self.input.is_none() && self.output.is_none() && self.cache_read.is_none() && self.cache_creation.is_none() {
            return None;
        }
        Some(Usage::with_cache(self.input, self.cache_read, self.cache_creation, self.output))
    }
}

/// Bedrock's counters, merged as they arrive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BedrockRaw {
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_write: Option<u64>,
}

impl BedrockRaw {
    /// The counters of a Converse `usage` object.
    pub(crate) fn of(usage: &Value) -> BedrockRaw {
        let num = |k: &str| usage.get(k).and_then(Value::as_u64);
        BedrockRaw {
            input: num("inputTokens"),
            output: num("outputTokens"),
            cache_read: num("cacheReadInputTokens"),
            cache_write: num("cacheWriteInputTokens"),
        }
    }

    /// The usage they make; `None` when no counter was reported.
    pub(crate) fn usage(self) -> Option<Usage> {
        if self == BedrockRaw::default() {
            return None;
        }
        Some(Usage::with_cache(self.input, self.cache_read, self.cache_write, self.output))
    }
}

/// Usage accumulated from a response stream, one event at a time.
///
/// - OpenAI chat / completions: the (last) chunk with a non-null `usage`,
///   sent when the request set `stream_options.include_usage`.
/// - OpenAI responses: `response.usage` of `response.completed` (or
///   `response.incomplete` / `response.failed`).
/// - Anthropic: `message_start`'s `message.usage`, then each
///   `message_delta`'s `usage` (cumulative `output_tokens`; input and cache
///   counters replace the earlier ones when present).
/// - Gemini: the last event's `usageMetadata` (each is cumulative).
///
/// Events that are not JSON, or lack usage, are ignored.
#[derive(Debug)]
pub struct StreamUsage {
    api: ApiKind,
    usage: Option<Usage>,
    anthropic: AnthropicRaw,
}

impl StreamUsage {
    pub fn new(api: ApiKind) -> Self {
        StreamUsage { api, usage: None, anthropic: AnthropicRaw::default() }
    }

    pub fn observe(&mut self, event: &SseEvent) {
        let data = event.data.as_bytes();
        if self.api.family() == ApiFamily::Gemini {
            if starts_with_brace(data) && memchr::memmem::find(data, b"\"usageMetadata\"").is_some() {
                if let Some(u) = serde_json::from_slice::<Envelope>(data).ok().and_then(Envelope::take) {
                    if let Some(usage) = usage_object(self.api, &u) {
                        self.usage = Some(usage);
                    }
                }
            }
            return;
        }
        // Cheap filter: most events (content deltas) carry no usage at all,
        // or `"usage":null` (OpenAI, on every chunk of a stream asked for it).
        if !starts_with_brace(data) || !has_usage_object(data) {
            return;
        }
        match self.api {
            ApiKind::OpenAiChat | ApiKind::OpenAiCompletions | ApiKind::OpenAiEmbeddings => {
                if let Some(u) = serde_json::from_slice::<Envelope>(data).ok().and_then(|e| e.usage) {
                    if let Some(usage) = usage_object(self.api, &u) {
                        self.usage = Some(usage);
                    }
                }
            }
            ApiKind::OpenAiResponses => {
                if let Some(u) =
                    serde_json::from_slice::<ResponsesEvent>(data).ok().and_then(|e| e.response).and_then(|e| e.usage)
                {
                    if let Some(usage) = usage_object(self.api, &u) {
                        self.usage = Some(usage);
                    }
                }
            }
            // Gemini's were read above; Bedrock streams are not SSE: their
            // usage is the translator's.
            ApiKind::GeminiGenerate
            | ApiKind::GeminiCountTokens
            | ApiKind::GeminiEmbed
            | ApiKind::GeminiBatchEmbed
            | ApiKind::BedrockConverse => {}
            ApiKind::AnthropicMessages => {
                let Ok(ev) = serde_json::from_slice::<AnthropicEvent>(data) else { return };
                let kind = ev.kind.as_deref().or(event.event.as_deref());
                let usage = match kind {
                    Some("message_start") => ev.message.and_then(|m| m.usage),
                    Some("message_delta") => ev.usage,
                    _ => None,
                };
                if let Some(Value::Object(u)) = usage {
                    self.anthropic.merge(&u);
                }
            }
        }
    }

    /// The usage seen so far; `None` until an event carried some.
    pub fn usage(&self) -> Option<Usage> {
        match self.api.family() {
            ApiFamily::OpenAi | ApiFamily::Gemini | ApiFamily::Bedrock => self.usage,
            ApiFamily::Anthropic => self.anthropic.usage(),
        }
    }
}

/// Whether the JSON text has a `"usage"` key whose value is an object: a
/// byte search, so that the events without one are not parsed. (Inside a
/// JSON string a quote is escaped, so `"usage"` followed by `:` is a key.)
fn has_usage_object(data: &[u8]) -> bool {
    // Built once: building a searcher costs more than searching one event.
    static KEY: LazyLock<memchr::memmem::Finder<'static>> = LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));
    KEY.find_iter(data).any(|at| {
        let mut rest = data[at + 7..].iter().copied().skip_while(u8::is_ascii_whitespace);
        rest.next() == Some(b':') && rest.find(|b| !b.is_ascii_whitespace()) == Some(b'{')
    })
}

/// Ask an OpenAI stream for its usage: when a streamed chat/completions
/// request lacks `stream_options.include_usage`, set it and return `true`;
/// the caller must then drop the extra usage chunk ([`is_usage_only_chunk`])
/// so the client sees the stream it asked for.
pub fn request_stream_usage(api: ApiKind, json: &mut Value) -> bool {
    if !matches!(api, ApiKind::OpenAiChat | ApiKind::OpenAiCompletions) {
        return false;
    }
    let Some(obj) = json.as_object_mut() else { return false };
    if obj.get("stream").and_then(Value::as_bool) != Some(true) {
        return false;
    }
    let options = obj.entry("stream_options").or_insert_with(|| Value::Object(Default::default()));
    if options.is_null() {
        // `stream_options: null` (what SDKs send for "not set").
        *options = Value::Object(Default::default());
    }
    let Some(options) = options.as_object_mut() else { return false };
    if options.get("include_usage").and_then(Value::as_bool) == Some(true) {
        return false;
    }
    options.insert("include_usage".into(), Value::Bool(true));
    true
}

/// The OpenAI chunk that only carries usage (`choices: []`, `usage: {...}`),
/// sent last when `include_usage` is set.
pub fn is_usage_only_chunk(event: &SseEvent) -> bool {
    if !has_usage_object(event.data.as_bytes()) {
        return false;
    }
    serde_json::from_str::<Value>(&event.data)
        .is_ok_and(|v| v["usage"].is_object() && v["choices"].as_array().is_some_and(Vec::is_empty))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn u(input: u64, output: u64, cached: u64, total: u64) -> Usage {
        Usage { input_tokens: input, output_tokens: output, cached_tokens: cached, total_tokens: total }
    }

    fn data(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent { event: event.map(Into::into), data: data.into(), id: None }
    }

    #[test]
    fn only_events_with_a_usage_object_are_parsed_for_it() {
        assert!(has_usage_object(br#"{"choices":[],"usage":{"prompt_tokens":1}}"#));
        assert!(has_usage_object(br#"{"usage" :  {"prompt_tokens":1}}"#));
        assert!(has_usage_object(br#"{"message":{"usage":{"input_tokens":3}}}"#));
        assert!(has_usage_object(br#"{"a":"usage","usage":{}}"#));
        assert!(!has_usage_object(br#"{"choices":[{"delta":{"content":"x"}}],"usage":null}"#));
        assert!(!has_usage_object(br#"{"choices":[{"delta":{"content":"the \"usage\": {1}"}}]}"#));
        assert!(!has_usage_object(br#"{"content":"usage"}"#));
        assert!(!has_usage_object(br#"{"usage""#));
        // A stream asked for its usage: `"usage":null` on every chunk, the numbers on the last.
        let mut s = StreamUsage::new(ApiKind::OpenAiChat);
        s.observe(&data(None, r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}"#));
        assert_eq!(s.usage(), None);
        assert!(!is_usage_only_chunk(&data(None, r#"{"choices":[],"usage":null}"#)));
        let last = data(None, r#"{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":1,"total_tokens":5}}"#);
        assert!(is_usage_only_chunk(&last));
        s.observe(&last);
        assert_eq!(s.usage(), Some(u(4, 1, 0, 5)));
    }

    #[test]
    fn openai_chat_json() {
        let body = br#"{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,
            "prompt_tokens_details":{"cached_tokens":4}}}"#;
        assert_eq!(usage_from_json(ApiKind::OpenAiChat, body).unwrap(), Some(u(10, 5, 4, 15)));
        // Missing total is computed; null details tolerated.
        let body = br#"{"usage":{"prompt_tokens":3,"completion_tokens":2,"prompt_tokens_details":null}}"#;
        assert_eq!(usage_from_json(ApiKind::OpenAiCompletions, body).unwrap(), Some(u(3, 2, 0, 5)));
    }

    #[test]
    fn embeddings_and_responses_json() {
        let body = br#"{"data":[{"embedding":[0.1,0.2]}],"usage":{"prompt_tokens":7,"total_tokens":7}}"#;
        assert_eq!(usage_from_json(ApiKind::OpenAiEmbeddings, body).unwrap(), Some(u(7, 0, 0, 7)));
        let body = br#"{"object":"response","usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":8},
            "output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123}}"#;
        assert_eq!(usage_from_json(ApiKind::OpenAiResponses, body).unwrap(), Some(u(36, 87, 8, 123)));
    }

    #[test]
    fn anthropic_json_sums_cache_into_input() {
        let body = br#"{"type":"message","usage":{"input_tokens":100,"cache_creation_input_tokens":20,
            "cache_read_input_tokens":30,"output_tokens":7}}"#;
        assert_eq!(usage_from_json(ApiKind::AnthropicMessages, body).unwrap(), Some(u(150, 7, 30, 157)));
        let body = br#"{"usage":{"input_tokens":1,"cache_creation_input_tokens":null,"output_tokens":2}}"#;
        assert_eq!(usage_from_json(ApiKind::AnthropicMessages, body).unwrap(), Some(u(1, 2, 0, 3)));
    }

    #[test]
    fn no_usage_and_invalid_json() {
        for api in ApiKind::ALL {
            if api == ApiKind::GeminiCountTokens {
                // Free, whatever the answer.
                assert_eq!(usage_from_json(api, br#"{"error":{"message":"x"}}"#).unwrap(), Some(Usage::default()));
                assert!(matches!(usage_from_json(api, b"nope"), Err(Error::InvalidJson(_))));
                continue;
            }
            assert_eq!(usage_from_json(api, br#"{"error":{"message":"x"}}"#).unwrap(), None);
            assert_eq!(usage_from_json(api, br#"{"usage":null}"#).unwrap(), None);
            assert_eq!(usage_from_json(api, br#"{"usage":{}}"#).unwrap(), None);
            assert_eq!(usage_from_json(api, br#"[{"prompt_tokens":1,"input_tokens":1}]"#).unwrap(), None);
            assert!(matches!(usage_from_json(api, b"{\"usage\":"), Err(Error::InvalidJson(_))));
            assert!(matches!(usage_from_json(api, b"nope"), Err(Error::InvalidJson(_))));
            assert!(matches!(usage_from_json(api, b""), Err(Error::InvalidJson(_))));
        }
    }

    #[test]
    fn value_helpers() {
        let v = serde_json::json!({"usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}});
        assert_eq!(usage_from_value(ApiKind::OpenAiChat, &v), Some(u(2, 3, 0, 5)));
        assert_eq!(usage_from_value(ApiKind::OpenAiChat, &serde_json::json!({})), None);
        assert_eq!(usage_object(ApiKind::AnthropicMessages, &serde_json::json!(5)), None);
    }

    #[test]
    fn openai_stream_takes_last_usage_chunk() {
        let mut s = StreamUsage::new(ApiKind::OpenAiChat);
        s.observe(&data(None, r#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#));
        assert_eq!(s.usage(), None);
        s.observe(&data(
            None,
            r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":100,"total_tokens":112}}"#,
        ));
        s.observe(&data(None, "[DONE]"));
        assert_eq!(s.usage(), Some(u(12, 100, 0, 112)));
    }

    #[test]
    fn responses_stream_completed_event() {
        let mut s = StreamUsage::new(ApiKind::OpenAiResponses);
        s.observe(&data(Some("response.created"), r#"{"type":"response.created","response":{"id":"r","usage":null}}"#));
        s.observe(&data(
            Some("response.output_text.delta"),
            r#"{"type":"response.output_text.delta","delta":"usage"}"#,
        ));
        assert_eq!(s.usage(), None);
        s.observe(&data(
            Some("response.completed"),
            r#"{"type":"response.completed","response":{"id":"r","output":[],"usage":{"input_tokens":9,"input_tokens_details":{"cached_tokens":1},"output_tokens":4,"total_tokens":13}}}"#,
        ));
        assert_eq!(s.usage(), Some(u(9, 4, 1, 13)));
    }

    #[test]
    fn anthropic_stream_start_then_delta() {
        let mut s = StreamUsage::new(ApiKind::AnthropicMessages);
        s.observe(&data(
            Some("message_start"),
            r#"{"type":"message_start","message":{"usage":{"input_tokens":10,"cache_read_input_tokens":5,"cache_creation_input_tokens":2,"output_tokens":1}}}"#,
        ));
        assert_eq!(s.usage(), Some(u(17, 1, 5, 18)));
        s.observe(&data(Some("content_block_delta"), r#"{"type":"content_block_delta","delta":{"text":"\"usage\""}}"#));
        s.observe(&data(Some("message_delta"), r#"{"type":"message_delta","usage":{"output_tokens":30}}"#));
        assert_eq!(s.usage(), Some(u(17, 30, 5, 47)));
        // A later delta may restate the input side.
        s.observe(&data(
            Some("message_delta"),
            r#"{"type":"message_delta","usage":{"input_tokens":11,"output_tokens":31}}"#,
        ));
        assert_eq!(s.usage(), Some(u(18, 31, 5, 49)));
    }

    #[test]
    fn malformed_events_are_ignored() {
        for api in ApiKind::ALL {
            let mut s = StreamUsage::new(api);
            for d in [
                "",
                "[DONE]",
                "{\"usage\":",
                "{\"usage\":\"lots\"}",
                "{\"usage\":[1,2]}",
                "{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":-1}}",
                "{\"type\":\"message_start\",\"message\":\"usage\"}",
                "{\"response\":{\"usage\":7}}",
                "\u{FFFD}\"usage\"",
            ] {
                s.observe(&data(Some("message_delta"), d));
            }
            assert_eq!(s.usage(), None, "{api:?}");
        }
    }
}
