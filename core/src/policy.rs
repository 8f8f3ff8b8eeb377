//! The policy: one file that is the source of truth for the gateway.
//!
//! Parsed with serde (`deny_unknown_fields` everywhere), then validated.
//! Every error names the field it is about, as a dotted path
//! (`providers.openai.baseUrl`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::access::{Access, Consumer, LimitStore, Team};
use crate::api::{ApiFamily, ApiKind};
use crate::error::Error;
use crate::firewall::FirewallPolicy;
use crate::guard::OutputPolicy;
use crate::moderation::ModerationPolicy;
use crate::pii::PiiPolicy;
use crate::pricing::Price;

/// Default cap on a buffered request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default cap on the response bytes the filter keeps to count usage.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Default cap on a single server-sent event.
pub const DEFAULT_MAX_SSE_EVENT_BYTES: usize = 256 * 1024;
/// Default bound on one request's placeholder map.
pub const DEFAULT_MAX_MASK_BYTES: usize = 64 * 1024;
/// Hard ceiling for any configurable buffer.
pub const MAX_BUFFER_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub sidecar: Sidecar,
    #[serde(default)]
    pub fail_mode: FailModes,
    pub providers: BTreeMap<String, Provider>,
    #[serde(default)]
    pub models: BTreeMap<String, ModelRoute>,
    #[serde(default)]
    pub inspection: Inspection,
    /// How callers identify themselves.
    #[serde(default)]
    pub access: Access,
    #[serde(default)]
    pub teams: BTreeMap<String, Team>,
    #[serde(default)]
    pub consumers: BTreeMap<String, Consumer>,
    /// Where limit counters live.
    #[serde(default)]
    pub limits: LimitStore,
    /// USD per 1M tokens, merged over the built-in table. A key ending in
    /// `*` prices every model starting with the rest; the key `default`
    /// prices every model nothing else does (without it, such a model is
    /// refused to callers under a cost limit). See `crate::pricing`.
    #[serde(default)]
    pub pricing: BTreeMap<String, Price>,
    /// The audit log: one hash-chained record per request.
    #[serde(default)]
    pub audit: Audit,
    /// The response cache (off unless enabled).
    #[serde(default)]
    pub cache: crate::cache::CachePolicy,
    /// Export to an OpenTelemetry collector (off when absent).
    #[serde(default, skip_serializing_if = "Telemetry::is_off")]
    pub telemetry: Telemetry,
    /// The MCP gateway: upstream servers, virtual servers, pinned tools.
    #[serde(default, skip_serializing_if = "crate::mcp::policy::McpPolicy::is_empty")]
    pub mcp: crate::mcp::policy::McpPolicy,
    /// How long Envoy waits for a client and for a provider.
    #[serde(default)]
    pub timeouts: Timeouts,
}

/// How long Envoy waits, in milliseconds. A client that takes longer than
/// `requestMs` to send its request gets 408 and nothing reaches a
/// provider; a provider that has not started its answer within `attemptMs`
/// (an alias's `attemptTimeoutMs` overrides it) gets the next target, or
/// the client a 504; once an answer has started, `idleMs` without a byte
/// resets the client's stream (nothing more can be written then), and
/// `totalMs` bounds the whole exchange, streamed answers included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Timeouts {
    #[serde(default = "default_request_ms")]
    pub request_ms: u64,
    #[serde(default = "default_attempt_ms")]
    pub attempt_ms: u64,
    #[serde(default = "default_idle_ms")]
    pub idle_ms: u64,
    #[serde(default = "default_total_ms")]
    pub total_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request_ms: default_request_ms(),
            attempt_ms: default_attempt_ms(),
            idle_ms: default_idle_ms(),
            total_ms: default_total_ms(),
        }
    }
}

fn default_request_ms() -> u64 {
    60_000
}
fn default_attempt_ms() -> u64 {
    120_000
}
fn default_idle_ms() -> u64 {
    180_000
}
fn default_total_ms() -> u64 {
    300_000
}

/// Envoy's duration notation for `ms` milliseconds (`1.5s`).
pub fn envoy_duration(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}s", ms as f64 / 1000.0)
    }
}

impl Timeouts {
    /// Every timeout is positive; an attempt gives up before the stream
    /// counts as idle (a stall before the answer is then a 504, not Envoy's
    /// idle 408) and within the whole exchange's bound.
    pub fn validate(&self, models: &BTreeMap<String, ModelRoute>) -> Result<(), Error> {
        let err = |path: String, message: String| Err(Error::Policy { path, message });
        for (path, v) in [
            ("timeouts.requestMs", self.request_ms),
            ("timeouts.idleMs", self.idle_ms),
            ("timeouts.totalMs", self.total_ms),
        ] {
            if v == 0 {
                return err(path.into(), "must be positive".into());
            }
        }
        let attempts = std::iter::once(("timeouts.attemptMs".to_string(), self.attempt_ms)).chain(
            models.iter().filter_map(|(a, r)| Some((format!("models.{a}.attemptTimeoutMs"), r.attempt_timeout_ms?))),
        );
        for (path, ms) in attempts {
            if ms == 0 {
                return err(path, "must be positive".into());
            }
            if ms >= self.idle_ms {
                return err(
                    path,
                    format!(
                        "must be below timeouts.idleMs ({}): a provider that never answers must time out as an attempt (504)",
                        self.idle_ms
                    ),
                );
            }
            if ms > self.total_ms {
                return err(path, format!("must not exceed timeouts.totalMs ({})", self.total_ms));
            }
        }
        Ok(())
    }
}

/// Where the sidecar sends one OpenTelemetry span per AI request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Telemetry {
    /// An OTLP collector (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<Otlp>,
}

impl Telemetry {
    pub fn is_off(&self) -> bool {
        self.otlp.is_none()
    }
}

/// An OTLP trace exporter: spans follow the OpenTelemetry GenAI semantic conventions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Otlp {
    /// The collector (default `http://127.0.0.1:4317`, OTLP/gRPC's port).
    #[serde(default = "default_otlp_endpoint")]
    pub endpoint: String,
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// The `service.name` resource attribute (default `tollgate`).
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Extra request headers (gRPC metadata), e.g. a vendor's API key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// How often the queued spans are sent (default 5000 ms).
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Spans queued at most; beyond it new spans are dropped, never waited for (default 2048).
    #[serde(default = "default_max_queue_size")]
    pub max_queue_size: usize,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP over gRPC.
    #[default]
    Grpc,
}

fn default_otlp_endpoint() -> String {
    "http://127.0.0.1:4317".into()
}
fn default_service_name() -> String {
    "tollgate".into()
}
fn default_flush_interval_ms() -> u64 {
    5000
}
fn default_max_queue_size() -> usize {
    2048
}

impl Default for Otlp {
    fn default() -> Self {
        Otlp {
            endpoint: default_otlp_endpoint(),
            protocol: OtlpProtocol::Grpc,
            service_name: default_service_name(),
            headers: BTreeMap::new(),
            flush_interval_ms: default_flush_interval_ms(),
            max_queue_size: default_max_queue_size(),
        }
    }
}

impl Otlp {
    /// Check the endpoint URL, the headers and the bounds.
    pub fn validate_at(&self, at: &str) -> Result<(), Error> {
        let err = |field: &str, message: String| Err(Error::Policy { path: format!("{at}.{field}"), message });
        match BaseUrl::parse(&self.endpoint) {
            Err(m) => return err("endpoint", m),
            Ok(u) if !u.path.is_empty() => {
                return err("endpoint", format!("`{}`: an OTLP/gRPC endpoint has no path", self.endpoint))
            }
            Ok(_) => {}
        }
        if self.service_name.trim().is_empty() {
            return err("serviceName", "must not be empty".into());
        }
        for (name, value) in &self.headers {
            let token = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if name.is_empty() || !name.chars().all(token) || name.starts_with(':') {
                return err(&format!("headers.{name}"), "header names use letters, digits, '-', '_' and '.'".into());
            }
            if name.to_ascii_lowercase().ends_with("-bin") {
                return err(&format!("headers.{name}"), "binary (`-bin`) headers are not supported".into());
            }
            if !value.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
                return err(&format!("headers.{name}"), "values are printable ASCII".into());
            }
        }
        if self.flush_interval_ms == 0 || self.flush_interval_ms > 3_600_000 {
            return err("flushIntervalMs", "must be between 1 and 3600000".into());
        }
        if self.max_queue_size == 0 || self.max_queue_size > 1_000_000 {
            return err("maxQueueSize", "must be between 1 and 1000000".into());
        }
        Ok(())
    }
}

/// Where audit records go and what they keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Audit {
    /// Off only when `false`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Directory of the JSONL segments (default: `audit/` beside the policy file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Prompt and answer text in records: `none`, `masked` (default: the text
    /// as it left the gateway, PII masked by the filter) or `full`.
    #[serde(default)]
    pub text: AuditText,
    /// `every` (default: fsync before a response completes), an interval
    /// such as `100ms`, or `never`.
    #[serde(default = "every")]
    pub fsync: String,
    /// When a record cannot be written: `closed` (default: the answer is
    /// cut off, so nothing is served unaudited) or `open` (counted, logged).
    #[serde(default = "closed")]
    pub fail_mode: FailMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuditText {
    None,
    #[default]
    Masked,
    Full,
}

fn yes() -> bool {
    true
}
fn every() -> String {
    "every".into()
}

impl Default for Audit {
    fn default() -> Self {
        Audit { enabled: true, dir: None, text: AuditText::Masked, fsync: every(), fail_mode: FailMode::Closed }
    }
}

/// Where Envoy listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Listen {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_listen_port")]
    pub port: u16,
    /// Envoy's admin interface, always on loopback.
    #[serde(default = "default_admin_port")]
    pub admin_port: u16,
}

/// Where the ext_proc sidecar listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sidecar {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_grpc_port")]
    pub grpc_port: u16,
    /// Health and admin HTTP port.
    #[serde(default = "default_sidecar_admin_port")]
    pub admin_port: u16,
    /// How long Envoy waits for the sidecar per message.
    #[serde(default = "default_sidecar_timeout_ms")]
    pub timeout_ms: u64,
    /// How Envoy and the sidecar authenticate each other.
    #[serde(default)]
    pub tls: SidecarTls,
}

/// The channel between Envoy and the sidecar. Only the gateway's Envoy may
/// talk to the sidecar: it decides identity and holds the provider keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SidecarTls {
    #[serde(default)]
    pub mode: SidecarTlsMode,
    /// Directory of the certificates (`ca.pem`, `sidecar.pem`, `sidecar.key`,
    /// `envoy.pem`, `envoy.key`); relative to the policy file. Made on first
    /// start when absent (`tollgate certs`).
    #[serde(default = "default_tls_dir")]
    pub dir: String,
}

impl Default for SidecarTls {
    fn default() -> Self {
        SidecarTls { mode: SidecarTlsMode::default(), dir: default_tls_dir() }
    }
}

fn default_tls_dir() -> String {
    "tls".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SidecarTlsMode {
    /// Mutual TLS with the gateway's own certificate authority (default):
    /// the sidecar answers only a client holding Envoy's certificate.
    #[default]
    Mutual,
    /// Plaintext: a service mesh authenticates Envoy to the sidecar (Istio's
    /// mutual TLS with an AuthorizationPolicy, as `tollgate render istio` writes).
    Mesh,
}

/// What each component does when it cannot do its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FailModes {
    #[serde(default = "closed")]
    pub filter: FailMode,
    #[serde(default = "open")]
    pub sidecar: FailMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Let the request through uninspected.
    Open,
    /// Reject the request.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    OpenaiCompatible,
    /// Azure OpenAI: deployment paths, `api-version`, the `api-key` header.
    AzureOpenai,
    /// The Gemini API: the model in the path, the key in `x-goog-api-key`.
    Gemini,
    /// Gemini on Vertex AI: `project` and `location` in the path, an OAuth
    /// access token minted from a service account (`credentialsFile`).
    VertexAi,
    /// Amazon Bedrock's Converse API: requests signed with SigV4 (or a
    /// Bedrock API key as a bearer token, `keyEnv` / `keyFile`).
    Bedrock,
    /// The bundled mock provider: speaks every API.
    Mock,
}

impl ProviderKind {
    /// Whether a provider of this kind serves requests of `family` natively.
    pub fn serves(self, family: ApiFamily) -> bool {
        match self {
            ProviderKind::Mock => true,
            ProviderKind::Anthropic => family == ApiFamily::Anthropic,
            ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::AzureOpenai => {
                family == ApiFamily::OpenAi
            }
            ProviderKind::Gemini => family == ApiFamily::Gemini,
            // Gemini models, and Anthropic's through `rawPredict`.
            ProviderKind::VertexAi => matches!(family, ApiFamily::Gemini | ApiFamily::Anthropic),
            ProviderKind::Bedrock => family == ApiFamily::Bedrock,
        }
    }

    /// The family whose chat API a translated request is sent as, for a
    /// request of `model` (the mock answers each model in its own family).
    pub fn chat_family(self, model: &str) -> ApiFamily {
        match self {
            ProviderKind::Mock => model_family(model),
            ProviderKind::Anthropic => ApiFamily::Anthropic,
            ProviderKind::Gemini => ApiFamily::Gemini,
            ProviderKind::VertexAi if model_family(model) == ApiFamily::Anthropic => ApiFamily::Anthropic,
            ProviderKind::VertexAi => ApiFamily::Gemini,
            ProviderKind::Bedrock => ApiFamily::Bedrock,
            ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::AzureOpenai => ApiFamily::OpenAi,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Provider {
    pub kind: ProviderKind,
    pub base_url: String,
    /// Environment variable holding the provider key (read by the sidecar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
    /// File holding the provider key (read by the sidecar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Azure OpenAI: the `api-version` query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Azure OpenAI: deployment name per model (default: the model's name).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deployments: BTreeMap<String, String>,
    /// Vertex AI: the Google Cloud project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Vertex AI: the region (`us-central1`, `europe-west4`, `global` ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Vertex AI: a service account's JSON key file; the sidecar signs a JWT
    /// with it and exchanges it for an access token, refreshed before expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<String>,
    /// Vertex AI: the OAuth token endpoint (default: the key file's
    /// `token_uri`, else Google's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// Bedrock: the AWS region the requests are signed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Bedrock: environment variables holding the AWS credentials for
    /// SigV4 (default `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and, when
    /// set, `AWS_SESSION_TOKEN`); unused with `keyEnv` / `keyFile` (a
    /// Bedrock API key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token_env: Option<String>,
}

impl Provider {
    /// Whether a request of `api` needs [`Provider::adjust_body`].
    pub fn adjusts_body(&self, api: ApiKind) -> bool {
        self.kind == ProviderKind::VertexAi && api == ApiKind::AnthropicMessages
    }

    /// The provider's own changes to a request body: Anthropic on Vertex AI
    /// takes the model in the path, not the body, and an
    /// `anthropic_version` of its own.
    pub fn adjust_body(&self, api: ApiKind, body: &mut serde_json::Value) {
        if !self.adjusts_body(api) {
            return;
        }
        if let Some(obj) = body.as_object_mut() {
            obj.remove("model");
            obj.entry("anthropic_version").or_insert_with(|| serde_json::Value::from(VERTEX_ANTHROPIC_VERSION));
        }
    }
}

/// The `anthropic_version` Anthropic's models on Vertex AI take.
pub const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// Percent-encode everything but RFC 3986's unreserved characters (as AWS
/// SDKs do for a model id in a path: `arn:aws:bedrock:…/x` → `arn%3Aaws…%2Fx`).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A name put in a request path: only the characters model, project and
/// region names use (nothing that could end the segment or start a query).
fn path_segment(name: &str) -> String {
    name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@')).collect()
}

/// Azure OpenAI's default `api-version`.
pub const AZURE_API_VERSION: &str = "2024-10-21";

impl Provider {
    /// The request path (before the base URL's own prefix) for a request of
    /// API `api` for `model`: the API's own path, for Azure OpenAI the
    /// deployment's path with `api-version`, for Gemini the model's
    /// `generateContent` (`streamGenerateContent?alt=sse` when `stream`).
    pub fn request_path(&self, api: ApiKind, model: &str, stream: bool) -> String {
        if api == ApiKind::BedrockConverse {
            // A model id may be an ARN: every reserved character is escaped.
            let id = percent_encode(model);
            return format!("/model/{id}/{}", if stream { "converse-stream" } else { "converse" });
        }
        if self.kind == ProviderKind::VertexAi && api == ApiKind::AnthropicMessages {
            let project = path_segment(self.project.as_deref().unwrap_or_default());
            let location = path_segment(self.location.as_deref().unwrap_or_default());
            let verb = if stream { "streamRawPredict" } else { "rawPredict" };
            let model = path_segment(model);
            return format!("/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}:{verb}");
        }
        if api == ApiKind::GeminiGenerate {
            let model = model.strip_prefix("models/").unwrap_or(model);
            let model = path_segment(model);
            let verb = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
            if self.kind == ProviderKind::VertexAi {
                let project = path_segment(self.project.as_deref().unwrap_or_default());
                let location = path_segment(self.location.as_deref().unwrap_or_default());
                return format!("/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:{verb}");
            }
            return format!("/v1beta/models/{model}:{verb}");
        }
        if self.kind != ProviderKind::AzureOpenai {
            return api.path().to_string();
        }
        let version = self.api_version.as_deref().unwrap_or(AZURE_API_VERSION);
        let deployment = self.deployments.get(model).map_or(model, String::as_str);
        let deployment: String =
            deployment.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
        match api {
            ApiKind::OpenAiResponses => format!("/openai/responses?api-version={version}"),
            _ => {
                let suffix = api.path().trim_start_matches("/v1/");
                format!("/openai/deployments/{deployment}/{suffix}?api-version={version}")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModelRoute {
    pub targets: Vec<Target>,
    /// Which target a request tries first; the others follow as fallback.
    #[serde(default)]
    pub strategy: Strategy,
    /// Give up on a target after this long without an answer and try the next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_timeout_ms: Option<u64>,
    /// This alias's cache settings (over `cache`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<crate::cache::RouteCache>,
    /// This alias's prompt-firewall thresholds (over `inspection.firewall`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<crate::firewall::Thresholds>,
    /// The operator's own system prompts for this alias, exact texts
    /// compared after trimming: a `system` or `developer` text equal to one
    /// of them is not run through the prompt firewall. Every other text,
    /// whatever role the client gives it, is.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "trusted_prompts")]
    pub trusted_system_prompts: Vec<String>,
}

/// `trustedSystemPrompts`: non-empty texts (an empty one would trust every
/// empty system message, which carries nothing to trust).
fn trusted_prompts<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    let prompts = Vec::<String>::deserialize(de)?;
    if prompts.iter().any(|p| p.trim().is_empty()) {
        return Err(serde::de::Error::custom("trusted system prompts must not be empty"));
    }
    Ok(prompts)
}

/// How an alias picks the first target of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The targets in the order listed.
    #[default]
    Priority,
    /// The first target drawn at random by `weight`; the rest in order.
    Weighted,
    /// The target answering fastest lately (targets not yet tried go first).
    LeastLatency,
    /// The cheapest target whose `contextTokens` fits the request; the
    /// rest cheapest first.
    Cost,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Target {
    pub provider: String,
    pub model: String,
    /// Share of first attempts under the `weighted` strategy (default 1),
    /// among the targets of the same `priority`.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub weight: u32,
    /// Priority level under the `weighted` strategy: the lowest level takes
    /// the traffic, the next levels are fallback (default 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u32,
    /// The model's context window, for the `cost` strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<u64>,
}

fn one() -> u32 {
    1
}
fn is_one(w: &u32) -> bool {
    *w == 1
}
fn is_zero(p: &u32) -> bool {
    *p == 0
}

impl ModelRoute {
    /// Target indices from cheapest to dearest (per million input plus
    /// output tokens; unpriced targets last), ties in listed order.
    pub fn cost_order(&self, prices: &crate::pricing::PriceTable) -> Vec<usize> {
        let cost = |t: &Target| prices.price(&t.model).map_or(f64::INFINITY, |p| p.input + p.output);
        let mut order: Vec<usize> = (0..self.targets.len()).collect();
        order.sort_by(|&a, &b| cost(&self.targets[a]).total_cmp(&cost(&self.targets[b])));
        order
    }

    /// The order a request's attempts walk when `first` goes first: the
    /// strategy's base order with `first` moved to the front.
    pub fn attempt_order(&self, first: usize, prices: &crate::pricing::PriceTable) -> Vec<usize> {
        let base = match self.strategy {
            Strategy::Cost => self.cost_order(prices),
            Strategy::Weighted => {
                // Priority levels in order; listed order within a level.
                let mut order: Vec<usize> = (0..self.targets.len()).collect();
                order.sort_by_key(|&i| self.targets[i].priority);
                order
            }
            _ => (0..self.targets.len()).collect(),
        };
        std::iter::once(first).chain(base.into_iter().filter(|&i| i != first)).collect()
    }
}

/// Inline inspection settings (used by the filter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Inspection {
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    #[serde(default = "default_max_response")]
    pub max_response_bytes: usize,
    #[serde(default = "default_max_sse_event")]
    pub max_sse_event_bytes: usize,
    /// Bound on one request's placeholder map (masked values and placeholders).
    #[serde(default = "default_max_mask")]
    pub max_mask_bytes: usize,
    /// PII detection and actions (default: every built-in type masked).
    #[serde(default)]
    pub pii: PiiPolicy,
    /// Prompt firewall (default: the default rule pack).
    #[serde(default)]
    pub firewall: FirewallPolicy,
    /// Output guard on model answers (default: leaked secrets redacted).
    #[serde(default)]
    pub output: OutputPolicy,
    /// Moderation of model answers (default: off).
    #[serde(default, skip_serializing_if = "ModerationPolicy::is_default")]
    pub moderation: ModerationPolicy,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_listen_port() -> u16 {
    10000
}
fn default_admin_port() -> u16 {
    9901
}
fn default_grpc_port() -> u16 {
    10001
}
fn default_sidecar_admin_port() -> u16 {
    10003
}
fn default_sidecar_timeout_ms() -> u64 {
    2000
}
fn closed() -> FailMode {
    FailMode::Closed
}
fn open() -> FailMode {
    FailMode::Open
}
fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn default_max_response() -> usize {
    DEFAULT_MAX_RESPONSE_BYTES
}
fn default_max_sse_event() -> usize {
    DEFAULT_MAX_SSE_EVENT_BYTES
}
fn default_max_mask() -> usize {
    DEFAULT_MAX_MASK_BYTES
}

impl Default for Listen {
    fn default() -> Self {
        Listen { host: default_host(), port: default_listen_port(), admin_port: default_admin_port() }
    }
}

impl Default for Sidecar {
    fn default() -> Self {
        Sidecar {
            host: default_host(),
            grpc_port: default_grpc_port(),
            admin_port: default_sidecar_admin_port(),
            timeout_ms: default_sidecar_timeout_ms(),
            tls: SidecarTls::default(),
        }
    }
}

impl Default for FailModes {
    fn default() -> Self {
        FailModes { filter: FailMode::Closed, sidecar: FailMode::Open }
    }
}

impl Default for Inspection {
    fn default() -> Self {
        Inspection {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_sse_event_bytes: DEFAULT_MAX_SSE_EVENT_BYTES,
            max_mask_bytes: DEFAULT_MAX_MASK_BYTES,
            pii: PiiPolicy::default(),
            firewall: FirewallPolicy::default(),
            output: OutputPolicy::default(),
            moderation: ModerationPolicy::default(),
        }
    }
}

/// A parsed provider base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" for none).
    pub path: String,
}

impl BaseUrl {
    /// `host[:port]` as the provider expects it in `Host` (no default port).
    pub fn authority(&self) -> String {
        let default_port = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The URL of `path` (which starts with `/`) under this base.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}{path}", if self.tls { "https" } else { "http" }, self.authority(), self.path)
    }

    pub fn parse(url: &str) -> Result<BaseUrl, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("`{url}` must start with http:// or https://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.contains('@') || path.contains(['?', '#']) {
            return Err(format!("`{url}` must not carry credentials, a query or a fragment"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => {
                let port = p.parse::<u16>().map_err(|_| format!("`{url}` has an invalid port `{p}`"))?;
                (h, port)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err(format!("`{url}` has no host or port"));
        }
        Ok(BaseUrl { tls, host: host.to_string(), port, path: path.to_string() })
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a> {
    pub provider: &'a str,
    pub model: &'a str,
    /// The API the provider is called with: the client's, or the other
    /// family's chat API when the request is translated.
    pub api: ApiKind,
}

impl Route<'_> {
    /// Keep the client's own API when it is of the same family as the route's.
    fn or_native(mut self, client: ApiKind) -> Self {
        if client.family() == self.api.family() {
            self.api = client;
        }
        self
    }

    /// The translation this route needs, if the provider speaks the other family.
    pub fn translation(&self, client: ApiKind) -> Option<crate::translate::Direction> {
        crate::translate::Direction::for_pair(client.family(), self.api.family())
    }
}

/// The family a model natively belongs to, by its name.
pub fn model_family(model: &str) -> ApiFamily {
    if model.starts_with("claude") {
        ApiFamily::Anthropic
    } else if model.starts_with("gemini") || model.starts_with("models/gemini") {
        ApiFamily::Gemini
    } else if is_bedrock_model(model) {
        ApiFamily::Bedrock
    } else {
        ApiFamily::OpenAi
    }
}

/// A Bedrock model id (`anthropic.claude-…-v1:0`, `amazon.nova-pro-v1:0`,
/// a cross-region profile `us.meta.llama…`) or ARN.
fn is_bedrock_model(model: &str) -> bool {
    const VENDORS: [&str; 10] =
        ["amazon.", "anthropic.", "meta.", "mistral.", "cohere.", "ai21.", "deepseek.", "qwen.", "openai.", "writer."];
    let model = ["us.", "eu.", "apac.", "global.", "us-gov."]
        .iter()
        .find_map(|region| model.strip_prefix(region))
        .unwrap_or(model);
    model.starts_with("arn:aws:bedrock:") || VENDORS.iter().any(|v| model.starts_with(v))
}

/// The chat API of a family.
fn chat_api(family: ApiFamily) -> ApiKind {
    ApiKind::chat(family)
}

impl Policy {
    /// Parse from any serde deserializer (JSON, YAML), then validate.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Policy, Error>
    where
        D::Error: std::fmt::Display,
    {
        let policy: Policy = deserialize_named(de)?;
        policy.validate()?;
        Ok(policy)
    }

    /// Parse a JSON policy.
    pub fn from_json(bytes: &[u8]) -> Result<Policy, Error> {
        let policy: Policy = from_json_named(bytes)?;
        policy.validate()?;
        Ok(policy)
    }

    /// Check everything serde cannot: references, ranges, URLs.
    pub fn validate(&self) -> Result<(), Error> {
        let err = |path: String, message: String| Err(Error::Policy { path, message });
        if self.providers.is_empty() {
            return err("providers".into(), "at least one provider is required".into());
        }
        for (name, p) in &self.providers {
            if !valid_name(name) {
                return err(format!("providers.{name}"), "names use letters, digits, '-' and '_' only".into());
            }
            if let Err(m) = BaseUrl::parse(&p.base_url) {
                return err(format!("providers.{name}.baseUrl"), m);
            }
            if p.key_env.is_some() && p.key_file.is_some() {
                return err(format!("providers.{name}.keyFile"), "set keyEnv or keyFile, not both".into());
            }
            if p.kind == ProviderKind::VertexAi {
                for (field, value) in [("project", &p.project), ("location", &p.location)] {
                    if value.as_deref().is_none_or(|v| v.is_empty() || path_segment(v) != *v) {
                        return err(
                            format!("providers.{name}.{field}"),
                            "Vertex AI needs it: letters, digits, '-', '_' and '.'".into(),
                        );
                    }
                }
                let keyed = p.key_env.is_some() || p.key_file.is_some();
                if p.credentials_file.is_some() == keyed {
                    return err(
                        format!("providers.{name}.credentialsFile"),
                        "Vertex AI needs a service account key file (or keyEnv/keyFile holding an access token), one of them".into(),
                    );
                }
            } else if p.credentials_file.is_some() || p.token_url.is_some() || p.project.is_some() {
                return err(
                    format!("providers.{name}"),
                    "credentialsFile, tokenUrl and project are for kind vertex-ai".into(),
                );
            }
            if p.kind == ProviderKind::Bedrock {
                if p.region.as_deref().is_none_or(|r| r.is_empty() || path_segment(r) != *r) {
                    return err(
                        format!("providers.{name}.region"),
                        "Bedrock needs the AWS region (us-east-1 ...)".into(),
                    );
                }
            } else if p.region.is_some()
                || p.access_key_env.is_some()
                || p.secret_key_env.is_some()
                || p.session_token_env.is_some()
            {
                return err(
                    format!("providers.{name}"),
                    "region, accessKeyEnv, secretKeyEnv and sessionTokenEnv are for kind bedrock".into(),
                );
            }
            if let Some(url) = &p.token_url {
                if let Err(m) = BaseUrl::parse(url) {
                    return err(format!("providers.{name}.tokenUrl"), m);
                }
            }
        }
        for (alias, route) in &self.models {
            let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
            if route.targets.len() > 1 && !alias.chars().all(safe) {
                // The alias names Envoy clusters and a routing header value.
                return err(
                    format!("models.{alias}"),
                    "an alias with several targets uses letters, digits, '-', '_', '.' and ':' only".into(),
                );
            }
            if route.targets.is_empty() {
                return err(format!("models.{alias}.targets"), "at least one target is required".into());
            }
            for (i, t) in route.targets.iter().enumerate() {
                if !self.providers.contains_key(&t.provider) {
                    return err(
                        format!("models.{alias}.targets[{i}].provider"),
                        format!("unknown provider `{}`", t.provider),
                    );
                }
                if t.model.is_empty() {
                    return err(format!("models.{alias}.targets[{i}].model"), "must not be empty".into());
                }
                if t.weight == 0 {
                    return err(format!("models.{alias}.targets[{i}].weight"), "must be positive".into());
                }
            }
        }
        let levels = self.inspection.firewall.levels();
        for (alias, route) in &self.models {
            if let Some(cache) = &route.cache {
                cache.validate_at(&format!("models.{alias}.cache"))?;
            }
            if let Some(t) = &route.firewall {
                levels.over(Some(t)).validate_at(&format!("models.{alias}.firewall"))?;
            }
        }
        for (name, team) in &self.teams {
            levels.over(team.firewall.as_ref()).validate_at(&format!("teams.{name}.firewall"))?;
        }
        for (name, consumer) in &self.consumers {
            let team = self.teams.get(&consumer.team).and_then(|t| t.firewall.as_ref());
            levels.over(team).over(consumer.firewall.as_ref()).validate_at(&format!("consumers.{name}.firewall"))?;
        }
        self.cache.validate()?;
        if let Some(otlp) = &self.telemetry.otlp {
            otlp.validate_at("telemetry.otlp")?;
        }
        self.inspection.validate()?;
        let grants = self.teams.iter().filter_map(|(n, t)| Some((format!("teams.{n}.mcp"), t.mcp.as_ref()?)));
        let grants = grants
            .chain(self.consumers.iter().filter_map(|(n, c)| Some((format!("consumers.{n}.mcp"), c.mcp.as_ref()?))));
        self.mcp.validate(grants)?;
        crate::access::validate(&self.access, &self.teams, &self.consumers, &self.limits)?;
        for name in self.teams.keys().chain(self.consumers.keys()) {
            if !valid_name(name) {
                return err(name.clone(), "team and consumer names use letters, digits, '-' and '_' only".into());
            }
        }
        for (model, price) in &self.pricing {
            if !price.validate() {
                return err(format!("pricing.{model}"), "prices are non-negative USD per 1M tokens".into());
            }
            let stem = model.strip_suffix('*').unwrap_or(model);
            if stem.is_empty() || stem.contains('*') {
                return err(
                    format!("pricing.{model}"),
                    "a model name, a prefix ending in `*` (`llama3-*`), or `default`".into(),
                );
            }
        }
        let ports = [
            ("listen.port", self.listen.port),
            ("listen.adminPort", self.listen.admin_port),
            ("sidecar.grpcPort", self.sidecar.grpc_port),
            ("sidecar.adminPort", self.sidecar.admin_port),
        ];
        for (i, (path, port)) in ports.iter().enumerate() {
            if *port == 0 {
                return err((*path).into(), "must not be 0".into());
            }
            if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port) {
                return err((*path).into(), format!("port {port} is already used by `{other}`"));
            }
        }
        if self.sidecar.timeout_ms == 0 {
            return err("sidecar.timeoutMs".into(), "must be positive".into());
        }
        self.timeouts.validate(&self.models)?;
        Ok(())
    }

    /// Pick the provider, upstream model and upstream API for a request.
    ///
    /// A model alias routes to its first target the client can reach: a
    /// provider speaking the client's API, or, for chat requests, a provider
    /// of the other family through translation. Any other model goes to the
    /// first provider (by name) of the model's own family (`claude-*`:
    /// Anthropic; `gemini-*`: Gemini; anything else: OpenAI), translated if the client speaks the
    /// other family; failing that, to the first provider speaking the
    /// client's API, unchanged.
    pub fn route<'a>(&'a self, api: ApiKind, model: &'a str) -> Result<Route<'a>, Error> {
        let family = api.family();
        let translatable = matches!(api, ApiKind::OpenAiChat | ApiKind::AnthropicMessages);
        if let Some(route) = self.models.get(model) {
            return route
                .targets
                .iter()
                .find_map(|t| {
                    let api = self.reach(api, &t.provider, &t.model)?;
                    Some(Route { provider: &t.provider, model: &t.model, api })
                })
                .ok_or_else(|| Error::UnknownModel(model.to_string()));
        }
        let native = model_family(model);
        if translatable {
            // A model by its own name goes to its maker's API first (Claude
            // on Vertex AI is reached through an alias).
            let own = |p: &Provider| {
                p.kind.serves(native) && !(p.kind == ProviderKind::VertexAi && native == ApiFamily::Anthropic)
            };
            if let Some((name, _)) = self.providers.iter().find(|(_, p)| own(p)) {
                return Ok(Route { provider: name, model, api: chat_api(native) }.or_native(api));
            }
        }
        self.providers
            .iter()
            .find(|(_, p)| p.kind.serves(family))
            .map(|(name, _)| Route { provider: name, model, api })
            .ok_or_else(|| Error::UnknownModel(model.to_string()))
    }

    /// The API `provider` is called with for a request of API `api` for
    /// `model`, if it can serve it at all: its own API, or another family's
    /// chat API through translation. The mock speaks every family and
    /// answers in the model's own (a Claude model over the Messages API, a
    /// Gemini model over `generateContent`, as a real provider would).
    pub fn reach(&self, api: ApiKind, provider: &str, model: &str) -> Option<ApiKind> {
        let family = api.family();
        let translatable = matches!(api, ApiKind::OpenAiChat | ApiKind::AnthropicMessages);
        let kind = self.providers.get(provider)?.kind;
        let prefer_other = kind == ProviderKind::Mock && model_family(model) != family;
        let target = kind.chat_family(model);
        if kind.serves(family) && !(prefer_other && translatable) {
            Some(api)
        } else if translatable && crate::translate::Direction::for_pair(family, target).is_some() {
            Some(chat_api(target))
        } else {
            None
        }
    }

    /// The alias's targets when it has several (or one with its own
    /// `attemptTimeoutMs`): Envoy tries them in order, moving on after a
    /// 429, a 5xx, a reset, a refused connection or the attempt timeout.
    pub fn fallback(&self, model: &str) -> Option<&ModelRoute> {
        // One target with its own attempt timeout takes the same route: the
        // providers' shared routes only know `timeouts.attemptMs`.
        self.models.get(model).filter(|r| r.targets.len() > 1 || r.attempt_timeout_ms.is_some())
    }

    /// The provider that receives traffic nothing else claims (non-AI paths,
    /// and everything when the sidecar is bypassed): the first by name.
    pub fn default_provider(&self) -> Option<&str> {
        self.providers.keys().next().map(String::as_str)
    }
}

impl Inspection {
    /// Every buffer cap is positive and under [`MAX_BUFFER_BYTES`].
    pub fn validate(&self) -> Result<(), Error> {
        let caps = [
            ("inspection.maxBodyBytes", self.max_body_bytes),
            ("inspection.maxResponseBytes", self.max_response_bytes),
            ("inspection.maxSseEventBytes", self.max_sse_event_bytes),
            ("inspection.maxMaskBytes", self.max_mask_bytes),
        ];
        for (path, v) in caps {
            if v == 0 || v > MAX_BUFFER_BYTES {
                return Err(Error::Policy {
                    path: path.into(),
                    message: format!("must be between 1 and {MAX_BUFFER_BYTES}"),
                });
            }
        }
        self.pii.validate().map_err(|e| match e {
            Error::Policy { path, message } => Error::Policy { path: format!("inspection.pii.{path}"), message },
            other => other,
        })?;
        self.firewall.validate_at("inspection.firewall")?;
        self.output.validate().map_err(|e| match e {
            Error::Policy { path, message } => Error::Policy { path: format!("inspection.output.{path}"), message },
            other => other,
        })?;
        self.moderation.validate().map_err(|e| match e {
            Error::Policy { path, message } => Error::Policy { path: format!("inspection.moderation.{path}"), message },
            other => other,
        })
    }
}

/// Deserialize, naming the field of any error by its dotted path.
pub fn deserialize_named<'de, T, D>(de: D) -> Result<T, Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
    D::Error: std::fmt::Display,
{
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        Error::Policy { path: if path == "." { "(root)".into() } else { path }, message: e.inner().to_string() }
    })
}

/// Deserialize one JSON document (nothing may follow it), naming the field of any error.
pub fn from_json_named<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = deserialize_named(&mut de)?;
    de.end().map_err(|e| Error::Policy { path: "(root)".into(), message: e.to_string() })?;
    Ok(value)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Result<Policy, Error> {
        Policy::deserialize(serde_yaml_ng::Deserializer::from_str(s))
    }

    const BASE: &str = "
providers:
  openai: {kind: openai, baseUrl: 'https://api.openai.com', keyEnv: OPENAI_API_KEY}
  claude: {kind: anthropic, baseUrl: 'https://api.anthropic.com'}
models:
  smart: {targets: [{provider: claude, model: claude-sonnet-4-5}, {provider: openai, model: gpt-4o}]}
";

    #[test]
    fn parses_yaml_with_defaults() {
        let p = yaml(BASE).unwrap();
        assert_eq!(p.listen.port, 10000);
        assert_eq!(p.fail_mode.filter, FailMode::Closed);
        assert_eq!(p.fail_mode.sidecar, FailMode::Open);
        assert_eq!(p.inspection.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(p.providers["openai"].key_env.as_deref(), Some("OPENAI_API_KEY"));
    }

    #[test]
    fn json_and_yaml_agree() {
        let p = yaml(BASE).unwrap();
        let json = serde_json::to_vec(&p).unwrap();
        assert_eq!(Policy::from_json(&json).unwrap(), p);
    }

    #[test]
    fn unknown_field_is_named() {
        let e = yaml("providers:\n  openai: {kind: openai, baseUrl: 'http://x', keyenv: A}\n").unwrap_err();
        match e {
            Error::Policy { path, message } => {
                assert_eq!(path, "providers.openai.keyenv");
                assert!(message.contains("keyenv"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_enum_value_is_named() {
        let e = yaml("providers:\n  x: {kind: cohere, baseUrl: 'http://x'}\n").unwrap_err();
        let Error::Policy { path, message } = e else { panic!() };
        assert_eq!(path, "providers.x.kind");
        assert!(message.contains("gemini"));
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let cases = [
            ("providers: {}\n", "providers"),
            ("providers:\n  x: {kind: openai, baseUrl: 'ftp://x'}\n", "providers.x.baseUrl"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x:99999'}\n", "providers.x.baseUrl"),
            (
                "providers:\n  x: {kind: openai, baseUrl: 'http://x'}\nmodels:\n  m: {targets: [{provider: y, model: a}]}\n",
                "models.m.targets[0].provider",
            ),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\nmodels:\n  m: {targets: []}\n", "models.m.targets"),
            (
                "providers:\n  x: {kind: openai, baseUrl: 'http://x'}\nmodels:\n  a/b: {targets: [{provider: x, model: a}, {provider: x, model: b}]}\n",
                "models.a/b",
            ),
            (
                "providers:\n  x: {kind: openai, baseUrl: 'http://x'}\nmodels:\n  m: {targets: [{provider: x, model: a, weight: 0}]}\n",
                "models.m.targets[0].weight",
            ),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ninspection: {maxBodyBytes: 0}\n", "inspection.maxBodyBytes"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\nlisten: {port: 9901}\n", "listen.adminPort"),
            ("providers:\n  'a b': {kind: openai, baseUrl: 'http://x'}\n", "providers.a b"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ninspection: {pii: {entities: {EMAIL: mask}}}\n", "inspection.pii.entities.EMAIL"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ninspection: {firewall: {block: 2}}\n", "inspection.firewall.block"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ninspection: {output: {windowBytes: 1}}\n", "inspection.output.windowBytes"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ninspection: {moderation: {threshold: 1.5}}\n", "inspection.moderation.threshold"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ninspection: {moderation: {output: {spam: block}}}\n", "inspection.moderation.output.?"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ninspection: {pii: {entities: {SECRET: hide}}}\n", "inspection.pii.entities.SECRET"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ntelemetry: {otlp: {endpoint: 'udp://x:4317'}}\n", "telemetry.otlp.endpoint"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ntelemetry: {otlp: {endpoint: 'http://x:4317/v1/traces'}}\n", "telemetry.otlp.endpoint"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ntelemetry: {otlp: {protocol: thrift}}\n", "telemetry.otlp.protocol"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ntelemetry: {otlp: {headers: {'a b': c}}}\n", "telemetry.otlp.headers.a b"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ntelemetry: {otlp: {serviceName: ''}}\n", "telemetry.otlp.serviceName"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ntelemetry: {otlp: {maxQueueSize: 0}}\n", "telemetry.otlp.maxQueueSize"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ntelemetry: {otlp: {endpoints: 'http://x'}}\n", "telemetry.otlp.endpoints"),
        ];
        for (src, want) in cases {
            match yaml(src) {
                Err(Error::Policy { path, .. }) => assert_eq!(path, want, "{src}"),
                other => panic!("{src}: {other:?}"),
            }
        }
    }

    #[test]
    fn telemetry_is_off_unless_configured() {
        let p = yaml(BASE).unwrap();
        assert_eq!(p.telemetry.otlp, None);
        // Absent, it is not written out either (rendered configs stay as they were).
        assert!(!serde_json::to_string(&p).unwrap().contains("telemetry"));
        let p = yaml(&format!("{BASE}telemetry: {{otlp: {{}}}}\n")).unwrap();
        assert_eq!(p.telemetry.otlp, Some(Otlp::default()));
        let src = format!(
            "{BASE}telemetry: {{otlp: {{endpoint: 'https://otel.example.com:4317', protocol: grpc, serviceName: gw, headers: {{x-api-key: k}}}}}}\n"
        );
        let p = yaml(&src).unwrap();
        let otlp = p.telemetry.otlp.as_ref().unwrap();
        assert_eq!((otlp.endpoint.as_str(), otlp.service_name.as_str()), ("https://otel.example.com:4317", "gw"));
        assert_eq!(otlp.headers["x-api-key"], "k");
        let json = serde_json::to_vec(&p).unwrap();
        assert_eq!(Policy::from_json(&json).unwrap(), p);
    }

    #[test]
    fn base_url_parsing() {
        let u = BaseUrl::parse("https://api.openai.com").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.path.as_str()), (true, "api.openai.com", 443, ""));
        let u = BaseUrl::parse("http://127.0.0.1:8000/proxy/").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.path.as_str()), (false, "127.0.0.1", 8000, "/proxy"));
        let u = BaseUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        assert!(BaseUrl::parse("http://user@x").is_err());
        assert!(BaseUrl::parse("http://:80").is_err());
    }

    #[test]
    fn routing() {
        let route = |p: &Policy, api, model| {
            let r = p.route(api, model).unwrap();
            (r.provider.to_string(), r.model.to_string(), r.api)
        };
        let p = yaml(BASE).unwrap();
        assert_eq!(
            route(&p, ApiKind::AnthropicMessages, "smart"),
            ("claude".into(), "claude-sonnet-4-5".into(), ApiKind::AnthropicMessages)
        );
        // Targets keep their order: an OpenAI chat client reaches the Claude target through translation ...
        let r = p.route(ApiKind::OpenAiChat, "smart").unwrap();
        assert_eq!((r.provider, r.api), ("claude", ApiKind::AnthropicMessages));
        assert_eq!(r.translation(ApiKind::OpenAiChat), Some(crate::translate::Direction::OpenAiToAnthropic));
        // ... but an API that cannot be translated takes the first target speaking it.
        assert_eq!(
            route(&p, ApiKind::OpenAiEmbeddings, "smart"),
            ("openai".into(), "gpt-4o".into(), ApiKind::OpenAiEmbeddings)
        );
        // Models outside aliases go to a provider of their own family.
        assert_eq!(
            route(&p, ApiKind::OpenAiChat, "gpt-4o-mini"),
            ("openai".into(), "gpt-4o-mini".into(), ApiKind::OpenAiChat)
        );
        assert_eq!(
            route(&p, ApiKind::OpenAiChat, "claude-haiku-4-5"),
            ("claude".into(), "claude-haiku-4-5".into(), ApiKind::AnthropicMessages)
        );
        assert_eq!(
            route(&p, ApiKind::AnthropicMessages, "gpt-4o"),
            ("openai".into(), "gpt-4o".into(), ApiKind::OpenAiChat)
        );
        assert_eq!(
            route(&p, ApiKind::OpenAiResponses, "gpt-4o"),
            ("openai".into(), "gpt-4o".into(), ApiKind::OpenAiResponses)
        );
        let only_openai = yaml("providers:\n  o: {kind: openai, baseUrl: 'http://x'}\n").unwrap();
        assert_eq!(
            only_openai.route(ApiKind::AnthropicMessages, "claude-x"),
            Err(Error::UnknownModel("claude-x".into()))
        );
        // The mock speaks both families and serves each model in its own.
        let mock = yaml("providers:\n  m: {kind: mock, baseUrl: 'http://x'}\n").unwrap();
        assert_eq!(route(&mock, ApiKind::OpenAiChat, "claude-haiku-4-5").2, ApiKind::AnthropicMessages);
        assert_eq!(route(&mock, ApiKind::AnthropicMessages, "gpt-4o-mini").2, ApiKind::OpenAiChat);
        assert_eq!(route(&mock, ApiKind::AnthropicMessages, "claude-haiku-4-5").2, ApiKind::AnthropicMessages);
        assert_eq!(route(&mock, ApiKind::OpenAiEmbeddings, "text-embedding-3-small").2, ApiKind::OpenAiEmbeddings);
        assert_eq!(p.default_provider(), Some("claude"));
    }
}
