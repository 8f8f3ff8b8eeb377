//! `tollgate-mock`: an offline OpenAI-, Anthropic-, Gemini- and
//! Bedrock-compatible provider (the Gemini API, Vertex AI with its token
//! endpoint, Anthropic on Vertex AI: see `gemini`; Amazon Bedrock Runtime's
//! Converse and InvokeModel APIs with event-stream framing: see `bedrock`).
//!
//! Used by the quickstart when no provider key is set and by the end-to-end
//! tests through a real Envoy. Answers are deterministic and echo the prompt
//! (`"Mock reply to: <last user text>"`), token usage is
//! `ceil(chars / 4)` per text segment, and the wire format (JSON field order,
//! SSE framing, event sequences) follows recorded provider traffic. A small
//! MCP server with demo tools answers at `/mcp` ([`mcp`]).
//!
//! Entry points: [`serve`] on a bound listener (what `tollgate mock` and the
//! `tollgate-mock` binary use) and [`router`] for in-process use.

mod anthropic;
mod bedrock;
mod errors;
mod gemini;
pub mod mcp;
mod openai;
mod responses;
mod util;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

pub use errors::Api;
pub use util::{approx_tokens, REPLY_PREFIX};

/// Largest request body the mock accepts (413 beyond).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Google's OAuth2 token endpoint, for Vertex AI's service-account flow.
pub const TOKEN_PATH: &str = "/token";

/// How many requests `GET /mock/requests` keeps.
pub const RECORD_LIMIT: usize = 100;

/// Header names understood by the mock.
pub mod headers {
    /// Sent on every response: the provider's `--name`.
    pub const PROVIDER: &str = "x-mock-provider";
    /// Request: answer with this status and a provider-shaped error body.
    pub const STATUS: &str = "x-mock-status";
    /// Request: delay before the first byte, overrides `--latency-ms`.
    pub const LATENCY_MS: &str = "x-mock-latency-ms";
    /// Request: delay between SSE chunks, overrides `--chunk-delay-ms`.
    pub const CHUNK_DELAY_MS: &str = "x-mock-chunk-delay-ms";
    /// Request: close the connection without any response.
    pub const RESET: &str = "x-mock-reset";
    /// Text appended to the model's answer.
    pub const APPEND: &str = "x-mock-append";
    /// Request: fail or slow only requests for some models: `model=status`,
    /// `model=reset` or `model=delay<ms>`, comma-separated (fallback tests
    /// route one request to several models on one mock).
    pub const FAIL_MODEL: &str = "x-mock-fail-model";
    /// Request (Gemini API and Vertex AI): `prompt` answers with a prompt
    /// safety block (`promptFeedback.blockReason: SAFETY`, no candidates);
    /// `answer` with a candidate stopped by the safety filter
    /// (`finishReason: SAFETY`; streamed, after part of the text).
    pub const GEMINI_BLOCK: &str = "x-mock-gemini-block";
    /// Request (Bedrock streams): after half of the answer, end the stream
    /// with an exception frame for this HTTP-like code (429
    /// `throttlingException`, 400 `validationException`, 424
    /// `modelStreamErrorException`, 503 `serviceUnavailableException`,
    /// 408 `modelTimeoutException` (InvokeModel), else
    /// `internalServerException`).
    pub const BEDROCK_STREAM_ERROR: &str = "x-mock-bedrock-stream-error";
    /// Echoed back when present.
    pub const REQUEST_ID: &str = "x-request-id";
}

/// Behaviour of the mock provider (also the CLI flags of `tollgate mock` and
/// `tollgate-mock`).
#[derive(Clone, Debug, clap::Args)]
pub struct MockConfig {
    /// Delay before the first byte of every API response, in milliseconds.
    #[arg(long = "latency-ms", default_value_t = 0)]
    pub latency_ms: u64,
    /// Delay between SSE chunks of streamed responses, in milliseconds.
    #[arg(long = "chunk-delay-ms", default_value_t = 0)]
    pub chunk_delay_ms: u64,
    /// Every Nth API request gets a 500 (0 = never).
    #[arg(long = "fail-every", default_value_t = 0)]
    pub fail_every: u64,
    /// Every Nth API request gets a 429 with `retry-after: 1` (0 = never).
    #[arg(long = "rate-limit-every", default_value_t = 0)]
    pub rate_limit_every: u64,
    /// Name reported in the `x-mock-provider` header and in served model names.
    #[arg(long = "name", default_value = "mock")]
    pub name: String,
    /// Lifetime of the access tokens `POST /token` issues (Vertex AI's
    /// service-account flow), in seconds.
    #[arg(long = "token-ttl-secs", default_value_t = 3600)]
    pub token_ttl_secs: u64,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            chunk_delay_ms: 0,
            fail_every: 0,
            rate_limit_every: 0,
            name: "mock".to_owned(),
            token_ttl_secs: 3600,
        }
    }
}

/// One request as the mock received it (`GET /mock/requests`).
#[derive(Clone, Debug, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Lower-case names; repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The body as (lossy) UTF-8.
    pub body: String,
    /// Bedrock calls (`/model/…`): the decoded `modelId`, the `operation` and
    /// the `auth` used (`scheme` `sigv4` with `accessKeyId`, `date`,
    /// `region`, `service`, `terminator`, `signedHeaders`, `amzDate`,
    /// `sessionToken`; or `bearer`, `none`, `other`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bedrock: Option<serde_json::Value>,
}

pub(crate) struct AppState {
    pub(crate) config: MockConfig,
    pub(crate) ids: util::IdGen,
    pub(crate) mcp: mcp::Sessions,
    pub(crate) tokens: gemini::Tokens,
    api_requests: AtomicU64,
    records: Mutex<VecDeque<RecordedRequest>>,
}

impl AppState {
    fn new(config: MockConfig) -> Self {
        Self {
            config,
            ids: util::IdGen::new(),
            mcp: mcp::Sessions::default(),
            tokens: gemini::Tokens::default(),
            api_requests: AtomicU64::new(0),
            records: Mutex::new(VecDeque::with_capacity(RECORD_LIMIT)),
        }
    }

    fn record(&self, entry: RecordedRequest) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() >= RECORD_LIMIT {
            records.pop_front();
        }
        records.push_back(entry);
    }

    fn recorded(&self) -> Vec<RecordedRequest> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.iter().cloned().collect()
    }

    fn clear(&self) {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The chunk delay for one request (header overrides the flag).
    pub(crate) fn chunk_delay(&self, headers: &HeaderMap) -> Duration {
        Duration::from_millis(header_u64(headers, headers::CHUNK_DELAY_MS).unwrap_or(self.config.chunk_delay_ms))
    }
}

pub(crate) type Shared = Arc<AppState>;

/// The mock's routes with its middleware, for in-process use (e.g.
/// `axum::serve`). Everything works through it except `x-mock-reset`, which
/// needs [`serve`]'s own connection handling: through a bare router it aborts
/// the response right after the headers instead.
pub fn router(config: MockConfig) -> Router {
    let state: Shared = Arc::new(AppState::new(config));
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        // Azure OpenAI's deployment paths (`?api-version=` is recorded, not checked).
        .route("/openai/deployments/{deployment}/chat/completions", post(openai::chat_completions))
        .route("/openai/deployments/{deployment}/completions", post(openai::completions))
        .route("/openai/deployments/{deployment}/embeddings", post(openai::embeddings))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/responses", post(responses::create))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/models", get(models))
        // `GET` lists in OpenAI's or Anthropic's shape; `POST {model}:{verb}` is the Gemini API.
        .route("/v1/models/{id}", get(model).post(gemini::models_post))
        .route("/v1beta/models", get(gemini::list_models))
        .route("/v1beta/models/{id}", get(gemini::get_model).post(gemini::models_post))
        .route(
            "/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{id}",
            post(gemini::vertex_post),
        )
        .route(
            "/v1beta1/projects/{project}/locations/{location}/publishers/{publisher}/models/{id}",
            post(gemini::vertex_post),
        )
        .route(TOKEN_PATH, post(gemini::token))
        .route("/model/{model}/{operation}", post(bedrock::post))
        .route("/healthz", get(healthz))
        .route("/mock/requests", get(list_requests).delete(clear_requests))
        .route(mcp::PATH, post(mcp::post).get(mcp::get).delete(mcp::delete))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), control))
        .with_state(state)
}

/// Serves the mock on `listener` until `shutdown` completes, then stops
/// accepting and drains open connections (at most 5 s).
pub async fn serve(
    listener: TcpListener,
    config: MockConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(config);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => spawn_connection(stream, app.clone(), &graceful),
                Err(err) => {
                    // Usually EMFILE or a connection aborted before accept: back off a little.
                    tracing::warn!(error = %err, "mock provider: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(5)) => {
            tracing::warn!("mock provider: connections still open after 5 s, stopping anyway");
        }
    }
    Ok(())
}

/// Per-connection switch that `x-mock-reset` flips to drop the connection.
#[derive(Debug, Default)]
struct ConnReset {
    requested: AtomicBool,
    notify: Notify,
}

/// The TCP stream of one connection; when a reset was requested it closes
/// with `SO_LINGER=0`, so the peer sees a RST rather than a clean FIN.
struct ResetOnDrop {
    stream: TcpStream,
    reset: Arc<ConnReset>,
}

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if self.reset.requested.load(Ordering::Acquire) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ResetOnDrop {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResetOnDrop {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

fn spawn_connection(stream: TcpStream, app: Router, graceful: &hyper_util::server::graceful::GracefulShutdown) {
    let _ = stream.set_nodelay(true);
    let reset = Arc::new(ConnReset::default());
    let io = hyper_util::rt::TokioIo::new(ResetOnDrop { stream, reset: reset.clone() });
    let service = hyper_util::service::TowerToHyperService::new(app.layer(Extension(reset.clone())));
    let watcher = graceful.watcher();
    tokio::spawn(async move {
        let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        let conn = builder.serve_connection_with_upgrades(io, service);
        let conn = watcher.watch(conn.into_owned());
        tokio::select! {
            result = conn => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "mock provider: connection ended with an error");
                }
            }
            () = reset.notify.notified() => {
                tracing::debug!("mock provider: dropping connection (x-mock-reset)");
            }
        }
    });
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

pub(crate) fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    header_str(headers, name).and_then(|v| v.parse().ok())
}

fn is_truthy(value: Option<&str>) -> bool {
    matches!(value.map(str::to_ascii_lowercase).as_deref(), Some("1" | "true" | "yes" | "on"))
}

fn headers_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        map.entry(name.as_str().to_owned())
            .and_modify(|existing| {
                existing.push_str(", ");
                existing.push_str(&value);
            })
            .or_insert(value);
    }
    map
}

/// Records API requests, applies latency and the control headers and flags,
/// and stamps `x-mock-provider` / `x-request-id` on every response.
async fn control(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let request_id = req.headers().get(headers::REQUEST_ID).cloned();
    let path = req.uri().path().to_owned();
    let internal = path == "/healthz" || path.starts_with("/mock/");
    let mut resp = if internal {
        next.run(req).await
    } else if path == mcp::PATH || path == TOKEN_PATH {
        // Recorded, but the control headers and flags are for the model APIs.
        match recorded(&state, req, &path).await {
            Ok((parts, bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
            Err(()) => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        }
    } else {
        api_control(&state, req, next, &path).await
    };
    let out = resp.headers_mut();
    if let Ok(name) = HeaderValue::from_str(&state.config.name) {
        out.insert(HeaderName::from_static(headers::PROVIDER), name);
    }
    if let Some(id) = request_id {
        out.insert(HeaderName::from_static(headers::REQUEST_ID), id);
    }
    if !internal && Api::for_path(&path) == Api::Bedrock {
        // AWS answers every call, errors included, with a request id.
        if let Ok(id) = HeaderValue::from_str(&state.ids.uuid()) {
            out.insert(HeaderName::from_static("x-amzn-requestid"), id);
        }
    }
    resp
}

/// Reads the body and records the request; `Err` when the body is too large.
async fn recorded(
    state: &AppState,
    req: Request,
    path: &str,
) -> Result<(axum::http::request::Parts, bytes::Bytes), ()> {
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| ())?;
    state.record(RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path_and_query().map_or_else(|| path.to_owned(), |pq| pq.as_str().to_owned()),
        headers: headers_map(&parts.headers),
        body: String::from_utf8_lossy(&bytes).into_owned(),
        bedrock: bedrock::describe(path, &parts.headers),
    });
    Ok((parts, bytes))
}

async fn api_control(state: &AppState, req: Request, next: Next, path: &str) -> Response {
    let api = Api::for_path(path);
    let Ok((parts, bytes)) = recorded(state, req, path).await else {
        return errors::status_error(api, StatusCode::PAYLOAD_TOO_LARGE);
    };

    let counted = parts.method == Method::POST;
    let n = if counted { state.api_requests.fetch_add(1, Ordering::Relaxed) + 1 } else { 0 };

    let latency = header_u64(&parts.headers, headers::LATENCY_MS).unwrap_or(state.config.latency_ms);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }

    if is_truthy(header_str(&parts.headers, headers::RESET)) {
        return reset_connection(parts.extensions.get::<Arc<ConnReset>>()).await;
    }
    if let Some(rule) = header_str(&parts.headers, headers::FAIL_MODEL).and_then(|v| fail_rule(v, &bytes, path)) {
        match rule.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
            Some(status) => return errors::status_error(api, status),
            None if rule == "reset" => return reset_connection(parts.extensions.get::<Arc<ConnReset>>()).await,
            None => {
                if let Some(ms) = rule.strip_prefix("delay").and_then(|ms| ms.parse::<u64>().ok()) {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            }
        }
    }
    if let Some(code) = header_str(&parts.headers, headers::STATUS).and_then(|v| v.parse::<u16>().ok()) {
        if (400..=599).contains(&code) {
            if let Ok(status) = StatusCode::from_u16(code) {
                return errors::status_error(api, status);
            }
        }
    }
    if counted {
        let every = |k: u64| k > 0 && n % k == 0;
        if every(state.config.rate_limit_every) {
            return errors::status_error(api, StatusCode::TOO_MANY_REQUESTS);
        }
        if every(state.config.fail_every) {
            return errors::status_error(api, StatusCode::INTERNAL_SERVER_ERROR);
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// The failure `x-mock-fail-model` asks for this request's model (from the
/// body, or from the path for the Gemini API and Vertex AI), if any.
fn fail_rule<'a>(header: &'a str, body: &[u8], path: &str) -> Option<&'a str> {
    let from_body =
        || serde_json::from_slice::<serde_json::Value>(body).ok()?.get("model")?.as_str().map(str::to_owned);
    let model = bedrock::model_from_path(path).or_else(|| gemini::model_from_path(path)).or_else(from_body)?;
    header.split(',').filter_map(|pair| pair.trim().split_once('=')).find(|(m, _)| *m == model).map(|(_, rule)| rule)
}

async fn reset_connection(reset: Option<&Arc<ConnReset>>) -> Response {
    match reset {
        Some(reset) => {
            reset.requested.store(true, Ordering::Release);
            reset.notify.notify_one();
            // The connection task drops this connection (and this future with
            // it); on HTTP/2 the stream task may outlive it briefly, so stop
            // waiting eventually.
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        None => {
            // No connection handle (router used outside `serve`): abort the
            // body right after the headers instead.
            let stream = futures::stream::once(async {
                Err::<bytes::Bytes, std::io::Error>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "x-mock-reset",
                ))
            });
            Response::new(Body::from_stream(stream))
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn list_requests(State(state): State<Shared>) -> Json<Vec<RecordedRequest>> {
    Json(state.recorded())
}

async fn clear_requests(State(state): State<Shared>) -> StatusCode {
    state.clear();
    StatusCode::NO_CONTENT
}

async fn fallback(req: Request) -> Response {
    errors::not_found(Api::for_path(req.uri().path()), req.method().as_str(), req.uri().path())
}

async fn method_not_allowed(req: Request) -> Response {
    let path = req.uri().path();
    match Api::for_path(path) {
        Api::OpenAi => errors::openai_error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("Invalid method for URL ({} {path})", req.method()),
            "invalid_request_error",
            None,
            None,
        ),
        Api::Anthropic | Api::VertexAnthropic => {
            errors::anthropic_error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "Method not allowed")
        }
        Api::Gemini => errors::google_error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("Method not allowed: {} {path}", req.method()),
            "INVALID_ARGUMENT",
            None,
        ),
        Api::Bedrock => errors::bedrock_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UnknownOperationException",
            "The requested operation is not recognized by the service.",
        ),
    }
}

/// Model ids the mock lists (any model name is accepted in requests).
pub fn served_models(name: &str) -> Vec<String> {
    vec![format!("{name}-chat"), format!("{name}-embedding")]
}

#[derive(Serialize)]
struct OpenAiModel {
    id: String,
    object: &'static str,
    created: u64,
    owned_by: String,
}

#[derive(Serialize)]
struct OpenAiModelList {
    object: &'static str,
    data: Vec<OpenAiModel>,
}

#[derive(Serialize)]
struct AnthropicModel {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    display_name: String,
    created_at: &'static str,
}

#[derive(Serialize)]
struct AnthropicModelList {
    data: Vec<AnthropicModel>,
    has_more: bool,
    first_id: Option<String>,
    last_id: Option<String>,
}

const MODEL_CREATED: u64 = 1_735_689_600; // 2025-01-01T00:00:00Z

fn openai_model(id: String, owner: &str) -> OpenAiModel {
    OpenAiModel { id, object: "model", created: MODEL_CREATED, owned_by: owner.to_owned() }
}

fn anthropic_model(id: String) -> AnthropicModel {
    AnthropicModel { kind: "model", display_name: id.clone(), id, created_at: "2025-01-01T00:00:00Z" }
}

/// `GET /v1/models`: OpenAI's list, or Anthropic's when the request carries
/// `anthropic-version`.
async fn models(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let ids = served_models(&state.config.name);
    if headers.contains_key("anthropic-version") {
        let data: Vec<AnthropicModel> = ids.into_iter().map(anthropic_model).collect();
        let first_id = data.first().map(|m| m.id.clone());
        let last_id = data.last().map(|m| m.id.clone());
        errors::json_response(StatusCode::OK, &AnthropicModelList { data, has_more: false, first_id, last_id })
    } else {
        errors::json_response(
            StatusCode::OK,
            &OpenAiModelList {
                object: "list",
                data: ids.into_iter().map(|id| openai_model(id, &state.config.name)).collect(),
            },
        )
    }
}

/// `GET /v1/models/{id}`: any id exists.
async fn model(
    State(state): State<Shared>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    if headers.contains_key("anthropic-version") {
        errors::json_response(StatusCode::OK, &anthropic_model(id))
    } else {
        errors::json_response(StatusCode::OK, &openai_model(id, &state.config.name))
    }
}
