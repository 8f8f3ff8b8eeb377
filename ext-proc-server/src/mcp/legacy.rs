//! Upstream servers on MCP's older HTTP+SSE transport (protocol 2024-11-05):
//! the client holds a GET event stream open; its first event (`endpoint`)
//! names the URL to POST messages to, and every answer comes back on the
//! stream. A session is that live stream, so it lives in this replica only:
//! the signed session names it, another replica (or this one restarted)
//! finds it gone and opens a new one, as for a Streamable HTTP server that
//! forgot its session.
//!
//! The gateway gives each request it sends its own id (answers of
//! concurrent calls share one stream) and puts the caller's back.
//! Notifications on the stream reach the session's GET listeners.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{json, Value};
use tokio::sync::{broadcast, oneshot};
use tollgate_core::sse::SseParser;

use super::upstream::UpstreamError;
use crate::credentials::Credential;

/// Prefix of an upstream session id that names a stream of this replica.
pub const PREFIX: &str = "sse:";
/// Streams held open at most; the least recently used is closed beyond.
const MAX_STREAMS: usize = 1_000;
/// A stream unused this long is closed when another opens.
const IDLE: Duration = Duration::from_secs(30 * 60);

/// One open stream.
struct Stream {
    /// Where messages are POSTed.
    endpoint: String,
    /// Answers awaited, by the id the gateway gave the request.
    pending: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    notifications: broadcast::Sender<Value>,
    reader: Mutex<Option<tokio::task::JoinHandle<()>>>,
    ended: AtomicBool,
    used: Mutex<Instant>,
}

impl Stream {
    /// One message from the stream: an awaited answer, or a notification.
    fn deliver(&self, data: &str) {
        let Ok(message) = serde_json::from_str::<Value>(data) else { return };
        // Only a response answers a request: a server's own request may
        // carry an id the gateway also used.
        let waiting = message
            .get("id")
            .filter(|_| super::upstream::is_response(&message))
            .map(id_key)
            .and_then(|id| self.pending.lock().ok()?.remove(&id));
        match waiting {
            Some(w) => _ = w.send(message),
            // Notifications, and the server's requests (the GET stream's
            // reader refuses those), to whoever listens.
            None if message.get("method").is_some() => {
                let _ = self.notifications.send(message);
            }
            None => {}
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(r) = self.reader.get_mut().ok().and_then(Option::take) {
            r.abort();
        }
    }
}

/// The streams this replica holds.
#[derive(Default)]
pub struct Legacy {
    streams: Mutex<HashMap<String, Arc<Stream>>>,
    next_id: AtomicU64,
}

impl Legacy {
    /// Open a stream: GET `url`, wait for the `endpoint` event. Returns the
    /// upstream session id (`sse:<key>`).
    pub async fn open(
        &self,
        http: &reqwest::Client,
        url: &str,
        credential: Option<&Credential>,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<String, UpstreamError> {
        let mut req = http.get(url).header("accept", "text/event-stream");
        if let Some(c) = credential {
            req = req.header(c.header, &c.value);
        }
        let resp = match tokio::time::timeout(timeout, req.send()).await {
            Err(_) => return Err(UpstreamError::Timeout(timeout)),
            Ok(Err(e)) => return Err(UpstreamError::Unreachable(e.to_string())),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(UpstreamError::Status(status));
        }
        let base = resp.url().clone();
        let mut body = resp.bytes_stream();
        let mut parser = SseParser::new(max_bytes);
        let mut ready = std::collections::VecDeque::new();
        // The first event names the endpoint.
        let endpoint = loop {
            if let Some(ev) = ready.pop_front() {
                let ev: tollgate_core::SseEvent = ev;
                if ev.event.as_deref() == Some("endpoint") {
                    let url = base
                        .join(ev.data.trim())
                        .map_err(|e| UpstreamError::Invalid(format!("the endpoint event: {e}")))?;
                    break url.to_string();
                }
                continue;
            }
            let mut out = Vec::new();
            match tokio::time::timeout(timeout, body.next()).await {
                Err(_) => return Err(UpstreamError::Timeout(timeout)),
                Ok(None) => return Err(UpstreamError::Invalid("the stream ended before its endpoint".into())),
                Ok(Some(Err(e))) => return Err(UpstreamError::Unreachable(e.to_string())),
                Ok(Some(Ok(chunk))) => parser.feed(&chunk, &mut out),
            }
            .map_err(|e| UpstreamError::Invalid(e.to_string()))?;
            ready.extend(out);
        };
        let (notifications, _) = broadcast::channel(64);
        let stream = Arc::new(Stream {
            endpoint,
            pending: Mutex::default(),
            notifications,
            reader: Mutex::new(None),
            ended: AtomicBool::new(false),
            used: Mutex::new(Instant::now()),
        });
        // The reader holds the stream weakly: closing the session drops it.
        let weak = Arc::downgrade(&stream);
        let reader = tokio::spawn(async move {
            let deliver = |ev: tollgate_core::SseEvent| {
                let Some(stream) = weak.upgrade() else { return false };
                stream.deliver(&ev.data);
                true
            };
            for ev in ready {
                if !deliver(ev) {
                    return;
                }
            }
            while let Some(Ok(chunk)) = body.next().await {
                let mut out = Vec::new();
                if parser.feed(&chunk, &mut out).is_err() {
                    break;
                }
                for ev in out {
                    if !deliver(ev) {
                        return;
                    }
                }
            }
            // The stream ended: whoever waits learns it (their senders drop).
            if let Some(stream) = weak.upgrade() {
                stream.ended.store(true, Ordering::Relaxed);
                if let Ok(mut p) = stream.pending.lock() {
                    p.clear();
                }
            }
        });
        if let Ok(mut r) = stream.reader.lock() {
            *r = Some(reader);
        }
        let key = super::session::nonce();
        if let Ok(mut m) = self.streams.lock() {
            m.retain(|_, s| !s.ended.load(Ordering::Relaxed) && s.used.lock().is_ok_and(|u| u.elapsed() < IDLE));
            if m.len() >= MAX_STREAMS {
                let oldest = m.iter().min_by_key(|(_, s)| s.used.lock().map(|u| *u).ok()).map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    m.remove(&k);
                }
            }
            m.insert(key.clone(), stream);
        }
        Ok(format!("{PREFIX}{key}"))
    }

    fn stream(&self, session: &str) -> Option<Arc<Stream>> {
        let key = session.strip_prefix(PREFIX)?;
        let s = self.streams.lock().ok()?.get(key).cloned()?;
        if s.ended.load(Ordering::Relaxed) {
            return None;
        }
        if let Ok(mut u) = s.used.lock() {
            *u = Instant::now();
        }
        Some(s)
    }

    /// Send one message; a request's answer is awaited on the stream, a
    /// notification's is `None`. A stream this replica does not hold (or
    /// that ended) is [`UpstreamError::SessionGone`].
    pub async fn send(
        &self,
        http: &reqwest::Client,
        session: &str,
        credential: Option<&Credential>,
        message: &Value,
        timeout: Duration,
    ) -> Result<Option<Value>, UpstreamError> {
        let stream = self.stream(session).ok_or(UpstreamError::SessionGone)?;
        let mut sent = message.clone();
        let waiting = match message.get("id") {
            Some(_) if message.get("method").is_some() => {
                let ours = format!("tollgate-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
                sent["id"] = json!(ours);
                let (tx, rx) = oneshot::channel();
                if let Ok(mut p) = stream.pending.lock() {
                    p.insert(id_key(&sent["id"]), tx);
                }
                Some((ours, rx))
            }
            _ => None,
        };
        let mut req = http
            .post(&stream.endpoint)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&sent).unwrap_or_default());
        if let Some(c) = credential {
            req = req.header(c.header, &c.value);
        }
        let forget = |ours: &str| {
            if let Ok(mut p) = stream.pending.lock() {
                p.remove(&id_key(&json!(ours)));
            }
        };
        let resp = tokio::time::timeout(timeout, req.send()).await;
        let status = match resp {
            Err(_) => Err(UpstreamError::Timeout(timeout)),
            Ok(Err(e)) => Err(UpstreamError::Unreachable(e.to_string())),
            Ok(Ok(r)) => match r.status().as_u16() {
                s if (200..300).contains(&s) => Ok(()),
                404 => Err(UpstreamError::SessionGone),
                s => Err(UpstreamError::Status(s)),
            },
        };
        if let Err(e) = status {
            if let Some((ours, _)) = &waiting {
                forget(ours);
            }
            return Err(e);
        }
        let Some((ours, rx)) = waiting else { return Ok(None) };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(mut answer)) => {
                answer["id"] = message.get("id").cloned().unwrap_or(Value::Null);
                Ok(Some(answer))
            }
            Ok(Err(_)) => Err(UpstreamError::SessionGone),
            Err(_) => {
                forget(&ours);
                Err(UpstreamError::Timeout(timeout))
            }
        }
    }

    /// What the stream of `session` sends unasked, if this replica holds it.
    pub fn notifications(&self, session: &str) -> Option<broadcast::Receiver<Value>> {
        Some(self.stream(session)?.notifications.subscribe())
    }

    /// Close a stream (the client ended its session).
    pub fn close(&self, session: &str) {
        if let (Some(key), Ok(mut m)) = (session.strip_prefix(PREFIX), self.streams.lock()) {
            m.remove(key);
        }
    }
}

/// A JSON-RPC id as a map key (`"7"` and `7` differ).
fn id_key(id: &Value) -> String {
    id.to_string()
}
