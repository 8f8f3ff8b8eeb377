//! OpenAI: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`.
//!
//! Field order follows OpenAI's wire order (the streamed fixtures show it;
//! the recorded non-streamed bodies were re-sorted by the recorder).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::errors::{json_response, openai_invalid, parse_object, sse_data, sse_response, Api};
use crate::util::{self, Finish};
use crate::Shared;

pub(crate) const DONE: &str = "data: [DONE]\n\n";

// ---------------------------------------------------------------- requests

/// Text of an OpenAI `content` (string, or array of parts with `text`).
pub(crate) fn content_segments(content: Option<&Value>) -> Vec<String> {
    match content {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| match part {
                Value::String(s) => Some(s.clone()),
                Value::Object(obj) => obj.get("text").and_then(Value::as_str).map(str::to_owned),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Parses `max_completion_tokens` (preferred) or `max_tokens`.
fn max_tokens(req: &Map<String, Value>, keys: &[&str], min: i64) -> Result<Option<u64>, Box<Response>> {
    for key in keys {
        match req.get(*key) {
            None | Some(Value::Null) => continue,
            Some(v) => {
                let Some(n) = v.as_i64() else {
                    return Err(Box::new(openai_invalid(
                        &format!("Invalid type for '{key}': expected an integer, but got {} instead.", type_name(v)),
                        Some(key),
                        Some("invalid_type"),
                    )));
                };
                if n < min {
                    return Err(Box::new(openai_invalid(
                        &format!("Invalid '{key}': integer below minimum value. Expected a value >= {min}, but got {n} instead."),
                        Some(key),
                        Some("integer_below_min_value"),
                    )));
                }
                return Ok(Some(n.unsigned_abs()));
            }
        }
    }
    Ok(None)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `stop` as a list.
pub(crate) fn stop_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn require_model(req: &Map<String, Value>) -> Result<String, Box<Response>> {
    match req.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(m.clone()),
        _ => Err(Box::new(openai_invalid("you must provide a model parameter", None, None))),
    }
}

struct StreamOpts {
    stream: bool,
    include_usage: bool,
    obfuscation: bool,
}

fn stream_opts(req: &Map<String, Value>) -> StreamOpts {
    let opts = req.get("stream_options");
    StreamOpts {
        stream: req.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: opts.and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false),
        obfuscation: opts.and_then(|o| o.get("include_obfuscation")).and_then(Value::as_bool).unwrap_or(true),
    }
}

/// Which function to call, if any (see the README for the rules).
fn chat_tool_choice(req: &Map<String, Value>, last_is_user: bool, user_text: &str) -> Option<String> {
    let tools = req.get("tools").and_then(Value::as_array)?;
    let names: Vec<&str> = tools
        .iter()
        .filter_map(|t| t.get("function").and_then(|f| f.get("name")).or_else(|| t.get("name")).and_then(Value::as_str))
        .collect();
    let first = names.first()?;
    match req.get("tool_choice") {
        Some(Value::String(s)) if s == "none" => None,
        Some(Value::String(s)) if s == "required" => Some((*first).to_owned()),
        Some(Value::Object(obj)) => obj
            .get("function")
            .and_then(|f| f.get("name"))
            .or_else(|| obj.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => (last_is_user && util::mentions_tool(user_text)).then(|| (*first).to_owned()),
    }
}

/// The arguments of the mock's tool call.
pub(crate) fn tool_arguments(user_text: &str) -> String {
    let mut args = Map::new();
    args.insert("query".to_owned(), Value::String(user_text.to_owned()));
    crate::errors::to_json(&Value::Object(args))
}

// ---------------------------------------------------------------- chat types

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

#[derive(Serialize)]
struct ChatUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

impl ChatUsage {
    fn new(prompt: u64, completion: u64) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: PromptDetails { cached_tokens: 0, audio_tokens: 0 },
            completion_tokens_details: CompletionDetails {
                reasoning_tokens: 0,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        }
    }
}

#[derive(Serialize)]
struct FunctionCall {
    name: String,
    arguments: String,
}

#[derive(Serialize)]
struct ToolCall {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCall,
}

#[derive(Serialize)]
struct ChatMessage {
    role: &'static str,
    content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCall>>,
    refusal: Option<String>,
    annotations: Vec<Value>,
}

#[derive(Serialize)]
struct ChatChoice {
    index: u32,
    message: ChatMessage,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChatChoice>,
    usage: ChatUsage,
    service_tier: &'static str,
    system_fingerprint: Option<&'static str>,
}

#[derive(Serialize)]
struct FunctionDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    arguments: String,
}

#[derive(Serialize)]
struct ToolCallDelta {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta,
}

#[derive(Serialize, Default)]
struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    /// `None`: absent; `Some(None)`: null.
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCallDelta>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Option<String>>,
}

#[derive(Serialize)]
struct ChunkChoice {
    index: u32,
    delta: Delta,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    service_tier: &'static str,
    system_fingerprint: Option<&'static str>,
    choices: Vec<ChunkChoice>,
    /// `None`: absent (no `include_usage`); `Some(None)`: null.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<ChatUsage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    obfuscation: Option<String>,
}

fn finish_str(finish: &Finish) -> &'static str {
    match finish {
        Finish::Stop | Finish::StopSequence(_) => "stop",
        Finish::Length => "length",
    }
}

enum ChatAnswer {
    Text { text: String, finish: Finish },
    Tool { name: String, call_id: String, arguments: String },
}

impl ChatAnswer {
    fn output_tokens(&self) -> u64 {
        match self {
            ChatAnswer::Text { text, .. } => util::approx_tokens(text).max(1),
            ChatAnswer::Tool { arguments, .. } => util::approx_tokens(arguments).max(1),
        }
    }
}

// ---------------------------------------------------------------- chat

pub(crate) async fn chat_completions(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let req = match parse_object(Api::OpenAi, &body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    let model = match require_model(&req) {
        Ok(m) => m,
        Err(resp) => return *resp,
    };
    let messages = match req.get("messages") {
        None | Some(Value::Null) => {
            return openai_invalid(
                "Missing required parameter: 'messages'.",
                Some("messages"),
                Some("missing_required_parameter"),
            )
        }
        Some(Value::Array(items)) if items.is_empty() => return openai_invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            Some("messages"),
            Some("empty_array"),
        ),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return openai_invalid(
                &format!("Invalid type for 'messages': expected an array, but got {} instead.", type_name(other)),
                Some("messages"),
                Some("invalid_type"),
            )
        }
    };
    let mut segments: Vec<String> = Vec::new();
    let mut last_user: Option<String> = None;
    let mut last_role = String::new();
    for (i, msg) in messages.iter().enumerate() {
        let Some(role) = msg.get("role").and_then(Value::as_str) else {
            return openai_invalid(
                &format!("Missing required parameter: 'messages[{i}].role'."),
                Some(&format!("messages[{i}].role")),
                Some("missing_required_parameter"),
            );
        };
        let texts = content_segments(msg.get("content"));
        if role == "user" {
            last_user = Some(texts.join("\n"));
        }
        if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
            for call in calls {
                if let Some(args) = call.get("function").and_then(|f| f.get("arguments")).and_then(Value::as_str) {
                    segments.push(args.to_owned());
                }
            }
        }
        segments.extend(texts);
        last_role = role.to_owned();
    }
    // No user turn at all (e.g. only a developer message): echo the last message.
    let user_text = match last_user {
        Some(t) => t,
        None => messages.last().map(|m| content_segments(m.get("content")).join("\n")).unwrap_or_default(),
    };
    let max = match max_tokens(&req, &["max_completion_tokens", "max_tokens"], 1) {
        Ok(m) => m,
        Err(resp) => return *resp,
    };
    let opts = stream_opts(&req);
    let prompt_tokens = util::sum_tokens(segments.iter().map(String::as_str));

    let answer = match chat_tool_choice(&req, last_role == "user", &user_text) {
        Some(name) => {
            ChatAnswer::Tool { name, call_id: state.ids.base62("call_", 24), arguments: tool_arguments(&user_text) }
        }
        None => {
            let (text, finish) =
                util::shape_reply(util::reply_with_append(&user_text, &headers), &stop_list(req.get("stop")), max);
            ChatAnswer::Text { text, finish }
        }
    };
    let completion_tokens = answer.output_tokens();
    let id = state.ids.base62("chatcmpl-", 29);
    let created = util::unix_now();

    if !opts.stream {
        let (message, finish) = match answer {
            ChatAnswer::Text { text, finish } => (
                ChatMessage {
                    role: "assistant",
                    content: Some(text),
                    tool_calls: None,
                    refusal: None,
                    annotations: Vec::new(),
                },
                finish_str(&finish),
            ),
            ChatAnswer::Tool { name, call_id, arguments } => (
                ChatMessage {
                    role: "assistant",
                    content: None,
                    tool_calls: Some(vec![ToolCall {
                        id: call_id,
                        kind: "function",
                        function: FunctionCall { name, arguments },
                    }]),
                    refusal: None,
                    annotations: Vec::new(),
                },
                "tool_calls",
            ),
        };
        return json_response(
            StatusCode::OK,
            &ChatCompletion {
                id: &id,
                object: "chat.completion",
                created,
                model: &model,
                choices: vec![ChatChoice { index: 0, message, finish_reason: finish }],
                usage: ChatUsage::new(prompt_tokens, completion_tokens),
                service_tier: "default",
                system_fingerprint: None,
            },
        );
    }

    let chunk = |choices: Vec<ChunkChoice>, usage: Option<Option<ChatUsage>>, content_chars: usize| ChatChunk {
        id: &id,
        object: "chat.completion.chunk",
        created,
        model: &model,
        service_tier: "default",
        system_fingerprint: None,
        choices,
        usage,
        obfuscation: opts.obfuscation.then(|| state.ids.obfuscation(content_chars)),
    };
    let null_usage = || opts.include_usage.then_some(None);
    let delta_choice =
        |delta: Delta, finish: Option<&'static str>| vec![ChunkChoice { index: 0, delta, finish_reason: finish }];

    let mut frames = Vec::new();
    let finish = match answer {
        ChatAnswer::Text { text, finish } => {
            frames.push(sse_data(&chunk(
                delta_choice(
                    Delta {
                        role: Some("assistant"),
                        content: Some(Some(String::new())),
                        refusal: Some(None),
                        ..Delta::default()
                    },
                    None,
                ),
                null_usage(),
                0,
            )));
            for word in util::split_words(&text) {
                let chars = word.chars().count();
                frames.push(sse_data(&chunk(
                    delta_choice(Delta { content: Some(Some(word)), ..Delta::default() }, None),
                    null_usage(),
                    chars,
                )));
            }
            finish_str(&finish)
        }
        ChatAnswer::Tool { name, call_id, arguments } => {
            frames.push(sse_data(&chunk(
                delta_choice(
                    Delta {
                        role: Some("assistant"),
                        content: Some(None),
                        tool_calls: Some(vec![ToolCallDelta {
                            index: 0,
                            id: Some(call_id),
                            kind: Some("function"),
                            function: FunctionDelta { name: Some(name), arguments: String::new() },
                        }]),
                        refusal: Some(None),
                    },
                    None,
                ),
                null_usage(),
                0,
            )));
            for piece in split_arguments(&arguments) {
                let chars = piece.chars().count();
                frames.push(sse_data(&chunk(
                    delta_choice(
                        Delta {
                            tool_calls: Some(vec![ToolCallDelta {
                                index: 0,
                                id: None,
                                kind: None,
                                function: FunctionDelta { name: None, arguments: piece },
                            }]),
                            ..Delta::default()
                        },
                        None,
                    ),
                    null_usage(),
                    chars,
                )));
            }
            "tool_calls"
        }
    };
    frames.push(sse_data(&chunk(delta_choice(Delta::default(), Some(finish)), null_usage(), 0)));
    if opts.include_usage {
        frames.push(sse_data(&chunk(Vec::new(), Some(Some(ChatUsage::new(prompt_tokens, completion_tokens))), 0)));
    }
    frames.push(Bytes::from_static(DONE.as_bytes()));
    sse_response(frames, state.chunk_delay(&headers))
}

/// Tool arguments as streamed: `{"query":` then the value in two halves
/// (always at least two pieces).
pub(crate) fn split_arguments(arguments: &str) -> Vec<String> {
    const HEAD: &str = "{\"query\":";
    match arguments.strip_prefix(HEAD) {
        Some(rest) if !rest.is_empty() => {
            let mut pieces = vec![HEAD.to_owned()];
            pieces.extend(util::split_even(rest, 2));
            pieces
        }
        _ => util::split_even(arguments, 2),
    }
}

// ---------------------------------------------------------------- completions

enum Prompt {
    Text(String),
    Tokens(usize),
}

impl Prompt {
    fn tokens(&self) -> u64 {
        match self {
            Prompt::Text(t) => util::approx_tokens(t).max(1),
            Prompt::Tokens(n) => (*n as u64).max(1),
        }
    }
    fn echo_text(&self) -> String {
        match self {
            Prompt::Text(t) => t.clone(),
            Prompt::Tokens(n) => format!("[{n} tokens]"),
        }
    }
    fn hash_bytes(&self) -> Vec<u8> {
        match self {
            Prompt::Text(t) => t.as_bytes().to_vec(),
            Prompt::Tokens(n) => format!("\u{0}tokens:{n}").into_bytes(),
        }
    }
}

fn is_token_array(items: &[Value]) -> bool {
    !items.is_empty() && items.iter().all(Value::is_i64)
}

/// string | [string] | [int] | [[int]] (`param` names the field for errors).
fn parse_prompts(value: Option<&Value>, param: &str) -> Result<Vec<Prompt>, Box<Response>> {
    let invalid = || {
        openai_invalid(
            &format!("Invalid '{param}': expected a string, an array of strings, an array of integers or an array of integer arrays."),
            Some(param),
            Some("invalid_type"),
        )
    };
    match value {
        None | Some(Value::Null) => Err(Box::new(openai_invalid(
            &format!("Missing required parameter: '{param}'."),
            Some(param),
            Some("missing_required_parameter"),
        ))),
        Some(Value::String(s)) => Ok(vec![Prompt::Text(s.clone())]),
        Some(Value::Array(items)) if items.is_empty() => Err(Box::new(openai_invalid(
            &format!("Invalid '{param}': empty array. Expected an array with minimum length 1, but got an empty array instead."),
            Some(param),
            Some("empty_array"),
        ))),
        Some(Value::Array(items)) if is_token_array(items) => Ok(vec![Prompt::Tokens(items.len())]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(Prompt::Text(s.clone())),
                Value::Array(toks) if is_token_array(toks) => Ok(Prompt::Tokens(toks.len())),
                _ => Err(Box::new(invalid())),
            })
            .collect(),
        Some(_) => Err(Box::new(invalid())),
    }
}

#[derive(Serialize)]
struct CompletionUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct CompletionChoice {
    text: String,
    index: usize,
    logprobs: Option<Value>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<CompletionChoice>,
    usage: CompletionUsage,
}

#[derive(Serialize)]
struct TextCompletionChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    choices: Vec<CompletionChoice>,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<CompletionUsage>>,
}

#[derive(Serialize)]
struct TextCompletionUsageChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    usage: CompletionUsage,
    choices: Vec<CompletionChoice>,
}

pub(crate) async fn completions(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let req = match parse_object(Api::OpenAi, &body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    let model = match require_model(&req) {
        Ok(m) => m,
        Err(resp) => return *resp,
    };
    let prompts = match parse_prompts(req.get("prompt"), "prompt") {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let max = match max_tokens(&req, &["max_tokens"], 0) {
        Ok(m) => m,
        Err(resp) => return *resp,
    };
    let stop = stop_list(req.get("stop"));
    let opts = stream_opts(&req);
    let answers: Vec<(String, Finish)> =
        prompts.iter().map(|p| util::shape_reply(util::reply_for(&p.echo_text()), &stop, max)).collect();
    let prompt_tokens: u64 = prompts.iter().map(Prompt::tokens).sum();
    let completion_tokens: u64 = answers.iter().map(|(t, _)| util::approx_tokens(t)).sum::<u64>().max(1);
    let usage =
        || CompletionUsage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens };
    let id = state.ids.base62("cmpl-", 29);
    let created = util::unix_now();

    if !opts.stream {
        return json_response(
            StatusCode::OK,
            &TextCompletion {
                id: &id,
                object: "text_completion",
                created,
                model: &model,
                choices: answers
                    .into_iter()
                    .enumerate()
                    .map(|(index, (text, finish))| CompletionChoice {
                        text,
                        index,
                        logprobs: None,
                        finish_reason: Some(finish_str(&finish)),
                    })
                    .collect(),
                usage: usage(),
            },
        );
    }

    let mut frames = Vec::new();
    for (index, (text, finish)) in answers.into_iter().enumerate() {
        let mut words = util::split_words(&text);
        if words.is_empty() {
            words.push(String::new());
        }
        let last = words.len() - 1;
        for (i, word) in words.into_iter().enumerate() {
            frames.push(sse_data(&TextCompletionChunk {
                id: &id,
                object: "text_completion",
                created,
                choices: vec![CompletionChoice {
                    text: word,
                    index,
                    logprobs: None,
                    finish_reason: (i == last).then(|| finish_str(&finish)),
                }],
                model: &model,
                usage: opts.include_usage.then_some(None),
            }));
        }
    }
    if opts.include_usage {
        frames.push(sse_data(&TextCompletionUsageChunk {
            id: &id,
            object: "text_completion",
            created,
            model: &model,
            usage: usage(),
            choices: Vec::new(),
        }));
    }
    frames.push(Bytes::from_static(DONE.as_bytes()));
    sse_response(frames, state.chunk_delay(&headers))
}

// ---------------------------------------------------------------- embeddings

/// Default vector length.
pub const EMBEDDING_DIMS: usize = 8;
const MAX_DIMS: i64 = 4096;

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingData {
    Floats(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: EmbeddingData,
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: EmbeddingUsage,
}

pub(crate) async fn embeddings(State(_state): State<Shared>, body: Bytes) -> Response {
    let req = match parse_object(Api::OpenAi, &body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    let model = match require_model(&req) {
        Ok(m) => m,
        Err(resp) => return *resp,
    };
    let inputs = match parse_prompts(req.get("input"), "input") {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    if inputs.iter().any(|p| matches!(p, Prompt::Text(t) if t.is_empty())) {
        return openai_invalid(
            "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
            None,
            None,
        );
    }
    let base64 = match req.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(other) => {
            return openai_invalid(
                &format!(
                    "Invalid value for 'encoding_format': {}. Supported values are: 'float' and 'base64'.",
                    crate::errors::to_json(other)
                ),
                Some("encoding_format"),
                Some("invalid_value"),
            )
        }
    };
    let dims = match req.get("dimensions") {
        None | Some(Value::Null) => EMBEDDING_DIMS,
        Some(v) => match v.as_i64() {
            Some(n) if n < 1 => {
                return openai_invalid(&format!("{n} is less than the minimum of 1 - 'dimensions'"), None, None)
            }
            Some(n) if n > MAX_DIMS => {
                return openai_invalid(
                    &format!("{n} is greater than the maximum of {MAX_DIMS} - 'dimensions'"),
                    None,
                    None,
                )
            }
            Some(n) => usize::try_from(n).unwrap_or(EMBEDDING_DIMS),
            None => {
                return openai_invalid(
                    &format!("{} is not of type 'integer' - 'dimensions'", crate::errors::to_json(v)),
                    None,
                    None,
                )
            }
        },
    };
    let tokens: u64 = inputs.iter().map(Prompt::tokens).sum();
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = util::embedding_for(&input.hash_bytes(), dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                EmbeddingData::Base64(util::base64_encode(&bytes))
            } else {
                EmbeddingData::Floats(vector)
            };
            Embedding { object: "embedding", index, embedding }
        })
        .collect();
    json_response(
        StatusCode::OK,
        &EmbeddingList {
            object: "list",
            data,
            model: &model,
            usage: EmbeddingUsage { prompt_tokens: tokens, total_tokens: tokens },
        },
    )
}
