//! Property checks over the sidecar's per-stream handlers
//! (`tollgate_ext_proc::processor::{handle, finish}`), driven with
//! arbitrary sequences of ext_proc messages decoded from the input: request
//! headers (method, API paths and others, credentials, content types,
//! spoofed `x-tollgate-*` headers), request bodies (JSON built from the
//! input or raw bytes, in chunks), response headers (statuses, content
//! types), response bodies (recorded answers or raw bytes, in chunks) and
//! trailers, in any order and repeated, then `finish`. Three gateways,
//! built as the sidecar builds them (`config::build_shared`), each input
//! with an embedded limit store and an audit log of its own in a temporary
//! directory: no access control with the audit on; virtual keys, limits
//! and the audit; virtual keys without limits or audit. The fuzz target `sidecar` and
//! the corpus test (`ext-proc-server/tests/fuzz_corpus.rs`) call the same
//! function.
//!
//! Input: byte 0 picks the gateway, byte 1 the audit's text mode and fail
//! mode; then one message (or one body in chunks) per op until the input
//! ends (at most [`MAX_OPS`]).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "input.rs"]
pub mod input;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation, processing_request, processing_response, HeaderMutation, HttpBody, HttpHeaders, HttpTrailers,
    ProcessingRequest, ProcessingResponse,
};
use envoy_types::pb::google::protobuf::{value, Struct, Value};
use serde_json::{json, Value as Json};
use tollgate_core::policy::{AuditText, FailMode, Policy};
use tollgate_core::{ApiFamily, ApiKind};
use tollgate_ext_proc::audit::inflight::InFlight;
use tollgate_ext_proc::audit::{AuditOptions, AuditWriter, FsyncPolicy};
use tollgate_ext_proc::auditing::AuditSink;
use tollgate_ext_proc::budget::Budget;
use tollgate_ext_proc::config::{build_shared, parse_policy};
use tollgate_ext_proc::credentials::Credential;
use tollgate_ext_proc::keys::KeyFile;
use tollgate_ext_proc::limits::embedded::EmbeddedStore;
use tollgate_ext_proc::processor::{finish, handle, StreamState};
use tollgate_ext_proc::shared::Shared;

use input::{chunks, Input};

/// A property check over one fuzz input.
pub type Check = fn(&[u8]);

pub const TARGETS: &[(&str, Check)] = &[("sidecar", sidecar)];

/// At most this many ops (messages or chunked bodies) per input.
pub const MAX_OPS: usize = 48;

/// The gateways: 0 no access control, audit on; 1 virtual keys, budgets
/// and audit; 2 virtual keys alone.
pub const GATEWAYS: usize = 3;

const PROVIDERS: &str = "providers:\n  mock: {kind: mock, baseUrl: 'http://127.0.0.1:1'}\n  claude: {kind: anthropic, baseUrl: 'https://api.anthropic.com'}\n  gem: {kind: gemini, baseUrl: 'https://generativelanguage.googleapis.com'}\n";

const MODELS: &str = "models:\n  fast: {targets: [{provider: mock, model: mock-small}]}\n  sonnet: {targets: [{provider: claude, model: claude-sonnet-4-5}]}\n  flash: {targets: [{provider: gem, model: gemini-2.0-flash}]}\n  fb: {targets: [{provider: mock, model: mock-small}, {provider: claude, model: claude-haiku-4-5}]}\n";

const FIREWALL: &str =
    "inspection:\n  firewall:\n    rules:\n      - {id: test-block, phrases: ['magic words'], weight: 1.0}\n";

const TEAMS_UNLIMITED: &str = "teams:\n  small: {}\n  paid: {}\n  free: {}\nconsumers:\n  alice: {team: small}\n  bob: {team: paid}\n  cy: {team: free}\n";

const TEAMS: &str = "teams:\n  small: {limits: {tokensPerMinute: 60}}\n  paid: {limits: {costPerDay: 0.0001}}\n  free: {}\nconsumers:\n  alice: {team: small}\n  bob: {team: paid}\n  cy: {team: free}\n";

/// Who holds a key in the key store (`dave` is not in the policy).
const KEY_HOLDERS: [&str; 4] = ["alice", "bob", "cy", "dave"];

/// The paths a request can name: every API, a path with a query or a
/// trailing slash, the pass-through prefix, and paths that are not the API.
pub const PATHS: [&str; 16] = [
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/responses",
    "/v1/completions",
    "/v1/embeddings",
    "/v1beta/models/flash:generateContent",
    "/v1beta/models/fast:streamGenerateContent?alt=sse",
    "/model/fast/converse",
    "/model/sonnet/converse-stream",
    "/v1/chat/completions/",
    "/v1/messages?beta=true",
    "/v1/files/file-1",
    "/v1/models",
    "/healthz",
    "/v1/unknown",
    "",
];

const MODEL_NAMES: [&str; 10] =
    ["fast", "sonnet", "flash", "fb", "gpt-4o-mini", "claude-haiku-4-5", "gemini-2.0-flash", "mock-small", "nope", ""];

const CONTENT_TYPES: [&str; 6] = [
    "application/json",
    "text/event-stream",
    "text/event-stream; charset=utf-8",
    "text/plain",
    "application/vnd.amazon.eventstream",
    "",
];

const STATUSES: [&str; 10] = ["200", "200", "201", "400", "401", "429", "500", "503", "abc", ""];

/// Client headers the gateway alone may set, with a value marking them.
const SPOOFS: [&str; 6] = [
    "x-tollgate-provider",
    "x-tollgate-request-id",
    "X-Tollgate-Consumer",
    "x-tollgate-backend",
    "x-tollgate-blocked-by",
    "x-tollgate-inspection",
];
const SPOOF_VALUE: &str = "spoofed-by-client";

/// The filter's inspection reports a response may carry.
const REPORTS: [&str; 4] =
    ["", r#"{"firewall":{"score":0.5,"action":"flag","rules":["from-the-filter"]}}"#, "{not json", "{}"];

/// Recorded answers (the text from the input goes where `TEXT` is).
const ANSWERS: [&str; 6] = [
    r#"{"id":"c1","object":"chat.completion","model":"mock-small","choices":[{"index":0,"message":{"role":"assistant","content":"TEXT"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}"#,
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"TEXT\"}}]}\n\ndata: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" more words here\"},\"finish_reason\":\"stop\"}]}\n\ndata: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":200,\"total_tokens\":209}}\n\ndata: [DONE]\n\n",
    r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"TEXT"}],"stop_reason":"end_turn","usage":{"input_tokens":9,"output_tokens":12}}"#,
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-haiku-4-5\",\"content\":[],\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"TEXT\"}}\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":150}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"TEXT\"}]}}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":100,\"totalTokenCount\":109}}\n\n",
    r#"{"error":{"message":"TEXT","type":"server_error"}}"#,
];

/// One gateway over a temporary directory (keys, limits, audit log).
pub struct Gateway {
    pub shared: Shared,
    /// The virtual keys of [`KEY_HOLDERS`] and a revoked one, in order (none
    /// without a key store).
    pub keys: Vec<String>,
    pub audit_dir: Option<std::path::PathBuf>,
}

/// The key store every gateway with keys reads (made once per process) and
/// its keys: [`KEY_HOLDERS`]'s, then a revoked one.
fn key_store() -> &'static (std::path::PathBuf, Vec<String>) {
    static STORE: OnceLock<(std::path::PathBuf, Vec<String>)> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("tollgate-fuzz-keys").tempdir().unwrap().keep();
        let key_path = dir.join("keys.yaml");
        let mut file = KeyFile::default();
        let mut keys = Vec::new();
        for holder in KEY_HOLDERS {
            keys.push(file.create(holder, None, SystemTime::now()).unwrap().0);
        }
        let (revoked, record) = file.create("cy", None, SystemTime::now()).unwrap();
        file.revoke(&record.id).unwrap();
        keys.push(revoked);
        file.save(&key_path).unwrap();
        (key_path, keys)
    })
}

/// The gateways' policies, parsed and validated once (validation compiles
/// every pattern: the bulk of the time an input would take).
fn policies() -> &'static [Policy] {
    static POLICIES: OnceLock<Vec<Policy>> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let access = format!("access: {{require: key, keyStore: '{}'}}\n", key_store().0.display());
        (0..GATEWAYS)
            .map(|which| {
                let audit = format!("audit: {{enabled: {}, fsync: never}}\n", which <= 1);
                let text = match which {
                    0 => format!("{PROVIDERS}{MODELS}{FIREWALL}{audit}access: {{passthrough: ['/v1/files*']}}\n"),
                    1 => format!("{PROVIDERS}{MODELS}{FIREWALL}{audit}{access}{TEAMS}"),
                    _ => format!("{PROVIDERS}{MODELS}{audit}{access}{TEAMS_UNLIMITED}"),
                };
                let policy = parse_policy(&text).unwrap();
                policy.validate().unwrap();
                policy
            })
            .collect()
    })
}

/// The gateways as the sidecar starts them (`config::build_shared`), built
/// once per process over a directory of their own; each input gets a copy
/// with stores of its own (see [`gateway`]).
fn bases() -> &'static [Shared] {
    static BASES: OnceLock<Vec<Shared>> = OnceLock::new();
    BASES.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("tollgate-fuzz-gateways").tempdir().unwrap().keep();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        policies()
            .iter()
            .enumerate()
            .map(|(which, policy)| {
                let mut policy = policy.clone();
                let dir = dir.join(which.to_string());
                policy.limits.dir = Some(dir.join("limits").display().to_string());
                policy.audit.dir = Some(dir.join("audit").display().to_string());
                let mut shared = rt.block_on(build_shared(policy, &dir.join("policy.yaml"))).unwrap();
                let mut credentials = HashMap::new();
                credentials.insert("claude".to_string(), Credential::new("x-api-key", "sk-ant-provider".into()));
                credentials.insert("gem".to_string(), Credential::new("x-goog-api-key", "gem-provider".into()));
                shared.credentials = Arc::new(credentials);
                shared
            })
            .collect()
    })
}

/// Gateway `which` with a limit store and an audit log of its own under
/// `dir` (and fresh metrics and latencies: nothing carries over from one
/// input to the next); `audit` picks the audit's text and fail modes.
pub fn gateway(dir: &Path, which: usize, audit: u8) -> Gateway {
    let mut shared = bases()[which].clone();
    shared.metrics = Arc::default();
    shared.latencies = Arc::default();
    let store = EmbeddedStore::open(&dir.join("limits")).unwrap();
    shared.budget = Some(Budget::new(store.into(), &shared.policy));
    let audit_dir = dir.join("audit");
    if shared.audit.is_some() {
        let options = AuditOptions { fsync: FsyncPolicy::Never, ..Default::default() };
        let writer = AuditWriter::open(&audit_dir, options).unwrap();
        let (inflight, _) = InFlight::open(&audit_dir).unwrap();
        shared.audit = Some(Arc::new(AuditSink {
            writer,
            text: [AuditText::None, AuditText::Masked, AuditText::Full][audit as usize % 3],
            fail_mode: if audit & 0x10 == 0 { FailMode::Closed } else { FailMode::Open },
            errors: Default::default(),
            inflight: Some(inflight),
        }));
    }
    let keys = if which == 0 { Vec::new() } else { key_store().1.clone() };
    Gateway { audit_dir: shared.audit.is_some().then_some(audit_dir), shared, keys }
}

/// One message as sent, with what the check needs to know about it.
pub enum Sent {
    RequestHeaders {
        /// The API the path and method name (`None`: not an API call).
        api: Option<ApiKind>,
        /// The client's `x-tollgate-*` header names.
        spoofs: Vec<String>,
        inspected: bool,
        anthropic_version: bool,
        passes_through: bool,
    },
    RequestBody,
    ResponseHeaders,
    ResponseBody,
    RequestTrailers,
    ResponseTrailers,
}

/// `body` as one request (or `response`) body message, or in chunks (`op`
/// bit 0x20, cut by `seed`), the last one ending the stream unless `op` bit
/// 0x10 is set.
fn body_messages(body: &[u8], op: u8, seed: u16, response: bool, out: &mut Vec<(ProcessingRequest, Sent)>) {
    let last_eos = op & 0x10 == 0;
    let parts = if op & 0x20 == 0 { vec![body] } else { chunks(body, seed) };
    let n = parts.len();
    for (i, part) in parts.into_iter().enumerate() {
        let b = HttpBody { body: part.to_vec(), end_of_stream: i + 1 == n && last_eos, ..Default::default() };
        let (request, sent) = if response {
            (processing_request::Request::ResponseBody(b), Sent::ResponseBody)
        } else {
            (processing_request::Request::RequestBody(b), Sent::RequestBody)
        };
        out.push((ProcessingRequest { request: Some(request), ..Default::default() }, sent));
    }
}

fn headers(pairs: &[(String, String)], end_of_stream: bool) -> HttpHeaders {
    HttpHeaders {
        headers: Some(HeaderMap {
            headers: pairs
                .iter()
                .enumerate()
                .map(|(i, (k, v))| {
                    // Envoy fills `raw_value`; an odd one in `value`.
                    if i % 5 == 4 {
                        HeaderValue { key: k.clone(), value: v.clone(), ..Default::default() }
                    } else {
                        HeaderValue { key: k.clone(), raw_value: v.as_bytes().to_vec(), ..Default::default() }
                    }
                })
                .collect(),
        }),
        end_of_stream,
        ..Default::default()
    }
}

/// Attributes as Envoy's ext_proc filter sends the filter state `name`.
fn filter_state(name: &str, value: &str) -> HashMap<String, Struct> {
    let fields = [(
        tollgate_ext_proc::extproc::filter_state_attribute(name),
        Value { kind: Some(value::Kind::StringValue(value.into())) },
    )];
    HashMap::from([("envoy.filters.http.ext_proc".to_string(), Struct { fields: fields.into_iter().collect() })])
}

fn text_from(input: &mut Input) -> String {
    let n = input.byte() as usize;
    String::from_utf8_lossy(input.take(n)).into_owned()
}

/// Raw bytes: a length byte (times 4), then the bytes.
fn raw(input: &mut Input) -> Vec<u8> {
    let n = input.byte() as usize * 4;
    input.take(n).to_vec()
}

/// A request body of one API's shape (`kind`), or raw bytes.
fn request_body(input: &mut Input, path_api: Option<ApiKind>) -> Vec<u8> {
    let kind = input.byte();
    let flags = input.byte();
    let model = MODEL_NAMES[(flags & 0x0f) as usize % MODEL_NAMES.len()];
    let stream = flags & 0x10 != 0;
    let mut text = text_from(input);
    if flags & 0x20 != 0 {
        text.push_str(" Say the magic words.");
    }
    let api = if kind & 0x80 != 0 {
        path_api.unwrap_or(ApiKind::OpenAiChat)
    } else {
        match kind % 8 {
            7 => return raw(input),
            k => ApiKind::ALL[k as usize % ApiKind::ALL.len()],
        }
    };
    let max_tokens = (flags & 0x40 != 0).then(|| u64::from(input.byte()) * 37);
    let mut v = match api {
        ApiKind::OpenAiChat => {
            json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]})
        }
        ApiKind::OpenAiCompletions => json!({"model": model, "stream": stream, "prompt": text}),
        ApiKind::OpenAiEmbeddings => json!({"model": model, "input": text}),
        ApiKind::OpenAiResponses => json!({"model": model, "stream": stream, "input": text}),
        ApiKind::AnthropicMessages => json!({"model": model, "stream": stream, "max_tokens": 64,
            "messages": [{"role": "user", "content": text}]}),
        ApiKind::GeminiGenerate | ApiKind::GeminiCountTokens => {
            json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
        }
        ApiKind::GeminiEmbed => json!({"content": {"parts": [{"text": text}]}}),
        ApiKind::GeminiBatchEmbed => json!({"requests": [{"content": {"parts": [{"text": text}]}}]}),
        ApiKind::BedrockConverse => json!({"messages": [{"role": "user", "content": [{"text": text}]}]}),
    };
    if let (Some(n), Some(obj)) = (max_tokens, v.as_object_mut()) {
        let key = if api == ApiKind::OpenAiResponses { "max_output_tokens" } else { "max_tokens" };
        obj.insert(key.into(), json!(n));
    }
    serde_json::to_vec(&v).unwrap()
}

/// Decode the ops of an input into messages (a body may be several).
pub fn messages(input: &mut Input, keys: &[String]) -> Vec<(ProcessingRequest, Sent)> {
    let mut out = Vec::new();
    let mut path_api = None;
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.byte();
        match op % 8 {
            0 | 6 => {
                let path = PATHS[input.byte() as usize % PATHS.len()];
                let bits = input.byte();
                let more = input.byte();
                let method = match bits % 4 {
                    0 | 1 => "POST",
                    2 => "GET",
                    _ => "post",
                };
                let mut pairs: Vec<(String, String)> = Vec::new();
                if bits & 0x04 == 0 {
                    pairs.push((":method".into(), method.into()));
                }
                if !path.is_empty() || bits & 0x08 == 0 {
                    pairs.push((":path".into(), path.into()));
                }
                let credential = match (more % 8, keys.is_empty()) {
                    (0, _) => None,
                    (k @ 1..=5, false) => Some(format!("Bearer {}", keys[(k - 1) as usize])),
                    (6, false) => Some(format!("Bearer tg-{}", "0".repeat(24))),
                    (_, _) => Some("Bearer sk-client-key".into()),
                };
                if let Some(c) = credential {
                    if more & 0x08 != 0 {
                        pairs.push(("x-api-key".into(), c.trim_start_matches("Bearer ").into()));
                    } else {
                        pairs.push(("authorization".into(), c));
                    }
                }
                pairs.push(("content-type".into(), CONTENT_TYPES[(more as usize >> 4) % CONTENT_TYPES.len()].into()));
                let anthropic_version = more & 0x40 != 0;
                if anthropic_version {
                    pairs.push(("anthropic-version".into(), "2023-06-01".into()));
                }
                if more & 0x80 != 0 {
                    pairs.push(("x-request-id".into(), "client-rid".into()));
                }
                let spoof_bits = input.byte();
                let mut spoofs = Vec::new();
                for (i, name) in SPOOFS.iter().enumerate() {
                    if spoof_bits & (1 << i) != 0 {
                        pairs.push(((*name).into(), SPOOF_VALUE.into()));
                        spoofs.push(name.to_string());
                    }
                }
                if spoof_bits & 0x40 != 0 {
                    pairs.push(("x-tollgate-cache-namespace".into(), "ns".into()));
                }
                let inspected = spoof_bits & 0x80 != 0;
                let end_of_stream = bits & 0x10 != 0;
                let has_method = bits & 0x04 == 0;
                let has_path = !path.is_empty() || bits & 0x08 == 0;
                let api = if has_method && method == "POST" && has_path { ApiKind::from_path(path) } else { None };
                path_api = api.or(path_api);
                let passes_through = path.starts_with("/v1/files") && pairs.iter().any(|(k, _)| k == ":path");
                let mut req = ProcessingRequest {
                    request: Some(processing_request::Request::RequestHeaders(headers(&pairs, end_of_stream))),
                    ..Default::default()
                };
                if inspected {
                    req.attributes = filter_state(tollgate_core::headers::INSPECTING_STATE, "1");
                }
                out.push((req, Sent::RequestHeaders { api, spoofs, inspected, anthropic_version, passes_through }));
            }
            1 | 7 => {
                let body = request_body(input, path_api);
                let seed = input.u16();
                body_messages(&body, op, seed, false, &mut out);
            }
            2 => {
                let a = input.byte();
                let b = input.byte();
                let mut pairs: Vec<(String, String)> = Vec::new();
                let status = STATUSES[(a & 0x0f) as usize % STATUSES.len()];
                if !status.is_empty() {
                    pairs.push((":status".into(), status.into()));
                }
                let content_type = CONTENT_TYPES[(a as usize >> 4) % CONTENT_TYPES.len()];
                if !content_type.is_empty() {
                    pairs.push(("content-type".into(), content_type.into()));
                }
                if b & 0x01 != 0 {
                    pairs.push(("x-tollgate-backend".into(), "claude".into()));
                    pairs.push(("x-tollgate-model".into(), "claude-haiku-4-5".into()));
                }
                if b & 0x02 != 0 {
                    pairs.push(("x-envoy-attempt-count".into(), "2".into()));
                }
                if b & 0x04 != 0 {
                    pairs.push(("x-tollgate-blocked-by".into(), "test-block".into()));
                }
                if b & 0x08 != 0 {
                    pairs.push(("content-length".into(), "123".into()));
                }
                let end_of_stream = b & 0x10 != 0;
                let mut req = ProcessingRequest {
                    request: Some(processing_request::Request::ResponseHeaders(headers(&pairs, end_of_stream))),
                    ..Default::default()
                };
                let report = REPORTS[(b as usize >> 5) % REPORTS.len()];
                if !report.is_empty() {
                    req.attributes = filter_state(tollgate_core::headers::INSPECTION_STATE, report);
                }
                out.push((req, Sent::ResponseHeaders));
            }
            3 | 5 => {
                let which = input.byte();
                let body = if which as usize % 8 < ANSWERS.len() {
                    let text = text_from(input);
                    let text = serde_json::to_string(&text).unwrap();
                    ANSWERS[which as usize % 8].replace("TEXT", &text[1..text.len() - 1]).into_bytes()
                } else {
                    raw(input)
                };
                let seed = input.u16();
                body_messages(&body, op, seed, true, &mut out);
            }
            _ => {
                let trailers = HttpTrailers { trailers: Some(HeaderMap::default()) };
                if op & 0x10 == 0 {
                    let req = ProcessingRequest {
                        request: Some(processing_request::Request::RequestTrailers(trailers)),
                        ..Default::default()
                    };
                    out.push((req, Sent::RequestTrailers));
                } else {
                    let req = ProcessingRequest {
                        request: Some(processing_request::Request::ResponseTrailers(trailers)),
                        ..Default::default()
                    };
                    out.push((req, Sent::ResponseTrailers));
                }
            }
        }
    }
    out
}

/// The family an error answer is shaped for, from its body.
fn error_family(v: &Json) -> Option<ApiFamily> {
    let obj = v.as_object()?;
    if v["type"] == "error" && v["error"]["type"].is_string() && v["error"]["message"].is_string() {
        return Some(ApiFamily::Anthropic);
    }
    if v["error"]["message"].is_string() && v["error"]["type"].is_string() && obj.len() == 1 {
        return Some(ApiFamily::OpenAi);
    }
    if v["error"]["code"].is_u64() && v["error"]["status"].is_string() && v["error"]["message"].is_string() {
        return Some(ApiFamily::Gemini);
    }
    if v["message"].is_string() && v["__type"].is_string() {
        return Some(ApiFamily::Bedrock);
    }
    None
}

fn header_value(h: &HeaderValue) -> String {
    if h.raw_value.is_empty() {
        h.value.clone()
    } else {
        String::from_utf8_lossy(&h.raw_value).into_owned()
    }
}

/// Every header a mutation sets: name (lowercased) and value.
fn set_headers(m: &HeaderMutation) -> Vec<(String, String)> {
    m.set_headers
        .iter()
        .filter_map(|o| o.header.as_ref())
        .map(|h| (h.key.to_ascii_lowercase(), header_value(h)))
        .collect()
}

/// What the check carries from message to message.
#[derive(Default)]
struct Seen {
    /// The client API of the request headers last handled (an immediate
    /// answer is shaped for it).
    family: Option<ApiFamily>,
    /// The stream's first request headers were handled.
    named: bool,
    /// The client set `x-tollgate-request-id` and no filter named the request.
    spoofed_request_id: bool,
    immediates: usize,
    routed: bool,
}

/// No header the gateway sets carries a client's spoofed value (but the
/// request id the filter named, `request_id_ok`).
fn check_mutation(m: &HeaderMutation, what: &str, request_id_ok: bool) {
    for (k, v) in set_headers(m) {
        assert!(!k.is_empty(), "{what}: a header without a name");
        if request_id_ok && k == tollgate_core::headers::REQUEST_ID {
            continue;
        }
        if k.starts_with("x-tollgate-") {
            assert_ne!(v, SPOOF_VALUE, "{what}: the client's {k} survives");
        }
    }
}

/// Check one answer against the message it answers.
fn check(resp: &ProcessingResponse, sent: &Sent, seen: &mut Seen) {
    use processing_response::Response as R;
    let what = match sent {
        Sent::RequestHeaders { .. } => "request headers",
        Sent::RequestBody => "request body",
        Sent::ResponseHeaders => "response headers",
        Sent::ResponseBody => "response body",
        Sent::RequestTrailers => "request trailers",
        Sent::ResponseTrailers => "response trailers",
    };
    let Some(r) = resp.response.as_ref() else { panic!("{what}: an empty answer") };
    let paired = matches!(
        (sent, r),
        (Sent::RequestHeaders { .. }, R::RequestHeaders(_))
            | (Sent::RequestBody, R::RequestBody(_))
            | (Sent::ResponseHeaders, R::ResponseHeaders(_))
            | (Sent::ResponseBody, R::ResponseBody(_))
            | (Sent::RequestTrailers, R::RequestTrailers(_))
            | (Sent::ResponseTrailers, R::ResponseTrailers(_))
    ) || matches!(
        (sent, r),
        (
            Sent::RequestHeaders { .. } | Sent::RequestBody | Sent::ResponseHeaders | Sent::ResponseBody,
            R::ImmediateResponse(_)
        )
    );
    assert!(paired, "{what} answered with {r:?}");
    if let Some(mode) = &resp.mode_override {
        for v in
            [mode.request_header_mode, mode.response_header_mode, mode.request_trailer_mode, mode.response_trailer_mode]
        {
            assert!((0..=2).contains(&v), "{what}: header send mode {v}");
        }
        for v in [mode.request_body_mode, mode.response_body_mode] {
            assert!((0..=4).contains(&v), "{what}: body send mode {v}");
        }
    }
    let common = match r {
        R::RequestHeaders(h) | R::ResponseHeaders(h) => h.response.as_ref(),
        R::RequestBody(b) | R::ResponseBody(b) => b.response.as_ref(),
        R::ImmediateResponse(ir) => {
            seen.immediates += 1;
            let status = ir.status.as_ref().map_or(0, |s| s.code);
            assert!((400..600).contains(&status), "{what}: an immediate answer with status {status}");
            let body: Json = serde_json::from_slice(&ir.body).unwrap_or_else(|e| {
                panic!("{what}: immediate body is not JSON ({e}): {:?}", String::from_utf8_lossy(&ir.body))
            });
            let family = error_family(&body).unwrap_or_else(|| panic!("{what}: not an API error: {body}"));
            if let Some(expected) = seen.family {
                assert_eq!(family, expected, "{what}: error shaped for another API: {body}");
            }
            let m = ir.headers.as_ref().unwrap_or_else(|| panic!("{what}: an immediate answer without headers"));
            let set = set_headers(m);
            assert!(
                set.iter().any(|(k, v)| k == "content-type" && v == "application/json"),
                "{what}: immediate answer's content type: {set:?}"
            );
            check_mutation(m, what, !seen.spoofed_request_id);
            return;
        }
        _ => return,
    };
    let Some(common) = common else { return };
    if let Some(m) = &common.header_mutation {
        check_mutation(m, what, !seen.spoofed_request_id);
        if let Sent::RequestHeaders { spoofs, inspected, api, passes_through, .. } = sent {
            // A request that goes on has every client `x-tollgate-*` header removed.
            if api.is_some() || *passes_through {
                for name in spoofs {
                    let kept = *inspected && name.eq_ignore_ascii_case(tollgate_core::headers::REQUEST_ID);
                    let removed = m.remove_headers.iter().any(|r| r.eq_ignore_ascii_case(name));
                    assert!(kept || removed, "{what}: the client's {name} is not removed: {m:?}");
                }
            }
        }
    } else if let Sent::RequestHeaders { spoofs, api: Some(_), .. } = sent {
        assert!(spoofs.is_empty(), "{what}: an API request goes on with the client's {spoofs:?}");
    }
    if let (Sent::RequestBody, Some(bm)) = (sent, common.body_mutation.as_ref()) {
        seen.routed = true;
        if let Some(body_mutation::Mutation::Body(body)) = &bm.mutation {
            serde_json::from_slice::<Json>(body).unwrap_or_else(|e| panic!("{what}: the new body is not JSON: {e}"));
            let set = set_headers(common.header_mutation.as_ref().unwrap());
            let length = set.iter().find(|(k, _)| k == "content-length").map(|(_, v)| v.clone());
            assert_eq!(length, Some(body.len().to_string()), "{what}: content-length of the new body");
        }
    }
    if let Sent::RequestBody = sent {
        if common.clear_route_cache {
            seen.routed = true;
        }
    }
}

/// The property check of the `sidecar` target.
pub fn sidecar(data: &[u8]) {
    let mut input = Input::new(data);
    let which = input.byte() as usize % GATEWAYS;
    let audit = input.byte();
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), which, audit);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let msgs = messages(&mut input, &gw.keys);
    if std::env::var_os("SIDECAR_DEBUG").is_some() {
        eprintln!("{data:?}");
        for (m, _) in &msgs {
            eprintln!("SENT {:?}", m.request);
        }
    }
    let mut seen = Seen::default();
    rt.block_on(async {
        let mut state = StreamState::default();
        for (req, sent) in msgs {
            // Only a stream's first request headers name the request (the
            // sidecar ignores any later ones).
            if let (Sent::RequestHeaders { api, spoofs, inspected, anthropic_version, .. }, false) = (&sent, seen.named)
            {
                seen.named = true;
                seen.family = Some(match api {
                    Some(api) => api.family(),
                    None if *anthropic_version => ApiFamily::Anthropic,
                    None => ApiFamily::OpenAi,
                });
                seen.spoofed_request_id =
                    !inspected && spoofs.iter().any(|s| s.eq_ignore_ascii_case(tollgate_core::headers::REQUEST_ID));
            }
            let resp = handle(&gw.shared, &mut state, req).await;
            if std::env::var_os("SIDECAR_DEBUG").is_some() {
                eprintln!("{resp:?}\n  -> {state:?}");
            }
            check(&resp, &sent, &mut seen);
        }
        finish(&gw.shared, &mut state).await;
    });
    let audit_dir = gw.audit_dir.clone();
    drop(gw);
    drop(rt);
    if let Some(dir) = audit_dir {
        let records: Vec<_> = tollgate_ext_proc::audit::records(&dir)
            .unwrap()
            .map(|r| r.unwrap_or_else(|e| panic!("an audit record does not parse: {e}")))
            .collect();
        assert!(records.len() <= 1, "{} audit records for one stream: {records:?}", records.len());
        if seen.immediates > 0 || seen.routed {
            assert_eq!(records.len(), 1, "an answered stream without its audit record");
        }
        if seen.routed {
            // The record of the request that went to a provider, not of another.
            assert!(!records[0].provider.is_empty(), "a routed request recorded as {records:?}");
        }
        let report = tollgate_ext_proc::audit::verify(&dir).unwrap();
        assert!(report.is_ok(), "{report}");
    }
}
