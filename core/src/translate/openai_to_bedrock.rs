//! An OpenAI Chat Completions client served by an Amazon Bedrock model
//! through the Converse API (`POST /model/{modelId}/converse`, streamed:
//! `/converse-stream`, an AWS event stream, see [`crate::eventstream`]). The
//! model is named by the request path, not the body.
//!
//! Request mapping (OpenAI → Converse):
//!
//! | OpenAI | Converse |
//! |---|---|
//! | `system` / `developer` messages (anywhere) | `system[]{text}`, in order |
//! | user `content` string / `text` parts | `messages[]{role: user}` `{text}` blocks |
//! | `image_url` part with a `data:image/{png,jpeg,gif,webp};base64,` URL | `{image: {format, source: {bytes}}}` (base64, as the JSON protocol carries blobs) |
//! | `file` part with `file_data` (a `data:` URL of a PDF, CSV, Word, Excel, HTML, text or Markdown file) | `{document: {format, name, source: {bytes}}}`; `name` is the file name without its extension, reduced to the characters Bedrock allows, else `document-<n>` |
//! | assistant `content` + `tool_calls` | `{role: assistant}` `{text}` then `{toolUse: {toolUseId, name, input}}` blocks |
//! | `tool` messages | `{toolResult: {toolUseId, content: [{json}] or [{text}]}}` blocks of one user turn (a JSON object answer is `json`, anything else `text`) |
//! | `tools[].function{name, description, parameters}` | `toolConfig.tools[]{toolSpec: {name, description, inputSchema: {json}}}` (no parameters: an empty object schema) |
//! | `tool_choice` auto / required / named | `toolConfig.toolChoice` `{auto: {}}` / `{any: {}}` / `{tool: {name}}` |
//! | `tool_choice` none | no `toolConfig` at all (Converse has no "none"); refused when the conversation holds tool calls or results, because Converse then requires `toolConfig` and the model could call a tool |
//! | `max_completion_tokens` (else `max_tokens`), `temperature`, `top_p`, `stop` | `inferenceConfig` `maxTokens`, `temperature`, `topP`, `stopSequences` |
//! | `response_format` `json_schema` | `outputConfig.textFormat{type: json_schema, structure: {jsonSchema: {schema (a JSON string), name, description}}}` (Bedrock structured outputs; a model without them answers 400 itself) |
//!
//! Consecutive turns of one role are merged into one message (Converse wants
//! user and assistant turns to alternate, and the tool results of one
//! assistant turn in the next user turn). A request holding only
//! system/developer messages sends their text as the user turn.
//!
//! Refused with [`Error::InvalidRequest`] naming the field: `response_format`
//! `json_object` (Bedrock's JSON mode needs a schema), `n` > 1, `seed`,
//! `presence_penalty`, `frequency_penalty`, `logprobs`, `top_logprobs`, a
//! non-empty `logit_bias`, audio `modalities` / `audio`,
//! `web_search_options`, legacy `functions` / `function_call`, images by
//! http(s) URL or of another format, `input_audio` and `file_id` parts,
//! non-function tools, `function` role messages.
//!
//! Dropped as harmless: `user`, `store`, `metadata`, `service_tier`,
//! `reasoning_effort`, `verbosity`, `prediction`, `stream`, `stream_options`,
//! `parallel_tool_calls`, `prompt_cache_key`, `safety_identifier`, message
//! `name`s, image `detail`, tool `strict`, an assistant's
//! `reasoning_content`.
//!
//! Response mapping (Converse → OpenAI): `output.message.content[]` `text`
//! blocks are concatenated into `message.content` (`null` when there are
//! only tool calls), `reasoningContent.reasoningText.text` into
//! `message.reasoning_content`, `toolUse` blocks become `tool_calls` (id
//! `toolUseId`, `input` serialised to `arguments`). `stopReason` end_turn,
//! stop_sequence → `stop`; tool_use → `tool_calls`; max_tokens,
//! model_context_window_exceeded → `length`; guardrail_intervened,
//! content_filtered → `content_filter`; anything else → `stop`. Usage:
//! `prompt_tokens` = `inputTokens` + `cacheReadInputTokens` +
//! `cacheWriteInputTokens` (Bedrock counts the cached parts apart, as
//! Anthropic does), `cached_tokens` = `cacheReadInputTokens`,
//! `completion_tokens` = `outputTokens`, `total_tokens` their sum. Converse
//! bodies carry no id (it is the `x-amzn-requestid` header): `id` is empty
//! unless the caller sets it; `model` is the client's model name, `created` 0.
//!
//! Errors: Bedrock sends `{"message": "..."}` with the error type in the
//! `x-amzn-errortype` header (`ThrottlingException:http://...`); [`error`]
//! takes that type and answers OpenAI's shape with the type as `code` and a
//! status the client can act on ([`client_status`]).
//!
//! Streaming (`/converse-stream`, one event-stream message per event,
//! `:event-type` naming it, the payload the event's JSON with a `p` padding
//! member): `messageStart` → the role chunk; `contentBlockStart` of a
//! `toolUse` → a tool-call delta with id, name and empty arguments;
//! `contentBlockDelta` → `content`, `reasoning_content` or the tool call's
//! `arguments` fragment; `messageStop` → the finish chunk; `metadata` (the
//! last event) → the usage-only chunk (`choices: []`, always sent: a caller
//! whose client did not ask for it may drop it) and `data: [DONE]`. An
//! exception message (`:message-type: exception`, `:exception-type`
//! `throttlingException`, ...) or an error message becomes one
//! `data: {"error": {...}}` chunk and `[DONE]`; so does a bad frame given to
//! [`StreamTranslator::push_bytes`] (then [`StreamTranslator::finish`]).

use serde_json::{json, Map, Value};

use super::openai_request::{
    function_tool, push_turn, reject_common, stop_sequences, text_parts, tool_call as read_tool_call,
};
use super::{
    done_event, error_message, invalid, is_http_url, json_event, openai_chunk, openai_stream_end, parse_data_url,
    present, shaped_error,
};
use crate::api::ApiFamily;
use crate::error::Error;
use crate::eventstream::{self, Decoder, Message};
use crate::sse::SseEvent;
use crate::usage::{BedrockRaw, Usage};

// ---------------------------------------------------------------- request

/// Translate an OpenAI chat request into a Converse body. The model goes in
/// the path (`/model/{modelId}/converse` or `/converse-stream`).
pub fn request(body: &Value, _upstream_model: &str) -> Result<Value, Error> {
    let req = body.as_object().ok_or_else(|| invalid("request body must be a JSON object"))?;
    reject_unsupported(req)?;
    let messages =
        req.get("messages").and_then(Value::as_array).ok_or_else(|| invalid("`messages` must be an array"))?;
    let (mut system, mut turns, has_tool_blocks) = convert_messages(messages)?;
    if turns.is_empty() && !system.is_empty() {
        turns.push(json!({"role": "user", "content": std::mem::take(&mut system)}));
    }
    if turns.is_empty() {
        return Err(invalid("`messages` must contain at least one user or assistant message"));
    }
    let mut out = Map::new();
    out.insert("messages".into(), Value::Array(turns));
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    let config = inference_config(req)?;
    if !config.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(config));
    }
    if let Some(tool_config) = tool_config(req, has_tool_blocks)? {
        out.insert("toolConfig".into(), tool_config);
    }
    if let Some(output) = output_config(req)? {
        out.insert("outputConfig".into(), output);
    }
    Ok(Value::Object(out))
}

fn reject_unsupported(req: &Map<String, Value>) -> Result<(), Error> {
    reject_common(req, "Bedrock")?;
    let unsupported = |field: &str, why: &str| {
        Err(invalid(format!("`{field}` is not supported when this model is served by Bedrock: {why}")))
    };
    if let Some(n) = present(req, "n") {
        match n.as_u64() {
            Some(1) => {}
            Some(0) | None => return Err(invalid("`n` must be a positive integer")),
            Some(_) => return unsupported("n", "Converse returns one answer per request"),
        }
    }
    for field in ["seed", "presence_penalty", "frequency_penalty"] {
        if present(req, field).is_some() {
            return unsupported(field, "Converse has no such inference parameter");
        }
    }
    Ok(())
}

fn inference_config(req: &Map<String, Value>) -> Result<Map<String, Value>, Error> {
    let mut config = Map::new();
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        match present(req, from) {
            None => {}
            Some(v) if v.is_number() => {
                config.insert(to.into(), v.clone());
            }
            Some(_) => return Err(invalid(format!("`{from}` must be a number"))),
        }
    }
    if let Some(v) = present(req, "max_completion_tokens").or_else(|| present(req, "max_tokens")) {
        let n = v
            .as_u64()
            .filter(|n| *n >= 1)
            .ok_or_else(|| invalid("`max_completion_tokens` / `max_tokens` must be a positive integer"))?;
        config.insert("maxTokens".into(), Value::from(n));
    }
    let stop = stop_sequences(req)?;
    if !stop.is_empty() {
        config.insert("stopSequences".into(), Value::Array(stop));
    }
    Ok(config)
}

fn output_config(req: &Map<String, Value>) -> Result<Option<Value>, Error> {
    let Some(format) = present(req, "response_format") else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Err(invalid(
            "`response_format` `json_object` is not supported when this model is served by Bedrock: \
             its structured output needs a schema; use `json_schema`",
        )),
        Some("json_schema") => {
            let spec = format.get("json_schema");
            let schema = spec
                .and_then(|s| s.get("schema"))
                .filter(|s| s.is_object())
                .ok_or_else(|| invalid("`response_format.json_schema.schema` must be an object"))?;
            let mut def = Map::new();
            def.insert("schema".into(), Value::from(schema.to_string()));
            for key in ["name", "description"] {
                if let Some(v) = spec.and_then(|s| s.get(key)).filter(|v| v.is_string()) {
                    def.insert(key.into(), v.clone());
                }
            }
            Ok(Some(json!({"textFormat": {"type": "json_schema", "structure": {"jsonSchema": def}}})))
        }
        _ => Err(invalid("`response_format.type` must be text, json_object or json_schema")),
    }
}

fn tool_config(req: &Map<String, Value>, has_tool_blocks: bool) -> Result<Option<Value>, Error> {
    let tools: Vec<Value> = match present(req, "tools") {
        None => Vec::new(),
        Some(Value::Array(tools)) => {
            tools.iter().enumerate().map(|(i, t)| convert_tool(i, t)).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(invalid("`tools` must be an array")),
    };
    let choice = match present(req, "tool_choice") {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({"auto": {}})),
            "required" => Some(json!({"any": {}})),
            "none" => {
                if has_tool_blocks && !tools.is_empty() {
                    return Err(invalid(
                        "`tool_choice` `none` is not supported when this model is served by Bedrock and the \
                         conversation holds tool calls: Converse has no \"none\" and needs the tools then; \
                         use `auto` or leave out `tools`",
                    ));
                }
                return Ok(None);
            }
            other => return Err(invalid(format!("`tool_choice` `{other}` is not supported"))),
        },
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("`tool_choice.function.name` must be a string"))?;
            Some(json!({"tool": {"name": name}}))
        }
        Some(_) => return Err(invalid("`tool_choice` must be auto, none, required or a named function")),
    };
    if tools.is_empty() {
        return Ok(None);
    }
    let mut config = Map::new();
    config.insert("tools".into(), Value::Array(tools));
    if let Some(choice) = choice {
        config.insert("toolChoice".into(), choice);
    }
    Ok(Some(Value::Object(config)))
}

fn convert_tool(i: usize, tool: &Value) -> Result<Value, Error> {
    let path = format!("tools[{i}]");
    let (f, name) = function_tool(i, tool)?;
    let mut spec = Map::new();
    spec.insert("name".into(), Value::from(name));
    if let Some(d) = f.get("description").and_then(Value::as_str).filter(|d| !d.is_empty()) {
        spec.insert("description".into(), Value::from(d));
    }
    let schema = match f.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => return Err(invalid(format!("`{path}.function.parameters` must be an object"))),
    };
    spec.insert("inputSchema".into(), json!({ "json": schema }));
    Ok(json!({ "toolSpec": spec }))
}

/// The system blocks, the conversation, and whether it holds tool blocks.
fn convert_messages(messages: &[Value]) -> Result<(Vec<Value>, Vec<Value>, bool), Error> {
    let mut system = Vec::new();
    let mut turns: Vec<Value> = Vec::new();
    let mut has_tool_blocks = false;
    let mut documents = 0usize;
    for (i, m) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let msg = m.as_object().ok_or_else(|| invalid(format!("`{path}` must be an object")))?;
        let role =
            msg.get("role").and_then(Value::as_str).ok_or_else(|| invalid(format!("`{path}.role` is missing")))?;
        let (role, blocks) = match role {
            "system" | "developer" => {
                for text in text_parts(msg.get("content"), &path)? {
                    if !text.is_empty() {
                        system.push(json!({ "text": text }));
                    }
                }
                continue;
            }
            "user" => ("user", user_blocks(msg.get("content"), &path, &mut documents)?),
            "assistant" => {
                let blocks = assistant_blocks(msg, &path)?;
                has_tool_blocks |= blocks.iter().any(|b| b.get("toolUse").is_some());
                ("assistant", blocks)
            }
            "tool" => {
                has_tool_blocks = true;
                ("user", vec![tool_result(msg, &path)?])
            }
            "function" => {
                return Err(invalid(format!(
                    "`{path}.role` `function` is not supported: use tools and `tool` messages"
                )))
            }
            other => return Err(invalid(format!("`{path}.role` `{other}` is not a chat role"))),
        };
        push_turn(&mut turns, role, "content", blocks);
    }
    Ok((system, turns, has_tool_blocks))
}

fn user_blocks(content: Option<&Value>, path: &str, documents: &mut usize) -> Result<Vec<Value>, Error> {
    match content {
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({ "text": s })]),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                if let Some(block) = user_block(p, &format!("{path}.content[{j}]"), documents)? {
                    out.push(block);
                }
            }
            Ok(out)
        }
        _ => Err(invalid(format!("`{path}.content` must be a string or an array of parts"))),
    }
}

fn user_block(part: &Value, path: &str, documents: &mut usize) -> Result<Option<Value>, Error> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => {
            let text = part
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("`{path}.text` must be a string")))?;
            Ok((!text.is_empty()).then(|| json!({ "text": text })))
        }
        Some("image_url") => {
            let url = part
                .get("image_url")
                .and_then(|i| i.get("url").or(Some(i)))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("`{path}.image_url.url` must be a string")))?;
            if is_http_url(url) {
                return Err(invalid(format!(
                    "`{path}.image_url.url`: Bedrock takes images only inline, as a base64 `data:` URL"
                )));
            }
            let (media, data) = parse_data_url(url)
                .ok_or_else(|| invalid(format!("`{path}.image_url.url` must be a base64 `data:` URL")))?;
            let format = match media {
                "image/png" => "png",
                "image/jpeg" | "image/jpg" => "jpeg",
                "image/gif" => "gif",
                "image/webp" => "webp",
                other => {
                    return Err(invalid(format!(
                    "`{path}.image_url.url`: image type `{other}` is not supported by Bedrock (png, jpeg, gif, webp)"
                )))
                }
            };
            Ok(Some(json!({"image": {"format": format, "source": {"bytes": data}}})))
        }
        Some("file") => {
            let file = part.get("file").ok_or_else(|| invalid(format!("`{path}.file` is missing")))?;
            if file.get("file_id").is_some_and(|v| !v.is_null()) {
                return Err(invalid(format!(
                    "`{path}.file.file_id`: Bedrock cannot read uploaded files; send `file_data`"
                )));
            }
            let url = file
                .get("file_data")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("`{path}.file.file_data` must be a string")))?;
            let (media, data) = parse_data_url(url)
                .ok_or_else(|| invalid(format!("`{path}.file.file_data` must be a base64 `data:` URL")))?;
            let format = document_format(media).ok_or_else(|| {
                invalid(format!("`{path}.file.file_data`: document type `{media}` is not supported by Bedrock"))
            })?;
            *documents += 1;
            let name = file
                .get("filename")
                .and_then(Value::as_str)
                .map(document_name)
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| format!("document-{documents}"));
            Ok(Some(json!({"document": {"format": format, "name": name, "source": {"bytes": data}}})))
        }
        Some("input_audio") => Err(invalid(format!("`{path}` of type `input_audio` is not supported by Bedrock"))),
        other => Err(invalid(format!("`{path}.type` `{}` is not supported", other.unwrap_or("?")))),
    }
}

/// Converse's document format for a media type.
fn document_format(media: &str) -> Option<&'static str> {
    Some(match media {
        "application/pdf" => "pdf",
        "text/csv" => "csv",
        "application/msword" => "doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        "text/html" => "html",
        "text/plain" => "txt",
        "text/markdown" => "md",
        _ => return None,
    })
}

/// A document name Bedrock accepts (letters, digits, single spaces, hyphens,
/// parentheses, square brackets), from a file name without its extension.
fn document_name(filename: &str) -> String {
    let stem = filename.rsplit_once('.').map_or(filename, |(stem, _)| stem);
    let mut out = String::new();
    for c in stem.chars() {
        let c = if c.is_alphanumeric() || matches!(c, '-' | '(' | ')' | '[' | ']') { c } else { ' ' };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    out.trim_end().chars().take(200).collect()
}

fn assistant_blocks(msg: &Map<String, Value>, path: &str) -> Result<Vec<Value>, Error> {
    let mut blocks: Vec<Value> = text_parts(msg.get("content"), path)?
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(|t| json!({ "text": t }))
        .collect();
    if let Some(calls) = present(msg, "tool_calls") {
        let calls = calls.as_array().ok_or_else(|| invalid(format!("`{path}.tool_calls` must be an array")))?;
        for (k, call) in calls.iter().enumerate() {
            let (id, name, input) = read_tool_call(call, &format!("{path}.tool_calls[{k}]"))?;
            blocks.push(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}));
        }
    }
    Ok(blocks)
}

fn tool_result(msg: &Map<String, Value>, path: &str) -> Result<Value, Error> {
    let id = msg
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("`{path}.tool_call_id` must be a string")))?;
    let text = text_parts(msg.get("content"), path)?.concat();
    let content = match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => json!({ "json": v }),
        _ => json!({ "text": text }),
    };
    Ok(json!({"toolResult": {"toolUseId": id, "content": [content]}}))
}

// --------------------------------------------------------------- response

/// Converse `stopReason` to OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "tool_use" => "tool_calls",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        // end_turn, stop_sequence and anything new
        _ => "stop",
    }
}

fn openai_usage(usage: Option<Usage>) -> Value {
    let u = usage.unwrap_or_default();
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

/// Usage from a Converse `usage` object (see the module docs for the mapping).
pub fn usage_object(usage: &Value) -> Option<Usage> {
    usage.is_object().then(|| BedrockRaw::of(usage)).and_then(BedrockRaw::usage)
}

/// Usage from a whole Converse response body; `Ok(None)` when it has none
/// (an error body), `Err` when it is not JSON.
pub fn usage_from_body(body: &[u8]) -> Result<Option<Usage>, Error> {
    let v: Value = serde_json::from_slice(body).map_err(|e| Error::InvalidJson(e.to_string()))?;
    Ok(v.get("usage").and_then(usage_object))
}

/// Usage from one ConverseStream message: the `metadata` event's `usage`.
pub fn usage_from_message(message: &Message) -> Option<Usage> {
    if message.message_type().is_some_and(|t| t != "event") || message.event_type() != Some("metadata") {
        return None;
    }
    let v: Value = serde_json::from_slice(&message.payload).ok()?;
    let v = v.get("metadata").unwrap_or(&v);
    v.get("usage").and_then(usage_object)
}

/// Translate a non-streamed Converse response into an OpenAI chat
/// completion reporting `client_model`.
pub fn response(body: &Value, client_model: &str) -> Result<Value, Error> {
    let obj = body.as_object().ok_or_else(|| invalid("provider response must be a JSON object"))?;
    let message = obj
        .get("output")
        .and_then(|o| o.get("message"))
        .ok_or_else(|| invalid("provider response has no `output.message`"))?;
    let (mut text, mut reasoning, mut tool_calls) = (String::new(), String::new(), Vec::new());
    for block in message.get("content").and_then(Value::as_array).into_iter().flatten() {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(call) = block.get("toolUse") {
            tool_calls.push(tool_call(call));
        } else if let Some(t) = block
            .get("reasoningContent")
            .and_then(|r| r.get("reasoningText"))
            .and_then(|r| r.get("text"))
            .and_then(Value::as_str)
        {
            reasoning.push_str(t);
        }
    }
    let mut out_message = Map::new();
    out_message.insert("role".into(), Value::from("assistant"));
    let content = if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::from(text) };
    out_message.insert("content".into(), content);
    if !reasoning.is_empty() {
        out_message.insert("reasoning_content".into(), Value::from(reasoning));
    }
    let called = !tool_calls.is_empty();
    if called {
        out_message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    let finish = match obj.get("stopReason").and_then(Value::as_str) {
        Some(reason) => finish_reason(reason),
        None if called => "tool_calls",
        None => "stop",
    };
    Ok(json!({
        "id": obj.get("id").and_then(Value::as_str).unwrap_or(""),
        "object": "chat.completion",
        "created": 0,
        "model": client_model,
        "choices": [{"index": 0, "message": out_message, "logprobs": null, "finish_reason": finish}],
        "usage": openai_usage(obj.get("usage").and_then(usage_object)),
    }))
}

fn tool_call(call: &Value) -> Value {
    let input = call.get("input").cloned().unwrap_or_else(|| json!({}));
    json!({
        "id": call.get("toolUseId").cloned().unwrap_or_else(|| Value::from("")),
        "type": "function",
        "function": {"name": call.get("name").cloned().unwrap_or(Value::Null), "arguments": input.to_string()},
    })
}

// ----------------------------------------------------------------- errors

/// The error type alone, from an `x-amzn-errortype` header value
/// (`ThrottlingException:http://internal.amazon.com/coral/...`), a body's
/// `__type` (`com.amazon.bedrock#ValidationException`) or a stream's
/// `:exception-type` (`throttlingException`), first letter upper-cased.
pub fn error_type_name(raw: &str) -> String {
    let name = raw.split(':').next().unwrap_or(raw);
    let name = name.rsplit('#').next().unwrap_or(name).trim();
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The HTTP status a client gets for a Bedrock error: the type decides when
/// it is known (so that a throttled model is a 429 and a model timeout a
/// 5xx whatever Bedrock's own status), else Bedrock's `status`.
pub fn client_status(error_type: Option<&str>, status: u16) -> u16 {
    match error_type.map(error_type_name).as_deref() {
        Some("ThrottlingException" | "ModelNotReadyException" | "ServiceQuotaExceededException") => 429,
        Some("ValidationException") => 400,
        Some("AccessDeniedException") => 403,
        Some("ResourceNotFoundException") => 404,
        Some("ModelTimeoutException") => 504,
        Some("ServiceUnavailableException") => 503,
        Some("InternalServerException") => 500,
        Some("ModelErrorException" | "ModelStreamErrorException") => 502,
        _ => status,
    }
}

/// Translate a Bedrock error body (`{"message": ...}`; some services say
/// `Message`) with HTTP `status` and the `x-amzn-errortype` header (if any)
/// into OpenAI's shape: `type` follows [`client_status`], `code` is the
/// Bedrock error type (`ThrottlingException`, ...) or `upstream_error`.
pub fn error(body: &Value, status: u16, error_type: Option<&str>) -> Value {
    let kind = error_type
        .map(str::to_owned)
        .or_else(|| body.get("__type").and_then(Value::as_str).map(str::to_owned))
        .map(|t| error_type_name(&t))
        .filter(|t| !t.is_empty());
    let message = match body.get("Message").and_then(Value::as_str) {
        Some(m) if body.get("message").is_none() => m.to_owned(),
        _ => error_message(body, status),
    };
    let status = client_status(kind.as_deref(), status);
    shaped_error(ApiFamily::OpenAi, status, &message, kind.as_deref().unwrap_or("upstream_error"))
}

// -------------------------------------------------------------- streaming

/// ConverseStream events → OpenAI `chat.completion.chunk` events.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    id: String,
    started: bool,
    /// Content block index → the OpenAI tool call index, for tool blocks.
    tool_blocks: Vec<(u64, u64)>,
    finished: bool,
    counts: BedrockRaw,
    done: bool,
    decoder: Decoder,
    /// Events decoded before a bad frame, and the error chunk, for `finish`.
    pending: Vec<SseEvent>,
}

impl StreamTranslator {
    pub fn new(client_model: &str) -> Self {
        StreamTranslator::with_decoder(client_model, Decoder::new())
    }

    /// A translator whose byte-level decoder ([`StreamTranslator::push_bytes`])
    /// is `decoder` (for its message size bound).
    pub fn with_decoder(client_model: &str, decoder: Decoder) -> Self {
        StreamTranslator {
            model: client_model.to_owned(),
            id: String::new(),
            started: false,
            tool_blocks: Vec::new(),
            finished: false,
            counts: BedrockRaw::default(),
            done: false,
            decoder,
            pending: Vec::new(),
        }
    }

    /// Set the chunks' `id` (Bedrock's request id, from `x-amzn-requestid`).
    pub fn set_id(&mut self, id: &str) {
        self.id = id.to_owned();
    }

    /// The usage seen so far (from the `metadata` event).
    pub fn usage(&self) -> Option<Usage> {
        self.counts.usage()
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

    /// Client events for the stream's bytes, decoded as they come. On a bad
    /// frame the error is returned and the stream is over: [`Self::finish`]
    /// then gives the events of the frames before it, an error chunk and
    /// `[DONE]`.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, eventstream::Error> {
        let mut messages = Vec::new();
        let result = self.decoder.feed(bytes, &mut messages);
        let mut out = Vec::new();
        for m in &messages {
            out.extend(self.push_message(m));
        }
        match result {
            Ok(()) => Ok(out),
            Err(e) => {
                self.pending.extend(out);
                self.fail(&e);
                Err(e)
            }
        }
    }

    /// An error chunk and `[DONE]` into `pending`, for a broken stream.
    fn fail(&mut self, e: &eventstream::Error) {
        if self.done {
            return;
        }
        let shaped = shaped_error(ApiFamily::OpenAi, e.status(), &e.to_string(), e.code());
        self.pending.push(json_event(None, &shaped));
        self.pending.push(done_event());
        self.done = true;
    }

    /// Client events for one decoded event-stream message.
    pub fn push_message(&mut self, message: &Message) -> Vec<SseEvent> {
        if self.done {
            return Vec::new();
        }
        match message.message_type().unwrap_or("event") {
            "exception" => {
                let kind = message.exception_type().unwrap_or("InternalServerException");
                let body = serde_json::from_slice::<Value>(&message.payload).unwrap_or(Value::Null);
                self.error_chunk(&body, Some(kind))
            }
            "error" => {
                let kind = message.header_str(":error-code").unwrap_or("InternalServerException").to_owned();
                let text = message.header_str(":error-message").unwrap_or("the provider's stream failed").to_owned();
                self.error_chunk(&json!({ "message": text }), Some(&kind))
            }
            _ => {
                let Ok(data) = serde_json::from_slice::<Value>(&message.payload) else {
                    return Vec::new();
                };
                match message.event_type() {
                    Some(name) => self.push_event(name, &data),
                    // No `:event-type`: the JSON form, `{"<event>": {...}}`.
                    None => match data.as_object().and_then(|o| o.iter().next()) {
                        Some((name, inner)) => {
                            let name = name.clone();
                            self.push_event(&name, inner)
                        }
                        None => Vec::new(),
                    },
                }
            }
        }
    }

    fn error_chunk(&mut self, body: &Value, kind: Option<&str>) -> Vec<SseEvent> {
        let status = client_status(kind, 500);
        let shaped = error(body, status, kind);
        self.done = true;
        vec![json_event(None, &shaped), done_event()]
    }

    /// Client events for one ConverseStream event given by name and JSON
    /// (the payload of an event message, or the member of the SDKs' union
    /// form `{"contentBlockDelta": {...}}`).
    pub fn push_event(&mut self, name: &str, data: &Value) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        // The payload may itself be wrapped in the event's name.
        let data = data.get(name).filter(|v| v.is_object()).unwrap_or(data);
        match name {
            "messageStart" => self.start(&mut out),
            "contentBlockStart" => {
                self.start(&mut out);
                if let Some(tool) = data.get("start").and_then(|s| s.get("toolUse")) {
                    let block = data.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
                    let index = self.tool_blocks.len() as u64;
                    self.tool_blocks.push((block, index));
                    let delta = json!({"tool_calls": [{
                        "index": index,
                        "id": tool.get("toolUseId").cloned().unwrap_or_else(|| Value::from("")),
                        "type": "function",
                        "function": {"name": tool.get("name").cloned().unwrap_or(Value::Null), "arguments": ""},
                    }]});
                    out.push(self.chunk(delta, None));
                }
            }
            "contentBlockDelta" => {
                self.start(&mut out);
                let Some(delta) = data.get("delta") else { return out };
                if let Some(t) = delta.get("text").and_then(Value::as_str) {
                    if !t.is_empty() {
                        out.push(self.chunk(json!({ "content": t }), None));
                    }
                } else if let Some(tool) = delta.get("toolUse") {
                    let block = data.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
                    let fragment = tool.get("input").and_then(Value::as_str).unwrap_or("");
                    let index = self.tool_blocks.iter().find(|(b, _)| *b == block).map(|(_, i)| *i);
                    if let (Some(index), false) = (index, fragment.is_empty()) {
                        let delta = json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]});
                        out.push(self.chunk(delta, None));
                    }
                } else if let Some(t) =
                    delta.get("reasoningContent").and_then(|r| r.get("text")).and_then(Value::as_str)
                {
                    if !t.is_empty() {
                        out.push(self.chunk(json!({ "reasoning_content": t }), None));
                    }
                }
            }
            "messageStop" => {
                self.start(&mut out);
                let reason = data.get("stopReason").and_then(Value::as_str).unwrap_or("end_turn");
                self.finish_choice(Some(finish_reason(reason)), &mut out);
            }
            "metadata" => {
                if let Some(u) = data.get("usage").filter(|u| u.is_object()) {
                    self.counts = BedrockRaw::of(u);
                }
                out.extend(self.close());
            }
            // contentBlockStop, and events added later
            _ => {}
        }
        out
    }

    fn finish_choice(&mut self, reason: Option<&str>, out: &mut Vec<SseEvent>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let reason = reason.unwrap_or(if self.tool_blocks.is_empty() { "stop" } else { "tool_calls" });
        out.push(self.chunk(json!({}), Some(reason)));
    }

    /// The closing events: a finish chunk if none was sent, the usage chunk, `[DONE]`.
    fn close(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.start(&mut out);
        self.finish_choice(None, &mut out);
        openai_stream_end(&self.id, &self.model, openai_usage(self.counts.usage()), &mut out);
        self.done = true;
        out
    }

    /// Events closing the client stream at the end of Bedrock's: after a bad
    /// frame or a stream cut inside a frame (when bytes were pushed), the
    /// events before it, an error chunk and `[DONE]`; else, when the stream
    /// ended before its `metadata` event, a finish chunk, the usage chunk and
    /// `[DONE]`. Nothing once `[DONE]` was sent.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        if let Err(e) = self.decoder.finish() {
            self.fail(&e);
        }
        let mut out = std::mem::take(&mut self.pending);
        out.extend(self.close());
        out
    }
}
