//! The MCP gateway: agents' tool calls governed like model calls.
//!
//! Envoy routes `/mcp/<virtualServer>` to the sidecar, over the same
//! authenticated channel as ext_proc (the sidecar's port serves both; see
//! `server.rs`). Here a client session fans out to the upstream servers the
//! virtual server names: `initialize` opens a session with each and answers
//! with one signed session id ([`session`]); `tools/list` is the union of the
//! tools the caller may use, each judged first ([`catalog`]); `tools/call`
//! goes to the owning upstream under its own name, its arguments masked and
//! its result inspected ([`call`]). Everything a client sends is checked
//! before anything reaches an upstream; a refusal is a JSON-RPC error.

pub mod admin;
pub mod asked;
pub mod call;
pub mod catalog;
pub mod legacy;
pub mod passthrough;
pub mod session;
pub mod upstream;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tollgate_core::mcp::grants::Grants;
use tollgate_core::mcp::jsonrpc::{self, Message};
use tollgate_core::mcp::openapi::Api;
use tollgate_core::policy::Policy;

use self::catalog::{Listings, Standing, Tool};
use self::session::{Session, Signer, Upstream};
use self::upstream::{Answer, Target, UpstreamError, SESSION_HEADER, VERSION_HEADER};
use crate::config::{mcp_credential, LiveShared};
use crate::identity::{identify, Identity};
use crate::shared::Shared;

pub use tollgate_core::mcp::{CLAIMS_HEADER as MCP_CLAIMS_HEADER, RESOURCE_METADATA};

/// Protocol versions served, newest first.
pub const VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];
/// Pages of one upstream's `tools/list` read at most.
const MAX_PAGES: usize = 50;
/// A GET stream from an upstream ends after this long without an event.
const LISTEN_IDLE: std::time::Duration = std::time::Duration::from_secs(300);
/// Upstream sessions re-opened by this replica, at most (then forgotten).
const MAX_REOPENED: usize = 10_000;

/// The gateway's state shared by every MCP request.
pub struct Gateway {
    live: LiveShared,
    client: upstream::Client,
    signer: tokio::sync::OnceCell<Signer>,
    listings: Listings,
    /// Withheld definitions already reported (server/tool@digest).
    reported: Mutex<HashSet<String>>,
    /// Upstream sessions this replica opened again (the session's nonce and
    /// the server → the new session): the upstream forgot the signed one.
    reopened: Mutex<HashMap<(String, String), Upstream>>,
    inspectors: call::InspectorCache,
    /// REST APIs served as tools: each OpenAPI document by file path, read
    /// again when the file changes.
    apis: Mutex<HashMap<String, LoadedApi>>,
    /// Streams to upstreams on the older HTTP+SSE transport.
    legacy: legacy::Legacy,
}

/// An OpenAPI document and the modification time of the file it was read from.
type LoadedApi = (Option<SystemTime>, Arc<Api>);

/// One request's context.
#[derive(Clone)]
pub struct Ctx {
    pub shared: Shared,
    pub caller: Option<Identity>,
    pub virtual_server: String,
    pub request_id: String,
    pub client_request_id: Option<String>,
    pub started: Instant,
    pub time: SystemTime,
}

/// `tollgate-<the request's id>-<what>` (the id without its `tg-`, which
/// reads as a gateway key).
fn upstream_id(request_id: &str, what: &str) -> Value {
    json!(format!("tollgate-{}-{what}", request_id.trim_start_matches("tg-")))
}

impl Ctx {
    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// The id of a request the gateway sends an upstream for this one:
    /// unique within the upstream session, as JSON-RPC wants (an SDK server
    /// keys each request's answer stream by it, so concurrent calls that
    /// shared one would take each other's answers).
    pub fn upstream_id(&self, what: &str) -> Value {
        upstream_id(&self.request_id, what)
    }

    pub fn grants(&self) -> Option<Grants<'_>> {
        let caller = self.caller.as_ref().map(|i| (i.consumer.as_str(), i.team.as_str()));
        Grants::of(&self.shared.policy, &self.virtual_server, caller)
    }

    pub fn consumer(&self) -> &str {
        self.caller.as_ref().map_or("", |i| i.consumer.as_str())
    }
}

impl Gateway {
    pub fn new(live: LiveShared) -> anyhow::Result<Arc<Gateway>> {
        let policy = live.current().policy;
        let timeout = std::time::Duration::from_millis(policy.mcp.timeout_ms);
        Ok(Arc::new(Gateway {
            client: upstream::Client::new(timeout, policy.mcp.max_message_bytes)?,
            live,
            signer: tokio::sync::OnceCell::new(),
            listings: Listings::default(),
            reported: Mutex::default(),
            reopened: Mutex::default(),
            inspectors: call::InspectorCache::default(),
            apis: Mutex::default(),
            legacy: legacy::Legacy::default(),
        }))
    }

    /// The session signer, its key shared through the limit store.
    async fn signer(&self, shared: &Shared) -> anyhow::Result<&Signer> {
        self.signer
            .get_or_try_init(|| async {
                match &shared.budget {
                    Some(b) => session::shared_key(&b.store).await,
                    None => Signer::random(),
                }
            })
            .await
    }

    /// Where an upstream is and the credential the gateway holds for it.
    fn target<'a>(&self, shared: &'a Shared, server: &str, up: &'a Upstream) -> Option<Target<'a>> {
        let cfg = shared.policy.mcp.servers.get(server)?;
        Some(Target {
            url: cfg.url.as_deref()?,
            session: Some(up.session.as_str()).filter(|s| !s.is_empty()),
            protocol: Some(up.protocol.as_str()).filter(|s| !s.is_empty()),
            credential: shared.credentials.get(&mcp_credential(server)),
        })
    }

    /// Open a session with an upstream server, offering it `caps` (the
    /// client capabilities the gateway relays).
    async fn open_upstream(
        &self,
        shared: &Shared,
        server: &str,
        version: &str,
        caps: &serde_json::Map<String, Value>,
    ) -> Result<Upstream, UpstreamError> {
        let blank = Upstream::default();
        let Some(to) = self.target(shared, server, &blank) else {
            return Err(UpstreamError::Invalid(format!("`{server}` is not an MCP server")));
        };
        let init = jsonrpc::request(
            &upstream_id(&crate::extproc::new_request_id(), "init"),
            "initialize",
            Some(&json!({
                "protocolVersion": version,
                // Only what the gateway relays (see `asked`): never sampling.
                "capabilities": caps,
                "clientInfo": {"name": "tollgate", "version": env!("CARGO_PKG_VERSION")},
            })),
        );
        let answer = match self.client.post(to, &init).await {
            // A server on the older HTTP+SSE transport refuses the POST:
            // open its event stream instead (as the transport's spec says).
            Err(UpstreamError::Status(status)) if (400..500).contains(&status) && status != 401 && status != 403 => {
                return self.open_legacy(shared, server, &init).await;
            }
            other => other?,
        };
        let session = answer.session().unwrap_or_default().to_string();
        let response = answer.response().await?;
        if let Some(err) = response.get("error") {
            return Err(UpstreamError::Invalid(format!("initialize refused: {err}")));
        }
        let protocol =
            response.pointer("/result/protocolVersion").and_then(Value::as_str).unwrap_or(version).to_string();
        let up = Upstream { session, protocol };
        if let Some(to) = self.target(shared, server, &up) {
            let note = jsonrpc::notification("notifications/initialized", None);
            self.client.post(to, &note).await?;
        }
        Ok(up)
    }

    /// Open a session with a server on the HTTP+SSE transport (one stream
    /// held by this replica).
    async fn open_legacy(&self, shared: &Shared, server: &str, init: &Value) -> Result<Upstream, UpstreamError> {
        let url = shared.policy.mcp.servers.get(server).and_then(|c| c.url.as_deref()).unwrap_or_default();
        let credential = shared.credentials.get(&mcp_credential(server));
        let (http, timeout) = (self.client.pool(), self.client.timeout());
        let session = self.legacy.open(http, url, credential, timeout, self.client.max_bytes()).await?;
        let response = self
            .legacy
            .send(http, &session, credential, init, timeout)
            .await?
            .ok_or_else(|| UpstreamError::Invalid("no answer to initialize".into()))?;
        if let Some(err) = response.get("error") {
            self.legacy.close(&session);
            return Err(UpstreamError::Invalid(format!("initialize refused: {err}")));
        }
        let asked = init.pointer("/params/protocolVersion").and_then(Value::as_str).unwrap_or_default();
        let protocol = response.pointer("/result/protocolVersion").and_then(Value::as_str).unwrap_or(asked);
        let note = jsonrpc::notification("notifications/initialized", None);
        self.legacy.send(http, &session, credential, &note, timeout).await?;
        Ok(Upstream { session, protocol: protocol.to_string() })
    }

    /// This session's side with `server`: the one it was signed with, one
    /// this replica opened again, or a new one.
    async fn upstream_of(&self, ctx: &Ctx, s: &Session, server: &str) -> Result<Upstream, UpstreamError> {
        let key = (s.nonce.clone(), server.to_string());
        if let Some(up) = self.reopened.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(up);
        }
        if let Some(up) = s.upstream.get(server) {
            return Ok(up.clone());
        }
        self.reopen(ctx, s, server).await
    }

    async fn reopen(&self, ctx: &Ctx, s: &Session, server: &str) -> Result<Upstream, UpstreamError> {
        let up = self.open_upstream(&ctx.shared, server, &s.protocol, &s.caps).await?;
        if let Ok(mut m) = self.reopened.lock() {
            if m.len() >= MAX_REOPENED {
                m.clear();
            }
            m.insert((s.nonce.clone(), server.to_string()), up.clone());
        }
        Ok(up)
    }

    /// Send a message to `server` in this session, opening the upstream
    /// session again once if the server forgot it.
    pub async fn send(&self, ctx: &Ctx, s: &Session, server: &str, message: &Value) -> Result<Answer, UpstreamError> {
        let up = self.upstream_of(ctx, s, server).await?;
        match self.send_to(&ctx.shared, server, &up, message).await {
            Err(UpstreamError::SessionGone) => {
                let up = self.reopen(ctx, s, server).await?;
                self.send_to(&ctx.shared, server, &up, message).await
            }
            other => other,
        }
    }

    /// One message on one upstream session, over its transport.
    async fn send_to(
        &self,
        shared: &Shared,
        server: &str,
        up: &Upstream,
        message: &Value,
    ) -> Result<Answer, UpstreamError> {
        if up.session.starts_with(legacy::PREFIX) {
            let credential = shared.credentials.get(&mcp_credential(server));
            let (http, timeout) = (self.client.pool(), self.client.timeout());
            return Ok(match self.legacy.send(http, &up.session, credential, message, timeout).await? {
                Some(message) => Answer::Json { session: None, message },
                None => Answer::Accepted { session: None },
            });
        }
        let to = self
            .target(shared, server, up)
            .ok_or_else(|| UpstreamError::Invalid(format!("`{server}` is not an MCP server")))?;
        self.client.post(to, message).await
    }

    /// The upstream servers a caller's session uses.
    fn servers<'p>(&self, policy: &'p Policy, grants: &Grants<'_>) -> Vec<&'p str> {
        policy.mcp.servers.keys().filter(|name| grants.uses_server(name)).map(String::as_str).collect()
    }

    async fn initialize(&self, ctx: &Ctx, id: &Value, params: Option<&Value>) -> Response {
        let Some(grants) = ctx.grants() else { return unknown_virtual_server(ctx, id) };
        let asked = jsonrpc::param_str(params, "protocolVersion").unwrap_or_default();
        let version = VERSIONS.iter().find(|v| **v == asked).copied().unwrap_or(VERSIONS[0]);
        let mcp_servers: Vec<&str> = self
            .servers(ctx.policy(), &grants)
            .into_iter()
            .filter(|s| ctx.policy().mcp.servers.get(*s).is_some_and(|c| c.url.is_some()))
            .collect();
        let caps = asked::relayed_caps(&ctx.policy().mcp.server_requests, version, params);
        let opened =
            futures::future::join_all(mcp_servers.iter().map(|s| self.open_upstream(&ctx.shared, s, version, &caps)))
                .await;
        let mut upstream = BTreeMap::new();
        for (server, result) in mcp_servers.iter().zip(opened) {
            match result {
                Ok(up) => _ = upstream.insert(server.to_string(), up),
                // Opened again on first use; its tools are missing until then.
                Err(e) => tracing::warn!(server, error = %e, "mcp: cannot open a session upstream"),
            }
        }
        let session = Session {
            virtual_server: ctx.virtual_server.clone(),
            consumer: ctx.consumer().to_string(),
            protocol: version.to_string(),
            upstream,
            expires: session::epoch(ctx.time + session::LIFETIME),
            nonce: session::nonce(),
            caps,
        };
        let signer = match self.signer(&ctx.shared).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "mcp: no session key");
                let body = jsonrpc::error(id, jsonrpc::INTERNAL_ERROR, "the gateway cannot open sessions right now");
                return json_response(StatusCode::SERVICE_UNAVAILABLE, &body, None);
            }
        };
        let session_id = signer.sign(&session);
        let result = json!({
            "protocolVersion": version,
            "capabilities": {
                "tools": {"listChanged": false},
                "prompts": {"listChanged": false},
                "resources": {"listChanged": false, "subscribe": true},
                "completions": {},
            },
            "serverInfo": {"name": format!("tollgate-{}", ctx.virtual_server), "version": env!("CARGO_PKG_VERSION")},
        });
        json_response(StatusCode::OK, &jsonrpc::result(id, result), Some(&session_id))
    }

    /// The OpenAPI document of a REST server (`None` for an MCP server).
    pub fn api(&self, shared: &Shared, server: &str) -> Result<Option<Arc<Api>>, UpstreamError> {
        let Some(path) = shared.policy.mcp.servers.get(server).and_then(|c| c.openapi.as_deref()) else {
            return Ok(None);
        };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if let Some((at, api)) = self.apis.lock().ok().and_then(|m| m.get(path).cloned()) {
            if at == modified {
                return Ok(Some(api));
            }
        }
        let api = Arc::new(crate::config::load_api(path).map_err(UpstreamError::Invalid)?);
        if let Ok(mut m) = self.apis.lock() {
            m.insert(path.to_string(), (modified, api.clone()));
        }
        Ok(Some(api))
    }

    /// The tools of one upstream server, judged.
    pub async fn server_tools(&self, ctx: &Ctx, s: &Session, server: &str) -> Result<Arc<Vec<Tool>>, UpstreamError> {
        let defs = match self.api(&ctx.shared, server)? {
            Some(api) => api.tools(),
            None => self.list_all(ctx, s, server, "tools/list", "tools").await?,
        };
        let mut tools = catalog::name_tools(server, defs);
        self.judge(ctx, server, &mut tools).await;
        let tools = Arc::new(tools);
        self.listings.put(server, tools.clone());
        Ok(tools)
    }

    /// An MCP server's whole listing (`tools/list`, `prompts/list`, ...: every
    /// page), the items under `key` of each result.
    pub async fn list_all(
        &self,
        ctx: &Ctx,
        s: &Session,
        server: &str,
        method: &str,
        key: &str,
    ) -> Result<Vec<Value>, UpstreamError> {
        let mut defs = Vec::new();
        let mut cursor: Option<String> = None;
        for page in 0..MAX_PAGES {
            let params = cursor.as_ref().map(|c| json!({"cursor": c}));
            let request = jsonrpc::request(&ctx.upstream_id(&format!("list-{server}-{page}")), method, params.as_ref());
            let answer = self.send(ctx, s, server, &request).await?;
            let response = self.response_of(ctx, s, server, answer).await?;
            if let Some(err) = response.get("error") {
                return Err(UpstreamError::Invalid(format!("{method} refused: {err}")));
            }
            let result = response.get("result").cloned().unwrap_or_default();
            if let Some(items) = result.get(key).and_then(Value::as_array) {
                defs.extend(items.iter().cloned());
            }
            cursor = result.get("nextCursor").and_then(Value::as_str).map(str::to_string);
            if cursor.is_none() {
                break;
            }
        }
        Ok(defs)
    }

    /// A listing fresh enough for a call, or a new one.
    pub async fn tools_for_call(&self, ctx: &Ctx, s: &Session, server: &str) -> Result<Arc<Vec<Tool>>, UpstreamError> {
        match self.listings.fresh(server) {
            Some(t) => Ok(t),
            None => self.server_tools(ctx, s, server).await,
        }
    }

    /// Hide poisoned definitions and quarantine changed ones.
    async fn judge(&self, ctx: &Ctx, server: &str, tools: &mut [Tool]) {
        let inspectors = self.inspectors.get(&ctx.shared.policy);
        if let Some(fw) = &inspectors.firewall {
            for t in tools.iter_mut().filter(|t| t.standing == Standing::Listed) {
                if let Some(rules) = catalog::poisoned(fw, &t.definition) {
                    t.standing = Standing::Poisoned(rules);
                }
            }
        }
        let policy_pins = &ctx.policy().mcp.pins;
        let store = ctx.shared.budget.as_ref().map(|b| &b.store);
        let stored: HashMap<String, String> = match store {
            Some(store) => match store.values(catalog::PINS).await {
                Ok(v) => v.into_iter().collect(),
                Err(e) => {
                    tracing::error!(error = %e, "mcp: cannot read tool pins: tools are withheld");
                    for t in tools.iter_mut().filter(|t| t.standing == Standing::Listed) {
                        t.standing = Standing::Unverified;
                    }
                    return;
                }
            },
            None => HashMap::new(),
        };
        for t in tools.iter_mut() {
            if t.standing != Standing::Listed {
                if let Standing::Poisoned(rules) = &t.standing {
                    self.report(ctx, t, "poisoned", json!({"rules": rules})).await;
                }
                continue;
            }
            let q = tollgate_core::mcp::names::qualified(server, &t.name);
            let pinned = match policy_pins.get(&q).or_else(|| stored.get(&q)) {
                Some(p) => p.clone(),
                None => match store {
                    Some(store) => match store.set_value(catalog::PINS, &q, &t.digest, true).await {
                        Ok(held) => held,
                        Err(e) => {
                            tracing::error!(error = %e, tool = %q, "mcp: cannot pin a tool: it is withheld");
                            t.standing = Standing::Unverified;
                            continue;
                        }
                    },
                    None => t.digest.clone(),
                },
            };
            if pinned != t.digest {
                t.standing = Standing::Quarantined { pinned: pinned.clone() };
                if let Some(store) = store {
                    let _ = store.set_value(catalog::PENDING, &q, &t.digest, false).await;
                }
                self.report(ctx, t, "changed", json!({"pinned": pinned, "listed": t.digest})).await;
            }
        }
    }

    /// Report a withheld definition once per digest: log, metric, audit.
    async fn report(&self, ctx: &Ctx, t: &Tool, reason: &'static str, detail: Value) {
        let key = format!("{}/{}@{}", t.server, t.name, t.digest);
        let first = self.reported.lock().map(|mut r| r.insert(key)).unwrap_or(false);
        if !first {
            return;
        }
        tracing::warn!(server = %t.server, tool = %t.name, reason, %detail, "mcp: tool definition withheld");
        ctx.shared
            .metrics
            .mcp_tools_withheld
            .get_or_create(&crate::metrics::McpToolLabels { server: t.server.clone(), reason })
            .inc();
        if let Some(audit) = &ctx.shared.audit {
            let decisions = json!({"mcp": {
                "server": t.server, "tool": t.name, "withheld": reason, "digest": t.digest,
                "definition": t.definition, "detail": detail,
            }});
            let rec = call::audit_record(ctx, "mcp.tools/list", &t.server, &t.name, 200, decisions);
            let _ = audit.writer.append(rec).await;
        }
    }

    async fn list(&self, ctx: &Ctx, s: &Session, id: &Value, params: Option<&Value>) -> Response {
        let Some(grants) = ctx.grants() else { return unknown_virtual_server(ctx, id) };
        let servers = self.servers(ctx.policy(), &grants);
        let listed = futures::future::join_all(servers.iter().map(|server| self.server_tools(ctx, s, server))).await;
        let mut tools = Vec::new();
        for (server, result) in servers.iter().zip(listed) {
            match result {
                Ok(list) => tools.extend(
                    list.iter()
                        .filter(|t| t.standing == Standing::Listed && grants.allows(server, &t.name))
                        .map(Tool::for_client),
                ),
                Err(e) => tracing::warn!(server, error = %e, "mcp: cannot list an upstream's tools"),
            }
        }
        // One order on every replica, so a cursor means the same anywhere.
        tools.sort_by(|a, b| a.get("name").and_then(Value::as_str).cmp(&b.get("name").and_then(Value::as_str)));
        let cursor = jsonrpc::param_str(params, "cursor");
        match jsonrpc::page(tools, cursor, ctx.policy().mcp.page_size) {
            Ok((tools, next)) => {
                let mut result = json!({"tools": tools});
                if let Some(next) = next {
                    result["nextCursor"] = json!(next);
                }
                json_response(StatusCode::OK, &jsonrpc::result(id, result), None)
            }
            Err(msg) => json_response(StatusCode::OK, &jsonrpc::error(id, jsonrpc::INVALID_PARAMS, &msg), None),
        }
    }

    /// A POST: one JSON-RPC message.
    async fn post(self: Arc<Self>, vs: String, headers: HeaderMap, authority: Option<&str>, body: Bytes) -> Response {
        let shared = self.live.current();
        let time = SystemTime::now();
        let max = shared.policy.mcp.max_message_bytes;
        if body.len() > max {
            let msg = format!("the message is larger than this gateway's {max} bytes");
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &jsonrpc::error(&Value::Null, jsonrpc::INVALID_REQUEST, &msg),
                None,
            );
        }
        let message = match jsonrpc::parse(&body) {
            Ok(m) => m,
            Err(invalid) => return json_response(StatusCode::BAD_REQUEST, &invalid.response(), None),
        };
        let id = match &message {
            Message::Request { id, .. } | Message::Response { id } => id.clone(),
            Message::Notification { .. } => Value::Null,
        };
        let caller = match caller(&shared, &headers, time) {
            Ok(c) => c,
            Err(e) => return refused_caller(&shared.policy, &headers, authority, &vs, &id, &e),
        };
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let ctx = Ctx {
            shared,
            caller,
            virtual_server: vs,
            request_id: crate::extproc::new_request_id(),
            client_request_id: header("x-request-id"),
            started: Instant::now(),
            time,
        };
        if ctx.grants().is_none() {
            return unknown_virtual_server(&ctx, &id);
        }
        if let Message::Request { method, params, .. } = &message {
            if method == "initialize" {
                return self.initialize(&ctx, &id, params.as_ref()).await;
            }
        }
        let session = match self.session(&ctx, header(SESSION_HEADER).as_deref(), &id).await {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        if let Some(v) = header(VERSION_HEADER) {
            if !VERSIONS.contains(&v.as_str()) {
                let msg = format!("unsupported MCP-Protocol-Version `{v}`; supported: {}", VERSIONS.join(", "));
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &jsonrpc::error(&id, jsonrpc::INVALID_REQUEST, &msg),
                    None,
                );
            }
        }
        let (method, params) = match message {
            // An answer to a server's request goes back to the server that asked.
            Message::Response { .. } => return self.answer(&ctx, &session, &id, &body).await,
            // Notifications: nothing upstream needs them.
            Message::Notification { .. } => return StatusCode::ACCEPTED.into_response(),
            Message::Request { method, params, .. } => (method, params),
        };
        match method.as_str() {
            "ping" => json_response(StatusCode::OK, &jsonrpc::result(&id, json!({})), None),
            "tools/list" => self.list(&ctx, &session, &id, params.as_ref()).await,
            "tools/call" => self.call(ctx, session, id, params).await,
            _ => {
                if let Some(resp) = self.passthrough(&ctx, &session, &id, &method, params.as_ref()).await {
                    return resp;
                }
                let msg = format!("method `{method}` is not served by this gateway");
                json_response(StatusCode::OK, &jsonrpc::error(&id, jsonrpc::METHOD_NOT_FOUND, &msg), None)
            }
        }
    }

    /// The session a request names, checked: issued by this gateway, for this
    /// virtual server and this caller, not expired.
    async fn session(&self, ctx: &Ctx, presented: Option<&str>, id: &Value) -> Result<Session, Response> {
        let Some(presented) = presented else {
            let body = jsonrpc::error(id, jsonrpc::INVALID_REQUEST, "missing Mcp-Session-Id: call `initialize` first");
            return Err(json_response(StatusCode::BAD_REQUEST, &body, None));
        };
        let signer = self.signer(&ctx.shared).await.map_err(|e| {
            tracing::error!(error = %e, "mcp: no session key");
            let body = jsonrpc::error(id, jsonrpc::INTERNAL_ERROR, "the gateway cannot check sessions right now");
            json_response(StatusCode::SERVICE_UNAVAILABLE, &body, None)
        })?;
        let not_found = |why: &str| {
            tracing::info!(why, "mcp: session refused");
            let body = jsonrpc::error(id, jsonrpc::INVALID_REQUEST, "session not found: call `initialize` again");
            json_response(StatusCode::NOT_FOUND, &body, None)
        };
        let s = signer.verify(presented, ctx.time).map_err(|e| not_found(&e.to_string()))?;
        if s.virtual_server != ctx.virtual_server {
            return Err(not_found("the session belongs to another virtual server"));
        }
        if s.consumer != ctx.consumer() {
            return Err(not_found("the session belongs to another caller"));
        }
        Ok(s)
    }

    /// The caller and its session, for a request with no JSON-RPC body (GET, DELETE).
    async fn session_of(
        &self,
        vs: String,
        headers: &HeaderMap,
        authority: Option<&str>,
    ) -> Result<(Ctx, Session), Response> {
        let shared = self.live.current();
        let time = SystemTime::now();
        let caller = match caller(&shared, headers, time) {
            Ok(c) => c,
            Err(e) => return Err(refused_caller(&shared.policy, headers, authority, &vs, &Value::Null, &e)),
        };
        let ctx = Ctx {
            shared,
            caller,
            virtual_server: vs,
            request_id: crate::extproc::new_request_id(),
            client_request_id: None,
            started: Instant::now(),
            time,
        };
        let presented = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok());
        let s = self.session(&ctx, presented, &Value::Null).await?;
        Ok((ctx, s))
    }

    /// A GET: the merged stream of what the session's upstream servers send
    /// unasked (notifications: a changed tool list, an updated resource,
    /// log messages). Requests from a server are dropped: the gateway offers
    /// upstreams no client capabilities. A tool list that changed is read
    /// (and judged) again on the next `tools/list` or call.
    async fn listen(self: Arc<Self>, vs: String, headers: HeaderMap, authority: Option<&str>) -> Response {
        let (ctx, s) = match self.session_of(vs, &headers, authority).await {
            Ok(found) => found,
            Err(resp) => return resp,
        };
        let mut streams = Vec::new();
        for server in s.upstream.keys() {
            let Ok(up) = self.upstream_of(&ctx, &s, server).await else { continue };
            if up.session.starts_with(legacy::PREFIX) {
                if let Some(rx) = self.legacy.notifications(&up.session) {
                    streams.push((server.clone(), up, Unasked::Legacy(rx)));
                }
                continue;
            }
            let Some(to) = self.target(&ctx.shared, server, &up) else { continue };
            match self.client.listen(to, LISTEN_IDLE).await {
                Ok(Some(events)) => streams.push((server.clone(), up, Unasked::Http(events))),
                Ok(None) => {}
                Err(e) => tracing::info!(server, error = %e, "mcp: no stream from an upstream"),
            }
        }
        if streams.is_empty() {
            let mut resp = StatusCode::METHOD_NOT_ALLOWED.into_response();
            resp.headers_mut().insert("allow", HeaderValue::from_static("POST, DELETE"));
            return resp;
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
        for (server, up, mut events) in streams {
            let (tx, gw, ctx, s) = (tx.clone(), self.clone(), ctx.clone(), s.clone());
            tokio::spawn(async move {
                while let Some(m) = events.next().await {
                    if upstream::is_request(&m) {
                        // Relayed under a sealed id, or answered here.
                        if let Some(forward) = gw.on_request(&ctx, &s, &server, &up, &m).await {
                            if tx.send(Ok(call::sse_event(&forward))).await.is_err() {
                                break;
                            }
                        }
                        continue;
                    }
                    if m.get("id").is_some() {
                        continue; // a response nobody asked for here
                    }
                    if m.get("method").and_then(Value::as_str) == Some("notifications/tools/list_changed") {
                        gw.listings.clear();
                    }
                    if tx.send(Ok(call::sse_event(&m))).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        call::sse_response(rx)
    }

    /// A DELETE: the client ends its session.
    async fn delete(self: Arc<Self>, vs: String, headers: HeaderMap, authority: Option<&str>) -> Response {
        let (ctx, s) = match self.session_of(vs, &headers, authority).await {
            Ok(found) => found,
            Err(resp) => return resp,
        };
        let reopened: Vec<Upstream> = self
            .reopened
            .lock()
            .map(|m| m.iter().filter(|((n, _), _)| *n == s.nonce).map(|(_, up)| up.clone()).collect())
            .unwrap_or_default();
        for up in reopened.iter().chain(s.upstream.values()).filter(|up| up.session.starts_with(legacy::PREFIX)) {
            self.legacy.close(&up.session);
        }
        for (server, up) in &s.upstream {
            if let Some(to) = self.target(&ctx.shared, server, up).filter(|_| !up.session.starts_with(legacy::PREFIX)) {
                self.client.end_session(to).await;
            }
        }
        if let Ok(mut m) = self.reopened.lock() {
            m.retain(|(nonce, _), _| *nonce != s.nonce);
        }
        StatusCode::OK.into_response()
    }
}

/// Who is calling: a gateway key, or (with `access.jwt`) the JWT payload
/// Envoy verified and forwarded in [`MCP_CLAIMS_HEADER`], or the claims it
/// forwarded one by one (Envoy Gateway: [`forwarded_claims`]). Envoy removes
/// a client's copy of these headers before anything else reads the request.
fn caller(shared: &Shared, headers: &HeaderMap, time: SystemTime) -> Result<Option<Identity>, tollgate_core::Error> {
    use base64::Engine as _;
    let jwt = shared.policy.access.jwt.as_ref();
    let claims = jwt
        .and_then(|_| headers.get(MCP_CLAIMS_HEADER))
        .and_then(|v| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v.as_bytes().trim_ascii_end()).ok())
        .and_then(|raw| serde_json::from_slice::<Value>(&raw).ok())
        .filter(Value::is_object)
        .or_else(|| forwarded_claims(jwt?, headers));
    let metadata = claims.as_ref().map(crate::identity::jwt_metadata);
    identify(&shared.policy, &shared.keys.current(), headers, metadata.as_ref(), time)
}

/// The payload of a token Envoy verified (its issuer and audience checked)
/// and whose consumer and team claims it forwarded in headers of their own,
/// as Envoy Gateway's `claimToHeaders` does.
fn forwarded_claims(jwt: &tollgate_core::access::JwtPolicy, headers: &HeaderMap) -> Option<Value> {
    use tollgate_core::mcp::{CONSUMER_CLAIM_HEADER, TEAM_CLAIM_HEADER};
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let mut payload = serde_json::Map::new();
    payload.insert("iss".into(), json!(jwt.issuer));
    if let Some(aud) = jwt.audiences.first() {
        payload.insert("aud".into(), json!(aud));
    }
    payload.insert(jwt.consumer_claim.clone(), json!(header(CONSUMER_CLAIM_HEADER)?));
    if let Some(team) = header(TEAM_CLAIM_HEADER) {
        payload.insert(jwt.team_claim.clone(), json!(team));
    }
    Some(Value::Object(payload))
}

/// The gateway's own URL as the client sees it (Envoy passes the host on).
fn public_base(headers: &HeaderMap, authority: Option<&str>) -> String {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let scheme = header("x-forwarded-proto").filter(|p| *p == "https").unwrap_or("http");
    let host = authority.or_else(|| header("host")).unwrap_or("localhost");
    format!("{scheme}://{host}")
}

/// The answer to a caller who could not be identified: a JSON-RPC error
/// with the status the error names and, on a 401, the challenge.
fn refused_caller(
    policy: &Policy,
    headers: &HeaderMap,
    authority: Option<&str>,
    vs: &str,
    id: &Value,
    e: &tollgate_core::Error,
) -> Response {
    let body = jsonrpc::error(id, jsonrpc::POLICY_REFUSED, &e.to_string());
    let mut resp = json_response(StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED), &body, None);
    if e.status() == 401 {
        resp.headers_mut().insert("www-authenticate", challenge(policy, headers, authority, vs));
    }
    resp
}

/// `WWW-Authenticate` of a 401: with JWTs, where the resource metadata is.
fn challenge(policy: &Policy, headers: &HeaderMap, authority: Option<&str>, vs: &str) -> HeaderValue {
    if policy.access.jwt.is_none() {
        return HeaderValue::from_static("Bearer");
    }
    let url = format!("{}{RESOURCE_METADATA}/mcp/{vs}", public_base(headers, authority));
    HeaderValue::from_str(&format!("Bearer resource_metadata=\"{url}\"")).unwrap_or(HeaderValue::from_static("Bearer"))
}

/// A virtual server's OAuth protected-resource metadata (RFC 9728), served
/// when identity comes from JWTs: the resource and who issues its tokens.
fn resource_metadata(policy: &Policy, headers: &HeaderMap, authority: Option<&str>, vs: &str) -> Response {
    let (Some(jwt), true) = (&policy.access.jwt, policy.mcp.virtual_servers.contains_key(vs)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let body = json!({
        "resource": format!("{}/mcp/{vs}", public_base(headers, authority)),
        "authorization_servers": [jwt.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": format!("Tollgate MCP virtual server `{vs}`"),
    });
    json_response(StatusCode::OK, &body, None)
}

/// What an upstream sends unasked: its GET stream, or a legacy stream's notifications.
enum Unasked {
    Http(upstream::Events),
    Legacy(tokio::sync::broadcast::Receiver<Value>),
}

impl Unasked {
    async fn next(&mut self) -> Option<Value> {
        match self {
            Unasked::Http(events) => events.next().await.ok().flatten(),
            Unasked::Legacy(rx) => loop {
                match rx.recv().await {
                    Ok(m) => return Some(m),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "mcp: a slow listener missed notifications");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            },
        }
    }
}

fn unknown_virtual_server(ctx: &Ctx, id: &Value) -> Response {
    let msg = format!("no MCP virtual server `{}` on this gateway", ctx.virtual_server);
    json_response(StatusCode::NOT_FOUND, &jsonrpc::error(id, jsonrpc::INVALID_REQUEST, &msg), None)
}

/// A JSON answer, with the session header when one was issued.
pub fn json_response(status: StatusCode, body: &Value, session: Option<&str>) -> Response {
    let mut resp = (status, Body::from(serde_json::to_vec(body).unwrap_or_default())).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(s) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        resp.headers_mut().insert(SESSION_HEADER, s);
    }
    resp
}

/// The MCP endpoints: `POST`, `GET` and `DELETE` on `/mcp/<virtualServer>`.
pub fn router(gateway: Arc<Gateway>) -> axum::Router {
    use axum::routing::post;
    async fn on_post(
        State(gw): State<Arc<Gateway>>,
        Path(vs): Path<String>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        gw.post(vs, headers, uri.authority().map(|a| a.as_str()), body).await
    }
    async fn on_metadata(
        State(gw): State<Arc<Gateway>>,
        Path(vs): Path<String>,
        uri: Uri,
        headers: HeaderMap,
    ) -> Response {
        resource_metadata(&gw.live.current().policy, &headers, uri.authority().map(|a| a.as_str()), &vs)
    }
    async fn on_get(State(gw): State<Arc<Gateway>>, Path(vs): Path<String>, uri: Uri, headers: HeaderMap) -> Response {
        gw.listen(vs, headers, uri.authority().map(|a| a.as_str())).await
    }
    async fn on_delete(
        State(gw): State<Arc<Gateway>>,
        Path(vs): Path<String>,
        uri: Uri,
        headers: HeaderMap,
    ) -> Response {
        gw.delete(vs, headers, uri.authority().map(|a| a.as_str())).await
    }
    // The body cap is the policy's (checked in `post`); this bound only
    // keeps a body far past any policy's cap from being read at all.
    let hard_cap = tollgate_core::policy::MAX_BUFFER_BYTES + 1;
    axum::Router::new()
        .route("/mcp/{vs}", post(on_post).get(on_get).delete(on_delete))
        .route(&format!("{RESOURCE_METADATA}/mcp/{{vs}}"), axum::routing::get(on_metadata))
        .layer(axum::extract::DefaultBodyLimit::max(hard_cap))
        .with_state(gateway)
}
