//! An OpenAI Chat Completions client served by a Gemini model (the Gemini
//! API's `generateContent` / `streamGenerateContent`; Vertex AI takes the
//! same body). The model is named by the request path, not the body.
//!
//! Request mapping (OpenAI → Gemini):
//!
//! | OpenAI | Gemini |
//! |---|---|
//! | `system` / `developer` messages (anywhere) | `systemInstruction.parts[].text`, in order |
//! | user `content` string / `text` parts | `contents[]{role: user}` `text` parts |
//! | `image_url` part with a `data:` URL, `file` part with `file_data`, `input_audio` part | `inlineData{mimeType, data}` |
//! | assistant `content` + `tool_calls` | `{role: model}` `text` then `functionCall{name, args}` parts |
//! | `tool` messages | `functionResponse{name, response}` parts of one user turn; the name is the one of the earlier call with that id; a JSON object answer is the `response`, anything else `{"output": text}` |
//! | `tools[].function{name, description, parameters}` | `tools[0].functionDeclarations[]{name, description, parametersJsonSchema}` |
//! | `tool_choice` auto / none / required / named | `toolConfig.functionCallingConfig.mode` AUTO / NONE / ANY / ANY with `allowedFunctionNames` |
//! | `temperature`, `top_p`, `max_completion_tokens` (else `max_tokens`), `stop`, `n`, `seed`, `presence_penalty`, `frequency_penalty` | `generationConfig` `temperature`, `topP`, `maxOutputTokens`, `stopSequences`, `candidateCount`, `seed`, `presencePenalty`, `frequencyPenalty` |
//! | `response_format` `json_object` / `json_schema` | `responseMimeType: application/json` (+ `responseJsonSchema`) |
//!
//! Consecutive turns of one role are merged into one `content` (Gemini
//! wants turns to alternate). A request holding only system/developer
//! messages sends their text as the user turn.
//!
//! Refused with [`Error::InvalidRequest`] naming the field: `logprobs`,
//! `top_logprobs`, audio `modalities` / `audio`, a non-empty `logit_bias`,
//! `web_search_options`, legacy `functions` / `function_call`, images by
//! http(s) URL (Gemini reads only inline data or its own file store),
//! `file_id` parts, non-function tools, `function` role messages, and a
//! `tool` message whose `tool_call_id` no earlier assistant call has.
//!
//! Dropped as harmless: `user`, `store`, `metadata`, `service_tier`,
//! `reasoning_effort`, `verbosity`, `prediction`, `stream_options`,
//! `parallel_tool_calls` (Gemini has no switch for it), `prompt_cache_key`,
//! `safety_identifier`, message `name`s, image `detail`, tool `strict`.
//!
//! Response mapping (Gemini → OpenAI): each candidate is a choice (its
//! `index`); `text` parts are concatenated into `message.content`
//! (`null` when there are only tool calls), `thought` parts into
//! `message.reasoning_content`, `functionCall` parts become `tool_calls`
//! (`args` serialised to `arguments`). `finishReason` STOP → `stop`
//! (`tool_calls` when the candidate called a tool), MAX_TOKENS → `length`,
//! SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII, IMAGE_SAFETY →
//! `content_filter`, anything else → `stop`. A prompt Gemini blocked
//! (`promptFeedback.blockReason`, no candidates) is one choice with
//! `content: null`, a `refusal` naming the reason and `content_filter`.
//! Usage: `prompt_tokens` = `promptTokenCount` + `toolUsePromptTokenCount`,
//! `completion_tokens` = `candidatesTokenCount` + `thoughtsTokenCount`
//! (reported apart as `reasoning_tokens`), `cached_tokens` =
//! `cachedContentTokenCount`. `id` is Gemini's `responseId`, `model` the
//! client's model name, `created` is 0.
//!
//! Tool call ids: Gemini's `functionCall.id` when it sends one, else
//! `call_<n>`. A call's `thoughtSignature` (which Gemini wants back with the
//! call on the next turn) rides in the id, base64url, after `_ts_`, and is
//! put back on the `functionCall` part when the client returns the call.
//!
//! Streaming (`alt=sse`: every event is a whole `GenerateContentResponse`
//! with the new parts): a role chunk per candidate on its first event,
//! content / reasoning deltas as they come, each function call as one
//! tool-call delta with its whole arguments, the finish chunk on the event
//! carrying `finishReason`; at the end of the stream (Gemini sends no end
//! event) a usage-only chunk (`choices: []`, always sent: a caller whose
//! client did not ask for it may drop it) and `data: [DONE]`. An event
//! holding `error` becomes a `data: {"error": {...}}` chunk and `[DONE]`.

use serde_json::{json, Map, Value};

use super::openai_request::{
    function_tool, push_turn, reject_common, stop_sequences, text_parts, tool_call as tool_call_parts,
};
use super::{
    done_event, error_message, invalid, is_http_url, json_event, openai_chunk, openai_stream_end, parse_data_url,
    present, shaped_error,
};
use crate::api::ApiFamily;
use crate::error::Error;
use crate::sse::SseEvent;

/// The separator between a tool call id and the call's thought signature.
const SIGNATURE_MARK: &str = "_ts_";

// ---------------------------------------------------------------- request

/// Translate an OpenAI chat request into a Gemini `generateContent` body.
/// The model goes in the path ([`crate::policy::Provider::request_path`]).
pub fn request(body: &Value, _upstream_model: &str) -> Result<Value, Error> {
    let req = body.as_object().ok_or_else(|| invalid("request body must be a JSON object"))?;
    reject_unsupported(req)?;
    let messages =
        req.get("messages").and_then(Value::as_array).ok_or_else(|| invalid("`messages` must be an array"))?;
    let (mut system, mut contents) = convert_messages(messages)?;
    if contents.is_empty() && !system.is_empty() {
        contents.push(json!({"role": "user", "parts": std::mem::take(&mut system)}));
    }
    if contents.is_empty() {
        return Err(invalid("`messages` must contain at least one user or assistant message"));
    }
    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let tools = match present(req, "tools") {
        None => Vec::new(),
        Some(Value::Array(tools)) => {
            tools.iter().enumerate().map(|(i, t)| convert_tool(i, t)).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(invalid("`tools` must be an array")),
    };
    if !tools.is_empty() {
        out.insert("tools".into(), json!([{"functionDeclarations": tools}]));
        if let Some(choice) = present(req, "tool_choice") {
            out.insert("toolConfig".into(), json!({"functionCallingConfig": convert_tool_choice(choice)?}));
        }
    }
    let config = generation_config(req)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    Ok(Value::Object(out))
}

fn reject_unsupported(req: &Map<String, Value>) -> Result<(), Error> {
    reject_common(req, "Gemini")
}

fn generation_config(req: &Map<String, Value>) -> Result<Map<String, Value>, Error> {
    let mut config = Map::new();
    let number = |key: &str| -> Result<Option<Value>, Error> {
        match present(req, key) {
            None => Ok(None),
            Some(v) if v.is_number() => Ok(Some(v.clone())),
            Some(_) => Err(invalid(format!("`{key}` must be a number"))),
        }
    };
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = number(from)? {
            config.insert(to.into(), v);
        }
    }
    if let Some(seed) = present(req, "seed") {
        let seed = seed.as_i64().ok_or_else(|| invalid("`seed` must be an integer"))?;
        config.insert("seed".into(), Value::from(seed));
    }
    if let Some(v) = present(req, "max_completion_tokens").or_else(|| present(req, "max_tokens")) {
        let n = v
            .as_u64()
            .ok_or_else(|| invalid("`max_completion_tokens` / `max_tokens` must be a non-negative integer"))?;
        config.insert("maxOutputTokens".into(), Value::from(n));
    }
    if let Some(n) = present(req, "n") {
        let n = n.as_u64().filter(|n| *n >= 1).ok_or_else(|| invalid("`n` must be a positive integer"))?;
        if n > 1 {
            config.insert("candidateCount".into(), Value::from(n));
        }
    }
    let stop = stop_sequences(req)?;
    if !stop.is_empty() {
        config.insert("stopSequences".into(), Value::Array(stop));
    }
    if let Some(format) = present(req, "response_format") {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                config.insert("responseMimeType".into(), Value::from("application/json"));
            }
            Some("json_schema") => {
                let schema = format
                    .get("json_schema")
                    .and_then(|s| s.get("schema"))
                    .filter(|s| s.is_object())
                    .ok_or_else(|| invalid("`response_format.json_schema.schema` must be an object"))?;
                config.insert("responseMimeType".into(), Value::from("application/json"));
                config.insert("responseJsonSchema".into(), schema.clone());
            }
            _ => return Err(invalid("`response_format.type` must be text, json_object or json_schema")),
        }
    }
    Ok(config)
}

/// The system parts and the conversation, in Gemini form.
fn convert_messages(messages: &[Value]) -> Result<(Vec<Value>, Vec<Value>), Error> {
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Tool call id → function name, from the assistant turns so far.
    let mut calls: Vec<(String, String)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let msg = m.as_object().ok_or_else(|| invalid(format!("`{path}` must be an object")))?;
        let role =
            msg.get("role").and_then(Value::as_str).ok_or_else(|| invalid(format!("`{path}.role` is missing")))?;
        let (role, parts) = match role {
            "system" | "developer" => {
                for text in text_parts(msg.get("content"), &path)? {
                    if !text.is_empty() {
                        system.push(json!({"text": text}));
                    }
                }
                continue;
            }
            "user" => ("user", user_parts(msg.get("content"), &path)?),
            "assistant" => ("model", assistant_parts(msg, &path, &mut calls)?),
            "tool" => ("user", vec![function_response(msg, &path, &calls)?]),
            "function" => {
                return Err(invalid(format!(
                    "`{path}.role` `function` is not supported: use tools and `tool` messages"
                )))
            }
            other => return Err(invalid(format!("`{path}.role` `{other}` is not a chat role"))),
        };
        push_turn(&mut contents, role, "parts", parts);
    }
    Ok((system, contents))
}

fn user_parts(content: Option<&Value>, path: &str) -> Result<Vec<Value>, Error> {
    match content {
        Some(Value::String(s)) => Ok(vec![json!({"text": s})]),
        Some(Value::Array(parts)) => {
            parts.iter().enumerate().map(|(j, p)| user_part(p, &format!("{path}.content[{j}]"))).collect()
        }
        _ => Err(invalid(format!("`{path}.content` must be a string or an array of parts"))),
    }
}

fn user_part(part: &Value, path: &str) -> Result<Value, Error> {
    let inline = |media: &str, data: &str| json!({"inlineData": {"mimeType": media, "data": data}});
    match part.get("type").and_then(Value::as_str) {
        Some("text") => {
            let text = part
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("`{path}.text` must be a string")))?;
            Ok(json!({"text": text}))
        }
        Some("image_url") => {
            let url = part
                .get("image_url")
                .and_then(|i| i.get("url").and_then(Value::as_str).or_else(|| i.as_str()))
                .ok_or_else(|| invalid(format!("`{path}.image_url.url` must be a string")))?;
            match parse_data_url(url) {
                Some((media, data)) => Ok(inline(media, data)),
                None if is_http_url(url) => Err(invalid(format!(
                    "`{path}.image_url.url`: the Gemini model serving this request takes images inline: send a base64 data: URL"
                ))),
                None => Err(invalid(format!("`{path}.image_url.url` must be a base64 data: URL"))),
            }
        }
        Some("file") => {
            let file = part.get("file").unwrap_or(&Value::Null);
            if file.get("file_id").is_some_and(|v| !v.is_null()) {
                return Err(invalid(format!("`{path}.file.file_id` is not supported: send the file as `file_data`")));
            }
            let data = file
                .get("file_data")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("`{path}.file.file_data` must be a string")))?;
            let (media, payload) = parse_data_url(data)
                .ok_or_else(|| invalid(format!("`{path}.file.file_data` must be a base64 data: URL")))?;
            Ok(inline(media, payload))
        }
        Some("input_audio") => {
            let audio = part.get("input_audio").unwrap_or(&Value::Null);
            let data = audio
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("`{path}.input_audio.data` must be a string")))?;
            let media = match audio.get("format").and_then(Value::as_str) {
                Some("wav") => "audio/wav",
                Some("mp3") => "audio/mp3",
                _ => return Err(invalid(format!("`{path}.input_audio.format` must be wav or mp3"))),
            };
            Ok(inline(media, data))
        }
        Some(other) => Err(invalid(format!(
            "`{path}` of type `{other}` is not supported by the Gemini model serving this request"
        ))),
        None => Err(invalid(format!("`{path}.type` is missing"))),
    }
}

fn assistant_parts(
    msg: &Map<String, Value>,
    path: &str,
    calls: &mut Vec<(String, String)>,
) -> Result<Vec<Value>, Error> {
    if present(msg, "function_call").is_some() {
        return Err(invalid(format!("`{path}.function_call` is not supported: use `tool_calls`")));
    }
    let mut parts: Vec<Value> = text_parts(msg.get("content"), path)?
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(|t| json!({"text": t}))
        .collect();
    let tool_calls = match present(msg, "tool_calls") {
        None => &[][..],
        Some(Value::Array(list)) => list.as_slice(),
        Some(_) => return Err(invalid(format!("`{path}.tool_calls` must be an array"))),
    };
    for (k, call) in tool_calls.iter().enumerate() {
        let (id, name, args) = tool_call_parts(call, &format!("{path}.tool_calls[{k}]"))?;
        let mut part = Map::new();
        part.insert("functionCall".into(), json!({"name": name, "args": args}));
        if let Some(signature) = signature_of(id) {
            part.insert("thoughtSignature".into(), Value::from(signature));
        }
        parts.push(Value::Object(part));
        calls.push((id.to_owned(), name.to_owned()));
    }
    Ok(parts)
}

fn function_response(msg: &Map<String, Value>, path: &str, calls: &[(String, String)]) -> Result<Value, Error> {
    let id = msg
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("`{path}.tool_call_id` must be a string")))?;
    let name = calls
        .iter()
        .rev()
        .find(|(call, _)| call == id)
        .map(|(_, name)| name.as_str())
        .ok_or_else(|| invalid(format!("`{path}.tool_call_id` names no earlier assistant tool call")))?;
    let text = text_parts(msg.get("content"), path)?.concat();
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({"output": text}),
    };
    Ok(json!({"functionResponse": {"name": name, "response": response}}))
}

fn convert_tool(i: usize, tool: &Value) -> Result<Value, Error> {
    let (f, name) = function_tool(i, tool)?;
    let mut out = Map::new();
    out.insert("name".into(), Value::from(name));
    if let Some(d) = f.get("description").filter(|d| !d.is_null()) {
        out.insert("description".into(), d.clone());
    }
    if let Some(p) = f.get("parameters").filter(|p| !p.is_null()) {
        out.insert("parametersJsonSchema".into(), p.clone());
    }
    Ok(Value::Object(out))
}

fn convert_tool_choice(choice: &Value) -> Result<Value, Error> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"mode": "AUTO"})),
            "none" => Ok(json!({"mode": "NONE"})),
            "required" => Ok(json!({"mode": "ANY"})),
            other => Err(invalid(format!("`tool_choice` `{other}` is not supported"))),
        },
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("`tool_choice.function.name` must be a string"))?;
            Ok(json!({"mode": "ANY", "allowedFunctionNames": [name]}))
        }
        _ => Err(invalid("`tool_choice` must be auto, none, required or a named function")),
    }
}

// ------------------------------------------------------- tool call ids

/// The id a Gemini function call gets on the client's side.
fn call_id(call: &Value, part: &Value, n: usize) -> String {
    let base = call.get("id").and_then(Value::as_str).map_or_else(|| format!("call_{n}"), str::to_owned);
    match part.get("thoughtSignature").and_then(Value::as_str) {
        Some(sig) if !sig.is_empty() => {
            let url: String = sig
                .chars()
                .filter(|c| *c != '=')
                .map(|c| match c {
                    '+' => '-',
                    '/' => '_',
                    c => c,
                })
                .collect();
            format!("{base}{SIGNATURE_MARK}{url}")
        }
        _ => base,
    }
}

/// The thought signature carried in a tool call id, back in base64.
fn signature_of(id: &str) -> Option<String> {
    let (_, url) = id.split_once(SIGNATURE_MARK)?;
    if url.is_empty() || !url.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return None;
    }
    let mut sig: String = url
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !sig.len().is_multiple_of(4) {
        sig.push('=');
    }
    Some(sig)
}

// --------------------------------------------------------------- response

/// Gemini `finishReason` to OpenAI `finish_reason`.
pub(crate) fn finish_reason(reason: &str, called_tool: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => "content_filter",
        _ if called_tool => "tool_calls",
        _ => "stop",
    }
}

/// OpenAI `usage` from Gemini `usageMetadata`.
pub(crate) fn openai_usage(meta: &Value) -> Value {
    let num = |k: &str| meta.get(k).and_then(Value::as_u64).unwrap_or(0);
    let prompt = num("promptTokenCount").saturating_add(num("toolUsePromptTokenCount"));
    let thoughts = num("thoughtsTokenCount");
    let completion = num("candidatesTokenCount").saturating_add(thoughts);
    let total = meta.get("totalTokenCount").and_then(Value::as_u64).unwrap_or(prompt.saturating_add(completion));
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "prompt_tokens_details": {"cached_tokens": num("cachedContentTokenCount")},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    })
}

/// The refusal text for a prompt Gemini blocked, if it did.
fn prompt_block(body: &Value) -> Option<String> {
    let reason = body.get("promptFeedback")?.get("blockReason")?.as_str()?;
    Some(format!("the provider blocked the prompt ({reason})"))
}

/// Translate a non-streamed Gemini `GenerateContentResponse` into an OpenAI
/// chat completion reporting `client_model`.
pub fn response(body: &Value, client_model: &str) -> Result<Value, Error> {
    let obj = body.as_object().ok_or_else(|| invalid("provider response must be a JSON object"))?;
    if obj.contains_key("error") {
        return Err(invalid("provider response is an error body, not an answer"));
    }
    let mut choices = Vec::new();
    let mut calls = 0usize;
    for (n, candidate) in obj.get("candidates").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let index = candidate.get("index").and_then(Value::as_u64).unwrap_or(n as u64);
        let (mut text, mut reasoning, mut tool_calls) = (String::new(), String::new(), Vec::new());
        for part in parts_of(candidate) {
            if let Some(call) = part.get("functionCall") {
                tool_calls.push(tool_call(call, part, calls));
                calls += 1;
            } else if let Some(t) = part.get("text").and_then(Value::as_str) {
                if part.get("thought").and_then(Value::as_bool) == Some(true) {
                    reasoning.push_str(t);
                } else {
                    text.push_str(t);
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
        let called = !tool_calls.is_empty();
        if called {
            message.insert("tool_calls".into(), Value::Array(tool_calls));
        }
        let finish = finish_reason(candidate.get("finishReason").and_then(Value::as_str).unwrap_or("STOP"), called);
        choices.push(json!({"index": index, "message": message, "logprobs": null, "finish_reason": finish}));
    }
    if choices.is_empty() {
        let refusal = prompt_block(body).unwrap_or_else(|| "the provider returned no answer".to_owned());
        choices.push(json!({
            "index": 0,
            "message": {"role": "assistant", "content": null, "refusal": refusal},
            "logprobs": null,
            "finish_reason": "content_filter",
        }));
    }
    Ok(json!({
        "id": obj.get("responseId").cloned().unwrap_or_else(|| Value::from("")),
        "object": "chat.completion",
        "created": 0,
        "model": client_model,
        "choices": choices,
        "usage": openai_usage(obj.get("usageMetadata").unwrap_or(&Value::Null)),
    }))
}

fn parts_of(candidate: &Value) -> impl Iterator<Item = &Value> {
    candidate.get("content").and_then(|c| c.get("parts")).and_then(Value::as_array).into_iter().flatten()
}

fn tool_call(call: &Value, part: &Value, n: usize) -> Value {
    let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
    json!({
        "id": call_id(call, part, n),
        "type": "function",
        "function": {"name": call.get("name").cloned().unwrap_or(Value::Null), "arguments": args.to_string()},
    })
}

/// Translate a Gemini error body (`{"error":{code,message,status}}`) with
/// HTTP `status` into OpenAI's shape: `type` follows the status, `code` is
/// Gemini's `status` (`INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`, ...).
pub fn error(body: &Value, status: u16) -> Value {
    let message = error_message(body, status);
    let code = body.get("error").and_then(|e| e.get("status")).and_then(Value::as_str).unwrap_or("upstream_error");
    shaped_error(ApiFamily::OpenAi, status, &message, code)
}

// -------------------------------------------------------------- streaming

/// Gemini `streamGenerateContent?alt=sse` events → OpenAI
/// `chat.completion.chunk` events.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    id: String,
    /// Every candidate seen (its role chunk was sent), in order of arrival.
    candidates: Vec<Candidate>,
    calls: usize,
    usage: Option<Value>,
    done: bool,
}

#[derive(Debug)]
struct Candidate {
    index: u64,
    finished: bool,
    /// Tool calls sent for this candidate (the next one's OpenAI index).
    tools: u64,
}

impl StreamTranslator {
    pub fn new(client_model: &str) -> Self {
        StreamTranslator {
            model: client_model.to_owned(),
            id: String::new(),
            candidates: Vec::new(),
            calls: 0,
            usage: None,
            done: false,
        }
    }

    fn chunk(&self, index: u64, delta: Value, finish: Option<&str>) -> SseEvent {
        openai_chunk(&self.id, &self.model, index, delta, finish)
    }

    /// The candidate's state, sending its role chunk the first time.
    fn candidate(&mut self, index: u64, out: &mut Vec<SseEvent>) -> usize {
        if let Some(at) = self.candidates.iter().position(|c| c.index == index) {
            return at;
        }
        out.push(self.chunk(index, json!({"role": "assistant", "content": ""}), None));
        self.candidates.push(Candidate { index, finished: false, tools: 0 });
        self.candidates.len() - 1
    }

    /// Client events for one Gemini event.
    pub fn push(&mut self, event: &SseEvent) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            return out;
        };
        if let Some(err) = data.get("error") {
            let status = err.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok()).unwrap_or(500);
            let shaped = error(&data, status);
            out.push(json_event(None, &shaped));
            out.push(done_event());
            self.done = true;
            return out;
        }
        if self.id.is_empty() {
            if let Some(id) = data.get("responseId").and_then(Value::as_str) {
                self.id = id.to_owned();
            }
        }
        if let Some(meta) = data.get("usageMetadata").filter(|m| m.is_object()) {
            self.usage = Some(meta.clone());
        }
        let candidates = data.get("candidates").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        if candidates.is_empty() {
            if let Some(refusal) = prompt_block(&data) {
                let at = self.candidate(0, &mut out);
                out.push(self.chunk(0, json!({"refusal": refusal}), None));
                self.finish_candidate(at, Some("content_filter"), &mut out);
            }
        }
        for (n, cand) in candidates.iter().enumerate() {
            let index = cand.get("index").and_then(Value::as_u64).unwrap_or(n as u64);
            let at = self.candidate(index, &mut out);
            for part in parts_of(cand) {
                if let Some(call) = part.get("functionCall") {
                    let mut delta = tool_call(call, part, self.calls);
                    self.calls += 1;
                    let position = self.candidates[at].tools;
                    self.candidates[at].tools += 1;
                    if let Some(obj) = delta.as_object_mut() {
                        obj.insert("index".into(), Value::from(position));
                    }
                    out.push(self.chunk(index, json!({"tool_calls": [delta]}), None));
                } else if let Some(t) = part.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    let key = if part.get("thought").and_then(Value::as_bool) == Some(true) {
                        "reasoning_content"
                    } else {
                        "content"
                    };
                    out.push(self.chunk(index, json!({ key: t }), None));
                }
            }
            if let Some(reason) = cand.get("finishReason").and_then(Value::as_str) {
                let called = self.candidates[at].tools > 0;
                self.finish_candidate(at, Some(finish_reason(reason, called)), &mut out);
            }
        }
        out
    }

    fn finish_candidate(&mut self, at: usize, reason: Option<&str>, out: &mut Vec<SseEvent>) {
        if self.candidates[at].finished {
            return;
        }
        self.candidates[at].finished = true;
        let index = self.candidates[at].index;
        let reason = reason.unwrap_or(if self.candidates[at].tools > 0 { "tool_calls" } else { "stop" });
        out.push(self.chunk(index, json!({}), Some(reason)));
    }

    /// Events closing the client stream at the end of Gemini's: a finish
    /// chunk for any candidate without one, the usage chunk and `[DONE]`.
    /// Nothing once `[DONE]` was sent.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if self.candidates.is_empty() {
            self.candidate(0, &mut out);
        }
        for at in 0..self.candidates.len() {
            self.finish_candidate(at, None, &mut out);
        }
        openai_stream_end(&self.id, &self.model, openai_usage(self.usage.as_ref().unwrap_or(&Value::Null)), &mut out);
        self.done = true;
        out
    }
}
