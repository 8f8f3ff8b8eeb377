//! One audit record per AI request, written before the request's answer
//! completes (so an answered request always has its record), from what the
//! sidecar saw: who, which model and provider, how it went, what it cost,
//! and the policy decisions taken on the way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tollgate_core::policy::{AuditText, FailMode};
use tollgate_core::report::InspectionReport;
use tollgate_core::usage::Usage;
use tollgate_core::{ApiKind, Error};

use crate::audit::inflight::{Begun, InFlight};
use crate::audit::{rfc3339_millis, AuditError, AuditRecord, AuditWriter};
use crate::identity::Identity;

/// The audit log the sidecar writes to.
#[derive(Debug)]
pub struct AuditSink {
    pub writer: AuditWriter,
    pub text: AuditText,
    pub fail_mode: FailMode,
    /// Records that could not be written.
    pub errors: AtomicU64,
    /// Requests routed and not recorded yet (absent when the journal
    /// cannot be opened: then a kill loses them, as before).
    pub inflight: Option<InFlight>,
}

/// What is known about a request from its first message on.
#[derive(Debug, Clone)]
pub struct Draft {
    pub started: SystemTime,
    pub clock: Instant,
    pub request_id: String,
    /// The client's own `x-request-id`, if it sent one.
    pub client_request_id: Option<String>,
    pub api: ApiKind,
    pub consumer: String,
    pub team: String,
    /// What the review found (firewall verdict for this caller, logged PII).
    pub inspection: Option<InspectionReport>,
    /// The caller's W3C trace context (`traceparent`, `tracestate`), if sent.
    pub trace_context: Vec<(String, String)>,
}

impl Draft {
    pub fn new(api: ApiKind, request_id: &str, identity: Option<&Identity>) -> Draft {
        Draft {
            started: SystemTime::now(),
            clock: Instant::now(),
            request_id: request_id.to_string(),
            client_request_id: None,
            api,
            consumer: identity.map(|i| i.consumer.clone()).unwrap_or_default(),
            team: identity.map(|i| i.team.clone()).unwrap_or_default(),
            inspection: None,
            trace_context: Vec::new(),
        }
    }

    /// `decisions` with the review's findings added: the firewall verdict
    /// and the PII types the policy only logs, next to the masked and
    /// redacted ones the body shows.
    fn decisions(&self, mut decisions: Value) -> Value {
        if let (Some(report), Value::Object(map)) = (&self.inspection, &mut decisions) {
            if let Some(firewall) = &report.firewall {
                map.insert("firewall".into(), json!(firewall));
            }
            if !report.pii.is_empty() {
                let pii = map.entry("pii").or_insert_with(|| json!({}));
                for (kind, done) in &report.pii {
                    for (what, n) in done {
                        pii[kind.as_str()][what.as_str()] = json!(n);
                    }
                }
            }
        }
        decisions
    }

    fn record(&self, requested_model: &str) -> AuditRecord {
        AuditRecord {
            time: rfc3339_millis(self.started),
            request_id: self.request_id.clone(),
            client_request_id: self.client_request_id.clone(),
            consumer: self.consumer.clone(),
            team: self.team.clone(),
            api: self.api.as_str().to_string(),
            requested_model: requested_model.to_string(),
            latency_ms: self.clock.elapsed().as_millis() as u64,
            ..Default::default()
        }
    }
}

/// How a routed request ended, for its record.
#[derive(Debug, Default)]
pub struct Outcome<'a> {
    pub requested_model: &'a str,
    pub model: &'a str,
    pub provider: &'a str,
    pub attempts: u32,
    pub status: u16,
    pub ttft: Option<Duration>,
    pub usage: Usage,
    pub cost_usd: f64,
    pub decisions: Value,
    pub prompt: Option<String>,
    pub response: Option<String>,
}

impl AuditSink {
    /// Record the requests a previous run left in flight (killed before
    /// their answers ended) as incomplete.
    pub async fn left_in_flight(&self, left: Vec<Begun>) {
        for b in left {
            let rec = AuditRecord {
                time: b.time,
                request_id: b.request_id,
                consumer: b.consumer,
                team: b.team,
                api: b.api,
                requested_model: b.requested_model,
                model: b.model,
                provider: b.provider,
                attempts: 1,
                status: 499,
                decisions: json!({"incomplete": true, "interrupted": "sidecar restarted"}),
                ..Default::default()
            };
            let _ = self.write(rec).await;
        }
    }

    /// A request was routed (see [`InFlight`]).
    pub fn begin(&self, draft: &Draft, requested_model: &str, model: &str, provider: &str) {
        if let Some(j) = &self.inflight {
            j.begin(Begun {
                request_id: draft.request_id.clone(),
                time: rfc3339_millis(draft.started),
                api: draft.api.as_str().to_string(),
                consumer: draft.consumer.clone(),
                team: draft.team.clone(),
                requested_model: requested_model.to_string(),
                model: model.to_string(),
                provider: provider.to_string(),
            });
        }
    }

    /// Record a request the gateway refused itself.
    pub async fn refused(&self, draft: &Draft, requested_model: &str, err: &Error) {
        let mut rec = draft.record(requested_model);
        rec.status = err.status();
        rec.decisions = draft.decisions(json!({"refused": {"code": err.code(), "message": err.to_string()}}));
        let _ = self.write(rec).await;
    }

    /// Record a request the filter or Envoy answered before it was routed
    /// (`rule`: the filter's `x-tollgate-blocked-by`).
    pub async fn answered_by_proxy(&self, draft: &Draft, status: u16, rule: Option<&str>) {
        let mut rec = draft.record("");
        rec.status = status;
        rec.decisions = draft.decisions(
            json!({"refused": {"by": "filter", "code": if rule.is_some() { "blocked_by_policy" } else { "answered_by_proxy" }, "rule": rule}}),
        );
        let _ = self.write(rec).await;
    }

    /// Record a routed request. `Err` means the record was not written and
    /// the fail mode is closed: the caller must not complete the answer.
    pub async fn answered(&self, draft: &Draft, o: Outcome<'_>) -> Result<(), AuditError> {
        let written = self.answered_record(draft, o).await;
        if let Some(j) = &self.inflight {
            j.end(&draft.request_id);
        }
        written
    }

    async fn answered_record(&self, draft: &Draft, o: Outcome<'_>) -> Result<(), AuditError> {
        let mut rec = draft.record(o.requested_model);
        rec.model = o.model.to_string();
        rec.provider = o.provider.to_string();
        rec.attempts = o.attempts.max(1);
        rec.status = o.status;
        rec.ttft_ms = o.ttft.map(|d| d.as_millis() as u64);
        rec.input_tokens = o.usage.input_tokens;
        rec.output_tokens = o.usage.output_tokens;
        rec.cached_tokens = o.usage.cached_tokens;
        rec.cost_usd = o.cost_usd;
        rec.decisions = draft.decisions(o.decisions);
        if self.text != AuditText::None {
            rec.prompt = o.prompt;
            rec.response = o.response;
        }
        self.write(rec).await
    }

    async fn write(&self, rec: AuditRecord) -> Result<(), AuditError> {
        match self.writer.append(rec).await {
            Ok(_) => Ok(()),
            Err(err) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %err, "audit record not written");
                match self.fail_mode {
                    FailMode::Open => Ok(()),
                    FailMode::Closed => Err(err),
                }
            }
        }
    }
}

/// The PII the filter handled in a request, as the sidecar sees the body:
/// masked values as placeholders (`<EMAIL_ADDRESS_2>`), redacted ones as
/// `[REDACTED_SECRET]`. Per type: how many distinct values were masked and
/// how many redactions there are. `None` when there are none. (Types the
/// policy only logs leave no trace in the body; blocked requests never reach
/// the sidecar and are recorded with the filter's rule.)
pub fn pii_decisions<'a>(texts: impl IntoIterator<Item = &'a str>) -> Option<Value> {
    static PATTERN: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"<([A-Z][A-Z0-9_]*?)_([0-9]+)>|\[REDACTED_([A-Z][A-Z0-9_]*)\]").ok()
    });
    let re = PATTERN.as_ref()?;
    let mut masked: std::collections::BTreeMap<String, u64> = Default::default();
    let mut redacted: std::collections::BTreeMap<String, u64> = Default::default();
    for text in texts {
        for c in re.captures_iter(text) {
            if let (Some(kind), Some(n)) = (c.get(1), c.get(2).and_then(|n| n.as_str().parse::<u64>().ok())) {
                let e = masked.entry(kind.as_str().to_string()).or_default();
                *e = (*e).max(n);
            } else if let Some(kind) = c.get(3) {
                *redacted.entry(kind.as_str().to_string()).or_default() += 1;
            }
        }
    }
    if masked.is_empty() && redacted.is_empty() {
        return None;
    }
    let mut out = serde_json::Map::new();
    for (kind, n) in masked {
        out.insert(kind, json!({"masked": n}));
    }
    for (kind, n) in redacted {
        let entry = out.entry(kind).or_insert_with(|| json!({}));
        entry["redacted"] = json!(n);
    }
    Some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pii_decisions_count_types_from_placeholders_and_redactions() {
        let texts = [
            "mail <EMAIL_ADDRESS_1> and <EMAIL_ADDRESS_2>, again <EMAIL_ADDRESS_1>",
            "card <CREDIT_CARD_1>, key [REDACTED_SECRET] and [REDACTED_SECRET]",
        ];
        let v = pii_decisions(texts).unwrap_or_default();
        assert_eq!(v, json!({"EMAIL_ADDRESS": {"masked": 2}, "CREDIT_CARD": {"masked": 1}, "SECRET": {"redacted": 2}}));
        assert_eq!(pii_decisions(["plain <b>html</b> and <X_y>"]), None);
    }
}
