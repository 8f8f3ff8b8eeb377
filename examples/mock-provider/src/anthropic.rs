//! Anthropic Messages API: `/v1/messages` and `/v1/messages/count_tokens`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::errors::{anthropic_invalid, json_response, parse_object, sse_response, to_json, Api};
use crate::openai::{split_arguments, tool_arguments};
use crate::util::{self, Finish};
use crate::Shared;

/// What the request says, reduced to what the mock needs.
struct Conversation {
    model: String,
    segments: Vec<String>,
    last_user_text: String,
    /// The last message is a user turn with text and no `tool_result`.
    ends_with_user_text: bool,
}

/// Text segments of a `content` value (string or blocks).
fn block_segments(content: Option<&Value>, segments: &mut Vec<String>) -> (Vec<String>, bool) {
    let mut texts = Vec::new();
    let mut has_tool_result = false;
    match content {
        Some(Value::String(s)) => texts.push(s.clone()),
        Some(Value::Array(blocks)) => {
            for block in blocks {
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = block.get("text").and_then(Value::as_str) {
                            texts.push(t.to_owned());
                        }
                    }
                    Some("tool_use") => {
                        if let Some(input) = block.get("input") {
                            segments.push(crate::errors::to_json(input));
                        }
                    }
                    Some("tool_result") => {
                        has_tool_result = true;
                        let mut inner = Vec::new();
                        let (t, _) = block_segments(block.get("content"), &mut inner);
                        segments.extend(inner);
                        segments.extend(t);
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    (texts, has_tool_result)
}

fn read_conversation(req: &Map<String, Value>) -> Result<Conversation, Box<Response>> {
    let model = match req.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) => {
            return Err(Box::new(anthropic_invalid("model: String should have at least 1 character")))
        }
        Some(_) => return Err(Box::new(anthropic_invalid("model: Input should be a valid string"))),
        None => return Err(Box::new(anthropic_invalid("model: Field required"))),
    };
    let messages = match req.get("messages") {
        None => return Err(Box::new(anthropic_invalid("messages: Field required"))),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(Box::new(anthropic_invalid("messages: at least one message is required")))
        }
        Some(Value::Array(items)) => items,
        Some(_) => return Err(Box::new(anthropic_invalid("messages: Input should be a valid list"))),
    };
    let mut segments = Vec::new();
    let mut system = Vec::new();
    match req.get("system") {
        Some(sys @ Value::Array(_)) => {
            let (t, _) = block_segments(Some(sys), &mut system);
            system.extend(t);
        }
        Some(Value::String(s)) => system.push(s.clone()),
        _ => {}
    }
    segments.extend(system);
    let mut last_user_text = String::new();
    let mut ends_with_user_text = false;
    for (i, msg) in messages.iter().enumerate() {
        let role = match msg.get("role").and_then(Value::as_str) {
            Some(r @ ("user" | "assistant")) => r,
            Some(_) => {
                return Err(Box::new(anthropic_invalid(&format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                ))))
            }
            None => return Err(Box::new(anthropic_invalid(&format!("messages.{i}.role: Field required")))),
        };
        if msg.get("content").is_none() {
            return Err(Box::new(anthropic_invalid(&format!("messages.{i}.content: Field required"))));
        }
        let (texts, has_tool_result) = block_segments(msg.get("content"), &mut segments);
        if role == "user" && !texts.is_empty() {
            last_user_text = texts.join("\n");
        }
        ends_with_user_text = role == "user" && !has_tool_result;
        segments.extend(texts);
    }
    Ok(Conversation { model, segments, last_user_text, ends_with_user_text })
}

fn tool_name(req: &Map<String, Value>, conv: &Conversation) -> Option<String> {
    let tools = req.get("tools").and_then(Value::as_array)?;
    let first = tools.iter().find_map(|t| t.get("name").and_then(Value::as_str))?;
    let choice = req.get("tool_choice");
    match choice.and_then(|c| c.get("type")).and_then(Value::as_str) {
        Some("none") => None,
        Some("any") => Some(first.to_owned()),
        Some("tool") => choice.and_then(|c| c.get("name")).and_then(Value::as_str).map(str::to_owned),
        _ => (conv.ends_with_user_text && util::mentions_tool(&conv.last_user_text)).then(|| first.to_owned()),
    }
}

#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
    service_tier: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Block {
    Text {
        #[serde(rename = "type")]
        kind: &'static str,
        text: String,
    },
    ToolUse {
        #[serde(rename = "type")]
        kind: &'static str,
        id: String,
        name: String,
        input: Value,
    },
}

#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<Block>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<String>,
    usage: Usage,
}

#[derive(Serialize)]
struct CacheCreation {
    ephemeral_5m_input_tokens: u64,
    ephemeral_1h_input_tokens: u64,
}

#[derive(Serialize)]
struct StartUsage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    cache_creation: CacheCreation,
    output_tokens: u64,
    service_tier: &'static str,
}

#[derive(Serialize)]
struct StartMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<Block>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<String>,
    usage: StartUsage,
}

#[derive(Serialize)]
struct MessageStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: StartMessage<'a>,
}

#[derive(Serialize)]
struct BlockStart {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    content_block: Block,
}

#[derive(Serialize)]
#[serde(untagged)]
enum DeltaBody {
    Text {
        #[serde(rename = "type")]
        kind: &'static str,
        text: String,
    },
    Json {
        #[serde(rename = "type")]
        kind: &'static str,
        partial_json: String,
    },
}

#[derive(Serialize)]
struct BlockDelta {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: DeltaBody,
}

#[derive(Serialize)]
struct TypeIndex {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
}

#[derive(Serialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Option<String>,
}

#[derive(Serialize)]
struct DeltaUsage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
}

#[derive(Serialize)]
struct MessageDelta {
    #[serde(rename = "type")]
    kind: &'static str,
    delta: StopDelta,
    usage: DeltaUsage,
}

enum Answer {
    Text { text: String, finish: Finish },
    Tool { id: String, name: String, arguments: String },
}

/// How a platform serving Anthropic models differs from the Messages API.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Flavour {
    /// Prefix of message ids (`msg_01`; Bedrock's `msg_bdrk_01`).
    pub(crate) id_prefix: &'static str,
    /// Whether streams carry `ping` events.
    pub(crate) ping: bool,
}

/// The Anthropic API's own flavour.
pub(crate) const ANTHROPIC: Flavour = Flavour { id_prefix: "msg_01", ping: true };

/// The mock's answer to a Messages request, before framing.
pub(crate) enum Reply {
    /// The message JSON.
    Message(String),
    /// The stream's events: `(event name, JSON)`.
    Events(Vec<(&'static str, String)>),
}

/// The answer with its token counts.
pub(crate) struct Answered {
    pub(crate) reply: Reply,
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
}

pub(crate) async fn messages(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let req = match parse_object(Api::Anthropic, &body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    match answer(&state, &headers, &req, ANTHROPIC) {
        Ok(Answered { reply: Reply::Message(json), .. }) => {
            let mut resp = Response::new(axum::body::Body::from(json));
            resp.headers_mut()
                .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
            resp
        }
        Ok(Answered { reply: Reply::Events(events), .. }) => {
            let frames = events
                .into_iter()
                .map(|(name, json)| Bytes::from(format!("event: {name}\ndata: {json}\n\n")))
                .collect();
            sse_response(frames, state.chunk_delay(&headers))
        }
        Err(resp) => *resp,
    }
}

/// Answers a Messages request (validated here, Anthropic's 400s as `Err`).
pub(crate) fn answer(
    state: &Shared,
    headers: &HeaderMap,
    req: &Map<String, Value>,
    flavour: Flavour,
) -> Result<Answered, Box<Response>> {
    let invalid = |message: &str| Box::new(anthropic_invalid(message));
    let conv = read_conversation(req)?;
    let max_tokens = match req.get("max_tokens") {
        None => return Err(invalid("max_tokens: Field required")),
        Some(v) => match v.as_i64() {
            Some(n) if n >= 1 => n.unsigned_abs(),
            Some(_) => return Err(invalid("max_tokens: Input should be greater than or equal to 1")),
            None => return Err(invalid("max_tokens: Input should be a valid integer")),
        },
    };
    let stop = crate::openai::stop_list(req.get("stop_sequences"));
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let input_tokens = util::sum_tokens(conv.segments.iter().map(String::as_str));

    let answer = match tool_name(req, &conv) {
        Some(name) => {
            Answer::Tool { id: state.ids.base62("toolu_01", 22), name, arguments: tool_arguments(&conv.last_user_text) }
        }
        None => {
            let (text, finish) =
                util::shape_reply(util::reply_with_append(&conv.last_user_text, headers), &stop, Some(max_tokens));
            Answer::Text { text, finish }
        }
    };
    let (stop_reason, stop_sequence, output_tokens) = match &answer {
        Answer::Text { text, finish } => {
            let (reason, seq) = match finish {
                Finish::Stop => ("end_turn", None),
                Finish::Length => ("max_tokens", None),
                Finish::StopSequence(s) => ("stop_sequence", Some(s.clone())),
            };
            (reason, seq, util::approx_tokens(text).max(1))
        }
        Answer::Tool { arguments, .. } => ("tool_use", None, util::approx_tokens(arguments).max(1)),
    };
    let id = state.ids.base62(flavour.id_prefix, 22);
    let answered = |reply| Ok(Answered { reply, input_tokens, output_tokens });

    if !stream {
        let block = match answer {
            Answer::Text { text, .. } => Block::Text { kind: "text", text },
            Answer::Tool { id, name, arguments } => Block::ToolUse {
                kind: "tool_use",
                id,
                name,
                input: serde_json::from_str(&arguments).unwrap_or(Value::Object(Map::new())),
            },
        };
        return answered(Reply::Message(to_json(&Message {
            id: &id,
            kind: "message",
            role: "assistant",
            model: &conv.model,
            content: vec![block],
            stop_reason: Some(stop_reason),
            stop_sequence,
            usage: Usage {
                input_tokens,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 0,
                output_tokens,
                service_tier: "standard",
            },
        })));
    }

    let mut frames = vec![(
        "message_start",
        to_json(&MessageStart {
            kind: "message_start",
            message: StartMessage {
                id: &id,
                kind: "message",
                role: "assistant",
                model: &conv.model,
                content: Vec::new(),
                stop_reason: None,
                stop_sequence: None,
                usage: StartUsage {
                    input_tokens,
                    cache_creation_input_tokens: 0,
                    cache_read_input_tokens: 0,
                    cache_creation: CacheCreation { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 },
                    output_tokens: 1,
                    service_tier: "standard",
                },
            },
        }),
    )];
    let (start_block, deltas) = match answer {
        Answer::Text { text, .. } => (
            Block::Text { kind: "text", text: String::new() },
            util::split_words(&text)
                .into_iter()
                .map(|text| DeltaBody::Text { kind: "text_delta", text })
                .collect::<Vec<_>>(),
        ),
        Answer::Tool { id, name, arguments } => (
            Block::ToolUse { kind: "tool_use", id, name, input: Value::Object(Map::new()) },
            split_arguments(&arguments)
                .into_iter()
                .map(|partial_json| DeltaBody::Json { kind: "input_json_delta", partial_json })
                .collect(),
        ),
    };
    frames.push((
        "content_block_start",
        to_json(&BlockStart { kind: "content_block_start", index: 0, content_block: start_block }),
    ));
    if flavour.ping {
        frames.push(("ping", to_json(&TypeOnly { kind: "ping" })));
    }
    for delta in deltas {
        frames.push(("content_block_delta", to_json(&BlockDelta { kind: "content_block_delta", index: 0, delta })));
    }
    frames.push(("content_block_stop", to_json(&TypeIndex { kind: "content_block_stop", index: 0 })));
    frames.push((
        "message_delta",
        to_json(&MessageDelta {
            kind: "message_delta",
            delta: StopDelta { stop_reason, stop_sequence },
            usage: DeltaUsage {
                input_tokens,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 0,
                output_tokens,
            },
        }),
    ));
    frames.push(("message_stop", to_json(&TypeOnly { kind: "message_stop" })));
    answered(Reply::Events(frames))
}

#[derive(Serialize)]
struct TokenCount {
    input_tokens: u64,
}

pub(crate) async fn count_tokens(body: Bytes) -> Response {
    let req = match parse_object(Api::Anthropic, &body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    match read_conversation(&req) {
        Ok(conv) => json_response(
            StatusCode::OK,
            &TokenCount { input_tokens: util::sum_tokens(conv.segments.iter().map(String::as_str)) },
        ),
        Err(resp) => *resp,
    }
}
