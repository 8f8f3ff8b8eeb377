//! The request phases: who calls, where the request goes, in which shape,
//! whether the cache answers it, and what it may spend.

use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation, processing_response, BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse,
    HttpBody, HttpHeaders, ProcessingResponse,
};
use tollgate_core::headers::{BLOCKED_BY, REQUEST_ID};
use tollgate_core::policy::{AuditText, BaseUrl, ProviderKind};
use tollgate_core::request::{parse_request_json, ParsedRequest};
use tollgate_core::usage::request_stream_usage;
use tollgate_core::{ApiKind, Error};

use super::cached::{answer_from_cache, look_up};
use super::settle::{prompt_text, refuse};
use super::state::{CacheHints, CacheSlot, Routed, StreamState};
use crate::auditing::{pii_decisions, Draft};
use crate::cache::{Control, Decision, NAMESPACE_HEADER};
use crate::credentials::fresh_tokens;
use crate::extproc::{
    header, metadata, new_request_id, reply, set_header, skip_everything, str_value, FALLBACK_PREFIX, PROVIDER_HEADER,
};
use crate::identity::{check_model, identify, Identity};
use crate::shared::Shared;
use crate::strategy::first_target;
use crate::tokens;
use crate::translation::Translation;
use crate::upstream::{provider_headers, with_model};

pub(super) async fn on_request_headers(
    shared: &Shared,
    state: &mut StreamState,
    h: &HttpHeaders,
    metadata: Option<&Metadata>,
    inspected: bool,
) -> ProcessingResponse {
    // Envoy sends a stream's request headers once: a second message must not
    // replace the request (a routed one would lose its record and its
    // reservation). Its gateway headers go all the same.
    if !matches!(state, StreamState::Start) {
        let common =
            CommonResponse { header_mutation: Some(remove_client_gateway_headers(h, false)), ..Default::default() };
        return reply(processing_response::Response::RequestHeaders(HeadersResponse { response: Some(common) }));
    }
    let path = header(h, ":path");
    let api = match (header(h, ":method").as_deref(), path.as_deref()) {
        (Some("POST"), Some(path)) => ApiKind::from_path(path),
        _ => None,
    };
    // The filter names the request (a client's `x-tollgate-request-id` never
    // reaches it: Envoy removes it first); without a filter, the sidecar does.
    let request_id = header(h, REQUEST_ID).filter(|id| inspected && !id.is_empty()).unwrap_or_else(new_request_id);
    let Some(api) = api else {
        if let Some(path) = path.filter(|p| shared.policy.access.passes_through(p)) {
            return pass_through(shared, state, h, metadata, &path, &request_id).await;
        }
        // Not an API path: Envoy's route table refuses it (404).
        *state = StreamState::Passthrough;
        let mut resp = reply(processing_response::Response::RequestHeaders(HeadersResponse::default()));
        resp.mode_override = Some(skip_everything());
        return resp;
    };
    let identity = match identify(&shared.policy, &shared.keys.current(), h, metadata, SystemTime::now()) {
        Ok(identity) => identity,
        Err(err) => return refuse(shared, state, &client_draft(api, &request_id, None, h), "", &err, &[]).await,
    };
    let mut draft = client_draft(api, &request_id, identity.as_ref(), h);
    draft.trace_context = ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| header(h, name).map(|v| (name.to_string(), v)))
        .collect();
    if h.end_of_stream {
        let err = Error::InvalidRequest("a JSON request body is required".into());
        return refuse(shared, state, &draft, "", &err, &[]).await;
    }
    let hints = CacheHints {
        control: Control::parse(header(h, "cache-control").as_deref()),
        namespace: header(h, NAMESPACE_HEADER),
    };
    let in_path = path.as_deref().and_then(ApiKind::path_model);
    *state = StreamState::AwaitingBody { api, request_id, identity, draft, hints, inspected, in_path };
    let common =
        CommonResponse { header_mutation: Some(remove_client_gateway_headers(h, inspected)), ..Default::default() };
    reply(processing_response::Response::RequestHeaders(HeadersResponse { response: Some(common) }))
}

/// The audit draft of a request, with the client's own `x-request-id` kept
/// apart from the gateway's id.
pub(super) fn client_draft(api: ApiKind, request_id: &str, identity: Option<&Identity>, h: &HttpHeaders) -> Draft {
    let mut draft = Draft::new(api, request_id, identity);
    draft.client_request_id = header(h, "x-request-id").filter(|id| !id.is_empty() && id != request_id);
    draft
}

/// Remove every `x-tollgate-*` request header a client sent (but the cache
/// namespace, which only narrows the caller's own cache partition): only
/// the gateway sets them. Envoy's first filter already removed the ones the
/// route reads; this covers every other name.
/// `inspected`: the filter set the request id, which stays.
pub(super) fn remove_client_gateway_headers(h: &HttpHeaders, inspected: bool) -> HeaderMutation {
    const PREFIX: &str = "x-tollgate-";
    let ours = |k: &str| k.get(..PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(PREFIX));
    let kept = |k: &str| k.eq_ignore_ascii_case(NAMESPACE_HEADER) || (inspected && k.eq_ignore_ascii_case(REQUEST_ID));
    let remove_headers = h
        .headers
        .iter()
        .flat_map(|m| m.headers.iter())
        .filter(|v| ours(&v.key) && !kept(&v.key))
        .map(|v| v.key.to_ascii_lowercase())
        .collect();
    HeaderMutation { remove_headers, ..Default::default() }
}

/// A path the policy forwards as is (`access.passthrough`): the caller must
/// pass `access.require` like any API call; the request goes to the default
/// provider with its key (the client's credential removed), neither
/// inspected nor metered.
pub(super) async fn pass_through(
    shared: &Shared,
    state: &mut StreamState,
    h: &HttpHeaders,
    metadata: Option<&Metadata>,
    path: &str,
    request_id: &str,
) -> ProcessingResponse {
    // Refusals are shaped for the API family the client speaks.
    let api = if header(h, "anthropic-version").is_some() { ApiKind::AnthropicMessages } else { ApiKind::OpenAiChat };
    let identity = match identify(&shared.policy, &shared.keys.current(), h, metadata, SystemTime::now()) {
        Ok(identity) => identity,
        Err(err) => return refuse(shared, state, &client_draft(api, request_id, None, h), "", &err, &[]).await,
    };
    let Some(provider) = shared.policy.default_provider() else {
        let err = Error::Unavailable("the gateway has no provider".into());
        return refuse(shared, state, &client_draft(api, request_id, identity.as_ref(), h), "", &err, &[]).await;
    };
    tracing::info!(request_id, path, provider, "pass-through");
    *state = StreamState::Passthrough;
    let mut mutation = remove_client_gateway_headers(h, false);
    mutation.set_headers.push(set_header(PROVIDER_HEADER, provider));
    provider_headers(&mut mutation, shared.credentials.get(provider), identity.is_some(), None);
    let common = CommonResponse { header_mutation: Some(mutation), clear_route_cache: true, ..Default::default() };
    let mut resp = reply(processing_response::Response::RequestHeaders(HeadersResponse { response: Some(common) }));
    resp.mode_override = Some(skip_everything());
    resp
}

pub(super) async fn on_request_body(shared: &Shared, state: &mut StreamState, body: &HttpBody) -> ProcessingResponse {
    // A body message in any other state (another chunk, or one after the
    // request was routed or answered) leaves the state as it is.
    if !matches!(state, StreamState::AwaitingBody { .. }) {
        return reply(processing_response::Response::RequestBody(BodyResponse::default()));
    }
    let StreamState::AwaitingBody { api, request_id, identity, mut draft, hints, inspected, in_path } =
        std::mem::take(state)
    else {
        return reply(processing_response::Response::RequestBody(BodyResponse::default()));
    };
    let ParsedRequest { mut json, request: mut parsed, .. } = match parse_request_json(api, &body.body) {
        Ok(parsed) => parsed,
        Err(err) => return refuse(shared, state, &draft, "", &err, &[]).await,
    };
    if let Some((model, stream)) = in_path {
        (parsed.model, parsed.stream) = (model, stream);
    }
    let model = parsed.model.clone();
    if let Err(err) = check_model(&shared.policy, identity.as_ref(), &parsed.model) {
        return refuse(shared, state, &draft, &model, &err, &[]).await;
    }
    // The audit record's inspection report: the filter's, sent with the
    // response, when the filter inspected the request; the sidecar's own
    // when it scans anyway (thresholds per caller) or the filter did not.
    let report_here = shared.audit.is_some() && (!inspected || shared.review.per_caller());
    let findings = shared.review.review(&shared.policy, identity.as_ref(), &parsed, report_here);
    draft.inspection = findings.report;
    if let Some(err @ Error::Blocked { rule, .. }) = &findings.blocked {
        return refuse(shared, state, &draft, &model, err, &[(BLOCKED_BY.into(), rule.clone())]).await;
    }
    // A request the sidecar answers itself (a refusal, a cache hit) is
    // recorded before any response brings the filter's report: scan here.
    let answered_here = |mut draft: Draft| {
        if shared.audit.is_some() && !report_here {
            draft.inspection = shared.review.review(&shared.policy, identity.as_ref(), &parsed, true).report;
        }
        draft
    };
    let route = match shared.policy.route(api, &parsed.model) {
        Ok(route) => route,
        Err(err) => return refuse(shared, state, &answered_here(draft), &model, &err, &[]).await,
    };
    let cache = match &shared.cache {
        Some(cache) => {
            let route_name = format!("{}/{}", route.provider, route.model);
            match look_up(cache, &shared.policy, api, &json, &parsed, &route_name, identity.as_ref(), &hints).await {
                Decision::Hit { answer, tier, similarity } => {
                    let draft = answered_here(draft);
                    // A hit is a request like any other on the request limits.
                    if let Some(budget) = &shared.budget {
                        let (who, now) = (identity.as_ref(), SystemTime::now());
                        if let Err(refused) = budget.count_hit(&shared.policy, who, now).await {
                            return refuse(shared, state, &draft, &model, &refused.error, &refused.headers).await;
                        }
                    }
                    *state = StreamState::Answered;
                    return answer_from_cache(shared, &draft, &parsed, &answer, tier, similarity).await;
                }
                Decision::Miss(pending) => Some(CacheSlot { status: "miss", pending }),
                Decision::Skip(_, pending) => Some(CacheSlot { status: "skip", pending }),
            }
        }
        None => None,
    };
    // Vertex AI: an access token that will not expire mid-request, for the
    // route or for every target an attempt may take.
    if let Err(err) = fresh_tokens(&shared.policy, &shared.credentials, route.provider, &parsed.model).await {
        return refuse(shared, state, &answered_here(draft), &model, &err, &[]).await;
    }
    // An alias with several targets: Envoy walks them (each attempt shaped
    // by the sidecar as an upstream filter), so nothing changes here.
    let fallback = shared.policy.fallback(&parsed.model).is_some();
    let direction = if fallback { None } else { shared.policy.translation(api, route.provider, route.api) };
    // Without the filter in front nothing asks an OpenAI stream for its
    // usage: ask, and drop the extra chunk for the client (`stream_usage`).
    let ask_usage = !inspected && direction.is_none() && !fallback && request_stream_usage(api, &mut json);
    // Under a token or cost limit a non-streamed answer must not outgrow its
    // reservation: a request without an output cap gets the reserved one.
    let output_cap = shared.budget.as_ref().and_then(|b| b.output_cap(&shared.policy, identity.as_ref(), &parsed));
    let capped = output_cap.is_some_and(|tokens| crate::budget::cap_output(api, &mut json, tokens));
    // The provider's request body when it changes: translated, the model
    // renamed, the stream asked for its usage, or the output capped.
    // (Anthropic on Vertex AI: also the provider's own changes.)
    let target = shared.policy.providers.get(route.provider).filter(|p| !fallback && p.adjusts_body(route.api));
    let new_body = match (direction, target) {
        (Some(dir), _) => match dir.request(&json, route.model) {
            Ok(mut v) => {
                if let Some(p) = target {
                    p.adjust_body(route.api, &mut v);
                }
                Some(serde_json::to_vec(&v).unwrap_or_default())
            }
            Err(err) => return refuse(shared, state, &answered_here(draft), &model, &err, &[]).await,
        },
        (None, Some(p)) => {
            let mut v = json;
            p.adjust_body(route.api, &mut v);
            Some(serde_json::to_vec(&v).unwrap_or_default())
        }
        // A Gemini or Bedrock body names no model: the path does.
        (None, None) if route.model != parsed.model && !fallback && !api.model_in_path() => {
            Some(with_model(json, route.model))
        }
        (None, None) if ask_usage || capped => Some(serde_json::to_vec(&json).unwrap_or_default()),
        (None, None) => None,
    };
    // The prompt is counted now only where the count is used before the
    // answer: a limit to reserve against, or an alias's context windows.
    // Otherwise only if the provider reports no usage (`metered_usage`).
    let count_now = fallback || shared.budget.as_ref().is_some_and(|b| b.limits(&shared.policy, identity.as_ref()));
    let held = match &shared.budget {
        Some(budget) => {
            if let Some(alias) = shared.policy.fallback(&parsed.model) {
                let targets = alias.targets.iter().map(|t| t.model.as_str());
                if let Err(refused) = budget.check_prices(&shared.policy, identity.as_ref(), targets) {
                    let draft = answered_here(draft);
                    return refuse(shared, state, &draft, &model, &refused.error, &refused.headers).await;
                }
            }
            let input = if count_now { tokens::prompt_tokens(route.model, &parsed) } else { 0 };
            let max_output = if api.answers_text() { parsed.max_tokens } else { Some(0) };
            match budget
                .reserve(&shared.policy, identity.as_ref(), route.model, input, max_output, SystemTime::now())
                .await
            {
                Ok(held) => Some(held),
                Err(refused) => {
                    let draft = answered_here(draft);
                    return refuse(shared, state, &draft, &model, &refused.error, &refused.headers).await;
                }
            }
        }
        None => None,
    };
    let provider_value = match shared.policy.fallback(&parsed.model) {
        Some(alias) => {
            let tokens = held.as_ref().map_or(0, |h| h.tokens_reserved);
            let first = first_target(&parsed.model, alias, &shared.prices, &shared.latencies, tokens);
            format!("{FALLBACK_PREFIX}{}/{first}", parsed.model)
        }
        None => route.provider.to_string(),
    };
    let mut mutation =
        HeaderMutation { set_headers: vec![set_header(PROVIDER_HEADER, &provider_value)], ..Default::default() };
    // With fallback, each attempt gets its target's key upstream.
    let credential = if fallback { None } else { shared.credentials.get(route.provider) };
    provider_headers(&mut mutation, credential, identity.is_some(), direction);
    let mut common = CommonResponse { clear_route_cache: true, ..Default::default() };
    let provider = shared.policy.providers.get(route.provider);
    let path_named = route.api.model_in_path()
        || provider.is_some_and(|p| matches!(p.kind, ProviderKind::AzureOpenai | ProviderKind::VertexAi));
    if !fallback && (direction.is_some() || path_named) {
        let path = provider
            .map_or_else(|| route.api.path().to_string(), |p| p.request_path(route.api, route.model, parsed.stream));
        mutation.set_headers.push(set_header(":path", &path));
        // Bedrock with SigV4: the signature covers the host, the path and the body.
        if let (Some(p), Some(keys)) = (provider, credential.and_then(|c| c.aws.as_ref())) {
            let signed = BaseUrl::parse(&p.base_url).and_then(|url| {
                let body = new_body.as_deref().unwrap_or(&body.body);
                let headers = keys.sign(&url.authority(), &url.url(&path), body, SystemTime::now())?;
                Ok((url.authority(), headers))
            });
            match signed {
                Ok((authority, headers)) => {
                    mutation.set_headers.push(set_header(":authority", &authority));
                    mutation.set_headers.extend(headers.iter().map(|(k, v)| set_header(k, v)));
                }
                Err(message) => {
                    let err = Error::Unavailable(format!("provider `{}`: {message}", route.provider));
                    return refuse(shared, state, &answered_here(draft), &model, &err, &[]).await;
                }
            }
        }
    }
    if let Some(new_body) = new_body {
        mutation.set_headers.push(set_header("content-length", &new_body.len().to_string()));
        common.body_mutation = Some(BodyMutation { mutation: Some(body_mutation::Mutation::Body(new_body)) });
    }
    common.header_mutation = Some(mutation);
    let (consumer, team) = identity.as_ref().map_or(("", ""), |i| (i.consumer.as_str(), i.team.as_str()));
    tracing::info!(
        request_id,
        api = api.as_str(),
        model = parsed.model,
        provider = route.provider,
        upstream_model = route.model,
        upstream_api = route.api.as_str(),
        consumer,
        team,
        "routed"
    );
    let mut resp = reply(processing_response::Response::RequestBody(BodyResponse { response: Some(common) }));
    let mut fields = vec![
        ("api", str_value(api.as_str())),
        ("model", str_value(&parsed.model)),
        ("provider", str_value(route.provider)),
        ("upstream_model", str_value(route.model)),
        ("upstream_api", str_value(route.api.as_str())),
    ];
    if let Some(i) = &identity {
        fields.push(("consumer", str_value(&i.consumer)));
        fields.push(("team", str_value(&i.team)));
        fields.push(("auth", str_value(i.via.as_str())));
    }
    resp.dynamic_metadata = Some(metadata(fields));
    let prompt = (shared.audit.as_ref().is_some_and(|a| a.text != AuditText::None)).then(|| prompt_text(&parsed));
    let pii = shared.audit.as_ref().and_then(|_| pii_decisions(parsed.texts.iter().map(|t| t.text.as_str())));
    let requested_model = parsed.model.clone();
    let mut routed = Box::new(Routed {
        api,
        draft,
        requested_model,
        prompt,
        uncounted: None,
        status: 0,
        attempts: 1,
        first_byte: None,
        fallback,
        upstream_api: if fallback { api } else { route.api },
        translation: direction.map(|dir| Translation::new(dir, &parsed.model)),
        ask_usage,
        usage_chunk: None,
        request_id,
        provider: route.provider.to_string(),
        model: route.model.to_string(),
        identity,
        held,
        meter: None,
        meter_translated: false,
        cut: false,
        settled: false,
        incomplete: false,
        check_json: false,
        stream: parsed.stream,
        cache,
        pii,
    });
    if !count_now && routed.held.is_some() {
        routed.uncounted = Some(Box::new(parsed));
    }
    if let Some(audit) = &shared.audit {
        audit.begin(&routed.draft, &routed.requested_model, &routed.model, &routed.provider);
    }
    *state = StreamState::Routed(routed);
    resp
}
