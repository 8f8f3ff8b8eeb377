//! Requests an upstream server sends the client in the middle of a call or
//! on the session's GET stream: a question to the user
//! (`elicitation/create`), the client's roots (`roots/list`), a completion
//! of the client's model (`sampling/createMessage`), `ping`.
//!
//! - **Capabilities.** At `initialize` the gateway keeps, of what the client
//!   declares, the capabilities the policy relays (`mcp.serverRequests`):
//!   `elicitation` (its modes as declared) and `roots`; never `sampling`.
//!   They travel in the signed session id and are offered to every upstream
//!   session, opened then or later.
//! - **Relayed.** A question is judged first: the prompt firewall reads its
//!   message and schema (a planted instruction is refused), and a schema
//!   asking for a secret (password, token, key, card) is refused, as the
//!   protocol forbids. What passes reaches the client under an id the
//!   gateway seals for the session (`tgq.<server, upstream session,
//!   upstream id>.<MAC>`), so the client's answer, POSTed to any replica,
//!   goes back to the upstream session that asked, with its own id; an
//!   answer to an id the gateway did not give is refused. The answer's
//!   strings go through the PII policy as tool arguments do.
//! - **Where.** In a tool call's event stream, on the session's GET stream,
//!   and while `prompts/get`, `resources/read` or `completion/complete`
//!   runs (their answer, JSON otherwise, then streams: the question first).
//!   Inside the listings the gateway gathers (`tools/list` pages) a request
//!   has no way to the client and is refused.
//! - **Refused.** Sampling (it would run the server's text on the agent's
//!   model, past the firewall and outside the budget), anything the client
//!   did not declare, and unknown methods: the gateway answers the upstream
//!   itself with an error, so the call does not hang. `ping` is answered by
//!   the gateway.
//!
//! Counted in `tollgate_mcp_server_requests_total{server,method,result}`.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tollgate_core::firewall::FirewallAction;
use tollgate_core::mcp::jsonrpc;
use tollgate_core::mcp::policy::{Relay, ServerRequests};
use tollgate_core::pii::MaskMap;
use tollgate_core::policy::AuditText;

use super::session::{Session, Upstream};
use super::upstream::{is_request, is_response, Answer, Events, UpstreamError};
use super::{json_response, Ctx, Gateway};
use crate::metrics::{McpServerRequestLabels, OTHER};
use crate::shared::Shared;

/// Prefix of the ids of relayed requests.
const RELAY_PREFIX: &str = "tgq.";
/// Longest upstream id relayed.
const MAX_UPSTREAM_ID: usize = 256;
/// Schema property names that ask for a secret.
const SECRET_WORDS: [&str; 9] =
    ["password", "passphrase", "secret", "token", "apikey", "privatekey", "ssn", "cvv", "cardnumber"];

/// What a relayed request's id holds (sealed for the session).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RelayId {
    /// The server.
    s: String,
    /// The upstream session the request came on.
    u: String,
    /// The upstream's own id.
    i: Value,
}

/// The client capabilities the gateway offers upstreams for a client that
/// declared `params.capabilities`.
pub fn relayed_caps(policy: &ServerRequests, version: &str, params: Option<&Value>) -> Map<String, Value> {
    let mut caps = Map::new();
    let Some(client) = params.and_then(|p| p.get("capabilities")).and_then(Value::as_object) else { return caps };
    // Elicitation came with 2025-06-18 (versions are dates: they sort).
    if policy.elicitation == Relay::Relay && version >= "2025-06-18" {
        if let Some(Value::Object(e)) = client.get("elicitation") {
            let modes: Map<String, Value> =
                ["form", "url"].into_iter().filter(|m| e.contains_key(*m)).map(|m| (m.into(), json!({}))).collect();
            caps.insert("elicitation".into(), Value::Object(modes));
        }
    }
    if policy.roots == Relay::Relay && client.get("roots").is_some_and(Value::is_object) {
        // Without list_changed: the upstream asks again when it needs them.
        caps.insert("roots".into(), json!({"listChanged": false}));
    }
    caps
}

/// The metric's name for a method: the ones the protocol defines, else `other`.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 4] = ["sampling/createMessage", "roots/list", "elicitation/create", "ping"];
    KNOWN.into_iter().find(|k| *k == method).unwrap_or(OTHER)
}

/// What becomes of one request.
#[derive(Debug, PartialEq)]
enum Verdict {
    Relay,
    /// The gateway answers it (`ping`).
    Answer(Value),
    /// The gateway refuses it: code, message, the metric's result.
    Refuse(i64, String, &'static str),
}

fn not_offered(method: &str) -> Verdict {
    let message = format!("`{method}` is not offered: the client did not declare it, or the gateway does not relay it");
    Verdict::Refuse(jsonrpc::METHOD_NOT_FOUND, message, "refused")
}

/// Whether a schema's property names ask for a secret.
fn asks_for_secret(schema: &Value) -> Option<String> {
    let props = schema.get("properties").and_then(Value::as_object)?;
    props
        .keys()
        .find(|name| {
            let folded: String =
                name.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_ascii_lowercase();
            SECRET_WORDS.iter().any(|w| folded.contains(w))
        })
        .cloned()
}

impl Gateway {
    /// Judge a request of the server to the client.
    fn admit(&self, shared: &Shared, s: &Session, m: &Value) -> Verdict {
        let method = m.get("method").and_then(Value::as_str).unwrap_or_default();
        let params = m.get("params").cloned().unwrap_or_default();
        match method {
            "ping" => Verdict::Answer(json!({})),
            "roots/list" if s.caps.contains_key("roots") => Verdict::Relay,
            "elicitation/create" => {
                let Some(declared) = s.caps.get("elicitation") else { return not_offered(method) };
                let mode = params.get("mode").and_then(Value::as_str).unwrap_or("form");
                let supported = if mode == "form" {
                    declared.get("url").is_none() || declared.get("form").is_some()
                } else {
                    declared.get(mode).is_some()
                };
                if !supported {
                    return not_offered(&format!("{method} ({mode})"));
                }
                let schema = params.get("requestedSchema").cloned().unwrap_or_default();
                if let Some(field) = asks_for_secret(&schema) {
                    let message = format!("the server asked the user for a secret (`{field}`): refused by the gateway");
                    return Verdict::Refuse(jsonrpc::POLICY_REFUSED, message, "blocked");
                }
                let inspectors = self.inspectors.get(&shared.policy);
                if let Some(fw) = &inspectors.firewall {
                    let mut texts = Vec::new();
                    super::catalog::strings_of(&params, &mut texts);
                    let verdict = super::catalog::judge_as_one(fw, &texts);
                    if verdict.action == FirewallAction::Block {
                        let rule = verdict.rules.first().cloned().unwrap_or_default();
                        let message =
                            format!("the server's question reads as instructions to the model (prompt firewall rule `{rule}`): refused by the gateway");
                        return Verdict::Refuse(jsonrpc::POLICY_REFUSED, message, "blocked");
                    }
                }
                Verdict::Relay
            }
            _ => not_offered(method),
        }
    }

    /// A request of the server `server` to the client, on upstream session
    /// `up`: the message to send the client (its id sealed), or `None` when
    /// the gateway answered or refused it itself.
    pub(super) async fn on_request(
        &self,
        ctx: &Ctx,
        s: &Session,
        server: &str,
        up: &Upstream,
        m: &Value,
    ) -> Option<Value> {
        let verdict = self.admit(&ctx.shared, s, m);
        self.carry_out(ctx, s, server, up, m, verdict).await
    }

    /// Do what `verdict` says with a server's request: count and audit it,
    /// then give the message to relay, or answer the upstream here.
    async fn carry_out(
        &self,
        ctx: &Ctx,
        s: &Session,
        server: &str,
        up: &Upstream,
        m: &Value,
        mut verdict: Verdict,
    ) -> Option<Value> {
        let shared = &ctx.shared;
        let (id, method) = (m.get("id")?, m.get("method").and_then(Value::as_str).unwrap_or_default());
        let sealed = match (&verdict, self.signer(shared).await) {
            (Verdict::Relay, _) if id.to_string().len() > MAX_UPSTREAM_ID => {
                verdict = Verdict::Refuse(jsonrpc::INVALID_REQUEST, "the request's id is too long".into(), "refused");
                None
            }
            (Verdict::Relay, Ok(signer)) => {
                let rid = RelayId { s: server.to_string(), u: up.session.clone(), i: id.clone() };
                Some(format!("{RELAY_PREFIX}{}", signer.seal(&s.nonce, &rid)))
            }
            (Verdict::Relay, Err(e)) => {
                tracing::error!(error = %e, "mcp: no session key");
                verdict =
                    Verdict::Refuse(jsonrpc::INTERNAL_ERROR, "the gateway cannot relay right now".into(), "refused");
                None
            }
            _ => None,
        };
        let result = match &verdict {
            Verdict::Relay => "relayed",
            Verdict::Answer(_) => "answered",
            Verdict::Refuse(.., result) => result,
        };
        let labels = McpServerRequestLabels { server: server.to_string(), method: method_label(method), result };
        shared.metrics.mcp_server_requests.get_or_create(&labels).inc();
        if method != "ping" {
            let (status, reason) = match &verdict {
                Verdict::Refuse(code, message, _) => {
                    (if *code == jsonrpc::POLICY_REFUSED { 403 } else { 404 }, Some(message))
                }
                _ => (200, None),
            };
            let mut decision = json!({"server": server, "method": method, "result": result});
            if let Some(reason) = reason {
                decision["reason"] = json!(reason);
            }
            if shared.audit.as_ref().is_some_and(|a| a.text != AuditText::None) {
                // The question as the server put it (what the user was, or would have been, asked).
                decision["request"] = m.get("params").cloned().unwrap_or_default();
            }
            self.audit_asked(ctx, &format!("mcp.{}", method_label(method)), server, method, status, decision).await;
        }
        let reply = match verdict {
            Verdict::Relay => {
                let mut forward = m.clone();
                forward["id"] = json!(sealed?);
                return Some(forward);
            }
            Verdict::Answer(result) => jsonrpc::result(id, result),
            Verdict::Refuse(code, message, _) => {
                tracing::warn!(server, method, message, "mcp: a server's request to the client refused");
                jsonrpc::error(id, code, &message)
            }
        };
        if let Err(e) = self.send_to(shared, server, up, &reply).await {
            tracing::info!(server, error = %e, "mcp: the answer did not reach the server");
        }
        None
    }

    /// Refuse a request of the server where nothing can carry it to the
    /// client (inside a listing the gateway gathers); `ping` is answered.
    async fn refuse_in_session(&self, ctx: &Ctx, s: &Session, server: &str, m: &Value) {
        let Ok(up) = self.upstream_of(ctx, s, server).await else { return };
        let method = m.get("method").and_then(Value::as_str).unwrap_or_default();
        let verdict = if method == "ping" {
            Verdict::Answer(json!({}))
        } else {
            let message = format!("`{method}` cannot be relayed while the gateway gathers a listing");
            Verdict::Refuse(jsonrpc::METHOD_NOT_FOUND, message, "refused")
        };
        let _ = self.carry_out(ctx, s, server, &up, m, verdict).await;
    }

    /// Carry an upstream's event stream to the client until its response:
    /// notifications pass, the server's requests are relayed (sealed) or
    /// answered here. `Ok(None)`: the client left first; `Err`: the stream
    /// failed or ended without a response.
    pub(super) async fn carry_stream(
        &self,
        ctx: &Ctx,
        s: &Session,
        server: &str,
        events: &mut Events,
        tx: &tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    ) -> Result<Option<Value>, UpstreamError> {
        loop {
            let message = match events.next().await? {
                Some(m) if is_response(&m) => return Ok(Some(m)),
                Some(m) if is_request(&m) => {
                    let Ok(up) = self.upstream_of(ctx, s, server).await else { continue };
                    let Some(forward) = self.on_request(ctx, s, server, &up, &m).await else { continue };
                    // A person may be answering: the server waits longer.
                    events.set_timeout(Gateway::answer_timeout(&ctx.shared));
                    forward
                }
                Some(m) => m,
                None => return Err(UpstreamError::Invalid("the event stream ended without a response".into())),
            };
            if tx.send(Ok(super::call::sse_event(&message))).await.is_err() {
                return Ok(None);
            }
        }
    }

    /// The response to a request sent to `server`, refusing any request the
    /// server sends the client on the way (notifications are skipped).
    pub(super) async fn response_of(
        &self,
        ctx: &Ctx,
        s: &Session,
        server: &str,
        answer: Answer,
    ) -> Result<Value, UpstreamError> {
        let Answer::Stream { mut events, .. } = answer else { return answer.response().await };
        loop {
            match events.next().await? {
                Some(m) if is_response(&m) => return Ok(m),
                Some(m) if is_request(&m) => self.refuse_in_session(ctx, s, server, &m).await,
                Some(_) => continue,
                None => return Err(UpstreamError::Invalid("the event stream ended without a response".into())),
            }
        }
    }

    /// How long a call's server may wait for the client's answer.
    pub(super) fn answer_timeout(shared: &Shared) -> Duration {
        Duration::from_millis(shared.policy.mcp.server_requests.answer_timeout_ms)
    }

    /// The client's answer to a relayed request: sent to the upstream
    /// session that asked, with its own id (202), whichever replica relayed
    /// it. An id the gateway did not seal for this session is refused (400).
    pub(super) async fn answer(&self, ctx: &Ctx, s: &Session, id: &Value, body: &[u8]) -> Response {
        let bad = |message: &str| {
            json_response(
                StatusCode::BAD_REQUEST,
                &jsonrpc::error(&Value::Null, jsonrpc::INVALID_REQUEST, message),
                None,
            )
        };
        let Some(token) = id.as_str().and_then(|t| t.strip_prefix(RELAY_PREFIX)) else {
            return bad("an answer to a request this gateway did not relay");
        };
        let Ok(signer) = self.signer(&ctx.shared).await else {
            return bad("the gateway cannot check answers right now");
        };
        let Some(rid) = signer.unseal::<RelayId>(&s.nonce, token) else {
            return bad("an answer to a request this gateway did not relay in this session");
        };
        if !ctx.policy().mcp.servers.contains_key(&rid.s) {
            return bad("the server that asked is no longer served");
        }
        let Ok(mut message) = serde_json::from_slice::<Value>(body) else { return bad("the answer is not JSON") };
        // What the client tells a server passes the PII policy as arguments do.
        let inspectors = self.inspectors.get(&ctx.shared.policy);
        if let (Some(pii), Some(result)) = (&inspectors.pii, message.get_mut("result")) {
            let (mut masks, mut found) = (MaskMap::new(ctx.policy().inspection.max_mask_bytes), Vec::new());
            if let Err(e) = super::call::mask_json(pii, result, &mut masks, &mut found, 0) {
                let refusal =
                    jsonrpc::error(&rid.i, jsonrpc::POLICY_REFUSED, "the client's answer was refused by the gateway");
                let up = Upstream { session: rid.u.clone(), protocol: s.protocol.clone() };
                let _ = self.send_to(&ctx.shared, &rid.s, &up, &refusal).await;
                return bad(&format!("the answer was refused: {e}"));
            }
        }
        message["id"] = rid.i.clone();
        let protocol = s.upstream.get(&rid.s).map_or(s.protocol.clone(), |u| u.protocol.clone());
        let up = Upstream { session: rid.u, protocol };
        let sent = self.send_to(&ctx.shared, &rid.s, &up, &message).await;
        let mut decision = json!({"server": rid.s, "result": if sent.is_ok() { "delivered" } else { "undelivered" }});
        if let Some(action) = message.pointer("/result/action") {
            decision["action"] = action.clone();
        }
        if ctx.shared.audit.as_ref().is_some_and(|a| a.text != AuditText::None) {
            decision["answer"] = message.get("result").cloned().unwrap_or_default();
            // as masked
        }
        self.audit_asked(ctx, "mcp.response", &rid.s, "", if sent.is_ok() { 202 } else { 502 }, decision).await;
        match sent {
            Ok(_) => StatusCode::ACCEPTED.into_response(),
            Err(e) => {
                tracing::warn!(server = rid.s, error = %e, "mcp: a client's answer did not reach the server");
                let body =
                    jsonrpc::error(&Value::Null, jsonrpc::UPSTREAM_ERROR, "the server that asked cannot be reached");
                json_response(StatusCode::BAD_GATEWAY, &body, None)
            }
        }
    }

    /// The audit record of a server's request to the client or of the
    /// client's answer, in the same chain as the calls.
    async fn audit_asked(&self, ctx: &Ctx, api: &str, server: &str, method: &str, status: u16, decision: Value) {
        let Some(audit) = &ctx.shared.audit else { return };
        let rec = super::call::audit_record(ctx, api, server, method, status, json!({"mcp": decision}));
        if let Err(e) = audit.writer.append(rec).await {
            audit.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(error = %e, "audit record not written");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_from_answers_and_notifications() {
        assert!(is_request(&json!({"jsonrpc": "2.0", "id": 0, "method": "elicitation/create", "params": {}})));
        assert!(!is_request(&json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}})));
        assert!(!is_request(&json!({"jsonrpc": "2.0", "id": "x", "result": {}})));
        assert!(!is_request(&json!({"jsonrpc": "2.0", "id": null, "method": "ping"})));
        assert_eq!(method_label("sampling/createMessage"), "sampling/createMessage");
        assert_eq!(method_label("made/up"), OTHER);
    }

    #[test]
    fn only_relayed_capabilities_are_offered_upstream() {
        let all = json!({"capabilities": {"elicitation": {"form": {}, "url": {}}, "roots": {"listChanged": true},
            "sampling": {"tools": {}}, "experimental": {"x": {}}}});
        let policy = ServerRequests::default();
        let caps = relayed_caps(&policy, "2025-11-25", Some(&all));
        assert_eq!(
            Value::Object(caps),
            json!({"elicitation": {"form": {}, "url": {}}, "roots": {"listChanged": false}})
        );
        // A form-only client stays form-only; older versions have no elicitation.
        let form = json!({"capabilities": {"elicitation": {}}});
        assert_eq!(Value::Object(relayed_caps(&policy, "2025-06-18", Some(&form))), json!({"elicitation": {}}));
        assert!(relayed_caps(&policy, "2025-03-26", Some(&all)).get("elicitation").is_none());
        let refusing = ServerRequests { elicitation: Relay::Refuse, roots: Relay::Refuse, ..Default::default() };
        assert!(relayed_caps(&refusing, "2025-11-25", Some(&all)).is_empty());
        assert!(relayed_caps(&policy, "2025-11-25", None).is_empty());
    }

    #[test]
    fn a_schema_asking_for_a_secret_is_named() {
        let schema = |name: &str| json!({"type": "object", "properties": {"name": {"type": "string"}, name: {"type": "string"}}});
        for name in ["password", "API_Key", "private-key", "cardNumber", "github_token"] {
            assert_eq!(asks_for_secret(&schema(name)), Some(name.to_string()), "{name}");
        }
        assert_eq!(asks_for_secret(&schema("confirm")), None);
        assert_eq!(asks_for_secret(&json!({"type": "object"})), None);
    }
}
