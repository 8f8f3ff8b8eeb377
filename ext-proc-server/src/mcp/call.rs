//! `tools/call`: the caller must be allowed the tool, the tool must be
//! listed (not poisoned, not quarantined) and within its call limits; its
//! arguments are masked by the PII policy; the upstream answers the call
//! under its own name; the result is data, not instructions, so it goes
//! through the prompt firewall (indirect injection) and the output guard,
//! and the request's masked values are restored in it. Every call is one
//! audit record and one metric sample.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tollgate_core::firewall::{Firewall, FirewallAction};
use tollgate_core::guard::{GuardOutcome, OutputGuard};
use tollgate_core::mcp::jsonrpc;
use tollgate_core::mcp::names;
use tollgate_core::mcp::openapi;
use tollgate_core::mcp::policy::OnInjection;
use tollgate_core::pii::{MaskMap, PiiScanner};
use tollgate_core::policy::{AuditText, Policy};

use super::catalog::{Standing, Tool};
use super::session::Session;
use super::upstream::{Answer, UpstreamError};
use super::{json_response, Ctx, Gateway};
use crate::audit::{rfc3339_millis, AuditRecord};
use crate::config::mcp_credential;
use crate::limits::{Charge, Window};
use crate::metrics::{McpLabels, OTHER};

/// The checks of one policy, compiled once.
pub struct Inspectors {
    pub firewall: Option<Arc<Firewall>>,
    pub pii: Option<PiiScanner>,
    pub guard: Option<OutputGuard>,
}

/// [`Inspectors`] of the policy last seen.
#[derive(Default)]
pub struct InspectorCache(Mutex<Option<(Arc<Policy>, Arc<Inspectors>)>>);

impl InspectorCache {
    pub fn get(&self, policy: &Arc<Policy>) -> Arc<Inspectors> {
        if let Ok(slot) = self.0.lock() {
            if let Some((p, i)) = slot.as_ref() {
                if Arc::ptr_eq(p, policy) {
                    return i.clone();
                }
            }
        }
        // The policy was validated: these compile (a failure turns a check off, and is logged).
        let warn = |what: &str, e: &dyn std::fmt::Display| tracing::error!(error = %e, "mcp: {what} is off");
        let inspectors = Arc::new(Inspectors {
            firewall: Firewall::shared(&policy.inspection.firewall).map_err(|e| warn("the firewall", &e)).ok(),
            pii: PiiScanner::new(&policy.inspection.pii).map_err(|e| warn("PII masking", &e)).ok(),
            guard: OutputGuard::new(&policy.inspection.output)
                .map_err(|e| warn("the output guard", &e))
                .ok()
                .filter(OutputGuard::is_active),
        });
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((policy.clone(), inspectors.clone()));
        }
        inspectors
    }
}

/// How a call ended, for the metric, the audit record and the client.
struct Ending {
    result: &'static str,
    status: u16,
    decisions: Value,
}

impl Gateway {
    pub(super) async fn call(self: Arc<Self>, ctx: Ctx, s: Session, id: Value, params: Option<Value>) -> Response {
        let exposed = jsonrpc::param_str(params.as_ref(), "name").unwrap_or_default().to_string();
        let refuse = |code: i64, message: String, result: &'static str| {
            (jsonrpc::error(&id, code, &message), result, json!({"refused": message}))
        };
        let prepared = match self.prepare(&ctx, &s, &exposed, params.as_ref()).await {
            Ok(p) => p,
            Err((code, message, result, server, tool)) => {
                let (body, result, decisions) = refuse(code, message, result);
                let ending = Ending { result, status: 200, decisions };
                self.finish(&ctx, &server, &tool, &ending, None).await;
                return json_response(StatusCode::OK, &body, None);
            }
        };
        let Prepared { tool, request, masks, masked_args, pii } = prepared;
        if ctx.policy().mcp.servers.get(&tool.server).is_some_and(|c| c.openapi.is_some()) {
            return self.call_rest(&ctx, &id, &tool, &masks, &masked_args, pii).await;
        }
        let answer = match self.send(&ctx, &s, &tool.server, &request).await {
            Ok(a) => a,
            Err(e) => return self.upstream_failed(&ctx, &id, &tool, &masked_args, e).await,
        };
        match answer {
            Answer::Json { message, .. } => {
                let (body, ending) = self.inspect_response(&ctx, &id, message, &masks, pii);
                self.finish(&ctx, &tool.server, &tool.name, &ending, Some((&masked_args, &body))).await;
                json_response(StatusCode::OK, &body, None)
            }
            Answer::Accepted { .. } => {
                let e = UpstreamError::Invalid("no response to tools/call".into());
                self.upstream_failed(&ctx, &id, &tool, &masked_args, e).await
            }
            Answer::Stream { mut events, .. } => {
                // Notifications (progress) go on as they come; the response is
                // inspected like a JSON one.
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
                tokio::spawn(async move {
                    let answered = self.carry_stream(&ctx, &s, &tool.server, &mut events, &tx).await;
                    let (body, ending) = match answered {
                        Ok(Some(m)) => self.inspect_response(&ctx, &id, m, &masks, pii),
                        other => {
                            if let Err(e) = other {
                                tracing::warn!(error = %e, "mcp: upstream stream failed");
                            }
                            let body = jsonrpc::error(
                                &id,
                                jsonrpc::UPSTREAM_ERROR,
                                "the tool's server ended its answer without a result",
                            );
                            (body, Ending { result: "upstream_error", status: 502, decisions: json!({}) })
                        }
                    };
                    self.finish(&ctx, &tool.server, &tool.name, &ending, Some((&masked_args, &body))).await;
                    let _ = tx.send(Ok(sse_event(&body))).await;
                });
                sse_response(rx)
            }
        }
    }

    /// A call of a REST API's operation: the HTTP request built from the
    /// (masked) arguments, the answer made a tool result and inspected.
    async fn call_rest(
        &self,
        ctx: &Ctx,
        id: &Value,
        tool: &Tool,
        masks: &MaskMap,
        args: &Value,
        pii: Option<Value>,
    ) -> Response {
        let api = match self.api(&ctx.shared, &tool.server) {
            Ok(Some(api)) => api,
            Ok(None) => {
                return self.upstream_failed(ctx, id, tool, args, UpstreamError::Invalid("no API".into())).await
            }
            Err(e) => return self.upstream_failed(ctx, id, tool, args, e).await,
        };
        let built = match api.operation(&tool.name) {
            Some(op) => op.request(args).map_err(|e| e.to_string()),
            None => Err(format!("the API no longer has the operation `{}`", tool.name)),
        };
        let call = match built {
            Ok(call) => call,
            Err(message) => {
                let body = jsonrpc::error(id, jsonrpc::INVALID_PARAMS, &format!("tool `{}`: {message}", tool.exposed));
                let ending = Ending { result: "invalid", status: 200, decisions: json!({"refused": message}) };
                self.finish(ctx, &tool.server, &tool.name, &ending, Some((args, &body))).await;
                return json_response(StatusCode::OK, &body, None);
            }
        };
        let base = ctx.policy().mcp.servers.get(&tool.server).and_then(|c| c.base_url.as_deref()).unwrap_or_default();
        let url = format!("{}{}", base.trim_end_matches('/'), call.path_and_query);
        let credential = ctx.shared.credentials.get(&mcp_credential(&tool.server));
        let answer = self.client.http(&call.method, &url, &call.headers, call.body, credential).await;
        let (status, content_type, body) = match answer {
            Ok(a) => a,
            Err(e) => return self.upstream_failed(ctx, id, tool, args, e).await,
        };
        let result = openapi::tool_result(status, content_type.as_deref(), &body);
        let message = json!({"jsonrpc": "2.0", "id": id, "result": result});
        let (body, ending) = self.inspect_response(ctx, id, message, masks, pii);
        self.finish(ctx, &tool.server, &tool.name, &ending, Some((args, &body))).await;
        json_response(StatusCode::OK, &body, None)
    }

    /// Everything checked before anything reaches the upstream. On refusal:
    /// (code, message, metric result, server, tool) for the answer and the record.
    async fn prepare(
        &self,
        ctx: &Ctx,
        s: &Session,
        exposed: &str,
        params: Option<&Value>,
    ) -> Result<Prepared, (i64, String, &'static str, String, String)> {
        let unknown = |server: &str| {
            (
                jsonrpc::INVALID_PARAMS,
                format!("unknown tool `{exposed}`"),
                "refused",
                server.to_string(),
                OTHER.to_string(),
            )
        };
        let grants = ctx.grants().ok_or_else(|| unknown(OTHER))?;
        let (server, _) = names::split(exposed).ok_or_else(|| unknown(OTHER))?;
        if !ctx.policy().mcp.servers.contains_key(server) || !grants.uses_server(server) {
            return Err(unknown(OTHER));
        }
        let tools = self.tools_for_call(ctx, s, server).await.map_err(|e| {
            (
                jsonrpc::UPSTREAM_ERROR,
                format!("the tool's server cannot be reached: {e}"),
                "upstream_error",
                server.to_string(),
                OTHER.to_string(),
            )
        })?;
        let tool = tools.iter().find(|t| t.exposed == exposed).cloned().ok_or_else(|| unknown(server))?;
        let refused =
            |message: String| (jsonrpc::POLICY_REFUSED, message, "refused", server.to_string(), tool.name.clone());
        if !grants.allows(server, &tool.name) {
            return Err(refused(format!("tool `{exposed}` is not allowed for this caller")));
        }
        match &tool.standing {
            Standing::Listed => {}
            Standing::Quarantined { .. } => {
                return Err(refused(format!(
                    "tool `{exposed}` is quarantined: its definition changed since it was approved"
                )))
            }
            Standing::Poisoned(_) => {
                return Err(refused(format!("tool `{exposed}` is withheld: its definition failed the prompt firewall")))
            }
            other => return Err(refused(format!("tool `{exposed}` is withheld ({})", other.as_str()))),
        }
        if let Some(message) = self.over_limit(ctx, server, &tool.name).await {
            return Err((jsonrpc::RATE_LIMITED, message, "rate_limited", server.to_string(), tool.name.clone()));
        }
        let inspectors = self.inspectors.get(&ctx.shared.policy);
        let mut masks = MaskMap::new(ctx.policy().inspection.max_mask_bytes);
        let mut arguments = match params.and_then(|p| p.get("arguments")) {
            None | Some(Value::Null) => json!({}),
            Some(args @ Value::Object(_)) => args.clone(),
            Some(_) => {
                let message = format!("tool `{exposed}`: `arguments` must be an object");
                return Err((jsonrpc::INVALID_PARAMS, message, "invalid", server.to_string(), tool.name.clone()));
            }
        };
        let mut found = Vec::new();
        if let Some(pii) = &inspectors.pii {
            mask_json(pii, &mut arguments, &mut masks, &mut found, 0)
                .map_err(|e| refused(format!("tool `{exposed}`: {e}")))?;
        }
        let mut call_params = params.cloned().unwrap_or_else(|| json!({}));
        call_params["name"] = json!(tool.name);
        call_params["arguments"] = arguments.clone();
        let request = jsonrpc::request(&ctx.upstream_id("call"), "tools/call", Some(&call_params));
        let pii = pii_counts(&found);
        Ok(Prepared { tool, request, masks, masked_args: arguments, pii })
    }

    /// The first call limit this call would pass (a message), counting it otherwise.
    async fn over_limit(&self, ctx: &Ctx, server: &str, tool: &str) -> Option<String> {
        let (Some(who), Some(budget)) = (&ctx.caller, &ctx.shared.budget) else { return None };
        let policy = ctx.policy();
        let mut charges = Vec::new();
        let mut add = |key: String, limit: u64| {
            charges.push(Charge { key, window: Window::Minute, limit: Some(limit), amount: 1 })
        };
        if let Some(n) = policy.consumers.get(&who.consumer).and_then(|c| c.limits.tool_calls_per_minute) {
            add(format!("consumer:{}:mcp-calls", who.consumer), n);
        }
        if let Some(n) = policy.teams.get(&who.team).and_then(|t| t.limits.tool_calls_per_minute) {
            add(format!("team:{}:mcp-calls", who.team), n);
        }
        if let Some((n, pattern)) = ctx.grants().and_then(|g| g.calls_per_minute(server, tool)) {
            add(format!("consumer:{}:mcp-tool:{pattern}", who.consumer), n);
        }
        if charges.is_empty() {
            return None;
        }
        match budget.store.reserve(ctx.time, &charges).await {
            Ok(Ok(_)) => None,
            Ok(Err(denied)) => Some(format!(
                "tool call limit reached ({} per minute for `{}`); retry in {}s",
                denied.limit,
                denied.key,
                denied.reset_after.as_secs().max(1)
            )),
            Err(e) => {
                tracing::error!(error = %e, "mcp: limit store unavailable: call refused");
                Some("the gateway cannot check tool call limits right now; retry later".into())
            }
        }
    }

    /// The client's answer to a response from the upstream.
    fn inspect_response(
        &self,
        ctx: &Ctx,
        id: &Value,
        mut message: Value,
        masks: &MaskMap,
        pii: Option<Value>,
    ) -> (Value, Ending) {
        message["id"] = id.clone();
        let mut decisions = json!({});
        if let Some(p) = pii {
            decisions["pii"] = p;
        }
        if message.get("error").is_some() {
            return (message, Ending { result: "tool_error", status: 200, decisions });
        }
        let inspectors = self.inspectors.get(&ctx.shared.policy);
        let Some(result) = message.get_mut("result") else {
            let body = jsonrpc::error(id, jsonrpc::UPSTREAM_ERROR, "the tool's server answered without a result");
            return (body, Ending { result: "upstream_error", status: 502, decisions });
        };
        let is_error = result.get("isError").and_then(Value::as_bool).unwrap_or(false);
        // Indirect injection: the result's texts, as a model will read them.
        if let Some(fw) = &inspectors.firewall {
            let texts = result_texts(result);
            let verdict = fw.scan_all(texts.iter().map(String::as_str));
            if verdict.action >= FirewallAction::Flag {
                decisions["firewall"] =
                    json!({"score": verdict.score, "action": verdict.action.as_str(), "rules": verdict.rules});
            }
            if verdict.action == FirewallAction::Block {
                let rule = verdict.rules.first().cloned().unwrap_or_default();
                match ctx.policy().mcp.on_injection {
                    OnInjection::Block => {
                        *result = withheld(&format!(
                            "the tool's result was withheld by the gateway: it reads as instructions to the model (prompt firewall rule `{rule}`)"
                        ));
                        return (message, Ending { result: "blocked", status: 200, decisions });
                    }
                    OnInjection::Redact => {
                        redact_injected(fw, result);
                        decisions["firewall"]["redacted"] = json!(true);
                    }
                    OnInjection::Flag => {}
                }
            }
        }
        if let Some(guard) = &inspectors.guard {
            let mut blocked = None;
            let mut redacted = Vec::new();
            walk_strings(result, 0, &mut |s: &mut String| match guard.check(s, masks) {
                GuardOutcome::Clean => {}
                GuardOutcome::Redacted(text, labels) => {
                    *s = text;
                    redacted.extend(labels);
                }
                GuardOutcome::Blocked(label) => blocked = Some(label),
            });
            if let Some(label) = blocked {
                *result =
                    withheld(&format!("the tool's result was withheld by the gateway's output guard (`{label}`)"));
                decisions["output"] = json!({"blocked": label});
                return (message, Ending { result: "blocked", status: 200, decisions });
            }
            if !redacted.is_empty() {
                redacted.sort();
                redacted.dedup();
                decisions["output"] = json!({"redacted": redacted});
            }
        }
        if !masks.is_empty() {
            walk_strings(result, 0, &mut |s: &mut String| {
                if let std::borrow::Cow::Owned(r) = masks.restore_str(s) {
                    *s = r;
                }
            });
        }
        let result = if is_error { "tool_error" } else { "ok" };
        (message, Ending { result, status: 200, decisions })
    }

    async fn upstream_failed(&self, ctx: &Ctx, id: &Value, tool: &Tool, args: &Value, e: UpstreamError) -> Response {
        tracing::warn!(server = %tool.server, tool = %tool.name, error = %e, "mcp: tool call failed upstream");
        let body = jsonrpc::error(id, jsonrpc::UPSTREAM_ERROR, &format!("the tool's server failed: {e}"));
        let ending = Ending { result: "upstream_error", status: 502, decisions: json!({"upstream": e.to_string()}) };
        self.finish(ctx, &tool.server, &tool.name, &ending, Some((args, &body))).await;
        json_response(StatusCode::OK, &body, None)
    }

    /// Metric and audit record of one call. `name` labels the metric: the
    /// listed tool's upstream name, or `other` when no listing holds it.
    async fn finish(&self, ctx: &Ctx, server: &str, name: &str, ending: &Ending, exchange: Option<(&Value, &Value)>) {
        let known_server = ctx.policy().mcp.servers.contains_key(server);
        let labels = McpLabels {
            server: if known_server { server.to_string() } else { OTHER.to_string() },
            // A listed tool's name, or `other` for a name no listing holds
            // (so a client cannot mint labels).
            tool: if known_server { name.to_string() } else { OTHER.to_string() },
            result: ending.result,
        };
        let metrics = &ctx.shared.metrics;
        metrics.mcp_calls.get_or_create(&labels).inc();
        metrics.mcp_duration.get_or_create(&labels).observe(ctx.started.elapsed().as_secs_f64());
        let Some(audit) = &ctx.shared.audit else { return };
        let mut mcp = json!({"server": server, "tool": name, "result": ending.result});
        if let Some((args, answer)) = exchange {
            mcp["resultBytes"] = json!(serde_json::to_vec(answer).map_or(0, |b| b.len()));
            if audit.text != AuditText::None {
                // The arguments as masked: no raw PII in the log.
                mcp["arguments"] = args.clone();
            }
        }
        let mut decisions = ending.decisions.clone();
        decisions["mcp"] = mcp;
        let rec = audit_record(ctx, "mcp.tools/call", server, name, ending.status, decisions);
        if let Err(e) = audit.writer.append(rec).await {
            audit.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(error = %e, "audit record not written");
        }
    }
}

struct Prepared {
    tool: Tool,
    request: Value,
    masks: MaskMap,
    masked_args: Value,
    pii: Option<Value>,
}

/// An audit record of an MCP exchange: the server stands where a provider
/// does and the tool where a model does.
pub fn audit_record(ctx: &Ctx, api: &str, server: &str, tool: &str, status: u16, decisions: Value) -> AuditRecord {
    AuditRecord {
        time: rfc3339_millis(ctx.time),
        request_id: ctx.request_id.clone(),
        client_request_id: ctx.client_request_id.clone(),
        consumer: ctx.consumer().to_string(),
        team: ctx.caller.as_ref().map(|i| i.team.clone()).unwrap_or_default(),
        api: api.to_string(),
        requested_model: tool.to_string(),
        model: tool.to_string(),
        provider: server.to_string(),
        attempts: 1,
        status,
        latency_ms: ctx.started.elapsed().as_millis() as u64,
        decisions,
        ..Default::default()
    }
}

/// A tool result the gateway replaced.
fn withheld(text: &str) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": true})
}

/// A `text/event-stream` answer whose events come from `rx`.
pub fn sse_response(rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>) -> Response {
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut resp = (StatusCode::OK, Body::from_stream(stream)).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("text/event-stream"));
    resp.headers_mut().insert("cache-control", HeaderValue::from_static("no-cache"));
    resp
}

/// One server-sent event carrying a JSON-RPC message.
pub fn sse_event(message: &Value) -> Vec<u8> {
    let mut out = b"event: message\ndata: ".to_vec();
    out.extend(serde_json::to_vec(message).unwrap_or_default());
    out.extend(b"\n\n");
    out
}

/// Every text of a result a model reads: text contents, embedded resources'
/// text, and the strings of `structuredContent`.
fn result_texts(result: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut copy = result.clone();
    walk_strings(&mut copy, 0, &mut |s: &mut String| out.push(std::mem::take(s)));
    out
}

/// Replace each string the firewall alone would block.
fn redact_injected(fw: &Firewall, result: &mut Value) {
    walk_strings(result, 0, &mut |s: &mut String| {
        if fw.scan(s).action == FirewallAction::Block {
            *s = "[REDACTED_INJECTION]".into();
        }
    });
}

/// Visit every string value of a JSON tree (not keys), to a depth bound.
fn walk_strings(v: &mut Value, depth: usize, f: &mut dyn FnMut(&mut String)) {
    if depth > 64 {
        return;
    }
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter_mut().for_each(|x| walk_strings(x, depth + 1, f)),
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                // Media payloads and content types are not text a model reads.
                if matches!(k.as_str(), "data" | "blob" | "mimeType" | "type") && x.is_string() {
                    continue;
                }
                walk_strings(x, depth + 1, f);
            }
        }
        _ => {}
    }
}

/// Mask every string value (and key) of the arguments by the PII policy.
pub(super) fn mask_json(
    pii: &PiiScanner,
    v: &mut Value,
    masks: &mut MaskMap,
    found: &mut Vec<tollgate_core::pii::Finding>,
    depth: usize,
) -> Result<(), tollgate_core::Error> {
    if depth > 64 {
        return Err(tollgate_core::Error::InvalidRequest("the arguments are nested too deeply".into()));
    }
    match v {
        Value::String(s) => {
            if let std::borrow::Cow::Owned(m) = pii.mask_text(s, masks, found)? {
                *s = m;
            }
        }
        Value::Array(a) => {
            for x in a {
                mask_json(pii, x, masks, found, depth + 1)?;
            }
        }
        Value::Object(o) => {
            let mut out = serde_json::Map::with_capacity(o.len());
            for (k, mut x) in std::mem::take(o) {
                mask_json(pii, &mut x, masks, found, depth + 1)?;
                let k = pii.mask_text(&k, masks, found)?.into_owned();
                out.insert(k, x);
            }
            *o = out;
        }
        _ => {}
    }
    Ok(())
}

/// Per entity type, what was done: `{"EMAIL_ADDRESS": {"mask": 1}}`.
fn pii_counts(found: &[tollgate_core::pii::Finding]) -> Option<Value> {
    if found.is_empty() {
        return None;
    }
    let mut out = json!({});
    for f in found {
        let action =
            serde_json::to_value(f.action).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let n = out[&f.entity][&action].as_u64().unwrap_or(0);
        out[&f.entity][&action] = json!(n + 1);
    }
    Some(out)
}
