//! Reading an OpenAI Chat Completions request: the pieces every
//! translation from OpenAI's shape (to Anthropic, Gemini, Bedrock) reads
//! the same way, so that the same request is refused with the same words
//! whatever model serves it.

use serde_json::{json, Map, Value};

use super::{invalid, present};
use crate::error::Error;

/// Refuse the fields no translation can express (output modalities, log
/// probabilities, token biases, web search, legacy functions), naming the
/// field and the provider (`served_by`).
pub(crate) fn reject_common(req: &Map<String, Value>, served_by: &str) -> Result<(), Error> {
    let unsupported = |field: &str, why: &str| {
        Err(invalid(format!("`{field}` is not supported when this model is served by {served_by}: {why}")))
    };
    if present(req, "logprobs").is_some_and(|v| v != &Value::Bool(false)) {
        return unsupported("logprobs", "log probabilities are not available");
    }
    if present(req, "top_logprobs").is_some() {
        return unsupported("top_logprobs", "log probabilities are not available");
    }
    if let Some(m) = present(req, "modalities") {
        if !m.as_array().is_some_and(|a| a.iter().all(|x| x == "text")) {
            return unsupported("modalities", "only text output is available");
        }
    }
    if present(req, "audio").is_some() {
        return unsupported("audio", "audio output is not available");
    }
    if present(req, "logit_bias").is_some_and(|v| v.as_object().is_none_or(|o| !o.is_empty())) {
        return unsupported("logit_bias", "token biases are not available");
    }
    if present(req, "web_search_options").is_some() {
        return unsupported("web_search_options", "web search is not available");
    }
    if present(req, "functions").is_some() {
        return unsupported("functions", "use `tools`");
    }
    if present(req, "function_call").is_some() {
        return unsupported("function_call", "use `tool_choice`");
    }
    Ok(())
}

/// `stop` as a list of strings (empty when absent).
pub(crate) fn stop_sequences(req: &Map<String, Value>) -> Result<Vec<Value>, Error> {
    match present(req, "stop") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![Value::from(s.as_str())]),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => Ok(items.clone()),
        Some(_) => Err(invalid("`stop` must be a string or a list of strings")),
    }
}

/// The texts of a content that may only hold text: a string, text (or
/// refusal) parts, or null.
pub(crate) fn text_parts(content: Option<&Value>, path: &str) -> Result<Vec<String>, Error> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| match p.get("type").and_then(Value::as_str) {
                Some("text") | Some("refusal") => p
                    .get("text")
                    .or_else(|| p.get("refusal"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| invalid(format!("`{path}.content[{j}].text` must be a string"))),
                other => Err(invalid(format!(
                    "`{path}.content[{j}]` of type `{}` is not supported here: only text",
                    other.unwrap_or("?")
                ))),
            })
            .collect(),
        Some(_) => Err(invalid(format!("`{path}.content` must be a string or an array of parts"))),
    }
}

/// One assistant tool call (at `path`): its id, function name and
/// arguments as a JSON object (`{}` when empty).
pub(crate) fn tool_call<'a>(call: &'a Value, path: &str) -> Result<(&'a str, &'a str, Value), Error> {
    if let Some(kind) = call.get("type").and_then(Value::as_str) {
        if kind != "function" {
            return Err(invalid(format!("`{path}.type` `{kind}` is not supported: only function tool calls")));
        }
    }
    let id = call.get("id").and_then(Value::as_str).ok_or_else(|| invalid(format!("`{path}.id` must be a string")))?;
    let function = call.get("function").unwrap_or(&Value::Null);
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("`{path}.function.name` must be a string")))?;
    let args = match function.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s)
            .map_err(|e| invalid(format!("`{path}.function.arguments` is not valid JSON: {e}")))?,
        Some(other) => other.clone(),
    };
    if !args.is_object() {
        return Err(invalid(format!("`{path}.function.arguments` must be a JSON object")));
    }
    Ok((id, name, args))
}

/// A function tool (`tools[i]`): its function object and name.
pub(crate) fn function_tool(i: usize, tool: &Value) -> Result<(&Value, &str), Error> {
    let path = format!("tools[{i}]");
    if let Some(kind) = tool.get("type").and_then(Value::as_str) {
        if kind != "function" {
            return Err(invalid(format!("`{path}.type` `{kind}` is not supported: only function tools")));
        }
    }
    let f = tool.get("function").ok_or_else(|| invalid(format!("`{path}.function` is missing")))?;
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("`{path}.function.name` must be a string")))?;
    Ok((f, name))
}

/// Append a turn's `items` (under `key`: `content` or `parts`) to the
/// conversation, merged into the last turn when it has the same role (the
/// target APIs want user and model turns to alternate); nothing for none.
pub(crate) fn push_turn(turns: &mut Vec<Value>, role: &str, key: &str, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last["role"] == role => {
            if let Some(existing) = last.get_mut(key).and_then(Value::as_array_mut) {
                existing.extend(items);
            }
        }
        _ => turns.push(json!({"role": role, key: items})),
    }
}
