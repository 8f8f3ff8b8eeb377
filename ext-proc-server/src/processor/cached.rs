//! Requests the response cache answers: the look-up and the answer served
//! in the client's API, counted, traced and recorded like any other.

use std::time::SystemTime;

use envoy_types::pb::envoy::service::ext_proc::v3::ProcessingResponse;
use tollgate_core::policy::{AuditText, Policy};
use tollgate_core::pricing::usd;
use tollgate_core::usage::Usage;
use tollgate_core::ApiKind;

use super::settle::{audit_unavailable, prompt_text};
use super::state::CacheHints;
use crate::auditing::{pii_decisions, Draft, Outcome};
use crate::cache::answer::Replay;
use crate::cache::key::{self, Tenant};
use crate::cache::store::Tier;
use crate::cache::{self, Answer, Cache, Decision, Skip, SIMILARITY_HEADER, STATUS_HEADER, TIER_HEADER};
use crate::extproc::{immediate, local_reply, metadata, set_header, str_value, BACKEND_HEADER};
use crate::identity::Identity;
use crate::shared::Shared;

/// Look a request up in the cache (a request the cache may not serve is a skip).
#[allow(clippy::too_many_arguments)]
pub(super) async fn look_up(
    cache: &Cache,
    policy: &Policy,
    api: ApiKind,
    json: &serde_json::Value,
    parsed: &tollgate_core::LlmRequest,
    route: &str,
    identity: Option<&Identity>,
    hints: &CacheHints,
) -> Decision {
    let alias = policy.models.get(&parsed.model).and_then(|m| m.cache.as_ref());
    if alias.and_then(|c| c.enabled) == Some(false) {
        return cache.skipped(Skip::Route);
    }
    let tenant = Tenant {
        consumer: identity.map(|i| i.consumer.as_str()),
        team: identity.map(|i| i.team.as_str()),
        namespace: hints.namespace.as_deref(),
    };
    let scope = key::scope(&cache.policy, &tenant);
    match key::keys(&cache.policy, api, json, parsed, route, &scope) {
        Ok(keys) => {
            let threshold = alias.and_then(|c| c.threshold).unwrap_or(cache.policy.semantic.threshold);
            cache.lookup(keys, threshold, hints.control).await
        }
        Err(skip) => cache.skipped(skip),
    }
}

/// Serve a cached answer in the client's API (a stream when it asked for one).
pub(super) async fn answer_from_cache(
    shared: &Shared,
    draft: &Draft,
    parsed: &tollgate_core::LlmRequest,
    answer: &Answer,
    tier: Tier,
    similarity: f32,
) -> ProcessingResponse {
    let created = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let id = if draft.request_id.is_empty() { "cached" } else { draft.request_id.as_str() };
    let replay = Replay { api: draft.api, stream: parsed.stream, include_usage: parsed.include_usage, id, created };
    let body = cache::answer::render(answer, &replay);
    let saved = Usage {
        input_tokens: answer.input_tokens,
        output_tokens: answer.output_tokens,
        total_tokens: answer.input_tokens.saturating_add(answer.output_tokens),
        ..Default::default()
    };
    let saved_usd = usd(shared.prices.cost_micros(&answer.model, &saved));
    shared.metrics.cache_tokens_saved.inc_by(saved.total_tokens);
    shared.metrics.cache_cost_saved.inc_by(saved_usd);
    let (team, took) = (draft.team.as_str(), draft.clock.elapsed());
    shared.metrics.observe(&shared.policy, &answer.model, "cache", team, 200, took, None, 0, 0, 0.0, 1);
    let tier_name = cache::tier_name(tier);
    tracing::info!(request_id = draft.request_id, model = parsed.model, tier = tier_name, similarity, "cache hit");
    if let Some(t) = &shared.telemetry {
        let (saved_tokens, model) = (saved.total_tokens, answer.model.as_str());
        t.record(&crate::otel::RequestSpan::cache_hit(
            draft,
            &parsed.model,
            model,
            saved_tokens,
            tier_name,
            similarity,
        ));
    }
    if let Some(audit) = &shared.audit {
        let outcome = Outcome {
            requested_model: &parsed.model,
            model: &answer.model,
            provider: "cache",
            attempts: 0,
            status: 200,
            ttft: None,
            usage: Usage::default(),
            cost_usd: 0.0,
            decisions: {
                let mut d = serde_json::json!({"cache": {"result": "hit", "tier": tier_name, "similarity": similarity,
                    "tokens_saved": saved.total_tokens, "cost_saved_usd": saved_usd}});
                if let Some(pii) = pii_decisions(parsed.texts.iter().map(|t| t.text.as_str())) {
                    d["pii"] = pii;
                }
                d
            },
            prompt: (audit.text != AuditText::None).then(|| prompt_text(parsed)),
            response: Some(answer.text.clone()),
        };
        if audit.answered(draft, outcome).await.is_err() {
            return immediate(draft.api, &draft.request_id, &audit_unavailable(), &[]);
        }
    }
    let content_type = cache::answer::content_type(&replay);
    let headers = vec![
        set_header(STATUS_HEADER, "hit"),
        set_header(TIER_HEADER, tier_name),
        set_header(SIMILARITY_HEADER, &format!("{similarity:.4}")),
        set_header(BACKEND_HEADER, "cache"),
    ];
    let mut resp = local_reply(200, content_type, &draft.request_id, headers, body, "tollgate_cache_hit".into());
    resp.dynamic_metadata = Some(metadata(vec![
        ("api", str_value(draft.api.as_str())),
        ("model", str_value(&parsed.model)),
        ("provider", str_value("cache")),
        ("cache", str_value("hit")),
    ]));
    resp
}
