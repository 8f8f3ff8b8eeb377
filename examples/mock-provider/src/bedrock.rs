//! Amazon Bedrock Runtime: the Converse API (`POST /model/{modelId}/converse`
//! and `/converse-stream`) and, for Anthropic models, InvokeModel
//! (`/model/{modelId}/invoke` and `/invoke-with-response-stream`, an
//! Anthropic Messages body with `anthropic_version: "bedrock-2023-05-31"`).
//!
//! The wire shapes follow `core/tests/fixtures/bedrock-mock/` (the Bedrock
//! API reference, botocore's service model and recorded traffic): camelCase
//! JSON; errors as `{"message"}` with the type in `x-amzn-errortype`;
//! streams as AWS event-stream frames (`application/vnd.amazon.eventstream`,
//! written with `tollgate_core::eventstream`) whose JSON payloads carry
//! Bedrock's `p` padding, exceptions mid-stream as `:message-type: exception`
//! frames. Model ids arrive percent-encoded (an ARN's `:` and `/`) and are
//! decoded. Every call needs SigV4 (`service` `bedrock`, a region, a fresh
//! `x-amz-date`; the signature's form is checked, not its value) or a Bedrock
//! API key as `Authorization: Bearer`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tollgate_core::eventstream;

use crate::anthropic::{self, Answered, Flavour, Reply};
use crate::errors::{self, bedrock_error, bedrock_invalid, parse_object, Api};
use crate::openai::{split_arguments, tool_arguments};
use crate::util::{self, Finish};
use crate::{headers as mock_headers, Shared};

/// The `anthropic_version` InvokeModel requires for Anthropic models.
pub const BEDROCK_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// The content type of Bedrock's streams.
pub const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// The SigV4 service name Bedrock Runtime's credentials are scoped to.
pub const SIGNING_SERVICE: &str = "bedrock";

/// How far `x-amz-date` may be from the mock's clock (AWS allows 15 minutes).
const MAX_CLOCK_SKEW_SECS: u64 = 15 * 60;

/// The alphabet of Bedrock's `p` padding (a prefix of it, of varying length).
const PAD: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// The four operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Converse,
    ConverseStream,
    Invoke,
    InvokeStream,
}

impl Operation {
    fn from_segment(segment: &str) -> Option<Self> {
        match segment {
            "converse" => Some(Operation::Converse),
            "converse-stream" => Some(Operation::ConverseStream),
            "invoke" => Some(Operation::Invoke),
            "invoke-with-response-stream" => Some(Operation::InvokeStream),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Operation::Converse => "Converse",
            Operation::ConverseStream => "ConverseStream",
            Operation::Invoke => "InvokeModel",
            Operation::InvokeStream => "InvokeModelWithResponseStream",
        }
    }
}

// ---------------------------------------------------------------- paths

/// The decoded model id of a `/model/{modelId}/{operation}` path.
pub(crate) fn model_from_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/model/")?;
    let (model, _op) = rest.split_once('/')?;
    (!model.is_empty()).then(|| util::percent_decode(model))
}

/// What `GET /mock/requests` shows of a Bedrock call besides the raw
/// request: the decoded model id, the operation and the authentication
/// (`scheme` `sigv4` with the credential scope, `bearer`, `none` or `other`).
pub(crate) fn describe(path: &str, headers: &HeaderMap) -> Option<Value> {
    let rest = path.strip_prefix("/model/")?;
    let (_, op) = rest.split_once('/')?;
    let model = model_from_path(path)?;
    let operation = Operation::from_segment(op).map_or(Value::Null, |o| Value::from(o.name()));
    let auth = match header_str(headers, header::AUTHORIZATION.as_str()) {
        None => json!({"scheme": "none"}),
        Some(value) => match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                json!({"scheme": "bearer", "tokenChars": token.trim().chars().count()})
            }
            Some(("AWS4-HMAC-SHA256", params)) => {
                let p = sigv4_params(params);
                let scope: Vec<&str> = p.credential.unwrap_or_default().split('/').collect();
                json!({
                    "scheme": "sigv4",
                    "accessKeyId": scope.first(),
                    "date": scope.get(1),
                    "region": scope.get(2),
                    "service": scope.get(3),
                    "terminator": scope.get(4),
                    "signedHeaders": p.signed_headers.map(|h| h.split(';').collect::<Vec<_>>()),
                    "amzDate": header_str(headers, "x-amz-date"),
                    "sessionToken": headers.contains_key("x-amz-security-token"),
                })
            }
            _ => json!({"scheme": "other"}),
        },
    };
    Some(json!({"modelId": model, "operation": operation, "auth": auth}))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

// ---------------------------------------------------------------- auth

/// The parameters of a SigV4 `Authorization` header.
#[derive(Default)]
struct SigV4Params<'a> {
    credential: Option<&'a str>,
    signed_headers: Option<&'a str>,
    signature: Option<&'a str>,
}

fn sigv4_params(params: &str) -> SigV4Params<'_> {
    let mut out = SigV4Params::default();
    for part in params.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => out.credential = Some(v.trim()),
            Some(("SignedHeaders", v)) => out.signed_headers = Some(v.trim()),
            Some(("Signature", v)) => out.signature = Some(v.trim()),
            _ => {}
        }
    }
    out
}

fn forbidden(kind: &str, message: &str) -> Box<Response> {
    Box::new(bedrock_error(StatusCode::FORBIDDEN, kind, message))
}

/// Seconds since the epoch of an ISO-8601 basic `YYYYMMDDTHHMMSSZ`.
fn parse_amz_date(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 16 || b.get(8) != Some(&b'T') || b.get(15) != Some(&b'Z') {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> { text.get(range)?.parse::<i64>().ok() };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

/// Checks the request's authentication as Bedrock's front end does: a SigV4
/// `Authorization` scoped to `…/{region}/bedrock/aws4_request` with its
/// signed headers present and a fresh `x-amz-date` (the signature itself is
/// not verified), or `Authorization: Bearer <Bedrock API key>`.
fn check_auth(headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(auth) = header_str(headers, header::AUTHORIZATION.as_str()) else {
        return Err(forbidden("MissingAuthenticationTokenException", "Missing Authentication Token"));
    };
    let (scheme, params) = auth.split_once(' ').unwrap_or((auth, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        if params.trim().is_empty() {
            return Err(forbidden(
                "AccessDeniedException",
                "Authentication failed: Please make sure your API Key is valid.",
            ));
        }
        return Ok(());
    }
    let p = sigv4_params(params);
    let mut missing = String::new();
    for (name, value) in [("Credential", p.credential), ("Signature", p.signature), ("SignedHeaders", p.signed_headers)]
    {
        if value.is_none_or(str::is_empty) {
            missing.push_str(&format!("Authorization header requires '{name}' parameter. "));
        }
    }
    if scheme != "AWS4-HMAC-SHA256" || !missing.is_empty() {
        let message = if scheme == "AWS4-HMAC-SHA256" {
            format!("{missing}Authorization={auth}")
        } else {
            format!("Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. Authorization={scheme}")
        };
        return Err(forbidden("IncompleteSignatureException", &message));
    }
    let (credential, signed, signature) =
        (p.credential.unwrap_or_default(), p.signed_headers.unwrap_or_default(), p.signature.unwrap_or_default());
    let scope: Vec<&str> = credential.split('/').collect();
    let [key, date, region, service, terminator] = scope.as_slice() else {
        return Err(forbidden(
            "IncompleteSignatureException",
            &format!("Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{credential}'"),
        ));
    };
    if key.is_empty() {
        return Err(forbidden("UnrecognizedClientException", "The security token included in the request is invalid."));
    }
    if *service != SIGNING_SERVICE {
        return Err(forbidden(
            "InvalidSignatureException",
            &format!("Credential should be scoped to correct service: '{SIGNING_SERVICE}'. "),
        ));
    }
    if *terminator != "aws4_request" {
        return Err(forbidden(
            "InvalidSignatureException",
            &format!("Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'. "),
        ));
    }
    if region.is_empty() || !region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err(forbidden("InvalidSignatureException", "Credential should be scoped to a valid region. "));
    }
    let Some(amz_date) = header_str(headers, "x-amz-date") else {
        return Err(forbidden(
            "IncompleteSignatureException",
            &format!("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization={auth}"),
        ));
    };
    let Some(when) = parse_amz_date(amz_date) else {
        return Err(forbidden(
            "IncompleteSignatureException",
            &format!(
                "Date must be in ISO-8601 'basic format'. Got '{amz_date}'. See http://en.wikipedia.org/wiki/ISO_8601"
            ),
        ));
    };
    if amz_date.get(..8) != Some(*date) {
        return Err(forbidden(
            "InvalidSignatureException",
            &format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{date}' != '{}', from '{amz_date}'.",
                amz_date.get(..8).unwrap_or_default()
            ),
        ));
    }
    let now = util::unix_now();
    if when.abs_diff(now) > MAX_CLOCK_SKEW_SECS {
        let message = if when < now {
            format!("Signature expired: {amz_date} is now earlier than the allowed window (15 min. before the server's time).")
        } else {
            format!("Signature not yet current: {amz_date} is still later than the allowed window (15 min. after the server's time).")
        };
        return Err(forbidden("InvalidSignatureException", &message));
    }
    let signed: Vec<&str> = signed.split(';').collect();
    if !signed.iter().any(|h| *h == "host" || *h == ":authority") {
        return Err(forbidden(
            "InvalidSignatureException",
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    let absent = signed.iter().any(|h| *h != "host" && *h != ":authority" && !headers.contains_key(*h));
    let well_formed =
        signature.len() == 64 && signature.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if absent || !well_formed || signed.iter().any(|h| h.is_empty() || h.chars().any(|c| c.is_ascii_uppercase())) {
        return Err(forbidden(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- framing

/// The `p` padding Bedrock adds to every event payload: a prefix of
/// `a…zA…Z0…9`, its length (16–52) derived from the payload so streams
/// stay deterministic.
fn padding(payload: &str) -> &'static str {
    let len = 16 + usize::try_from(util::fnv1a(payload.as_bytes()) % 37).unwrap_or(0);
    PAD.get(..len).unwrap_or(PAD)
}

/// One `:message-type: event` frame with a JSON payload (an object, to which
/// the `p` padding is added; keys sorted, as Bedrock writes them).
fn event_frame(event_type: &str, payload: Value) -> Bytes {
    let mut payload = match payload {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let pad = padding(&errors::to_json(&payload));
    payload.insert("p".to_owned(), Value::from(pad));
    let body = errors::to_json(&Value::Object(payload));
    encode(&eventstream::Message::event(event_type, "application/json", body.into_bytes()))
}

fn encode(message: &eventstream::Message) -> Bytes {
    Bytes::from(message.encode().unwrap_or_default())
}

/// The `:message-type: exception` frame a stream ends with when it fails
/// (`x-mock-bedrock-stream-error`), for an HTTP-like code: the union member
/// names of `ConverseStreamOutput` / `ResponseStream`.
fn exception_frame(code: u16, invoke: bool) -> Bytes {
    let (member, message) = match code {
        400 => ("validationException", "The request is invalid."),
        408 if invoke => {
            ("modelTimeoutException", "Model has timed out in processing the request. Try your request again.")
        }
        424 | 408 => ("modelStreamErrorException", "The model stream ended with an error."),
        429 => ("throttlingException", "Too many tokens, please wait before trying again."),
        503 => ("serviceUnavailableException", "Bedrock is unable to process your request."),
        _ => (
            "internalServerException",
            "The system encountered an unexpected error during processing. Try your request again.",
        ),
    };
    let message = format!("{message} (simulated by the mock provider)");
    let payload = if member == "modelStreamErrorException" {
        json!({"message": message, "originalMessage": "Model stream error (simulated).", "originalStatusCode": 500})
    } else {
        json!({"message": message})
    };
    encode(&eventstream::Message::exception(member, "application/json", errors::to_json(&payload).into_bytes()))
}

fn stream_error_code(headers: &HeaderMap) -> Option<u16> {
    header_str(headers, mock_headers::BEDROCK_STREAM_ERROR)
        .and_then(|v| v.parse::<u16>().ok())
        .filter(|c| (400..=599).contains(c))
}

/// A stream of event-stream frames; with `x-mock-bedrock-stream-error` the
/// frames after `fail_at` are replaced by one exception frame.
fn stream_response(
    state: &Shared,
    headers: &HeaderMap,
    mut frames: Vec<Bytes>,
    fail_at: usize,
    invoke: bool,
) -> Response {
    if let Some(code) = stream_error_code(headers) {
        frames.truncate(fail_at.min(frames.len()));
        frames.push(exception_frame(code, invoke));
    }
    let mut resp = errors::stream_response(frames, state.chunk_delay(headers), EVENT_STREAM);
    resp.headers_mut().remove(header::CACHE_CONTROL);
    if invoke {
        resp.headers_mut().insert("x-amzn-bedrock-content-type", HeaderValue::from_static("application/json"));
    }
    resp
}

/// Milliseconds the mock reports as the call's latency: the configured
/// latency (what the client waited before the first byte) plus the chunk
/// delays of a stream, at least 1.
fn latency_ms(state: &Shared, headers: &HeaderMap, frames: usize) -> u64 {
    let first = crate::header_u64(headers, mock_headers::LATENCY_MS).unwrap_or(state.config.latency_ms);
    let delay = u64::try_from(state.chunk_delay(headers).as_millis()).unwrap_or(0);
    (first + delay * frames.saturating_sub(1) as u64).max(1)
}

// ---------------------------------------------------------------- handlers

/// `POST /model/{modelId}/{operation}`.
pub(crate) async fn post(
    State(state): State<Shared>,
    Path((model, op)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(operation) = Operation::from_segment(&op) else {
        return errors::not_found(Api::Bedrock, "POST", &op);
    };
    if let Err(resp) = check_auth(&headers) {
        return *resp;
    }
    if model.is_empty() || model.chars().count() > 2048 {
        return bedrock_invalid("The provided model identifier is invalid.");
    }
    match operation {
        Operation::Converse => converse(&state, &headers, &body, false),
        Operation::ConverseStream => converse(&state, &headers, &body, true),
        Operation::Invoke => invoke(&state, &model, &headers, &body, false).await,
        Operation::InvokeStream => invoke(&state, &model, &headers, &body, true).await,
    }
}

// ---------------------------------------------------------------- Converse

type Invalid = Box<Response>;

fn invalid(message: &str) -> Invalid {
    Box::new(bedrock_invalid(message))
}

/// Coral's wording of a constraint failure.
fn constraint(value: &Value, at: &str, what: &str) -> Invalid {
    let shown = match value {
        Value::String(s) => s.clone(),
        other => errors::to_json(other),
    };
    invalid(&format!("1 validation error detected: Value '{shown}' at '{at}' failed to satisfy constraint: {what}"))
}

/// What a Converse request says, reduced to what the mock needs.
#[derive(Default)]
struct Conversation {
    segments: Vec<String>,
    last_user_text: String,
    /// The last message is a user turn with text and no `toolResult`.
    ends_with_user_text: bool,
    /// Some message holds a `toolUse` or `toolResult` block.
    tool_blocks: bool,
}

/// The one member a union value (`ContentBlock`, `Tool`, `ToolChoice` …) sets.
fn union_member<'a>(value: &'a Value, at: &str, members: &[&str]) -> Result<(&'a str, &'a Value), Invalid> {
    let Some(obj) = value.as_object() else {
        return Err(constraint(value, at, "Member must be a structure"));
    };
    if let Some(unknown) = obj.keys().find(|k| !members.contains(&k.as_str())) {
        return Err(invalid(&format!(
            "Malformed input request: {at}: extraneous key [{unknown}] is not permitted, please reformat your input and try again."
        )));
    }
    let mut set = obj.iter().filter(|(_, v)| !v.is_null());
    match (set.next(), set.next()) {
        (Some((k, v)), None) => Ok((k.as_str(), v)),
        _ => Err(invalid(&format!(
            "1 validation error detected: Value at '{at}' failed to satisfy constraint: Member must have exactly one member set"
        ))),
    }
}

const CONTENT_MEMBERS: &[&str] = &[
    "text",
    "image",
    "document",
    "video",
    "audio",
    "toolUse",
    "toolResult",
    "guardContent",
    "cachePoint",
    "reasoningContent",
    "citationsContent",
    "searchResult",
];

const IMAGE_FORMATS: &[&str] = &["png", "jpeg", "gif", "webp"];
const DOCUMENT_FORMATS: &[&str] = &["pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md"];

fn check_source(block: &Value, at: &str) -> Result<(), Invalid> {
    let source = block.get("source").unwrap_or(&Value::Null);
    if source.is_null() {
        return Err(invalid(&format!("1 validation error detected: Value null at '{at}.source' failed to satisfy constraint: Member must not be null")));
    }
    let (member, value) = union_member(source, &format!("{at}.source"), &["bytes", "s3Location", "text", "content"])?;
    if member == "bytes" && value.as_str().is_none_or(|b| b.is_empty()) {
        return Err(constraint(
            value,
            &format!("{at}.source.bytes"),
            "Member must have length greater than or equal to 1",
        ));
    }
    Ok(())
}

fn check_format(block: &Value, at: &str, formats: &[&str]) -> Result<(), Invalid> {
    let format = block.get("format").unwrap_or(&Value::Null);
    match format.as_str() {
        Some(f) if formats.contains(&f) => Ok(()),
        _ => Err(constraint(
            format,
            &format!("{at}.format"),
            &format!("Member must satisfy enum value set: [{}]", formats.join(", ")),
        )),
    }
}

/// Text segments of a tool result's content (counted as input).
fn tool_result_segments(result: &Value, at: &str, segments: &mut Vec<String>) -> Result<(), Invalid> {
    let Some(items) = result.get("content").and_then(Value::as_array) else {
        return Err(invalid(&format!(
            "1 validation error detected: Value null at '{at}.content' failed to satisfy constraint: Member must not be null"
        )));
    };
    for (k, item) in items.iter().enumerate() {
        let item_at = format!("{at}.content.{k}");
        let (member, value) =
            union_member(item, &item_at, &["json", "text", "image", "document", "video", "searchResult"])?;
        match member {
            "text" => segments.push(value.as_str().unwrap_or_default().to_owned()),
            "json" => segments.push(errors::to_json(value)),
            "image" => check_format(value, &format!("{item_at}.image"), IMAGE_FORMATS)?,
            "document" => check_format(value, &format!("{item_at}.document"), DOCUMENT_FORMATS)?,
            _ => {}
        }
    }
    if let Some(status) = result.get("status") {
        if !matches!(status.as_str(), Some("success" | "error")) {
            return Err(constraint(
                status,
                &format!("{at}.status"),
                "Member must satisfy enum value set: [success, error]",
            ));
        }
    }
    Ok(())
}

fn read_messages(req: &Map<String, Value>) -> Result<Conversation, Invalid> {
    let mut conv = Conversation::default();
    let messages = match req.get("messages") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(constraint(other, "messages", "Member must be a list")),
    };
    if messages.is_empty() {
        return Err(invalid(
            "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
        ));
    }
    // The toolUse ids of the previous assistant turn, to be answered next.
    let mut open_calls: Vec<String> = Vec::new();
    let mut previous_role = "";
    for (i, msg) in messages.iter().enumerate() {
        let at = format!("messages.{i}");
        let role = match msg.get("role") {
            Some(Value::String(r)) if r == "user" || r == "assistant" => r.as_str(),
            Some(other) => {
                return Err(constraint(other, &format!("{at}.member.role"), "Member must satisfy enum value set: [user, assistant]"))
            }
            None => {
                return Err(invalid(&format!(
                    "1 validation error detected: Value null at '{at}.member.role' failed to satisfy constraint: Member must not be null"
                )))
            }
        };
        if i == 0 && role != "user" {
            return Err(invalid(
                "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
            ));
        }
        if role == previous_role {
            return Err(invalid("A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again."));
        }
        previous_role = role;
        let blocks = match msg.get("content") {
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(other @ Value::Array(_)) => {
                return Err(constraint(other, &format!("{at}.member.content"), "Member must have length greater than or equal to 1"))
            }
            _ => {
                return Err(invalid(&format!(
                    "1 validation error detected: Value null at '{at}.member.content' failed to satisfy constraint: Member must not be null"
                )))
            }
        };
        let mut texts = Vec::new();
        let mut calls = Vec::new();
        let mut results = Vec::new();
        for (j, block) in blocks.iter().enumerate() {
            let block_at = format!("{at}.content.{j}");
            let (member, value) = union_member(block, &block_at, CONTENT_MEMBERS)?;
            match member {
                "text" => match value.as_str() {
                    Some(t) if !t.trim().is_empty() => texts.push(t.to_owned()),
                    _ => {
                        return Err(invalid(&format!(
                            "The text field in the ContentBlock object at {block_at} is blank. Add text to the text field, and try again."
                        )))
                    }
                },
                "image" => {
                    check_format(value, &format!("{block_at}.image"), IMAGE_FORMATS)?;
                    check_source(value, &format!("{block_at}.image"))?;
                }
                "document" => {
                    check_format(value, &format!("{block_at}.document"), DOCUMENT_FORMATS)?;
                    if value.get("name").and_then(Value::as_str).is_none_or(|n| n.trim().is_empty()) {
                        return Err(invalid(&format!(
                            "1 validation error detected: Value null at '{block_at}.document.name' failed to satisfy constraint: Member must not be null"
                        )));
                    }
                    check_source(value, &format!("{block_at}.document"))?;
                }
                "toolUse" => {
                    if role != "assistant" {
                        return Err(invalid(&format!("The toolUse block at {block_at} is only allowed in an assistant message.")));
                    }
                    for field in ["toolUseId", "name"] {
                        if value.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                            return Err(invalid(&format!("1 validation error detected: Value null at '{block_at}.toolUse.{field}' failed to satisfy constraint: Member must not be null")));
                        }
                    }
                    let Some(input) = value.get("input").filter(|v| !v.is_null()) else {
                        return Err(invalid(&format!("1 validation error detected: Value null at '{block_at}.toolUse.input' failed to satisfy constraint: Member must not be null")));
                    };
                    conv.segments.push(errors::to_json(input));
                    calls.push(value.get("toolUseId").and_then(Value::as_str).unwrap_or_default().to_owned());
                }
                "toolResult" => {
                    if role != "user" {
                        return Err(invalid(&format!("The toolResult block at {block_at} is only allowed in a user message.")));
                    }
                    let Some(id) = value.get("toolUseId").and_then(Value::as_str).filter(|s| !s.is_empty()) else {
                        return Err(invalid(&format!("1 validation error detected: Value null at '{block_at}.toolResult.toolUseId' failed to satisfy constraint: Member must not be null")));
                    };
                    tool_result_segments(value, &format!("{block_at}.toolResult"), &mut conv.segments)?;
                    results.push(id.to_owned());
                }
                "reasoningContent" => {
                    if role != "assistant" {
                        return Err(invalid(&format!("The reasoningContent block at {block_at} is only allowed in an assistant message.")));
                    }
                    union_member(value, &format!("{block_at}.reasoningContent"), &["reasoningText", "redactedContent"])?;
                }
                _ => {}
            }
        }
        if role == "user" {
            if results.len() > open_calls.len() {
                return Err(invalid(&format!("The number of toolResult blocks at {at}.content exceeds the number of toolUse blocks of previous turn.")));
            }
            let unanswered: Vec<&str> =
                open_calls.iter().filter(|id| !results.contains(id)).map(String::as_str).collect();
            if !unanswered.is_empty() {
                return Err(invalid(&format!(
                    "Expected toolResult blocks at {at}.content for the following Ids: {}",
                    unanswered.join(", ")
                )));
            }
            if !texts.is_empty() {
                conv.last_user_text = texts.join("\n");
            }
            conv.ends_with_user_text = results.is_empty() && !texts.is_empty();
        } else {
            conv.ends_with_user_text = false;
        }
        conv.tool_blocks |= !calls.is_empty() || !results.is_empty();
        open_calls = calls;
        conv.segments.extend(texts);
    }
    Ok(conv)
}

/// `system` blocks' text (counted as input).
fn read_system(req: &Map<String, Value>) -> Result<Vec<String>, Invalid> {
    let mut out = Vec::new();
    let Some(system) = req.get("system").filter(|v| !v.is_null()) else {
        return Ok(out);
    };
    let Some(blocks) = system.as_array() else {
        return Err(constraint(system, "system", "Member must be a list"));
    };
    for (i, block) in blocks.iter().enumerate() {
        let at = format!("system.{i}");
        let (member, value) = union_member(block, &at, &["text", "guardContent", "cachePoint"])?;
        if member == "text" {
            match value.as_str() {
                Some(t) if !t.trim().is_empty() => out.push(t.to_owned()),
                _ => {
                    return Err(invalid(&format!(
                        "The text field in the SystemContentBlock object at {at} is blank. Add text to the text field, and try again."
                    )))
                }
            }
        }
    }
    Ok(out)
}

/// `inferenceConfig`: `(maxTokens, stopSequences)`, validated.
fn read_inference(req: &Map<String, Value>) -> Result<(Option<u64>, Vec<String>), Invalid> {
    let Some(config) = req.get("inferenceConfig").filter(|v| !v.is_null()) else {
        return Ok((None, Vec::new()));
    };
    let Some(config) = config.as_object() else {
        return Err(constraint(config, "inferenceConfig", "Member must be a structure"));
    };
    let max_tokens = match config.get("maxTokens") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(n) if n >= 1 => Some(n.unsigned_abs()),
            _ => {
                return Err(constraint(
                    v,
                    "inferenceConfig.maxTokens",
                    "Member must have value greater than or equal to 1",
                ))
            }
        },
    };
    for field in ["temperature", "topP"] {
        match config.get(field) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_f64() {
                Some(x) if x < 0.0 => {
                    return Err(constraint(
                        v,
                        &format!("inferenceConfig.{field}"),
                        "Member must have value greater than or equal to 0",
                    ))
                }
                Some(x) if x > 1.0 => {
                    return Err(constraint(
                        v,
                        &format!("inferenceConfig.{field}"),
                        "Member must have value less than or equal to 1",
                    ))
                }
                Some(_) => {}
                None => return Err(constraint(v, &format!("inferenceConfig.{field}"), "Member must be a number")),
            },
        }
    }
    let stop = match config.get("stopSequences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut stop = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s) if !s.is_empty() => stop.push(s.to_owned()),
                    _ => {
                        return Err(constraint(
                            item,
                            &format!("inferenceConfig.stopSequences.{i}.member"),
                            "Member must have length greater than or equal to 1",
                        ))
                    }
                }
            }
            stop
        }
        Some(other) => return Err(constraint(other, "inferenceConfig.stopSequences", "Member must be a list")),
    };
    Ok((max_tokens, stop))
}

fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `toolConfig`: the offered tool names and the choice (`auto`, `any`,
/// `tool:NAME`), validated.
fn read_tools(req: &Map<String, Value>) -> Result<Option<(Vec<String>, String)>, Invalid> {
    let Some(config) = req.get("toolConfig").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let tools = match config.get("tools") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(other @ Value::Array(_)) => {
            return Err(constraint(other, "toolConfig.tools", "Member must have length greater than or equal to 1"))
        }
        _ => return Err(invalid("1 validation error detected: Value null at 'toolConfig.tools' failed to satisfy constraint: Member must not be null")),
    };
    let mut names = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let at = format!("toolConfig.tools.{}.member", i + 1);
        let (member, spec) = union_member(tool, &at, &["toolSpec", "systemTool", "cachePoint"])?;
        if member != "toolSpec" {
            continue;
        }
        let name = spec.get("name").unwrap_or(&Value::Null);
        match name.as_str() {
            Some(n) if valid_tool_name(n) => {
                if names.iter().any(|m| m == n) {
                    return Err(invalid(&format!("The toolConfig field contains duplicate tool names: {n}.")));
                }
                names.push(n.to_owned());
            }
            _ => {
                return Err(constraint(
                    name,
                    &format!("{at}.toolSpec.name"),
                    "Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+",
                ))
            }
        }
        if let Some(d) = spec.get("description") {
            if d.as_str().is_none_or(|d| d.trim().is_empty()) {
                return Err(constraint(
                    d,
                    &format!("{at}.toolSpec.description"),
                    "Member must have length greater than or equal to 1",
                ));
            }
        }
        match spec.get("inputSchema").and_then(|s| s.get("json")) {
            Some(Value::Object(_)) => {}
            _ => {
                return Err(invalid(&format!(
                    "1 validation error detected: Value null at '{at}.toolSpec.inputSchema.json' failed to satisfy constraint: Member must not be null"
                )))
            }
        }
    }
    let choice = match config.get("toolChoice").filter(|v| !v.is_null()) {
        None => "auto".to_owned(),
        Some(choice) => match union_member(choice, "toolConfig.toolChoice", &["auto", "any", "tool"])? {
            ("tool", spec) => match spec.get("name").and_then(Value::as_str) {
                Some(n) if names.iter().any(|m| m == n) => format!("tool:{n}"),
                Some(n) => {
                    return Err(invalid(&format!(
                        "The tool {n} in toolConfig.toolChoice.tool is not among the tools of toolConfig.tools."
                    )))
                }
                None => return Err(invalid("1 validation error detected: Value null at 'toolConfig.toolChoice.tool.name' failed to satisfy constraint: Member must not be null")),
            },
            (member, _) => member.to_owned(),
        },
    };
    Ok(Some((names, choice)))
}

/// Whether `additionalModelRequestFields` turns on extended thinking
/// (`thinking` / `reasoning_config` `{type: "enabled"}`), which makes the
/// mock "think" first.
fn wants_reasoning(req: &Map<String, Value>) -> Result<bool, Invalid> {
    let Some(extra) = req.get("additionalModelRequestFields").filter(|v| !v.is_null()) else {
        return Ok(false);
    };
    let Some(extra) = extra.as_object() else {
        return Err(invalid("Malformed input request: additionalModelRequestFields must be a JSON object, please reformat your input and try again."));
    };
    Ok(["thinking", "reasoning_config"]
        .iter()
        .filter_map(|k| extra.get(*k))
        .any(|t| t.get("type").and_then(Value::as_str) == Some("enabled")))
}

/// The reasoning the mock "thinks" before answering.
fn reasoning_text(user_text: &str) -> String {
    format!("Thinking about: {}", util::truncate_chars(user_text, util::ECHO_LIMIT_CHARS))
}

/// A signature for the mock's reasoning (base64, deterministic).
fn reasoning_signature(reasoning: &str) -> String {
    let mut state = util::fnv1a(reasoning.as_bytes());
    let bytes: Vec<u8> = (0..48).flat_map(|_| util::splitmix(&mut state).to_le_bytes()).take(48).collect();
    util::base64_encode(&bytes)
}

enum Answer {
    Text { text: String, finish: Finish },
    Tool { id: String, name: String, arguments: String },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenUsage {
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolUse {
    tool_use_id: String,
    name: String,
    input: Value,
}

#[derive(Serialize)]
struct ReasoningText {
    text: String,
    signature: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Reasoning {
    reasoning_text: ReasoningText,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum ContentBlock {
    Text(String),
    ToolUse(ToolUse),
    ReasoningContent(Reasoning),
}

#[derive(Serialize)]
struct OutputMessage {
    role: &'static str,
    content: Vec<ContentBlock>,
}

#[derive(Serialize)]
struct Output {
    message: OutputMessage,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Metrics {
    latency_ms: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConverseResponse {
    output: Output,
    stop_reason: &'static str,
    usage: TokenUsage,
    metrics: Metrics,
}

fn converse(state: &Shared, headers: &HeaderMap, body: &[u8], stream: bool) -> Response {
    match converse_inner(state, headers, body, stream) {
        Ok(resp) => resp,
        Err(resp) => *resp,
    }
}

fn converse_inner(state: &Shared, headers: &HeaderMap, body: &[u8], stream: bool) -> Result<Response, Invalid> {
    let req = parse_object(Api::Bedrock, body)?;
    let system = read_system(&req)?;
    let mut conv = read_messages(&req)?;
    let (max_tokens, stop) = read_inference(&req)?;
    let tools = read_tools(&req)?;
    if conv.tool_blocks && tools.is_none() {
        return Err(invalid("The toolConfig field must be defined when using toolUse and toolResult content blocks."));
    }
    let reasoning = wants_reasoning(&req)?.then(|| reasoning_text(&conv.last_user_text));
    let mut segments = system;
    segments.append(&mut conv.segments);
    let input_tokens = util::sum_tokens(segments.iter().map(String::as_str));

    let call = tools.and_then(|(names, choice)| {
        let first = names.first()?.clone();
        match choice.as_str() {
            "any" => Some(first),
            c if c.starts_with("tool:") => c.strip_prefix("tool:").map(str::to_owned),
            _ => (conv.ends_with_user_text && util::mentions_tool(&conv.last_user_text)).then_some(first),
        }
    });
    let answer = match call {
        Some(name) => {
            Answer::Tool { id: state.ids.base62("tooluse_", 22), name, arguments: tool_arguments(&conv.last_user_text) }
        }
        None => {
            let (text, finish) =
                util::shape_reply(util::reply_with_append(&conv.last_user_text, headers), &stop, max_tokens);
            Answer::Text { text, finish }
        }
    };
    let (stop_reason, answer_tokens) = match &answer {
        Answer::Text { text, finish } => {
            let reason = match finish {
                Finish::Stop => "end_turn",
                Finish::Length => "max_tokens",
                Finish::StopSequence(_) => "stop_sequence",
            };
            (reason, util::approx_tokens(text))
        }
        Answer::Tool { arguments, .. } => ("tool_use", util::approx_tokens(arguments)),
    };
    let output_tokens = (answer_tokens + reasoning.as_deref().map_or(0, util::approx_tokens)).max(1);
    let usage = TokenUsage { input_tokens, output_tokens, total_tokens: input_tokens + output_tokens };

    if !stream {
        let mut content = Vec::new();
        if let Some(text) = reasoning {
            let signature = reasoning_signature(&text);
            content
                .push(ContentBlock::ReasoningContent(Reasoning { reasoning_text: ReasoningText { text, signature } }));
        }
        content.push(match answer {
            Answer::Text { text, .. } => ContentBlock::Text(text),
            Answer::Tool { id, name, arguments } => ContentBlock::ToolUse(ToolUse {
                tool_use_id: id,
                name,
                input: serde_json::from_str(&arguments).unwrap_or(Value::Object(Map::new())),
            }),
        });
        return Ok(errors::json_response(
            StatusCode::OK,
            &ConverseResponse {
                output: Output { message: OutputMessage { role: "assistant", content } },
                stop_reason,
                usage,
                metrics: Metrics { latency_ms: latency_ms(state, headers, 1) },
            },
        ));
    }

    let mut frames = vec![event_frame("messageStart", json!({"role": "assistant"}))];
    let mut index = 0u32;
    if let Some(text) = reasoning {
        let signature = reasoning_signature(&text);
        for piece in util::split_words(&text) {
            frames.push(event_frame(
                "contentBlockDelta",
                json!({"contentBlockIndex": index, "delta": {"reasoningContent": {"text": piece}}}),
            ));
        }
        frames.push(event_frame(
            "contentBlockDelta",
            json!({"contentBlockIndex": index, "delta": {"reasoningContent": {"signature": signature}}}),
        ));
        frames.push(event_frame("contentBlockStop", json!({"contentBlockIndex": index})));
        index += 1;
    }
    let deltas_from = frames.len();
    match answer {
        Answer::Text { text, .. } => {
            for piece in util::split_words(&text) {
                frames.push(event_frame(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": index, "delta": {"text": piece}}),
                ));
            }
        }
        Answer::Tool { id, name, arguments } => {
            frames.push(event_frame(
                "contentBlockStart",
                json!({"contentBlockIndex": index, "start": {"toolUse": {"name": name, "toolUseId": id}}}),
            ));
            for piece in split_arguments(&arguments) {
                frames.push(event_frame(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}}),
                ));
            }
        }
    }
    let fail_at = deltas_from + (frames.len() - deltas_from).div_ceil(2);
    frames.push(event_frame("contentBlockStop", json!({"contentBlockIndex": index})));
    frames.push(event_frame("messageStop", json!({"stopReason": stop_reason})));
    let latency = latency_ms(state, headers, frames.len() + 1);
    frames.push(event_frame("metadata", json!({"usage": usage, "metrics": {"latencyMs": latency}})));
    Ok(stream_response(state, headers, frames, fail_at, false))
}

// ---------------------------------------------------------------- InvokeModel

/// The Anthropic model name of a Bedrock model id or ARN
/// (`arn:…:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0`
/// → `claude-sonnet-4-5-20250929`), as Claude on Bedrock reports `model`.
fn anthropic_model_name(model_id: &str) -> String {
    let id = model_id.rsplit('/').next().unwrap_or(model_id);
    let id = match id.split_once("anthropic.") {
        Some((prefix, rest)) if !prefix.contains(':') => rest,
        _ => id,
    };
    // `…-v1:0`: a version and a revision.
    let Some((id, _revision)) = id.split_once(':') else {
        return id.to_owned();
    };
    match id.rsplit_once("-v") {
        Some((name, version)) if !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()) => name.to_owned(),
        _ => id.to_owned(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InvocationMetrics {
    input_token_count: u64,
    output_token_count: u64,
    invocation_latency: u64,
    first_byte_latency: u64,
}

/// A Bedrock `ValidationException` carrying the message of an Anthropic
/// error response (Claude's own validation, as Bedrock passes it on).
async fn anthropic_error_as_bedrock(resp: Response) -> Response {
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), crate::MAX_BODY_BYTES).await.unwrap_or_default();
    let message = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "Malformed input request, please reformat your input and try again.".to_owned());
    if status.is_server_error() {
        return errors::status_error(Api::Bedrock, status);
    }
    bedrock_invalid(&message)
}

fn malformed(detail: &str) -> Response {
    bedrock_invalid(&format!("Malformed input request: {detail}, please reformat your input and try again."))
}

async fn invoke(state: &Shared, model_id: &str, headers: &HeaderMap, body: &[u8], stream: bool) -> Response {
    let mut req = match parse_object(Api::Bedrock, body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    match req.remove("anthropic_version") {
        Some(Value::String(v)) if v == BEDROCK_ANTHROPIC_VERSION => {}
        Some(other) => {
            let shown = other.as_str().map_or_else(|| errors::to_json(&other), str::to_owned);
            return malformed(&format!("#/anthropic_version: {shown} is not a valid enum value"));
        }
        None => return malformed("#: required key [anthropic_version] not found"),
    }
    for extraneous in ["model", "stream"] {
        if req.contains_key(extraneous) {
            return malformed(&format!("#: extraneous key [{extraneous}] is not permitted"));
        }
    }
    req.insert("model".to_owned(), Value::String(anthropic_model_name(model_id)));
    req.insert("stream".to_owned(), Value::Bool(stream));
    let flavour = Flavour { id_prefix: "msg_bdrk_01", ping: false };
    let Answered { reply, input_tokens, output_tokens } = match anthropic::answer(state, headers, &req, flavour) {
        Ok(answered) => answered,
        Err(resp) => return anthropic_error_as_bedrock(*resp).await,
    };
    match reply {
        Reply::Message(json) => {
            let mut resp = Response::new(axum::body::Body::from(json));
            let out = resp.headers_mut();
            out.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            let latency = latency_ms(state, headers, 1);
            for (name, value) in [
                ("x-amzn-bedrock-invocation-latency", latency),
                ("x-amzn-bedrock-output-token-count", output_tokens),
                ("x-amzn-bedrock-input-token-count", input_tokens),
            ] {
                out.insert(name, HeaderValue::from(value));
            }
            resp
        }
        Reply::Events(events) => {
            let count = events.len();
            let latency = latency_ms(state, headers, count);
            let first_byte = latency_ms(state, headers, 1);
            // Fail after message_start, content_block_start and half of the deltas.
            let deltas = events.iter().filter(|(name, _)| *name == "content_block_delta").count();
            let fail_at = 2 + deltas.div_ceil(2);
            let frames = events
                .into_iter()
                .map(|(name, mut json)| {
                    if name == "message_stop" && json.ends_with('}') {
                        // Bedrock adds the invocation's metrics to the last event.
                        json.pop();
                        json.push_str(",\"amazon-bedrock-invocationMetrics\":");
                        json.push_str(&errors::to_json(&InvocationMetrics {
                            input_token_count: input_tokens,
                            output_token_count: output_tokens,
                            invocation_latency: latency,
                            first_byte_latency: first_byte,
                        }));
                        json.push('}');
                    }
                    event_frame("chunk", json!({"bytes": util::base64_encode(json.as_bytes())}))
                })
                .collect();
            stream_response(state, headers, frames, fail_at, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_are_decoded_from_the_path() {
        assert_eq!(
            model_from_path("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse").as_deref(),
            Some("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0")
        );
        assert_eq!(model_from_path("/model/amazon.nova-lite-v1:0/invoke").as_deref(), Some("amazon.nova-lite-v1:0"));
        assert_eq!(model_from_path("/model//converse"), None);
        assert_eq!(model_from_path("/v1/chat/completions"), None);
    }

    #[test]
    fn anthropic_names_drop_the_bedrock_decoration() {
        for (id, name) in [
            ("anthropic.claude-3-5-sonnet-20240620-v1:0", "claude-3-5-sonnet-20240620"),
            ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5-20250929"),
            (
                "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                "claude-sonnet-4-5-20250929",
            ),
            ("anthropic.claude-v2", "claude-v2"),
            ("mock-chat", "mock-chat"),
        ] {
            assert_eq!(anthropic_model_name(id), name, "{id}");
        }
    }

    #[test]
    fn amz_dates_parse() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(parse_amz_date("20240229T235959Z"), Some(1_709_251_199));
        assert_eq!(parse_amz_date("2015-08-30T12:36:00Z"), None);
        assert_eq!(parse_amz_date("20151330T123600Z"), None);
    }

    #[test]
    fn padding_is_a_prefix_of_the_alphabet() {
        for payload in ["", "{}", "{\"role\":\"assistant\"}", &"x".repeat(500)] {
            let p = padding(payload);
            assert!((16..=52).contains(&p.len()), "{p}");
            assert!(PAD.starts_with(p));
        }
    }
}
