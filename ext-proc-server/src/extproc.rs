//! ext_proc messages: reading what Envoy sends (headers, the filter's
//! state) and building what the sidecar answers (header and body
//! mutations, immediate responses, dynamic metadata), and the names the
//! rendered Envoy configuration shares with the sidecar.

use std::collections::HashMap;
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::{processing_mode, ProcessingMode};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    processing_response, HeaderMutation, HttpHeaders, ImmediateResponse, ProcessingResponse,
};
use envoy_types::pb::google::protobuf::{value, Struct, Value};
use tollgate_core::headers::REQUEST_ID;
use tollgate_core::{ApiKind, Error};

/// Header the sidecar sets so Envoy's route table picks the provider cluster.
pub const PROVIDER_HEADER: &str = tollgate_core::headers::PROVIDER;

/// Response header naming the backend that answered.
pub const BACKEND_HEADER: &str = "x-tollgate-backend";

/// `PROVIDER_HEADER` value prefix selecting an alias's fallback route.
pub const FALLBACK_PREFIX: &str = "@";

/// Dynamic metadata namespace.
pub const METADATA_NAMESPACE: &str = "io.tollgate";

/// The key under which Envoy's ext_proc filter sends the values of its
/// `request_attributes` and `response_attributes`.
const ATTRIBUTES_KEY: &str = "envoy.filters.http.ext_proc";

/// The ext_proc attribute (a CEL expression) reading the filter state the
/// filter set under `name`.
pub fn filter_state_attribute(name: &str) -> String {
    format!("filter_state['wasm.{name}']")
}

/// The filter state `name` as sent in a message's attributes.
pub fn filter_state<'a>(attributes: &'a HashMap<String, Struct>, name: &str) -> Option<&'a str> {
    let value = attributes.get(ATTRIBUTES_KEY)?.fields.get(&filter_state_attribute(name))?;
    match value.kind.as_ref()? {
        value::Kind::StringValue(s) => Some(s),
        _ => None,
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

/// A new request id (the sidecar's own, when no filter named the request).
pub fn new_request_id() -> String {
    let mut bytes = [0u8; 12];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        bytes.copy_from_slice(&nanos.to_le_bytes()[..12]);
    }
    format!("tg-{}", hex::encode(bytes))
}

pub fn reply(response: processing_response::Response) -> ProcessingResponse {
    ProcessingResponse { response: Some(response), ..Default::default() }
}

pub fn skip_everything() -> ProcessingMode {
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
pub fn immediate(api: ApiKind, request_id: &str, err: &Error, extra: &[(String, String)]) -> ProcessingResponse {
    tracing::info!(request_id, error = %err, "answered by the sidecar");
    let extra = extra.iter().map(|(k, v)| set_header(k, v)).collect();
    let (status, details) = (err.status(), format!("tollgate_{}", err.code()));
    local_reply(status, "application/json", request_id, extra, err.body(api.family()).into_bytes(), details)
}

/// A response the sidecar answers itself: `content-type`, the request id
/// (when there is one) and `extra` headers.
pub fn local_reply(
    status: u16,
    content_type: &str,
    request_id: &str,
    extra: Vec<HeaderValueOption>,
    body: Vec<u8>,
    details: String,
) -> ProcessingResponse {
    let mut headers = vec![set_header("content-type", content_type)];
    if !request_id.is_empty() {
        headers.push(set_header(REQUEST_ID, request_id));
    }
    headers.extend(extra);
    reply(processing_response::Response::ImmediateResponse(ImmediateResponse {
        status: Some(HttpStatus { code: i32::from(status) }),
        headers: Some(HeaderMutation { set_headers: headers, ..Default::default() }),
        body,
        details,
        ..Default::default()
    }))
}

pub fn str_value(s: &str) -> Value {
    Value { kind: Some(value::Kind::StringValue(s.to_string())) }
}

pub fn num_value(n: f64) -> Value {
    Value { kind: Some(value::Kind::NumberValue(n)) }
}

pub fn metadata(fields: Vec<(&str, Value)>) -> Struct {
    let inner = Struct { fields: fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect() };
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
