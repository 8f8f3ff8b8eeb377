//! Prompts and resources of the upstream MCP servers, under the tools'
//! allowlist model:
//!
//! - a **prompt** is named like a tool (`<server>_<prompt>`) and is seen and
//!   fetched when the grants allow `server/<prompt>`; a prompt whose
//!   description the firewall would block is hidden, like a poisoned tool;
//! - a **resource** keeps its URI and is seen and read when the grants allow
//!   `server/<uri>` (so `server/*` allows all of a server's resources); a
//!   resource template likewise by `server/<uriTemplate>`. A URI that two
//!   servers list is shown by neither (a read could not be routed).
//!
//! A subscription to a resource (`resources/subscribe`, `unsubscribe`) is
//! routed and allowed as a read of it; its updates come on the session's GET
//! stream. An argument completion (`completion/complete`) is routed by its
//! reference: a prompt as `prompts/get` is, a resource template as a read.
//!
//! What comes back is text a model reads: the prompt firewall judges it, and
//! an answer it would block is refused with a JSON-RPC error, as an injected
//! tool result is withheld. Each request forwarded is an audit record
//! (`mcp.prompts/get`, `mcp.resources/read`, `mcp.resources/subscribe`,
//! `mcp.completion/complete`, ...).

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use tollgate_core::firewall::FirewallAction;
use tollgate_core::mcp::grants::Grants;
use tollgate_core::mcp::{jsonrpc, names};

use super::catalog::{self, Standing};
use super::session::Session;
use super::upstream::{is_request, is_response, Answer, UpstreamError};
use super::{call, json_response, Ctx, Gateway};

impl Gateway {
    /// `prompts/*` and `resources/*`; `None` for any other method.
    pub(super) async fn passthrough(
        self: &Arc<Self>,
        ctx: &Ctx,
        s: &Session,
        id: &Value,
        method: &str,
        params: Option<&Value>,
    ) -> Option<Response> {
        let grants = ctx.grants()?;
        let (key, mut items) = match method {
            "prompts/list" => ("prompts", self.list_prompts(ctx, s, &grants).await),
            "resources/list" => ("resources", self.list_resources(ctx, s, &grants, false).await),
            "resources/templates/list" => ("resourceTemplates", self.list_resources(ctx, s, &grants, true).await),
            "prompts/get" => return Some(self.get_prompt(ctx, s, &grants, id, params).await),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                return Some(self.on_resource(ctx, s, &grants, id, method, params).await)
            }
            "completion/complete" => return Some(self.complete(ctx, s, &grants, id, params).await),
            _ => return None,
        };
        items.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        let cursor = jsonrpc::param_str(params, "cursor");
        Some(match jsonrpc::page(items, cursor, ctx.policy().mcp.page_size) {
            Ok((items, next)) => {
                let mut result = json!({ key: items });
                if let Some(next) = next {
                    result["nextCursor"] = json!(next);
                }
                json_response(StatusCode::OK, &jsonrpc::result(id, result), None)
            }
            Err(msg) => json_response(StatusCode::OK, &jsonrpc::error(id, jsonrpc::INVALID_PARAMS, &msg), None),
        })
    }

    /// The MCP servers (not REST APIs) this caller's session uses.
    fn mcp_servers(&self, ctx: &Ctx, grants: &Grants<'_>) -> Vec<String> {
        let policy = ctx.policy();
        policy
            .mcp
            .servers
            .iter()
            .filter(|(name, c)| c.url.is_some() && grants.uses_server(name))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// One listing of every server (an upstream that does not offer it lists nothing).
    async fn each_server(
        &self,
        ctx: &Ctx,
        s: &Session,
        grants: &Grants<'_>,
        method: &str,
        key: &str,
    ) -> Vec<(String, Vec<Value>)> {
        let servers = self.mcp_servers(ctx, grants);
        let lists =
            futures::future::join_all(servers.iter().map(|server| self.list_all(ctx, s, server, method, key))).await;
        let mut out = Vec::new();
        for (server, list) in servers.iter().cloned().zip(lists) {
            match list {
                Ok(items) => out.push((server, items)),
                Err(e) => tracing::debug!(server, method, error = %e, "mcp: an upstream lists nothing"),
            }
        }
        out
    }

    async fn list_prompts(&self, ctx: &Ctx, s: &Session, grants: &Grants<'_>) -> Vec<Value> {
        let inspectors = self.inspectors.get(&ctx.shared.policy);
        let mut out = Vec::new();
        for (server, defs) in self.each_server(ctx, s, grants, "prompts/list", "prompts").await {
            for p in catalog::name_tools(&server, defs) {
                if !grants.allows(&server, &p.name) {
                    continue;
                }
                if inspectors.shows(&p) {
                    out.push(p.for_client());
                }
            }
        }
        out
    }

    async fn list_resources(&self, ctx: &Ctx, s: &Session, grants: &Grants<'_>, templates: bool) -> Vec<Value> {
        let (method, key, field) = if templates {
            ("resources/templates/list", "resourceTemplates", "uriTemplate")
        } else {
            ("resources/list", "resources", "uri")
        };
        let mut owners: HashMap<String, usize> = HashMap::new();
        let mut found = Vec::new();
        for (server, items) in self.each_server(ctx, s, grants, method, key).await {
            for item in items {
                let Some(uri) = item.get(field).and_then(Value::as_str).map(str::to_string) else { continue };
                *owners.entry(uri.clone()).or_default() += 1;
                if grants.allows(&server, &uri) {
                    found.push((uri, item));
                }
            }
        }
        found.into_iter().filter(|(uri, _)| owners.get(uri) == Some(&1)).map(|(_, item)| item).collect()
    }

    async fn get_prompt(
        self: &Arc<Self>,
        ctx: &Ctx,
        s: &Session,
        grants: &Grants<'_>,
        id: &Value,
        params: Option<&Value>,
    ) -> Response {
        let exposed = jsonrpc::param_str(params, "name").unwrap_or_default();
        let (server, name) = match self.prompt_owner(ctx, s, grants, id, exposed).await {
            Ok(found) => found,
            Err(refused) => return refused,
        };
        let mut forwarded = params.cloned().unwrap_or_else(|| json!({}));
        forwarded["name"] = json!(name);
        self.forward(ctx, s, id, &server, &name, "prompts/get", forwarded).await
    }

    /// The server and upstream name of the prompt a client names
    /// `<server>_<prompt>`, if this caller may see and use it; else the
    /// refusal to answer.
    async fn prompt_owner(
        &self,
        ctx: &Ctx,
        s: &Session,
        grants: &Grants<'_>,
        id: &Value,
        exposed: &str,
    ) -> Result<(String, String), Response> {
        let refuse = |code, msg: String| json_response(StatusCode::OK, &jsonrpc::error(id, code, &msg), None);
        let Some((server, _)) = names::split(exposed) else {
            return Err(refuse(jsonrpc::INVALID_PARAMS, format!("unknown prompt `{exposed}`")));
        };
        if !self.mcp_servers(ctx, grants).iter().any(|s| s == server) {
            return Err(refuse(jsonrpc::INVALID_PARAMS, format!("unknown prompt `{exposed}`")));
        }
        let listed = match self.list_all(ctx, s, server, "prompts/list", "prompts").await {
            Ok(defs) => catalog::name_tools(server, defs),
            Err(e) => return Err(refuse(jsonrpc::UPSTREAM_ERROR, format!("the prompt's server failed: {e}"))),
        };
        let inspectors = self.inspectors.get(&ctx.shared.policy);
        // The same judgment as the listing's: a prompt it hides cannot be fetched by name.
        let Some(prompt) = listed.into_iter().find(|p| p.exposed == exposed && inspectors.shows(p)) else {
            return Err(refuse(jsonrpc::INVALID_PARAMS, format!("unknown prompt `{exposed}`")));
        };
        if !grants.allows(server, &prompt.name) {
            return Err(refuse(jsonrpc::POLICY_REFUSED, format!("prompt `{exposed}` is not allowed for this caller")));
        }
        Ok((server.to_string(), prompt.name))
    }

    /// `resources/read`, `resources/subscribe` and `resources/unsubscribe`:
    /// sent to the one server that lists the URI, when the caller may read it.
    async fn on_resource(
        self: &Arc<Self>,
        ctx: &Ctx,
        s: &Session,
        grants: &Grants<'_>,
        id: &Value,
        method: &str,
        params: Option<&Value>,
    ) -> Response {
        let uri = jsonrpc::param_str(params, "uri").unwrap_or_default().to_string();
        let server = match self.resource_owner(ctx, s, grants, id, &uri).await {
            Ok(server) => server,
            Err(refused) => return refused,
        };
        let forwarded = params.cloned().unwrap_or_else(|| json!({}));
        self.forward(ctx, s, id, &server, &uri, method, forwarded).await
    }

    /// The one server that lists `uri` (or a template it fits), if this
    /// caller may read it; else the refusal to answer.
    async fn resource_owner(
        &self,
        ctx: &Ctx,
        s: &Session,
        grants: &Grants<'_>,
        id: &Value,
        uri: &str,
    ) -> Result<String, Response> {
        let refuse = |code, msg: String| json_response(StatusCode::OK, &jsonrpc::error(id, code, &msg), None);
        if uri.is_empty() {
            return Err(refuse(jsonrpc::INVALID_PARAMS, "`uri` is required".into()));
        }
        // The servers that list the URI, or a template it fits.
        let listed = self.each_server(ctx, s, grants, "resources/list", "resources").await;
        let mut owners: Vec<(String, String)> = listed
            .into_iter()
            .filter(|(_, items)| items.iter().any(|r| r.get("uri").and_then(Value::as_str) == Some(uri)))
            .map(|(server, _)| (server, uri.to_string()))
            .collect();
        if owners.is_empty() {
            let templates = self.each_server(ctx, s, grants, "resources/templates/list", "resourceTemplates").await;
            for (server, items) in templates {
                for t in items.iter().filter_map(|t| t.get("uriTemplate").and_then(Value::as_str)) {
                    if template_fits(t, uri) {
                        owners.push((server.clone(), t.to_string()));
                    }
                }
            }
        }
        let [(server, granted_as)] = owners.as_slice() else {
            return Err(refuse(jsonrpc::INVALID_PARAMS, format!("unknown resource `{uri}`")));
        };
        if !grants.allows(server, granted_as) {
            return Err(refuse(jsonrpc::POLICY_REFUSED, format!("resource `{uri}` is not allowed for this caller")));
        }
        Ok(server.clone())
    }

    /// `completion/complete`: the reference (`ref/prompt` by its exposed
    /// name, `ref/resource` by its URI or template) picks the server and must
    /// be one the caller may use; the prompt goes under its upstream name.
    async fn complete(
        self: &Arc<Self>,
        ctx: &Ctx,
        s: &Session,
        grants: &Grants<'_>,
        id: &Value,
        params: Option<&Value>,
    ) -> Response {
        let refuse = |msg: &str| json_response(StatusCode::OK, &jsonrpc::error(id, jsonrpc::INVALID_PARAMS, msg), None);
        let reference = params.and_then(|p| p.get("ref"));
        let field = |k: &str| reference.and_then(|r| r.get(k)).and_then(Value::as_str);
        let mut forwarded = params.cloned().unwrap_or_else(|| json!({}));
        let (server, name) = match field("type") {
            Some("ref/prompt") => {
                let exposed = field("name").unwrap_or_default();
                match self.prompt_owner(ctx, s, grants, id, exposed).await {
                    Ok((server, name)) => {
                        forwarded["ref"]["name"] = json!(name);
                        (server, name)
                    }
                    Err(refused) => return refused,
                }
            }
            Some("ref/resource") => {
                let uri = field("uri").unwrap_or_default();
                match self.resource_owner(ctx, s, grants, id, uri).await {
                    Ok(server) => (server, uri.to_string()),
                    Err(refused) => return refused,
                }
            }
            _ => return refuse("`ref` must be a `ref/prompt` or a `ref/resource`"),
        };
        self.forward(ctx, s, id, &server, &name, "completion/complete", forwarded).await
    }

    /// Send one request to its server; the answer judged by the firewall
    /// and audited. A JSON answer, unless the server asks the client
    /// something on the way (a question, its roots) that the gateway relays:
    /// the answer then streams, the question first (see `asked`).
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        self: &Arc<Self>,
        ctx: &Ctx,
        s: &Session,
        id: &Value,
        server: &str,
        name: &str,
        method: &str,
        params: Value,
    ) -> Response {
        let request = jsonrpc::request(&ctx.upstream_id(server), method, Some(&params));
        let answer = match self.send(ctx, s, server, &request).await {
            Ok(answer) => answer,
            Err(e) => {
                return json_response(StatusCode::OK, &self.judged(ctx, id, server, name, method, Err(e)).await, None)
            }
        };
        let Answer::Stream { mut events, .. } = answer else {
            let message = self.judged(ctx, id, server, name, method, answer.response().await).await;
            return json_response(StatusCode::OK, &message, None);
        };
        let relayed = loop {
            let got = match events.next().await {
                Ok(Some(m)) if is_response(&m) => Ok(m),
                Ok(Some(m)) if is_request(&m) => {
                    let Ok(up) = self.upstream_of(ctx, s, server).await else { continue };
                    match self.on_request(ctx, s, server, &up, &m).await {
                        Some(forward) => break forward,
                        None => continue,
                    }
                }
                Ok(Some(_)) => continue, // notifications: no stream to carry them yet
                Ok(None) => Err(UpstreamError::Invalid("the event stream ended without a response".into())),
                Err(e) => Err(e),
            };
            return json_response(StatusCode::OK, &self.judged(ctx, id, server, name, method, got).await, None);
        };
        // From here the client gets a stream: the question, what follows it,
        // then the judged answer.
        events.set_timeout(Gateway::answer_timeout(&ctx.shared));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
        let (gw, ctx, s, id) = (Arc::clone(self), ctx.clone(), s.clone(), id.clone());
        let (server, name, method) = (server.to_string(), name.to_string(), method.to_string());
        tokio::spawn(async move {
            if tx.send(Ok(call::sse_event(&relayed))).await.is_err() {
                return;
            }
            let got = match gw.carry_stream(&ctx, &s, &server, &mut events, &tx).await {
                Ok(Some(m)) => Ok(m),
                Ok(None) => return, // the client left
                Err(e) => Err(e),
            };
            let message = gw.judged(&ctx, &id, &server, &name, &method, got).await;
            let _ = tx.send(Ok(call::sse_event(&message))).await;
        });
        call::sse_response(rx)
    }

    /// The server's answer as the client gets it: its id, judged by the
    /// firewall (withheld when it reads as instructions), and audited.
    async fn judged(
        &self,
        ctx: &Ctx,
        id: &Value,
        server: &str,
        name: &str,
        method: &str,
        answer: Result<Value, UpstreamError>,
    ) -> Value {
        let (mut message, outcome, mut decisions) = match answer {
            Ok(m) => (m, "ok", json!({})),
            Err(e) => {
                let body = jsonrpc::error(id, jsonrpc::UPSTREAM_ERROR, &format!("the server failed: {e}"));
                (body, "upstream_error", json!({"upstream": e.to_string()}))
            }
        };
        message["id"] = id.clone();
        let mut outcome = if message.get("error").is_some() && outcome == "ok" { "error" } else { outcome };
        if let (Some(result), Some(fw)) = (message.get("result"), &self.inspectors.get(&ctx.shared.policy).firewall) {
            let mut texts = Vec::new();
            catalog::strings_of(result, &mut texts);
            let verdict = fw.scan_all(texts.iter().copied());
            if verdict.action >= FirewallAction::Flag {
                decisions["firewall"] =
                    json!({"score": verdict.score, "action": verdict.action.as_str(), "rules": verdict.rules});
            }
            if verdict.action == FirewallAction::Block {
                let rule = verdict.rules.first().cloned().unwrap_or_default();
                let msg = format!(
                    "the server's answer was withheld by the gateway: it reads as instructions to the model (prompt firewall rule `{rule}`)"
                );
                message = jsonrpc::error(id, jsonrpc::POLICY_REFUSED, &msg);
                outcome = "blocked";
            }
        }
        decisions["mcp"] = json!({"server": server, "name": name, "result": outcome});
        if let Some(audit) = &ctx.shared.audit {
            let status = if outcome == "upstream_error" { 502 } else { 200 };
            let rec = super::call::audit_record(ctx, &format!("mcp.{method}"), server, name, status, decisions);
            let _ = audit.writer.append(rec).await;
        }
        message
    }
}

impl super::call::Inspectors {
    /// Whether a prompt may be seen: its name is its own (no collision) and
    /// the firewall would not block its definition.
    fn shows(&self, prompt: &catalog::Tool) -> bool {
        prompt.standing == Standing::Listed
            && self.firewall.as_ref().is_none_or(|fw| catalog::poisoned(fw, &prompt.definition).is_none())
    }
}

/// The field a listing is ordered by.
fn sort_key(v: &Value) -> (Option<&str>, Option<&str>) {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    (s("name").or(s("uri")).or(s("uriTemplate")), s("uri").or(s("uriTemplate")))
}

/// Whether `uri` fits an RFC 6570 template closely enough to route it: the
/// template's literal text before its first expression is a prefix of the URI.
fn template_fits(template: &str, uri: &str) -> bool {
    match template.split_once('{') {
        Some((prefix, _)) => !prefix.is_empty() && uri.starts_with(prefix),
        None => template == uri,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_route_by_their_literal_prefix() {
        assert!(template_fits("file:///docs/{name}", "file:///docs/readme.md"));
        assert!(!template_fits("file:///docs/{name}", "file:///etc/passwd"));
        assert!(!template_fits("{+path}", "file:///etc/passwd"));
        assert!(template_fits("memo://a", "memo://a"));
    }
}
