//! Renders Envoy's bootstrap from the policy: listener → wasm filter →
//! ext_proc → router → one cluster per provider.

use std::path::Path;

use serde_json::{json, Value};
use tollgate_core::filter_config::FilterConfig;
use tollgate_core::headers::{INSPECTING_STATE, INSPECTION_STATE};
use tollgate_core::policy::{envoy_duration, BaseUrl, FailMode, Policy, SidecarTlsMode};
use tollgate_core::{ApiFamily, ApiKind};

use crate::extproc::{filter_state_attribute, FALLBACK_PREFIX, METADATA_NAMESPACE, PROVIDER_HEADER};
use crate::identity::{JWT_NAMESPACE, JWT_PAYLOAD_KEY};
use crate::upstream::TARGET_METADATA;

/// Inputs besides the policy.
#[derive(Debug, Clone)]
pub struct RenderOptions<'a> {
    /// Path of the built filter (`tollgate_filter.wasm`).
    pub wasm_path: &'a Path,
    /// Access log destination (`/dev/stdout` for the console).
    pub access_log: &'a str,
    /// Plugin configuration override (tests feed invalid ones); default: rendered from the policy.
    pub plugin_config: Option<String>,
}

/// Cluster name for a provider.
pub fn cluster_name(provider: &str) -> String {
    format!("provider_{provider}")
}

/// The access-log line: what Tollgate publishes, per request.
fn access_log_format() -> Value {
    let md = |key: &str| format!("%DYNAMIC_METADATA({METADATA_NAMESPACE}:{key})%");
    let fs = |key: &str| format!("%FILTER_STATE(wasm.{METADATA_NAMESPACE}.{key}:PLAIN)%");
    json!({
        "time": "%START_TIME%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(:PATH)%",
        "status": "%RESPONSE_CODE%",
        "duration_ms": "%DURATION%",
        "api": fs("api"),
        "model": fs("model"),
        "provider": md("provider"),
        "upstream_model": md("upstream_model"),
        "usage": fs("usage"),
        "consumer": md("consumer"),
        "team": md("team"),
        "input_tokens": md("input_tokens"),
        "output_tokens": md("output_tokens"),
        "cost_usd": md("cost_usd"),
        "pii": fs("pii"),
        "firewall": fs("firewall"),
        "upstream": "%UPSTREAM_CLUSTER%",
        "details": "%RESPONSE_CODE_DETAILS%",
    })
}

/// The bootstrap as a JSON value (Envoy takes YAML or JSON; see [`render_yaml`]).
pub fn render(policy: &Policy, opts: &RenderOptions<'_>) -> anyhow::Result<Value> {
    let plugin_config = match &opts.plugin_config {
        Some(raw) => raw.clone(),
        None => plugin_config(policy),
    };
    // Envoy's own buffer must be larger than the filter's cap so that the
    // filter, not Envoy, answers an oversize body (in the provider's shape).
    let buffer_limit = policy.inspection.max_body_bytes.saturating_mul(2).max(1024 * 1024);
    let default_provider = policy.default_provider().ok_or_else(|| anyhow::anyhow!("the policy has no provider"))?;

    let mut routes = mcp_routes(policy, SIDECAR_CLUSTER);
    // The sidecar inspects MCP traffic itself: the filter steps aside there.
    for route in &mut routes {
        route["typed_per_filter_config"][WASM_FILTER] =
            json!({"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true});
    }
    let mut clusters = vec![sidecar_cluster(policy)];
    for (name, provider) in &policy.providers {
        let url = BaseUrl::parse(&provider.base_url).map_err(|m| anyhow::anyhow!("providers.{name}.baseUrl: {m}"))?;
        routes.push(json!({
            "match": {"prefix": "/", "headers": [{"name": PROVIDER_HEADER, "string_match": {"exact": name}}]},
            "route": route_action(policy, name, &url),
            "request_headers_to_remove": [PROVIDER_HEADER],
        }));
        clusters.push(provider_cluster(name, &url));
    }
    let fallback = fallback(policy, SidecarRef::cluster(SIDECAR_CLUSTER), "")?;
    clusters.extend(fallback.clusters);
    for route in fallback.routes {
        routes.push(json!({
            "match": {"prefix": "/", "headers": [{"name": PROVIDER_HEADER, "string_match": {"exact": route.header_value}}]},
            "route": route.action,
            "request_headers_to_remove": [PROVIDER_HEADER],
        }));
    }
    // Requests the sidecar did not route: see `unrouted_routes`.
    let default_url = BaseUrl::parse(&policy.providers[default_provider].base_url)
        .map_err(|m| anyhow::anyhow!("providers.{default_provider}.baseUrl: {m}"))?;
    routes.extend(unrouted_routes(policy, route_action(policy, default_provider, &default_url)));

    let wasm = json!({
        "name": WASM_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "tollgate",
                "root_id": "tollgate",
                "failure_policy": match policy.fail_mode.filter { FailMode::Open => "FAIL_OPEN", FailMode::Closed => "FAIL_CLOSED" },
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": plugin_config},
                "vm_config": {
                    "vm_id": "tollgate",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": opts.wasm_path.display().to_string()}},
                },
            },
        },
    });
    let ext_proc = ext_proc_filter(policy, SidecarRef::cluster(SIDECAR_CLUSTER));
    let hcm = json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "tollgate",
            // One spelling of every path before any filter or route reads it
            // (`/v1/x/../chat//completions` is `/v1/chat/completions`);
            // escaped slashes are kept as sent, so model names and ARNs with
            // `%2F` reach the provider unchanged, and an API path spelled
            // with one matches no route but the refusal.
            "normalize_path": true,
            // A client slower than this to send its request gets 408, and
            // nothing of it reaches a provider.
            "request_timeout": envoy_duration(policy.timeouts.request_ms),
            "merge_slashes": true,
            "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
            "access_log": [{
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": opts.access_log,
                    "log_format": {"json_format": access_log_format()},
                },
            }],
            "route_config": {"name": "tollgate", "virtual_hosts": [{
                "name": "tollgate",
                "domains": ["*"],
                "routes": routes,
                // `x-envoy-attempt-count` tells clients how many targets were
                // tried, and each attempt's upstream filters which target it is.
                "include_attempt_count_in_response": true,
                "include_request_attempt_count": true,
            }]},
            "http_filters": std::iter::once(strip_gateway_headers()).chain(jwt_authn(policy)).chain([
                wasm,
                ext_proc,
                json!({"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}),
            ]).collect::<Vec<_>>(),
        },
    });
    Ok(json!({
        "admin": {"address": socket(&policy.listen.host, policy.listen.admin_port)},
        // The filter's per-type and per-rule counters carry their label as the
        // last name segment; these turn it into a Prometheus label.
        "stats_config": {"stats_tags": [
            {"tag_name": "pii_type", "regex": "^wasmcustom\\.tollgate_pii_found_by_type_total(\\.([A-Za-z0-9_-]+))$"},
            {"tag_name": "rule", "regex": "^wasmcustom\\.tollgate_firewall_blocked_by_rule_total(\\.([A-Za-z0-9_-]+))$"},
            {"tag_name": "category", "regex": "^wasmcustom\\.tollgate_moderation_total(\\.([A-Za-z0-9_-]+))$"},
        ]},
        "static_resources": {
            "listeners": [{
                "name": "tollgate",
                "address": socket(&policy.listen.host, policy.listen.port),
                "per_connection_buffer_limit_bytes": buffer_limit,
                "filter_chains": [{"filters": [hcm]}],
            }],
            "clusters": clusters,
        },
    }))
}

/// Request headers only the gateway may set: Envoy's own filter removes any
/// a client sent before anything reads them (the wasm filter and the sidecar
/// remove every other `x-tollgate-*` header too).
pub const GATEWAY_REQUEST_HEADERS: [&str; 5] = [
    PROVIDER_HEADER,
    tollgate_core::headers::REQUEST_ID,
    MCP_CLAIMS_HEADER,
    tollgate_core::mcp::CONSUMER_CLAIM_HEADER,
    tollgate_core::mcp::TEAM_CLAIM_HEADER,
];

/// The verified JWT payload on MCP routes (see [`tollgate_core::mcp::CLAIMS_HEADER`]).
pub const MCP_CLAIMS_HEADER: &str = tollgate_core::mcp::CLAIMS_HEADER;

/// Envoy's `header_mutation` filter, first in the chain: a client cannot
/// pick a route or a request id by sending the gateway's own headers, even
/// when the wasm filter or the sidecar is away.
pub fn strip_gateway_headers() -> Value {
    json!({
        "name": "tollgate.strip_gateway_headers",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": GATEWAY_REQUEST_HEADERS.iter().map(|h| json!({"remove": h})).collect::<Vec<_>>()},
        },
    })
}

/// Whether a request the sidecar could not review may still go to a
/// provider: only when the sidecar fails open and the policy requires no
/// credential. When a key or a token is required, nobody but the sidecar can
/// check it, so an unrouted request is refused whatever `failMode` says.
pub fn unrouted_may_pass(policy: &Policy) -> bool {
    policy.fail_mode.sidecar == FailMode::Open && policy.access.require == tollgate_core::access::Require::None
}

/// Envoy's answer to a request the sidecar did not route, when it refuses
/// it: an AI API request (the sidecar was away or failed) gets 503
/// `gateway_unavailable` in its API's error shape; a path outside the API
/// table gets 404 `unknown_path` (`Unknown` carries the shape: Anthropic's
/// for a request with an `anthropic-version` header, else OpenAI's).
/// Every rendering (plain Envoy, Istio, Envoy Gateway) answers from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrouted {
    Api(ApiKind),
    Unknown(ApiFamily),
}

impl Unrouted {
    /// The status and the JSON body of the refusal.
    pub fn reply(self) -> (u16, String) {
        let (status, family, message, code) = match self {
            Unrouted::Api(api) => (
                503,
                api.family(),
                "the gateway cannot check this request right now (its policy service is unavailable); retry later",
                "gateway_unavailable",
            ),
            Unrouted::Unknown(family) => (404, family, "no such API on this gateway", "unknown_path"),
        };
        (status, tollgate_core::error_body(family, status, message, code))
    }
}

/// The routes after the ones the sidecar picks (by `x-tollgate-provider`):
/// requests it did not route. An AI API path (the sidecar was away or
/// failed) goes to the default provider (`open`, when
/// [`unrouted_may_pass`]) or gets 503 in its API's error shape; any other
/// path gets 404 (the sidecar routes the policy's `access.passthrough`
/// paths itself, after checking the caller). `open` is the default
/// provider's route action. See [`Unrouted`].
pub fn unrouted_routes(policy: &Policy, open: Value) -> Vec<Value> {
    let json_reply = |case: Unrouted| {
        let (status, body) = case.reply();
        json!({
            "direct_response": {"status": status, "body": {"inline_string": body}},
            "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
        })
    };
    let mut routes = Vec::new();
    for api in ApiKind::ALL {
        let matcher = json!({
            "safe_regex": {"regex": api.path_regex()},
            "headers": [{"name": ":method", "string_match": {"exact": "POST"}}],
        });
        let mut route = if unrouted_may_pass(policy) { json!({"route": open}) } else { json_reply(Unrouted::Api(api)) };
        route["match"] = matcher;
        routes.push(route);
    }
    let mut anthropic = json_reply(Unrouted::Unknown(ApiFamily::Anthropic));
    anthropic["match"] = json!({"prefix": "/", "headers": [{"name": "anthropic-version", "present_match": true}]});
    let mut openai = json_reply(Unrouted::Unknown(ApiFamily::OpenAi));
    openai["match"] = json!({"prefix": "/"});
    routes.extend([anthropic, openai]);
    routes
}

/// How long an MCP stream may stay silent before Envoy ends it.
pub const MCP_IDLE_MS: u64 = 300_000;

/// One route per MCP virtual server: `/mcp/<name>` goes to the sidecar,
/// which serves the MCP gateway on its own port (see `crate::mcp`). The
/// sidecar identifies the caller itself, so ext_proc is skipped on these
/// routes. No route timeout: an answer may stream (the sidecar bounds each
/// upstream message by `mcp.timeoutMs`); an idle stream ends after 5 minutes.
/// With `access.jwt`, each also has its OAuth protected-resource metadata
/// (RFC 9728) at `/.well-known/oauth-protected-resource/mcp/<name>`.
pub fn mcp_routes(policy: &Policy, sidecar_cluster: &str) -> Vec<Value> {
    let route = |path: String| {
        json!({
            "match": {"path": path},
            "route": {"cluster": sidecar_cluster, "timeout": "0s", "idle_timeout": envoy_duration(MCP_IDLE_MS)},
            "typed_per_filter_config": {"envoy.filters.http.ext_proc": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
                "disabled": true,
            }},
        })
    };
    let jwt = policy.access.jwt.is_some();
    policy
        .mcp
        .virtual_servers
        .keys()
        .flat_map(|name| {
            let metadata = jwt.then(|| route(format!("{}/mcp/{name}", tollgate_core::mcp::RESOURCE_METADATA)));
            std::iter::once(route(format!("/mcp/{name}"))).chain(metadata)
        })
        .collect()
}

/// The wasm filter's name in the bootstrap's chain.
pub const WASM_FILTER: &str = "tollgate.wasm";

/// The cluster through which Envoy reaches the sidecar in the bootstrap.
pub const SIDECAR_CLUSTER: &str = "tollgate_sidecar";

/// What the aliases with several targets need in Envoy, whoever applies it
/// (the bootstrap here, Istio's EnvoyFilter, Envoy Gateway's patch policy).
#[derive(Debug, Clone, Default)]
pub struct Fallback {
    /// Per alias: one cluster per target, then one aggregate cluster per
    /// possible first target.
    pub clusters: Vec<Value>,
    /// One route per alias and first target.
    pub routes: Vec<FallbackRoute>,
}

/// The route of one alias variant: requests the sidecar marked with
/// `x-tollgate-provider: header_value` go to the variant's aggregate cluster.
#[derive(Debug, Clone)]
pub struct FallbackRoute {
    pub alias: String,
    pub first: usize,
    pub header_value: String,
    /// Envoy's RouteAction: the aggregate cluster, timeouts, the retry policy.
    pub action: Value,
}

/// Aliases with several targets: one cluster per target (an upstream
/// ext_proc, the sidecar through `sidecar`, shapes each attempt for
/// its target), grouped in aggregate clusters that Envoy's retries walk in
/// order, one per possible first target (the sidecar picks one per request).
///
/// `prefix` goes in front of every cluster name, so that two renderings
/// applied to one Envoy (two installs on one gateway) do not collide.
pub fn fallback(policy: &Policy, sidecar: SidecarRef<'_>, prefix: &str) -> anyhow::Result<Fallback> {
    let prices = tollgate_core::pricing::PriceTable::new(&policy.pricing);
    let mut out = Fallback::default();
    for (alias, route) in &policy.models {
        if policy.fallback(alias).is_none() {
            continue;
        }
        let mut members = Vec::new();
        for (i, t) in route.targets.iter().enumerate() {
            let provider = policy
                .providers
                .get(&t.provider)
                .ok_or_else(|| anyhow::anyhow!("models.{alias}: no provider `{}`", t.provider))?;
            let url = BaseUrl::parse(&provider.base_url)
                .map_err(|m| anyhow::anyhow!("providers.{}.baseUrl: {m}", t.provider))?;
            let name = format!("{prefix}target_{alias}_{i}");
            out.clusters.push(upstream_cluster(&name, &url));
            members.push(name);
        }
        for first in 0..route.targets.len() {
            let order: Vec<&str> =
                route.attempt_order(first, &prices).into_iter().map(|i| members[i].as_str()).collect();
            let variant = format!("{alias}/{first}");
            let aggregate = format!("{prefix}{}", alias_cluster(alias, first));
            out.clusters.push(json!({
                "name": aggregate,
                "connect_timeout": "5s",
                "lb_policy": "CLUSTER_PROVIDED",
                "cluster_type": {"name": "envoy.clusters.aggregate", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig",
                    "clusters": order,
                }},
                "typed_extension_protocol_options": attempt_filters(policy, &variant, sidecar),
            }));
            let mut action = json!({
                "cluster": aggregate,
                "timeout": envoy_duration(policy.timeouts.total_ms),
                "idle_timeout": envoy_duration(policy.timeouts.idle_ms),
                "retry_policy": fallback_retry_policy(route.targets.len()),
            });
            let attempt_ms = route.attempt_timeout_ms.unwrap_or(policy.timeouts.attempt_ms);
            action["retry_policy"]["per_try_timeout"] = json!(envoy_duration(attempt_ms));
            out.routes.push(FallbackRoute {
                alias: alias.clone(),
                first,
                header_value: format!("{FALLBACK_PREFIX}{variant}"),
                action,
            });
        }
    }
    Ok(out)
}

/// The filter's plugin configuration (JSON text) rendered from the policy;
/// the same text goes to plain Envoy, Istio and Envoy Gateway.
pub fn plugin_config(policy: &Policy) -> String {
    FilterConfig::from_policy(policy).to_json()
}

/// How Envoy reaches the sidecar over gRPC: a cluster, and the `:authority`
/// to send when the cluster's name is not a valid one (Envoy sends the name
/// by default, and Istio's `outbound|port||host` names are not: HTTP/2
/// refuses them).
#[derive(Debug, Clone, Copy)]
pub struct SidecarRef<'a> {
    pub cluster: &'a str,
    pub authority: Option<&'a str>,
}

impl<'a> SidecarRef<'a> {
    /// A cluster whose name is a valid authority.
    pub fn cluster(cluster: &'a str) -> Self {
        SidecarRef { cluster, authority: None }
    }

    fn envoy_grpc(self) -> Value {
        let mut v = json!({"cluster_name": self.cluster});
        if let Some(a) = self.authority {
            v["authority"] = json!(a);
        }
        v
    }
}

/// The downstream `envoy.filters.http.ext_proc` filter that calls the
/// sidecar (plain Envoy and Istio share it).
pub fn ext_proc_filter(policy: &Policy, sidecar: SidecarRef<'_>) -> Value {
    let timeout = format!("{}s", policy.sidecar.timeout_ms as f64 / 1000.0);
    json!({
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": sidecar.envoy_grpc(), "timeout": timeout},
            "failure_mode_allow": policy.fail_mode.sidecar == FailMode::Open,
            "allow_mode_override": true,
            // Accept the sidecar's dynamic metadata in our namespace only;
            // send it the verified JWT payload when identity comes from JWTs.
            "metadata_options": {
                "receiving_namespaces": {"untyped": [METADATA_NAMESPACE]},
                "forwarding_namespaces": {"untyped": if policy.access.jwt.is_some() { vec![JWT_NAMESPACE] } else { vec![] }},
            },
            "message_timeout": timeout,
            "processing_mode": processing_mode(),
            // The filter's inspection, which clients cannot forge (filter
            // state): whether it inspects the request, and its report.
            "request_attributes": [filter_state_attribute(INSPECTING_STATE)],
            "response_attributes": [filter_state_attribute(INSPECTION_STATE)],
        },
    })
}

/// What the sidecar is sent by default: headers both ways and the whole
/// request body; it asks for the answer's body itself (mode override) when
/// it counts or translates it.
fn processing_mode() -> Value {
    json!({
        "request_header_mode": "SEND",
        "response_header_mode": "SEND",
        "request_body_mode": "BUFFERED",
        "response_body_mode": "NONE",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    })
}

/// Envoy's `jwt_authn` filter when the policy takes identity from JWTs. A
/// missing or invalid token is let through without a payload, so the sidecar
/// answers it (401 in the client API's shape) or accepts a gateway key.
fn jwt_authn(policy: &Policy) -> Option<Value> {
    let jwt = policy.access.jwt.as_ref()?;
    let provider = json!({
        "issuer": jwt.issuer,
        "audiences": jwt.audiences,
        "local_jwks": {"filename": jwt.jwks_file},
        "payload_in_metadata": JWT_PAYLOAD_KEY,
        "forward": false,
    });
    // MCP routes go to the sidecar as an upstream: the payload travels in a
    // header there (a client's copy is removed first, by the strip filter).
    let mut mcp = provider.clone();
    mcp["forward_payload_header"] = json!(MCP_CLAIMS_HEADER);
    let rule = |prefix: &str, provider: &str| {
        json!({"match": {"prefix": prefix}, "requires": {"requires_any": {"requirements": [
            {"provider_name": provider},
            {"allow_missing_or_failed": {}},
        ]}}})
    };
    Some(json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"tollgate": provider, "tollgate_mcp": mcp},
            "rules": [rule("/mcp/", "tollgate_mcp"), rule("/", "tollgate")],
        },
    }))
}

/// The bootstrap as YAML text.
pub fn render_yaml(policy: &Policy, opts: &RenderOptions<'_>) -> anyhow::Result<String> {
    let value = render(policy, opts)?;
    let body = serde_yaml_ng::to_string(&value)?;
    Ok(format!("# Rendered by `tollgate render envoy` from the policy. Do not edit by hand.\n{body}"))
}

/// File names of the listener and cluster resources in a dynamic setup.
pub const LDS_FILE: &str = "lds.yaml";
pub const CDS_FILE: &str = "cds.yaml";

/// The same gateway as [`render`], with the listener and the clusters served
/// from files in `xds_dir` (file-based xDS): the bootstrap, and the LDS and
/// CDS documents. Envoy watches the directory, so writing new documents
/// there ([`write_xds`]) reconfigures the running Envoy: the filter's
/// settings, routes and provider clusters change without a restart, and
/// requests in flight finish on the configuration they started with.
pub fn render_dynamic(policy: &Policy, opts: &RenderOptions<'_>, xds_dir: &Path) -> anyhow::Result<[Value; 3]> {
    let mut bootstrap = render(policy, opts)?;
    let statics = bootstrap
        .as_object_mut()
        .and_then(|b| b.remove("static_resources"))
        .ok_or_else(|| anyhow::anyhow!("rendered bootstrap has no static resources"))?;
    let typed = |items: &Value, ty: &str| -> Vec<Value> {
        items
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|item| {
                        let mut item = item.clone();
                        item["@type"] = json!(format!("type.googleapis.com/envoy.config.{ty}"));
                        item
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let lds = json!({"resources": typed(&statics["listeners"], "listener.v3.Listener")});
    let cds = json!({"resources": typed(&statics["clusters"], "cluster.v3.Cluster")});
    let source = |file: &str| {
        json!({
            "resource_api_version": "V3",
            "path_config_source": {
                "path": xds_dir.join(file).display().to_string(),
                "watched_directory": {"path": xds_dir.display().to_string()},
            },
        })
    };
    bootstrap["node"] = json!({"id": "tollgate", "cluster": "tollgate"});
    bootstrap["dynamic_resources"] = json!({"lds_config": source(LDS_FILE), "cds_config": source(CDS_FILE)});
    Ok([bootstrap, lds, cds])
}

/// [`render_dynamic`], with the LDS and CDS documents written into `xds_dir`
/// ([`write_xds`]); returns the bootstrap as YAML text.
pub fn write_dynamic(policy: &Policy, opts: &RenderOptions<'_>, xds_dir: &Path) -> anyhow::Result<String> {
    let [bootstrap, lds, cds] = render_dynamic(policy, opts, xds_dir)?;
    write_xds(xds_dir, &lds, &cds)?;
    let body = serde_yaml_ng::to_string(&bootstrap)?;
    Ok(format!(
        "# Rendered by Tollgate from the policy; listener and clusters in {}. Do not edit by hand.\n{body}",
        xds_dir.display()
    ))
}

/// Write the LDS and CDS documents into `xds_dir`, each by an atomic rename
/// (what Envoy's directory watch picks up). Clusters go first, so a listener
/// never routes to a cluster Envoy does not know yet.
pub fn write_xds(xds_dir: &Path, lds: &Value, cds: &Value) -> anyhow::Result<()> {
    std::fs::create_dir_all(xds_dir)?;
    for (file, doc) in [(CDS_FILE, cds), (LDS_FILE, lds)] {
        let tmp = xds_dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, serde_yaml_ng::to_string(doc)?)?;
        std::fs::rename(&tmp, xds_dir.join(file))?;
    }
    Ok(())
}

fn socket(host: &str, port: u16) -> Value {
    json!({"socket_address": {"address": host, "port_value": port}})
}

/// A provider's route: its cluster, the policy's timeouts (a retry policy
/// that never retries carries the attempt timeout), and the rewrites its
/// base URL needs.
fn route_action(policy: &Policy, provider: &str, url: &BaseUrl) -> Value {
    let t = &policy.timeouts;
    let mut action = json!({
        "cluster": cluster_name(provider),
        "timeout": envoy_duration(t.total_ms),
        "idle_timeout": envoy_duration(t.idle_ms),
        "retry_policy": {"num_retries": 0, "per_try_timeout": envoy_duration(t.attempt_ms)},
    });
    if url.tls {
        action["host_rewrite_literal"] = json!(url.host);
    }
    if !url.path.is_empty() {
        action["prefix_rewrite"] = json!(format!("{}/", url.path));
    }
    action
}

fn sidecar_cluster(policy: &Policy) -> Value {
    let mut cluster = grpc_cluster(SIDECAR_CLUSTER, &policy.sidecar.host, policy.sidecar.grpc_port);
    if policy.sidecar.tls.mode == SidecarTlsMode::Mutual {
        cluster["transport_socket"] = crate::tls::envoy_transport_socket(Path::new(&policy.sidecar.tls.dir));
    }
    cluster
}

/// A cluster that speaks HTTP/2 (gRPC) to `host:port`: its address as it
/// is, or resolved by DNS when it is a name (a Kubernetes Service).
pub fn grpc_cluster(name: &str, host: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": if is_ip(host) { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        },
        "load_assignment": endpoints(name, host, port),
    })
}

/// Whether `host` is an address rather than a name.
pub(crate) fn is_ip(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
}

fn endpoints(cluster: &str, host: &str, port: u16) -> Value {
    json!({
        "cluster_name": cluster,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket(host, port)}}]}],
    })
}

/// The aggregate cluster of an alias's targets, `first` going first.
pub fn alias_cluster(alias: &str, first: usize) -> String {
    format!("alias_{alias}_{first}")
}

/// Retries that move to the next target: after a 429, a 5xx, a reset or a
/// refused connection, each attempt goes to the next priority (target).
/// Envoy never retries once response headers went to the client, so a
/// stream that has started is never spliced.
fn fallback_retry_policy(targets: usize) -> Value {
    json!({
        "retry_on": "5xx,reset,connect-failure,retriable-status-codes",
        "retriable_status_codes": [429],
        "num_retries": targets.saturating_sub(1),
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": 1,
            },
        },
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
        }],
        "host_selection_retry_max_attempts": 5,
        "retry_back_off": {"base_interval": "0.005s", "max_interval": "0.05s"},
    })
}

/// The upstream filters of an alias's aggregate cluster: the sidecar as an
/// upstream ext_proc, run once per attempt. The gRPC metadata names the
/// alias and its first target (`alias/first`); the attempt's
/// `x-envoy-attempt-count` says how far along the order it is.
fn attempt_filters(policy: &Policy, variant: &str, sidecar: SidecarRef<'_>) -> Value {
    let timeout = format!("{}s", policy.sidecar.timeout_ms as f64 / 1000.0);
    let ext_proc = json!({
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {
                "envoy_grpc": sidecar.envoy_grpc(),
                "timeout": timeout,
                "initial_metadata": [{"key": TARGET_METADATA, "value": variant}],
            },
            "failure_mode_allow": false,
            "allow_mode_override": true,
            // The sidecar sets the target's host and path.
            "mutation_rules": {"allow_all_routing": true},
            "message_timeout": timeout,
            "processing_mode": processing_mode(),
        },
    });
    json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http_protocol_options": {}},
            "http_filters": [
                ext_proc,
                {"name": "envoy.filters.http.upstream_codec", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}},
            ],
        },
    })
}

fn provider_cluster(name: &str, url: &BaseUrl) -> Value {
    upstream_cluster(&cluster_name(name), url)
}

/// The cluster `cluster` reaching a provider's base URL (TLS when it says so).
fn upstream_cluster(cluster: &str, url: &BaseUrl) -> Value {
    let mut c = json!({
        "name": cluster,
        "type": if is_ip(&url.host) { "STATIC" } else { "LOGICAL_DNS" },
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "5s",
        "load_assignment": endpoints(cluster, &url.host, url.port),
    });
    if url.tls {
        c["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": url.host,
                "common_tls_context": {
                    "validation_context": {"trusted_ca": {"filename": "/etc/ssl/certs/ca-certificates.crt"}},
                },
            },
        });
    }
    c
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::parse_policy;

    #[test]
    fn renders_providers_routes_and_fail_modes() {
        let policy = parse_policy(
            "failMode: {filter: open, sidecar: closed}\nproviders:\n  mock: {kind: mock, baseUrl: 'http://127.0.0.1:18080'}\n  openai: {kind: openai, baseUrl: 'https://api.openai.com/v1proxy'}\n",
        )
        .unwrap();
        let v = render(
            &policy,
            &RenderOptions { wasm_path: Path::new("/x.wasm"), access_log: "/dev/null", plugin_config: None },
        )
        .unwrap();
        let hcm = &v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let filters = hcm["http_filters"].as_array().unwrap();
        let names: Vec<_> = filters.iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "tollgate.strip_gateway_headers",
                "tollgate.wasm",
                "envoy.filters.http.ext_proc",
                "envoy.filters.http.router"
            ]
        );
        assert_eq!(filters[1]["typed_config"]["config"]["failure_policy"], "FAIL_OPEN");
        assert_eq!(filters[2]["typed_config"]["failure_mode_allow"], false);
        let plugin: FilterConfig =
            serde_json::from_str(filters[1]["typed_config"]["config"]["configuration"]["value"].as_str().unwrap())
                .unwrap();
        assert_eq!(plugin.fail_mode, FailMode::Open);
        assert_eq!(hcm["normalize_path"], true);
        assert_eq!(hcm["merge_slashes"], true);
        assert_eq!(hcm["path_with_escaped_slashes_action"], "KEEP_UNCHANGED");
        let routes = hcm["route_config"]["virtual_hosts"][0]["routes"].as_array().unwrap();
        // Two provider routes, one per API path for unrouted requests, two 404s.
        assert_eq!(routes.len(), 2 + ApiKind::ALL.len() + 2);
        assert_eq!(routes[1]["route"]["host_rewrite_literal"], "api.openai.com");
        assert_eq!(routes[1]["route"]["prefix_rewrite"], "/v1proxy/");
        // Failing closed: an unrouted API request is refused, in its API's shape.
        assert_eq!(routes[2]["direct_response"]["status"], 503);
        let last = routes.last().unwrap();
        assert_eq!(last["direct_response"]["status"], 404);
        assert!(last["direct_response"]["body"]["inline_string"].as_str().unwrap().contains("unknown_path"));
        let clusters = v["static_resources"]["clusters"].as_array().unwrap();
        assert_eq!(clusters[2]["type"], "LOGICAL_DNS");
        assert_eq!(clusters[2]["transport_socket"]["typed_config"]["sni"], "api.openai.com");
        assert_eq!(clusters[1]["type"], "STATIC");
        // Envoy reaches the sidecar over mutual TLS.
        let tls = &clusters[0]["transport_socket"]["typed_config"];
        assert_eq!(tls["sni"], crate::tls::SIDECAR_NAME);
        assert_eq!(tls["common_tls_context"]["tls_certificates"][0]["private_key"]["filename"], "tls/envoy.key");
    }

    #[test]
    fn mcp_routes_go_to_the_sidecar_with_ext_proc_and_the_filter_off() {
        let policy = parse_policy(
            "providers:\n  mock: {kind: mock, baseUrl: 'http://127.0.0.1:18080'}\nmcp:\n  servers:\n    crm: {url: 'http://127.0.0.1:9/mcp'}\n  virtualServers:\n    support: {tools: ['crm/*']}\n",
        )
        .unwrap();
        let v = render(
            &policy,
            &RenderOptions { wasm_path: Path::new("/x.wasm"), access_log: "/dev/null", plugin_config: None },
        )
        .unwrap();
        let hcm = &v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let route = &hcm["route_config"]["virtual_hosts"][0]["routes"][0];
        assert_eq!(route["match"]["path"], "/mcp/support");
        assert_eq!(route["route"]["cluster"], SIDECAR_CLUSTER);
        assert_eq!(route["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["disabled"], true);
        assert_eq!(route["typed_per_filter_config"][WASM_FILTER]["disabled"], true);
    }

    #[test]
    fn unrouted_requests_reach_a_provider_only_when_open_and_anonymous() {
        let providers = "providers:\n  mock: {kind: mock, baseUrl: 'http://127.0.0.1:18080'}\n";
        for (extra, passes) in [
            ("", true),
            ("failMode: {sidecar: closed}\n", false),
            ("access: {require: key, keyStore: k.yaml}\n", false),
            ("access: {require: jwt, jwt: {issuer: i, jwksFile: j}}\n", false),
        ] {
            let policy = parse_policy(&format!("{providers}{extra}")).unwrap();
            assert_eq!(unrouted_may_pass(&policy), passes, "{extra}");
            let routes = unrouted_routes(&policy, json!({"cluster": "provider_mock"}));
            let api_routes = &routes[..ApiKind::ALL.len()];
            assert!(api_routes.iter().all(|r| r.get("route").is_some() == passes), "{extra}: {api_routes:?}");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod golden {
    use super::*;

    /// envoy/tollgate.yaml is the rendering of envoy/policy.yaml; keep them in step.
    #[test]
    fn checked_in_bootstrap_matches_its_policy() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut policy = crate::config::load_policy(&root.join("envoy/policy.yaml")).unwrap();
        // As the checked-in bootstrap names them: relative to the checkout,
        // where Envoy starts (`envoy -c envoy/tollgate.yaml`).
        policy.sidecar.tls.dir = "envoy/tls".into();
        let rendered = render_yaml(
            &policy,
            &RenderOptions {
                wasm_path: Path::new("target/wasm32-wasip1/wasm-release/tollgate_filter.wasm"),
                access_log: "/dev/stdout",
                plugin_config: None,
            },
        )
        .unwrap();
        let checked_in = std::fs::read_to_string(root.join("envoy/tollgate.yaml")).unwrap();
        assert!(
            rendered == checked_in,
            "envoy/tollgate.yaml is stale: run `tollgate render envoy --policy envoy/policy.yaml --out envoy/tollgate.yaml`"
        );
    }
}
