//! The policy: one file that is the source of truth for the gateway.
//!
//! Parsed with serde (`deny_unknown_fields` everywhere), then validated.
//! Every error names the field it is about, as a dotted path
//! (`providers.openai.baseUrl`).
//!
//! The module's files, each depending only on those listed before it:
//!
//! - `values`: the fail mode, the buffer bounds and [`BaseUrl`], which the
//!   sections of `access` and `mcp` use too;
//! - `parse`: reading any part of the policy with errors that name their
//!   field ([`deserialize_named`], [`from_json_named`]);
//! - `schema`: [`Policy`] and its sections, with their defaults;
//! - `routing`: where a request goes ([`Policy::route`], the providers'
//!   request paths, the order of an alias's targets);
//! - `validate`: [`Policy::deserialize`], [`Policy::from_json`] and
//!   [`Policy::validate`], everything serde cannot check.
//!
//! The modules whose sections the policy embeds (`access`, `cache`,
//! `firewall`, `mcp`) take what they need from `values` and `parse`
//! directly, so that no file of theirs depends on the policy as a whole.

pub(crate) mod parse;
mod routing;
mod schema;
mod validate;
pub(crate) mod values;

pub use parse::{deserialize_named, from_json_named};
pub use routing::{is_bedrock_claude, model_family, Route, AZURE_API_VERSION, VERTEX_ANTHROPIC_VERSION};
pub use schema::{
    envoy_duration, Audit, AuditText, FailModes, Inspection, Listen, ModelRoute, Otlp, OtlpProtocol, Policy, Provider,
    ProviderKind, Sidecar, SidecarTls, SidecarTlsMode, Strategy, Target, Telemetry, Timeouts,
};
pub use values::{
    BaseUrl, FailMode, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_MASK_BYTES, DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_SSE_EVENT_BYTES, MAX_BUFFER_BYTES,
};
