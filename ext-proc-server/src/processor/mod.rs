//! The ext_proc phase handlers: plain functions over a per-stream state, so
//! they are tested without a socket. The gRPC service only feeds them.
//!
//! - [`request`]: the request's headers and body: identity, route,
//!   translation, cache look-up, reservation;
//! - [`response`]: the answer's headers and chunks: metering, translation,
//!   budgets that end a stream;
//! - [`cached`]: answers served from the cache;
//! - [`settle`]: the reservation reconciled and the audit record written,
//!   and refusals;
//! - [`state`]: where a stream is in its life.

mod cached;
mod request;
mod response;
mod settle;
pub mod state;

pub use state::{CacheHints, CacheSlot, Routed, StreamState};

use envoy_types::pb::envoy::service::ext_proc::v3::{
    processing_request, processing_response, ProcessingRequest, ProcessingResponse,
};
use tollgate_core::headers::{INSPECTING_STATE, INSPECTION_STATE};
use tollgate_core::report::InspectionReport;

use request::{on_request_body, on_request_headers};
use response::{on_response_body, on_response_headers};

use crate::extproc::{filter_state, reply};
use crate::shared::Shared;

/// Handle one message of a stream.
pub async fn handle(shared: &Shared, state: &mut StreamState, req: ProcessingRequest) -> ProcessingResponse {
    match req.request {
        Some(processing_request::Request::RequestHeaders(h)) => {
            let inspected = filter_state(&req.attributes, INSPECTING_STATE).is_some();
            on_request_headers(shared, state, &h, req.metadata_context.as_ref(), inspected).await
        }
        Some(processing_request::Request::RequestBody(b)) => on_request_body(shared, state, &b).await,
        Some(processing_request::Request::ResponseHeaders(h)) => {
            let report = filter_state(&req.attributes, INSPECTION_STATE).and_then(|json| {
                serde_json::from_str::<InspectionReport>(json)
                    .inspect_err(|e| tracing::warn!("the filter's inspection report is unreadable: {e}"))
                    .ok()
            });
            on_response_headers(shared, state, &h, report).await
        }
        Some(processing_request::Request::ResponseBody(b)) => on_response_body(shared, state, &b).await,
        Some(processing_request::Request::RequestTrailers(_)) => {
            reply(processing_response::Response::RequestTrailers(Default::default()))
        }
        Some(processing_request::Request::ResponseTrailers(_)) => {
            reply(processing_response::Response::ResponseTrailers(Default::default()))
        }
        None => ProcessingResponse::default(),
    }
}

/// The stream ended (or Envoy went away): settle what was not settled, with
/// what was counted.
pub async fn finish(shared: &Shared, state: &mut StreamState) {
    if let StreamState::Routed(r) = state {
        // Not settled yet: the answer never reached its end.
        r.incomplete = !r.settled;
        if r.incomplete {
            shared.metrics.incomplete_answer(&r.provider);
        }
        settle::settle(shared, r).await;
    }
}
