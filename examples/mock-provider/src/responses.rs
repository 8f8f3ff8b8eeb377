//! OpenAI Responses API (`/v1/responses`): a minimal but well-formed
//! response object, streamed as `response.*` events when `stream: true`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::errors::{json_response, openai_invalid, parse_object, sse_event, sse_response, Api};
use crate::openai::{content_segments, split_arguments, tool_arguments};
use crate::util::{self, Finish};
use crate::Shared;

#[derive(Serialize, Clone)]
struct OutputText {
    #[serde(rename = "type")]
    kind: &'static str,
    annotations: Vec<Value>,
    logprobs: Vec<Value>,
    text: String,
}

impl OutputText {
    fn new(text: String) -> Self {
        Self { kind: "output_text", annotations: Vec::new(), logprobs: Vec::new(), text }
    }
}

#[derive(Serialize, Clone)]
#[serde(untagged)]
enum OutputItem {
    Message {
        id: String,
        #[serde(rename = "type")]
        kind: &'static str,
        status: &'static str,
        content: Vec<OutputText>,
        role: &'static str,
    },
    FunctionCall {
        id: String,
        #[serde(rename = "type")]
        kind: &'static str,
        status: &'static str,
        arguments: String,
        call_id: String,
        name: String,
    },
}

#[derive(Serialize, Clone)]
struct InputDetails {
    cached_tokens: u64,
}

#[derive(Serialize, Clone)]
struct OutputDetails {
    reasoning_tokens: u64,
}

#[derive(Serialize, Clone)]
struct Usage {
    input_tokens: u64,
    input_tokens_details: InputDetails,
    output_tokens: u64,
    output_tokens_details: OutputDetails,
    total_tokens: u64,
}

#[derive(Serialize, Clone)]
struct Incomplete {
    reason: &'static str,
}

#[derive(Serialize, Clone)]
struct ResponseObject {
    id: String,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    error: Option<Value>,
    incomplete_details: Option<Incomplete>,
    instructions: Value,
    max_output_tokens: Option<u64>,
    model: String,
    output: Vec<OutputItem>,
    parallel_tool_calls: bool,
    previous_response_id: Option<String>,
    temperature: Value,
    tool_choice: Value,
    tools: Value,
    top_p: Value,
    usage: Option<Usage>,
}

/// Input text segments, the last user text and whether the conversation
/// ends on a user turn.
fn read_input(input: &Value) -> (Vec<String>, String, bool) {
    match input {
        Value::String(s) => (vec![s.clone()], s.clone(), true),
        Value::Array(items) => {
            let mut segments = Vec::new();
            let mut last_user = None;
            let mut last_is_user = false;
            for item in items {
                let kind = item.get("type").and_then(Value::as_str).unwrap_or("message");
                match kind {
                    "message" => {
                        let texts = content_segments(item.get("content"));
                        let is_user = item.get("role").and_then(Value::as_str) == Some("user");
                        if is_user {
                            last_user = Some(texts.join("\n"));
                        }
                        last_is_user = is_user;
                        segments.extend(texts);
                    }
                    "function_call" => {
                        if let Some(args) = item.get("arguments").and_then(Value::as_str) {
                            segments.push(args.to_owned());
                        }
                        last_is_user = false;
                    }
                    "function_call_output" => {
                        if let Some(out) = item.get("output").and_then(Value::as_str) {
                            segments.push(out.to_owned());
                        }
                        last_is_user = false;
                    }
                    _ => last_is_user = false,
                }
            }
            (segments, last_user.unwrap_or_default(), last_is_user)
        }
        _ => (Vec::new(), String::new(), false),
    }
}

fn tool_name(req: &Map<String, Value>, last_is_user: bool, user_text: &str) -> Option<String> {
    let tools = req.get("tools").and_then(Value::as_array)?;
    let first = tools
        .iter()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
        .find_map(|t| t.get("name").and_then(Value::as_str))?;
    match req.get("tool_choice") {
        Some(Value::String(s)) if s == "none" => None,
        Some(Value::String(s)) if s == "required" => Some(first.to_owned()),
        Some(Value::Object(obj)) => obj.get("name").and_then(Value::as_str).map(str::to_owned),
        _ => (last_is_user && util::mentions_tool(user_text)).then(|| first.to_owned()),
    }
}

pub(crate) async fn create(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let req = match parse_object(Api::OpenAi, &body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    let model = match req.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return openai_invalid("you must provide a model parameter", None, None),
    };
    let Some(input) = req.get("input").filter(|v| !v.is_null()) else {
        return openai_invalid(
            "Missing required parameter: 'input'.",
            Some("input"),
            Some("missing_required_parameter"),
        );
    };
    let max = match req.get("max_output_tokens") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(n) if n >= 1 => Some(n.unsigned_abs()),
            _ => {
                return openai_invalid(
                    "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 1.",
                    Some("max_output_tokens"),
                    Some("integer_below_min_value"),
                )
            }
        },
    };
    let (mut segments, user_text, last_is_user) = read_input(input);
    if let Some(instructions) = req.get("instructions").and_then(Value::as_str) {
        segments.push(instructions.to_owned());
    }
    let input_tokens = util::sum_tokens(segments.iter().map(String::as_str));
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);

    let (item, output_tokens, finish) = match tool_name(&req, last_is_user, &user_text) {
        Some(name) => {
            let arguments = tool_arguments(&user_text);
            let tokens = util::approx_tokens(&arguments).max(1);
            (
                OutputItem::FunctionCall {
                    id: state.ids.hex("fc_", 48),
                    kind: "function_call",
                    status: "completed",
                    arguments,
                    call_id: state.ids.base62("call_", 24),
                    name,
                },
                tokens,
                Finish::Stop,
            )
        }
        None => {
            let (text, finish) = util::shape_reply(util::reply_for(&user_text), &[], max);
            let tokens = util::approx_tokens(&text).max(1);
            (
                OutputItem::Message {
                    id: state.ids.hex("msg_", 48),
                    kind: "message",
                    status: "completed",
                    content: vec![OutputText::new(text)],
                    role: "assistant",
                },
                tokens,
                finish,
            )
        }
    };
    let incomplete = finish == Finish::Length;
    let usage = Usage {
        input_tokens,
        input_tokens_details: InputDetails { cached_tokens: 0 },
        output_tokens,
        output_tokens_details: OutputDetails { reasoning_tokens: 0 },
        total_tokens: input_tokens + output_tokens,
    };
    let done = ResponseObject {
        id: state.ids.hex("resp_", 48),
        object: "response",
        created_at: util::unix_now(),
        status: if incomplete { "incomplete" } else { "completed" },
        error: None,
        incomplete_details: incomplete.then_some(Incomplete { reason: "max_output_tokens" }),
        instructions: req.get("instructions").cloned().unwrap_or(Value::Null),
        max_output_tokens: max,
        model,
        output: vec![item.clone()],
        parallel_tool_calls: true,
        previous_response_id: None,
        temperature: req.get("temperature").cloned().unwrap_or(Value::from(1.0)),
        tool_choice: req.get("tool_choice").cloned().unwrap_or(Value::from("auto")),
        tools: req.get("tools").cloned().unwrap_or(Value::Array(Vec::new())),
        top_p: req.get("top_p").cloned().unwrap_or(Value::from(1.0)),
        usage: Some(usage),
    };
    if !stream {
        return json_response(StatusCode::OK, &done);
    }
    sse_response(stream_frames(done, item), state.chunk_delay(&headers))
}

/// One streamed event: `type` and `sequence_number` first, then its fields.
#[derive(Serialize)]
struct Event<T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    #[serde(flatten)]
    body: T,
}

#[derive(Serialize)]
struct ResponseEv<'a> {
    response: &'a ResponseObject,
}

#[derive(Serialize)]
struct ItemEv<'a> {
    output_index: u32,
    item: &'a OutputItem,
}

#[derive(Serialize)]
struct PartEv<'a> {
    item_id: &'a str,
    output_index: u32,
    content_index: u32,
    part: OutputText,
}

#[derive(Serialize)]
struct TextDeltaEv<'a> {
    item_id: &'a str,
    output_index: u32,
    content_index: u32,
    delta: String,
    logprobs: Vec<Value>,
}

#[derive(Serialize)]
struct TextDoneEv<'a> {
    item_id: &'a str,
    output_index: u32,
    content_index: u32,
    text: &'a str,
    logprobs: Vec<Value>,
}

#[derive(Serialize)]
struct ArgsDeltaEv<'a> {
    item_id: &'a str,
    output_index: u32,
    delta: String,
}

#[derive(Serialize)]
struct ArgsDoneEv<'a> {
    item_id: &'a str,
    output_index: u32,
    arguments: &'a str,
}

struct Frames {
    seq: u64,
    frames: Vec<Bytes>,
}

impl Frames {
    fn push<T: Serialize>(&mut self, kind: &'static str, body: T) {
        self.frames.push(sse_event(kind, &Event { kind, sequence_number: self.seq, body }));
        self.seq += 1;
    }
}

/// The `response.*` event sequence for one output item.
fn stream_frames(done: ResponseObject, item: OutputItem) -> Vec<Bytes> {
    let mut out = Frames { seq: 0, frames: Vec::new() };
    let mut pending = done.clone();
    pending.status = "in_progress";
    pending.incomplete_details = None;
    pending.output = Vec::new();
    pending.usage = None;
    out.push("response.created", ResponseEv { response: &pending });
    out.push("response.in_progress", ResponseEv { response: &pending });

    match &item {
        OutputItem::Message { id, content, .. } => {
            let text = content.first().map(|c| c.text.clone()).unwrap_or_default();
            let in_progress = OutputItem::Message {
                id: id.clone(),
                kind: "message",
                status: "in_progress",
                content: Vec::new(),
                role: "assistant",
            };
            out.push("response.output_item.added", ItemEv { output_index: 0, item: &in_progress });
            out.push(
                "response.content_part.added",
                PartEv { item_id: id, output_index: 0, content_index: 0, part: OutputText::new(String::new()) },
            );
            for delta in util::split_words(&text) {
                out.push(
                    "response.output_text.delta",
                    TextDeltaEv { item_id: id, output_index: 0, content_index: 0, delta, logprobs: Vec::new() },
                );
            }
            out.push(
                "response.output_text.done",
                TextDoneEv { item_id: id, output_index: 0, content_index: 0, text: &text, logprobs: Vec::new() },
            );
            out.push(
                "response.content_part.done",
                PartEv { item_id: id, output_index: 0, content_index: 0, part: OutputText::new(text.clone()) },
            );
        }
        OutputItem::FunctionCall { id, call_id, name, arguments, .. } => {
            let in_progress = OutputItem::FunctionCall {
                id: id.clone(),
                kind: "function_call",
                status: "in_progress",
                arguments: String::new(),
                call_id: call_id.clone(),
                name: name.clone(),
            };
            out.push("response.output_item.added", ItemEv { output_index: 0, item: &in_progress });
            for delta in split_arguments(arguments) {
                out.push("response.function_call_arguments.delta", ArgsDeltaEv { item_id: id, output_index: 0, delta });
            }
            out.push("response.function_call_arguments.done", ArgsDoneEv { item_id: id, output_index: 0, arguments });
        }
    }
    out.push("response.output_item.done", ItemEv { output_index: 0, item: &item });
    let final_event = if done.status == "incomplete" { "response.incomplete" } else { "response.completed" };
    out.push(final_event, ResponseEv { response: &done });
    out.frames
}
