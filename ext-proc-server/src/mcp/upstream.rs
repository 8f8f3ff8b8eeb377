//! Talking to upstream MCP servers over the Streamable HTTP transport: one
//! JSON-RPC message per POST, answered by JSON or by a stream of
//! server-sent events that ends with the response.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::Value;
use tollgate_core::sse::SseParser;
use tollgate_core::SseEvent;

use crate::credentials::Credential;

/// The session header.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// The negotiated protocol version, sent after `initialize`.
pub const VERSION_HEADER: &str = "mcp-protocol-version";

/// One upstream message to send.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub url: &'a str,
    pub session: Option<&'a str>,
    /// Absent on `initialize`.
    pub protocol: Option<&'a str>,
    pub credential: Option<&'a Credential>,
}

/// Why an upstream could not answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    #[error("the server did not answer within {0:?}")]
    Timeout(Duration),
    /// The server no longer knows the session (HTTP 404).
    #[error("the server no longer knows this session")]
    SessionGone,
    #[error("the server answered HTTP {0}")]
    Status(u16),
    #[error("the server's answer is not valid: {0}")]
    Invalid(String),
    #[error("the server's answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// An upstream's answer to a POST.
pub enum Answer {
    /// A notification or response was accepted (202).
    Accepted { session: Option<String> },
    /// One JSON-RPC message.
    Json { session: Option<String>, message: Value },
    /// Messages as server-sent events; the response to the request is last.
    Stream { session: Option<String>, events: Events },
}

impl Answer {
    pub fn session(&self) -> Option<&str> {
        match self {
            Answer::Accepted { session } | Answer::Json { session, .. } | Answer::Stream { session, .. } => {
                session.as_deref()
            }
        }
    }

    /// The response to the request, skipping any notifications on the way.
    pub async fn response(self) -> Result<Value, UpstreamError> {
        match self {
            Answer::Json { message, .. } => Ok(message),
            Answer::Accepted { .. } => Err(UpstreamError::Invalid("no response to a request".into())),
            Answer::Stream { mut events, .. } => loop {
                match events.next().await? {
                    Some(m) if is_response(&m) => return Ok(m),
                    Some(_) => continue,
                    None => return Err(UpstreamError::Invalid("the event stream ended without a response".into())),
                }
            },
        }
    }
}

/// Whether a message is a request (a `method` and an `id`): from a server,
/// one to the client (see `asked`).
pub fn is_request(m: &Value) -> bool {
    m.get("method").is_some() && m.get("id").is_some_and(|id| !id.is_null())
}

/// Whether a message is a response (it has an id and a result or an error).
pub fn is_response(m: &Value) -> bool {
    m.get("id").is_some() && (m.get("result").is_some() || m.get("error").is_some())
}

/// JSON-RPC messages read from an event stream.
pub struct Events {
    body: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    parser: SseParser,
    ready: std::collections::VecDeque<SseEvent>,
    timeout: Duration,
    done: bool,
}

impl Events {
    /// Wait up to `timeout` for each message from now on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = self.timeout.max(timeout);
    }

    /// The next message; `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<Value>, UpstreamError> {
        loop {
            while let Some(ev) = self.ready.pop_front() {
                if ev.data.trim().is_empty() {
                    continue; // a priming or keep-alive event
                }
                let v = serde_json::from_str(&ev.data)
                    .map_err(|e| UpstreamError::Invalid(format!("an event is not JSON: {e}")))?;
                return Ok(Some(v));
            }
            if self.done {
                return Ok(None);
            }
            let mut out = Vec::new();
            match tokio::time::timeout(self.timeout, self.body.next()).await {
                Err(_) => return Err(UpstreamError::Timeout(self.timeout)),
                Ok(Some(Ok(chunk))) => self.parser.feed(&chunk, &mut out),
                Ok(Some(Err(e))) => return Err(UpstreamError::Unreachable(e.to_string())),
                Ok(None) => {
                    self.done = true;
                    self.parser.finish(&mut out)
                }
            }
            .map_err(|e| UpstreamError::Invalid(e.to_string()))?;
            self.ready.extend(out);
        }
    }
}

/// The session, protocol version and credential headers of a message to `to`.
fn with_target(mut req: reqwest::RequestBuilder, to: Target<'_>) -> reqwest::RequestBuilder {
    if let Some(s) = to.session.filter(|s| !s.is_empty()) {
        req = req.header(SESSION_HEADER, s);
    }
    if let Some(v) = to.protocol {
        req = req.header(VERSION_HEADER, v);
    }
    if let Some(c) = to.credential {
        req = req.header(c.header, &c.value);
    }
    req
}

/// The HTTP client for every upstream server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Per message (and per event of a stream).
    timeout: Duration,
    max_bytes: usize,
}

impl Client {
    pub fn new(timeout: Duration, max_bytes: usize) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()?;
        Ok(Client { http, timeout, max_bytes })
    }

    /// The HTTP client itself (legacy HTTP+SSE streams share its pool).
    pub fn pool(&self) -> &reqwest::Client {
        &self.http
    }

    /// How long one message (or one event) may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// POST one message.
    pub async fn post(&self, to: Target<'_>, message: &Value) -> Result<Answer, UpstreamError> {
        let mut req = self
            .http
            .post(to.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(serde_json::to_vec(message).unwrap_or_default());
        req = with_target(req, to);
        let resp = match tokio::time::timeout(self.timeout, req.send()).await {
            Err(_) => return Err(UpstreamError::Timeout(self.timeout)),
            Ok(Err(e)) => return Err(UpstreamError::Unreachable(e.to_string())),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        let session = resp.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
        if status == 404 && to.session.is_some_and(|s| !s.is_empty()) {
            return Err(UpstreamError::SessionGone);
        }
        if status == 202 {
            return Ok(Answer::Accepted { session });
        }
        if !(200..300).contains(&status) {
            return Err(UpstreamError::Status(status));
        }
        let content_type =
            resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
        if content_type.starts_with("text/event-stream") {
            let events = Events {
                body: resp.bytes_stream().boxed(),
                parser: SseParser::new(self.max_bytes),
                ready: Default::default(),
                timeout: self.timeout,
                done: false,
            };
            return Ok(Answer::Stream { session, events });
        }
        let body = self.read_body(resp).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Answer::Accepted { session });
        }
        let message = serde_json::from_slice(&body).map_err(|e| UpstreamError::Invalid(format!("not JSON: {e}")))?;
        Ok(Answer::Json { session, message })
    }

    /// Open the stream of messages the server sends unasked (GET), kept
    /// while an event comes at least every `idle`; `None` when the server
    /// offers none (405).
    pub async fn listen(&self, to: Target<'_>, idle: Duration) -> Result<Option<Events>, UpstreamError> {
        let req = with_target(self.http.get(to.url).header("accept", "text/event-stream"), to);
        let resp = match tokio::time::timeout(self.timeout, req.send()).await {
            Err(_) => return Err(UpstreamError::Timeout(self.timeout)),
            Ok(Err(e)) => return Err(UpstreamError::Unreachable(e.to_string())),
            Ok(Ok(r)) => r,
        };
        match resp.status().as_u16() {
            405 => return Ok(None),
            404 if to.session.is_some_and(|s| !s.is_empty()) => return Err(UpstreamError::SessionGone),
            s if !(200..300).contains(&s) => return Err(UpstreamError::Status(s)),
            _ => {}
        }
        let content_type =
            resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
        if !content_type.starts_with("text/event-stream") {
            return Err(UpstreamError::Invalid(format!("a GET answered `{content_type}`, not an event stream")));
        }
        Ok(Some(Events {
            body: resp.bytes_stream().boxed(),
            parser: SseParser::new(self.max_bytes),
            ready: Default::default(),
            timeout: idle,
            done: false,
        }))
    }

    /// Ask the server to end a session (DELETE); failures are ignored.
    pub async fn end_session(&self, to: Target<'_>) {
        let Some(session) = to.session.filter(|s| !s.is_empty()) else { return };
        let mut req = self.http.delete(to.url).header(SESSION_HEADER, session);
        if let Some(v) = to.protocol {
            req = req.header(VERSION_HEADER, v);
        }
        if let Some(c) = to.credential {
            req = req.header(c.header, &c.value);
        }
        let _ = tokio::time::timeout(self.timeout, req.send()).await;
    }

    /// A plain HTTP request (REST APIs served as tools): status, content type, body.
    pub async fn http(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Option<Vec<u8>>,
        credential: Option<&Credential>,
    ) -> Result<(u16, Option<String>, Vec<u8>), UpstreamError> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| UpstreamError::Invalid(format!("method `{method}`")))?;
        let mut req = self.http.request(method, url).header("accept", "application/json");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(c) = credential {
            req = req.header(c.header, &c.value);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = match tokio::time::timeout(self.timeout, req.send()).await {
            Err(_) => return Err(UpstreamError::Timeout(self.timeout)),
            Ok(Err(e)) => return Err(UpstreamError::Unreachable(e.to_string())),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
        Ok((status, content_type, self.read_body(resp).await?))
    }

    async fn read_body(&self, resp: reqwest::Response) -> Result<Vec<u8>, UpstreamError> {
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        loop {
            match tokio::time::timeout(self.timeout, stream.next()).await {
                Err(_) => return Err(UpstreamError::Timeout(self.timeout)),
                Ok(None) => return Ok(body),
                Ok(Some(Err(e))) => return Err(UpstreamError::Unreachable(e.to_string())),
                Ok(Some(Ok(chunk))) => {
                    if body.len() + chunk.len() > self.max_bytes {
                        return Err(UpstreamError::TooLarge(self.max_bytes));
                    }
                    body.extend_from_slice(&chunk);
                }
            }
        }
    }
}
