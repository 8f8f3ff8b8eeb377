//! The shape of the policy file: [`Policy`] and its sections, with their
//! defaults. What the values mean for a request is in `routing`; what serde
//! cannot check is in `validate`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::values::{
    FailMode, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_MASK_BYTES, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_MAX_SSE_EVENT_BYTES,
};
use crate::access::{Access, Consumer, LimitStore, Team};
use crate::firewall::FirewallPolicy;
use crate::guard::OutputPolicy;
use crate::moderation::ModerationPolicy;
use crate::pii::PiiPolicy;
use crate::pricing::Price;

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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(super) mod tests {
    use super::*;
    use crate::error::Error;

    pub(crate) fn yaml(s: &str) -> Result<Policy, Error> {
        Policy::deserialize(serde_yaml_ng::Deserializer::from_str(s))
    }

    pub(crate) const BASE: &str = "
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
}
