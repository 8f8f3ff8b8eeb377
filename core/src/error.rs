//! The core error type and its mapping to what a client sees: an HTTP status
//! and an error body shaped like the provider API the client called.

use crate::api::ApiFamily;

/// Everything that can go wrong in core logic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("request body is not valid json: {0}")]
    InvalidJson(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("server-sent event exceeds the limit of {limit} bytes")]
    SseEventTooLarge { limit: usize },
    #[error("invalid policy at `{path}`: {message}")]
    Policy { path: String, message: String },
    #[error("model `{0}` is not configured on this gateway")]
    UnknownModel(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A policy rule refused the request (`rule` is the rule or entity id).
    #[error("{message}")]
    Blocked { rule: String, message: String },
    /// Per-request inspection state outgrew its configured bound.
    #[error("inspection state exceeds the limit of {limit} bytes")]
    InspectionLimit { limit: usize },
    /// Missing, unknown, revoked or expired credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not use this model.
    #[error("model `{model}` is not allowed for {who}")]
    ModelNotAllowed { model: String, who: String },
    /// A rate limit or budget is exhausted.
    #[error("{0}")]
    RateLimited(String),
    /// A component the gateway needs is down and its fail mode is closed.
    #[error("{0}")]
    Unavailable(String),
    /// The provider answered with something the gateway cannot inspect.
    #[error("{0}")]
    InvalidUpstream(String),
}

impl Error {
    /// HTTP status the client receives for this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::InvalidJson(_) | Error::InvalidRequest(_) => 400,
            Error::UnknownModel(_) => 404,
            Error::Blocked { .. } => 403,
            Error::UnsupportedMediaType(_) => 415,
            Error::InspectionLimit { .. } => 413,
            Error::BodyTooLarge { .. } => 413,
            Error::SseEventTooLarge { .. } => 502,
            Error::Policy { .. } => 500,
            Error::Unauthorized(_) => 401,
            Error::ModelNotAllowed { .. } => 403,
            Error::RateLimited(_) => 429,
            Error::Unavailable(_) => 503,
            Error::InvalidUpstream(_) => 502,
        }
    }

    /// Machine-readable code, stable across releases.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidJson(_) => "invalid_json",
            Error::InvalidRequest(_) => "invalid_request",
            Error::BodyTooLarge { .. } => "request_too_large",
            Error::SseEventTooLarge { .. } => "upstream_event_too_large",
            Error::Policy { .. } => "invalid_policy",
            Error::UnknownModel(_) => "model_not_found",
            Error::Blocked { .. } => "blocked_by_policy",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::InspectionLimit { .. } => "inspection_limit",
            Error::Unauthorized(_) => "invalid_api_key",
            Error::ModelNotAllowed { .. } => "model_not_allowed",
            Error::RateLimited(_) => "rate_limit_exceeded",
            Error::Unavailable(_) => "service_unavailable",
            Error::InvalidUpstream(_) => "upstream_invalid_response",
        }
    }

    /// The error body for a client of `family`.
    pub fn body(&self, family: ApiFamily) -> String {
        error_body(family, self.status(), &self.to_string(), self.code())
    }
}

/// The provider's error `type` for an HTTP status.
fn error_type(family: ApiFamily, status: u16) -> &'static str {
    match (family, status) {
        (ApiFamily::OpenAi, 401) => "authentication_error",
        (ApiFamily::OpenAi, 403) => "permission_error",
        (ApiFamily::OpenAi, 404) => "not_found_error",
        (ApiFamily::OpenAi, 429) => "rate_limit_error",
        (ApiFamily::OpenAi, s) if s >= 500 => "server_error",
        (ApiFamily::OpenAi, _) => "invalid_request_error",
        (ApiFamily::Anthropic, 401) => "authentication_error",
        (ApiFamily::Anthropic, 403) => "permission_error",
        (ApiFamily::Anthropic, 404) => "not_found_error",
        (ApiFamily::Anthropic, 413) => "request_too_large",
        (ApiFamily::Anthropic, 429) => "rate_limit_error",
        (ApiFamily::Anthropic, 529) => "overloaded_error",
        (ApiFamily::Anthropic, s) if s >= 500 => "api_error",
        (ApiFamily::Anthropic, _) => "invalid_request_error",
        (ApiFamily::Gemini, s) => google_status(s),
        (ApiFamily::Bedrock, 401) => "UnrecognizedClientException",
        (ApiFamily::Bedrock, 408 | 504) => "ModelTimeoutException",
        (ApiFamily::Bedrock, 403) => "AccessDeniedException",
        (ApiFamily::Bedrock, 404) => "ResourceNotFoundException",
        (ApiFamily::Bedrock, 429) => "ThrottlingException",
        (ApiFamily::Bedrock, 503) => "ServiceUnavailableException",
        (ApiFamily::Bedrock, s) if s < 500 => "ValidationException",
        (ApiFamily::Bedrock, _) => "InternalServerException",
    }
}

/// The `google.rpc.Code` name Google's APIs send with an HTTP status.
pub fn google_status(status: u16) -> &'static str {
    match status {
        400 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        408 | 504 => "DEADLINE_EXCEEDED",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

/// An error body in the provider's shape:
/// OpenAI `{"error":{"message","type","param","code"}}`,
/// Anthropic `{"type":"error","error":{"type","message"}}`,
/// Gemini `{"error":{"code","message","status"}}`.
pub fn error_body(family: ApiFamily, status: u16, message: &str, code: &str) -> String {
    let kind = error_type(family, status);
    let value = match family {
        ApiFamily::OpenAi => serde_json::json!({
            "error": {"message": message, "type": kind, "param": null, "code": code}
        }),
        ApiFamily::Anthropic => serde_json::json!({
            "type": "error",
            "error": {"type": kind, "message": message}
        }),
        // Google's shape; the machine-readable code as an `ErrorInfo` reason.
        // Bedrock names the error type in `x-amzn-errortype`; `__type` too.
        ApiFamily::Bedrock => serde_json::json!({"message": message, "__type": kind, "reason": code}),
        ApiFamily::Gemini => serde_json::json!({
            "error": {"code": status, "message": message, "status": google_status(status), "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": code, "domain": "tollgate"}
            ]}
        }),
    };
    value.to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn openai_shape() {
        let e = Error::BodyTooLarge { limit: 10 };
        let v: serde_json::Value = serde_json::from_str(&e.body(ApiFamily::OpenAi)).unwrap();
        assert_eq!(e.status(), 413);
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "request_too_large");
        assert!(v["error"]["message"].as_str().unwrap().contains("10 bytes"));
    }

    #[test]
    fn anthropic_shape() {
        let e = Error::BodyTooLarge { limit: 10 };
        let v: serde_json::Value = serde_json::from_str(&e.body(ApiFamily::Anthropic)).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "request_too_large");
        let e = Error::InvalidJson("eof".into());
        let v: serde_json::Value = serde_json::from_str(&e.body(ApiFamily::Anthropic)).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(e.status(), 400);
    }
}
