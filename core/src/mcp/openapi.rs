//! An OpenAPI 3 document as MCP tools ("REST as MCP").
//!
//! [`Api::from_document`] reads an OpenAPI 3.0/3.1 document (the caller parses
//! YAML or JSON into a [`serde_json::Value`]) into one [`Operation`] per
//! operation: its tool name is the `operationId` (or, without one,
//! `<method>_<path segments>`, e.g. `get_pets_petId`), each sanitized to
//! `[a-zA-Z0-9_-]` and at most 128 characters. Two operations with the same
//! name are an error naming both. [`Operation::tool`] is the MCP tool
//! definition; [`Operation::request`] turns a call's arguments into the HTTP
//! request ([`HttpCall`]); [`tool_result`] turns the HTTP answer into the
//! `tools/call` result.
//!
//! The tool's input schema is an object with one property per parameter
//! (path, query and header) and, for a JSON request body, a property `body`
//! holding the body's schema (required when the request body is). Path-level
//! parameters are merged with the operation's (the operation's win, by name
//! and location). An argument is named like its parameter; a name outside
//! `[A-Za-z0-9_.-]{1,64}` (what model APIs accept) has its other characters
//! replaced by `_`, and when two parameters (or a parameter and `body`) end up
//! with one name, each of them is prefixed with its location (`query_id`,
//! `path_id`). Schemas are made self-contained: local `$ref`s
//! (`#/components/...`) are inlined (a reference to a schema already being
//! inlined, i.e. a cycle, becomes `{}`, which accepts anything), OpenAPI 3.0's
//! `nullable`, boolean `exclusiveMinimum`/`exclusiveMaximum` and `example` are
//! turned into their JSON Schema forms, OpenAPI-only keywords (`discriminator`,
//! `xml`, `externalDocs`, `x-*`) and `$`-keywords are dropped, and `readOnly`
//! properties are left out of objects (they are never sent).
//!
//! Supported: parameter styles `simple`, `label`, `matrix` (path), `form`,
//! `spaceDelimited`, `pipeDelimited`, `deepObject` (query) and `simple`
//! (header), with `explode`; a parameter described by `content` is sent as
//! JSON text when its media type is JSON; a request body is sent as JSON
//! under its media type (`application/json` first, then any `.../json` or
//! `...+json`, else a wildcard `*/*` or `application/*` as
//! `application/json`); path item `$ref`s to `#/components/pathItems`.
//!
//! Not sent, and listed in [`Api::skipped`] with the reason (nothing is
//! dropped silently): operations whose request body has no JSON media type
//! (forms, file uploads); cookie parameters (a tool call carries no cookies);
//! header parameters the gateway controls (`Accept`, `Content-Type`,
//! `Authorization` as the specification says, and `Host`, `Cookie`,
//! hop-by-hop and framing headers, `x-envoy-*`, `x-tollgate-*`).
//!
//! Refused (an [`OpenApiError::Document`] naming the JSON pointer of the
//! field): Swagger 2.0, references outside the document, references that do
//! not resolve, reference chains over 32 hops, schemas nested deeper than 64
//! levels, one operation's schemas expanding to more than 50,000 nodes, a
//! path template whose variables and path parameters disagree, a `.` or `..`
//! segment in a path template, unknown parameter locations or styles, and
//! fields of the wrong JSON type.
//!
//! Ignored: `servers` (the path is relative to the server URL: the caller
//! joins it to the server's base path), `security` (the gateway holds the
//! credentials), `responses`, `callbacks`, `webhooks`, `allowReserved`
//! (reserved characters are always percent-encoded).
//!
//! A call is checked before anything is built: the arguments must be an
//! object (or null: no arguments), unknown argument names are refused, every
//! required argument must be present (a `null` argument counts as absent),
//! and each argument must have its schema's JSON type (`string`, `number`,
//! `integer`, `boolean`, `array` and its items' type, `object`, `null`, from
//! `type` or the members of `anyOf`/`oneOf`/`allOf`) and, for a scalar, be one
//! of its `enum`. A path argument is one percent-encoded path segment (`/` is
//! `%2F`); one that would make its segment empty, `.` or `..` is refused. A
//! header argument with a control character is refused. Deeper validation
//! (a body's properties) is left to the API.

use serde_json::{json, Map, Value};

/// The longest tool name: the MCP specification's bound.
pub const MAX_TOOL_NAME_CHARS: usize = 128;
/// The longest argument (property) name model APIs accept.
pub const MAX_ARGUMENT_CHARS: usize = 64;
/// How much of an error answer's body [`tool_result`] keeps.
pub const ERROR_TEXT_BYTES: usize = 4096;
/// Hops through `$ref`s to reach a parameter, request body or path item.
const MAX_REF_HOPS: usize = 32;
/// Nesting of one schema, references included.
const MAX_SCHEMA_DEPTH: usize = 64;
/// JSON values in one operation's schemas once references are inlined.
const MAX_SCHEMA_NODES: usize = 50_000;
/// The HTTP methods an OpenAPI 3 path item holds, in the specification's order.
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
/// Header parameters never taken from a tool call (lowercase; see the module docs).
const CONTROLLED_HEADERS: [&str; 15] = [
    "accept",
    "content-type",
    "authorization",
    "host",
    "cookie",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "expect",
];

/// What can go wrong reading a document or building a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenApiError {
    /// The document is not a usable OpenAPI 3 document. `pointer` is the
    /// JSON pointer (RFC 6901) of the bad field (`/paths/~1pets/get`).
    #[error("invalid openapi document at `{pointer}`: {message}")]
    Document { pointer: String, message: String },
    /// Two operations would be the same tool (`first` and `second` are the
    /// operations' JSON pointers).
    #[error("the operations at `{first}` and `{second}` are both named `{name}`")]
    DuplicateName { name: String, first: String, second: String },
    /// A tool call's arguments do not fit the operation (a lowercase
    /// message fit for a JSON-RPC error or an `isError` tool result).
    #[error("{0}")]
    Arguments(String),
}

/// Something in the document that is not a tool or not sent, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// JSON pointer of the operation, request body or parameter.
    pub pointer: String,
    pub reason: String,
}

/// The operations of an OpenAPI document, as tools.
#[derive(Debug, Clone, PartialEq)]
pub struct Api {
    /// In document order (paths as the JSON object holds them, methods in the
    /// specification's order).
    pub operations: Vec<Operation>,
    /// Operations left out and parameters not sent (see the module docs).
    pub skipped: Vec<Skipped>,
}

/// One operation: a tool, and how to call it.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// The tool name.
    pub name: String,
    /// The tool description (`summary` and `description`, or `METHOD /path`).
    pub description: String,
    /// The tool's input schema (a JSON Schema object).
    pub input_schema: Value,
    method: String,
    path: String,
    segments: Vec<Vec<Piece>>,
    params: Vec<Param>,
    body: Option<Body>,
}

/// An HTTP request for a tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    /// Uppercase (`GET`).
    pub method: String,
    /// The path with its query, percent-encoded, relative to the server URL.
    pub path_and_query: String,
    /// Headers to add (lowercase names), `content-type` last when there is a body.
    pub headers: Vec<(String, String)>,
    /// The JSON request body.
    pub body: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Location {
    Path,
    Query,
    Header,
}

impl Location {
    fn as_str(self) -> &'static str {
        match self {
            Location::Path => "path",
            Location::Query => "query",
            Location::Header => "header",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Simple,
    Label,
    Matrix,
    Form,
    SpaceDelimited,
    PipeDelimited,
    DeepObject,
}

#[derive(Debug, Clone, PartialEq)]
struct Param {
    /// The name on the wire (lowercase for a header).
    name: String,
    /// The argument (input schema property) name.
    arg: String,
    location: Location,
    required: bool,
    style: Style,
    explode: bool,
    /// Described by JSON `content`: the value is sent as JSON text.
    json: bool,
    shape: Shape,
}

#[derive(Debug, Clone, PartialEq)]
struct Body {
    content_type: String,
    required: bool,
    shape: Shape,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// Index into `Operation::params`.
    Param(usize),
}

/// The JSON types of a schema, as far as a call is checked.
#[derive(Debug, Clone, PartialEq, Default)]
struct Shape {
    /// `None`: any type.
    kinds: Option<Vec<Kind>>,
    /// An array's items.
    items: Option<Box<Shape>>,
    /// The `enum`, checked for scalars.
    choices: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Number,
    Integer,
    Boolean,
    Array,
    Object,
    Null,
}

impl Api {
    /// Read an OpenAPI 3.0/3.1 document (already parsed to JSON). Errors name
    /// the JSON pointer of the bad field.
    pub fn from_document(doc: &Value) -> Result<Api, OpenApiError> {
        let Some(root) = doc.as_object() else {
            return Err(doc_err("", "an openapi document must be a json object"));
        };
        check_version(root)?;
        let reader = Reader { doc };
        let mut api = Api { operations: Vec::new(), skipped: Vec::new() };
        let mut origins: Vec<String> = Vec::new();
        let paths = match root.get("paths") {
            None => return Ok(api),
            Some(Value::Object(paths)) => paths,
            Some(_) => return Err(doc_err("/paths", "`paths` must be an object")),
        };
        for (path, item) in paths {
            let item_pointer = child("/paths", path);
            if !path.starts_with('/') {
                return Err(doc_err(&item_pointer, format!("the path `{path}` must start with `/`")));
            }
            let (item, item_pointer) = reader.follow(item, item_pointer)?;
            let Some(item_map) = item.as_object() else {
                return Err(doc_err(&item_pointer, "a path item must be an object"));
            };
            let shared = match item_map.get("parameters") {
                Some(list) => reader.raw_params(list, &child(&item_pointer, "parameters"))?,
                None => Vec::new(),
            };
            for method in METHODS {
                let Some(op) = item_map.get(method) else { continue };
                let op_pointer = child(&item_pointer, method);
                let context = OperationContext { method, path, pointer: &op_pointer, shared: &shared };
                let Some(operation) = reader.operation(&context, op, &mut api.skipped)? else {
                    continue;
                };
                if let Some(index) = api.operations.iter().position(|o| o.name == operation.name) {
                    return Err(OpenApiError::DuplicateName {
                        name: operation.name,
                        first: origins.get(index).cloned().unwrap_or_default(),
                        second: op_pointer,
                    });
                }
                origins.push(op_pointer);
                api.operations.push(operation);
            }
        }
        Ok(api)
    }

    /// The operation (tool) of this name.
    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations.iter().find(|o| o.name == name)
    }

    /// Every operation's tool definition (what `tools/list` returns).
    pub fn tools(&self) -> Vec<Value> {
        self.operations.iter().map(Operation::tool).collect()
    }
}

impl Operation {
    /// The MCP tool definition: `{"name", "description", "inputSchema"}`.
    pub fn tool(&self) -> Value {
        json!({
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input_schema,
        })
    }

    /// The HTTP method (uppercase).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path template as the document writes it (`/pets/{petId}`).
    pub fn path_template(&self) -> &str {
        &self.path
    }

    /// Build the HTTP request for a call with these arguments (a JSON object;
    /// null is no arguments). See the module docs for what is checked.
    pub fn request(&self, arguments: &Value) -> Result<HttpCall, OpenApiError> {
        let empty = Map::new();
        let args = match arguments {
            Value::Object(map) => map,
            Value::Null => &empty,
            other => return Err(arg_err(format!("the arguments must be a json object, not {}", describe(other)))),
        };
        self.check_names(args)?;
        let present = |arg: &str| args.get(arg).filter(|v| !v.is_null());
        let mut missing: Vec<&str> = Vec::new();
        for param in &self.params {
            if param.required && present(&param.arg).is_none() {
                missing.push(&param.arg);
            }
        }
        if self.body.as_ref().is_some_and(|b| b.required) && present("body").is_none() {
            missing.push("body");
        }
        if !missing.is_empty() {
            let list = missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ");
            let s = if missing.len() > 1 { "s" } else { "" };
            return Err(arg_err(format!("missing required argument{s} {list}")));
        }
        for param in &self.params {
            if let Some(value) = present(&param.arg) {
                check(&param.arg, &param.shape, value)?;
            }
        }
        let body = match (&self.body, present("body")) {
            (Some(body), Some(value)) => {
                check("body", &body.shape, value)?;
                Some((body, value))
            }
            _ => None,
        };

        let mut path_and_query = self.build_path(|p| present(&p.arg))?;
        let mut query: Vec<(String, String)> = Vec::new();
        let mut headers: Vec<(String, String)> = Vec::new();
        for param in &self.params {
            let Some(value) = present(&param.arg) else { continue };
            match param.location {
                Location::Path => {}
                Location::Query => query_pairs(param, value, &mut query),
                Location::Header => headers.push((param.name.clone(), header_value(param, value)?)),
            }
        }
        for (i, (key, value)) in query.iter().enumerate() {
            path_and_query.push(if i == 0 { '?' } else { '&' });
            path_and_query.push_str(key);
            path_and_query.push('=');
            path_and_query.push_str(value);
        }
        let body = match body {
            None => None,
            Some((body, value)) => {
                let bytes = serde_json::to_vec(value)
                    .map_err(|e| arg_err(format!("the body cannot be written as json: {e}")))?;
                headers.push(("content-type".to_owned(), body.content_type.clone()));
                Some(bytes)
            }
        };
        Ok(HttpCall { method: self.method.clone(), path_and_query, headers, body })
    }

    /// Refuse argument names the tool does not take.
    fn check_names(&self, args: &Map<String, Value>) -> Result<(), OpenApiError> {
        let takes = |key: &str| self.params.iter().any(|p| p.arg == key) || (key == "body" && self.body.is_some());
        let mut unknown: Vec<String> = args.keys().filter(|k| !takes(k)).map(|k| format!("`{k}`")).collect();
        unknown.sort_unstable();
        if unknown.is_empty() {
            return Ok(());
        }
        let mut known: Vec<&str> = self.params.iter().map(|p| p.arg.as_str()).collect();
        if self.body.is_some() {
            known.push("body");
        }
        let s = if unknown.len() > 1 { "s" } else { "" };
        let takes = if known.is_empty() {
            "this tool takes no arguments".to_owned()
        } else {
            format!("this tool takes: {}", known.join(", "))
        };
        Err(arg_err(format!("unknown argument{s} {} ({takes})", unknown.join(", "))))
    }

    /// The path with its parameters, each segment checked.
    fn build_path<'v>(&self, value_of: impl Fn(&Param) -> Option<&'v Value>) -> Result<String, OpenApiError> {
        let mut path = String::with_capacity(self.path.len() + 16);
        for segment in &self.segments {
            path.push('/');
            let start = path.len();
            let mut last_param: Option<&Param> = None;
            for piece in segment {
                match piece {
                    Piece::Literal(text) => path.push_str(text),
                    Piece::Param(index) => {
                        let Some(param) = self.params.get(*index) else { continue };
                        if let Some(value) = value_of(param) {
                            path.push_str(&path_value(param, value));
                        }
                        last_param = Some(param);
                    }
                }
            }
            let Some(param) = last_param else { continue };
            match path.get(start..).unwrap_or_default() {
                "" => {
                    return Err(arg_err(format!(
                        "argument `{}` must not be empty: it is a segment of the request path",
                        param.arg
                    )))
                }
                dots @ ("." | "..") => {
                    return Err(arg_err(format!(
                        "argument `{}` cannot make the path segment `{dots}`: it would change the request path",
                        param.arg
                    )))
                }
                _ => {}
            }
        }
        Ok(path)
    }
}

/// The MCP `tools/call` result for an HTTP answer. A 2xx JSON answer is its
/// compact text, with `structuredContent` when it is an object; other text
/// is text; `image/*` and `audio/*` are base64 content; other binary bodies
/// are described, not shown; anything but 2xx is `isError` with the status
/// and the first [`ERROR_TEXT_BYTES`] of the body. A 2xx body is not
/// bounded here: the caller bounds what it buffers.
pub fn tool_result(status: u16, content_type: Option<&str>, body: &[u8]) -> Value {
    let essence = content_type.map(media_essence);
    let status_text = match reason(status) {
        Some(reason) => format!("http status {status} ({reason})"),
        None => format!("http status {status}"),
    };
    if !(200..300).contains(&status) {
        let (text, truncated) = text_prefix(body, ERROR_TEXT_BYTES);
        let mut message = status_text;
        if !text.trim().is_empty() {
            message.push_str(": ");
            message.push_str(&text);
            if truncated {
                message.push_str(&format!(" [truncated: the body has {} bytes]", body.len()));
            }
        }
        return json!({ "content": [{ "type": "text", "text": message }], "isError": true });
    }
    if body.is_empty() {
        return text_result(format!("{status_text}, empty body"));
    }
    let json_like = match essence.as_deref() {
        Some(essence) => is_json_media(essence),
        None => true,
    };
    if json_like {
        if let Ok(value) = serde_json::from_slice::<Value>(body) {
            let text = value.to_string();
            let mut result = json!({ "content": [{ "type": "text", "text": text }], "isError": false });
            if value.is_object() {
                if let Some(map) = result.as_object_mut() {
                    map.insert("structuredContent".to_owned(), value);
                }
            }
            return result;
        }
    }
    if let Some(essence) = essence.as_deref() {
        for kind in ["image", "audio"] {
            if essence.strip_prefix(kind).is_some_and(|rest| rest.starts_with('/')) {
                return json!({
                    "content": [{ "type": kind, "data": base64(body), "mimeType": essence }],
                    "isError": false,
                });
            }
        }
    }
    match std::str::from_utf8(body) {
        Ok(text) => text_result(text.to_owned()),
        Err(_) if essence.as_deref().is_none_or(|e| e.starts_with("text/")) => {
            text_result(String::from_utf8_lossy(body).into_owned())
        }
        Err(_) => text_result(format!(
            "{status_text}: {} bytes of {} (binary, not shown)",
            body.len(),
            essence.as_deref().unwrap_or("binary data")
        )),
    }
}

fn text_result(text: String) -> Value {
    json!({ "content": [{ "type": "text", "text": text }], "isError": false })
}

// ---------------------------------------------------------------------------
// Reading the document

fn doc_err(pointer: &str, message: impl Into<String>) -> OpenApiError {
    OpenApiError::Document { pointer: pointer.to_owned(), message: message.into() }
}

fn arg_err(message: String) -> OpenApiError {
    OpenApiError::Arguments(message)
}

/// `pointer` + `/` + `key`, escaped as RFC 6901 says.
fn child(pointer: &str, key: &str) -> String {
    let mut out = String::with_capacity(pointer.len() + key.len() + 1);
    out.push_str(pointer);
    out.push('/');
    for c in key.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
    out
}

fn check_version(root: &Map<String, Value>) -> Result<(), OpenApiError> {
    match root.get("openapi") {
        Some(Value::String(version)) if version.starts_with("3.") => Ok(()),
        Some(Value::String(version)) => {
            Err(doc_err("/openapi", format!("openapi version `{version}` is not supported (3.x is)")))
        }
        Some(_) => Err(doc_err("/openapi", "`openapi` must be a string")),
        None if root.contains_key("swagger") => {
            Err(doc_err("/swagger", "swagger 2.0 documents are not supported: convert the document to openapi 3"))
        }
        None => Err(doc_err("/openapi", "missing: an openapi 3 document has an `openapi` version")),
    }
}

struct Reader<'a> {
    doc: &'a Value,
}

/// A parameter as declared, before it becomes a [`Param`].
struct RawParam<'a> {
    map: &'a Map<String, Value>,
    pointer: String,
    name: &'a str,
    location: &'a str,
}

impl RawParam<'_> {
    /// Same parameter: name and location (a header's name in any case).
    fn same(&self, other: &RawParam<'_>) -> bool {
        self.location == other.location
            && if self.location == "header" {
                self.name.eq_ignore_ascii_case(other.name)
            } else {
                self.name == other.name
            }
    }
}

struct OperationContext<'c, 'a> {
    method: &'c str,
    path: &'c str,
    pointer: &'c str,
    shared: &'c [RawParam<'a>],
}

impl<'a> Reader<'a> {
    /// What a `$ref` (found at `at`) points to, and its pointer.
    fn target(&self, reference: &Value, at: &str) -> Result<(&'a Value, String), OpenApiError> {
        let Some(text) = reference.as_str() else {
            return Err(doc_err(at, "`$ref` must be a string"));
        };
        let Some(fragment) = text.strip_prefix('#') else {
            return Err(doc_err(
                at,
                format!("`{text}` is outside the document: only `#/...` references are supported"),
            ));
        };
        let pointer = percent_decode(fragment);
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(doc_err(at, format!("`{text}` is not a json pointer")));
        }
        match self.doc.pointer(&pointer) {
            Some(value) => Ok((value, pointer)),
            None => Err(doc_err(at, format!("`{text}` does not resolve in the document"))),
        }
    }

    /// Follow `$ref`s (of a parameter, request body or path item).
    fn follow(&self, value: &'a Value, pointer: String) -> Result<(&'a Value, String), OpenApiError> {
        let (mut value, mut pointer) = (value, pointer);
        for _ in 0..MAX_REF_HOPS {
            let Some(reference) = value.get("$ref") else { return Ok((value, pointer)) };
            (value, pointer) = self.target(reference, &child(&pointer, "$ref"))?;
        }
        Err(doc_err(&pointer, format!("more than {MAX_REF_HOPS} references in a row (a reference cycle?)")))
    }

    /// A `parameters` list, references followed, without duplicates.
    fn raw_params(&self, list: &'a Value, pointer: &str) -> Result<Vec<RawParam<'a>>, OpenApiError> {
        let Some(items) = list.as_array() else {
            return Err(doc_err(pointer, "`parameters` must be an array"));
        };
        let mut out: Vec<RawParam<'a>> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let (item, item_pointer) = self.follow(item, format!("{pointer}/{i}"))?;
            let Some(map) = item.as_object() else {
                return Err(doc_err(&item_pointer, "a parameter must be an object"));
            };
            let name = match map.get("name") {
                Some(Value::String(name)) if !name.is_empty() => name.as_str(),
                _ => return Err(doc_err(&child(&item_pointer, "name"), "a parameter needs a non-empty string `name`")),
            };
            let location = match map.get("in") {
                Some(Value::String(location)) => location.as_str(),
                _ => {
                    return Err(doc_err(
                        &child(&item_pointer, "in"),
                        "a parameter needs `in` (path, query, header or cookie)",
                    ))
                }
            };
            let param = RawParam { map, pointer: item_pointer, name, location };
            if let Some(first) = out.iter().find(|p| p.same(&param)) {
                return Err(doc_err(
                    &param.pointer,
                    format!("the {location} parameter `{name}` is declared twice (also at `{}`)", first.pointer),
                ));
            }
            out.push(param);
        }
        Ok(out)
    }

    /// One operation, or `None` when it is skipped (recorded in `skipped`).
    fn operation(
        &self,
        context: &OperationContext<'_, 'a>,
        op: &'a Value,
        skipped: &mut Vec<Skipped>,
    ) -> Result<Option<Operation>, OpenApiError> {
        let pointer = context.pointer;
        let Some(op) = op.as_object() else {
            return Err(doc_err(pointer, "an operation must be an object"));
        };
        let name = match op.get("operationId") {
            None => derived_name(context.method, context.path),
            Some(Value::String(id)) if !id.is_empty() => sanitize(id, MAX_TOOL_NAME_CHARS, false),
            Some(_) => return Err(doc_err(&child(pointer, "operationId"), "`operationId` must be a non-empty string")),
        };
        let method = context.method.to_ascii_uppercase();
        let description = describe_operation(op, pointer, &method, context.path)?;
        let mut expander = Expander { reader: self, stack: Vec::new(), nodes: 0, operation: pointer };

        // The request body first: an operation without a JSON one is skipped.
        let mut body: Option<(Body, Value)> = None;
        if let Some(request_body) = op.get("requestBody") {
            let (request_body, body_pointer) = self.follow(request_body, child(pointer, "requestBody"))?;
            let Some(request_body) = request_body.as_object() else {
                return Err(doc_err(&body_pointer, "`requestBody` must be an object"));
            };
            let Some(content) = request_body.get("content").and_then(Value::as_object) else {
                return Err(doc_err(&child(&body_pointer, "content"), "a request body needs a `content` object"));
            };
            let Some((media, media_value)) = json_media(content) else {
                let kinds = content.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
                skipped.push(Skipped {
                    pointer: body_pointer,
                    reason: format!("the operation `{name}` is not a tool: its request body has no json media type (it takes {kinds})"),
                });
                return Ok(None);
            };
            let media_pointer = child(&child(&body_pointer, "content"), media);
            let schema = match media_value.get("schema") {
                Some(schema) => expander.schema(schema, &child(&media_pointer, "schema"), 0)?,
                None => Value::Object(Map::new()),
            };
            let text = optional_string(request_body, "description", &body_pointer)?;
            let required = optional_bool(request_body, "required", &body_pointer)?.unwrap_or(false);
            let content_type = if media.contains('*') { "application/json".to_owned() } else { media.to_owned() };
            body = Some((Body { content_type, required, shape: shape(&schema, 0) }, with_description(schema, text)));
        }

        // Parameters: the path item's, overridden by the operation's.
        let own = match op.get("parameters") {
            Some(list) => self.raw_params(list, &child(pointer, "parameters"))?,
            None => Vec::new(),
        };
        let mut merged: Vec<&RawParam<'a>> = context.shared.iter().collect();
        for param in &own {
            match merged.iter().position(|p| p.same(param)) {
                Some(index) => {
                    if let Some(slot) = merged.get_mut(index) {
                        *slot = param;
                    }
                }
                None => merged.push(param),
            }
        }
        let mut params: Vec<Param> = Vec::with_capacity(merged.len());
        let mut schemas: Vec<Value> = Vec::with_capacity(merged.len());
        for raw in merged {
            let Some((param, schema)) = read_param(raw, &mut expander, &name, skipped)? else {
                continue;
            };
            params.push(param);
            schemas.push(schema);
        }
        assign_arguments(&mut params, body.is_some(), pointer)?;
        let segments = parse_template(context.path, &params, pointer)?;

        let mut properties = Map::new();
        let mut required: Vec<Value> = Vec::new();
        for (param, schema) in params.iter().zip(schemas) {
            properties.insert(param.arg.clone(), schema);
            if param.required {
                required.push(Value::String(param.arg.clone()));
            }
        }
        let body = match body {
            Some((body, schema)) => {
                properties.insert("body".to_owned(), schema);
                if body.required {
                    required.push(Value::String("body".to_owned()));
                }
                Some(body)
            }
            None => None,
        };
        let mut input_schema = Map::new();
        input_schema.insert("type".to_owned(), json!("object"));
        input_schema.insert("properties".to_owned(), Value::Object(properties));
        if !required.is_empty() {
            input_schema.insert("required".to_owned(), Value::Array(required));
        }
        input_schema.insert("additionalProperties".to_owned(), Value::Bool(false));

        Ok(Some(Operation {
            name,
            description,
            input_schema: Value::Object(input_schema),
            method,
            path: context.path.to_owned(),
            segments,
            params,
            body,
        }))
    }
}

/// `summary` and `description`, or `METHOD /path`.
fn describe_operation(
    op: &Map<String, Value>,
    pointer: &str,
    method: &str,
    path: &str,
) -> Result<String, OpenApiError> {
    let summary = optional_string(op, "summary", pointer)?.map(str::trim).unwrap_or_default();
    let details = optional_string(op, "description", pointer)?.map(str::trim).unwrap_or_default();
    let mut text = match (summary.is_empty(), details.is_empty()) {
        (true, true) => format!("{method} {path}"),
        (false, true) => summary.to_owned(),
        (true, false) => details.to_owned(),
        (false, false) if details.starts_with(summary) => details.to_owned(),
        (false, false) => format!("{summary}\n\n{details}"),
    };
    if optional_bool(op, "deprecated", pointer)? == Some(true) {
        text.push_str("\n\n(deprecated)");
    }
    Ok(text)
}

fn optional_string<'m>(map: &'m Map<String, Value>, key: &str, pointer: &str) -> Result<Option<&'m str>, OpenApiError> {
    match map.get(key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(doc_err(&child(pointer, key), format!("`{key}` must be a string"))),
    }
}

fn optional_bool(map: &Map<String, Value>, key: &str, pointer: &str) -> Result<Option<bool>, OpenApiError> {
    match map.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(doc_err(&child(pointer, key), format!("`{key}` must be a boolean"))),
    }
}

/// The parameter, with its property schema; `None` when it is not sent.
fn read_param<'a>(
    raw: &RawParam<'a>,
    expander: &mut Expander<'_, 'a>,
    operation: &str,
    skipped: &mut Vec<Skipped>,
) -> Result<Option<(Param, Value)>, OpenApiError> {
    let pointer = raw.pointer.as_str();
    let (name, map) = (raw.name, raw.map);
    let location = match raw.location {
        "path" => Location::Path,
        "query" => Location::Query,
        "header" => Location::Header,
        "cookie" => {
            skipped.push(Skipped {
                pointer: pointer.to_owned(),
                reason: format!(
                    "the cookie parameter `{name}` of `{operation}` is not sent: a tool call carries no cookies"
                ),
            });
            return Ok(None);
        }
        other => {
            return Err(doc_err(
                &child(pointer, "in"),
                format!("unknown parameter location `{other}` (path, query, header or cookie)"),
            ))
        }
    };
    let wire_name = if location == Location::Header {
        if !name.bytes().all(is_token_byte) {
            return Err(doc_err(&child(pointer, "name"), format!("`{name}` is not a valid header name")));
        }
        let lower = name.to_ascii_lowercase();
        if CONTROLLED_HEADERS.contains(&lower.as_str())
            || lower.starts_with("x-envoy-")
            || lower.starts_with("x-tollgate-")
        {
            skipped.push(Skipped {
                pointer: pointer.to_owned(),
                reason: format!(
                    "the header parameter `{name}` of `{operation}` is not sent: the gateway controls that header"
                ),
            });
            return Ok(None);
        }
        lower
    } else {
        name.to_owned()
    };
    let required = location == Location::Path || optional_bool(map, "required", pointer)?.unwrap_or(false);
    let (schema, json) = match (map.get("schema"), map.get("content")) {
        (Some(schema), _) => (expander.schema(schema, &child(pointer, "schema"), 0)?, false),
        (None, Some(content)) => {
            let content_pointer = child(pointer, "content");
            let mut entries = content.as_object().into_iter().flatten();
            let (Some((media, media_value)), None) = (entries.next(), entries.next()) else {
                return Err(doc_err(&content_pointer, "a parameter's `content` must hold exactly one media type"));
            };
            let schema = match media_value.get("schema") {
                Some(schema) => expander.schema(schema, &child(&child(&content_pointer, media), "schema"), 0)?,
                None => Value::Object(Map::new()),
            };
            (schema, is_json_media(&media_essence(media)))
        }
        (None, None) => (Value::Object(Map::new()), false),
    };
    let style = match optional_string(map, "style", pointer)? {
        None => match location {
            Location::Query => Style::Form,
            Location::Path | Location::Header => Style::Simple,
        },
        Some(text) => {
            let style = match text {
                "simple" => Some(Style::Simple),
                "label" => Some(Style::Label),
                "matrix" => Some(Style::Matrix),
                "form" => Some(Style::Form),
                "spaceDelimited" => Some(Style::SpaceDelimited),
                "pipeDelimited" => Some(Style::PipeDelimited),
                "deepObject" => Some(Style::DeepObject),
                _ => None,
            };
            let fits = |style: &Style| match location {
                Location::Path => matches!(style, Style::Simple | Style::Label | Style::Matrix),
                Location::Query => {
                    matches!(style, Style::Form | Style::SpaceDelimited | Style::PipeDelimited | Style::DeepObject)
                }
                Location::Header => *style == Style::Simple,
            };
            match style.filter(fits) {
                Some(style) => style,
                None => {
                    return Err(doc_err(
                        &child(pointer, "style"),
                        format!("style `{text}` is not supported for a {} parameter", location.as_str()),
                    ))
                }
            }
        }
    };
    let explode = optional_bool(map, "explode", pointer)?.unwrap_or(style == Style::Form);
    let mut schema = with_description(schema, optional_string(map, "description", pointer)?);
    if optional_bool(map, "deprecated", pointer)? == Some(true) {
        if let Some(object) = schema.as_object_mut() {
            object.insert("deprecated".to_owned(), Value::Bool(true));
        }
    }
    let param = Param {
        name: wire_name,
        arg: sanitize(name, MAX_ARGUMENT_CHARS, true),
        location,
        required,
        style,
        explode,
        json,
        shape: shape(&schema, 0),
    };
    Ok(Some((param, schema)))
}

/// Make argument names unique: colliding ones get their location as a prefix.
fn assign_arguments(params: &mut [Param], has_body: bool, pointer: &str) -> Result<(), OpenApiError> {
    let clashes = |params: &[Param], arg: &str| {
        params.iter().filter(|p| p.arg == arg).count() + usize::from(has_body && arg == "body")
    };
    let clashing: Vec<usize> =
        (0..params.len()).filter(|&i| params.get(i).is_some_and(|p| clashes(params, &p.arg) > 1)).collect();
    for i in clashing {
        if let Some(param) = params.get_mut(i) {
            param.arg = sanitize(&format!("{}_{}", param.location.as_str(), param.name), MAX_ARGUMENT_CHARS, true);
        }
    }
    for (i, param) in params.iter().enumerate() {
        if clashes(params, &param.arg) > 1 {
            let other = params
                .iter()
                .enumerate()
                .find(|(j, p)| *j != i && p.arg == param.arg)
                .map(|(_, p)| format!("the {} parameter `{}`", p.location.as_str(), p.name))
                .unwrap_or_else(|| "the request body".to_owned());
            return Err(doc_err(
                pointer,
                format!(
                    "the {} parameter `{}` and {other} both become the argument `{}`",
                    param.location.as_str(),
                    param.name,
                    param.arg
                ),
            ));
        }
    }
    Ok(())
}

/// Split the path template into segments of literals and parameters, checking
/// that its variables and the path parameters agree.
fn parse_template(path: &str, params: &[Param], pointer: &str) -> Result<Vec<Vec<Piece>>, OpenApiError> {
    let path_pointer = pointer.rsplit_once('/').map(|(item, _)| item).unwrap_or(pointer);
    let bad = |message: String| Err(doc_err(path_pointer, message));
    if path.contains(['?', '#']) {
        return bad(format!("the path `{path}` must not hold a query or a fragment"));
    }
    let mut used = vec![false; params.len()];
    let mut segments = Vec::new();
    for segment in path.split('/').skip(1) {
        let mut pieces = Vec::new();
        let mut rest = segment;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    pieces.push(Piece::Literal(encode_literal(rest)));
                    rest = "";
                }
                Some(open) => {
                    let (literal, tail) = rest.split_at(open);
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(encode_literal(literal)));
                    }
                    let Some(inner) = tail.strip_prefix('{') else {
                        return bad(format!("unbalanced `}}` in the path `{path}`"));
                    };
                    let Some((variable, after)) = inner.split_once('}') else {
                        return bad(format!("unbalanced `{{` in the path `{path}`"));
                    };
                    let Some(index) = params.iter().position(|p| p.location == Location::Path && p.name == variable)
                    else {
                        return bad(format!(
                            "the path `{path}` names `{{{variable}}}` but the operation at `{pointer}` has no path parameter `{variable}`"
                        ));
                    };
                    if let Some(flag) = used.get_mut(index) {
                        *flag = true;
                    }
                    pieces.push(Piece::Param(index));
                    rest = after;
                }
            }
        }
        if pieces.iter().all(|p| matches!(p, Piece::Literal(_))) && (segment == "." || segment == "..") {
            return bad(format!("the path `{path}` has a `{segment}` segment"));
        }
        segments.push(pieces);
    }
    for (param, used) in params.iter().zip(used) {
        if param.location == Location::Path && !used {
            return bad(format!(
                "the path parameter `{}` of the operation at `{pointer}` is not in the path `{path}`",
                param.name
            ));
        }
    }
    Ok(segments)
}

/// The tool name for an operation without `operationId`: `get_pets_petId`.
fn derived_name(method: &str, path: &str) -> String {
    let mut name = method.to_owned();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        name.push('_');
        name.extend(segment.chars().filter(|c| !matches!(c, '{' | '}')));
    }
    sanitize(&name, MAX_TOOL_NAME_CHARS, false)
}

/// Characters outside `[A-Za-z0-9_-]` (and `.` when `dot`) become `_`; at
/// most `max` characters.
fn sanitize(text: &str, max: usize, dot: bool) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' || (dot && c == '.') { c } else { '_' })
        .take(max)
        .collect()
}

fn with_description(schema: Value, description: Option<&str>) -> Value {
    let Some(description) = description.map(str::trim).filter(|d| !d.is_empty()) else {
        return schema;
    };
    let mut map = match schema {
        Value::Object(map) => map,
        Value::Bool(false) => {
            let mut map = Map::new();
            map.insert("not".to_owned(), Value::Object(Map::new()));
            map
        }
        _ => Map::new(),
    };
    map.insert("description".to_owned(), Value::String(description.to_owned()));
    Value::Object(map)
}

/// The request body's JSON media type: `application/json`, then any
/// `+json`/`/json` type, then a wildcard.
fn json_media(content: &Map<String, Value>) -> Option<(&str, &Value)> {
    let find = |wanted: &dyn Fn(&str) -> bool| {
        content.iter().find(|(media, _)| wanted(&media_essence(media))).map(|(m, v)| (m.as_str(), v))
    };
    find(&|e| e == "application/json")
        .or_else(|| find(&is_json_media))
        .or_else(|| find(&|e| e == "*/*" || e == "application/*"))
}

/// A media type without parameters, lowercase.
fn media_essence(media: &str) -> String {
    media.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

fn is_json_media(essence: &str) -> bool {
    essence.ends_with("/json") || essence.ends_with("+json")
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

// ---------------------------------------------------------------------------
// Schemas

struct Expander<'r, 'a> {
    reader: &'r Reader<'a>,
    /// The references being inlined (their pointers): one met again is a cycle.
    stack: Vec<String>,
    nodes: usize,
    operation: &'r str,
}

/// Keywords whose value is a schema.
const SCHEMA_KEYWORDS: [&str; 11] = [
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "additionalItems",
];
/// Keywords whose value is a list of schemas.
const SCHEMA_LIST_KEYWORDS: [&str; 4] = ["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value maps names to schemas.
const SCHEMA_MAP_KEYWORDS: [&str; 3] = ["properties", "patternProperties", "dependentSchemas"];
/// OpenAPI keywords left out of a tool's schema (3.0's `nullable` and
/// `example` are converted).
const DROPPED_KEYWORDS: [&str; 6] = ["discriminator", "xml", "externalDocs", "nullable", "example", "definitions"];

impl<'a> Expander<'_, 'a> {
    fn count(&mut self, nodes: usize) -> Result<(), OpenApiError> {
        self.nodes = self.nodes.saturating_add(nodes);
        if self.nodes > MAX_SCHEMA_NODES {
            return Err(doc_err(
                self.operation,
                format!(
                    "the operation's schemas expand to more than {MAX_SCHEMA_NODES} values once references are inlined"
                ),
            ));
        }
        Ok(())
    }

    /// A self-contained JSON Schema for the schema at `pointer`.
    fn schema(&mut self, value: &'a Value, pointer: &str, depth: usize) -> Result<Value, OpenApiError> {
        if depth > MAX_SCHEMA_DEPTH {
            return Err(doc_err(pointer, format!("the schema nests more than {MAX_SCHEMA_DEPTH} levels deep")));
        }
        self.count(1)?;
        let map = match value {
            Value::Bool(b) => return Ok(Value::Bool(*b)),
            Value::Object(map) => map,
            _ => return Err(doc_err(pointer, "a schema must be an object or a boolean")),
        };
        let Some(reference) = map.get("$ref") else {
            return Ok(Value::Object(self.object(map, pointer, depth)?));
        };
        let (target, target_pointer) = self.reader.target(reference, &child(pointer, "$ref"))?;
        let resolved = if self.stack.contains(&target_pointer) {
            Value::Object(Map::new())
        } else {
            self.stack.push(target_pointer.clone());
            let resolved = self.schema(target, &target_pointer, depth + 1);
            self.stack.pop();
            resolved?
        };
        if map.len() == 1 {
            return Ok(resolved);
        }
        // Keywords beside `$ref` (OpenAPI 3.1) refine the referenced schema.
        let siblings = self.object(map, pointer, depth)?;
        Ok(match resolved {
            Value::Object(mut merged) => {
                merged.extend(siblings);
                Value::Object(merged)
            }
            Value::Bool(true) => Value::Object(siblings),
            other => other,
        })
    }

    fn object(
        &mut self,
        map: &'a Map<String, Value>,
        pointer: &str,
        depth: usize,
    ) -> Result<Map<String, Value>, OpenApiError> {
        let mut out = Map::new();
        for (key, value) in map {
            let key_str = key.as_str();
            if key_str.starts_with('$') || key_str.starts_with("x-") || DROPPED_KEYWORDS.contains(&key_str) {
                continue;
            }
            let at = child(pointer, key);
            let converted = if SCHEMA_KEYWORDS.contains(&key_str) && !value.is_array() {
                self.schema(value, &at, depth + 1)?
            } else if SCHEMA_LIST_KEYWORDS.contains(&key_str) || (key_str == "items" && value.is_array()) {
                let Some(items) = value.as_array() else {
                    return Err(doc_err(&at, format!("`{key}` must be an array of schemas")));
                };
                let mut list = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    list.push(self.schema(item, &format!("{at}/{i}"), depth + 1)?);
                }
                Value::Array(list)
            } else if SCHEMA_MAP_KEYWORDS.contains(&key_str) {
                let Some(entries) = value.as_object() else {
                    return Err(doc_err(&at, format!("`{key}` must be an object of schemas")));
                };
                let mut converted = Map::new();
                for (name, schema) in entries {
                    converted.insert(name.clone(), self.schema(schema, &child(&at, name), depth + 1)?);
                }
                Value::Object(converted)
            } else {
                self.count(value_nodes(value))?;
                value.clone()
            };
            out.insert(key.clone(), converted);
        }
        if map.get("nullable") == Some(&Value::Bool(true)) {
            allow_null(&mut out);
        }
        for (exclusive, bound) in [("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")] {
            if let Some(Value::Bool(on)) = out.get(exclusive) {
                let on = *on;
                out.remove(exclusive);
                if on {
                    if let Some(limit) = out.remove(bound) {
                        out.insert(exclusive.to_owned(), limit);
                    }
                }
            }
        }
        if let Some(example) = map.get("example") {
            if !out.contains_key("examples") {
                self.count(value_nodes(example))?;
                out.insert("examples".to_owned(), Value::Array(vec![example.clone()]));
            }
        }
        drop_read_only(&mut out);
        Ok(out)
    }
}

/// OpenAPI 3.0's `nullable: true`: `null` joins the type (and the enum).
fn allow_null(schema: &mut Map<String, Value>) {
    match schema.get_mut("type") {
        Some(Value::String(kind)) => {
            let kind = std::mem::take(kind);
            schema.insert("type".to_owned(), json!([kind, "null"]));
        }
        Some(Value::Array(kinds)) if !kinds.iter().any(|k| k == "null") => kinds.push(json!("null")),
        _ => {}
    }
    if let Some(Value::Array(choices)) = schema.get_mut("enum") {
        if !choices.iter().any(Value::is_null) {
            choices.push(Value::Null);
        }
    }
}

/// A request never sends `readOnly` properties.
fn drop_read_only(schema: &mut Map<String, Value>) {
    let Some(Value::Object(properties)) = schema.get_mut("properties") else { return };
    let read_only: Vec<String> = properties
        .iter()
        .filter(|(_, s)| s.get("readOnly") == Some(&Value::Bool(true)))
        .map(|(name, _)| name.clone())
        .collect();
    if read_only.is_empty() {
        return;
    }
    for name in &read_only {
        properties.remove(name);
    }
    if let Some(Value::Array(required)) = schema.get_mut("required") {
        required.retain(|r| r.as_str().is_none_or(|r| !read_only.iter().any(|n| n == r)));
        if required.is_empty() {
            schema.remove("required");
        }
    }
}

/// How many JSON values `value` holds (without recursion).
fn value_nodes(value: &Value) -> usize {
    let mut count = 0usize;
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        count += 1;
        match value {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    count
}

/// The JSON types a (converted) schema allows.
fn shape(schema: &Value, depth: usize) -> Shape {
    let Some(map) = schema.as_object() else { return Shape::default() };
    if depth > 8 {
        return Shape::default();
    }
    let mut kinds = match map.get("type") {
        Some(Value::String(kind)) => kind_of(kind).map(|k| vec![k]),
        Some(Value::Array(kinds)) => {
            let kinds: Vec<Kind> = kinds.iter().filter_map(Value::as_str).filter_map(kind_of).collect();
            (!kinds.is_empty()).then_some(kinds)
        }
        _ => None,
    };
    if kinds.is_none() {
        for keyword in ["anyOf", "oneOf"] {
            let Some(Value::Array(members)) = map.get(keyword) else { continue };
            let mut union: Vec<Kind> = Vec::new();
            let mut all_typed = !members.is_empty();
            for member in members {
                match shape(member, depth + 1).kinds {
                    Some(member_kinds) => union.extend(member_kinds),
                    None => all_typed = false,
                }
            }
            if all_typed {
                union.dedup();
                kinds = Some(union);
            }
        }
    }
    if kinds.is_none() {
        if let Some(Value::Array(members)) = map.get("allOf") {
            kinds = members.iter().find_map(|m| shape(m, depth + 1).kinds);
        }
    }
    let items = map.get("items").filter(|i| i.is_object()).map(|i| Box::new(shape(i, depth + 1)));
    let choices = match map.get("enum") {
        Some(Value::Array(choices)) => Some(choices.clone()),
        _ => None,
    };
    Shape { kinds, items, choices }
}

fn kind_of(name: &str) -> Option<Kind> {
    Some(match name {
        "string" => Kind::String,
        "number" => Kind::Number,
        "integer" => Kind::Integer,
        "boolean" => Kind::Boolean,
        "array" => Kind::Array,
        "object" => Kind::Object,
        "null" => Kind::Null,
        _ => return None,
    })
}

impl Kind {
    fn accepts(self, value: &Value) -> bool {
        match (self, value) {
            (Kind::String, Value::String(_))
            | (Kind::Number, Value::Number(_))
            | (Kind::Boolean, Value::Bool(_))
            | (Kind::Array, Value::Array(_))
            | (Kind::Object, Value::Object(_))
            | (Kind::Null, Value::Null) => true,
            (Kind::Integer, Value::Number(n)) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.is_finite() && f.fract() == 0.0)
            }
            _ => false,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Number => "a number",
            Kind::Integer => "an integer",
            Kind::Boolean => "a boolean",
            Kind::Array => "an array",
            Kind::Object => "an object",
            Kind::Null => "null",
        }
    }
}

// ---------------------------------------------------------------------------
// Building a call

/// Check one argument against its parameter's (or the body's) shape.
fn check(arg: &str, shape: &Shape, value: &Value) -> Result<(), OpenApiError> {
    if let Some(problem) = mismatch(shape, value) {
        return Err(arg_err(format!("argument `{arg}` {problem}")));
    }
    if let (Value::Array(items), Some(item_shape)) = (value, &shape.items) {
        for (i, item) in items.iter().enumerate() {
            if let Some(problem) = mismatch(item_shape, item) {
                return Err(arg_err(format!("argument `{arg}`: item {i} {problem}")));
            }
        }
    }
    Ok(())
}

/// What is wrong with `value` for `shape`, if anything.
fn mismatch(shape: &Shape, value: &Value) -> Option<String> {
    if let Some(kinds) = &shape.kinds {
        if !kinds.iter().any(|k| k.accepts(value)) {
            let expected = kinds.iter().map(|k| k.noun()).collect::<Vec<_>>().join(" or ");
            return Some(format!("must be {expected}, not {}", describe(value)));
        }
    }
    if let Some(choices) = &shape.choices {
        let scalar = !(value.is_array() || value.is_object());
        if scalar && !choices.iter().any(|c| same(c, value)) {
            let list = choices.iter().map(Value::to_string).collect::<Vec<_>>().join(", ");
            return Some(format!("must be one of {list}, not {value}"));
        }
    }
    None
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64().is_some_and(|x| y.as_f64() == Some(x)),
        _ => a == b,
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Number(n) => n.to_string(),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// A value's pieces before a style lays them out.
enum Parts {
    Scalar(String),
    List(Vec<String>),
    Pairs(Vec<(String, String)>),
}

fn parts(param: &Param, value: &Value) -> Parts {
    if param.json {
        return Parts::Scalar(value.to_string());
    }
    match value {
        Value::Array(items) => Parts::List(items.iter().map(scalar_text).collect()),
        Value::Object(map) => Parts::Pairs(map.iter().map(|(k, v)| (k.clone(), scalar_text(v))).collect()),
        other => Parts::Scalar(scalar_text(other)),
    }
}

/// A scalar as text; anything nested as compact JSON.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number_text(n),
        other => other.to_string(),
    }
}

/// A number as text; a whole one without a fraction (`10.0` is `10`).
fn number_text(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if !n.is_i64() && !n.is_u64() && f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => {
            format!("{f:.0}")
        }
        _ => n.to_string(),
    }
}

/// A path parameter's text (encoded), laid out by its style.
fn path_value(param: &Param, value: &Value) -> String {
    let name = encode(&param.name);
    let join = |items: &[String], sep: &str| items.iter().map(|i| encode(i)).collect::<Vec<_>>().join(sep);
    let pairs = |pairs: &[(String, String)], inner: &str, sep: &str| {
        pairs.iter().map(|(k, v)| format!("{}{inner}{}", encode(k), encode(v))).collect::<Vec<_>>().join(sep)
    };
    match (param.style, parts(param, value)) {
        (Style::Label, Parts::Scalar(s)) => format!(".{}", encode(&s)),
        (Style::Label, Parts::List(items)) => format!(".{}", join(&items, if param.explode { "." } else { "," })),
        (Style::Label, Parts::Pairs(p)) if param.explode => format!(".{}", pairs(&p, "=", ".")),
        (Style::Label, Parts::Pairs(p)) => format!(".{}", pairs(&p, ",", ",")),
        (Style::Matrix, Parts::Scalar(s)) => format!(";{name}={}", encode(&s)),
        (Style::Matrix, Parts::List(items)) if items.is_empty() => format!(";{name}"),
        (Style::Matrix, Parts::List(items)) if param.explode => {
            items.iter().map(|i| format!(";{name}={}", encode(i))).collect()
        }
        (Style::Matrix, Parts::List(items)) => format!(";{name}={}", join(&items, ",")),
        (Style::Matrix, Parts::Pairs(p)) if param.explode => format!(";{}", pairs(&p, "=", ";")),
        (Style::Matrix, Parts::Pairs(p)) => format!(";{name}={}", pairs(&p, ",", ",")),
        (_, Parts::Scalar(s)) => encode(&s),
        (_, Parts::List(items)) => join(&items, ","),
        (_, Parts::Pairs(p)) if param.explode => pairs(&p, "=", ","),
        (_, Parts::Pairs(p)) => pairs(&p, ",", ","),
    }
}

/// A query parameter's `key=value` pairs (encoded), laid out by its style.
fn query_pairs(param: &Param, value: &Value, out: &mut Vec<(String, String)>) {
    let name = encode(&param.name);
    let delimiter = match param.style {
        Style::SpaceDelimited => "%20",
        Style::PipeDelimited => "%7C",
        _ => ",",
    };
    match parts(param, value) {
        Parts::Scalar(s) => out.push((name, encode(&s))),
        Parts::List(items) if param.explode => out.extend(items.iter().map(|i| (name.clone(), encode(i)))),
        Parts::List(items) => out.push((name, items.iter().map(|i| encode(i)).collect::<Vec<_>>().join(delimiter))),
        Parts::Pairs(pairs) if param.style == Style::DeepObject => {
            out.extend(pairs.iter().map(|(k, v)| (format!("{name}%5B{}%5D", encode(k)), encode(v))))
        }
        Parts::Pairs(pairs) if param.explode => out.extend(pairs.iter().map(|(k, v)| (encode(k), encode(v)))),
        Parts::Pairs(pairs) => out.push((
            name,
            pairs
                .iter()
                .map(|(k, v)| format!("{}{delimiter}{}", encode(k), encode(v)))
                .collect::<Vec<_>>()
                .join(delimiter),
        )),
    }
}

/// A header parameter's value (style `simple`), refused with control characters.
fn header_value(param: &Param, value: &Value) -> Result<String, OpenApiError> {
    let text = match parts(param, value) {
        Parts::Scalar(s) => s,
        Parts::List(items) => items.join(","),
        Parts::Pairs(pairs) if param.explode => {
            pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
        }
        Parts::Pairs(pairs) => pairs.iter().map(|(k, v)| format!("{k},{v}")).collect::<Vec<_>>().join(","),
    };
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(arg_err(format!(
            "argument `{}` must not hold control characters: it is sent as the header `{}`",
            param.arg, param.name
        )));
    }
    Ok(text)
}

/// Percent-encode everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            push_escape(&mut out, b);
        }
    }
    out
}

/// A path template's literal text: kept where a path allows it, else encoded.
fn encode_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%".contains(&b) {
            out.push(char::from(b));
        } else {
            push_escape(&mut out, b);
        }
    }
    out
}

fn push_escape(out: &mut String, b: u8) {
    out.push('%');
    out.push(hex_digit(b >> 4));
    out.push(hex_digit(b & 0x0f));
}

fn hex_digit(n: u8) -> char {
    let n = n & 0x0f;
    char::from(if n < 10 { b'0' + n } else { b'A' + n - 10 })
}

/// Decode `%XX` in a reference's fragment (anything malformed is kept).
fn percent_decode(text: &str) -> String {
    if !text.contains('%') {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let high = bytes.get(i + 1).and_then(|h| char::from(*h).to_digit(16));
        let low = bytes.get(i + 2).and_then(|l| char::from(*l).to_digit(16));
        match (b, high, low) {
            (b'%', Some(high), Some(low)) => {
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'%'));
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

// ---------------------------------------------------------------------------
// Results

/// The first `limit` bytes of `body` as text (a character is not cut in
/// two), and whether anything was cut.
fn text_prefix(body: &[u8], limit: usize) -> (String, bool) {
    if body.len() <= limit {
        return (String::from_utf8_lossy(body).into_owned(), false);
    }
    let mut head = body.get(..limit).unwrap_or(body);
    if let Err(e) = std::str::from_utf8(head) {
        if e.error_len().is_none() {
            head = head.get(..e.valid_up_to()).unwrap_or(head);
        }
    }
    (String::from_utf8_lossy(head).into_owned(), true)
}

fn reason(status: u16) -> Option<&'static str> {
    Some(match status {
        200 => "ok",
        201 => "created",
        202 => "accepted",
        204 => "no content",
        301 => "moved permanently",
        302 => "found",
        304 => "not modified",
        400 => "bad request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not found",
        405 => "method not allowed",
        406 => "not acceptable",
        409 => "conflict",
        410 => "gone",
        413 => "content too large",
        415 => "unsupported media type",
        422 => "unprocessable content",
        429 => "too many requests",
        500 => "internal server error",
        501 => "not implemented",
        502 => "bad gateway",
        503 => "service unavailable",
        504 => "gateway timeout",
        _ => return None,
    })
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let symbol = |n: u32| char::from(ALPHABET.get((n & 63) as usize).copied().unwrap_or(b'='));
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(symbol(n >> 18));
        out.push(symbol(n >> 12));
        out.push(if chunk.len() > 1 { symbol(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { symbol(n) } else { '=' });
    }
    out
}
