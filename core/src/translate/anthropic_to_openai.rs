//! An Anthropic Messages client served by an OpenAI chat model.
//!
//! Request mapping (Anthropic → OpenAI):
//!
//! | Anthropic | OpenAI |
//! |---|---|
//! | `system` string / text blocks | one `system` message / one `system` message per block |
//! | user `content` string / `text` blocks | `content` string / `text` parts |
//! | `image` block, `base64` / `url` source | `image_url` part, `data:` URL / the URL |
//! | `document` block, `base64` source / `text` source | `file` part with `file_data` (`title` → `filename`) / `text` part |
//! | `tool_result` blocks | `tool` messages, placed before the rest of that user message |
//! | assistant `text` blocks + `tool_use` blocks | `content` (string for one text, parts for several, `null` for none) + `tool_calls` |
//! | `tools[]{name,description,input_schema}` | `tools[].function{name,description,parameters}` |
//! | `tool_choice` auto / none / any / tool | auto / none / required / named |
//! | `tool_choice.disable_parallel_tool_use: true` | `parallel_tool_calls: false` |
//! | `stop_sequences` | `stop` |
//! | `max_tokens` | `max_completion_tokens` |
//! | `temperature`, `top_p` | same |
//! | `stream: true` | `stream: true`, `stream_options.include_usage: true` |
//! | `metadata.user_id` | `user` |
//!
//! Refused with [`Error::InvalidRequest`] naming the field: server tools
//! (any `tools[].type` other than `custom`), `mcp_servers`, `container`,
//! `output_format`, `url` / `file` document sources, `file` image sources,
//! images or documents inside a `tool_result`, `tool_use` blocks in user
//! messages, and any content block type not listed above.
//!
//! Lossy, documented:
//! - dropped: `top_k`, `thinking` (the OpenAI model reasons, or not, on its
//!   own), `service_tier`, `cache_control` everywhere, `tool_result.is_error`,
//!   `citations`, assistant `thinking` / `redacted_thinking` blocks sent
//!   back by the client, and any unknown field;
//! - a user message mixing `tool_result` and other blocks becomes the `tool`
//!   messages first, then one user message with the other blocks.
//!
//! Response mapping (OpenAI → Anthropic): `message.content` (and a
//! `refusal`) becomes a `text` block, `tool_calls` become `tool_use` blocks
//! (`arguments` parsed; invalid JSON → [`Error::InvalidRequest`]), the
//! non-standard `reasoning_content` of OpenAI-compatible servers becomes a
//! `thinking` block with an empty signature. `finish_reason` stop → end_turn
//! (OpenAI does not say which stop sequence matched, so `stop_sequence` is
//! always `null`), length → max_tokens, tool_calls → tool_use,
//! content_filter → refusal. Usage: `input_tokens` = prompt − cached,
//! `cache_read_input_tokens` = cached, `cache_creation_input_tokens` = 0.
//! Only the first choice is read.
//!
//! Streaming: `message_start` on the first chunk (usage zero: OpenAI reports
//! usage only at the end), then per content kind one block at a time —
//! `content_block_start`, `text_delta` / `thinking_delta` /
//! `input_json_delta`, `content_block_stop` — then, once the finish reason
//! and the usage chunk (or `[DONE]`) have arrived, `message_delta` with
//! `stop_reason` and the full usage (input, cache read and output tokens),
//! then `message_stop`. OpenAI streams each tool call's fragments
//! contiguously; should a fragment for an earlier call arrive after a later
//! one started, it is sent as an `input_json_delta` for the earlier block's
//! index after that block's `content_block_stop`. A `data: {"error":...}`
//! chunk becomes an Anthropic `error` event and ends the stream.

use serde_json::{json, Map, Value};

use super::{anthropic_usage, error_message, invalid, json_event, present, shaped_error, stop_reason};
use crate::api::ApiFamily;
use crate::error::Error;
use crate::sse::SseEvent;

// ---------------------------------------------------------------- request

/// Translate an Anthropic Messages request into an OpenAI chat request for
/// `upstream_model`.
pub fn request(body: &Value, upstream_model: &str) -> Result<Value, Error> {
    let req = body.as_object().ok_or_else(|| invalid("request body must be a JSON object"))?;
    for (field, why) in [
        ("mcp_servers", "MCP servers are not available"),
        ("container", "code execution containers are not available"),
        ("output_format", "structured outputs are not available"),
    ] {
        if present(req, field).is_some() {
            return Err(invalid(format!("`{field}` is not supported when this model is served by OpenAI: {why}")));
        }
    }

    let mut out = Map::new();
    out.insert("model".into(), Value::from(upstream_model));

    let mut messages = Vec::new();
    match present(req, "system") {
        None => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            for (i, b) in blocks.iter().enumerate() {
                if b.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(invalid(format!("`system[{i}]` must be a text block")));
                }
                let text = b
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("`system[{i}].text` must be a string")))?;
                messages.push(json!({"role": "system", "content": text}));
            }
        }
        Some(_) => return Err(invalid("`system` must be a string or an array of text blocks")),
    }
    let source = req.get("messages").and_then(Value::as_array).ok_or_else(|| invalid("`messages` must be an array"))?;
    for (i, m) in source.iter().enumerate() {
        convert_message(m, &format!("messages[{i}]"), &mut messages)?;
    }
    if messages.iter().all(|m| m["role"] == "system") {
        // Empty `content` arrays leave no turn to send: refused here, in the
        // client's shape, rather than by the provider.
        return Err(invalid(
            "`messages` must hold at least one message with content (a `content` array must not be empty)",
        ));
    }
    out.insert("messages".into(), Value::Array(messages));

    if let Some(n) = present(req, "max_tokens") {
        let n = n.as_u64().ok_or_else(|| invalid("`max_tokens` must be a non-negative integer"))?;
        out.insert("max_completion_tokens".into(), Value::from(n));
    }
    if let Some(stop) = present(req, "stop_sequences") {
        match stop {
            Value::Array(items) if items.iter().all(Value::is_string) => {
                if !items.is_empty() {
                    out.insert("stop".into(), stop.clone());
                }
            }
            _ => return Err(invalid("`stop_sequences` must be a list of strings")),
        }
    }
    for field in ["temperature", "top_p"] {
        if let Some(v) = present(req, field) {
            out.insert(field.into(), v.clone());
        }
    }
    if let Some(s) = present(req, "stream") {
        let s = s.as_bool().ok_or_else(|| invalid("`stream` must be a boolean"))?;
        out.insert("stream".into(), Value::Bool(s));
        if s {
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    if let Some(user) = req.get("metadata").and_then(|m| m.get("user_id")).and_then(Value::as_str) {
        out.insert("user".into(), Value::from(user));
    }

    let tools = match present(req, "tools") {
        None => Vec::new(),
        Some(Value::Array(tools)) => {
            tools.iter().enumerate().map(|(i, t)| convert_tool(i, t)).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(invalid("`tools` must be an array")),
    };
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = present(req, "tool_choice") {
            let (choice, no_parallel) = convert_tool_choice(choice)?;
            out.insert("tool_choice".into(), choice);
            if no_parallel {
                out.insert("parallel_tool_calls".into(), Value::Bool(false));
            }
        }
    }
    Ok(Value::Object(out))
}

fn convert_message(m: &Value, path: &str, out: &mut Vec<Value>) -> Result<(), Error> {
    let role = m.get("role").and_then(Value::as_str).ok_or_else(|| invalid(format!("`{path}.role` is missing")))?;
    let content = m.get("content").ok_or_else(|| invalid(format!("`{path}.content` is missing")))?;
    match role {
        "user" => {
            let blocks = match content {
                Value::String(s) => {
                    out.push(json!({"role": "user", "content": s}));
                    return Ok(());
                }
                Value::Array(blocks) => blocks,
                _ => return Err(invalid(format!("`{path}.content` must be a string or an array of blocks"))),
            };
            let mut parts = Vec::new();
            for (j, block) in blocks.iter().enumerate() {
                let bpath = format!("{path}.content[{j}]");
                if block.get("type").and_then(Value::as_str) == Some("tool_result") {
                    out.push(tool_message(block, &bpath)?);
                } else {
                    parts.push(user_part(block, &bpath)?);
                }
            }
            if !parts.is_empty() {
                out.push(json!({"role": "user", "content": parts}));
            }
            Ok(())
        }
        "assistant" => {
            let blocks = match content {
                Value::String(s) => {
                    out.push(json!({"role": "assistant", "content": s}));
                    return Ok(());
                }
                Value::Array(blocks) => blocks,
                _ => return Err(invalid(format!("`{path}.content` must be a string or an array of blocks"))),
            };
            let mut texts = Vec::new();
            let mut calls = Vec::new();
            for (j, block) in blocks.iter().enumerate() {
                let bpath = format!("{path}.content[{j}]");
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = block
                            .get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid(format!("`{bpath}.text` must be a string")))?;
                        texts.push(text);
                    }
                    Some("tool_use") => {
                        let id = block
                            .get("id")
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid(format!("`{bpath}.id` must be a string")))?;
                        let name = block
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid(format!("`{bpath}.name` must be a string")))?;
                        let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                        calls.push(json!({
                            "id": id,
                            "type": "function",
                            "function": {"name": name, "arguments": input.to_string()},
                        }));
                    }
                    Some("thinking") | Some("redacted_thinking") => {}
                    other => {
                        return Err(invalid(format!(
                            "`{bpath}` of type `{}` is not supported by the OpenAI model serving this request",
                            other.unwrap_or("?")
                        )))
                    }
                }
            }
            let content = match texts.as_slice() {
                [] => Value::Null,
                [one] => Value::from(*one),
                many => Value::Array(many.iter().map(|t| json!({"type": "text", "text": t})).collect()),
            };
            if content.is_null() && calls.is_empty() {
                return Ok(());
            }
            let mut msg = Map::new();
            msg.insert("role".into(), Value::from("assistant"));
            msg.insert("content".into(), content);
            if !calls.is_empty() {
                msg.insert("tool_calls".into(), Value::Array(calls));
            }
            out.push(Value::Object(msg));
            Ok(())
        }
        other => Err(invalid(format!("`{path}.role` `{other}` must be user or assistant"))),
    }
}

fn user_part(block: &Value, path: &str) -> Result<Value, Error> {
    match block.get("type").and_then(Value::as_str) {
        Some("text") => {
            let text = block
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("`{path}.text` must be a string")))?;
            Ok(json!({"type": "text", "text": text}))
        }
        Some("image") => {
            let source = block.get("source").unwrap_or(&Value::Null);
            match source.get("type").and_then(Value::as_str) {
                Some("base64") => {
                    let (media, data) = base64_source(source, path)?;
                    Ok(json!({"type": "image_url", "image_url": {"url": format!("data:{media};base64,{data}")}}))
                }
                Some("url") => {
                    let url = source
                        .get("url")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(format!("`{path}.source.url` must be a string")))?;
                    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
                }
                _ => Err(invalid(format!("`{path}.source.type` must be base64 or url"))),
            }
        }
        Some("document") => {
            let source = block.get("source").unwrap_or(&Value::Null);
            match source.get("type").and_then(Value::as_str) {
                Some("base64") => {
                    let (media, data) = base64_source(source, path)?;
                    let mut file = Map::new();
                    if let Some(title) = block.get("title").and_then(Value::as_str) {
                        file.insert("filename".into(), Value::from(title));
                    }
                    file.insert("file_data".into(), Value::from(format!("data:{media};base64,{data}")));
                    Ok(json!({"type": "file", "file": file}))
                }
                Some("text") => {
                    let text = source
                        .get("data")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(format!("`{path}.source.data` must be a string")))?;
                    Ok(json!({"type": "text", "text": text}))
                }
                _ => Err(invalid(format!("`{path}.source.type` must be base64 or text for a document"))),
            }
        }
        other => Err(invalid(format!(
            "`{path}` of type `{}` is not supported by the OpenAI model serving this request",
            other.unwrap_or("?")
        ))),
    }
}

fn base64_source<'a>(source: &'a Value, path: &str) -> Result<(&'a str, &'a str), Error> {
    let media = source
        .get("media_type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("`{path}.source.media_type` must be a string")))?;
    let data = source
        .get("data")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("`{path}.source.data` must be a string")))?;
    Ok((media, data))
}

fn tool_message(block: &Value, path: &str) -> Result<Value, Error> {
    let id = block
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("`{path}.tool_use_id` must be a string")))?;
    let content = match block.get("content") {
        None | Some(Value::Null) => Value::from(""),
        Some(Value::String(s)) => Value::from(s.as_str()),
        Some(Value::Array(items)) => {
            let mut parts = Vec::with_capacity(items.len());
            for (k, item) in items.iter().enumerate() {
                if item.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(invalid(format!(
                        "`{path}.content[{k}]` is not supported: an OpenAI tool result holds text only"
                    )));
                }
                let text = item
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("`{path}.content[{k}].text` must be a string")))?;
                parts.push(json!({"type": "text", "text": text}));
            }
            Value::Array(parts)
        }
        Some(_) => return Err(invalid(format!("`{path}.content` must be a string or an array of blocks"))),
    };
    Ok(json!({"role": "tool", "tool_call_id": id, "content": content}))
}

fn convert_tool(i: usize, tool: &Value) -> Result<Value, Error> {
    let path = format!("tools[{i}]");
    if let Some(kind) = tool.get("type").and_then(Value::as_str) {
        if kind != "custom" {
            return Err(invalid(format!("`{path}.type` `{kind}` is not supported: server tools are not available")));
        }
    }
    let name =
        tool.get("name").and_then(Value::as_str).ok_or_else(|| invalid(format!("`{path}.name` must be a string")))?;
    let mut function = Map::new();
    function.insert("name".into(), Value::from(name));
    if let Some(d) = tool.get("description").filter(|d| !d.is_null()) {
        function.insert("description".into(), d.clone());
    }
    let schema = tool.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    function.insert("parameters".into(), schema);
    Ok(json!({"type": "function", "function": function}))
}

/// OpenAI's `tool_choice`, and whether parallel tool calls were disabled.
fn convert_tool_choice(choice: &Value) -> Result<(Value, bool), Error> {
    let no_parallel = choice.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true);
    let converted = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => Value::from("auto"),
        Some("none") => Value::from("none"),
        Some("any") => Value::from("required"),
        Some("tool") => {
            let name = choice
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("`tool_choice.name` must be a string"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => return Err(invalid("`tool_choice.type` must be auto, none, any or tool")),
    };
    Ok((converted, no_parallel))
}

// --------------------------------------------------------------- response

/// Translate a non-streamed OpenAI chat completion into an Anthropic message
/// reporting `client_model`.
pub fn response(body: &Value, client_model: &str) -> Result<Value, Error> {
    let resp = body.as_object().ok_or_else(|| invalid("provider response must be a JSON object"))?;
    if present(resp, "error").is_some() {
        return Err(invalid("provider response is an error body, not a chat completion"));
    }
    let choice = resp
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| invalid("provider response has no choices"))?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    if let Some(r) = message.get("reasoning_content").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
    }
    for key in ["content", "refusal"] {
        if let Some(t) = message.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()) {
            content.push(json!({"type": "text", "text": t}));
        }
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for (k, call) in calls.iter().enumerate() {
            let path = format!("choices[0].message.tool_calls[{k}]");
            let f = call.get("function").unwrap_or(&Value::Null);
            let input = match f.get("arguments") {
                None | Some(Value::Null) => json!({}),
                Some(Value::String(s)) if s.trim().is_empty() => json!({}),
                Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|e| {
                    invalid(format!("`{path}.function.arguments` from the provider is not valid JSON: {e}"))
                })?,
                Some(other) => other.clone(),
            };
            if !input.is_object() {
                return Err(invalid(format!("`{path}.function.arguments` from the provider is not a JSON object")));
            }
            content.push(json!({
                "type": "tool_use",
                "id": call.get("id").cloned().unwrap_or(Value::Null),
                "name": f.get("name").cloned().unwrap_or(Value::Null),
                "input": input,
            }));
        }
    }
    let reason = choice.get("finish_reason").and_then(Value::as_str).map_or("end_turn", stop_reason);
    let usage = resp.get("usage").map_or_else(|| anthropic_usage(&Value::Null), anthropic_usage);
    Ok(json!({
        "id": resp.get("id").cloned().unwrap_or(Value::Null),
        "type": "message",
        "role": "assistant",
        "model": client_model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": null,
        "usage": usage,
    }))
}

/// Translate an OpenAI error body (`{"error":{message,type,code}}`) with HTTP
/// `status` into Anthropic's `{"type":"error","error":{type,message}}`; the
/// type follows the status as for the gateway's own errors.
pub fn error(body: &Value, status: u16) -> Value {
    let message = error_message(body, status);
    shaped_error(ApiFamily::Anthropic, status, &message, "upstream_error")
}

// -------------------------------------------------------------- streaming

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    Thinking,
    /// A tool call, by its OpenAI index.
    Tool(u64),
}

/// OpenAI `chat.completion.chunk` events → Anthropic Messages stream events.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    started: bool,
    done: bool,
    /// The block currently open: its Anthropic index and kind.
    open: Option<(u64, BlockKind)>,
    next_block: u64,
    /// OpenAI tool call index → Anthropic block index.
    tools: Vec<(u64, u64)>,
    finish_reason: Option<String>,
    usage: Option<Value>,
}

fn event(name: &str, data: Value) -> SseEvent {
    json_event(Some(name), &data)
}

impl StreamTranslator {
    pub fn new(client_model: &str) -> Self {
        StreamTranslator {
            model: client_model.to_owned(),
            started: false,
            done: false,
            open: None,
            next_block: 0,
            tools: Vec::new(),
            finish_reason: None,
            usage: None,
        }
    }

    fn start(&mut self, id: &str, out: &mut Vec<SseEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(event(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        ));
    }

    fn close(&mut self, out: &mut Vec<SseEvent>) {
        if let Some((index, _)) = self.open.take() {
            out.push(event("content_block_stop", json!({"type": "content_block_stop", "index": index})));
        }
    }

    /// The index of an open block of `kind`, opening one (with `block` as its
    /// `content_block`) after closing any other.
    fn ensure(&mut self, kind: BlockKind, block: Value, out: &mut Vec<SseEvent>) -> u64 {
        if let Some((index, open)) = self.open {
            if open == kind {
                return index;
            }
        }
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((index, kind));
        out.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    fn text(&mut self, text: &str, out: &mut Vec<SseEvent>) {
        let index = self.ensure(BlockKind::Text, json!({"type": "text", "text": ""}), out);
        out.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
        ));
    }

    fn tool_call(&mut self, position: usize, call: &Value, out: &mut Vec<SseEvent>) {
        let call_index = call.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
        let known = self.tools.iter().find(|(c, _)| *c == call_index).map(|(_, b)| *b);
        let block = match known {
            Some(b) => b,
            None => {
                let f = call.get("function").unwrap_or(&Value::Null);
                let id =
                    call.get("id").and_then(Value::as_str).map_or_else(|| format!("toolu_{call_index}"), str::to_owned);
                let block = json!({
                    "type": "tool_use",
                    "id": id,
                    "name": f.get("name").and_then(Value::as_str).unwrap_or(""),
                    "input": {},
                });
                let b = self.ensure(BlockKind::Tool(call_index), block, out);
                self.tools.push((call_index, b));
                b
            }
        };
        let args = call.get("function").and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or("");
        if !args.is_empty() {
            out.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": block, "delta": {"type": "input_json_delta", "partial_json": args}}),
            ));
        }
    }

    /// Client events for one OpenAI chunk (or `[DONE]`).
    pub fn push(&mut self, ev: &SseEvent) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if ev.is_done() {
            self.end(&mut out);
            return out;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&ev.data) else {
            return out;
        };
        if let Some(err) = chunk.get("error").filter(|e| !e.is_null()) {
            let message = err.get("message").and_then(Value::as_str).unwrap_or("provider stream error");
            let kind = anthropic_error_type(err.get("type").and_then(Value::as_str).unwrap_or(""));
            out.push(event("error", json!({"type": "error", "error": {"type": kind, "message": message}})));
            self.done = true;
            return out;
        }
        self.start(chunk.get("id").and_then(Value::as_str).unwrap_or(""), &mut out);
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        let choices = chunk.get("choices").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        for choice in choices.iter().filter(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0) {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            if let Some(r) = delta.get("reasoning_content").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                let index = self.ensure(
                    BlockKind::Thinking,
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                    &mut out,
                );
                out.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": r}}),
                ));
            }
            for key in ["content", "refusal"] {
                if let Some(t) = delta.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()) {
                    self.text(t, &mut out);
                }
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for (k, call) in calls.iter().enumerate() {
                    self.tool_call(k, call, &mut out);
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(reason.to_owned());
                self.close(&mut out);
            }
        }
        if self.finish_reason.is_some() && self.usage.is_some() {
            self.end(&mut out);
        }
        out
    }

    fn end(&mut self, out: &mut Vec<SseEvent>) {
        if self.done {
            return;
        }
        self.start("", out);
        self.close(out);
        let reason = self.finish_reason.as_deref().map_or("end_turn", stop_reason);
        let usage = match &self.usage {
            Some(u) => anthropic_usage(u),
            None => json!({"output_tokens": 0}),
        };
        out.push(event(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null}, "usage": usage}),
        ));
        out.push(event("message_stop", json!({"type": "message_stop"})));
        self.done = true;
    }

    /// Events closing the client stream when the OpenAI stream ended without
    /// `[DONE]` (or without its usage chunk): the open block's stop,
    /// `message_delta` (stop reason end_turn unless a finish reason was seen)
    /// and `message_stop`. Nothing once the stream is complete.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        self.end(&mut out);
        out
    }
}

/// Anthropic's error type for an OpenAI one.
fn anthropic_error_type(openai: &str) -> &'static str {
    match openai {
        "invalid_request_error" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" => "not_found_error",
        "rate_limit_error" | "insufficient_quota" => "rate_limit_error",
        _ => "api_error",
    }
}
