//! Provider translation: serve a client of one API family from a model of the
//! other. One file per direction, named client-to-provider:
//!
//! - [`openai_to_anthropic`]: an OpenAI Chat Completions client served by an
//!   Anthropic Messages model;
//! - [`anthropic_to_openai`]: an Anthropic Messages client served by an OpenAI
//!   chat model;
//! - [`openai_to_gemini`]: an OpenAI Chat Completions client served by a
//!   Gemini model (the Gemini API or Vertex AI);
//! - [`openai_to_bedrock`]: an OpenAI Chat Completions client served by a
//!   Bedrock model through the Converse API (its stream is an AWS event
//!   stream, translated from bytes: [`StreamTranslation::push_bytes`]).
//!
//! - [`anthropic_on_bedrock`]: an Anthropic Messages client served by Claude
//!   on Bedrock through InvokeModel: the same request and answer in Bedrock's
//!   envelope (the stream's frames unwrapped into Anthropic's events).
//!
//! An Anthropic Messages client served by any other Gemini or Bedrock model goes
//! through the OpenAI shape: its request is translated to OpenAI's, then to
//! the provider's, and the answer back the same way (both steps are the
//! tested one-way translations above; what the first refuses is refused).
//!
//! Each direction has the same three parts: `request` (client request to
//! provider request), `response` and `error` (provider body back to the
//! client's shape) and a `StreamTranslator` (provider SSE events to client
//! SSE events, one event at a time). [`Direction`] picks the pair and
//! dispatches to it; [`StreamTranslation`] wraps the stream translators.
//!
//! Nothing here reads the clock: OpenAI's `created` field is `0` in
//! translated responses and chunks.

use serde_json::{json, Map, Value};

use crate::api::{ApiFamily, ApiKind};
use crate::error::{error_body, Error};
use crate::sse::SseEvent;

pub mod anthropic_on_bedrock;
pub mod anthropic_to_openai;
mod openai_request;
pub mod openai_to_anthropic;
pub mod openai_to_bedrock;
pub mod openai_to_gemini;

/// Which way a request is translated, named client-to-provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// An OpenAI Chat Completions client, an Anthropic Messages provider.
    OpenAiToAnthropic,
    /// An Anthropic Messages client, an OpenAI chat provider.
    AnthropicToOpenAi,
    /// An OpenAI Chat Completions client, a Gemini provider.
    OpenAiToGemini,
    /// An Anthropic Messages client, a Gemini provider (through OpenAI's shape).
    AnthropicToGemini,
    /// An OpenAI Chat Completions client, a Bedrock Converse provider.
    OpenAiToBedrock,
    /// An Anthropic Messages client, a Bedrock provider (through OpenAI's shape).
    AnthropicToBedrock,
    /// An Anthropic Messages client, Claude on Bedrock through InvokeModel
    /// (Anthropic's own request and answer in Bedrock's envelope).
    AnthropicOnBedrock,
}

impl Direction {
    /// The translation needed for a client of `client` family served by a
    /// provider of `provider` family; `None` when they are the same family.
    pub fn for_pair(client: ApiFamily, provider: ApiFamily) -> Option<Direction> {
        match (client, provider) {
            (ApiFamily::OpenAi, ApiFamily::Anthropic) => Some(Direction::OpenAiToAnthropic),
            (ApiFamily::Anthropic, ApiFamily::OpenAi) => Some(Direction::AnthropicToOpenAi),
            (ApiFamily::OpenAi, ApiFamily::Gemini) => Some(Direction::OpenAiToGemini),
            (ApiFamily::Anthropic, ApiFamily::Gemini) => Some(Direction::AnthropicToGemini),
            (ApiFamily::OpenAi, ApiFamily::Bedrock) => Some(Direction::OpenAiToBedrock),
            (ApiFamily::Anthropic, ApiFamily::Bedrock) => Some(Direction::AnthropicToBedrock),
            _ => None,
        }
    }

    /// The family the client speaks.
    pub fn client(self) -> ApiFamily {
        self.client_api().family()
    }

    /// The family the provider speaks (its headers and errors): Bedrock's
    /// for Claude on Bedrock, whose body is Anthropic's.
    pub fn provider(self) -> ApiFamily {
        match self {
            Direction::AnthropicOnBedrock => ApiFamily::Bedrock,
            _ => self.provider_api().family(),
        }
    }

    /// The API the client called (the only one each direction translates).
    pub fn client_api(self) -> ApiKind {
        match self {
            Direction::OpenAiToAnthropic | Direction::OpenAiToGemini | Direction::OpenAiToBedrock => {
                ApiKind::OpenAiChat
            }
            Direction::AnthropicToOpenAi
            | Direction::AnthropicToGemini
            | Direction::AnthropicToBedrock
            | Direction::AnthropicOnBedrock => ApiKind::AnthropicMessages,
        }
    }

    /// The provider API the translated request is sent to (its body's shape).
    pub fn provider_api(self) -> ApiKind {
        match self {
            Direction::OpenAiToAnthropic | Direction::AnthropicOnBedrock => ApiKind::AnthropicMessages,
            Direction::AnthropicToOpenAi => ApiKind::OpenAiChat,
            Direction::OpenAiToGemini | Direction::AnthropicToGemini => ApiKind::GeminiGenerate,
            Direction::OpenAiToBedrock | Direction::AnthropicToBedrock => ApiKind::BedrockConverse,
        }
    }

    /// Translate a client request body; see the direction's `request`.
    pub fn request(self, body: &Value, upstream_model: &str) -> Result<Value, Error> {
        match self {
            Direction::OpenAiToAnthropic => openai_to_anthropic::request(body, upstream_model),
            Direction::AnthropicToOpenAi => anthropic_to_openai::request(body, upstream_model),
            Direction::OpenAiToGemini => openai_to_gemini::request(body, upstream_model),
            Direction::AnthropicToGemini => {
                openai_to_gemini::request(&anthropic_to_openai::request(body, upstream_model)?, upstream_model)
            }
            Direction::OpenAiToBedrock => openai_to_bedrock::request(body, upstream_model),
            Direction::AnthropicToBedrock => {
                openai_to_bedrock::request(&anthropic_to_openai::request(body, upstream_model)?, upstream_model)
            }
            Direction::AnthropicOnBedrock => anthropic_on_bedrock::request(body),
        }
    }

    /// Translate a non-streamed provider response; see the direction's `response`.
    pub fn response(self, body: &Value, client_model: &str) -> Result<Value, Error> {
        match self {
            Direction::OpenAiToAnthropic => openai_to_anthropic::response(body, client_model),
            Direction::AnthropicToOpenAi => anthropic_to_openai::response(body, client_model),
            Direction::OpenAiToGemini => openai_to_gemini::response(body, client_model),
            Direction::AnthropicToGemini => {
                anthropic_to_openai::response(&openai_to_gemini::response(body, client_model)?, client_model)
            }
            Direction::OpenAiToBedrock => openai_to_bedrock::response(body, client_model),
            Direction::AnthropicToBedrock => {
                anthropic_to_openai::response(&openai_to_bedrock::response(body, client_model)?, client_model)
            }
            Direction::AnthropicOnBedrock => Ok(anthropic_on_bedrock::response(body, client_model)),
        }
    }

    /// Translate a provider error body; see the direction's `error`.
    pub fn error(self, body: &Value, status: u16) -> Value {
        self.error_typed(body, status, None)
    }

    /// [`Direction::error`] with the error type a provider sends in a
    /// header (Bedrock's `x-amzn-errortype`).
    pub fn error_typed(self, body: &Value, status: u16, error_type: Option<&str>) -> Value {
        match self {
            Direction::OpenAiToAnthropic => openai_to_anthropic::error(body, status),
            Direction::AnthropicToOpenAi => anthropic_to_openai::error(body, status),
            Direction::OpenAiToGemini => openai_to_gemini::error(body, status),
            Direction::AnthropicToGemini => anthropic_to_openai::error(&openai_to_gemini::error(body, status), status),
            Direction::OpenAiToBedrock => openai_to_bedrock::error(body, status, error_type),
            Direction::AnthropicToBedrock => {
                anthropic_to_openai::error(&openai_to_bedrock::error(body, status, error_type), status)
            }
            Direction::AnthropicOnBedrock => anthropic_on_bedrock::error(body, status, error_type),
        }
    }

    /// A stream translator for this direction.
    pub fn stream(self, client_model: &str) -> StreamTranslation {
        match self {
            Direction::OpenAiToAnthropic => {
                StreamTranslation::OpenAiToAnthropic(openai_to_anthropic::StreamTranslator::new(client_model))
            }
            Direction::AnthropicToOpenAi => {
                StreamTranslation::AnthropicToOpenAi(anthropic_to_openai::StreamTranslator::new(client_model))
            }
            Direction::OpenAiToGemini => {
                StreamTranslation::OpenAiToGemini(openai_to_gemini::StreamTranslator::new(client_model))
            }
            Direction::AnthropicToGemini => StreamTranslation::AnthropicToGemini(Box::new((
                openai_to_gemini::StreamTranslator::new(client_model),
                anthropic_to_openai::StreamTranslator::new(client_model),
            ))),
            Direction::OpenAiToBedrock => {
                StreamTranslation::OpenAiToBedrock(Box::new(openai_to_bedrock::StreamTranslator::new(client_model)))
            }
            Direction::AnthropicToBedrock => StreamTranslation::AnthropicToBedrock(Box::new((
                openai_to_bedrock::StreamTranslator::new(client_model),
                anthropic_to_openai::StreamTranslator::new(client_model),
            ))),
            Direction::AnthropicOnBedrock => StreamTranslation::AnthropicOnBedrock(Box::new(
                anthropic_on_bedrock::StreamTranslator::new(client_model),
            )),
        }
    }
}

/// Either direction's stream translator.
#[derive(Debug)]
pub enum StreamTranslation {
    OpenAiToAnthropic(openai_to_anthropic::StreamTranslator),
    AnthropicToOpenAi(anthropic_to_openai::StreamTranslator),
    OpenAiToGemini(openai_to_gemini::StreamTranslator),
    /// Gemini events to OpenAI chunks, those to Anthropic events.
    AnthropicToGemini(Box<(openai_to_gemini::StreamTranslator, anthropic_to_openai::StreamTranslator)>),
    /// Bedrock's event-stream bytes to OpenAI chunks ([`StreamTranslation::push_bytes`]).
    OpenAiToBedrock(Box<openai_to_bedrock::StreamTranslator>),
    /// Bedrock's bytes to OpenAI chunks, those to Anthropic events.
    AnthropicToBedrock(Box<(openai_to_bedrock::StreamTranslator, anthropic_to_openai::StreamTranslator)>),
    /// InvokeModel's frames to the Anthropic events they carry.
    AnthropicOnBedrock(Box<anthropic_on_bedrock::StreamTranslator>),
}

impl StreamTranslation {
    /// Client events for one provider event.
    pub fn push(&mut self, event: &SseEvent) -> Vec<SseEvent> {
        match self {
            StreamTranslation::OpenAiToAnthropic(t) => t.push(event),
            StreamTranslation::AnthropicToOpenAi(t) => t.push(event),
            StreamTranslation::OpenAiToGemini(t) => t.push(event),
            StreamTranslation::AnthropicToGemini(pair) => {
                let (gemini, anthropic) = &mut **pair;
                gemini.push(event).iter().flat_map(|e| anthropic.push(e)).collect()
            }
            // Bedrock's stream is binary: see `push_bytes`.
            StreamTranslation::OpenAiToBedrock(_)
            | StreamTranslation::AnthropicToBedrock(_)
            | StreamTranslation::AnthropicOnBedrock(_) => Vec::new(),
        }
    }

    /// Whether the provider's stream is bytes (an AWS event stream) rather
    /// than SSE: feed it to [`StreamTranslation::push_bytes`].
    pub fn is_binary(&self) -> bool {
        matches!(
            self,
            StreamTranslation::OpenAiToBedrock(_)
                | StreamTranslation::AnthropicToBedrock(_)
                | StreamTranslation::AnthropicOnBedrock(_)
        )
    }

    /// Client events for a chunk of a binary provider stream, at any split.
    /// A bad frame ends the client's stream with one error event (the
    /// error is returned after that, to be counted); nothing for an SSE
    /// translator.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> (Vec<SseEvent>, Option<crate::eventstream::Error>) {
        let (bedrock, anthropic) = match self {
            StreamTranslation::AnthropicOnBedrock(t) => {
                return match t.push_bytes(bytes) {
                    Ok(events) => (events, None),
                    Err(err) => (t.finish(), Some(err)),
                };
            }
            StreamTranslation::OpenAiToBedrock(t) => (&mut **t, None),
            StreamTranslation::AnthropicToBedrock(pair) => {
                let (bedrock, anthropic) = &mut **pair;
                (bedrock, Some(anthropic))
            }
            _ => return (Vec::new(), None),
        };
        let (mut events, failed) = match bedrock.push_bytes(bytes) {
            Ok(events) => (events, None),
            Err(err) => (bedrock.finish(), Some(err)),
        };
        if let Some(anthropic) = anthropic {
            events = events.iter().flat_map(|e| anthropic.push(e)).collect();
            if failed.is_some() {
                events.extend(anthropic.finish());
            }
        }
        (events, failed)
    }

    /// Client events closing the stream when the provider's ended early.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        match self {
            StreamTranslation::OpenAiToAnthropic(t) => t.finish(),
            StreamTranslation::AnthropicToOpenAi(t) => t.finish(),
            StreamTranslation::OpenAiToGemini(t) => t.finish(),
            StreamTranslation::AnthropicToGemini(pair) => {
                let (gemini, anthropic) = &mut **pair;
                let mut out: Vec<SseEvent> = gemini.finish().iter().flat_map(|e| anthropic.push(e)).collect();
                out.extend(anthropic.finish());
                out
            }
            StreamTranslation::OpenAiToBedrock(t) => t.finish(),
            StreamTranslation::AnthropicToBedrock(pair) => {
                let (bedrock, anthropic) = &mut **pair;
                let mut out: Vec<SseEvent> = bedrock.finish().iter().flat_map(|e| anthropic.push(e)).collect();
                out.extend(anthropic.finish());
                out
            }
            StreamTranslation::AnthropicOnBedrock(t) => t.finish(),
        }
    }
}

// ---- helpers shared by both directions ----

pub(crate) fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidRequest(message.into())
}

/// An SSE event carrying `data` as compact JSON.
pub(crate) fn json_event(name: Option<&str>, data: &Value) -> SseEvent {
    SseEvent { event: name.map(str::to_owned), data: data.to_string(), id: None }
}

/// An OpenAI `chat.completion.chunk` event: one choice's delta (and its
/// finish reason), as every translation to OpenAI's stream writes it.
pub(crate) fn openai_chunk(id: &str, model: &str, index: u64, delta: Value, finish: Option<&str>) -> SseEvent {
    json_event(
        None,
        &json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}],
        }),
    )
}

/// The usage-only chunk (`choices: []`) and `data: [DONE]` that end an
/// OpenAI stream.
pub(crate) fn openai_stream_end(id: &str, model: &str, usage: Value, out: &mut Vec<SseEvent>) {
    out.push(json_event(
        None,
        &json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [], "usage": usage}),
    ));
    out.push(done_event());
}

/// `data: [DONE]`, the end of an OpenAI stream.
pub(crate) fn done_event() -> SseEvent {
    SseEvent { event: None, data: "[DONE]".into(), id: None }
}

/// `data:<media type>;base64,<data>` split into its media type and payload.
pub(crate) fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media, data))
}

pub(crate) fn is_http_url(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

/// A field that is present and not `null`.
pub(crate) fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// The message of a provider error body in either shape, or a fallback.
pub(crate) fn error_message(body: &Value, status: u16) -> String {
    let found = body
        .get("error")
        .and_then(|e| e.get("message").and_then(Value::as_str).or_else(|| e.as_str()))
        .or_else(|| body.get("message").and_then(Value::as_str))
        .or_else(|| body.as_str());
    match found {
        Some(m) => m.to_owned(),
        None => format!("provider returned status {status}"),
    }
}

/// An error body in `family`'s shape, with the error type derived from the
/// status the same way the gateway's own errors are.
pub(crate) fn shaped_error(family: ApiFamily, status: u16, message: &str, code: &str) -> Value {
    serde_json::from_str(&error_body(family, status, message, code))
        .unwrap_or_else(|_| json!({"error": {"message": message}}))
}

/// Anthropic's usage counters, merged as they arrive (later values replace
/// earlier ones, as in `message_start` then `message_delta`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AnthropicCounts {
    pub input: Option<u64>,
    pub output: Option<u64>,
    pub cache_read: Option<u64>,
    pub cache_creation: Option<u64>,
}

impl AnthropicCounts {
    pub fn merge(&mut self, usage: &Value) {
        let num = |k: &str| usage.get(k).and_then(Value::as_u64);
        if let Some(n) = num("input_tokens") {
            self.input = Some(n);
        }
        if let Some(n) = num("output_tokens") {
            self.output = Some(n);
        }
        if let Some(n) = num("cache_read_input_tokens") {
            self.cache_read = Some(n);
        }
        if let Some(n) = num("cache_creation_input_tokens") {
            self.cache_creation = Some(n);
        }
    }

    /// The OpenAI chat `usage` object: cache reads and writes are part of
    /// `prompt_tokens`; reads are also `prompt_tokens_details.cached_tokens`.
    pub fn to_openai(self) -> Value {
        let cached = self.cache_read.unwrap_or(0);
        let prompt = self.input.unwrap_or(0).saturating_add(cached).saturating_add(self.cache_creation.unwrap_or(0));
        let completion = self.output.unwrap_or(0);
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt.saturating_add(completion),
            "prompt_tokens_details": {"cached_tokens": cached},
        })
    }
}

/// Anthropic `usage` from an OpenAI chat `usage` object: `input_tokens` is
/// the uncached part of `prompt_tokens`, the cached part is
/// `cache_read_input_tokens` (OpenAI reports no cache writes). The object
/// is read as the gateway reads it for its own accounting
/// ([`crate::usage::usage_object`], which also takes the Responses API's
/// `input_tokens` / `output_tokens`), so the client is told what is counted.
pub(crate) fn anthropic_usage(openai: &Value) -> Value {
    let u = crate::usage::usage_object(ApiKind::OpenAiChat, openai).unwrap_or_default();
    json!({
        "input_tokens": u.input_tokens.saturating_sub(u.cached_tokens),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": u.cached_tokens,
        "output_tokens": u.output_tokens,
    })
}

/// Anthropic `stop_reason` to OpenAI `finish_reason`.
pub(crate) fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything new
        _ => "stop",
    }
}

/// OpenAI `finish_reason` to Anthropic `stop_reason`.
pub(crate) fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        // stop and anything new
        _ => "end_turn",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::usage::usage_from_value;

    /// Found by the `translate_json` fuzz target: an OpenAI answer whose
    /// usage named its counters as the Responses API does (`output_tokens`)
    /// was counted by the gateway (449 output tokens) and reported to the
    /// Anthropic client as 0.
    #[test]
    fn the_client_is_told_the_usage_the_gateway_counts() {
        for usage in [
            json!({"prompt_tokens": 12, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 4}}),
            json!({"input_tokens": 12, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 4}}),
            json!({"output_tokens": 449}),
        ] {
            let counted = usage_from_value(ApiKind::OpenAiChat, &json!({ "usage": usage })).unwrap();
            let told =
                usage_from_value(ApiKind::AnthropicMessages, &json!({ "usage": anthropic_usage(&usage) })).unwrap();
            assert_eq!(
                (told.input_tokens, told.output_tokens),
                (counted.input_tokens, counted.output_tokens),
                "{usage}"
            );
            assert_eq!(told.cached_tokens, counted.cached_tokens, "{usage}");
        }
        assert_eq!(anthropic_usage(&Value::Null)["output_tokens"], 0);
    }
}
