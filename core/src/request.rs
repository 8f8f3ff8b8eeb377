//! Request parsing: OpenAI and Anthropic bodies into one normalized view.
//!
//! The body is parsed once into a [`serde_json::Value`] and walked; nothing is
//! deserialized into provider-specific structs, so unknown fields pass through
//! untouched and later stages (PII masking) can mutate the same `Value`.
//!
//! What counts as text (and becomes a [`TextPart`]):
//!
//! | API | texts (role) |
//! |---|---|
//! | OpenAI chat | `messages[].content` string or `text`/`refusal` parts (message role, every role including `tool`); message `refusal` (message role); `tool_calls[].function.arguments` and legacy `function_call.arguments` (JSON, message role); `tool_calls[].custom.input` (message role) |
//! | OpenAI completions | `prompt` string or strings in an array (`user`), `suffix` (`user`); token arrays give no text |
//! | OpenAI embeddings | `input` string or strings in an array (`input`); token arrays give no text |
//! | OpenAI responses | `instructions` (`system`); `input` string (`user`); message items' `content` string or `input_text`/`output_text`/`refusal` parts (item role); `arguments` of `function_call`, `mcp_call` and other `*_call` items (JSON, `assistant`); `custom_tool_call.input` (`assistant`); `output` string or parts of `function_call_output` and other `*_output` items (`tool`); `prompt.variables` strings and `input_text` values (`user`) |
//! | Anthropic messages | `system` string or blocks (`system`); `messages[].content` string or blocks (message role). Blocks: `text`; `tool_use`/`server_tool_use`/`mcp_tool_use` `input` (JSON); `tool_result`/`mcp_tool_result` `content` string or blocks of any of these kinds (`tool`); `document` `title`, `context` and its `source` of type `text` (`data`) or `content` (string or blocks); `search_result` `title`, `source` and `content` blocks; `web_search_tool_result` result titles |
//!
//! JSON texts (tool-call arguments and inputs) are reported as the object
//! keys and string values of that JSON, one per line, decoded (so escapes
//! such as `\u0049` hide nothing); see [`TextKind`]. Blocks nest at most
//! [`MAX_DEPTH`] levels: a deeper request is refused rather than left
//! partly unscanned.
//!
//! Empty strings are not reported. Images, audio, files (base64 PDFs included)
//! and thinking blocks carry no text and are skipped. Errors name the offending field, e.g.
//! ``invalid request: `messages[2].content` must be a string or an array``.

use std::fmt;

use serde_json::{Map, Value};

use crate::api::ApiKind;
use crate::error::Error;

/// One piece of text a request carries (message content, system prompt,
/// tool-call arguments, tool results, prompt or embedding input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextPart {
    /// `system`, `user`, `assistant`, `tool`, `developer`, `input` ...
    pub role: String,
    pub text: String,
}

/// A tool the request offers the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolDef {
    pub name: String,
}

/// The normalized view of an LLM request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmRequest {
    pub api: ApiKind,
    pub model: String,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage` (chat and completions only;
    /// always `false` for the other APIs).
    pub include_usage: bool,
    /// `max_tokens` / `max_completion_tokens` / `max_output_tokens`.
    /// For chat, `max_completion_tokens` wins when both are present.
    pub max_tokens: Option<u64>,
    pub texts: Vec<TextPart>,
    pub tools: Vec<ToolDef>,
}

/// A request parsed together with its JSON, for stages that rewrite the body.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRequest {
    /// The whole body (always a JSON object).
    pub json: Value,
    pub request: LlmRequest,
    /// One RFC 6901 JSON pointer per entry of `request.texts`, in the same
    /// order, locating the value in `json` that the text came from
    /// (e.g. `/messages/1/content/0/text`). What the value there is depends
    /// on the text's entry in `text_kinds`.
    pub text_pointers: Vec<String>,
    /// How each text relates to the value its pointer names (same order).
    pub text_kinds: Vec<TextKind>,
}

/// How a text relates to the JSON value its pointer names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// A string equal to the text.
    Plain,
    /// A JSON value (an Anthropic `tool_use` block's `input`); the text is
    /// its object keys and string values, one per line.
    Json,
    /// A string that holds JSON (tool-call `arguments`); the text is the
    /// object keys and string values of the JSON it holds, one per line.
    /// Rewriting the text means rewriting those strings and serializing the
    /// JSON again, so the string stays valid JSON.
    JsonString,
}

/// How deep blocks (Anthropic tool results holding documents holding
/// blocks ...) and JSON texts (tool-call arguments) may nest. Deeper
/// requests are refused: what is not walked would not be scanned.
pub const MAX_DEPTH: usize = 64;

/// Parse a request body of API `api`.
pub fn parse_request(api: ApiKind, body: &[u8]) -> Result<LlmRequest, Error> {
    let obj = parse_object(body)?;
    walk(api, &obj, false).map(|(request, _, _)| request)
}

/// Parse a request body, keeping its JSON and the location of every text.
pub fn parse_request_json(api: ApiKind, body: &[u8]) -> Result<ParsedRequest, Error> {
    let obj = parse_object(body)?;
    let (request, text_pointers, text_kinds) = walk(api, &obj, true)?;
    Ok(ParsedRequest { json: Value::Object(obj), request, text_pointers, text_kinds })
}

/// Build the normalized view from an already parsed (possibly rewritten) body.
pub fn request_from_json(api: ApiKind, json: &Value) -> Result<LlmRequest, Error> {
    match json {
        Value::Object(obj) => walk(api, obj, false).map(|(request, _, _)| request),
        _ => Err(Error::InvalidJson("expected a JSON object".into())),
    }
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Error> {
    serde_json::from_slice::<Map<String, Value>>(body).map_err(|e| Error::InvalidJson(e.to_string()))
}

// ---------------------------------------------------------------------------
// Field paths: built on the stack while walking, formatted only on error (as
// `messages[0].content`) or when pointers are requested (`/messages/0/content`).

#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    seg: Seg<'a>,
}

impl<'a> Path<'a> {
    fn root(key: &'a str) -> Path<'a> {
        Path { parent: None, seg: Seg::Key(key) }
    }
    fn key<'b>(&'b self, key: &'b str) -> Path<'b> {
        Path { parent: Some(self), seg: Seg::Key(key) }
    }
    fn index(&self, i: usize) -> Path<'_> {
        Path { parent: Some(self), seg: Seg::Index(i) }
    }
    fn pointer(&self) -> String {
        let mut s = String::new();
        self.write_pointer(&mut s);
        s
    }
    fn write_pointer(&self, out: &mut String) {
        if let Some(p) = self.parent {
            p.write_pointer(out);
        }
        out.push('/');
        match self.seg {
            Seg::Key(k) => {
                for c in k.chars() {
                    match c {
                        '~' => out.push_str("~0"),
                        '/' => out.push_str("~1"),
                        c => out.push(c),
                    }
                }
            }
            Seg::Index(i) => out.push_str(&i.to_string()),
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.parent {
            fmt::Display::fmt(p, f)?;
        }
        match self.seg {
            Seg::Key(k) if self.parent.is_some() => write!(f, ".{k}"),
            Seg::Key(k) => f.write_str(k),
            Seg::Index(i) => write!(f, "[{i}]"),
        }
    }
}

fn invalid(path: &Path<'_>, what: &str) -> Error {
    Error::InvalidRequest(format!("`{path}` {what}"))
}

// ---------------------------------------------------------------------------
// Typed accessors. `null` counts as absent everywhere.

fn field<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn as_object<'v>(v: &'v Value, path: &Path<'_>) -> Result<&'v Map<String, Value>, Error> {
    v.as_object().ok_or_else(|| invalid(path, "must be an object"))
}

fn opt_str<'v>(obj: &'v Map<String, Value>, key: &str, parent: Option<&Path<'_>>) -> Result<Option<&'v str>, Error> {
    match field(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(&sub(parent, key), "must be a string")),
    }
}

fn req_str<'v>(obj: &'v Map<String, Value>, key: &str, parent: Option<&Path<'_>>) -> Result<&'v str, Error> {
    opt_str(obj, key, parent)?.ok_or_else(|| invalid(&sub(parent, key), "is required"))
}

fn opt_bool(obj: &Map<String, Value>, key: &str, parent: Option<&Path<'_>>) -> Result<Option<bool>, Error> {
    match field(obj, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(&sub(parent, key), "must be a boolean")),
    }
}

fn opt_u64(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, Error> {
    match field(obj, key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| invalid(&Path::root(key), "must be a non-negative integer")),
    }
}

fn opt_array<'v>(
    obj: &'v Map<String, Value>,
    key: &str,
    parent: Option<&Path<'_>>,
) -> Result<Option<&'v Vec<Value>>, Error> {
    match field(obj, key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(invalid(&sub(parent, key), "must be an array")),
    }
}

fn sub<'a>(parent: Option<&'a Path<'a>>, key: &'a str) -> Path<'a> {
    match parent {
        Some(p) => p.key(key),
        None => Path::root(key),
    }
}

// ---------------------------------------------------------------------------
// The walk.

struct Collector {
    texts: Vec<TextPart>,
    pointers: Option<Vec<String>>,
    kinds: Vec<TextKind>,
    tools: Vec<ToolDef>,
}

impl Collector {
    fn push(&mut self, role: &str, text: &str, path: &Path<'_>) {
        if text.is_empty() {
            return;
        }
        self.push_kind(role, text.to_owned(), path, TextKind::Plain);
    }

    fn push_kind(&mut self, role: &str, text: String, path: &Path<'_>, kind: TextKind) {
        if text.is_empty() {
            return;
        }
        if let Some(p) = &mut self.pointers {
            p.push(path.pointer());
            self.kinds.push(kind);
        }
        self.texts.push(TextPart { role: role.to_owned(), text });
    }

    /// A JSON value (tool input): its keys and string values.
    fn push_json(&mut self, role: &str, v: &Value, path: &Path<'_>) -> Result<(), Error> {
        let mut text = String::new();
        json_text(v, 0, &mut text).map_err(|()| too_deep(path))?;
        self.push_kind(role, text, path, TextKind::Json);
        Ok(())
    }

    /// A string that should hold JSON (tool-call arguments): the keys and
    /// string values of that JSON, or the string itself when it is not JSON.
    fn push_json_string(&mut self, role: &str, s: &str, path: &Path<'_>) -> Result<(), Error> {
        match serde_json::from_str::<Value>(s) {
            Ok(v) => {
                let mut text = String::new();
                json_text(&v, 0, &mut text).map_err(|()| too_deep(path))?;
                self.push_kind(role, text, path, TextKind::JsonString);
            }
            // serde_json's own nesting bound: as deep as ours is refused.
            Err(e) if e.to_string().contains("recursion limit") => return Err(too_deep(path)),
            // Arguments cut short or not JSON at all: scanned as they are.
            Err(_) => self.push(role, s, path),
        }
        Ok(())
    }
}

fn too_deep(path: &Path<'_>) -> Error {
    invalid(path, &format!("nests deeper than {MAX_DEPTH} levels"))
}

/// Append the object keys and string values of `v` to `out`, one per line.
/// `Err` past [`MAX_DEPTH`].
pub(crate) fn json_text(v: &Value, depth: usize, out: &mut String) -> Result<(), ()> {
    if depth > MAX_DEPTH {
        return Err(());
    }
    let line = |s: &str, out: &mut String| {
        if !s.is_empty() {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(s);
        }
    };
    match v {
        Value::String(s) => line(s, out),
        Value::Array(items) => {
            for item in items {
                json_text(item, depth + 1, out)?;
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                line(k, out);
                json_text(item, depth + 1, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

type Walked = (LlmRequest, Vec<String>, Vec<TextKind>);

fn walk(api: ApiKind, obj: &Map<String, Value>, pointers: bool) -> Result<Walked, Error> {
    if api.model_in_path() {
        return walk_in_path(api, obj, pointers);
    }
    let model = match obj.get("model") {
        None | Some(Value::Null) => return Err(Error::InvalidRequest("`model` is required".into())),
        Some(Value::String(s)) if s.is_empty() => {
            return Err(Error::InvalidRequest("`model` must not be empty".into()))
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(Error::InvalidRequest("`model` must be a string".into())),
    };
    let stream = if api == ApiKind::OpenAiEmbeddings { false } else { opt_bool(obj, "stream", None)?.unwrap_or(false) };
    let include_usage = match api {
        ApiKind::OpenAiChat | ApiKind::OpenAiCompletions => include_usage(obj)?,
        _ => false,
    };
    let max_tokens = match api {
        ApiKind::OpenAiChat => match opt_u64(obj, "max_completion_tokens")? {
            Some(n) => Some(n),
            None => opt_u64(obj, "max_tokens")?,
        },
        ApiKind::OpenAiCompletions | ApiKind::AnthropicMessages => opt_u64(obj, "max_tokens")?,
        ApiKind::OpenAiResponses => opt_u64(obj, "max_output_tokens")?,
        _ => None,
    };
    let mut c =
        Collector { texts: Vec::new(), pointers: pointers.then(Vec::new), kinds: Vec::new(), tools: Vec::new() };
    match api {
        ApiKind::OpenAiChat => {
            chat(obj, &mut c)?;
            tools(obj, "tools", &mut c)?;
            tools(obj, "functions", &mut c)?;
        }
        ApiKind::OpenAiCompletions => {
            prompt_list(obj, "prompt", "user", false, &mut c)?;
            if let Some(s) = opt_str(obj, "suffix", None)? {
                c.push("user", s, &Path::root("suffix"));
            }
        }
        ApiKind::OpenAiEmbeddings => prompt_list(obj, "input", "input", true, &mut c)?,
        ApiKind::OpenAiResponses => {
            responses(obj, &mut c)?;
            tools(obj, "tools", &mut c)?;
        }
        ApiKind::AnthropicMessages => {
            anthropic(obj, &mut c)?;
            tools(obj, "tools", &mut c)?;
        }
        // Walked by `walk_in_path`.
        _ => return walk_in_path(api, obj, pointers),
    }
    let request = LlmRequest { api, model, stream, include_usage, max_tokens, texts: c.texts, tools: c.tools };
    Ok((request, c.pointers.unwrap_or_default(), c.kinds))
}

/// A Gemini `generateContent` body. The model and whether it streams are
/// in the path, not the body: `model` is empty and `stream` false here, and
/// the caller sets both from [`ApiKind::path_model`].
fn walk_in_path(api: ApiKind, obj: &Map<String, Value>, pointers: bool) -> Result<Walked, Error> {
    let mut c =
        Collector { texts: Vec::new(), pointers: pointers.then(Vec::new), kinds: Vec::new(), tools: Vec::new() };
    let mut max_tokens = None;
    let mut cap = |config: &str, key: &str| -> Result<(), Error> {
        if let Some(v) = field(obj, config) {
            max_tokens = opt_u64(as_object(v, &Path::root(config))?, key)?;
        }
        Ok(())
    };
    match api {
        ApiKind::BedrockConverse => {
            bedrock(obj, &mut c)?;
            cap("inferenceConfig", "maxTokens")?;
        }
        ApiKind::GeminiCountTokens => match field(obj, "generateContentRequest") {
            // The whole request the count is for, or only its `contents`.
            Some(inner) => {
                let base = Path::root("generateContentRequest");
                gemini(as_object(inner, &base)?, Some(&base), &mut c)?;
            }
            None => gemini(obj, None, &mut c)?,
        },
        ApiKind::GeminiEmbed => gemini_embed(obj, None, &mut c)?,
        ApiKind::GeminiBatchEmbed => {
            let root = Path::root("requests");
            let list = opt_array(obj, "requests", None)?.ok_or_else(|| invalid(&root, "is required"))?;
            if list.is_empty() {
                return Err(invalid(&root, "must not be empty"));
            }
            for (i, request) in list.iter().enumerate() {
                let rp = root.index(i);
                gemini_embed(as_object(request, &rp)?, Some(&rp), &mut c)?;
            }
        }
        _ => {
            gemini(obj, None, &mut c)?;
            cap("generationConfig", "maxOutputTokens")?;
        }
    }
    let request = LlmRequest {
        api,
        model: String::new(),
        stream: false,
        include_usage: false,
        max_tokens,
        texts: c.texts,
        tools: c.tools,
    };
    Ok((request, c.pointers.unwrap_or_default(), c.kinds))
}

/// One Gemini embedding request: its `content`'s parts and its `title`.
fn gemini_embed(obj: &Map<String, Value>, base: Option<&Path<'_>>, c: &mut Collector) -> Result<(), Error> {
    let cp = sub(base, "content");
    let content = field(obj, "content").ok_or_else(|| invalid(&cp, "is required"))?;
    gemini_parts("input", as_object(content, &cp)?, &cp, c)?;
    if let Some(title) = opt_str(obj, "title", base)? {
        c.push("input", title, &sub(base, "title"));
    }
    Ok(())
}

/// Bedrock Converse `system[].text`, `messages[].content[]` (text, tool
/// use `input`, tool results' text and JSON: tool output, documents'
/// text) and `toolConfig.tools[].toolSpec` (description, input schema).
fn bedrock(obj: &Map<String, Value>, c: &mut Collector) -> Result<(), Error> {
    if let Some(system) = opt_array(obj, "system", None)? {
        let sp = Path::root("system");
        for (i, block) in system.iter().enumerate() {
            let bp = sp.index(i);
            if let Some(text) = opt_str(as_object(block, &bp)?, "text", Some(&bp))? {
                c.push("system", text, &bp.key("text"));
            }
        }
    }
    let root = Path::root("messages");
    for (i, m) in messages(obj)?.iter().enumerate() {
        let mp = root.index(i);
        let m = as_object(m, &mp)?;
        let role = match req_str(m, "role", Some(&mp))? {
            "user" => "user",
            "assistant" => "assistant",
            _ => return Err(invalid(&mp.key("role"), "must be user or assistant")),
        };
        let cp = mp.key("content");
        let content = opt_array(m, "content", Some(&mp))?.ok_or_else(|| invalid(&cp, "is required"))?;
        for (j, block) in content.iter().enumerate() {
            bedrock_block(role, as_object(block, &cp.index(j))?, &cp.index(j), c)?;
        }
    }
    if let Some(config) = field(obj, "toolConfig") {
        let tp = Path::root("toolConfig");
        let tools = opt_array(as_object(config, &tp)?, "tools", Some(&tp))?.map(Vec::as_slice).unwrap_or_default();
        let lp = tp.key("tools");
        for (i, tool) in tools.iter().enumerate() {
            let ip = lp.index(i);
            let Some(spec) = field(as_object(tool, &ip)?, "toolSpec") else { continue };
            let sp = ip.key("toolSpec");
            let spec = as_object(spec, &sp)?;
            if let Some(text) = opt_str(spec, "description", Some(&sp))? {
                c.push("tools", text, &sp.key("description"));
            }
            if let Some(Value::Object(schema)) = field(spec, "inputSchema") {
                if let Some(v @ Value::Object(_)) = schema.get("json") {
                    c.push_json("tools", v, &sp.key("inputSchema").key("json"))?;
                }
            }
            if let Some(name) = opt_str(spec, "name", Some(&sp))? {
                c.tools.push(ToolDef { name: name.to_owned() });
            }
        }
    }
    Ok(())
}

fn bedrock_block(role: &str, block: &Map<String, Value>, bp: &Path<'_>, c: &mut Collector) -> Result<(), Error> {
    if let Some(text) = opt_str(block, "text", Some(bp))? {
        c.push(role, text, &bp.key("text"));
    }
    if let Some(tool_use) = field(block, "toolUse") {
        let up = bp.key("toolUse");
        if let Some(input @ Value::Object(_)) = field(as_object(tool_use, &up)?, "input") {
            c.push_json(role, input, &up.key("input"))?;
        }
    }
    if let Some(result) = field(block, "toolResult") {
        let rp = bp.key("toolResult");
        let parts = opt_array(as_object(result, &rp)?, "content", Some(&rp))?.map(Vec::as_slice).unwrap_or_default();
        let pp = rp.key("content");
        for (k, part) in parts.iter().enumerate() {
            let kp = pp.index(k);
            let part = as_object(part, &kp)?;
            if let Some(text) = opt_str(part, "text", Some(&kp))? {
                c.push("tool", text, &kp.key("text"));
            }
            if let Some(v @ (Value::Object(_) | Value::Array(_))) = field(part, "json") {
                c.push_json("tool", v, &kp.key("json"))?;
            }
        }
    }
    // image, document (bytes), reasoningContent, cachePoint: no text to read.
    Ok(())
}

/// Gemini `systemInstruction`, `contents[].parts[]` (text, function calls'
/// `args`, function responses' `response`: tool output) and the tools'
/// `functionDeclarations` (description and parameter schema, role `tools`).
fn gemini(obj: &Map<String, Value>, base: Option<&Path<'_>>, c: &mut Collector) -> Result<(), Error> {
    if let Some(system) = field(obj, "systemInstruction") {
        let sp = sub(base, "systemInstruction");
        gemini_parts("system", as_object(system, &sp)?, &sp, c)?;
    }
    let root = sub(base, "contents");
    let contents = opt_array(obj, "contents", base)?.ok_or_else(|| invalid(&root, "is required"))?;
    if contents.is_empty() {
        return Err(invalid(&root, "must not be empty"));
    }
    for (i, content) in contents.iter().enumerate() {
        let cp = root.index(i);
        let content = as_object(content, &cp)?;
        let role = match opt_str(content, "role", Some(&cp))? {
            None | Some("user") => "user",
            Some("model") => "assistant",
            Some("function" | "tool") => "tool",
            Some(_) => return Err(invalid(&cp.key("role"), "must be user or model")),
        };
        gemini_parts(role, content, &cp, c)?;
    }
    if let Some(list) = opt_array(obj, "tools", base)? {
        let root = sub(base, "tools");
        for (i, tool) in list.iter().enumerate() {
            let tp = root.index(i);
            let tool = as_object(tool, &tp)?;
            let Some(decls) = opt_array(tool, "functionDeclarations", Some(&tp))? else { continue };
            let dp = tp.key("functionDeclarations");
            for (j, decl) in decls.iter().enumerate() {
                let fp = dp.index(j);
                let decl = as_object(decl, &fp)?;
                if let Some(text) = opt_str(decl, "description", Some(&fp))? {
                    c.push("tools", text, &fp.key("description"));
                }
                for schema in ["parameters", "parametersJsonSchema"] {
                    if let Some(v @ Value::Object(_)) = field(decl, schema) {
                        c.push_json("tools", v, &fp.key(schema))?;
                    }
                }
                if let Some(name) = opt_str(decl, "name", Some(&fp))? {
                    c.tools.push(ToolDef { name: name.to_owned() });
                }
            }
        }
    }
    Ok(())
}

/// The texts of a Gemini `Content`'s `parts`.
fn gemini_parts(role: &str, content: &Map<String, Value>, path: &Path<'_>, c: &mut Collector) -> Result<(), Error> {
    let Some(parts) = opt_array(content, "parts", Some(path))? else { return Ok(()) };
    let pp = path.key("parts");
    for (j, part) in parts.iter().enumerate() {
        let bp = pp.index(j);
        let part = as_object(part, &bp)?;
        if let Some(text) = opt_str(part, "text", Some(&bp))? {
            // A thought summary the model wrote earlier is its own text.
            c.push(role, text, &bp.key("text"));
        }
        if let Some(call) = field(part, "functionCall") {
            let fp = bp.key("functionCall");
            if let Some(args @ Value::Object(_)) = field(as_object(call, &fp)?, "args") {
                c.push_json(role, args, &fp.key("args"))?;
            }
        }
        if let Some(response) = field(part, "functionResponse") {
            let fp = bp.key("functionResponse");
            if let Some(v @ Value::Object(_)) = field(as_object(response, &fp)?, "response") {
                c.push_json("tool", v, &fp.key("response"))?;
            }
        }
        // inlineData, fileData, executableCode ...: no text to read.
    }
    Ok(())
}

fn include_usage(obj: &Map<String, Value>) -> Result<bool, Error> {
    let Some(opts) = field(obj, "stream_options") else { return Ok(false) };
    let path = Path::root("stream_options");
    let opts = as_object(opts, &path)?;
    Ok(opt_bool(opts, "include_usage", Some(&path))?.unwrap_or(false))
}

/// A required, non-empty `messages` array.
fn messages(obj: &Map<String, Value>) -> Result<&Vec<Value>, Error> {
    let path = Path::root("messages");
    let messages = opt_array(obj, "messages", None)?.ok_or_else(|| invalid(&path, "is required"))?;
    if messages.is_empty() {
        return Err(invalid(&path, "must not be empty"));
    }
    Ok(messages)
}

fn chat(obj: &Map<String, Value>, c: &mut Collector) -> Result<(), Error> {
    let root = Path::root("messages");
    for (i, m) in messages(obj)?.iter().enumerate() {
        let mp = root.index(i);
        let m = as_object(m, &mp)?;
        let role = req_str(m, "role", Some(&mp))?;
        if let Some(content) = field(m, "content") {
            openai_content(role, content, &mp.key("content"), c)?;
        }
        if let Some(calls) = opt_array(m, "tool_calls", Some(&mp))? {
            let cp = mp.key("tool_calls");
            for (j, call) in calls.iter().enumerate() {
                let callp = cp.index(j);
                let call = as_object(call, &callp)?;
                if let Some(f) = field(call, "function") {
                    let fp = callp.key("function");
                    let f = as_object(f, &fp)?;
                    if let Some(args) = opt_str(f, "arguments", Some(&fp))? {
                        c.push_json_string(role, args, &fp.key("arguments"))?;
                    }
                }
                if let Some(f) = field(call, "custom") {
                    let fp = callp.key("custom");
                    let f = as_object(f, &fp)?;
                    if let Some(input) = opt_str(f, "input", Some(&fp))? {
                        c.push(role, input, &fp.key("input"));
                    }
                }
            }
        }
        if let Some(f) = field(m, "function_call") {
            let fp = mp.key("function_call");
            let f = as_object(f, &fp)?;
            if let Some(args) = opt_str(f, "arguments", Some(&fp))? {
                c.push_json_string(role, args, &fp.key("arguments"))?;
            }
        }
        if let Some(refusal) = opt_str(m, "refusal", Some(&mp))? {
            c.push(role, refusal, &mp.key("refusal"));
        }
    }
    Ok(())
}

/// OpenAI message content: a string or an array of typed parts.
fn openai_content(role: &str, content: &Value, path: &Path<'_>, c: &mut Collector) -> Result<(), Error> {
    match content {
        Value::String(s) => c.push(role, s, path),
        Value::Array(parts) => {
            for (i, part) in parts.iter().enumerate() {
                let pp = path.index(i);
                let part = as_object(part, &pp)?;
                match opt_str(part, "type", Some(&pp))? {
                    Some("text" | "input_text" | "output_text") | None => {
                        if let Some(text) = opt_str(part, "text", Some(&pp))? {
                            c.push(role, text, &pp.key("text"));
                        }
                    }
                    Some("refusal") => {
                        if let Some(text) = opt_str(part, "refusal", Some(&pp))? {
                            c.push(role, text, &pp.key("refusal"));
                        }
                    }
                    // image_url, input_audio, file, input_image, input_file ...
                    Some(_) => {}
                }
            }
        }
        _ => return Err(invalid(path, "must be a string or an array")),
    }
    Ok(())
}

/// Completions `prompt` / embeddings `input`: a string, or an array of strings
/// and token arrays. Token arrays carry no text.
fn prompt_list(
    obj: &Map<String, Value>,
    key: &str,
    role: &str,
    required: bool,
    c: &mut Collector,
) -> Result<(), Error> {
    let path = Path::root(key);
    match field(obj, key) {
        None if required => Err(invalid(&path, "is required")),
        None => Ok(()),
        Some(Value::String(s)) => {
            c.push(role, s, &path);
            Ok(())
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => c.push(role, s, &path.index(i)),
                    Value::Number(_) | Value::Array(_) => {}
                    _ => return Err(invalid(&path.index(i), "must be a string or a token array")),
                }
            }
            Ok(())
        }
        Some(_) => Err(invalid(&path, "must be a string or an array")),
    }
}

fn responses(obj: &Map<String, Value>, c: &mut Collector) -> Result<(), Error> {
    if let Some(s) = opt_str(obj, "instructions", None)? {
        c.push("system", s, &Path::root("instructions"));
    }
    if let Some(prompt) = field(obj, "prompt") {
        prompt_variables(prompt, c)?;
    }
    let root = Path::root("input");
    match field(obj, "input") {
        None => {}
        Some(Value::String(s)) => c.push("user", s, &root),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let ip = root.index(i);
                let item = as_object(item, &ip)?;
                match opt_str(item, "type", Some(&ip))? {
                    None | Some("message") => {
                        let role = req_str(item, "role", Some(&ip))?;
                        if let Some(content) = field(item, "content") {
                            openai_content(role, content, &ip.key("content"), c)?;
                        }
                    }
                    Some("custom_tool_call") => {
                        if let Some(input) = opt_str(item, "input", Some(&ip))? {
                            c.push("assistant", input, &ip.key("input"));
                        }
                    }
                    Some("function_call_output" | "custom_tool_call_output") => {
                        if let Some(output) = field(item, "output") {
                            openai_content("tool", output, &ip.key("output"), c)?;
                        }
                    }
                    // function_call, mcp_call ...: JSON arguments; mcp_call
                    // also carries its output.
                    Some(kind) if kind.ends_with("_call") => {
                        if let Some(Value::String(args)) = field(item, "arguments") {
                            c.push_json_string("assistant", args, &ip.key("arguments"))?;
                        }
                        if let Some(Value::String(output)) = field(item, "output") {
                            c.push("tool", output, &ip.key("output"));
                        }
                    }
                    // local_shell_call_output, shell_call_output ...: text
                    // output (a screenshot object carries none).
                    Some(kind) if kind.ends_with("_output") => {
                        if let Some(output @ (Value::String(_) | Value::Array(_))) = field(item, "output") {
                            openai_content("tool", output, &ip.key("output"), c)?;
                        }
                    }
                    // reasoning, item_reference ...
                    Some(_) => {}
                }
            }
        }
        Some(_) => return Err(invalid(&root, "must be a string or an array")),
    }
    Ok(())
}

/// A reusable prompt's `variables`: strings, or `input_text` parts (images
/// and files carry no text).
fn prompt_variables(prompt: &Value, c: &mut Collector) -> Result<(), Error> {
    let pp = Path::root("prompt");
    let prompt = as_object(prompt, &pp)?;
    let Some(vars) = field(prompt, "variables") else { return Ok(()) };
    let vp = pp.key("variables");
    for (name, v) in as_object(vars, &vp)? {
        let np = vp.key(name);
        match v {
            Value::String(s) => c.push("user", s, &np),
            Value::Object(part) if opt_str(part, "type", Some(&np))? == Some("input_text") => {
                if let Some(text) = opt_str(part, "text", Some(&np))? {
                    c.push("user", text, &np.key("text"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn anthropic(obj: &Map<String, Value>, c: &mut Collector) -> Result<(), Error> {
    if let Some(system) = field(obj, "system") {
        anthropic_blocks("system", system, &Path::root("system"), 0, c)?;
    }
    let root = Path::root("messages");
    for (i, m) in messages(obj)?.iter().enumerate() {
        let mp = root.index(i);
        let m = as_object(m, &mp)?;
        let role = req_str(m, "role", Some(&mp))?;
        if let Some(content) = field(m, "content") {
            anthropic_blocks(role, content, &mp.key("content"), 0, c)?;
        }
    }
    Ok(())
}

/// A string or an array of content blocks.
fn anthropic_blocks(role: &str, v: &Value, path: &Path<'_>, depth: usize, c: &mut Collector) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(too_deep(path));
    }
    match v {
        Value::String(s) => c.push(role, s, path),
        Value::Array(blocks) => {
            for (i, block) in blocks.iter().enumerate() {
                let bp = path.index(i);
                anthropic_block(role, as_object(block, &bp)?, &bp, depth + 1, c)?;
            }
        }
        _ => return Err(invalid(path, "must be a string or an array")),
    }
    Ok(())
}

/// The texts of one content block, wherever it sits (a message, a tool
/// result, a document's content).
fn anthropic_block(
    role: &str,
    block: &Map<String, Value>,
    bp: &Path<'_>,
    depth: usize,
    c: &mut Collector,
) -> Result<(), Error> {
    let str_field = |key: &str, c: &mut Collector| -> Result<(), Error> {
        if let Some(s) = opt_str(block, key, Some(bp))? {
            c.push(role, s, &bp.key(key));
        }
        Ok(())
    };
    match opt_str(block, "type", Some(bp))? {
        Some("text") => str_field("text", c)?,
        Some("tool_use" | "server_tool_use" | "mcp_tool_use") => {
            if let Some(input) = field(block, "input") {
                c.push_json(role, input, &bp.key("input"))?;
            }
        }
        Some("tool_result" | "mcp_tool_result") => {
            if let Some(content) = field(block, "content") {
                anthropic_blocks("tool", content, &bp.key("content"), depth, c)?;
            }
        }
        Some("document") => {
            str_field("title", c)?;
            str_field("context", c)?;
            if let Some(source) = field(block, "source") {
                let sp = bp.key("source");
                let source = as_object(source, &sp)?;
                match opt_str(source, "type", Some(&sp))? {
                    Some("text") => {
                        if let Some(data) = opt_str(source, "data", Some(&sp))? {
                            c.push(role, data, &sp.key("data"));
                        }
                    }
                    Some("content") => {
                        if let Some(content) = field(source, "content") {
                            anthropic_blocks(role, content, &sp.key("content"), depth, c)?;
                        }
                    }
                    // base64 (PDF), url, file: no text to read.
                    _ => {}
                }
            }
        }
        Some("search_result") => {
            str_field("title", c)?;
            str_field("source", c)?;
            if let Some(content) = field(block, "content") {
                anthropic_blocks(role, content, &bp.key("content"), depth, c)?;
            }
        }
        Some("web_search_tool_result") => {
            if let Some(Value::Array(results)) = field(block, "content") {
                let cp = bp.key("content");
                for (i, r) in results.iter().enumerate() {
                    if let Value::Object(r) = r {
                        if let Some(title) = opt_str(r, "title", Some(&cp.index(i)))? {
                            c.push("tool", title, &cp.index(i).key("title"));
                        }
                    }
                }
            }
        }
        // image, thinking, redacted_thinking, container_upload ...
        _ => {}
    }
    Ok(())
}

/// Tool names: `name` (Anthropic, responses, legacy `functions`) or
/// `function.name` / `custom.name` (chat). Tools without a name (built-in
/// tools such as `web_search`) are skipped. A tool's definition is text
/// the model reads, written by the client: its `description` and its
/// parameter schema's keys and strings are scanned too (role `tools`).
fn tools(obj: &Map<String, Value>, key: &str, c: &mut Collector) -> Result<(), Error> {
    let Some(list) = opt_array(obj, key, None)? else { return Ok(()) };
    let root = Path::root(key);
    for (i, tool) in list.iter().enumerate() {
        let tp = root.index(i);
        let tool = as_object(tool, &tp)?;
        tool_definition(tool, &tp, c)?;
        let mut name = opt_str(tool, "name", Some(&tp))?;
        for kind in ["function", "custom"] {
            if let Some(f) = field(tool, kind) {
                let fp = tp.key(kind);
                let f = as_object(f, &fp)?;
                tool_definition(f, &fp, c)?;
                if name.is_none() {
                    name = opt_str(f, "name", Some(&fp))?;
                }
            }
        }
        if let Some(name) = name {
            c.tools.push(ToolDef { name: name.to_owned() });
        }
    }
    Ok(())
}

/// A tool definition's `description` and parameter schema.
fn tool_definition(def: &Map<String, Value>, path: &Path<'_>, c: &mut Collector) -> Result<(), Error> {
    if let Some(text) = opt_str(def, "description", Some(path))? {
        c.push("tools", text, &path.key("description"));
    }
    for schema in ["parameters", "input_schema"] {
        if let Some(v @ Value::Object(_)) = field(def, schema) {
            c.push_json("tools", v, &path.key(schema))?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(api: ApiKind, v: Value) -> Result<LlmRequest, Error> {
        parse_request(api, v.to_string().as_bytes())
    }

    fn texts(r: &LlmRequest) -> Vec<(&str, &str)> {
        r.texts.iter().map(|t| (t.role.as_str(), t.text.as_str())).collect()
    }

    fn err_msg(r: Result<LlmRequest, Error>) -> String {
        match r {
            Err(Error::InvalidRequest(m)) => m,
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }

    #[test]
    fn chat_full() {
        let r = parse(
            ApiKind::OpenAiChat,
            json!({
                "model": "gpt-4o",
                "stream": true,
                "stream_options": {"include_usage": true},
                "max_tokens": 10,
                "max_completion_tokens": 20,
                "messages": [
                    {"role": "system", "content": "be nice"},
                    {"role": "user", "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "data:..."}},
                        {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}},
                        {"type": "text", "text": "here"}
                    ]},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "c1", "content": "result"}
                ],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
                "functions": [{"name": "legacy"}]
            }),
        )
        .unwrap();
        assert_eq!(r.model, "gpt-4o");
        assert!(r.stream && r.include_usage);
        assert_eq!(r.max_tokens, Some(20));
        assert_eq!(
            texts(&r),
            vec![("system", "be nice"), ("user", "look"), ("user", "here"), ("assistant", "a"), ("tool", "result")]
        );
        let names: Vec<_> = r.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["f", "legacy"]);
    }

    #[test]
    fn chat_max_tokens_fallback_and_defaults() {
        let r = parse(
            ApiKind::OpenAiChat,
            json!({"model": "m", "max_tokens": 7, "messages": [{"role": "user", "content": "x"}]}),
        )
        .unwrap();
        assert_eq!(r.max_tokens, Some(7));
        assert!(!r.stream && !r.include_usage);
        let r = parse(
            ApiKind::OpenAiChat,
            json!({"model": "m", "stream": null, "messages": [{"role": "user", "content": ""}]}),
        )
        .unwrap();
        assert!(r.texts.is_empty());
        assert_eq!(r.max_tokens, None);
    }

    #[test]
    fn model_errors() {
        let m = err_msg(parse(ApiKind::OpenAiChat, json!({"messages": [{"role": "user", "content": "x"}]})));
        assert_eq!(m, "`model` is required");
        let m = err_msg(parse(ApiKind::AnthropicMessages, json!({"model": 3, "messages": []})));
        assert_eq!(m, "`model` must be a string");
        let m = err_msg(parse(ApiKind::OpenAiEmbeddings, json!({"model": "", "input": "x"})));
        assert!(m.contains("`model`"), "{m}");
    }

    #[test]
    fn invalid_json_and_non_object() {
        for body in [&b"{"[..], b"not json", b"[1,2]", b"42", b""] {
            match parse_request(ApiKind::OpenAiChat, body) {
                Err(Error::InvalidJson(m)) => assert!(!m.is_empty()),
                other => panic!("{body:?}: {other:?}"),
            }
        }
        match parse_request(ApiKind::OpenAiChat, b"[1]") {
            Err(Error::InvalidJson(m)) => assert!(m.contains("expected a map"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn field_type_errors_name_the_field() {
        let cases = [
            (ApiKind::OpenAiChat, json!({"model": "m"}), "`messages` is required"),
            (ApiKind::OpenAiChat, json!({"model": "m", "messages": []}), "`messages` must not be empty"),
            (ApiKind::OpenAiChat, json!({"model": "m", "messages": "hi"}), "`messages` must be an array"),
            (ApiKind::OpenAiChat, json!({"model": "m", "messages": ["hi"]}), "`messages[0]` must be an object"),
            (
                ApiKind::OpenAiChat,
                json!({"model": "m", "messages": [{"content": "x"}]}),
                "`messages[0].role` is required",
            ),
            (
                ApiKind::OpenAiChat,
                json!({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": 5}]}),
                "`messages[1].content` must be a string or an array",
            ),
            (
                ApiKind::OpenAiChat,
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}),
                "`messages[0].content[0].text` must be a string",
            ),
            (
                ApiKind::OpenAiChat,
                json!({"model": "m", "stream": "yes", "messages": [{"role": "user", "content": "a"}]}),
                "`stream` must be a boolean",
            ),
            (
                ApiKind::OpenAiChat,
                json!({"model": "m", "stream_options": {"include_usage": 1}, "messages": [{"role": "user", "content": "a"}]}),
                "`stream_options.include_usage` must be a boolean",
            ),
            (
                ApiKind::OpenAiCompletions,
                json!({"model": "m", "max_tokens": -1}),
                "`max_tokens` must be a non-negative integer",
            ),
            (ApiKind::OpenAiCompletions, json!({"model": "m", "prompt": {}}), "`prompt` must be a string or an array"),
            (
                ApiKind::OpenAiCompletions,
                json!({"model": "m", "prompt": ["a", true]}),
                "`prompt[1]` must be a string or a token array",
            ),
            (ApiKind::OpenAiEmbeddings, json!({"model": "m"}), "`input` is required"),
            (ApiKind::OpenAiResponses, json!({"model": "m", "input": 3}), "`input` must be a string or an array"),
            (
                ApiKind::OpenAiResponses,
                json!({"model": "m", "max_output_tokens": 1.5}),
                "`max_output_tokens` must be a non-negative integer",
            ),
            (
                ApiKind::AnthropicMessages,
                json!({"model": "m", "messages": [{"role": "user", "content": 1}]}),
                "`messages[0].content` must be a string or an array",
            ),
            (
                ApiKind::AnthropicMessages,
                json!({"model": "m", "messages": [{"role": "user", "content": "a"}], "tools": {}}),
                "`tools` must be an array",
            ),
            (
                ApiKind::AnthropicMessages,
                json!({"model": "m", "system": 1, "messages": [{"role": "user", "content": "a"}]}),
                "`system` must be a string or an array",
            ),
        ];
        for (api, body, want) in cases {
            assert_eq!(err_msg(parse(api, body.clone())), want, "{body}");
        }
    }

    #[test]
    fn completions_prompts() {
        let r = parse(
            ApiKind::OpenAiCompletions,
            json!({"model": "m", "prompt": ["one", [1, 2], 3, "two"], "suffix": "end", "stream": true,
                   "stream_options": {"include_usage": true}, "max_tokens": 5}),
        )
        .unwrap();
        assert_eq!(texts(&r), vec![("user", "one"), ("user", "two"), ("user", "end")]);
        assert!(r.stream && r.include_usage);
        assert_eq!(r.max_tokens, Some(5));
        let r = parse(ApiKind::OpenAiCompletions, json!({"model": "m", "prompt": [1, 2, 3]})).unwrap();
        assert!(r.texts.is_empty());
    }

    #[test]
    fn embeddings_inputs() {
        let r = parse(ApiKind::OpenAiEmbeddings, json!({"model": "e", "input": "hello"})).unwrap();
        assert_eq!(texts(&r), vec![("input", "hello")]);
        let r = parse(ApiKind::OpenAiEmbeddings, json!({"model": "e", "input": ["a", [1, 2], "b"], "stream": true}))
            .unwrap();
        assert_eq!(texts(&r), vec![("input", "a"), ("input", "b")]);
        assert!(!r.stream);
    }

    #[test]
    fn responses_items() {
        let r = parse(
            ApiKind::OpenAiResponses,
            json!({
                "model": "gpt-4.1",
                "instructions": "sys",
                "max_output_tokens": 99,
                "stream": true,
                "input": [
                    {"role": "user", "content": "plain"},
                    {"type": "message", "role": "user", "content": [
                        {"type": "input_text", "text": "part"},
                        {"type": "input_image", "image_url": "https://x"}
                    ]},
                    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "answer"}]},
                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "c", "output": "out"},
                    {"type": "reasoning", "summary": []}
                ],
                "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}, {"type": "function", "function": {"name": "g"}}]
            }),
        )
        .unwrap();
        assert_eq!(
            texts(&r),
            vec![("system", "sys"), ("user", "plain"), ("user", "part"), ("assistant", "answer"), ("tool", "out")]
        );
        assert_eq!(r.max_tokens, Some(99));
        assert!(r.stream && !r.include_usage);
        let names: Vec<_> = r.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["f", "g"]);
        let r = parse(ApiKind::OpenAiResponses, json!({"model": "m", "input": "just text"})).unwrap();
        assert_eq!(texts(&r), vec![("user", "just text")]);
    }

    #[test]
    fn anthropic_blocks() {
        let r = parse(
            ApiKind::AnthropicMessages,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "stream": true,
                "system": [{"type": "text", "text": "sys1"}, {"type": "text", "text": "sys2", "cache_control": {"type": "ephemeral"}}],
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "x"},
                        {"type": "text", "text": "calling"},
                        {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                        {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "rainy"}, {"type": "image", "source": {}}]},
                        {"type": "image", "source": {"type": "base64", "data": "..."}},
                        {"type": "text", "text": "thanks"}
                    ]}
                ],
                "tools": [{"name": "get_weather", "input_schema": {}}]
            }),
        )
        .unwrap();
        assert_eq!(
            texts(&r),
            vec![
                ("system", "sys1"),
                ("system", "sys2"),
                ("user", "hi"),
                ("assistant", "calling"),
                ("assistant", "city\nParis"),
                ("tool", "sunny"),
                ("tool", "rainy"),
                ("user", "thanks")
            ]
        );
        assert_eq!(r.max_tokens, Some(1024));
        assert!(r.stream && !r.include_usage);
        assert_eq!(r.tools, vec![ToolDef { name: "get_weather".into() }]);
        let r = parse(
            ApiKind::AnthropicMessages,
            json!({"model": "m", "system": "s", "messages": [{"role": "user", "content": "u"}]}),
        )
        .unwrap();
        assert_eq!(texts(&r), vec![("system", "s"), ("user", "u")]);
        assert_eq!(r.max_tokens, None);
    }

    #[test]
    fn pointers_locate_texts() {
        let body = json!({
            "model": "claude",
            "system": [{"type": "text", "text": "sys"}],
            "messages": [
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {"q": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "r"}]}]}
            ]
        });
        let p = parse_request_json(ApiKind::AnthropicMessages, body.to_string().as_bytes()).unwrap();
        assert_eq!(p.json, body);
        assert_eq!(p.text_pointers.len(), p.request.texts.len());
        assert_eq!(
            p.text_pointers,
            [
                "/system/0/text",
                "/messages/0/content",
                "/messages/1/content/0/input",
                "/messages/2/content/0/content/0/text"
            ]
        );
        assert_eq!(p.text_kinds, [TextKind::Plain, TextKind::Plain, TextKind::Json, TextKind::Plain]);
        for ((ptr, t), kind) in p.text_pointers.iter().zip(&p.request.texts).zip(&p.text_kinds) {
            match (p.json.pointer(ptr).unwrap(), kind) {
                (Value::String(s), TextKind::Plain) => assert_eq!(s, &t.text),
                (other, _) => assert_eq!(t.text, "q", "{other}"),
            }
        }
        assert_eq!(request_from_json(ApiKind::AnthropicMessages, &p.json).unwrap(), p.request);
        assert!(matches!(request_from_json(ApiKind::AnthropicMessages, &json!([1])), Err(Error::InvalidJson(_))));
    }

    #[test]
    fn pointer_escaping() {
        let inner = Path::root("a/b~c");
        let p = inner.index(3);
        assert_eq!(p.pointer(), "/a~1b~0c/3");
        assert_eq!(p.to_string(), "a/b~c[3]");
    }
}
