//! Export to an OpenTelemetry collector (`telemetry.otlp` in the policy):
//! one span per AI request, shaped by the OpenTelemetry GenAI semantic
//! conventions, so an existing tracing backend shows the gateway's AI calls.
//!
//! The span is written from what the audit record is written from (routed
//! requests, cache hits, refusals), after the fact: its start and end are
//! the request's, set explicitly. Spans go to the SDK's batch processor, a
//! bounded queue drained by its own thread over OTLP/gRPC (tonic); a full
//! queue drops spans and a failed export is logged and counted. Nothing here
//! waits on the collector, so exporting never slows or fails a request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData};
use opentelemetry_sdk::Resource;
use tollgate_core::policy::{BaseUrl, Otlp, Policy, ProviderKind};
use tollgate_core::usage::Usage;
use tollgate_core::{ApiKind, Error};

use crate::auditing::Draft;
use crate::processor::state::Routed;

/// How long one export may take (retries included) before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the last spans to leave.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The OTLP span exporter of the sidecar.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    stats: Arc<Stats>,
}

/// What the exporter did so far.
#[derive(Debug, Default)]
pub struct Stats {
    /// Spans handed to the batch queue.
    pub recorded: AtomicU64,
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans in batches that could not be exported.
    pub failed: AtomicU64,
}

/// One AI request as its span shows it.
#[derive(Debug, Clone, Default)]
pub struct RequestSpan<'a> {
    pub api: Option<ApiKind>,
    pub request_id: &'a str,
    pub consumer: &'a str,
    pub team: &'a str,
    pub started: Option<SystemTime>,
    pub duration: Duration,
    /// The model the client asked for (an alias, possibly).
    pub requested_model: &'a str,
    /// The model that answered.
    pub response_model: Option<&'a str>,
    /// The policy's name of the provider that answered (`cache` for a hit).
    pub provider: Option<&'a str>,
    /// `gen_ai.provider.name`.
    pub provider_name: Option<String>,
    /// The provider's host and port.
    pub server: Option<(String, u16)>,
    pub status: u16,
    /// `error.type` and the status description, on failures.
    pub error: Option<(String, String)>,
    pub usage: Option<Usage>,
    pub cost_usd: Option<f64>,
    /// `hit`, `miss` or `skip` when the cache is on.
    pub cache: Option<&'a str>,
    pub attempts: u32,
    pub ttft: Option<Duration>,
    /// Extra attributes (`tollgate.*`).
    pub extra: Vec<KeyValue>,
    /// The caller's W3C trace context: the span joins the caller's trace.
    pub trace_context: &'a [(String, String)],
}

/// `gen_ai.operation.name` of a request API.
pub fn operation(api: ApiKind) -> &'static str {
    match api {
        ApiKind::OpenAiChat
        | ApiKind::OpenAiResponses
        | ApiKind::AnthropicMessages
        | ApiKind::GeminiGenerate
        | ApiKind::BedrockConverse => "chat",
        ApiKind::OpenAiCompletions => "text_completion",
        ApiKind::OpenAiEmbeddings | ApiKind::GeminiEmbed | ApiKind::GeminiBatchEmbed => "embeddings",
        // Not one of the convention's operations: the API's own name.
        ApiKind::GeminiCountTokens => "count_tokens",
    }
}

/// `gen_ai.provider.name` of a policy provider: the convention's name for
/// the well-known ones, the policy's own name for OpenAI-compatible servers
/// (vLLM, Ollama ...) and the mock.
pub fn provider_name(policy: &Policy, provider: &str) -> Option<String> {
    let kind = policy.providers.get(provider)?.kind;
    Some(match kind {
        ProviderKind::Openai => "openai".into(),
        ProviderKind::Anthropic => "anthropic".into(),
        ProviderKind::AzureOpenai => "azure.ai.openai".into(),
        ProviderKind::Gemini => "gcp.gemini".into(),
        ProviderKind::VertexAi => "gcp.vertex_ai".into(),
        ProviderKind::Bedrock => "aws.bedrock".into(),
        ProviderKind::OpenaiCompatible | ProviderKind::Mock => provider.to_string(),
    })
}

/// The provider's host and port (`server.address`, `server.port`).
fn server(policy: &Policy, provider: &str) -> Option<(String, u16)> {
    let url = BaseUrl::parse(&policy.providers.get(provider)?.base_url).ok()?;
    Some((url.host, url.port))
}

impl<'a> RequestSpan<'a> {
    fn from_draft(draft: &'a Draft) -> RequestSpan<'a> {
        RequestSpan {
            api: Some(draft.api),
            request_id: &draft.request_id,
            consumer: &draft.consumer,
            team: &draft.team,
            started: Some(draft.started),
            duration: draft.clock.elapsed(),
            trace_context: &draft.trace_context,
            ..Default::default()
        }
    }

    /// A request routed to a provider, when it settles.
    pub fn routed(policy: &Policy, r: &'a Routed, usage: &Usage, cost_usd: f64) -> RequestSpan<'a> {
        let status = if r.status == 0 { 499 } else { r.status };
        let error = if r.cut {
            Some(("stream_cut".to_string(), "the stream crossed a budget and was ended".to_string()))
        } else if r.status == 0 {
            Some(("499".to_string(), "the stream ended before the provider answered".to_string()))
        } else if status >= 400 {
            Some((status.to_string(), format!("the provider answered {status}")))
        } else {
            None
        };
        let mut extra = vec![KeyValue::new("tollgate.upstream_api", r.upstream_api.as_str())];
        if let Some(i) = &r.identity {
            extra.push(KeyValue::new("tollgate.auth", i.via.as_str()));
        }
        if r.fallback {
            extra.push(KeyValue::new("tollgate.fallback", true));
        }
        if r.translation.is_some() {
            extra.push(KeyValue::new("tollgate.translated", true));
        }
        RequestSpan {
            requested_model: &r.requested_model,
            response_model: Some(&r.model),
            provider: Some(&r.provider),
            provider_name: provider_name(policy, &r.provider),
            server: server(policy, &r.provider),
            status,
            error,
            usage: Some(*usage),
            cost_usd: Some(cost_usd),
            cache: r.cache.as_ref().map(|c| c.status),
            attempts: r.attempts.max(1),
            ttft: r.first_byte,
            extra,
            ..RequestSpan::from_draft(&r.draft)
        }
    }

    /// A request answered from the cache (`tokens_saved`: the answer's own usage).
    pub fn cache_hit(
        draft: &'a Draft,
        requested_model: &'a str,
        model: &'a str,
        tokens_saved: u64,
        tier: &str,
        similarity: f32,
    ) -> RequestSpan<'a> {
        RequestSpan {
            requested_model,
            response_model: Some(model),
            provider: Some("cache"),
            status: 200,
            cache: Some("hit"),
            attempts: 0,
            extra: vec![
                KeyValue::new("tollgate.cache.tier", tier.to_string()),
                KeyValue::new("tollgate.cache.similarity", f64::from(similarity)),
                KeyValue::new("tollgate.cache.tokens_saved", tokens_saved as i64),
            ],
            ..RequestSpan::from_draft(draft)
        }
    }

    /// A request the gateway refused itself.
    pub fn refused(draft: &'a Draft, requested_model: &'a str, err: &Error) -> RequestSpan<'a> {
        RequestSpan {
            requested_model,
            status: err.status(),
            error: Some((err.code().to_string(), err.to_string())),
            ..RequestSpan::from_draft(draft)
        }
    }

    /// A request the filter (or Envoy) answered before it was routed;
    /// `rule`: the filter's `x-tollgate-blocked-by`.
    pub fn answered_by_proxy(draft: &'a Draft, status: u16, rule: Option<&str>) -> RequestSpan<'a> {
        let error = match rule {
            Some(rule) => Some(("blocked_by_policy".to_string(), format!("blocked by the filter (rule `{rule}`)"))),
            None if status >= 400 => Some((status.to_string(), format!("answered {status} by the proxy"))),
            None => None,
        };
        RequestSpan {
            status,
            error,
            attempts: 0,
            extra: rule.map(|r| vec![KeyValue::new("tollgate.blocked_by", r.to_string())]).unwrap_or_default(),
            ..RequestSpan::from_draft(draft)
        }
    }

    /// `{gen_ai.operation.name} {gen_ai.request.model}`.
    pub fn name(&self) -> String {
        let op = self.api.map_or("chat", operation);
        if self.requested_model.is_empty() {
            op.to_string()
        } else {
            format!("{op} {}", self.requested_model)
        }
    }

    /// The span's attributes.
    pub fn attributes(&self) -> Vec<KeyValue> {
        let mut kv = Vec::with_capacity(24);
        kv.push(KeyValue::new("gen_ai.operation.name", self.api.map_or("chat", operation)));
        if let Some(name) = &self.provider_name {
            kv.push(KeyValue::new("gen_ai.provider.name", name.clone()));
            // The name older backends look for.
            kv.push(KeyValue::new("gen_ai.system", name.clone()));
        }
        if !self.requested_model.is_empty() {
            kv.push(KeyValue::new("gen_ai.request.model", self.requested_model.to_string()));
        }
        if let Some(model) = self.response_model.filter(|m| !m.is_empty()) {
            kv.push(KeyValue::new("gen_ai.response.model", model.to_string()));
        }
        if let Some(u) = &self.usage {
            kv.push(KeyValue::new("gen_ai.usage.input_tokens", u.input_tokens as i64));
            kv.push(KeyValue::new("gen_ai.usage.output_tokens", u.output_tokens as i64));
        }
        if let Some((host, port)) = &self.server {
            kv.push(KeyValue::new("server.address", host.clone()));
            kv.push(KeyValue::new("server.port", i64::from(*port)));
        }
        kv.push(KeyValue::new("http.response.status_code", i64::from(self.status)));
        if let Some((kind, _)) = &self.error {
            kv.push(KeyValue::new("error.type", kind.clone()));
        }
        if let Some(api) = self.api {
            kv.push(KeyValue::new("tollgate.api", api.as_str()));
        }
        if !self.request_id.is_empty() {
            kv.push(KeyValue::new("tollgate.request_id", self.request_id.to_string()));
        }
        if !self.consumer.is_empty() {
            kv.push(KeyValue::new("tollgate.consumer", self.consumer.to_string()));
        }
        if !self.team.is_empty() {
            kv.push(KeyValue::new("tollgate.team", self.team.to_string()));
        }
        if let Some(provider) = self.provider {
            kv.push(KeyValue::new("tollgate.provider", provider.to_string()));
        }
        if let Some(cost) = self.cost_usd {
            kv.push(KeyValue::new("tollgate.cost_usd", cost));
        }
        if let Some(u) = self.usage.as_ref().filter(|u| u.cached_tokens > 0) {
            kv.push(KeyValue::new("tollgate.usage.cached_tokens", u.cached_tokens as i64));
        }
        if let Some(cache) = self.cache {
            kv.push(KeyValue::new("tollgate.cache.result", cache.to_string()));
        }
        if self.provider.is_some() {
            kv.push(KeyValue::new("tollgate.attempts", i64::from(self.attempts)));
        }
        if let Some(ttft) = self.ttft {
            kv.push(KeyValue::new("tollgate.time_to_first_token_ms", ttft.as_secs_f64() * 1000.0));
        }
        kv.extend(self.extra.iter().cloned());
        kv
    }
}

impl Telemetry {
    /// The exporter the policy asks for (`None` when `telemetry.otlp` is
    /// absent). Call it inside the tokio runtime: the gRPC channel lives on it.
    pub fn from_policy(policy: &Policy) -> anyhow::Result<Option<Telemetry>> {
        match &policy.telemetry.otlp {
            Some(otlp) => Ok(Some(Telemetry::new(otlp)?)),
            None => Ok(None),
        }
    }

    fn new(otlp: &Otlp) -> anyhow::Result<Telemetry> {
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (name, value) in &otlp.headers {
            let key = tonic::metadata::AsciiMetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|e| anyhow::anyhow!("telemetry.otlp.headers.{name}: {e}"))?;
            let value: tonic::metadata::AsciiMetadataValue =
                value.parse().map_err(|e| anyhow::anyhow!("telemetry.otlp.headers.{name}: {e}"))?;
            metadata.insert(key, value);
        }
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(otlp.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .with_metadata(metadata);
        if otlp.endpoint.starts_with("https://") {
            builder = builder.with_tls_config(tonic::transport::ClientTlsConfig::new().with_enabled_roots());
        }
        let exporter =
            builder.build().map_err(|e| anyhow::anyhow!("telemetry.otlp.endpoint `{}`: {e}", otlp.endpoint))?;
        let stats = Arc::new(Stats::default());
        let counted = Counted { inner: exporter, stats: Arc::clone(&stats) };
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(otlp.max_queue_size)
            .with_max_export_batch_size(otlp.max_queue_size.min(512))
            .with_scheduled_delay(Duration::from_millis(otlp.flush_interval_ms))
            .build();
        let processor = BatchSpanProcessor::builder(counted).with_batch_config(batch).build();
        let resource = Resource::builder_empty()
            .with_service_name(otlp.service_name.clone())
            .with_attributes([KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))])
            .build();
        let provider = SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).build();
        let tracer = provider.tracer("tollgate");
        tracing::info!(endpoint = otlp.endpoint, service = otlp.service_name, "OTLP span export on");
        Ok(Telemetry { provider, tracer, stats })
    }

    /// Queue the request's span (never waits: a full queue drops it).
    pub fn record(&self, span: &RequestSpan<'_>) {
        let start = span.started.unwrap_or_else(SystemTime::now);
        let mut s = self
            .tracer
            .span_builder(span.name())
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .with_attributes(span.attributes())
            .start_with_context(&self.tracer, &parent(span.trace_context));
        if let Some((_, description)) = &span.error {
            s.set_status(Status::error(description.clone()));
        } else if span.status >= 400 {
            s.set_status(Status::error(format!("status {}", span.status)));
        }
        s.end_with_timestamp(start + span.duration);
        self.stats.recorded.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Send what is queued now (waits for the export, off the runtime's workers).
    pub async fn flush(&self) {
        let provider = self.provider.clone();
        match tokio::task::spawn_blocking(move || provider.force_flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "OTLP flush failed"),
            Err(err) => tracing::warn!(error = %err, "OTLP flush failed"),
        }
    }

    /// Export what is queued and stop (on sidecar shutdown).
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        match tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "OTLP exporter shutdown"),
            Err(err) => tracing::warn!(error = %err, "OTLP exporter shutdown"),
        }
        let s = &self.stats;
        tracing::info!(
            recorded = s.recorded.load(Ordering::Relaxed),
            exported = s.exported.load(Ordering::Relaxed),
            failed = s.failed.load(Ordering::Relaxed),
            "OTLP exporter stopped"
        );
    }
}

/// The caller's trace as the parent context (a new trace without one, or
/// when `traceparent` does not parse).
fn parent(trace_context: &[(String, String)]) -> Context {
    if trace_context.is_empty() {
        return Context::new();
    }
    let carrier: std::collections::HashMap<String, String> = trace_context.iter().cloned().collect();
    TraceContextPropagator::new().extract_with_context(&Context::new(), &carrier)
}

/// The OTLP exporter, counting what it sends and what fails.
#[derive(Debug)]
struct Counted {
    inner: opentelemetry_otlp::SpanExporter,
    stats: Arc<Stats>,
}

impl opentelemetry_sdk::trace::SpanExporter for Counted {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => self.stats.exported.fetch_add(n, Ordering::Relaxed),
            Err(err) => {
                tracing::warn!(error = %err, spans = n, "OTLP export failed; spans dropped");
                self.stats.failed.fetch_add(n, Ordering::Relaxed)
            }
        };
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use opentelemetry::Value;

    fn policy() -> Policy {
        crate::config::parse_policy(
            "providers:\n  openai: {kind: openai, baseUrl: 'https://api.openai.com'}\n  local: {kind: openai-compatible, baseUrl: 'http://10.0.0.5:8000'}\n  az: {kind: azure-openai, baseUrl: 'https://x.openai.azure.com'}\n",
        )
        .unwrap()
    }

    fn get<'v>(kv: &'v [KeyValue], key: &str) -> Option<&'v Value> {
        kv.iter().find(|k| k.key.as_str() == key).map(|k| &k.value)
    }

    #[test]
    fn operations_and_provider_names() {
        assert_eq!(operation(ApiKind::OpenAiChat), "chat");
        assert_eq!(operation(ApiKind::AnthropicMessages), "chat");
        assert_eq!(operation(ApiKind::OpenAiCompletions), "text_completion");
        assert_eq!(operation(ApiKind::OpenAiEmbeddings), "embeddings");
        let p = policy();
        assert_eq!(provider_name(&p, "openai").as_deref(), Some("openai"));
        assert_eq!(provider_name(&p, "az").as_deref(), Some("azure.ai.openai"));
        assert_eq!(provider_name(&p, "local").as_deref(), Some("local"));
        assert_eq!(provider_name(&p, "nope"), None);
        assert_eq!(server(&p, "local"), Some(("10.0.0.5".into(), 8000)));
        assert_eq!(server(&p, "openai"), Some(("api.openai.com".into(), 443)));
    }

    #[test]
    fn a_routed_request_carries_the_genai_attributes() {
        let p = policy();
        let span = RequestSpan {
            api: Some(ApiKind::OpenAiChat),
            request_id: "r1",
            consumer: "alice",
            team: "search",
            requested_model: "gpt-4o-mini",
            response_model: Some("gpt-4o-mini-2024-07-18"),
            provider: Some("openai"),
            provider_name: provider_name(&p, "openai"),
            server: server(&p, "openai"),
            status: 200,
            usage: Some(Usage { input_tokens: 12, output_tokens: 34, total_tokens: 46, ..Default::default() }),
            cost_usd: Some(0.25),
            cache: Some("miss"),
            attempts: 1,
            ..Default::default()
        };
        assert_eq!(span.name(), "chat gpt-4o-mini");
        let kv = span.attributes();
        assert_eq!(get(&kv, "gen_ai.operation.name"), Some(&Value::from("chat")));
        assert_eq!(get(&kv, "gen_ai.provider.name"), Some(&Value::from("openai")));
        assert_eq!(get(&kv, "gen_ai.system"), Some(&Value::from("openai")));
        assert_eq!(get(&kv, "gen_ai.request.model"), Some(&Value::from("gpt-4o-mini")));
        assert_eq!(get(&kv, "gen_ai.response.model"), Some(&Value::from("gpt-4o-mini-2024-07-18")));
        assert_eq!(get(&kv, "gen_ai.usage.input_tokens"), Some(&Value::I64(12)));
        assert_eq!(get(&kv, "gen_ai.usage.output_tokens"), Some(&Value::I64(34)));
        assert_eq!(get(&kv, "server.address"), Some(&Value::from("api.openai.com")));
        assert_eq!(get(&kv, "server.port"), Some(&Value::I64(443)));
        assert_eq!(get(&kv, "http.response.status_code"), Some(&Value::I64(200)));
        assert_eq!(get(&kv, "error.type"), None);
        assert_eq!(get(&kv, "tollgate.request_id"), Some(&Value::from("r1")));
        assert_eq!(get(&kv, "tollgate.consumer"), Some(&Value::from("alice")));
        assert_eq!(get(&kv, "tollgate.team"), Some(&Value::from("search")));
        assert_eq!(get(&kv, "tollgate.cost_usd"), Some(&Value::F64(0.25)));
        assert_eq!(get(&kv, "tollgate.cache.result"), Some(&Value::from("miss")));
        assert_eq!(get(&kv, "tollgate.attempts"), Some(&Value::I64(1)));
    }

    #[test]
    fn a_refusal_is_an_error_span() {
        let draft = Draft::new(ApiKind::AnthropicMessages, "r2", None);
        let err = Error::InvalidRequest("max_tokens is required".into());
        let span = RequestSpan::refused(&draft, "claude-haiku-4-5", &err);
        assert_eq!(span.name(), "chat claude-haiku-4-5");
        let kv = span.attributes();
        assert_eq!(get(&kv, "error.type"), Some(&Value::from(err.code().to_string())));
        assert_eq!(get(&kv, "http.response.status_code"), Some(&Value::I64(i64::from(err.status()))));
        assert_eq!(get(&kv, "gen_ai.usage.input_tokens"), None);
        assert_eq!(get(&kv, "gen_ai.provider.name"), None);
        // A refusal before the model is known is named by the operation alone.
        assert_eq!(RequestSpan::refused(&draft, "", &err).name(), "chat");
    }
}
