//! Provider-shaped error bodies and JSON/SSE response helpers.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

/// Which provider's wire format a path speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Anthropic,
    /// The Gemini API and Vertex AI's Google models (Google's error shape).
    Gemini,
    /// Anthropic models on Vertex AI: the platform's errors (auth, quota, not
    /// found) in Google's shape, the model's in Anthropic's.
    VertexAnthropic,
    /// Amazon Bedrock Runtime (`/model/{modelId}/…`): `{"message"}` bodies
    /// named by an `x-amzn-errortype` header.
    Bedrock,
}

impl Api {
    /// Anthropic for `/v1/messages…`; Google for the Gemini and Vertex AI
    /// paths (`/v1beta/…`, `/v1beta1/…`, `/v1/projects/…`, `/v1/models/M:verb`);
    /// Bedrock for `/model/…`; OpenAI for everything else.
    pub fn for_path(path: &str) -> Self {
        if path.starts_with("/model/") {
            Api::Bedrock
        } else if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            Api::Anthropic
        } else if path.starts_with("/v1/projects/") || path.starts_with("/v1beta1/") {
            if path.contains("/publishers/anthropic/") {
                Api::VertexAnthropic
            } else {
                Api::Gemini
            }
        } else if path.starts_with("/v1beta/") || (path.starts_with("/v1/models/") && path.contains(':')) {
            Api::Gemini
        } else {
            Api::OpenAi
        }
    }
}

/// A JSON response with the given status.
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() = status;
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        Err(err) => {
            let mut resp = Response::new(Body::from(format!("mock serialisation error: {err}")));
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            resp
        }
    }
}

/// Serialises one value to compact JSON (no failure path for our types; a
/// failure becomes an `{}`).
pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

/// A JSON response pretty-printed with two-space indents, as Google's APIs
/// answer.
pub fn json_pretty_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => {
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() = status;
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=UTF-8"));
            resp
        }
        Err(_) => json_response(status, value),
    }
}

/// `data: {json}\n\n`
pub fn sse_data<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(format!("data: {}\n\n", to_json(value)))
}

/// `event: NAME\ndata: {json}\n\n`
pub fn sse_event<T: Serialize>(event: &str, value: &T) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {}\n\n", to_json(value)))
}

/// A streamed `text/event-stream` response: one body frame per SSE event,
/// `delay` between frames.
pub fn sse_response(frames: Vec<Bytes>, delay: Duration) -> Response {
    stream_response(frames, delay, "text/event-stream; charset=utf-8")
}

/// A streamed response of the given content type: one body frame per
/// element of `frames`, `delay` between frames.
pub fn stream_response(frames: Vec<Bytes>, delay: Duration, content_type: &'static str) -> Response {
    let stream = futures::stream::iter(frames.into_iter().enumerate()).then(move |(i, frame)| async move {
        if i > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok::<Bytes, Infallible>(frame)
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[derive(Serialize)]
struct OpenAiErrorBody<'a> {
    error: OpenAiError<'a>,
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

/// `{"error":{"message","type","param","code"}}`
pub fn openai_error(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    json_response(status, &OpenAiErrorBody { error: OpenAiError { message, kind, param, code } })
}

/// A 400 `invalid_request_error` in OpenAI's shape.
pub fn openai_invalid(message: &str, param: Option<&str>, code: Option<&str>) -> Response {
    openai_error(StatusCode::BAD_REQUEST, message, "invalid_request_error", param, code)
}

#[derive(Serialize)]
struct AnthropicErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicError<'a>,
}

#[derive(Serialize)]
struct AnthropicError<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

/// `{"type":"error","error":{"type","message"}}`
pub fn anthropic_error(status: StatusCode, kind: &str, message: &str) -> Response {
    json_response(status, &AnthropicErrorBody { kind: "error", error: AnthropicError { kind, message } })
}

/// A 400 `invalid_request_error` in Anthropic's shape.
pub fn anthropic_invalid(message: &str) -> Response {
    anthropic_error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

#[derive(Serialize)]
struct GoogleErrorBody<'a> {
    error: GoogleError<'a>,
}

#[derive(Serialize)]
struct GoogleError<'a> {
    code: u16,
    message: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<serde_json::Value>,
}

/// `{"error":{"code","message","status","details"?}}`, Google's error shape
/// (`google.rpc.Status` as JSON), pretty-printed as Google sends it.
pub fn google_error(
    status: StatusCode,
    message: &str,
    status_name: &str,
    details: Option<serde_json::Value>,
) -> Response {
    json_pretty_response(
        status,
        &GoogleErrorBody { error: GoogleError { code: status.as_u16(), message, status: status_name, details } },
    )
}

/// A 400 `INVALID_ARGUMENT` in Google's shape.
pub fn google_invalid(message: &str) -> Response {
    google_error(StatusCode::BAD_REQUEST, message, "INVALID_ARGUMENT", None)
}

/// Google's canonical status name for an HTTP status.
pub fn google_status_name(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        412 => "FAILED_PRECONDITION",
        413 => "INVALID_ARGUMENT",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        500..=599 => "INTERNAL",
        _ => "UNKNOWN",
    }
}

/// The simulated error of the Gemini API / Vertex AI for a status.
fn google_status_error(status: StatusCode) -> Response {
    let code = status.as_u16();
    let (message, details) = match code {
        400 => ("Request contains an invalid argument. (simulated by the mock provider)", None),
        401 => (
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project. (simulated by the mock provider)",
            None,
        ),
        403 => ("The caller does not have permission (simulated by the mock provider)", None),
        404 => ("Requested entity was not found. (simulated by the mock provider)", None),
        413 => ("Request payload size exceeds the limit: 20971520 bytes. (simulated by the mock provider)", None),
        429 => (
            "You exceeded your current quota, please check your plan and billing details. (simulated by the mock provider)",
            Some(serde_json::json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}])),
        ),
        503 => ("The model is overloaded. Please try again later. (simulated by the mock provider)", None),
        504 => ("Deadline expired before operation could complete. (simulated by the mock provider)", None),
        500..=599 => (
            "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting (simulated by the mock provider)",
            None,
        ),
        _ => ("Mock provider: simulated error.", None),
    };
    google_error(status, message, google_status_name(code), details)
}

/// What follows the error type in Bedrock's `x-amzn-errortype` header (the
/// service's namespace; SDKs keep what comes before the first `:`).
pub const BEDROCK_ERROR_NAMESPACE: &str = ":http://internal.amazon.com/coral/com.amazon.bedrock/";

/// Bedrock's error body: `{"message": …}` (`{"Message": …}` for
/// `AccessDeniedException`, as the service sends it), the type in
/// `x-amzn-errortype`.
pub fn bedrock_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let key = if kind == "AccessDeniedException" { "Message" } else { "message" };
    let mut body = serde_json::Map::new();
    body.insert(key.to_owned(), serde_json::Value::String(message.to_owned()));
    if kind == "ModelErrorException" {
        body.insert("originalStatusCode".to_owned(), serde_json::Value::from(500));
    }
    let mut resp = json_response(status, &body);
    if let Ok(value) = HeaderValue::from_str(&format!("{kind}{BEDROCK_ERROR_NAMESPACE}")) {
        resp.headers_mut().insert("x-amzn-errortype", value);
    }
    resp
}

/// A 400 `ValidationException` in Bedrock's shape.
pub fn bedrock_invalid(message: &str) -> Response {
    bedrock_error(StatusCode::BAD_REQUEST, "ValidationException", message)
}

/// Bedrock's error type and message for an HTTP status.
pub fn bedrock_status_kind(code: u16) -> (&'static str, &'static str) {
    match code {
        401 => ("UnrecognizedClientException", "The security token included in the request is invalid."),
        403 => ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
        404 => ("ResourceNotFoundException", "The requested resource could not be found."),
        408 => ("ModelTimeoutException", "Model has timed out in processing the request. Try your request again."),
        413 => ("ValidationException", "Input is too long for requested model."),
        424 => ("ModelErrorException", "The model returned an error. Try your request again."),
        429 => ("ThrottlingException", "Too many requests, please wait before trying again."),
        503 => ("ServiceUnavailableException", "Bedrock is unable to process your request."),
        500..=599 => (
            "InternalServerException",
            "The system encountered an unexpected error during processing. Try your request again.",
        ),
        _ => ("ValidationException", "The request is invalid."),
    }
}

/// The error a provider would send with this status (used by `x-mock-status`,
/// `--fail-every` and `--rate-limit-every`). 429 carries `retry-after: 1`.
pub fn status_error(api: Api, status: StatusCode) -> Response {
    let code = status.as_u16();
    let mut resp = match api {
        Api::OpenAi => {
            let (message, kind, err_code) = match code {
                400 => ("Mock provider: bad request (simulated).", "invalid_request_error", None),
                401 => (
                    "Incorrect API key provided (simulated by the mock provider).",
                    "invalid_request_error",
                    Some("invalid_api_key"),
                ),
                403 => ("Mock provider: forbidden (simulated).", "invalid_request_error", Some("forbidden")),
                404 => ("Mock provider: not found (simulated).", "invalid_request_error", Some("not_found")),
                429 => (
                    "Rate limit reached for requests (simulated by the mock provider). Please try again in 1s.",
                    "requests",
                    Some("rate_limit_exceeded"),
                ),
                503 => (
                    "The server is overloaded or not ready yet (simulated by the mock provider).",
                    "server_error",
                    None,
                ),
                500..=599 => (
                    "The server had an error while processing your request. Sorry about that! (simulated by the mock provider)",
                    "server_error",
                    None,
                ),
                _ => ("Mock provider: simulated error.", "invalid_request_error", None),
            };
            openai_error(status, message, kind, None, err_code)
        }
        Api::Anthropic => {
            let (kind, message) = match code {
                400 => ("invalid_request_error", "Mock provider: bad request (simulated)."),
                401 => ("authentication_error", "invalid x-api-key (simulated by the mock provider)"),
                403 => (
                    "permission_error",
                    "Your API key does not have permission to use the specified resource (simulated).",
                ),
                404 => ("not_found_error", "Not found (simulated by the mock provider)."),
                413 => ("request_too_large", "Request exceeds the maximum allowed number of bytes (simulated)."),
                429 => (
                    "rate_limit_error",
                    "Number of requests has exceeded your rate limit (simulated by the mock provider).",
                ),
                529 => ("overloaded_error", "Overloaded (simulated by the mock provider)"),
                500..=599 => ("api_error", "Internal server error (simulated by the mock provider)"),
                _ => ("invalid_request_error", "Mock provider: simulated error."),
            };
            anthropic_error(status, kind, message)
        }
        Api::Gemini => google_status_error(status),
        Api::VertexAnthropic => match code {
            401 | 403 | 404 | 429 => google_status_error(status),
            _ => return status_error(Api::Anthropic, status),
        },
        Api::Bedrock => {
            let (kind, message) = bedrock_status_kind(code);
            bedrock_error(status, kind, &format!("{message} (simulated by the mock provider)"))
        }
    };
    if code == 429 {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// 404 for an unknown path, in the provider's shape.
pub fn not_found(api: Api, method: &str, path: &str) -> Response {
    match api {
        Api::OpenAi => openai_error(
            StatusCode::NOT_FOUND,
            &format!("Invalid URL ({method} {path})"),
            "invalid_request_error",
            None,
            None,
        ),
        Api::Anthropic => anthropic_error(StatusCode::NOT_FOUND, "not_found_error", "Not Found"),
        Api::Gemini | Api::VertexAnthropic => {
            google_error(StatusCode::NOT_FOUND, &format!("Method not found: {method} {path}"), "NOT_FOUND", None)
        }
        Api::Bedrock => bedrock_error(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "The requested operation is not recognized by the service.",
        ),
    }
}

/// Parses a request body as a JSON object or returns the provider's 400.
pub fn parse_object(api: Api, body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, Box<Response>> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(Box::new(match api {
            Api::OpenAi => openai_invalid(
                "Invalid request body: expected a JSON object.",
                None,
                None,
            ),
            Api::Anthropic | Api::VertexAnthropic => anthropic_invalid("Input should be a valid dictionary"),
            Api::Gemini => google_invalid("Invalid JSON payload received. Expected an object."),
            Api::Bedrock => bedrock_invalid("Malformed input request, please reformat your input and try again."),
        })),
        Err(err) => Err(Box::new(match api {
            Api::OpenAi => openai_invalid(
                &format!(
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.) ({err})"
                ),
                None,
                None,
            ),
            Api::Anthropic | Api::VertexAnthropic => anthropic_invalid(&format!("There was an issue with your request body: invalid JSON ({err})")),
            Api::Gemini => google_invalid(&format!("Invalid JSON payload received. {err}")),
            Api::Bedrock => bedrock_error(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                &format!("Malformed input request: the body is not valid JSON ({err}), please reformat your input and try again."),
            ),
        })),
    }
}
