//! The sidecar as an upstream ext_proc: with fallback, Envoy's retries walk
//! an alias's targets, and each attempt passes through the target cluster's
//! upstream ext_proc, which the sidecar answers here. It shapes the attempt
//! for its target (model, translation, path, host, provider key) and
//! translates the answer back, so every target sees a request it
//! understands while Envoy keeps its retries, timeouts and circuit breakers.

use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::{processing_mode, ProcessingMode};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation, processing_request, processing_response, BodyMutation, BodyResponse, CommonResponse, HeaderMutation,
    HeadersResponse, HttpBody, HttpHeaders, ProcessingRequest, ProcessingResponse,
};
use std::time::Instant;

use tollgate_core::policy::{BaseUrl, ProviderKind};
use tollgate_core::{ApiKind, Error};

use tollgate_core::translate::Direction;
use tollgate_core::ApiFamily;

use crate::credentials::Credential;
use crate::extproc::{header, immediate, reply, set_header, BACKEND_HEADER};
use crate::shared::Shared;
use crate::strategy::FAILURE_PENALTY;
use crate::translation::Translation;

/// gRPC metadata naming the alias an attempt stream is for.
pub const TARGET_METADATA: &str = "x-tollgate-target";
/// Response header naming the model that answered (read by the downstream phase).
pub const MODEL_HEADER: &str = "x-tollgate-upstream-model";

/// Where one attempt is.
#[derive(Debug, Default)]
pub enum AttemptState {
    #[default]
    Start,
    Headers {
        api: ApiKind,
        path: String,
        /// Which target this attempt is for (attempt N goes to target N-1).
        index: usize,
    },
    Sent {
        provider: String,
        model: String,
        translation: Option<Translation>,
        /// The target's index in the alias and when the attempt left, for latency.
        target: usize,
        started: Instant,
    },
    /// Response headers seen; the body (if translated) still flows.
    Answered {
        provider: String,
        model: String,
        translation: Option<Translation>,
    },
    Done,
}

/// `alias/first` → (alias, first target).
pub fn parse_variant(value: &str) -> Option<(String, usize)> {
    let (alias, first) = value.rsplit_once('/')?;
    Some((alias.to_string(), first.parse().ok()?))
}

/// The attempt stream ended: an attempt that never got an answer (reset,
/// refused connection, timeout) counts against its target's latency.
pub fn finish(shared: &Shared, variant: &(String, usize), state: &AttemptState) {
    if let AttemptState::Sent { target, started, .. } = state {
        shared.latencies.record(&variant.0, *target, started.elapsed().max(FAILURE_PENALTY));
    }
}

pub fn handle(
    shared: &Shared,
    variant: &(String, usize),
    state: &mut AttemptState,
    req: ProcessingRequest,
) -> ProcessingResponse {
    use processing_request::Request as R;
    use processing_response::Response as P;
    match req.request {
        Some(R::RequestHeaders(h)) => {
            let path = header(&h, ":path").unwrap_or_default();
            // Envoy's retries move to the next priority, that is the next target.
            let attempt: usize = header(&h, "x-envoy-attempt-count").and_then(|v| v.parse().ok()).unwrap_or(1);
            match ApiKind::from_path(&path) {
                Some(api) => *state = AttemptState::Headers { api, path, index: attempt.saturating_sub(1) },
                None => *state = AttemptState::Done,
            }
            reply(P::RequestHeaders(HeadersResponse::default()))
        }
        Some(R::RequestBody(b)) => on_body(shared, variant, state, &b),
        Some(R::ResponseHeaders(h)) => on_response_headers(shared, &variant.0, state, &h),
        Some(R::ResponseBody(b)) => {
            let mut common = CommonResponse::default();
            if let AttemptState::Answered { translation: Some(t), .. } = state {
                let out = t.chunk(&b.body, b.end_of_stream);
                let mutation = if out.is_empty() {
                    body_mutation::Mutation::ClearBody(true)
                } else {
                    body_mutation::Mutation::Body(out)
                };
                common.body_mutation = Some(BodyMutation { mutation: Some(mutation) });
            }
            reply(P::ResponseBody(BodyResponse { response: Some(common) }))
        }
        Some(R::RequestTrailers(_)) => reply(P::RequestTrailers(Default::default())),
        Some(R::ResponseTrailers(_)) => reply(P::ResponseTrailers(Default::default())),
        None => ProcessingResponse::default(),
    }
}

fn on_body(shared: &Shared, variant: &(String, usize), state: &mut AttemptState, b: &HttpBody) -> ProcessingResponse {
    let alias = variant.0.as_str();
    let AttemptState::Headers { api, path, index: attempt } = std::mem::take(state) else {
        *state = AttemptState::Done;
        return reply(processing_response::Response::RequestBody(BodyResponse::default()));
    };
    let policy = &shared.policy;
    let Some(route) = policy.models.get(alias) else {
        return immediate(api, "", &Error::UnknownModel(alias.to_string()), &[]);
    };
    // Attempt N takes the N-th target of this variant's order.
    let order = route.attempt_order(variant.1.min(route.targets.len().saturating_sub(1)), &shared.prices);
    let index = order.get(attempt).or(order.last()).copied().unwrap_or(0);
    let Some(t) = route.targets.get(index) else {
        return immediate(api, "", &Error::UnknownModel(alias.to_string()), &[]);
    };
    let json: serde_json::Value = match serde_json::from_slice(&b.body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => return immediate(api, "", &Error::InvalidJson("the request body is not a JSON object".into()), &[]),
    };
    let Some(upstream_api) = policy.reach(api, &t.provider, &t.model) else {
        let err = Error::InvalidRequest(format!("provider `{}` cannot serve {} requests", t.provider, api.as_str()));
        return immediate(api, "", &err, &[]);
    };
    let Some((provider, url)) =
        policy.providers.get(&t.provider).and_then(|p| Some((p, BaseUrl::parse(&p.base_url).ok()?)))
    else {
        return immediate(api, "", &Error::UnknownModel(t.model.clone()), &[]);
    };
    let direction = policy.translation(api, &t.provider, upstream_api);
    let stream = json.get("stream").and_then(serde_json::Value::as_bool).unwrap_or(false);
    let client_model = json.get("model").and_then(|m| m.as_str()).unwrap_or_default().to_string();
    let body = match direction {
        Some(dir) => match dir.request(&json, &t.model) {
            Ok(mut v) => {
                provider.adjust_body(upstream_api, &mut v);
                serde_json::to_vec(&v).unwrap_or_default()
            }
            Err(err) => return immediate(api, "", &err, &[]),
        },
        None if provider.adjusts_body(upstream_api) => {
            let mut v = json;
            provider.adjust_body(upstream_api, &mut v);
            serde_json::to_vec(&v).unwrap_or_default()
        }
        // A Gemini or Bedrock body names no model: the path does.
        None if api.model_in_path() => b.body.clone(),
        None => with_model(json, &t.model),
    };
    // The client's own path when nothing changes it (keeps any query).
    let path_named =
        upstream_api.model_in_path() || matches!(provider.kind, ProviderKind::AzureOpenai | ProviderKind::VertexAi);
    let upstream_path =
        if direction.is_none() && !path_named { path } else { provider.request_path(upstream_api, &t.model, stream) };
    let mut mutation = HeaderMutation {
        set_headers: vec![
            set_header(":path", &format!("{}{upstream_path}", url.path)),
            set_header(":authority", &url.authority()),
            set_header("content-length", &body.len().to_string()),
        ],
        ..Default::default()
    };
    // The client's gateway credential was removed in the downstream phase.
    let credential = shared.credentials.get(&t.provider);
    provider_headers(&mut mutation, credential, false, direction);
    if let Some(keys) = credential.and_then(|c| c.aws.as_ref()) {
        match keys.sign(&url.authority(), &url.url(&upstream_path), &body, std::time::SystemTime::now()) {
            Ok(signed) => mutation.set_headers.extend(signed.iter().map(|(k, v)| set_header(k, v))),
            Err(message) => return immediate(api, "", &Error::Unavailable(message), &[]),
        }
    }
    tracing::info!(alias, attempt = attempt + 1, provider = t.provider, model = t.model, "attempt");
    *state = AttemptState::Sent {
        provider: t.provider.clone(),
        model: t.model.clone(),
        translation: direction.map(|dir| Translation::new(dir, &client_model)),
        target: index,
        started: Instant::now(),
    };
    let common = CommonResponse {
        header_mutation: Some(mutation),
        body_mutation: Some(BodyMutation { mutation: Some(body_mutation::Mutation::Body(body)) }),
        ..Default::default()
    };
    reply(processing_response::Response::RequestBody(BodyResponse { response: Some(common) }))
}

fn on_response_headers(shared: &Shared, alias: &str, state: &mut AttemptState, h: &HttpHeaders) -> ProcessingResponse {
    let mut common = CommonResponse::default();
    let mut mode = None;
    if let AttemptState::Sent { provider, model, translation, target, started } = state {
        let status: u16 = header(h, ":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        let failed = status == 429 || status >= 500;
        let took = if failed { started.elapsed().max(FAILURE_PENALTY) } else { started.elapsed() };
        shared.latencies.record(alias, *target, took);
        let mut mutation = HeaderMutation {
            set_headers: vec![set_header(BACKEND_HEADER, provider), set_header(MODEL_HEADER, model)],
            ..Default::default()
        };
        if let Some(t) = translation.as_mut() {
            let content_type = header(h, "content-type").unwrap_or_default();
            let frames = content_type.contains("application/vnd.amazon.eventstream");
            t.start(status, frames || content_type.contains("text/event-stream"), header(h, "x-amzn-errortype"));
            mutation.remove_headers.push("content-length".into());
            if frames {
                mutation.set_headers.push(set_header("content-type", "text/event-stream"));
            }
            if !h.end_of_stream {
                mode = Some(ProcessingMode {
                    response_header_mode: processing_mode::HeaderSendMode::Skip as i32,
                    response_body_mode: processing_mode::BodySendMode::Streamed as i32,
                    request_trailer_mode: processing_mode::HeaderSendMode::Skip as i32,
                    response_trailer_mode: processing_mode::HeaderSendMode::Skip as i32,
                    ..Default::default()
                });
            }
        }
        common.header_mutation = Some(mutation);
    }
    if let AttemptState::Sent { .. } = state {
        // Answered: not counted again when the stream ends.
        if let AttemptState::Sent { provider, model, translation, .. } = std::mem::take(state) {
            *state = AttemptState::Answered { provider, model, translation };
        }
    }
    let mut resp = reply(processing_response::Response::ResponseHeaders(HeadersResponse { response: Some(common) }));
    resp.mode_override = mode;
    resp
}

/// The Messages API version sent to Anthropic on translated requests.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Headers every provider request needs: the provider's key in place of the
/// client's (a gateway credential, when `authenticated`, is removed even
/// without a provider key), and for a translated request the other API's
/// version headers.
pub fn provider_headers(
    mutation: &mut HeaderMutation,
    credential: Option<&Credential>,
    authenticated: bool,
    direction: Option<Direction>,
) {
    if credential.is_some() || authenticated {
        // The client's own key never reaches the provider.
        // Nor a client's own AWS signature headers.
        mutation.remove_headers.extend(
            [
                "authorization",
                "x-api-key",
                "x-goog-api-key",
                "x-amz-date",
                "x-amz-security-token",
                "x-amz-content-sha256",
            ]
            .map(String::from),
        );
    }
    if let Some(value) = credential.and_then(Credential::header_value) {
        mutation.set_headers.push(set_header(credential.map_or("authorization", |c| c.header), &value));
    }
    match direction.map(Direction::provider) {
        Some(ApiFamily::Anthropic) => mutation.set_headers.push(set_header("anthropic-version", ANTHROPIC_VERSION)),
        Some(ApiFamily::OpenAi | ApiFamily::Gemini | ApiFamily::Bedrock) => {
            mutation.remove_headers.extend(["anthropic-version".into(), "anthropic-beta".into()])
        }
        None => {}
    }
}

/// The request body with `model` replaced (`json` is always an object).
pub fn with_model(mut json: serde_json::Value, model: &str) -> Vec<u8> {
    if let Some(obj) = json.as_object_mut() {
        obj.insert("model".into(), serde_json::Value::String(model.to_string()));
    }
    // Serializing a Value cannot fail (its keys are strings).
    serde_json::to_vec(&json).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(parse_variant("smart/1"), Some(("smart".into(), 1)));
        assert_eq!(parse_variant("a/b/0"), Some(("a/b".into(), 0)));
        assert_eq!(parse_variant("smart"), None);
        let url = |s| BaseUrl::parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url("https://api.openai.com").authority(), "api.openai.com");
        assert_eq!(url("http://127.0.0.1:8080/x").authority(), "127.0.0.1:8080");
        assert_eq!(url("http://[::1]:80").authority(), "[::1]");
        assert_eq!(
            url("http://127.0.0.1:8080/x").url("/model/a%3Ab/converse"),
            "http://127.0.0.1:8080/x/model/a%3Ab/converse"
        );
    }
}
