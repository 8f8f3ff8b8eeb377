//! The ext_proc phase handlers: plain functions over a per-stream state, so
//! they are tested without a socket. The gRPC service only feeds them.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::{processing_mode, ProcessingMode};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation, processing_request, processing_response, BodyMutation, BodyResponse, CommonResponse,
    HeaderMutation, HeadersResponse, HttpBody, HttpHeaders, ImmediateResponse, ProcessingRequest,
    ProcessingResponse,
};
use envoy_types::pb::google::protobuf::{value, Struct, Value};
use tollgate_core::policy::Policy;
use tollgate_core::request::{parse_request_json, ParsedRequest};
use tollgate_core::{ApiKind, Error};

use crate::config::Credential;

/// Header the sidecar sets so Envoy's route table picks the provider cluster.
pub const PROVIDER_HEADER: &str = "x-tollgate-provider";
/// Response header naming the backend that answered.
pub const BACKEND_HEADER: &str = "x-tollgate-backend";
/// Dynamic metadata namespace.
pub const METADATA_NAMESPACE: &str = "io.tollgate";

/// What every stream shares: the policy and the provider keys.
#[derive(Debug, Clone)]
pub struct Shared {
    pub policy: Arc<Policy>,
    pub credentials: Arc<HashMap<String, Credential>>,
}

/// Where one HTTP stream is in its life.
#[derive(Debug, Default)]
pub enum StreamState {
    #[default]
    Start,
    /// Not AI traffic: every later phase is skipped.
    Passthrough,
    /// AI request headers seen; waiting for the buffered body.
    AwaitingBody { api: ApiKind, request_id: String },
    /// Routed upstream.
    Routed { api: ApiKind, request_id: String, provider: String, model: String },
    /// Answered by the sidecar itself.
    Answered,
}

/// Handle one message of a stream.
pub fn handle(shared: &Shared, state: &mut StreamState, req: ProcessingRequest) -> ProcessingResponse {
    match req.request {
        Some(processing_request::Request::RequestHeaders(h)) => on_request_headers(state, &h),
        Some(processing_request::Request::RequestBody(b)) => on_request_body(shared, state, &b),
        Some(processing_request::Request::ResponseHeaders(_)) => on_response_headers(state),
        Some(processing_request::Request::ResponseBody(_)) => {
            reply(processing_response::Response::ResponseBody(BodyResponse::default()))
        }
        Some(processing_request::Request::RequestTrailers(_)) => {
            reply(processing_response::Response::RequestTrailers(Default::default()))
        }
        Some(processing_request::Request::ResponseTrailers(_)) => {
            reply(processing_response::Response::ResponseTrailers(Default::default()))
        }
        None => ProcessingResponse::default(),
    }
}

/// A header's value, whichever of `value` / `raw_value` Envoy filled.
pub fn header(headers: &HttpHeaders, name: &str) -> Option<String> {
    let map = headers.headers.as_ref()?;
    map.headers.iter().find(|h| h.key.eq_ignore_ascii_case(name)).map(|h| {
        if h.raw_value.is_empty() {
            h.value.clone()
        } else {
            String::from_utf8_lossy(&h.raw_value).into_owned()
        }
    })
}

fn on_request_headers(state: &mut StreamState, h: &HttpHeaders) -> ProcessingResponse {
    let api = match (header(h, ":method").as_deref(), header(h, ":path")) {
        (Some("POST"), Some(path)) => ApiKind::from_path(&path),
        _ => None,
    };
    let Some(api) = api else {
        *state = StreamState::Passthrough;
        let mut resp = reply(processing_response::Response::RequestHeaders(HeadersResponse::default()));
        resp.mode_override = Some(skip_everything());
        return resp;
    };
    let request_id = header(h, "x-tollgate-request-id").or_else(|| header(h, "x-request-id")).unwrap_or_default();
    if h.end_of_stream {
        *state = StreamState::Answered;
        return immediate(api, &request_id, &Error::InvalidRequest("a JSON request body is required".into()));
    }
    *state = StreamState::AwaitingBody { api, request_id };
    reply(processing_response::Response::RequestHeaders(HeadersResponse::default()))
}

fn on_request_body(shared: &Shared, state: &mut StreamState, body: &HttpBody) -> ProcessingResponse {
    let StreamState::AwaitingBody { api, request_id } = std::mem::take(state) else {
        return reply(processing_response::Response::RequestBody(BodyResponse::default()));
    };
    let ParsedRequest { json, request: parsed, .. } = match parse_request_json(api, &body.body) {
        Ok(parsed) => parsed,
        Err(err) => {
            *state = StreamState::Answered;
            return immediate(api, &request_id, &err);
        }
    };
    let route = match shared.policy.route(api, &parsed.model) {
        Ok(route) => route,
        Err(err) => {
            *state = StreamState::Answered;
            return immediate(api, &request_id, &err);
        }
    };
    let mut mutation = HeaderMutation { set_headers: vec![set_header(PROVIDER_HEADER, route.provider)], ..Default::default() };
    if let Some(cred) = shared.credentials.get(route.provider) {
        // The client's own key never reaches the provider.
        mutation.remove_headers = vec!["authorization".into(), "x-api-key".into()];
        mutation.set_headers.push(set_header(cred.header, &cred.value));
    }
    let mut common = CommonResponse { clear_route_cache: true, ..Default::default() };
    if route.model != parsed.model {
        let new_body = with_model(json, route.model);
        mutation.set_headers.push(set_header("content-length", &new_body.len().to_string()));
        common.body_mutation = Some(BodyMutation { mutation: Some(body_mutation::Mutation::Body(new_body)) });
    }
    common.header_mutation = Some(mutation);
    tracing::info!(request_id, api = api.as_str(), model = parsed.model, provider = route.provider, upstream_model = route.model, "routed");
    let mut resp = reply(processing_response::Response::RequestBody(BodyResponse { response: Some(common) }));
    resp.dynamic_metadata = Some(metadata(&[
        ("api", api.as_str()),
        ("model", &parsed.model),
        ("provider", route.provider),
        ("upstream_model", route.model),
    ]));
    *state = StreamState::Routed { api, request_id, provider: route.provider.to_string(), model: route.model.to_string() };
    resp
}

fn on_response_headers(state: &mut StreamState) -> ProcessingResponse {
    let mut common = CommonResponse::default();
    if let StreamState::Routed { provider, .. } = state {
        common.header_mutation =
            Some(HeaderMutation { set_headers: vec![set_header(BACKEND_HEADER, provider)], ..Default::default() });
    }
    reply(processing_response::Response::ResponseHeaders(HeadersResponse { response: Some(common) }))
}

/// The request body with `model` replaced (`json` is always an object).
fn with_model(mut json: serde_json::Value, model: &str) -> Vec<u8> {
    if let Some(obj) = json.as_object_mut() {
        obj.insert("model".into(), serde_json::Value::String(model.to_string()));
    }
    // Serializing a Value cannot fail (its keys are strings).
    serde_json::to_vec(&json).unwrap_or_default()
}

fn reply(response: processing_response::Response) -> ProcessingResponse {
    ProcessingResponse { response: Some(response), ..Default::default() }
}

fn skip_everything() -> ProcessingMode {
    ProcessingMode {
        request_header_mode: processing_mode::HeaderSendMode::Skip as i32,
        response_header_mode: processing_mode::HeaderSendMode::Skip as i32,
        request_body_mode: processing_mode::BodySendMode::None as i32,
        response_body_mode: processing_mode::BodySendMode::None as i32,
        request_trailer_mode: processing_mode::HeaderSendMode::Skip as i32,
        response_trailer_mode: processing_mode::HeaderSendMode::Skip as i32,
    }
}

pub fn set_header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue { key: key.to_string(), raw_value: value.as_bytes().to_vec(), ..Default::default() }),
        ..Default::default()
    }
}

/// An answer from the sidecar itself, in the client API's error shape.
pub fn immediate(api: ApiKind, request_id: &str, err: &Error) -> ProcessingResponse {
    tracing::info!(request_id, error = %err, "answered by the sidecar");
    let mut headers = vec![set_header("content-type", "application/json")];
    if !request_id.is_empty() {
        headers.push(set_header("x-tollgate-request-id", request_id));
    }
    reply(processing_response::Response::ImmediateResponse(ImmediateResponse {
        status: Some(HttpStatus { code: i32::from(err.status()) }),
        headers: Some(HeaderMutation { set_headers: headers, ..Default::default() }),
        body: err.body(api.family()).into_bytes(),
        details: format!("tollgate_{}", err.code()),
        ..Default::default()
    }))
}

fn metadata(fields: &[(&str, &str)]) -> Struct {
    let inner = Struct {
        fields: fields
            .iter()
            .map(|(k, v)| ((*k).to_string(), Value { kind: Some(value::Kind::StringValue((*v).to_string())) }))
            .collect(),
    };
    let mut outer = Struct::default();
    outer.fields.insert(METADATA_NAMESPACE.into(), Value { kind: Some(value::Kind::StructValue(inner)) });
    outer
}

/// Build request headers as Envoy sends them (values in `raw_value`), for tests and tools.
pub fn request_headers(pairs: &[(&str, &str)], end_of_stream: bool) -> HttpHeaders {
    HttpHeaders {
        headers: Some(HeaderMap {
            headers: pairs
                .iter()
                .map(|(k, v)| HeaderValue { key: (*k).into(), raw_value: v.as_bytes().to_vec(), ..Default::default() })
                .collect(),
        }),
        end_of_stream,
        ..Default::default()
    }
}
