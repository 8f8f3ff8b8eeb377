//! The ext_proc phase handlers: plain functions over a per-stream state, so
//! they are tested without a socket. The gRPC service only feeds them.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, HeaderValueOption, Metadata};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::{processing_mode, ProcessingMode};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation, processing_request, processing_response, BodyMutation, BodyResponse, CommonResponse, HeaderMutation,
    HeadersResponse, HttpBody, HttpHeaders, ImmediateResponse, ProcessingRequest, ProcessingResponse,
};
use envoy_types::pb::google::protobuf::{value, Struct, Value};
use tollgate_core::headers::{BLOCKED_BY, INSPECTING_STATE, INSPECTION_STATE, REQUEST_ID};
use tollgate_core::policy::Policy;
use tollgate_core::policy::{AuditText, BaseUrl, FailMode, ProviderKind};
use tollgate_core::pricing::usd;
use tollgate_core::report::InspectionReport;
use tollgate_core::request::{parse_request_json, ParsedRequest};
use tollgate_core::translate::Direction;
use tollgate_core::usage::{request_stream_usage, Usage};
use tollgate_core::{ApiFamily, ApiKind, Error, SseEvent};

use crate::auditing::{pii_decisions, AuditSink, Draft, Outcome};
use crate::budget::{admitted_headers, Budget, Held};
use crate::cache::answer::Replay;
use crate::cache::key::{self, Tenant};
use crate::cache::store::Tier;
use crate::cache::{
    self, Answer, Cache, Control, Decision, Pending, Recorder, Skip, NAMESPACE_HEADER, SIMILARITY_HEADER,
    STATUS_HEADER, TIER_HEADER,
};
use crate::config::Credential;
use crate::identity::{check_model, identify, Identity};
use crate::keys::LiveKeys;
use crate::meter::Meter;
use crate::metrics::Metrics;
use crate::review::Review;
use crate::strategy::{first_target, Latencies};
use crate::stream_usage::UsageChunkDrop;
use crate::tokens;
use crate::translation::Translation;
use crate::upstream::MODEL_HEADER;
use tollgate_core::pricing::PriceTable;

/// The Messages API version sent to Anthropic on translated requests.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Header the sidecar sets so Envoy's route table picks the provider cluster.
pub const PROVIDER_HEADER: &str = tollgate_core::headers::PROVIDER;
/// Response header naming the backend that answered.
pub const BACKEND_HEADER: &str = "x-tollgate-backend";
/// `PROVIDER_HEADER` value prefix selecting an alias's fallback route.
pub const FALLBACK_PREFIX: &str = "@";
/// Dynamic metadata namespace.
pub const METADATA_NAMESPACE: &str = "io.tollgate";

/// What every stream shares: the policy, the provider keys, the virtual
/// keys and the limiter.
#[derive(Clone)]
pub struct Shared {
    pub policy: Arc<Policy>,
    pub credentials: Arc<HashMap<String, Credential>>,
    pub keys: LiveKeys,
    /// Limits, budgets and spend records (absent only in handler tests).
    pub budget: Option<Budget>,
    pub prices: Arc<PriceTable>,
    /// Recent latency of alias targets, for the least-latency strategy.
    pub latencies: Arc<Latencies>,
    /// The audit log (absent when the policy turns it off, and in handler tests).
    pub audit: Option<Arc<AuditSink>>,
    pub metrics: Arc<Metrics>,
    /// The response cache (absent unless the policy enables it).
    pub cache: Option<Arc<Cache>>,
    /// OTLP span export (absent unless the policy's `telemetry.otlp` is set).
    pub telemetry: Option<Arc<crate::otel::Telemetry>>,
    /// The filter's prompt checks, run again for per-caller thresholds (and
    /// the audit, when no filter inspected the request).
    pub review: Arc<Review>,
}

impl Shared {
    /// No virtual keys and no limiter.
    pub fn new(policy: Policy, credentials: HashMap<String, Credential>) -> Shared {
        Shared {
            prices: Arc::new(PriceTable::new(&policy.pricing)),
            review: Arc::new(Review::new(&policy)),
            policy: Arc::new(policy),
            credentials: Arc::new(credentials),
            keys: LiveKeys::default(),
            budget: None,
            latencies: Arc::default(),
            audit: None,
            metrics: Arc::default(),
            cache: None,
            telemetry: None,
        }
    }
}

/// Where one HTTP stream is in its life (one per stream, held by its task:
/// the variants' sizes matter little).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Default)]
pub enum StreamState {
    #[default]
    Start,
    /// Not AI traffic: every later phase is skipped.
    Passthrough,
    /// AI request headers seen; waiting for the buffered body.
    AwaitingBody {
        api: ApiKind,
        request_id: String,
        identity: Option<Identity>,
        draft: Draft,
        hints: CacheHints,
        /// The filter inspects the request and reports with the response.
        inspected: bool,
        /// The model and streaming flag of an API that puts them in the
        /// path (Gemini).
        in_path: Option<(String, bool)>,
    },
    /// Routed upstream.
    Routed(Box<Routed>),
    /// Answered by the sidecar itself.
    Answered,
}

/// What the client asked of the cache in its request headers.
#[derive(Debug, Default)]
pub struct CacheHints {
    pub control: Control,
    pub namespace: Option<String>,
}

/// The cache's part of a routed request.
#[derive(Debug)]
pub struct CacheSlot {
    /// `miss` or `skip` (the response header's value).
    pub status: &'static str,
    /// Keeps the answer when it is fit (absent for skips and `no-store`).
    pub pending: Option<Box<Pending>>,
}

/// A request on its way to (or back from) a provider.
#[derive(Debug)]
pub struct Routed {
    pub api: ApiKind,
    /// The audit record being built.
    pub draft: Draft,
    pub requested_model: String,
    /// The prompt text as it left the gateway (for the audit record).
    pub prompt: Option<String>,
    /// The request, kept when its prompt was not counted before it went:
    /// counted only if the provider reports no usage.
    pub uncounted: Option<Box<tollgate_core::LlmRequest>>,
    pub status: u16,
    pub attempts: u32,
    pub first_byte: Option<Duration>,
    /// Envoy tries the alias's targets; the upstream phase names the one that answered.
    pub fallback: bool,
    /// The API the provider is called with (differs from `api` when translated).
    pub upstream_api: ApiKind,
    /// Present when the provider speaks the other API family.
    pub translation: Option<Translation>,
    /// The sidecar asked the stream for its usage (no filter in front).
    pub ask_usage: bool,
    /// Drops the usage chunk the client did not ask for (a streamed 2xx).
    pub usage_chunk: Option<UsageChunkDrop>,
    pub request_id: String,
    pub provider: String,
    pub model: String,
    pub identity: Option<Identity>,
    /// The live reservation (absent without a limiter).
    pub held: Option<Held>,
    /// Counts the answer as it passes.
    pub meter: Option<Meter>,
    /// The meter reads the translated answer (a Bedrock event stream,
    /// which is not SSE, counted as the client's stream).
    pub meter_translated: bool,
    /// The stream crossed a budget and was ended for the client.
    pub cut: bool,
    pub settled: bool,
    /// The exchange ended before the answer did (the provider reset or
    /// stalled, the client went away): the record says so.
    pub incomplete: bool,
    /// A JSON answer the output guard must read, held whole (Envoy's
    /// BUFFERED mode) to be refused with a 502 when it is not JSON, while
    /// its status line can still change.
    pub check_json: bool,
    /// The client asked for a stream.
    pub stream: bool,
    pub cache: Option<CacheSlot>,
    /// PII the filter masked or redacted in the request (for the audit record).
    pub pii: Option<serde_json::Value>,
}

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
        settle(shared, r).await;
    }
}

/// The key under which Envoy's ext_proc filter sends the values of its
/// `request_attributes` and `response_attributes`.
const ATTRIBUTES_KEY: &str = "envoy.filters.http.ext_proc";

/// The ext_proc attribute (a CEL expression) reading the filter state the
/// filter set under `name`.
pub fn filter_state_attribute(name: &str) -> String {
    format!("filter_state['wasm.{name}']")
}

/// The filter state `name` as sent in a message's attributes.
fn filter_state<'a>(attributes: &'a HashMap<String, Struct>, name: &str) -> Option<&'a str> {
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

async fn on_request_headers(
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

/// A new request id (the sidecar's own, when no filter named the request).
pub fn new_request_id() -> String {
    let mut bytes = [0u8; 12];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        bytes.copy_from_slice(&nanos.to_le_bytes()[..12]);
    }
    format!("tg-{}", hex::encode(bytes))
}

/// The audit draft of a request, with the client's own `x-request-id` kept
/// apart from the gateway's id.
fn client_draft(api: ApiKind, request_id: &str, identity: Option<&Identity>, h: &HttpHeaders) -> Draft {
    let mut draft = Draft::new(api, request_id, identity);
    draft.client_request_id = header(h, "x-request-id").filter(|id| !id.is_empty() && id != request_id);
    draft
}

/// Remove every `x-tollgate-*` request header a client sent (but the cache
/// namespace, which only narrows the caller's own cache partition): only
/// the gateway sets them. Envoy's first filter already removed the ones the
/// route reads; this covers every other name.
/// `inspected`: the filter set the request id, which stays.
fn remove_client_gateway_headers(h: &HttpHeaders, inspected: bool) -> HeaderMutation {
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
async fn pass_through(
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

async fn on_request_body(shared: &Shared, state: &mut StreamState, body: &HttpBody) -> ProcessingResponse {
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
    if let Err(err) = fresh_tokens(shared, route.provider, &parsed.model).await {
        return refuse(shared, state, &answered_here(draft), &model, &err, &[]).await;
    }
    // An alias with several targets: Envoy walks them (each attempt shaped
    // by the sidecar as an upstream filter), so nothing changes here.
    let fallback = shared.policy.fallback(&parsed.model).is_some();
    let direction = if fallback { None } else { route.translation(api) };
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
            let max_output = if api == ApiKind::OpenAiEmbeddings { Some(0) } else { parsed.max_tokens };
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

async fn on_response_headers(
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
                    p.recorder = Some(Recorder::new(r.api, sse));
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
            && r.upstream_api != ApiKind::OpenAiEmbeddings
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

async fn on_response_body(shared: &Shared, state: &mut StreamState, b: &HttpBody) -> ProcessingResponse {
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

/// Look a request up in the cache (a request the cache may not serve is a skip).
#[allow(clippy::too_many_arguments)]
async fn look_up(
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
async fn answer_from_cache(
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
    let content_type = if parsed.stream { "text/event-stream" } else { "application/json" };
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

/// The prompt as the audit record shows it: one `role: text` line per part.
fn prompt_text(parsed: &tollgate_core::LlmRequest) -> String {
    parsed.texts.iter().map(|t| format!("{}: {}", t.role, t.text)).collect::<Vec<_>>().join("\n")
}

/// The answer's usage: as the provider reported it, or else estimated (the
/// prompt counted now if it was not before the request went).
fn metered_usage(r: &mut Routed) -> Option<Usage> {
    let (meter, held, uncounted) = (r.meter.as_ref()?, r.held.as_mut()?, &mut r.uncounted);
    Some(meter.usage(|| {
        if let Some(request) = uncounted.take() {
            held.input_tokens = tokens::prompt_tokens(&held.model, &request);
        }
        held.input_tokens
    }))
}

/// The answer has ended: keep it when it is fit.
async fn keep_answer(shared: &Shared, slot: &mut CacheSlot, counted: Option<Usage>) {
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
async fn settle(shared: &Shared, r: &mut Routed) -> Option<(Usage, u64)> {
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
fn audit_unavailable() -> Error {
    Error::Unavailable("the gateway cannot write its audit log right now".into())
}

/// Answer a request the gateway refuses, and record the refusal.
async fn refuse(
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

/// The event that ends a stream with an error, in the client API's stream shape.
fn stream_error(api: ApiKind, err: &Error) -> Vec<u8> {
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

fn usage_metadata(u: &Usage, cost: u64) -> Struct {
    metadata(vec![
        ("input_tokens", num_value(u.input_tokens as f64)),
        ("output_tokens", num_value(u.output_tokens as f64)),
        ("cached_tokens", num_value(u.cached_tokens as f64)),
        ("total_tokens", num_value(u.total_tokens as f64)),
        ("cost_usd", num_value(usd(cost))),
    ])
}

/// The request body with `model` replaced (`json` is always an object).
pub fn with_model(mut json: serde_json::Value, model: &str) -> Vec<u8> {
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

/// Headers every provider request needs: the provider's key in place of the
/// client's (a gateway credential, when `authenticated`, is removed even
/// without a provider key), and for a translated request the other API's
/// version headers.
/// Renew the access tokens (Vertex AI) of `provider`, or of every target of
/// the alias `model`, that are missing or near their end.
async fn fresh_tokens(shared: &Shared, provider: &str, model: &str) -> Result<(), Error> {
    let targets: Vec<&str> = match shared.policy.fallback(model) {
        Some(alias) => alias.targets.iter().map(|t| t.provider.as_str()).collect(),
        None => vec![provider],
    };
    for name in targets {
        if let Some(tokens) = shared.credentials.get(name).and_then(|c| c.tokens.as_ref()) {
            if let Err(message) = tokens.fresh().await {
                tracing::warn!(provider = name, error = %message, "no access token");
                return Err(Error::Unavailable(format!("provider `{name}` has no access token: {message}")));
            }
        }
    }
    Ok(())
}

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

/// An answer from the sidecar itself, in the client API's error shape.
pub fn immediate(api: ApiKind, request_id: &str, err: &Error, extra: &[(String, String)]) -> ProcessingResponse {
    tracing::info!(request_id, error = %err, "answered by the sidecar");
    let extra = extra.iter().map(|(k, v)| set_header(k, v)).collect();
    let (status, details) = (err.status(), format!("tollgate_{}", err.code()));
    local_reply(status, "application/json", request_id, extra, err.body(api.family()).into_bytes(), details)
}

/// A response the sidecar answers itself: `content-type`, the request id
/// (when there is one) and `extra` headers.
fn local_reply(
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

fn str_value(s: &str) -> Value {
    Value { kind: Some(value::Kind::StringValue(s.to_string())) }
}

fn num_value(n: f64) -> Value {
    Value { kind: Some(value::Kind::NumberValue(n)) }
}

fn metadata(fields: Vec<(&str, Value)>) -> Struct {
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
