//! A small offline MCP server at `/mcp`: the quickstart's demo upstream for
//! the gateway's MCP side, on the mock's own listener.
//!
//! Streamable HTTP (protocol 2025-06-18, also 2025-03-26 and 2024-11-05):
//! one JSON-RPC message per POST, every answer plain JSON. `initialize`
//! opens a session (`Mcp-Session-Id`) that every later message must send;
//! notifications and client answers get 202 with no body; `DELETE` ends a
//! session; `GET` is 405 (the server never starts a stream). Three harmless
//! tools answer with made-up but deterministic data: `get_forecast {city,
//! days?}`, `lookup_order {order_id}` and `echo {text}`. Their definitions
//! never change (a gateway pins them), whatever the protocol version.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::errors::json_response;
use crate::util::{fnv1a, splitmix, IdGen};
use crate::Shared;

/// Where the server is served.
pub const PATH: &str = "/mcp";
/// The version answered when the client asks for one not served.
pub const PROTOCOL_VERSION: &str = "2025-06-18";
/// Versions served, newest first.
pub const PROTOCOL_VERSIONS: [&str; 3] = [PROTOCOL_VERSION, "2025-03-26", "2024-11-05"];
/// The session header.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// The negotiated version, sent by clients after `initialize`.
pub const VERSION_HEADER: &str = "mcp-protocol-version";
/// The tools' names, in listing order.
pub const TOOL_NAMES: [&str; 3] = ["get_forecast", "lookup_order", "echo"];
/// Sessions kept at most (the oldest is forgotten first).
const MAX_SESSIONS: usize = 10_000;

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
/// Server-defined: the session is unknown (or ended).
const SESSION_NOT_FOUND: i64 = -32001;

/// The sessions `initialize` opened and `DELETE` has not ended.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    inner: Mutex<SessionSet>,
}

#[derive(Debug, Default)]
struct SessionSet {
    open: HashSet<String>,
    /// Oldest first, for forgetting beyond [`MAX_SESSIONS`].
    order: VecDeque<String>,
}

impl Sessions {
    fn open(&self, id: String) {
        let mut set = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while set.order.len() >= MAX_SESSIONS {
            match set.order.pop_front() {
                Some(old) => _ = set.open.remove(&old),
                None => break,
            }
        }
        set.open.insert(id.clone());
        set.order.push_back(id);
    }

    fn contains(&self, id: &str) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).open.contains(id)
    }

    fn close(&self, id: &str) -> bool {
        let mut set = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let known = set.open.remove(id);
        if known {
            set.order.retain(|s| s != id);
        }
        known
    }
}

/// `POST /mcp`: one JSON-RPC message.
pub(crate) async fn post(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(origin) = foreign_origin(&headers) {
        let message = format!("Origin `{origin}` is not allowed: this server only serves local pages");
        return Reply::error(StatusCode::FORBIDDEN, &Value::Null, INVALID_REQUEST, &message).into_response();
    }
    handle(&state.mcp, &state.ids, &headers, &body).into_response()
}

/// `GET /mcp`: this server never opens a stream of its own.
pub(crate) async fn get() -> Response {
    let body = error_body(&Value::Null, INVALID_REQUEST, "this server sends no stream: POST messages to /mcp");
    let mut resp = json_response(StatusCode::METHOD_NOT_ALLOWED, &body);
    resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
    resp
}

/// `DELETE /mcp`: the client ends its session.
pub(crate) async fn delete(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let (status, message) = match header_str(&headers, SESSION_HEADER) {
        None => (StatusCode::BAD_REQUEST, "missing Mcp-Session-Id"),
        Some(id) if state.mcp.close(id) => return empty(StatusCode::OK),
        Some(_) => (StatusCode::NOT_FOUND, "session not found"),
    };
    let code = if status == StatusCode::NOT_FOUND { SESSION_NOT_FOUND } else { INVALID_REQUEST };
    json_response(status, &error_body(&Value::Null, code, message))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// The `Origin` of a request from a page that is not local (DNS rebinding
/// guard); `None` when there is no `Origin` or it is local.
fn foreign_origin(headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?;
    let text = String::from_utf8_lossy(origin.as_bytes()).into_owned();
    let host = text.split_once("://").map_or("", |(_, rest)| rest);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split([':', '/']).next().unwrap_or_default(),
    };
    let host = host.to_ascii_lowercase();
    let local = host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (!local).then_some(text)
}

fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp
}

/// What to answer one POST with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    /// `None`: no body (202).
    pub(crate) body: Option<Value>,
    /// A new session's id (`initialize`).
    pub(crate) session: Option<String>,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply { status: StatusCode::OK, body: Some(body), session: None }
    }

    fn accepted() -> Reply {
        Reply { status: StatusCode::ACCEPTED, body: None, session: None }
    }

    fn error(status: StatusCode, id: &Value, code: i64, message: &str) -> Reply {
        Reply { status, body: Some(error_body(id, code, message)), session: None }
    }

    fn into_response(self) -> Response {
        let mut resp = match &self.body {
            Some(body) => json_response(self.status, body),
            None => empty(self.status),
        };
        if let Some(id) = self.session.and_then(|s| HeaderValue::from_str(&s).ok()) {
            resp.headers_mut().insert(SESSION_HEADER, id);
        }
        resp
    }
}

fn result_body(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn error_body(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// One message from a client.
#[derive(Debug, Clone, PartialEq)]
enum Message {
    Request {
        id: Value,
        method: String,
        params: Option<Value>,
    },
    Notification,
    /// The client's answer to a request of the server.
    Response {
        id: Value,
    },
}

/// Read one message; an error is the reply to send.
fn parse(body: &[u8]) -> Result<Message, Reply> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Reply::error(StatusCode::BAD_REQUEST, &Value::Null, PARSE_ERROR, &format!("Parse error: {e}")))?;
    let mut obj = match value {
        Value::Object(obj) => obj,
        Value::Array(_) => {
            let message = "Invalid Request: batches are not supported, send one message per POST";
            return Err(Reply::error(StatusCode::BAD_REQUEST, &Value::Null, INVALID_REQUEST, message));
        }
        _ => {
            let message = "Invalid Request: a JSON-RPC message is a JSON object";
            return Err(Reply::error(StatusCode::BAD_REQUEST, &Value::Null, INVALID_REQUEST, message));
        }
    };
    let id = obj.remove("id");
    // MCP: an id is a string or an integer, never null.
    let valid_id = id.clone().filter(|id| id.is_string() || id.is_i64() || id.is_u64());
    let answer_id = valid_id.clone().unwrap_or(Value::Null);
    let invalid = |why: &str| {
        Reply::error(StatusCode::BAD_REQUEST, &answer_id, INVALID_REQUEST, &format!("Invalid Request: {why}"))
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("`jsonrpc` must be \"2.0\""));
    }
    if id.is_some() && valid_id.is_none() {
        return Err(invalid("`id` must be a string or an integer"));
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) if !m.is_empty() => Some(m),
        Some(_) => return Err(invalid("`method` must be a non-empty string")),
        None => None,
    };
    match (valid_id, method) {
        (Some(id), Some(method)) => Ok(Message::Request { id, method, params: obj.remove("params") }),
        (None, Some(_)) => Ok(Message::Notification),
        (Some(id), None) if obj.contains_key("result") || obj.contains_key("error") => Ok(Message::Response { id }),
        _ => Err(invalid("a message needs a `method`, or is an answer with `result` or `error`")),
    }
}

/// Answer one POST body.
pub(crate) fn handle(sessions: &Sessions, ids: &IdGen, headers: &HeaderMap, body: &[u8]) -> Reply {
    let message = match parse(body) {
        Ok(m) => m,
        Err(reply) => return reply,
    };
    let id = match &message {
        Message::Request { id, method, params } if method == "initialize" => {
            return initialize(sessions, ids, id, params.as_ref());
        }
        Message::Request { id, .. } | Message::Response { id } => id.clone(),
        Message::Notification => Value::Null,
    };
    let Some(session) = header_str(headers, SESSION_HEADER) else {
        let message = "Bad Request: missing Mcp-Session-Id, call `initialize` first";
        return Reply::error(StatusCode::BAD_REQUEST, &id, INVALID_REQUEST, message);
    };
    if !sessions.contains(session) {
        let message = "Session not found: call `initialize` again";
        return Reply::error(StatusCode::NOT_FOUND, &id, SESSION_NOT_FOUND, message);
    }
    if let Some(version) = header_str(headers, VERSION_HEADER) {
        if !PROTOCOL_VERSIONS.contains(&version) {
            let message = format!(
                "Bad Request: unsupported MCP-Protocol-Version `{version}` (supported: {})",
                PROTOCOL_VERSIONS.join(", ")
            );
            return Reply::error(StatusCode::BAD_REQUEST, &id, INVALID_REQUEST, &message);
        }
    }
    match message {
        Message::Notification | Message::Response { .. } => Reply::accepted(),
        Message::Request { id, method, params } => Reply::ok(request(&id, &method, params)),
    }
}

fn initialize(sessions: &Sessions, ids: &IdGen, id: &Value, params: Option<&Value>) -> Reply {
    let Some(asked) = params.and_then(|p| p.get("protocolVersion")).and_then(Value::as_str) else {
        return Reply::ok(error_body(id, INVALID_PARAMS, "Invalid params: initialize needs `protocolVersion`"));
    };
    let version = PROTOCOL_VERSIONS.iter().copied().find(|v| *v == asked).unwrap_or(PROTOCOL_VERSION);
    let session = ids.hex("", 32);
    sessions.open(session.clone());
    let result = json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {"name": "tollgate-mock-mcp", "title": "Tollgate demo MCP server", "version": env!("CARGO_PKG_VERSION")},
        "instructions": "Demo tools that answer with made-up data: a weather forecast, an order's status and an echo.",
    });
    Reply { status: StatusCode::OK, body: Some(result_body(id, result)), session: Some(session) }
}

/// A request's response (a result or a JSON-RPC error).
fn request(id: &Value, method: &str, params: Option<Value>) -> Value {
    let params = match params {
        None => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return error_body(id, INVALID_PARAMS, "Invalid params: `params` must be an object"),
    };
    let result = match method {
        "ping" => Ok(json!({})),
        "tools/list" => list(&params),
        "tools/call" => call(&params),
        _ => Err((METHOD_NOT_FOUND, format!("Method not found: {method}"))),
    };
    match result {
        Ok(result) => result_body(id, result),
        Err((code, message)) => error_body(id, code, &message),
    }
}

fn list(params: &Map<String, Value>) -> Result<Value, (i64, String)> {
    if params.get("cursor").is_some_and(|c| !c.is_null()) {
        // Every tool fits on the first page: no cursor was ever handed out.
        return Err((INVALID_PARAMS, "Invalid params: unknown cursor".into()));
    }
    Ok(json!({"tools": Tool::ALL.iter().map(|t| t.definition()).collect::<Vec<_>>()}))
}

fn call(params: &Map<String, Value>) -> Result<Value, (i64, String)> {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err((INVALID_PARAMS, "Invalid params: tools/call needs `name`".into()));
    };
    let Some(tool) = Tool::ALL.iter().copied().find(|t| t.name() == name) else {
        return Err((INVALID_PARAMS, format!("Unknown tool: {name}")));
    };
    let empty = Map::new();
    let args = match params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(args)) => args,
        Some(_) => return Err((INVALID_PARAMS, format!("Invalid arguments for tool {name}: must be an object"))),
    };
    check_arguments(tool.params(), args)
        .map_err(|why| (INVALID_PARAMS, format!("Invalid arguments for tool {name}: {why}")))?;
    let (text, structured) = tool.run(args);
    Ok(json!({"content": [{"type": "text", "text": text}], "structuredContent": structured, "isError": false}))
}

/// One argument of a tool.
struct Param {
    name: &'static str,
    description: &'static str,
    kind: Kind,
    required: bool,
}

/// A string's JSON Schema `pattern`, and the same rule as a check of each
/// character.
struct Pattern {
    regex: &'static str,
    allowed: fn(char) -> bool,
}

enum Kind {
    /// A string of 1 to `max` characters, matching the pattern if any.
    Text {
        max: usize,
        pattern: Option<Pattern>,
    },
    Integer {
        min: i64,
        max: i64,
        default: i64,
    },
}

impl Param {
    fn schema(&self) -> Value {
        let mut schema = match &self.kind {
            Kind::Text { max, pattern } => {
                let mut s = json!({"type": "string", "minLength": 1, "maxLength": max});
                if let (Some(obj), Some(pattern)) = (s.as_object_mut(), pattern) {
                    obj.insert("pattern".into(), json!(pattern.regex));
                }
                s
            }
            Kind::Integer { min, max, default } => {
                json!({"type": "integer", "minimum": min, "maximum": max, "default": default})
            }
        };
        if let Some(obj) = schema.as_object_mut() {
            obj.insert("description".into(), json!(self.description));
        }
        schema
    }

    /// Why `value` does not fit, if it does not.
    fn check(&self, value: &Value) -> Result<(), String> {
        let name = self.name;
        match &self.kind {
            Kind::Text { max, pattern } => {
                let Some(text) = value.as_str() else { return Err(format!("`{name}` must be a string")) };
                let chars = text.chars().count();
                if chars == 0 {
                    return Err(format!("`{name}` must not be empty"));
                }
                if chars > *max {
                    return Err(format!("`{name}` is longer than {max} characters"));
                }
                if let Some(pattern) = pattern {
                    if !text.chars().all(pattern.allowed) {
                        return Err(format!("`{name}` must match {}", pattern.regex));
                    }
                }
                Ok(())
            }
            Kind::Integer { min, max, .. } => match value.as_i64() {
                Some(n) if (*min..=*max).contains(&n) => Ok(()),
                Some(_) => Err(format!("`{name}` must be between {min} and {max}")),
                None => Err(format!("`{name}` must be an integer")),
            },
        }
    }
}

fn input_schema(params: &[Param]) -> Value {
    let properties: Map<String, Value> = params.iter().map(|p| (p.name.to_owned(), p.schema())).collect();
    let required: Vec<&str> = params.iter().filter(|p| p.required).map(|p| p.name).collect();
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

/// Arguments as the input schema says: known names, required ones present,
/// each of its type and within its bounds.
fn check_arguments(params: &[Param], args: &Map<String, Value>) -> Result<(), String> {
    if let Some(unknown) = args.keys().find(|k| !params.iter().any(|p| p.name == k.as_str())) {
        return Err(format!("unknown argument `{unknown}`"));
    }
    for p in params {
        match args.get(p.name) {
            Some(value) => p.check(value)?,
            None if p.required => return Err(format!("`{}` is required", p.name)),
            None => {}
        }
    }
    Ok(())
}

fn order_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

const FORECAST_PARAMS: [Param; 2] = [
    Param {
        name: "city",
        description: "City name, e.g. Paris",
        kind: Kind::Text { max: 100, pattern: None },
        required: true,
    },
    Param {
        name: "days",
        description: "How many days, from today",
        kind: Kind::Integer { min: 1, max: 5, default: 3 },
        required: false,
    },
];

const ORDER_PARAMS: [Param; 1] = [Param {
    name: "order_id",
    description: "Order number, e.g. A-1001",
    kind: Kind::Text { max: 32, pattern: Some(Pattern { regex: "^[A-Za-z0-9-]+$", allowed: order_id_char }) },
    required: true,
}];

const ECHO_PARAMS: [Param; 1] = [Param {
    name: "text",
    description: "Text to send back",
    kind: Kind::Text { max: 2000, pattern: None },
    required: true,
}];

const CONDITIONS: [&str; 6] = ["sunny", "partly cloudy", "cloudy", "light rain", "showers", "windy"];
const ORDER_STATUSES: [&str; 4] = ["processing", "shipped", "out for delivery", "delivered"];

/// The demo tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Forecast,
    Order,
    Echo,
}

impl Tool {
    const ALL: [Tool; 3] = [Tool::Forecast, Tool::Order, Tool::Echo];

    fn name(self) -> &'static str {
        match self {
            Tool::Forecast => "get_forecast",
            Tool::Order => "lookup_order",
            Tool::Echo => "echo",
        }
    }

    fn params(self) -> &'static [Param] {
        match self {
            Tool::Forecast => &FORECAST_PARAMS,
            Tool::Order => &ORDER_PARAMS,
            Tool::Echo => &ECHO_PARAMS,
        }
    }

    /// The definition `tools/list` gives (the same for every session).
    fn definition(self) -> Value {
        let (title, description, output) = match self {
            Tool::Forecast => (
                "Weather forecast",
                "Daily weather forecast for a city (made-up demo data).",
                json!({"type": "object", "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "array", "items": {"type": "object", "properties": {
                        "day": {"type": "integer"},
                        "conditions": {"type": "string"},
                        "low_c": {"type": "integer"},
                        "high_c": {"type": "integer"},
                    }, "required": ["day", "conditions", "low_c", "high_c"]}},
                }, "required": ["city", "days"]}),
            ),
            Tool::Order => (
                "Order status",
                "Status, item count and total of an order (made-up demo data).",
                json!({"type": "object", "properties": {
                    "order_id": {"type": "string"},
                    "status": {"type": "string", "enum": ORDER_STATUSES},
                    "items": {"type": "integer"},
                    "total": {"type": "string"},
                    "currency": {"type": "string"},
                }, "required": ["order_id", "status", "items", "total", "currency"]}),
            ),
            Tool::Echo => (
                "Echo",
                "Returns the text it is given.",
                json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
            ),
        };
        json!({
            "name": self.name(),
            "title": title,
            "description": description,
            "inputSchema": input_schema(self.params()),
            "outputSchema": output,
            "annotations": {"readOnlyHint": true, "openWorldHint": false},
        })
    }

    /// The result's text and structured content, for checked arguments.
    fn run(self, args: &Map<String, Value>) -> (String, Value) {
        let text = |name: &str| args.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
        match self {
            Tool::Forecast => {
                let city = text("city");
                let days = args.get("days").and_then(Value::as_i64).unwrap_or(3);
                forecast(&city, days)
            }
            Tool::Order => order(&text("order_id")),
            Tool::Echo => {
                let t = text("text");
                (t.clone(), json!({"text": t}))
            }
        }
    }
}

/// `n` modulo `len` as an index.
fn pick(n: u64, len: usize) -> usize {
    usize::try_from(n % len.max(1) as u64).unwrap_or(0)
}

fn forecast(city: &str, days: i64) -> (String, Value) {
    let mut state = fnv1a(city.trim().to_lowercase().as_bytes());
    let mut list = Vec::new();
    let mut lines = Vec::new();
    for day in 1..=days {
        let r = splitmix(&mut state);
        let conditions = CONDITIONS.get(pick(r, CONDITIONS.len())).copied().unwrap_or("sunny");
        let high = 5 + ((r >> 8) % 25) as i64;
        let low = high - 3 - ((r >> 16) % 7) as i64;
        lines.push(format!("day {day}: {conditions}, {low} to {high} C"));
        list.push(json!({"day": day, "conditions": conditions, "low_c": low, "high_c": high}));
    }
    let text = format!("Forecast for {city} (made-up demo data): {}.", lines.join("; "));
    (text, json!({"city": city, "days": list}))
}

fn order(order_id: &str) -> (String, Value) {
    let mut state = fnv1a(order_id.to_ascii_uppercase().as_bytes());
    let r = splitmix(&mut state);
    let status = ORDER_STATUSES.get(pick(r, ORDER_STATUSES.len())).copied().unwrap_or("processing");
    let items = 1 + (r >> 8) % 4;
    let cents = 999 + (r >> 16) % 20_000;
    let total = format!("{}.{:02}", cents / 100, cents % 100);
    let plural = if items == 1 { "" } else { "s" };
    let text = format!("Order {order_id} (made-up demo data): {status}, {items} item{plural}, total {total} USD.");
    (text, json!({"order_id": order_id, "status": status, "items": items, "total": total, "currency": "USD"}))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    struct Client {
        sessions: Sessions,
        ids: IdGen,
        session: Option<String>,
    }

    impl Client {
        fn new() -> Client {
            Client { sessions: Sessions::default(), ids: IdGen::new(), session: None }
        }

        fn post(&self, body: &Value) -> Reply {
            self.raw(serde_json::to_vec(body).unwrap().as_slice())
        }

        fn raw(&self, body: &[u8]) -> Reply {
            let mut headers = HeaderMap::new();
            if let Some(s) = &self.session {
                headers.insert(SESSION_HEADER, HeaderValue::from_str(s).unwrap());
            }
            handle(&self.sessions, &self.ids, &headers, body)
        }

        fn initialized(version: &str) -> (Client, Reply) {
            let mut c = Client::new();
            let reply = c.post(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}));
            c.session = reply.session.clone();
            (c, reply)
        }

        fn request(&self, method: &str, params: Value) -> Value {
            let reply = self.post(&json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}));
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            let body = reply.body.unwrap();
            assert_eq!(body["id"], 7);
            body
        }
    }

    fn code(reply: &Reply) -> i64 {
        reply.body.as_ref().unwrap()["error"]["code"].as_i64().unwrap()
    }

    #[test]
    fn initialize_negotiates_the_version_and_opens_a_session() {
        for (asked, answered) in [
            ("2025-06-18", "2025-06-18"),
            ("2025-03-26", "2025-03-26"),
            ("2024-11-05", "2024-11-05"),
            ("2025-11-25", "2025-06-18"),
            ("1999-01-01", "2025-06-18"),
        ] {
            let (c, reply) = Client::initialized(asked);
            assert_eq!(reply.status, StatusCode::OK);
            let body = reply.body.unwrap();
            assert_eq!(body["jsonrpc"], "2.0");
            assert_eq!(body["id"], 0);
            assert_eq!(body["result"]["protocolVersion"], answered, "{asked}");
            assert_eq!(body["result"]["capabilities"]["tools"]["listChanged"], false);
            assert_eq!(body["result"]["serverInfo"]["name"], "tollgate-mock-mcp");
            let session = reply.session.unwrap();
            assert_eq!(session.len(), 32);
            assert!(c.sessions.contains(&session));
        }
        let (a, _) = Client::initialized("2025-06-18");
        let (b, _) = Client::initialized("2025-06-18");
        assert_ne!(a.session, b.session);
        let c = Client::new();
        let reply = c.post(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}));
        assert_eq!(code(&reply), INVALID_PARAMS);
        assert!(reply.session.is_none());
    }

    #[test]
    fn later_messages_need_a_known_session() {
        let (mut c, _) = Client::initialized("2025-06-18");
        let ping = json!({"jsonrpc": "2.0", "id": "p", "method": "ping"});
        assert_eq!(c.request("ping", json!({}))["result"], json!({}));
        let session = c.session.take();
        let reply = c.post(&ping);
        assert_eq!((reply.status, code(&reply)), (StatusCode::BAD_REQUEST, INVALID_REQUEST));
        assert_eq!(reply.body.unwrap()["id"], "p");
        c.session = Some("0123456789abcdef0123456789abcdef".into());
        let reply = c.post(&ping);
        assert_eq!((reply.status, code(&reply)), (StatusCode::NOT_FOUND, SESSION_NOT_FOUND));
        c.session = session.clone();
        assert!(c.sessions.close(session.as_deref().unwrap()));
        assert_eq!(c.post(&ping).status, StatusCode::NOT_FOUND, "an ended session is gone");
    }

    #[test]
    fn an_unsupported_protocol_version_header_is_refused() {
        let (c, _) = Client::initialized("2025-06-18");
        let mut headers = HeaderMap::new();
        headers.insert(SESSION_HEADER, HeaderValue::from_str(c.session.as_deref().unwrap()).unwrap());
        let ping = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        headers.insert(VERSION_HEADER, HeaderValue::from_static("2025-03-26"));
        assert_eq!(handle(&c.sessions, &c.ids, &headers, ping).status, StatusCode::OK);
        headers.insert(VERSION_HEADER, HeaderValue::from_static("2030-01-01"));
        let reply = handle(&c.sessions, &c.ids, &headers, ping);
        assert_eq!((reply.status, code(&reply)), (StatusCode::BAD_REQUEST, INVALID_REQUEST));
    }

    #[test]
    fn notifications_and_answers_are_accepted_without_a_body() {
        let (c, _) = Client::initialized("2025-06-18");
        for message in [
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}),
            json!({"jsonrpc": "2.0", "id": 5, "result": {}}),
            json!({"jsonrpc": "2.0", "id": "x", "error": {"code": -1, "message": "no"}}),
        ] {
            assert_eq!(c.post(&message), Reply::accepted(), "{message}");
        }
    }

    #[test]
    fn malformed_messages_get_json_rpc_errors() {
        let (c, _) = Client::initialized("2025-06-18");
        let reply = c.raw(b"{not json");
        assert_eq!((reply.status, code(&reply)), (StatusCode::BAD_REQUEST, PARSE_ERROR));
        assert_eq!(reply.body.unwrap()["id"], Value::Null);
        for (body, id) in [
            (json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]), Value::Null),
            (json!("ping"), Value::Null),
            (json!({"id": 1, "method": "ping"}), json!(1)),
            (json!({"jsonrpc": "1.0", "id": 1, "method": "ping"}), json!(1)),
            (json!({"jsonrpc": "2.0", "id": null, "method": "ping"}), Value::Null),
            (json!({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}), Value::Null),
            (json!({"jsonrpc": "2.0", "id": 2, "method": 3}), json!(2)),
            (json!({"jsonrpc": "2.0", "id": 2}), json!(2)),
        ] {
            let reply = c.post(&body);
            assert_eq!((reply.status, code(&reply)), (StatusCode::BAD_REQUEST, INVALID_REQUEST), "{body}");
            assert_eq!(reply.body.unwrap()["id"], id, "{body}");
        }
        let body = c.request("resources/list", json!({}));
        assert_eq!(body["error"]["code"], METHOD_NOT_FOUND);
        let reply = c.post(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": [1]}));
        assert_eq!((reply.status, code(&reply)), (StatusCode::OK, INVALID_PARAMS));
    }

    #[test]
    fn tools_are_listed_with_their_schemas() {
        let (c, _) = Client::initialized("2025-06-18");
        let body = c.request("tools/list", json!({}));
        let tools = body["result"]["tools"].as_array().unwrap();
        let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, TOOL_NAMES);
        for t in tools {
            assert!(t["description"].as_str().is_some_and(|d| !d.is_empty()));
            assert_eq!(t["inputSchema"]["type"], "object");
            assert_eq!(t["inputSchema"]["additionalProperties"], false);
            assert_eq!(t["outputSchema"]["type"], "object");
            assert!(body["result"].get("nextCursor").is_none());
        }
        assert_eq!(tools[0]["inputSchema"]["required"], json!(["city"]));
        assert_eq!(tools[0]["inputSchema"]["properties"]["days"]["maximum"], 5);
        assert_eq!(tools[1]["inputSchema"]["properties"]["order_id"]["pattern"], "^[A-Za-z0-9-]+$");
        // The same definitions in every session and version (gateways pin them).
        let (old, _) = Client::initialized("2024-11-05");
        assert_eq!(old.request("tools/list", json!({}))["result"], body["result"]);
        let body = c.request("tools/list", json!({"cursor": "next"}));
        assert_eq!(body["error"]["code"], INVALID_PARAMS);
    }

    #[test]
    fn tools_answer_deterministically() {
        let (c, _) = Client::initialized("2025-06-18");
        let call = |name: &str, args: Value| c.request("tools/call", json!({"name": name, "arguments": args}));
        let a = call("get_forecast", json!({"city": "Paris"}));
        assert_eq!(a, call("get_forecast", json!({"city": "Paris"})));
        let result = &a["result"];
        assert_eq!(result["isError"], false);
        let text = result["content"][0]["text"].as_str().unwrap();
        assert!(text.starts_with("Forecast for Paris (made-up demo data): day 1: "), "{text}");
        assert_eq!(result["structuredContent"]["city"], "Paris");
        let days = result["structuredContent"]["days"].as_array().unwrap();
        assert_eq!(days.len(), 3, "the default");
        for d in days {
            assert!(d["low_c"].as_i64().unwrap() < d["high_c"].as_i64().unwrap());
            assert!(CONDITIONS.contains(&d["conditions"].as_str().unwrap()));
        }
        let five = call("get_forecast", json!({"city": "Oslo", "days": 5}));
        assert_eq!(five["result"]["structuredContent"]["days"].as_array().unwrap().len(), 5);

        let order = &call("lookup_order", json!({"order_id": "A-1001"}))["result"];
        let text = order["content"][0]["text"].as_str().unwrap();
        assert!(text.starts_with("Order A-1001 (made-up demo data): "), "{text}");
        assert!(ORDER_STATUSES.contains(&order["structuredContent"]["status"].as_str().unwrap()));
        assert_eq!(order["structuredContent"]["currency"], "USD");

        let echo = &call("echo", json!({"text": "héllo"}))["result"];
        assert_eq!(echo["content"], json!([{"type": "text", "text": "héllo"}]));
        assert_eq!(echo["structuredContent"], json!({"text": "héllo"}));
    }

    #[test]
    fn bad_calls_are_invalid_params() {
        let (c, _) = Client::initialized("2025-06-18");
        for (params, why) in [
            (json!({"name": "nope", "arguments": {}}), "Unknown tool: nope"),
            (json!({"arguments": {}}), "needs `name`"),
            (json!({"name": "echo"}), "`text` is required"),
            (json!({"name": "echo", "arguments": "hi"}), "must be an object"),
            (json!({"name": "echo", "arguments": {"text": 3}}), "`text` must be a string"),
            (json!({"name": "echo", "arguments": {"text": ""}}), "`text` must not be empty"),
            (json!({"name": "echo", "arguments": {"text": "x".repeat(2001)}}), "longer than 2000"),
            (json!({"name": "echo", "arguments": {"text": "a", "extra": 1}}), "unknown argument `extra`"),
            (json!({"name": "get_forecast", "arguments": {"city": "Rome", "days": 9}}), "between 1 and 5"),
            (json!({"name": "get_forecast", "arguments": {"city": "Rome", "days": "2"}}), "must be an integer"),
            (json!({"name": "get_forecast", "arguments": {"city": "Rome", "days": null}}), "must be an integer"),
            (json!({"name": "lookup_order", "arguments": {"order_id": "A 1"}}), "must match"),
        ] {
            let body = c.request("tools/call", params.clone());
            assert_eq!(body["error"]["code"], INVALID_PARAMS, "{params}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(why), "{params}: {message}");
        }
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = Sessions::default();
        for i in 0..MAX_SESSIONS + 5 {
            sessions.open(format!("s{i}"));
        }
        assert!(!sessions.contains("s0") && !sessions.contains("s4"));
        assert!(sessions.contains("s5") && sessions.contains(&format!("s{}", MAX_SESSIONS + 4)));
        let set = sessions.inner.lock().unwrap();
        assert_eq!((set.open.len(), set.order.len()), (MAX_SESSIONS, MAX_SESSIONS));
    }

    #[test]
    fn only_local_origins_are_served() {
        let origin = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, HeaderValue::from_str(value).unwrap());
            foreign_origin(&h)
        };
        assert_eq!(foreign_origin(&HeaderMap::new()), None);
        for local in ["http://localhost:6274", "http://127.0.0.1", "https://[::1]:8080", "http://app.localhost"] {
            assert_eq!(origin(local), None, "{local}");
        }
        for foreign in [
            "https://evil.example",
            "http://localhost.evil.example",
            "null",
            "http://10.0.0.1:80",
            "http://127.evil.example",
        ] {
            assert_eq!(origin(foreign).as_deref(), Some(foreign));
        }
    }
}
