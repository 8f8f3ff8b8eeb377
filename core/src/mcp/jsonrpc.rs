//! JSON-RPC 2.0 as MCP uses it: one message per HTTP POST (batches were
//! dropped from the protocol in 2025-06-18 and are refused here), answered
//! by a response with the request's id or, for a notification, nothing.

use serde_json::{json, Map, Value};

/// Invalid JSON was received.
pub const PARSE_ERROR: i64 = -32700;
/// The JSON sent is not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// The method does not exist or is not available.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// Internal error.
pub const INTERNAL_ERROR: i64 = -32603;
/// Server-defined: the gateway's policy refused the message.
pub const POLICY_REFUSED: i64 = -32001;
/// Server-defined: an upstream server failed or could not be reached.
pub const UPSTREAM_ERROR: i64 = -32002;
/// Server-defined: a limit was reached.
pub const RATE_LIMITED: i64 = -32003;

/// One message from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request: an answer is due.
    Request { id: Value, method: String, params: Option<Value> },
    /// A notification: no answer.
    Notification { method: String, params: Option<Value> },
    /// A client's answer to a request of the server.
    Response { id: Value },
}

/// Why a body is not one JSON-RPC message: the error to answer with (and
/// the id to answer, when one could be read).
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub id: Value,
    pub code: i64,
    pub message: String,
}

impl Invalid {
    fn new(id: Value, code: i64, message: impl Into<String>) -> Invalid {
        Invalid { id, code, message: message.into() }
    }

    /// The error response to send back.
    pub fn response(&self) -> Value {
        error(&self.id, self.code, &self.message)
    }
}

/// Read one message from a POST body.
pub fn parse(body: &[u8]) -> Result<Message, Invalid> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Invalid::new(Value::Null, PARSE_ERROR, format!("the body is not JSON: {e}")))?;
    match v {
        Value::Object(obj) => from_object(obj),
        Value::Array(_) => Err(Invalid::new(
            Value::Null,
            INVALID_REQUEST,
            "batches are not supported: send one JSON-RPC message per request",
        )),
        _ => Err(Invalid::new(Value::Null, INVALID_REQUEST, "a JSON-RPC message is a JSON object")),
    }
}

fn from_object(mut obj: Map<String, Value>) -> Result<Message, Invalid> {
    let id = obj.remove("id");
    let answer_id = id.clone().unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(Invalid::new(answer_id, INVALID_REQUEST, "`jsonrpc` must be \"2.0\""));
    }
    if let Some(id) = &id {
        // MCP: a string or an integer, never null.
        if !(id.is_string() || id.is_i64() || id.is_u64()) {
            return Err(Invalid::new(Value::Null, INVALID_REQUEST, "`id` must be a string or an integer"));
        }
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) if !m.is_empty() => Some(m),
        Some(_) => return Err(Invalid::new(answer_id, INVALID_REQUEST, "`method` must be a non-empty string")),
        None => None,
    };
    let params = obj.remove("params");
    if let Some(p) = &params {
        if !p.is_object() {
            return Err(Invalid::new(answer_id, INVALID_PARAMS, "`params` must be an object"));
        }
    }
    match (id, method) {
        (Some(id), Some(method)) => Ok(Message::Request { id, method, params }),
        (None, Some(method)) => Ok(Message::Notification { method, params }),
        (Some(id), None) if obj.contains_key("result") || obj.contains_key("error") => Ok(Message::Response { id }),
        _ => Err(Invalid::new(
            answer_id,
            INVALID_REQUEST,
            "a message needs a `method` (or is an answer with `result` or `error`)",
        )),
    }
}

/// A successful response.
pub fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An error response.
pub fn error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// An error response with `data`.
pub fn error_with(id: &Value, code: i64, message: &str, data: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message, "data": data}})
}

/// A request to send upstream.
pub fn request(id: &Value, method: &str, params: Option<&Value>) -> Value {
    let mut v = json!({"jsonrpc": "2.0", "id": id, "method": method});
    if let Some(p) = params {
        v["params"] = p.clone();
    }
    v
}

/// A notification to send upstream.
pub fn notification(method: &str, params: Option<&Value>) -> Value {
    let mut v = json!({"jsonrpc": "2.0", "method": method});
    if let Some(p) = params {
        v["params"] = p.clone();
    }
    v
}

/// A string field of `params`.
pub fn param_str<'a>(params: Option<&'a Value>, key: &str) -> Option<&'a str> {
    params?.get(key)?.as_str()
}

/// One page of a listing sorted by the caller: the items from `cursor` on
/// (a cursor this gateway issued: the offset, as text) and the next cursor.
/// A cursor that is not one of these is `Err` (answer `INVALID_PARAMS`).
pub fn page<T>(items: Vec<T>, cursor: Option<&str>, size: usize) -> Result<(Vec<T>, Option<String>), String> {
    let start = match cursor {
        None => 0,
        Some(c) => c
            .strip_prefix("tg-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= items.len())
            .ok_or_else(|| format!("invalid cursor `{c}`"))?,
    };
    let size = size.max(1);
    let next = (start + size < items.len()).then(|| format!("tg-{}", start + size));
    Ok((items.into_iter().skip(start).take(size).collect(), next))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let m = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert_eq!(m, Message::Request { id: json!(1), method: "tools/list".into(), params: None });
        let m = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert!(matches!(m, Message::Notification { .. }));
        let m = parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert_eq!(m, Message::Response { id: json!("a") });
    }

    #[test]
    fn bad_messages_name_the_problem() {
        let e = parse(b"{").unwrap_err();
        assert_eq!(e.code, PARSE_ERROR);
        assert_eq!(parse(b"[]").unwrap_err().code, INVALID_REQUEST);
        assert_eq!(parse(b"3").unwrap_err().code, INVALID_REQUEST);
        let e = parse(br#"{"id":7,"method":"x"}"#).unwrap_err();
        assert_eq!((e.code, e.id.clone()), (INVALID_REQUEST, json!(7)));
        assert_eq!(parse(br#"{"jsonrpc":"2.0","id":null,"method":"x"}"#).unwrap_err().code, INVALID_REQUEST);
        assert_eq!(parse(br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#).unwrap_err().code, INVALID_REQUEST);
        assert_eq!(parse(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#).unwrap_err().code, INVALID_PARAMS);
        assert_eq!(parse(br#"{"jsonrpc":"2.0","id":1}"#).unwrap_err().code, INVALID_REQUEST);
        let r = parse(br#"{"jsonrpc":"2.0","id":3,"method":5}"#).unwrap_err().response();
        assert_eq!(r["error"]["code"], INVALID_REQUEST);
        assert_eq!(r["id"], 3);
    }

    #[test]
    fn pages_walk_the_listing_and_refuse_foreign_cursors() {
        let items: Vec<u32> = (0..5).collect();
        let (first, next) = page(items.clone(), None, 2).unwrap();
        assert_eq!((first, next.as_deref()), (vec![0, 1], Some("tg-2")));
        let (second, next) = page(items.clone(), next.as_deref(), 2).unwrap();
        assert_eq!((second, next.as_deref()), (vec![2, 3], Some("tg-4")));
        let (last, next) = page(items.clone(), next.as_deref(), 2).unwrap();
        assert_eq!((last, next), (vec![4], None));
        assert!(page(items.clone(), Some("tg-6"), 2).is_err());
        assert!(page(items.clone(), Some("2"), 2).is_err());
        assert!(page(items, Some("tg--1"), 2).is_err());
    }
}
