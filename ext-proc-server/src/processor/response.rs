//! The answer's phases: its headers (which target answered, what to watch)
//! and its chunks as they pass (metered, translated, recorded for the
//! cache, ended when a budget runs out).

use std::time::SystemTime;

use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::{processing_mode, ProcessingMode};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation, processing_response, BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse,
    HttpBody, HttpHeaders, ProcessingResponse,
};
use envoy_types::pb::google::protobuf::Struct;
use tollgate_core::headers::BLOCKED_BY;
use tollgate_core::policy::FailMode;
use tollgate_core::pricing::usd;
use tollgate_core::report::InspectionReport;
use tollgate_core::usage::Usage;
use tollgate_core::{ApiFamily, ApiKind, Error, SseEvent};

use super::settle::{audit_unavailable, keep_answer, metered_usage, settle};
use super::state::StreamState;
use crate::budget::admitted_headers;
use crate::cache::answer::Framing;
use crate::cache::{Recorder, STATUS_HEADER};
use crate::extproc::{
    header, immediate, local_reply, metadata, num_value, reply, set_header, str_value, BACKEND_HEADER,
};
use crate::meter::Meter;
use crate::shared::Shared;
use crate::stream_usage::UsageChunkDrop;
use crate::translation::Translation;
use crate::upstream::MODEL_HEADER;

pub(super) async fn on_response_headers(
    shared: &Shared,
    state: &mut StreamState,
    h: &HttpHeaders,
    mut report: Option<InspectionReport>,
) -> ProcessingResponse {
    let mut common = CommonResponse::default();
    let mut mode = None;
    if let StreamState::AwaitingBody { draft, .. } = state {
        // Answered before the sidecar saw the body: the filter (or Envoy)
        // refused the request, e.g. the prompt firewall. Record it too.
        let mut draft = draft.clone();
        draft.inspection = report.take().filter(|r| !r.is_empty());
        *state = StreamState::Answered;
        let status: u16 = header(h, ":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        let rule = header(h, BLOCKED_BY);
        shared.metrics.refusal(if rule.is_some() { "blocked_by_policy" } else { "answered_by_proxy" });
        if let Some(t) = &shared.telemetry {
            t.record(&crate::otel::RequestSpan::answered_by_proxy(&draft, status, rule.as_deref()));
        }
        if let Some(audit) = &shared.audit {
            audit.answered_by_proxy(&draft, status, rule.as_deref()).await;
        }
    }
    if let StreamState::Routed(r) = state {
        if r.draft.inspection.is_none() {
            r.draft.inspection = report.filter(|r| !r.is_empty());
        }
        let mut mutation = HeaderMutation::default();
        if r.fallback {
            // The target that answered, as the upstream phase reported it.
            if let Some(provider) = header(h, BACKEND_HEADER) {
                r.provider = provider;
            }
            if let Some(model) = header(h, MODEL_HEADER) {
                if let Some(held) = r.held.as_mut() {
                    held.model = model.clone();
                }
                r.model = model;
            }
            mutation.remove_headers.push(MODEL_HEADER.into());
        } else {
            mutation.set_headers.push(set_header(BACKEND_HEADER, &r.provider));
        }
        if let Some(reservation) = r.held.as_ref().and_then(|h| h.reservation.as_ref()) {
            mutation.set_headers.extend(admitted_headers(reservation).iter().map(|(k, v)| set_header(k, v)));
        }
        let status: u16 = header(h, ":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        r.status = status;
        r.attempts = header(h, "x-envoy-attempt-count").and_then(|v| v.parse().ok()).unwrap_or(1);
        let content_type = header(h, "content-type").unwrap_or_default();
        // Bedrock streams AWS event-stream frames; translated, the client gets SSE.
        let frames = content_type.contains("application/vnd.amazon.eventstream") && r.translation.is_some();
        let sse = content_type.contains("text/event-stream") || frames;
        let mut record = false;
        if let Some(slot) = r.cache.as_mut() {
            mutation.set_headers.push(set_header(STATUS_HEADER, slot.status));
            match slot.pending.as_mut() {
                Some(p) if status == 200 && !h.end_of_stream => {
                    // What the client receives: a Bedrock client's own stream is frames.
                    let framing = match (sse, content_type.contains("application/vnd.amazon.eventstream")) {
                        (true, _) => Framing::Sse,
                        (false, true) => Framing::Frames,
                        (false, false) => Framing::Json,
                    };
                    p.recorder = Some(Recorder::new(r.api, framing, &r.model));
                    record = true;
                }
                _ => slot.pending = None,
            }
        }
        let meter = (200..300).contains(&status) && shared.budget.is_some() && !h.end_of_stream;
        if let Some(t) = r.translation.as_mut() {
            t.start(status, sse, header(h, "x-amzn-errortype"));
            // The translated body has another length.
            mutation.remove_headers.push("content-length".into());
            if frames {
                mutation.set_headers.push(set_header("content-type", "text/event-stream"));
            }
        } else if r.ask_usage && sse && (200..300).contains(&status) && !h.end_of_stream {
            r.usage_chunk = Some(UsageChunkDrop::default());
            mutation.remove_headers.push("content-length".into());
        }
        if meter {
            // Counted live only where a budget can end the stream.
            let live = r.held.as_ref().is_some_and(|h| h.reservation.is_some());
            r.meter_translated = frames;
            let api = if frames { r.api } else { r.upstream_api };
            r.meter = Some(Meter::new(api, &r.model, sse, live));
        } else {
            // Nothing to count: an error answer or no body. Release the reservation now.
            if settle(shared, r).await.is_none() {
                return immediate(r.api, &r.request_id.clone(), &audit_unavailable(), &[]);
            }
        }
        // Failing closed, a JSON answer the filter's guard could not read
        // is refused here, where its status can still become a 502.
        r.check_json = (200..300).contains(&status)
            && !sse
            && !r.stream
            && !h.end_of_stream
            && r.upstream_api.answers_text()
            && shared.policy.fail_mode.filter == FailMode::Closed
            && shared.review.guards_output();
        if (meter || record || r.check_json || r.translation.is_some() || r.usage_chunk.is_some()) && !h.end_of_stream {
            // See the answer as it passes, chunk by chunk (whole when checked).
            let body_mode = if r.check_json {
                processing_mode::BodySendMode::Buffered
            } else {
                processing_mode::BodySendMode::Streamed
            };
            mode = Some(ProcessingMode {
                request_header_mode: processing_mode::HeaderSendMode::Skip as i32,
                response_header_mode: processing_mode::HeaderSendMode::Skip as i32,
                request_body_mode: processing_mode::BodySendMode::None as i32,
                response_body_mode: body_mode as i32,
                request_trailer_mode: processing_mode::HeaderSendMode::Skip as i32,
                response_trailer_mode: processing_mode::HeaderSendMode::Skip as i32,
            });
        }
        common.header_mutation = Some(mutation);
    }
    let mut resp = reply(processing_response::Response::ResponseHeaders(HeadersResponse { response: Some(common) }));
    resp.mode_override = mode;
    if let StreamState::Routed(r) = state {
        if r.fallback {
            resp.dynamic_metadata =
                Some(metadata(vec![("provider", str_value(&r.provider)), ("upstream_model", str_value(&r.model))]));
        }
    }
    resp
}

pub(super) async fn on_response_body(shared: &Shared, state: &mut StreamState, b: &HttpBody) -> ProcessingResponse {
    let mut common = CommonResponse::default();
    let mut meta = None;
    if let StreamState::Routed(r) = state {
        let was_cut = r.cut;
        if r.first_byte.is_none() {
            r.first_byte = Some(r.draft.clock.elapsed());
        }
        if r.check_json && serde_json::from_slice::<serde::de::IgnoredAny>(&b.body).is_err() {
            tracing::warn!(request_id = r.request_id, provider = r.provider, "the provider's answer is not JSON");
            shared.metrics.provider_invalid_answer(&r.provider);
            r.status = 502;
            settle(shared, r).await;
            let message = "the provider's answer is not valid JSON and cannot be inspected; it was withheld";
            return immediate(r.api, &r.request_id.clone(), &Error::InvalidUpstream(message.into()), &[]);
        }
        if let Some(meter) = r.meter.as_mut().filter(|_| !r.meter_translated) {
            meter.feed(&b.body);
        }
        // Held whole before its status left: an answer the output guard
        // blocks becomes a 502 in the client's shape (the filter, which
        // sees it once the status has gone, could only replace the body).
        if let Some(rule) = r.check_json.then(|| shared.review.blocks_json(r.upstream_api, &b.body)).flatten() {
            tracing::warn!(request_id = r.request_id, rule, "answer blocked by the output guard");
            // The filter, which counts the streams it ends, never sees this one.
            shared.metrics.refusal("output_blocked");
            r.status = 502;
            settle(shared, r).await;
            let message = format!("the answer was withheld by the output guard (`{rule}`)");
            let body = tollgate_core::error_body(r.api.family(), 502, &message, "output_blocked");
            let details = "tollgate_output_blocked".to_string();
            return local_reply(502, "application/json", &r.request_id.clone(), Vec::new(), body.into_bytes(), details);
        }
        // What the client gets for this chunk, when it differs from the provider's bytes.
        let mut out = match (r.translation.as_mut(), r.usage_chunk.as_mut()) {
            (Some(t), _) => Some(t.chunk(&b.body, b.end_of_stream)),
            (None, Some(drop)) => Some(drop.chunk(&b.body, b.end_of_stream)),
            (None, None) => None,
        };
        if let (Some(meter), Some(out), true) = (r.meter.as_mut(), out.as_ref(), r.meter_translated) {
            meter.feed(out);
        }
        if r.translation.as_mut().is_some_and(|t| std::mem::take(&mut t.unreadable)) {
            shared.metrics.provider_stream_unreadable(&r.provider);
        }
        if r.translation.as_mut().is_some_and(Translation::take_safety_block) {
            shared.metrics.provider_safety_block(&r.provider);
        }
        if was_cut && !b.end_of_stream {
            // The client already has its final event. Stop the provider too:
            // an immediate response now resets the stream, which closes the
            // upstream request, so it stops producing (and billing) tokens.
            settle(shared, r).await;
            let error = Error::RateLimited("stream ended by a budget".into());
            return immediate(r.api, &r.request_id.clone(), &error, &[]);
        } else if was_cut {
            out = Some(Vec::new());
        } else if let (Some(budget), Some(held), Some(meter)) = (&shared.budget, r.held.as_mut(), r.meter.as_ref()) {
            if meter.is_stream() {
                if let Err(refused) = budget.grow(held, meter.output_tokens(), SystemTime::now()).await {
                    tracing::info!(request_id = r.request_id, error = %refused.error, "stream crossed a limit: ending it");
                    r.cut = true;
                    let mut body = out.take().unwrap_or_else(|| b.body.clone());
                    body.extend_from_slice(&stream_error(r.api, &refused.error));
                    out = Some(body);
                }
            }
        }
        if let Some(slot) = r.cache.as_mut() {
            if r.cut {
                slot.pending = None;
            } else if let Some(recorder) = slot.pending.as_mut().and_then(|p| p.recorder.as_mut()) {
                recorder.feed(out.as_deref().unwrap_or(&b.body));
            }
        }
        if b.end_of_stream && r.cache.is_some() {
            // The meter's count, for answers that report no usage of their own.
            let counted = metered_usage(r);
            if let Some(slot) = r.cache.as_mut() {
                keep_answer(shared, slot, counted).await;
            }
        }
        if let Some(body) = out {
            let mutation = if body.is_empty() {
                body_mutation::Mutation::ClearBody(true)
            } else {
                body_mutation::Mutation::Body(body)
            };
            common.body_mutation = Some(BodyMutation { mutation: Some(mutation) });
        }
        if b.end_of_stream && r.meter.is_some() {
            // The record is written before the answer's last bytes are let go.
            let Some((usage, cost)) = settle(shared, r).await else {
                return immediate(r.api, &r.request_id.clone(), &audit_unavailable(), &[]);
            };
            meta = Some(usage_metadata(&usage, cost));
        }
    }
    let mut resp = reply(processing_response::Response::ResponseBody(BodyResponse { response: Some(common) }));
    resp.dynamic_metadata = meta;
    resp
}

/// The event that ends a stream with an error, in the client API's stream shape.
pub(super) fn stream_error(api: ApiKind, err: &Error) -> Vec<u8> {
    let body = err.body(api.family());
    let mut out = Vec::new();
    match api.family() {
        ApiFamily::OpenAi => {
            SseEvent { data: body, ..Default::default() }.write_to(&mut out);
            SseEvent { data: "[DONE]".into(), ..Default::default() }.write_to(&mut out);
        }
        // Google sends an error object as a stream's last event.
        ApiFamily::Gemini | ApiFamily::Bedrock => SseEvent { data: body, ..Default::default() }.write_to(&mut out),
        ApiFamily::Anthropic => {
            SseEvent { event: Some("error".into()), data: body, ..Default::default() }.write_to(&mut out)
        }
    }
    out
}

pub(super) fn usage_metadata(u: &Usage, cost: u64) -> Struct {
    metadata(vec![
        ("input_tokens", num_value(u.input_tokens as f64)),
        ("output_tokens", num_value(u.output_tokens as f64)),
        ("cached_tokens", num_value(u.cached_tokens as f64)),
        ("total_tokens", num_value(u.total_tokens as f64)),
        ("cost_usd", num_value(usd(cost))),
    ])
}
