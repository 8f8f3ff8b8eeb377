//! The end of a request: the reservation reconciled with what was used,
//! the metrics and span, and the audit record (once per request); and
//! refusals, recorded the same way.

use std::time::SystemTime;

use envoy_types::pb::envoy::service::ext_proc::v3::ProcessingResponse;
use tollgate_core::policy::AuditText;
use tollgate_core::pricing::usd;
use tollgate_core::usage::Usage;
use tollgate_core::Error;

use super::state::{CacheSlot, Routed, StreamState};
use crate::auditing::{Draft, Outcome};
use crate::cache::Recorder;
use crate::extproc::immediate;
use crate::meter::Meter;
use crate::shared::Shared;
use crate::tokens;

/// The prompt as the audit record shows it: one `role: text` line per part.
pub(super) fn prompt_text(parsed: &tollgate_core::LlmRequest) -> String {
    parsed.texts.iter().map(|t| format!("{}: {}", t.role, t.text)).collect::<Vec<_>>().join("\n")
}

/// The answer's usage: as the provider reported it, or else estimated (the
/// prompt counted now if it was not before the request went).
pub(super) fn metered_usage(r: &mut Routed) -> Option<Usage> {
    let (meter, held, uncounted) = (r.meter.as_ref()?, r.held.as_mut()?, &mut r.uncounted);
    Some(meter.usage(|| {
        if let Some(request) = uncounted.take() {
            held.input_tokens = tokens::prompt_tokens(&held.model, &request);
        }
        held.input_tokens
    }))
}

/// The answer has ended: keep it when it is fit.
pub(super) async fn keep_answer(shared: &Shared, slot: &mut CacheSlot, counted: Option<Usage>) {
    let (Some(cache), Some(mut pending)) = (&shared.cache, slot.pending.take()) else {
        return;
    };
    if let Some(mut answer) = pending.recorder.take().and_then(Recorder::finish) {
        if let Some(u) = counted.filter(|_| answer.input_tokens + answer.output_tokens == 0) {
            (answer.input_tokens, answer.output_tokens) = (u.input_tokens, u.output_tokens);
        }
        cache.store(*pending, &answer).await;
    }
}

/// Reconcile the reservation with the usage seen and write the audit record
/// (once per request). `None`: the record could not be written and the audit
/// fail mode is closed, so the answer must not complete.
pub(super) async fn settle(shared: &Shared, r: &mut Routed) -> Option<(Usage, u64)> {
    let usage = metered_usage(r).unwrap_or_default();
    if r.settled {
        return Some((usage, 0));
    }
    r.settled = true;
    let cost = match (&shared.budget, &r.held) {
        (Some(budget), Some(held)) => budget.settle(held, &usage, SystemTime::now()).await,
        _ => 0,
    };
    shared.metrics.observe(
        &shared.policy,
        &r.model,
        &r.provider,
        r.identity.as_ref().map_or("", |i| i.team.as_str()),
        if r.status == 0 { 499 } else { r.status },
        r.draft.clock.elapsed(),
        r.first_byte,
        usage.input_tokens,
        usage.output_tokens,
        usd(cost),
        r.attempts,
    );
    if let Some(t) = &shared.telemetry {
        t.record(&crate::otel::RequestSpan::routed(&shared.policy, r, &usage, usd(cost)));
    }
    if let Some(audit) = &shared.audit {
        let mut decisions = serde_json::Map::new();
        if let Some(i) = &r.identity {
            decisions.insert("auth".into(), serde_json::json!(i.via.as_str()));
        }
        if let Some(held) = r.held.as_ref().filter(|h| h.reservation.is_some()) {
            decisions.insert("reserved_tokens".into(), serde_json::json!(held.tokens_reserved));
        }
        if let Some(t) = &r.translation {
            decisions.insert("translated".into(), serde_json::json!(format!("{:?}", t.dir)));
        }
        if r.fallback {
            decisions.insert("fallback".into(), serde_json::json!(true));
        }
        if r.cut {
            decisions.insert("stream_cut".into(), serde_json::json!("budget"));
        }
        if r.incomplete {
            decisions.insert("incomplete".into(), serde_json::json!(true));
        }
        if let Some(slot) = &r.cache {
            decisions.insert("cache".into(), serde_json::json!({"result": slot.status}));
        }
        if let Some(pii) = &r.pii {
            decisions.insert("pii".into(), pii.clone());
        }
        let mut response = r.meter.as_ref().map(Meter::text);
        if let Some(text) = response.as_deref() {
            let (output, guarded) = shared.review.review_answer(text);
            if let Some(output) = output {
                decisions.insert("output".into(), output);
            }
            // Kept as it left the gateway: what the guard took out stays out.
            if audit.text == AuditText::Masked && guarded.is_some() {
                response = guarded;
            }
        }
        let outcome = Outcome {
            requested_model: &r.requested_model,
            model: &r.model,
            provider: &r.provider,
            attempts: r.attempts,
            status: if r.status == 0 { 499 } else { r.status },
            ttft: r.first_byte,
            usage,
            cost_usd: usd(cost),
            decisions: serde_json::Value::Object(decisions),
            prompt: r.prompt.take(),
            response,
        };
        if audit.answered(&r.draft, outcome).await.is_err() {
            return None;
        }
    }
    Some((usage, cost))
}

/// The gateway could not write an audit record (fail mode closed).
pub(super) fn audit_unavailable() -> Error {
    Error::Unavailable("the gateway cannot write its audit log right now".into())
}

/// Answer a request the gateway refuses, and record the refusal.
pub(super) async fn refuse(
    shared: &Shared,
    state: &mut StreamState,
    draft: &Draft,
    model: &str,
    err: &Error,
    headers: &[(String, String)],
) -> ProcessingResponse {
    *state = StreamState::Answered;
    shared.metrics.refusal(err.code());
    if let Some(t) = &shared.telemetry {
        t.record(&crate::otel::RequestSpan::refused(draft, model, err));
    }
    if let Some(audit) = &shared.audit {
        audit.refused(draft, model, err).await;
    }
    immediate(draft.api, &draft.request_id, err, headers)
}
