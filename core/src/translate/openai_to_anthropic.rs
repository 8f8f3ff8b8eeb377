//! An OpenAI Chat Completions client served by an Anthropic Messages model.
//!
//! Request mapping (OpenAI → Anthropic):
//!
//! | OpenAI | Anthropic |
//! |---|---|
//! | `system` / `developer` messages (anywhere) | top-level `system`: a string for one text, else text blocks |
//! | user `content` string / `text` parts | `content` string / `text` blocks |
//! | `image_url` part, `data:` URL / http(s) URL | `image` block, `base64` / `url` source |
//! | `file` part with `file_data` (`data:` URL) | `document` block, `base64` source (`filename` → `title`) |
//! | assistant `content` + `tool_calls` | `text` blocks then `tool_use` blocks (`arguments` parsed to `input`) |
//! | `tool` messages | `tool_result` blocks; consecutive ones share one user message |
//! | `tools[].function{name,description,parameters}` | `tools[]{name,description,input_schema}` |
//! | `tool_choice` auto / none / required / named | auto / none / any / tool |
//! | `parallel_tool_calls: false` | `tool_choice.disable_parallel_tool_use: true` |
//! | `stop` string or list | `stop_sequences` |
//! | `max_completion_tokens`, else `max_tokens`, else 4096 | `max_tokens` |
//! | `temperature` (0..=1 only), `top_p`, `stream` | same |
//! | `user` | `metadata.user_id` |
//!
//! Refused with [`Error::InvalidRequest`] naming the field, because dropping
//! them would change what the client gets: `n` > 1, `logprobs`,
//! `top_logprobs`, audio `modalities` / `audio`, `response_format` other than
//! text, `logit_bias`, `web_search_options`, legacy `functions` /
//! `function_call`, `temperature` above 1, `input_audio` and `file_id` parts,
//! non-function tools, `function` role messages.
//!
//! Lossy, documented:
//! - system/developer messages are all moved to the top-level `system`, in
//!   order, whatever their position in the conversation; `developer` is not
//!   distinguished from `system`;
//! - dropped as harmless: `seed`, `frequency_penalty`, `presence_penalty`,
//!   `store`, `metadata`, `service_tier`, `reasoning_effort`, `verbosity`,
//!   `prediction`, `stream_options`, `prompt_cache_key`, `safety_identifier`,
//!   message `name`s, image `detail`, tool `strict`, and any unknown field;
//! - a request holding only system/developer messages sends their text as
//!   the single user message (Anthropic needs at least one);
//! - assistant messages with neither text nor tool calls are skipped
//!   (Anthropic refuses empty content);
//! - tool call ids are kept, with characters Anthropic does not accept in an
//!   id (anything but ASCII letters, digits, `_`, `-`) replaced by `_`, the
//!   same way in `tool_use` and `tool_result`.
//!
//! Response mapping (Anthropic → OpenAI): `text` blocks are concatenated into
//! `message.content` (`null` when there is no text and there are tool calls);
//! `tool_use` blocks become `tool_calls` (`input` serialised to `arguments`);
//! `thinking` blocks are concatenated into the non-standard
//! `message.reasoning_content` (and `delta.reasoning_content` when streamed),
//! the convention of several OpenAI-compatible servers, which the gateway's
//! output guard and PII restore also read; signatures, `redacted_thinking`,
//! citations and server tool blocks are dropped. `stop_reason` end_turn /
//! stop_sequence / pause_turn → `stop`, max_tokens → `length`, tool_use →
//! `tool_calls`, refusal → `content_filter`. Usage: `prompt_tokens` =
//! input + cache reads + cache writes, `cached_tokens` = cache reads (cache
//! writes are not distinguished). `id` is Anthropic's message id, `model`
//! the client's model name, `created` is 0.
//!
//! Streaming: a role chunk on `message_start`, content / reasoning / tool
//! call deltas as they come (a tool call's first chunk carries index, id and
//! name, later ones argument fragments; a tool call whose input was empty
//! gets `"{}"`), the finish chunk on `message_delta`, and on `message_stop`
//! a usage-only chunk (`choices: []`) then `data: [DONE]`. The usage chunk
//! is always sent; a caller whose client did not ask for
//! `stream_options.include_usage` may drop it (`usage::is_usage_only_chunk`).
//! An Anthropic `error` event becomes a `data: {"error": {...}}` chunk
//! followed by `[DONE]`.

use serde_json::{json, Map, Value};

use super::openai_request::{function_tool, reject_common, stop_sequences, text_parts, tool_call};
use super::{
    done_event, error_message, finish_reason, invalid, is_http_url, json_event, openai_chunk, openai_stream_end,
    parse_data_url, present, shaped_error, AnthropicCounts,
};
use crate::api::ApiFamily;
use crate::error::Error;
use crate::sse::SseEvent;

/// `max_tokens` sent to Anthropic when the client gave no limit.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

// ---------------------------------------------------------------- request

/// Translate an OpenAI chat request into an Anthropic Messages request for
/// `upstream_model`.
pub fn request(body: &Value, upstream_model: &str) -> Result<Value, Error> {
    let req = body.as_object().ok_or_else(|| invalid("request body must be a JSON object"))?;
    reject_unsupported(req)?;

    let mut out = Map::new();
    out.insert("model".into(), Value::from(upstream_model));

    let messages =
        req.get("messages").and_then(Value::as_array).ok_or_else(|| invalid("`messages` must be an array"))?;
    let (mut system, mut messages) = convert_messages(messages)?;
    if messages.is_empty() && !system.is_empty() {
        // Only system/developer messages: Anthropic needs a conversation, so
        // the instructions become the user turn.
        messages.push(json!({"role": "user", "content": std::mem::take(&mut system)}));
    }
    match system.as_slice() {
        [] => {}
        [only] => {
            out.insert("system".into(), only["text"].clone());
        }
        _ => {
            out.insert("system".into(), Value::Array(system));
        }
    }
    if messages.is_empty() {
        return Err(invalid("`messages` must contain at least one user or assistant message"));
    }
    out.insert("messages".into(), Value::Array(messages));

    let max_tokens = match present(req, "max_completion_tokens").or_else(|| present(req, "max_tokens")) {
        None => DEFAULT_MAX_TOKENS,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| invalid("`max_completion_tokens` / `max_tokens` must be a non-negative integer"))?,
    };
    out.insert("max_tokens".into(), Value::from(max_tokens));

    let stop = stop_sequences(req)?;
    if !stop.is_empty() {
        out.insert("stop_sequences".into(), Value::Array(stop));
    }
    if let Some(t) = present(req, "temperature") {
        let n = t.as_f64().ok_or_else(|| invalid("`temperature` must be a number"))?;
        if n > 1.0 {
            return Err(invalid("`temperature` above 1 is not supported by the Anthropic model serving this request"));
        }
        out.insert("temperature".into(), t.clone());
    }
    if let Some(p) = present(req, "top_p") {
        out.insert("top_p".into(), p.clone());
    }
    if let Some(s) = present(req, "stream") {
        out.insert("stream".into(), Value::Bool(s.as_bool().ok_or_else(|| invalid("`stream` must be a boolean"))?));
    }
    if let Some(user) = present(req, "user") {
        let user = user.as_str().ok_or_else(|| invalid("`user` must be a string"))?;
        out.insert("metadata".into(), json!({"user_id": user}));
    }

    let tools = match present(req, "tools") {
        None => Vec::new(),
        Some(Value::Array(tools)) => {
            tools.iter().enumerate().map(|(i, t)| convert_tool(i, t)).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(invalid("`tools` must be an array")),
    };
    let parallel = present(req, "parallel_tool_calls").and_then(Value::as_bool);
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        let mut choice = match present(req, "tool_choice") {
            None => None,
            Some(c) => Some(convert_tool_choice(c)?),
        };
        if parallel == Some(false) {
            let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if c["type"] != "none" {
                if let Some(obj) = c.as_object_mut() {
                    obj.insert("disable_parallel_tool_use".into(), Value::Bool(true));
                }
            }
        }
        if let Some(c) = choice {
            out.insert("tool_choice".into(), c);
        }
    }
    Ok(Value::Object(out))
}

fn reject_unsupported(req: &Map<String, Value>) -> Result<(), Error> {
    reject_common(req, "Anthropic")?;
    let unsupported = |field: &str, why: &str| {
        Err(invalid(format!("`{field}` is not supported when this model is served by Anthropic: {why}")))
    };
    if let Some(n) = present(req, "n") {
        if n.as_u64() != Some(1) {
            return unsupported("n", "only one choice can be generated");
        }
    }
    if let Some(f) = present(req, "response_format") {
        if f.get("type").and_then(Value::as_str) != Some("text") {
            return unsupported("response_format", "JSON mode and JSON schemas are not available");
        }
    }
    Ok(())
}

/// The system text blocks and the conversation, in Anthropic form.
fn convert_messages(messages: &[Value]) -> Result<(Vec<Value>, Vec<Value>), Error> {
    let mut system = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let msg = m.as_object().ok_or_else(|| invalid(format!("`{path}` must be an object")))?;
        let role =
            msg.get("role").and_then(Value::as_str).ok_or_else(|| invalid(format!("`{path}.role` is missing")))?;
        match role {
            "system" | "developer" => {
                for text in text_parts(msg.get("content"), &path)? {
                    if !text.is_empty() {
                        system.push(json!({"type": "text", "text": text}));
                    }
                }
            }
            "user" => {
                let content = user_content(msg.get("content"), &path)?;
                out.push(json!({"role": "user", "content": content}));
            }
            "assistant" => {
                if let Some(content) = assistant_content(msg, &path)? {
                    out.push(json!({"role": "assistant", "content": content}));
                }
            }
            "tool" => {
                let block = tool_result(msg, &path)?;
                match out.last_mut() {
                    Some(last) if is_tool_result_message(last) => {
                        if let Some(blocks) = last.get_mut("content").and_then(Value::as_array_mut) {
                            blocks.push(block);
                        }
                    }
                    _ => out.push(json!({"role": "user", "content": [block]})),
                }
            }
            "function" => {
                return Err(invalid(format!(
                    "`{path}.role` `function` is not supported: use tools and `tool` messages"
                )))
            }
            other => return Err(invalid(format!("`{path}.role` `{other}` is not a chat role"))),
        }
    }
    Ok((system, out))
}

fn is_tool_result_message(msg: &Value) -> bool {
    msg["role"] == "user"
        && msg["content"].as_array().is_some_and(|b| !b.is_empty() && b.iter().all(|x| x["type"] == "tool_result"))
}

fn user_content(content: Option<&Value>, path: &str) -> Result<Value, Error> {
    match content {
        Some(Value::String(s)) => Ok(Value::from(s.as_str())),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                blocks.push(user_part(part, &format!("{path}.content[{j}]"))?);
            }
            Ok(Value::Array(blocks))
        }
        _ => Err(invalid(format!("`{path}.content` must be a string or an array of parts"))),
    }
}

fn user_part(part: &Value, path: &str) -> Result<Value, Error> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => {
            let text = part
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("`{path}.text` must be a string")))?;
            Ok(json!({"type": "text", "text": text}))
        }
        Some("image_url") => {
            let url = part
                .get("image_url")
                .and_then(|i| i.get("url").and_then(Value::as_str).or_else(|| i.as_str()))
                .ok_or_else(|| invalid(format!("`{path}.image_url.url` must be a string")))?;
            if let Some((media, data)) = parse_data_url(url) {
                Ok(json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}))
            } else if is_http_url(url) {
                Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
            } else {
                Err(invalid(format!("`{path}.image_url.url` must be an http(s) URL or a base64 data: URL")))
            }
        }
        Some("file") => {
            let file = part.get("file").unwrap_or(&Value::Null);
            if present_in(file, "file_id") {
                return Err(invalid(format!("`{path}.file.file_id` is not supported: send the file as `file_data`")));
            }
            let data = file
                .get("file_data")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("`{path}.file.file_data` must be a string")))?;
            let (media, payload) = match parse_data_url(data) {
                Some(parsed) => parsed,
                None => return Err(invalid(format!("`{path}.file.file_data` must be a base64 data: URL"))),
            };
            let mut block =
                json!({"type": "document", "source": {"type": "base64", "media_type": media, "data": payload}});
            if let (Some(name), Some(obj)) = (file.get("filename").and_then(Value::as_str), block.as_object_mut()) {
                obj.insert("title".into(), Value::from(name));
            }
            Ok(block)
        }
        Some(other) => Err(invalid(format!(
            "`{path}` of type `{other}` is not supported by the Anthropic model serving this request"
        ))),
        None => Err(invalid(format!("`{path}.type` is missing"))),
    }
}

fn present_in(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

/// Anthropic content for an assistant message; `None` when it has none.
fn assistant_content(msg: &Map<String, Value>, path: &str) -> Result<Option<Value>, Error> {
    let tool_calls = match present(msg, "tool_calls") {
        None => &[][..],
        Some(Value::Array(calls)) => calls.as_slice(),
        Some(_) => return Err(invalid(format!("`{path}.tool_calls` must be an array"))),
    };
    if present(msg, "function_call").is_some() {
        return Err(invalid(format!("`{path}.function_call` is not supported: use `tool_calls`")));
    }
    let content = msg.get("content");
    if tool_calls.is_empty() {
        if let Some(Value::String(s)) = content {
            return Ok((!s.is_empty()).then(|| Value::from(s.as_str())));
        }
    }
    let mut blocks = Vec::new();
    match content {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                blocks.push(json!({"type": "text", "text": s}));
            }
        }
        Some(Value::Array(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                let text = match p.get("type").and_then(Value::as_str) {
                    Some("text") => p.get("text"),
                    Some("refusal") => p.get("refusal"),
                    _ => return Err(invalid(format!("`{path}.content[{j}]` must be a text or refusal part"))),
                };
                let text = text
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("`{path}.content[{j}]` has no text")))?;
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
            }
        }
        Some(_) => return Err(invalid(format!("`{path}.content` must be a string, an array of parts or null"))),
    }
    for (k, call) in tool_calls.iter().enumerate() {
        blocks.push(tool_use(call, &format!("{path}.tool_calls[{k}]"))?);
    }
    Ok((!blocks.is_empty()).then_some(Value::Array(blocks)))
}

fn tool_use(call: &Value, path: &str) -> Result<Value, Error> {
    let (id, name, input) = tool_call(call, path)?;
    Ok(json!({"type": "tool_use", "id": tool_id(id), "name": name, "input": input}))
}

fn tool_result(msg: &Map<String, Value>, path: &str) -> Result<Value, Error> {
    let id = msg
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("`{path}.tool_call_id` must be a string")))?;
    let content = match msg.get("content") {
        None | Some(Value::Null) => Value::from(""),
        Some(Value::String(s)) => Value::from(s.as_str()),
        Some(Value::Array(_)) => {
            let texts = text_parts(msg.get("content"), path)?;
            Value::Array(texts.into_iter().map(|t| json!({"type": "text", "text": t})).collect())
        }
        Some(_) => return Err(invalid(format!("`{path}.content` must be a string or an array of text parts"))),
    };
    Ok(json!({"type": "tool_result", "tool_use_id": tool_id(id), "content": content}))
}

/// A tool call id in the alphabet Anthropic accepts.
fn tool_id(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

fn convert_tool(i: usize, tool: &Value) -> Result<Value, Error> {
    let (f, name) = function_tool(i, tool)?;
    let mut out = Map::new();
    out.insert("name".into(), Value::from(name));
    if let Some(d) = f.get("description").filter(|d| !d.is_null()) {
        out.insert("description".into(), d.clone());
    }
    let schema = match f.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(p) => p.clone(),
    };
    out.insert("input_schema".into(), schema);
    Ok(Value::Object(out))
}

fn convert_tool_choice(choice: &Value) -> Result<Value, Error> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "none" => Ok(json!({"type": "none"})),
            "required" => Ok(json!({"type": "any"})),
            other => Err(invalid(format!("`tool_choice` `{other}` is not supported"))),
        },
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("`tool_choice.function.name` must be a string"))?;
            Ok(json!({"type": "tool", "name": name}))
        }
        _ => Err(invalid("`tool_choice` must be auto, none, required or a named function")),
    }
}

// --------------------------------------------------------------- response

/// Translate a non-streamed Anthropic message into an OpenAI chat completion
/// reporting `client_model`.
pub fn response(body: &Value, client_model: &str) -> Result<Value, Error> {
    let msg = body.as_object().ok_or_else(|| invalid("provider response must be a JSON object"))?;
    if msg.get("type").and_then(Value::as_str) == Some("error") {
        return Err(invalid("provider response is an error body, not a message"));
    }
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    if let Some(blocks) = msg.get("content").and_then(Value::as_array) {
        for block in blocks {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
                Some("thinking") => reasoning.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or("")),
                Some("tool_use") => {
                    let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                    tool_calls.push(json!({
                        "id": block.get("id").cloned().unwrap_or(Value::Null),
                        "type": "function",
                        "function": {
                            "name": block.get("name").cloned().unwrap_or(Value::Null),
                            "arguments": input.to_string(),
                        },
                    }));
                }
                _ => {}
            }
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), Value::from("assistant"));
    let content = if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::from(text) };
    message.insert("content".into(), content);
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), Value::from(reasoning));
    }
    if !tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    let finish = msg.get("stop_reason").and_then(Value::as_str).map_or("stop", finish_reason);
    let mut counts = AnthropicCounts::default();
    if let Some(u) = msg.get("usage") {
        counts.merge(u);
    }
    Ok(json!({
        "id": msg.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": 0,
        "model": client_model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": counts.to_openai(),
    }))
}

/// Translate an Anthropic error body (`{"type":"error","error":{type,message}}`)
/// with HTTP `status` into OpenAI's `{"error":{message,type,param,code}}`:
/// `type` follows the status as for the gateway's own errors, `code` is
/// Anthropic's error type.
pub fn error(body: &Value, status: u16) -> Value {
    let message = error_message(body, status);
    let code = body.get("error").and_then(|e| e.get("type")).and_then(Value::as_str).unwrap_or("upstream_error");
    shaped_error(ApiFamily::OpenAi, status, &message, code)
}

// -------------------------------------------------------------- streaming

/// Anthropic Messages stream events → OpenAI `chat.completion.chunk` events.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    id: String,
    /// The role chunk was sent.
    started: bool,
    /// The finish chunk was sent.
    finished: bool,
    /// `[DONE]` was sent; nothing more follows.
    done: bool,
    stop_reason: Option<String>,
    counts: AnthropicCounts,
    /// Per Anthropic block index: the OpenAI tool call index and whether any
    /// argument bytes were sent for it.
    tools: Vec<ToolBlock>,
    next_tool: u64,
}

#[derive(Debug)]
struct ToolBlock {
    block: u64,
    call: u64,
    sent_arguments: bool,
}

impl StreamTranslator {
    pub fn new(client_model: &str) -> Self {
        StreamTranslator {
            model: client_model.to_owned(),
            id: String::new(),
            started: false,
            finished: false,
            done: false,
            stop_reason: None,
            counts: AnthropicCounts::default(),
            tools: Vec::new(),
            next_tool: 0,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> SseEvent {
        openai_chunk(&self.id, &self.model, 0, delta, finish)
    }

    fn start(&mut self, out: &mut Vec<SseEvent>) {
        if !self.started {
            self.started = true;
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
    }

    fn tool(&mut self, block: u64) -> Option<&mut ToolBlock> {
        self.tools.iter_mut().find(|t| t.block == block)
    }

    /// Client events for one Anthropic event.
    pub fn push(&mut self, event: &SseEvent) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            return out;
        };
        let kind = data.get("type").and_then(Value::as_str).or(event.event.as_deref()).unwrap_or("");
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "message_start" => {
                let message = data.get("message").unwrap_or(&Value::Null);
                if let Some(id) = message.get("id").and_then(Value::as_str) {
                    self.id = id.to_owned();
                }
                if let Some(u) = message.get("usage") {
                    self.counts.merge(u);
                }
                self.start(&mut out);
            }
            "content_block_start" => {
                self.start(&mut out);
                let block = data.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                        if !text.is_empty() {
                            out.push(self.chunk(json!({"content": text}), None));
                        }
                    }
                    Some("tool_use") => {
                        let call = self.next_tool;
                        self.next_tool += 1;
                        self.tools.push(ToolBlock { block: index, call, sent_arguments: false });
                        out.push(self.chunk(
                            json!({"tool_calls": [{
                                "index": call,
                                "id": block.get("id").cloned().unwrap_or(Value::Null),
                                "type": "function",
                                "function": {"name": block.get("name").cloned().unwrap_or(Value::Null), "arguments": ""},
                            }]}),
                            None,
                        ));
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                self.start(&mut out);
                let delta = data.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
                        if !text.is_empty() {
                            out.push(self.chunk(json!({"content": text}), None));
                        }
                    }
                    Some("thinking_delta") => {
                        let text = delta.get("thinking").and_then(Value::as_str).unwrap_or("");
                        if !text.is_empty() {
                            out.push(self.chunk(json!({"reasoning_content": text}), None));
                        }
                    }
                    Some("input_json_delta") => {
                        let part = delta.get("partial_json").and_then(Value::as_str).unwrap_or("");
                        let call = match self.tool(index) {
                            Some(t) if !part.is_empty() => {
                                t.sent_arguments = true;
                                Some(t.call)
                            }
                            _ => None,
                        };
                        if let Some(call) = call {
                            out.push(self.chunk(
                                json!({"tool_calls": [{"index": call, "function": {"arguments": part}}]}),
                                None,
                            ));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                let call = match self.tool(index) {
                    Some(t) if !t.sent_arguments => {
                        t.sent_arguments = true;
                        Some(t.call)
                    }
                    _ => None,
                };
                if let Some(call) = call {
                    out.push(
                        self.chunk(json!({"tool_calls": [{"index": call, "function": {"arguments": "{}"}}]}), None),
                    );
                }
            }
            "message_delta" => {
                self.start(&mut out);
                if let Some(u) = data.get("usage") {
                    self.counts.merge(u);
                }
                if let Some(r) = data.get("delta").and_then(|d| d.get("stop_reason")).and_then(Value::as_str) {
                    self.stop_reason = Some(r.to_owned());
                }
                self.finish_chunk(&mut out);
            }
            "message_stop" => self.end(&mut out),
            "error" => {
                let err = data.get("error").unwrap_or(&Value::Null);
                let message = err.get("message").and_then(Value::as_str).unwrap_or("provider stream error");
                let kind = err.get("type").and_then(Value::as_str).unwrap_or("api_error");
                out.push(json_event(
                    None,
                    &json!({"error": {"message": message, "type": openai_error_type(kind), "param": null, "code": kind}}),
                ));
                out.push(done_event());
                self.done = true;
            }
            // ping and anything new
            _ => {}
        }
        out
    }

    fn finish_chunk(&mut self, out: &mut Vec<SseEvent>) {
        if !self.finished {
            self.finished = true;
            let reason = self.stop_reason.as_deref().map_or("stop", finish_reason);
            out.push(self.chunk(json!({}), Some(reason)));
        }
    }

    fn end(&mut self, out: &mut Vec<SseEvent>) {
        if self.done {
            return;
        }
        self.start(out);
        self.finish_chunk(out);
        openai_stream_end(&self.id, &self.model, self.counts.to_openai(), out);
        self.done = true;
    }

    /// Events closing the client stream when the Anthropic stream ended
    /// without `message_stop`: the finish chunk (if not sent; `stop` unless a
    /// stop reason was seen), the usage chunk and `[DONE]`. Nothing once the
    /// stream is complete.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        self.end(&mut out);
        out
    }
}

/// OpenAI's error type for an Anthropic one.
fn openai_error_type(anthropic: &str) -> &'static str {
    match anthropic {
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" => "not_found_error",
        "rate_limit_error" => "rate_limit_error",
        "invalid_request_error" | "request_too_large" => "invalid_request_error",
        _ => "server_error",
    }
}
