//! Where one ext_proc stream is in its life, and what a routed request
//! carries from its request phases to its answer's.

use std::time::Duration;

use tollgate_core::ApiKind;

use crate::auditing::Draft;
use crate::budget::Held;
use crate::cache::{Control, Pending};
use crate::identity::Identity;
use crate::meter::Meter;
use crate::stream_usage::UsageChunkDrop;
use crate::translation::Translation;

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
