//! Requests an upstream server sends the client: `sampling/createMessage`,
//! `roots/list`, `elicitation/create` (and anything else with a `method`
//! and an `id`), on a call's event stream or on the GET stream.
//!
//! The gateway offers upstreams no client capabilities and relays none of
//! these: it answers each one to the upstream itself with "method not
//! found" (what a client without the capability answers), counts it and
//! logs it, and the client never sees it. Relayed as they came, they would
//! reach the client unscanned (a sampling request runs the server's text on
//! the agent's model, past the firewall and outside the budget), carry ids
//! that two upstreams may share, and wait for answers that nothing routes
//! back, so the call hung until its timeout.

use serde_json::Value;
use tollgate_core::mcp::jsonrpc;

use super::session::{Session, Upstream};
use super::upstream::{is_response, Answer, UpstreamError};
use super::{Ctx, Gateway};
use crate::metrics::{McpServerRequestLabels, OTHER};
use crate::shared::Shared;

/// Whether a message is a request (a `method` and an `id`).
pub fn is_request(m: &Value) -> bool {
    m.get("method").is_some() && m.get("id").is_some_and(|id| !id.is_null())
}

/// The metric's name for a method: the ones the protocol defines, else `other`.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 4] = ["sampling/createMessage", "roots/list", "elicitation/create", "ping"];
    KNOWN.into_iter().find(|k| *k == method).unwrap_or(OTHER)
}

impl Gateway {
    /// Answer a server's request to the client on the upstream session `up`.
    pub(super) async fn refuse_request(&self, shared: &Shared, server: &str, up: &Upstream, m: &Value) {
        let (Some(id), method) = (m.get("id"), m.get("method").and_then(Value::as_str).unwrap_or_default()) else {
            return;
        };
        let labels =
            McpServerRequestLabels { server: server.to_string(), method: method_label(method), result: "refused" };
        shared.metrics.mcp_server_requests.get_or_create(&labels).inc();
        tracing::warn!(server, method, "mcp: refused a request from the server to the client (none are relayed)");
        let reply = jsonrpc::error(
            id,
            jsonrpc::METHOD_NOT_FOUND,
            &format!("`{method}` is not offered: the gateway relays no requests from servers to clients"),
        );
        if let Err(e) = self.send_to(shared, server, up, &reply).await {
            tracing::info!(server, error = %e, "mcp: the refusal did not reach the server");
        }
    }

    /// [`Gateway::refuse_request`] on the upstream session this session uses for `server`.
    pub(super) async fn refuse_in_session(&self, ctx: &Ctx, s: &Session, server: &str, m: &Value) {
        if let Ok(up) = self.upstream_of(ctx, s, server).await {
            self.refuse_request(&ctx.shared, server, &up, m).await;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_are_told_from_answers_and_notifications() {
        assert!(is_request(&json!({"jsonrpc": "2.0", "id": 0, "method": "elicitation/create", "params": {}})));
        assert!(!is_request(&json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}})));
        assert!(!is_request(&json!({"jsonrpc": "2.0", "id": "x", "result": {}})));
        assert!(!is_request(&json!({"jsonrpc": "2.0", "id": null, "method": "ping"})));
        assert_eq!(method_label("sampling/createMessage"), "sampling/createMessage");
        assert_eq!(method_label("made/up"), OTHER);
    }
}
