//! The raw Envoy configuration the Kubernetes manifests carry (Istio's
//! EnvoyFilter patches, Envoy Gateway's patch policy) works in the real
//! Envoy: the ext_proc filter, the clusters of aliases with several targets
//! (aggregate clusters whose upstream ext_proc reaches the sidecar through
//! the platform's cluster name) and the routes' actions. Istio and Envoy
//! Gateway hand these values to Envoy as they are. Each flavour's fragments
//! are swapped into the plain bootstrap, which Envoy validates, and which
//! then serves fallback through the real sidecar and mock provider, and
//! (with the sidecar killed) the platforms' own refusals of what the sidecar
//! did not route (Istio's `directResponse` routes, Envoy Gateway's
//! HTTPRouteFilters, in place of the bootstrap's). Each platform's routes
//! for MCP virtual servers, as Envoy gets them, serve an MCP client through
//! the sidecar with ext_proc off; on Istio, with Envoy's JWT filter as a
//! `RequestAuthentication` makes it, a token's verified payload reaches the
//! sidecar on those routes and no provider. The manifests themselves are checked
//! against the platforms' schemas in `ext-proc-server/tests/k8s.rs`, and
//! those of a policy with an `mcp` section here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tollgate_core::policy::Policy;
use tollgate_e2e::mcp::{McpClient, McpServer};
use tollgate_e2e::{paths, test_port, validate_in_envoy, Gateway, Options};
use tollgate_ext_proc::cli::envoy::{render, RenderOptions, MCP_CLAIMS_HEADER, SIDECAR_CLUSTER, WASM_FILTER};
use tollgate_ext_proc::cli::k8s::{eg_ext_proc_cluster, render_envoy_gateway, render_istio, K8sOptions};
use tollgate_ext_proc::config::parse_policy;

const POLICY: &str = "providers:\n  openai: {kind: openai, baseUrl: 'https://api.openai.com'}\n  anthropic: {kind: anthropic, baseUrl: 'https://api.anthropic.com'}\n  local: {kind: openai-compatible, baseUrl: 'http://127.0.0.1:8000'}\nmodels:\n  smart: {attemptTimeoutMs: 2000, targets: [{provider: openai, model: gpt-4o}, {provider: anthropic, model: claude-sonnet-4-5}, {provider: local, model: llama}]}\n";

/// Every YAML document of one rendered file.
fn docs(files: &[(String, String)], name: &str) -> Vec<Value> {
    let text = &files.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1;
    text.split("\n---\n").map(|d| serde_yaml_ng::from_str(d).unwrap()).collect()
}

/// A cluster named like the platform's own cluster to the sidecar, reaching
/// the policy's sidecar here: the bootstrap's, with its mutual TLS (which
/// stands in for the mesh's on Istio, and is Envoy Gateway's own, from the
/// BackendTLSPolicy and the EnvoyProxy's client certificate).
fn local_sidecar(plain: &Value, name: &str) -> Value {
    let mut c = plain["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == SIDECAR_CLUSTER)
        .unwrap()
        .clone();
    assert!(c["transport_socket"].is_object(), "the sidecar takes mutual TLS only");
    c["name"] = json!(name);
    c["load_assignment"]["cluster_name"] = json!(name);
    c
}

/// The HTTP filters of the bootstrap's listener.
fn http_filters(config: &mut Value) -> &mut Vec<Value> {
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        .as_array_mut()
        .unwrap()
}

/// `plain` with its ext_proc filter (when given), the fallback clusters and
/// the fallback routes' actions (keyed by the sidecar's header value) taken
/// from a platform's manifests instead.
fn swap_in(
    mut plain: Value,
    ext_proc: Option<Value>,
    clusters: Vec<Value>,
    actions: &[(String, Value)],
    unrouted: Vec<Value>,
) -> Value {
    if let Some(f) = ext_proc {
        let filters = http_filters(&mut plain);
        let i = filters.iter().position(|x| x["name"] == "envoy.filters.http.ext_proc").unwrap();
        filters[i] = f;
    }
    let hcm = &mut plain["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let routes = hcm["route_config"]["virtual_hosts"][0]["routes"].as_array_mut().unwrap();
    for (header, action) in actions {
        let route = routes.iter_mut().find(|r| r["match"]["headers"][0]["string_match"]["exact"] == *header).unwrap();
        route["route"] = action.clone();
    }
    // What the sidecar did not route: the platform's routes instead of the
    // bootstrap's own.
    routes.retain(is_sidecars);
    routes.extend(unrouted);
    let all = plain["static_resources"]["clusters"].as_array_mut().unwrap();
    all.retain(|c| {
        let name = c["name"].as_str().unwrap();
        !name.starts_with("target_") && !name.starts_with("alias_")
    });
    all.extend(clusters);
    plain
}

/// A route of the bootstrap's keyed by the sidecar's header (the others
/// are what the sidecar did not route).
fn is_sidecars(route: &Value) -> bool {
    route["match"]["headers"].as_array().is_some_and(|h| h.iter().any(|h| h["name"] == "x-tollgate-provider"))
}

/// The action of the bootstrap's route that lets an unrouted API request on
/// to the default provider (when the policy has one): what a platform's
/// route to the default provider becomes here.
fn open_action(plain: &Value) -> Value {
    let routes = plain["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap();
    let open = routes.iter().find(|r| !is_sidecars(r) && r["route"].is_object());
    open.unwrap_or_else(|| panic!("the bootstrap lets no unrouted request pass")).clone()["route"].clone()
}

/// Envoy's `response_headers_to_add` that set each header.
fn set_headers<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>) -> Value {
    headers
        .map(|(k, v)| json!({"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}))
        .collect()
}

/// Istio's VirtualService routes that the sidecar's header does not pick,
/// as Istio hands them to Envoy: one Envoy route per match (in order), a
/// `directResponse` (status, body string, response headers set) as Envoy's
/// `direct_response`, a route to the default provider as the bootstrap's.
fn istio_unrouted(vs: &Value, open: &dyn Fn() -> Value) -> Vec<Value> {
    let mut out = Vec::new();
    for r in vs["spec"]["http"].as_array().unwrap() {
        let matches = r["match"].as_array().cloned().unwrap_or_else(|| vec![json!({})]);
        if matches.iter().any(|m| m["headers"].get("x-tollgate-provider").is_some()) {
            continue;
        }
        let mut action = if let Some(reply) = r.get("directResponse") {
            let mut a = json!({"direct_response": {"status": reply["status"]}});
            if let Some(body) = reply["body"]["string"].as_str() {
                a["direct_response"]["body"] = json!({"inline_string": body});
            }
            a
        } else {
            assert!(r["route"].is_array(), "{r}");
            json!({"route": open()})
        };
        for (k, v) in r["headers"].as_object().into_iter().flatten() {
            assert_eq!(v.as_object().unwrap().len(), 1, "{r}");
            match k.as_str() {
                "request" => action["request_headers_to_remove"] = v["remove"].clone(),
                "response" => {
                    let set = v["set"].as_object().unwrap();
                    action["response_headers_to_add"] =
                        set_headers(set.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())));
                }
                _ => panic!("{r}"),
            }
        }
        for m in matches {
            let mut headers = Vec::new();
            if let Some(method) = m.get("method") {
                headers.push(json!({"name": ":method", "string_match": {"exact": method["exact"]}}));
            }
            for (name, value) in m["headers"].as_object().into_iter().flatten() {
                let string_match = match (value.get("exact"), value.get("regex")) {
                    (Some(e), None) => json!({"exact": e}),
                    (None, Some(re)) => json!({"safe_regex": {"regex": re}}),
                    _ => panic!("{value}"),
                };
                headers.push(json!({"name": name, "string_match": string_match}));
            }
            let mut route_match = match (m["uri"].get("regex"), m["uri"].get("prefix")) {
                (Some(re), None) => json!({"safe_regex": {"regex": re}}),
                (None, Some(p)) => json!({"prefix": p}),
                (None, None) => json!({"prefix": "/"}),
                _ => panic!("{m}"),
            };
            if !headers.is_empty() {
                route_match["headers"] = json!(headers);
            }
            let mut route = action.clone();
            route["match"] = route_match;
            out.push(route);
        }
    }
    out
}

/// Envoy Gateway's HTTPRoute rules that the sidecar's header does not pick,
/// as Envoy Gateway hands them to Envoy: one Envoy route per match, in the
/// Gateway API's precedence (a regular-expression path before a prefix,
/// then those with a method, then more headers first), an ExtensionRef to
/// an HTTPRouteFilter's `directResponse` as Envoy's `direct_response` (its
/// content type a response header), a rule to the default provider as the
/// bootstrap's route.
fn eg_unrouted(route: &Value, filters: &[Value], open: &dyn Fn() -> Value) -> Vec<Value> {
    let mut out = Vec::new();
    for rule in route["spec"]["rules"].as_array().unwrap() {
        let matches = rule["matches"].as_array().cloned().unwrap_or_else(|| vec![json!({})]);
        let sidecars =
            |m: &Value| m["headers"].as_array().is_some_and(|h| h.iter().any(|h| h["name"] == "x-tollgate-provider"));
        if matches.iter().any(sidecars) {
            continue;
        }
        let reply = rule["filters"].as_array().into_iter().flatten().find_map(|f| {
            let name = f["extensionRef"]["name"].as_str()?;
            filters.iter().find(|d| d["metadata"]["name"] == name)?["spec"].get("directResponse").cloned()
        });
        let action = match reply {
            Some(reply) => {
                assert_eq!(reply["body"]["type"], "Inline", "{reply}");
                let mut a = json!({"direct_response": {
                    "status": reply["statusCode"],
                    "body": {"inline_string": reply["body"]["inline"]},
                }});
                if let Some(ct) = reply["contentType"].as_str() {
                    a["response_headers_to_add"] = set_headers(std::iter::once(("content-type", ct)));
                }
                a
            }
            None => {
                assert!(rule["backendRefs"].is_array(), "{rule}");
                json!({"route": open(), "request_headers_to_remove": ["x-tollgate-provider"]})
            }
        };
        for m in matches {
            let mut headers = Vec::new();
            if let Some(method) = m.get("method") {
                headers.push(json!({"name": ":method", "string_match": {"exact": method}}));
            }
            for h in m["headers"].as_array().into_iter().flatten() {
                let string_match = match h["type"].as_str().unwrap_or("Exact") {
                    "Exact" => json!({"exact": h["value"]}),
                    "RegularExpression" => json!({"safe_regex": {"regex": h["value"]}}),
                    t => panic!("{t}"),
                };
                headers.push(json!({"name": h["name"], "string_match": string_match}));
            }
            let (rank, mut route_match) = match (m["path"]["type"].as_str(), &m["path"]["value"]) {
                (Some("Exact"), v) => (0, json!({"path": v})),
                (Some("RegularExpression"), v) => (1, json!({"safe_regex": {"regex": v}})),
                (Some("PathPrefix"), v) => (2, json!({"prefix": v})),
                (None, _) => (2, json!({"prefix": "/"})),
                (Some(t), _) => panic!("{t}"),
            };
            let key = (rank, m.get("method").is_none(), std::cmp::Reverse(headers.len()));
            if !headers.is_empty() {
                route_match["headers"] = json!(headers);
            }
            let mut r = action.clone();
            r["match"] = route_match;
            out.push((key, r));
        }
    }
    out.sort_by_key(|(key, _)| *key);
    out.into_iter().map(|(_, r)| r).collect()
}

/// The plain bootstrap with Istio's fragments: the ext_proc filter of the
/// EnvoyFilter, the clusters it adds, and each fallback route as Istio
/// leaves it after the merge (the VirtualService route's timeout and
/// retries, the patch's cluster and retry fields over them).
fn with_istio_fragments(policy: &Policy, plain: Value) -> Value {
    let files = render_istio(policy, &K8sOptions::default()).unwrap();
    let edge = docs(&files, "30-envoyfilter.yaml")[0]["spec"]["configPatches"].as_array().unwrap().clone();
    let ext_proc = edge[0]["patch"]["value"].clone();
    let patches = docs(&files, "50-fallback.yaml")[0]["spec"]["configPatches"].as_array().unwrap().clone();
    let mut clusters: Vec<Value> =
        patches.iter().filter(|p| p["applyTo"] == "CLUSTER").map(|p| p["patch"]["value"].clone()).collect();
    let sidecar = ext_proc["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"].as_str().unwrap();
    assert!(sidecar.starts_with("outbound|"), "{sidecar}");
    clusters.push(local_sidecar(&plain, sidecar));
    let vs = docs(&files, "40-providers.yaml").into_iter().find(|d| d["kind"] == "VirtualService").unwrap();
    let (route_patches, edge): (Vec<Value>, Vec<Value>) =
        edge[1..].iter().cloned().partition(|p| p["applyTo"] == "HTTP_ROUTE");
    provider_timeouts_as_plain(&plain, &vs, &route_patches);
    let plain = with_istio_edge(plain, &edge);
    let mut actions = Vec::new();
    for p in patches.iter().filter(|p| p["applyTo"] == "HTTP_ROUTE") {
        let name = &p["match"]["routeConfiguration"]["vhost"]["route"]["name"];
        let vs_route = vs["spec"]["http"].as_array().unwrap().iter().find(|r| r["name"] == *name).unwrap();
        let header = vs_route["match"][0]["headers"]["x-tollgate-provider"]["exact"].as_str().unwrap().to_string();
        let merged = &p["patch"]["value"]["route"];
        let retries = &vs_route["retries"];
        let mut action = json!({
            "cluster": merged["cluster"],
            "timeout": vs_route["timeout"],
            "idle_timeout": merged["idle_timeout"],
            "retry_policy": merged["retry_policy"].clone(),
        });
        action["retry_policy"]["num_retries"] = retries["attempts"].clone();
        // What Istio makes of `retryOn: 5xx,reset,connect-failure,retriable-status-codes,429`.
        assert_eq!(retries["retryOn"], "5xx,reset,connect-failure,retriable-status-codes,429");
        action["retry_policy"]["retry_on"] = json!("5xx,reset,connect-failure,retriable-status-codes");
        action["retry_policy"]["retriable_status_codes"] = json!([429]);
        if let Some(t) = retries.get("perTryTimeout") {
            action["retry_policy"]["per_try_timeout"] = t.clone();
        }
        actions.push((header, action));
    }
    let unrouted = istio_unrouted(&vs, &|| open_action(&plain));
    swap_in(plain, Some(ext_proc), clusters, &actions, unrouted)
}

/// The Istio EnvoyFilter's route patches (the attempt and idle timeouts of
/// the provider routes, by name) give each route what plain Envoy's has.
fn provider_timeouts_as_plain(plain: &Value, vs: &Value, patches: &[Value]) {
    let routes = plain["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap();
    let vs_routes = vs["spec"]["http"].as_array().unwrap();
    // Not the MCP routes (exact paths) nor the aliases' (retries of their own).
    let to_providers = vs_routes
        .iter()
        .filter(|r| r["route"].is_array() && r["match"][0]["uri"].get("exact").is_none() && r.get("retries").is_none());
    assert_eq!(to_providers.count(), patches.len(), "one patch per provider route");
    for p in patches {
        let name = &p["match"]["routeConfiguration"]["vhost"]["route"]["name"];
        let vs_route = vs_routes.iter().find(|r| r["name"] == *name).unwrap_or_else(|| panic!("no route {name}"));
        let plain_action = match vs_route["match"][0]["headers"]["x-tollgate-provider"]["exact"].as_str() {
            Some(provider) => {
                let r = routes.iter().find(|r| r["match"]["headers"][0]["string_match"]["exact"] == provider);
                r.unwrap_or_else(|| panic!("plain Envoy has no route to {provider}"))["route"].clone()
            }
            None => open_action(plain),
        };
        let merged = &p["patch"]["value"]["route"];
        assert_eq!(merged["idle_timeout"], plain_action["idle_timeout"], "{name}");
        assert_eq!(
            merged["retry_policy"]["per_try_timeout"], plain_action["retry_policy"]["per_try_timeout"],
            "{name}"
        );
        assert_eq!(vs_route["timeout"], plain_action["timeout"], "{name}");
    }
}

/// The Istio EnvoyFilter's edge patches applied as Istio does: the HCM
/// settings merged into the listener's, the header filter inserted first
/// (in place of the bootstrap's own, which they must equal).
fn with_istio_edge(mut plain: Value, edge: &[Value]) -> Value {
    // The provider routes' timeouts: see `provider_timeouts_as_plain`.
    let edge: Vec<&Value> = edge.iter().filter(|p| p["applyTo"] != "HTTP_ROUTE").collect();
    assert_eq!(edge.len(), 2, "{edge:?}");
    let (merge, strip) = (edge[0], edge[1]);
    assert_eq!((&merge["applyTo"], &merge["patch"]["operation"]), (&json!("NETWORK_FILTER"), &json!("MERGE")));
    assert_eq!((&strip["applyTo"], &strip["patch"]["operation"]), (&json!("HTTP_FILTER"), &json!("INSERT_FIRST")));
    let hcm = &mut plain["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    for (k, v) in merge["patch"]["value"]["typed_config"].as_object().unwrap() {
        assert_eq!(&hcm[k], v, "Istio's gateway gets plain Envoy's {k}");
        hcm[k] = v.clone();
    }
    let filters = http_filters(&mut plain);
    assert_eq!(filters[0], strip["patch"]["value"], "the same header filter as plain Envoy's");
    filters[0] = strip["patch"]["value"].clone();
    plain
}

/// The plain bootstrap with Envoy Gateway's fragments: the clusters the
/// patch policy adds, Envoy Gateway's own cluster to the sidecar (which
/// their upstream ext_proc reaches the sidecar through) pointed here, and
/// the route actions it puts on the HTTPRoute's fallback rules.
fn with_eg_fragments(policy: &Policy, plain: Value) -> Value {
    let files = render_envoy_gateway(policy, &K8sOptions::default()).unwrap();
    let patch = &docs(&files, "70-fallback.yaml")[0];
    let ops = patch["spec"]["jsonPatches"].as_array().unwrap();
    let mut clusters: Vec<Value> = ops
        .iter()
        .filter(|o| o["type"] == "type.googleapis.com/envoy.config.cluster.v3.Cluster")
        .map(|o| o["operation"]["value"].clone())
        .collect();
    let eg_cluster = eg_ext_proc_cluster(&K8sOptions::default(), "default");
    assert!(clusters.iter().all(|c| c["name"] != SIDECAR_CLUSTER && c["name"] != eg_cluster.as_str()));
    clusters.push(local_sidecar(&plain, &eg_cluster));
    let route = &docs(&files, "50-httproute.yaml")[0];
    let rules = route["spec"]["rules"].as_array().unwrap();
    let mut actions = Vec::new();
    for o in ops.iter().filter(|o| o["operation"]["op"] == "replace") {
        let path = o["operation"]["jsonPath"].as_str().unwrap();
        let rule: usize = path.split("/rule/").nth(1).unwrap().split('/').next().unwrap().parse().unwrap();
        let header = rules[rule]["matches"][0]["headers"][0]["value"].as_str().unwrap().to_string();
        actions.push((header, o["operation"]["value"].clone()));
    }
    let filters: Vec<Value> =
        docs(&files, "50-httproute.yaml").into_iter().filter(|d| d["kind"] == "HTTPRouteFilter").collect();
    let unrouted = eg_unrouted(route, &filters, &|| open_action(&plain));
    swap_in(plain, None, clusters, &actions, unrouted)
}

async fn validates(what: &str, config: &Value) {
    let (ok, text) = validate_in_envoy(what, &serde_json::to_string_pretty(config).unwrap()).await.unwrap();
    assert!(ok, "{what}: Envoy refused the manifests' configuration:\n{text}");
}

fn plain(policy: &Policy) -> Value {
    render(policy, &RenderOptions { wasm_path: &paths().unwrap().wasm, access_log: "/dev/null", plugin_config: None })
        .unwrap()
}

/// The test policy, its certificates in a directory of the test's own
/// (named by the test, so tests running at once do not share one).
fn test_policy(name: &str) -> Policy {
    let dir = std::env::temp_dir().join(format!("tollgate-mesh-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut policy = parse_policy(POLICY).unwrap();
    policy.sidecar.tls.dir = dir.join("tls").display().to_string();
    tollgate_ext_proc::tls::ensure(std::path::Path::new(&policy.sidecar.tls.dir), false).unwrap();
    policy
}

#[tokio::test]
async fn istio_envoy_filter_patches_validate_in_envoy() {
    let policy = test_policy("istio");
    let config = with_istio_fragments(&policy, plain(&policy));
    let clusters = config["static_resources"]["clusters"].as_array().unwrap();
    assert_eq!(clusters.iter().filter(|c| c["name"].as_str().unwrap().starts_with("tollgate_alias_smart_")).count(), 3);
    validates("istio", &config).await;
}

#[tokio::test]
async fn envoy_gateway_patch_policy_validates_in_envoy() {
    let policy = test_policy("envoy-gateway");
    validates("envoy-gateway", &with_eg_fragments(&policy, plain(&policy))).await;
}

/// A gateway whose Envoy runs a platform's fragments: `resilient` tries a
/// provider that refuses connections first, `smart` an OpenAI target the
/// test makes fail, then a Claude one (translated).
async fn gateway(edit: fn(&Policy, Value) -> Value) -> Gateway {
    let dead = test_port().unwrap();
    Gateway::start(Options {
        providers_extra: format!("  dead: {{kind: openai, baseUrl: 'http://127.0.0.1:{dead}'}}"),
        policy_extra: "models:\n  smart: {targets: [{provider: mock, model: gpt-4o}, {provider: mock, model: claude-haiku-4-5}]}\n  resilient: {targets: [{provider: dead, model: gpt-4o}, {provider: mock, model: gpt-4o-mini}]}\n".into(),
        envoy_edit: Some(edit),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn falls_back(gw: &Gateway) {
    let chat = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}]});
    let resp = gw.post("/v1/chat/completions", &chat("resilient")).await;
    assert_eq!(resp.status(), 200, "{}", gw.log_text());
    assert_eq!(resp.headers()["x-envoy-attempt-count"], "2");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["model"], "gpt-4o-mini");

    let resp = gw.post_with("/v1/chat/completions", &chat("smart"), &[("x-mock-fail-model", "gpt-4o=429")]).await;
    assert_eq!(resp.status(), 200, "{}", gw.log_text());
    assert_eq!(resp.headers()["x-envoy-attempt-count"], "2");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion", "the Claude target's answer, in OpenAI's shape: {body}");
    let paths: Vec<String> = gw.mock_requests().await.iter().map(|r| r["path"].as_str().unwrap().to_string()).collect();
    assert!(paths.contains(&"/v1/messages".to_string()), "the second attempt went out as Anthropic: {paths:?}");
}

#[tokio::test]
async fn istio_fragments_serve_fallback_through_the_sidecar() {
    falls_back(&gateway(with_istio_fragments).await).await;
}

#[tokio::test]
async fn envoy_gateway_fragments_serve_fallback_through_the_sidecar() {
    falls_back(&gateway(with_eg_fragments).await).await;
}

/// A gateway on a platform's fragments whose policy requires a key (so
/// nothing the sidecar did not route may pass), with its sidecar killed.
async fn keyed_gateway_without_sidecar(edit: fn(&Policy, Value) -> Value) -> Gateway {
    let mut gw = Gateway::start(Options {
        policy_extra: "access: {require: key, keyStore: '{dir}/keys.yaml'}\nteams: {t: {}}\nconsumers: {alice: {team: t}}\nmodels:\n  smart: {targets: [{provider: mock, model: a}, {provider: mock, model: b}]}\n".into(),
        envoy_edit: Some(edit),
        ..Default::default()
    })
    .await
    .unwrap();
    gw.kill("sidecar").await;
    gw
}

/// The platform's refusals of what the sidecar did not route, served by
/// Envoy: an API request gets 503 `gateway_unavailable` in its API's shape,
/// any other path 404 `unknown_path`; nothing reaches the provider.
async fn refuses_unrouted(gw: &Gateway) {
    let chat = json!({"model": "smart", "messages": [{"role": "user", "content": "Say hello"}]});
    let resp = gw.post("/v1/chat/completions", &chat).await;
    assert_eq!(resp.status(), 503, "{}", gw.log_text());
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "gateway_unavailable", "{body}");

    let messages =
        json!({"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let resp = gw.post_with("/v1/messages", &messages, &[("anthropic-version", "2023-06-01")]).await;
    assert_eq!(resp.status(), 503, "{}", gw.log_text());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error", "Anthropic's shape: {body}");

    let resp = reqwest::Client::new().get(format!("{}/v1/models", gw.url)).send().await.unwrap();
    assert_eq!(resp.status(), 404, "{}", gw.log_text());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_path", "{body}");

    let seen = gw.mock_requests().await;
    assert!(seen.is_empty(), "a request reached the provider: {seen:?}");
}

#[tokio::test]
async fn istio_refuses_what_the_sidecar_did_not_route() {
    refuses_unrouted(&keyed_gateway_without_sidecar(with_istio_fragments).await).await;
}

#[tokio::test]
async fn envoy_gateway_refuses_what_the_sidecar_did_not_route() {
    refuses_unrouted(&keyed_gateway_without_sidecar(with_eg_fragments).await).await;
}

// MCP virtual servers: each platform's routes to the sidecar, checked
// against the platforms' schemas, and (as Envoy gets them) serving an MCP
// client through the real Envoy and sidecar.

/// A policy with an `mcp` section: MCP servers over HTTP and HTTPS (two on
/// one host), one in the cluster, one by address, a REST API from an
/// OpenAPI document, credentials from the environment and a file.
fn mcp_policy(dir: &std::path::Path) -> Policy {
    let spec = dir.join("weather.yaml");
    std::fs::write(&spec, "openapi: 3.0.3\ninfo: {title: weather, version: '1'}\npaths: {}\n").unwrap();
    let mut policy = parse_policy(&format!(
        "{POLICY}mcp:\n  servers:\n    crm: {{url: 'http://crm.internal:8080/mcp', keyEnv: CRM_MCP_TOKEN}}\n    crm-admin: {{url: 'http://crm.internal:8081/mcp'}}\n    github: {{url: 'https://mcp.example.com/mcp', keyFile: /run/secrets/github}}\n    tickets: {{url: 'http://tickets.support.svc.cluster.local:9000/mcp'}}\n    lab: {{url: 'http://10.0.0.9:7000/mcp'}}\n    weather: {{openapi: '{}', baseUrl: 'http://weather.internal'}}\n  virtualServers:\n    support: {{tools: ['crm/*', 'weather/get_forecast']}}\n    ops: {{tools: ['github/*', 'tickets/*', 'lab/*', 'crm-admin/*']}}\n",
        spec.display()
    ))
    .unwrap();
    policy.sidecar.tls.dir = dir.join("tls").display().to_string();
    policy
}

/// Where scripts/install.sh (install_k8s_validator) put the schema
/// validator's packages (as `ext-proc-server/tests/k8s.rs` finds them).
fn validator_modules() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("TOLLGATE_K8S_VALIDATOR_MODULES") {
        return dir.into();
    }
    let home = std::env::var("TOLLGATE_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".tollgate"));
    home.join("k8s-validate/node_modules")
}

/// Run tests/k8s/validate.mjs over `files`: (success, output).
fn validate_manifests(files: &[std::path::PathBuf]) -> (bool, String) {
    let modules = validator_modules();
    assert!(
        modules.join("@kubernetes-models/istio").is_dir(),
        "the Kubernetes schema validator is not installed at {}: run scripts/install.sh (install_k8s_validator)",
        modules.display()
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/validate.mjs");
    let out = std::process::Command::new("node")
        .arg(script)
        .arg("--modules")
        .arg(&modules)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node ({e}): run scripts/install.sh"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn mcp_manifests_carry_the_routes_and_validate_against_the_published_schemas() {
    let tmp = std::env::temp_dir().join(format!("tollgate-mesh-mcp-{}-manifests", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let policy = mcp_policy(&tmp);
    let mut paths = Vec::new();
    let variants = [
        ("default", K8sOptions::default()),
        (
            "custom",
            K8sOptions {
                gateway_namespace: Some("edge".into()),
                istio_gateway: Some("edge/public".into()),
                hosts: vec!["ai.example.com".into()],
                target_kind: tollgate_ext_proc::cli::k8s::TargetKind::Gateway,
                ..Default::default()
            },
        ),
    ];
    for (variant, opts) in variants {
        let istio = render_istio(&policy, &opts).unwrap();
        let gw_ns = opts.gateway_namespace.clone().unwrap_or_else(|| "istio-system".into());
        // Istio: the VirtualService's first routes, the EnvoyFilter's
        // per-route settings, the ServiceEntries for the sidecar's egress.
        let vs = docs(&istio, "40-providers.yaml").into_iter().find(|d| d["kind"] == "VirtualService").unwrap();
        let http = vs["spec"]["http"].as_array().unwrap();
        for (i, name) in ["ops", "support"].iter().enumerate() {
            assert_eq!(http[i]["name"], format!("tollgate-mcp-{name}"));
            assert_eq!(http[i]["match"], json!([{"uri": {"exact": format!("/mcp/{name}")}}]));
            assert_eq!(
                http[i]["route"],
                json!([{"destination": {"host": "tollgate.tollgate.svc.cluster.local", "port": {"number": 10001}}}])
            );
        }
        let mcp = docs(&istio, "45-mcp.yaml");
        let ef = mcp.iter().find(|d| d["kind"] == "EnvoyFilter").unwrap();
        assert_eq!(ef["metadata"]["namespace"], json!(gw_ns));
        assert_eq!(ef["spec"]["configPatches"].as_array().unwrap().len(), 2);
        let mut hosts: Vec<String> = mcp
            .iter()
            .filter(|d| d["kind"] == "ServiceEntry")
            .map(|e| e["spec"]["hosts"][0].as_str().unwrap().to_string())
            .collect();
        hosts.sort();
        assert_eq!(hosts, ["crm.internal", "lab.mcp.tollgate.internal", "mcp.example.com", "weather.internal"]);
        paths.extend(write_all(&tmp.join(format!("istio-{variant}")), &istio));

        // Envoy Gateway: the MCP HTTPRoute to the sidecar's Service and its
        // extension policy without ext_proc.
        let eg = render_envoy_gateway(&policy, &opts).unwrap();
        let gw_ns = opts.gateway_namespace.clone().unwrap_or_else(|| "default".into());
        let mcp = docs(&eg, "55-mcp.yaml");
        let route = mcp.iter().find(|d| d["kind"] == "HTTPRoute").unwrap();
        assert_eq!(route["metadata"]["namespace"], json!(gw_ns));
        let rule = &route["spec"]["rules"][0];
        assert_eq!(
            rule["matches"],
            json!([{"path": {"type": "Exact", "value": "/mcp/ops"}}, {"path": {"type": "Exact", "value": "/mcp/support"}}])
        );
        assert_eq!(
            rule["backendRefs"],
            json!([{"group": "", "kind": "Service", "name": "tollgate", "namespace": "tollgate", "port": 10001}])
        );
        let ext = mcp.iter().find(|d| d["kind"] == "EnvoyExtensionPolicy").unwrap();
        assert!(ext["spec"]["wasm"].is_array() && ext["spec"].get("extProc").is_none(), "{ext}");
        let grant = &docs(&eg, "60-referencegrant.yaml")[0];
        assert!(grant["spec"]["from"].as_array().unwrap().iter().any(|f| f["kind"] == "HTTPRoute"), "{grant}");
        paths.extend(write_all(&tmp.join(format!("envoy-gateway-{variant}")), &eg));
    }
    // With JWTs: Istio's payload header for the MCP routes (and the filter
    // removing it elsewhere), Envoy Gateway's verification on the MCP route.
    let jwks = tmp.join("jwks.json");
    std::fs::write(&jwks, r#"{"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": "c2VjcmV0"}]}"#).unwrap();
    let mut with_jwt = policy.clone();
    with_jwt.access.jwt = Some(
        serde_json::from_value(
            json!({"issuer": ISSUER, "audiences": ["tollgate"], "jwksFile": jwks.display().to_string()}),
        )
        .unwrap(),
    );
    let istio = render_istio(&with_jwt, &K8sOptions::default()).unwrap();
    assert_eq!(docs(&istio, "60-jwt.yaml")[0]["spec"]["jwtRules"][0]["outputPayloadToHeader"], MCP_CLAIMS_HEADER);
    let ef = docs(&istio, "45-mcp.yaml").into_iter().find(|d| d["kind"] == "EnvoyFilter").unwrap();
    assert_eq!(ef["spec"]["configPatches"].as_array().unwrap().len(), 5, "4 routes and the filter");
    paths.extend(write_all(&tmp.join("istio-jwt"), &istio));
    let eg = render_envoy_gateway(&with_jwt, &K8sOptions::default()).unwrap();
    let security = docs(&eg, "80-jwt.yaml");
    assert_eq!(security[1]["spec"]["targetRefs"][0]["name"], "tollgate-mcp");
    paths.extend(write_all(&tmp.join("envoy-gateway-jwt"), &eg));
    let (ok, out) = validate_manifests(&paths);
    assert!(ok, "rendered manifests do not validate:\n{out}");
    for doc in [
        "networking.istio.io/v1alpha3/EnvoyFilter istio-system/tollgate-mcp",
        "networking.istio.io/v1alpha3/EnvoyFilter edge/tollgate-mcp",
        "networking.istio.io/v1/ServiceEntry tollgate/tollgate-mcp-crm",
        "networking.istio.io/v1/ServiceEntry tollgate/tollgate-mcp-lab",
        "networking.istio.io/v1/VirtualService edge/tollgate",
        "gateway.networking.k8s.io/v1/HTTPRoute default/tollgate-mcp",
        "gateway.networking.k8s.io/v1/HTTPRoute edge/tollgate-mcp",
        "gateway.envoyproxy.io/v1alpha1/EnvoyExtensionPolicy default/tollgate-mcp",
        "gateway.envoyproxy.io/v1alpha1/EnvoyExtensionPolicy edge/tollgate-mcp",
        "gateway.networking.k8s.io/v1beta1/ReferenceGrant tollgate/tollgate-ext-proc",
        "security.istio.io/v1/RequestAuthentication istio-system/tollgate",
        "gateway.envoyproxy.io/v1alpha1/SecurityPolicy default/tollgate-mcp",
    ] {
        assert!(out.contains(&format!("{doc}\n")), "{doc} not checked:\n{out}");
    }
}

fn write_all(dir: &std::path::Path, files: &[(String, String)]) -> Vec<std::path::PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    files
        .iter()
        .map(|(name, text)| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        })
        .collect()
}

/// `plain` with its MCP routes replaced by a platform's (first, as the
/// platform has them) and the platform's cluster to the sidecar.
fn swap_in_mcp(mut plain: Value, routes: Vec<Value>, sidecar: &str) -> Value {
    let cluster = local_sidecar(&plain, sidecar);
    let hcm = &mut plain["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let all = hcm["route_config"]["virtual_hosts"][0]["routes"].as_array_mut().unwrap();
    let before = all.len();
    let theirs: Vec<&Value> = routes.iter().map(|r| &r["match"]["path"]).collect();
    all.retain(|r| !(r["route"]["cluster"] == SIDECAR_CLUSTER && theirs.contains(&&r["match"]["path"])));
    assert_eq!(before - all.len(), routes.len(), "the routes of plain Envoy's for MCP, one for one");
    all.splice(0..0, routes);
    plain["static_resources"]["clusters"].as_array_mut().unwrap().push(cluster);
    plain
}

/// The plain bootstrap with Istio's MCP routes, as Istio hands them to
/// Envoy: the VirtualService's route (exact path, to Istio's cluster for
/// the sidecar's Service, no timeout) with the EnvoyFilter's merge over it.
fn with_istio_mcp(policy: &Policy, plain: Value) -> Value {
    let files = render_istio(policy, &K8sOptions::default()).unwrap();
    let vs = docs(&files, "40-providers.yaml").into_iter().find(|d| d["kind"] == "VirtualService").unwrap();
    let patches = docs(&files, "45-mcp.yaml")[0]["spec"]["configPatches"].as_array().unwrap().clone();
    let mut cluster = String::new();
    let mut routes = Vec::new();
    for r in vs["spec"]["http"].as_array().unwrap() {
        let Some(path) = r["match"][0]["uri"]["exact"].as_str() else { continue };
        let dest = &r["route"][0]["destination"];
        cluster = format!("outbound|{}||{}", dest["port"]["number"], dest["host"].as_str().unwrap());
        assert!(r.get("timeout").is_none(), "{r}");
        let patch = patches
            .iter()
            .find(|p| p["match"]["routeConfiguration"]["vhost"]["route"]["name"] == r["name"])
            .unwrap_or_else(|| panic!("no EnvoyFilter patch for {}", r["name"]));
        assert_eq!(patch["patch"]["operation"], "MERGE");
        let merged = &patch["patch"]["value"];
        let mut action = merged["route"].clone();
        action["cluster"] = json!(cluster);
        routes.push(json!({
            "name": r["name"],
            "match": {"path": path},
            "route": action,
            "typed_per_filter_config": merged["typed_per_filter_config"],
        }));
    }
    // The filter as Istio names a WasmPlugin's (`<namespace>.<name>`), so the
    // routes' per-filter settings reach it as they would there.
    let wasm = docs(&files, "20-wasmplugin.yaml").into_iter().find(|d| d["kind"] == "WasmPlugin").unwrap();
    let istio_name =
        format!("{}.{}", wasm["metadata"]["namespace"].as_str().unwrap(), wasm["metadata"]["name"].as_str().unwrap());
    let mut plain = plain;
    let filters = http_filters(&mut plain);
    let at = filters.iter().position(|f| f["name"] == WASM_FILTER).unwrap();
    filters[at]["name"] = json!(istio_name);
    let all = plain["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"][0]["routes"]
        .as_array_mut()
        .unwrap();
    for route in all.iter_mut() {
        if let Some(per) = route["typed_per_filter_config"].as_object_mut() {
            if let Some(v) = per.remove(WASM_FILTER) {
                per.insert(istio_name.clone(), v);
            }
        }
    }
    swap_in_mcp(plain, routes, &cluster)
}

/// The plain bootstrap with Istio's MCP routes (as [`with_istio_mcp`]) and
/// its JWT verification: the `RequestAuthentication`'s rule as Istio hands
/// it to Envoy (provider `origins-0`, a bad token refused, a missing one let
/// through, the payload in metadata under `payload` and, as
/// `outputPayloadToHeader` says, in a header) in place of the bootstrap's
/// `jwt_authn`, after the gateway's header filter (the EnvoyFilter inserts
/// that one first), and `45-mcp.yaml`'s filter before the router.
fn with_istio_mcp_jwt(policy: &Policy, plain: Value) -> Value {
    let files = render_istio(policy, &K8sOptions::default()).unwrap();
    let edge = docs(&files, "30-envoyfilter.yaml")[0]["spec"]["configPatches"].as_array().unwrap().clone();
    let mut config = with_istio_edge(with_istio_mcp(policy, plain), &edge[1..]);
    let authn = &docs(&files, "60-jwt.yaml")[0];
    assert_eq!(authn["kind"], "RequestAuthentication");
    let rules = authn["spec"]["jwtRules"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    let rule = &rules[0];
    assert_eq!(rule["outputPayloadToHeader"], MCP_CLAIMS_HEADER);
    let jwt_authn = json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"origins-0": {
                "issuer": rule["issuer"],
                "audiences": rule["audiences"],
                "forward": rule["forwardOriginalToken"],
                "forward_payload_header": rule["outputPayloadToHeader"],
                "payload_in_metadata": "payload",
                "normalize_payload_in_metadata": {"space_delimited_claims": ["permission", "scope"]},
                "local_jwks": {"inline_string": rule["jwks"]},
            }},
            "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
                {"provider_name": "origins-0"},
                {"allow_missing": {}},
            ]}}}],
            "bypass_cors_preflight": true,
        },
    });
    let patches = docs(&files, "45-mcp.yaml")[0]["spec"]["configPatches"].as_array().unwrap().clone();
    let before_router: Vec<&Value> = patches.iter().filter(|p| p["applyTo"] == "HTTP_FILTER").collect();
    assert_eq!(before_router.len(), 1);
    let p = before_router[0];
    assert_eq!(p["patch"]["operation"], "INSERT_BEFORE");
    assert_eq!(p["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"], "envoy.filters.http.router");
    let filters = http_filters(&mut config);
    let removed = &filters[0]["typed_config"]["mutations"]["request_mutations"];
    assert!(removed.as_array().unwrap().contains(&json!({"remove": MCP_CLAIMS_HEADER})), "{removed}");
    let i = filters.iter().position(|f| f["name"] == "envoy.filters.http.jwt_authn").unwrap();
    assert!(i > 0, "the gateway's header filter runs first");
    filters[i] = jwt_authn;
    let router = filters.iter().position(|f| f["name"] == "envoy.filters.http.router").unwrap();
    filters.insert(router, p["patch"]["value"].clone());
    config
}

/// The plain bootstrap with Envoy Gateway's MCP routes, as it hands them to
/// Envoy: one route per match of the HTTPRoute's rule, to its cluster for
/// the rule's backend, the rule's request timeout (a zero one turns the idle
/// timeout off too), ext_proc absent (the route's extension policy has none).
fn with_eg_mcp(policy: &Policy, plain: Value) -> Value {
    let files = render_envoy_gateway(policy, &K8sOptions::default()).unwrap();
    let route = docs(&files, "55-mcp.yaml").into_iter().find(|d| d["kind"] == "HTTPRoute").unwrap();
    let ns = route["metadata"]["namespace"].as_str().unwrap();
    let name = route["metadata"]["name"].as_str().unwrap();
    let rules = route["spec"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    let cluster = format!("httproute/{ns}/{name}/rule/0");
    let timeout = &rules[0]["timeouts"]["request"];
    assert_eq!(timeout, "0s");
    let routes = rules[0]["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["path"]["type"], "Exact");
            json!({
                "match": {"path": m["path"]["value"]},
                "route": {"cluster": cluster, "timeout": timeout, "idle_timeout": "0s"},
                "typed_per_filter_config": {"envoy.filters.http.ext_proc": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
                    "disabled": true,
                }},
            })
        })
        .collect();
    swap_in_mcp(plain, routes, &cluster)
}

/// An MCP client lists and calls an upstream server's tools through a
/// gateway whose Envoy runs a platform's MCP routes.
async fn serves_mcp(edit: fn(&Policy, Value) -> Value, label: &str) {
    let dir = std::env::temp_dir().join(format!("tollgate-mesh-mcp-{}-{label}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let crm = McpServer::start(&dir, "crm", "crm", None).await.unwrap();
    let gw = Gateway::start(Options {
        policy_extra: format!(
            "access: {{require: key, keyStore: '{{dir}}/keys.yaml'}}\nmcp:\n  servers:\n    crm: {{url: '{}'}}\n  virtualServers:\n    support: {{tools: ['crm/*']}}\nteams:\n  support: {{mcp: {{tools: ['crm/*']}}}}\nconsumers:\n  bot: {{team: support}}\n",
            crm.url()
        ),
        envoy_edit: Some(edit),
        ..Default::default()
    })
    .await
    .unwrap();
    let key = gw.create_key("bot").await;
    let url = format!("{}/mcp/support", gw.url);
    let mut client = McpClient::connect(&url, &[format!("Authorization: Bearer {key}")], &[]).await.unwrap();
    assert_eq!(client.opened["ok"], true, "{}\n{}", client.opened, gw.log_text());
    let names = client.tool_names().await.unwrap();
    assert!(names.contains(&"crm_echo".to_string()), "{names:?}");
    let echoed = client.call("crm_echo", json!({"text": "through the mesh"})).await.unwrap();
    assert_eq!(echoed["content"][0]["text"], "through the mesh", "{echoed}");
    assert!(crm.calls().iter().any(|c| c["name"] == "echo"), "the call reached the upstream");
    // The request went through the platform's route, to the platform's cluster.
    let log = std::fs::read_to_string(&gw.access_log).unwrap();
    let upstreams: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["path"] == "/mcp/support")
        .map(|r| r["upstream"].clone())
        .collect();
    assert!(!upstreams.is_empty(), "{log}");
    assert!(upstreams.iter().all(|u| u != SIDECAR_CLUSTER), "{upstreams:?}");
    // ext_proc stayed off on those routes: Envoy opened no stream to the sidecar.
    let stats = reqwest::get(format!("http://{}/stats?filter=ext_proc", gw.admin)).await.unwrap().text().await.unwrap();
    let started: Vec<&str> = stats.lines().filter(|l| l.contains("ext_proc.streams_started")).collect();
    assert!(!started.is_empty(), "{stats}");
    assert!(started.iter().all(|l| l.ends_with(": 0")), "ext_proc ran on an MCP route: {started:?}");
}

#[tokio::test]
async fn istio_mcp_routes_serve_a_client_through_the_sidecar() {
    serves_mcp(with_istio_mcp, "istio").await;
}

#[tokio::test]
async fn envoy_gateway_mcp_routes_serve_a_client_through_the_sidecar() {
    serves_mcp(with_eg_mcp, "envoy-gateway").await;
}

// JWT callers of MCP routes on Istio.

const ISSUER: &str = "https://idp.example";
const KID: &str = "tollgate-mesh-1";
/// The shared HS256 secret the test's JWKS publishes (32 bytes).
const SECRET: &[u8] = b"tollgate-mesh-hs256-secret-01234";

/// A compact HS256 JWS over `claims`, signed with `secret`.
fn sign(secret: &[u8], claims: &Value) -> String {
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": KID});
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

/// Claims of a token for `sub` in `team`, valid for an hour.
fn claims(sub: &str, team: &str) -> Value {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    json!({"iss": ISSUER, "aud": "tollgate", "sub": sub, "team": team, "iat": now, "exp": now + 3600})
}

/// The policy's `access` with JWTs (`require` as given), its JWKS in `dir`.
fn jwt_access(dir: &std::path::Path, require: &str) -> String {
    let jwks = dir.join("jwks.json");
    let key = json!({"keys": [{"kty": "oct", "kid": KID, "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(SECRET)}]});
    std::fs::write(&jwks, key.to_string()).unwrap();
    format!(
        "access: {{require: {require}, jwt: {{issuer: '{ISSUER}', audiences: [tollgate], jwksFile: '{}'}}}}\n",
        jwks.display()
    )
}

/// An MCP `initialize` to `/mcp/support` with these headers: status and body.
async fn mcp_initialize(gw: &Gateway, headers: &[(&str, &str)]) -> (u16, Value) {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}});
    let mut req = reqwest::Client::new()
        .post(format!("{}/mcp/support", gw.url))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(init.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null))
}

/// Whether any request the mock provider received carried the payload header.
async fn provider_saw_claims(gw: &Gateway) -> bool {
    gw.mock_requests().await.iter().any(|r| r["headers"].get(MCP_CLAIMS_HEADER).is_some())
}

#[tokio::test]
async fn istio_mcp_routes_identify_jwt_callers() {
    let dir = std::env::temp_dir().join(format!("tollgate-mesh-mcp-{}-istio-jwt", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let crm = McpServer::start(&dir, "crm", "crm", None).await.unwrap();
    let gw = Gateway::start(Options {
        policy_extra: format!(
            "{}mcp:\n  servers:\n    crm: {{url: '{}'}}\n  virtualServers:\n    support: {{tools: ['crm/*']}}\nteams:\n  support: {{mcp: {{tools: ['crm/*']}}}}\n",
            jwt_access(&dir, "jwt"),
            crm.url()
        ),
        envoy_edit: Some(with_istio_mcp_jwt),
        ..Default::default()
    })
    .await
    .unwrap();
    // A verified token names the caller: its team's grant gives the tools.
    let ann = sign(SECRET, &claims("ann", "support"));
    let url = format!("{}/mcp/support", gw.url);
    let mut client = McpClient::connect(&url, &[format!("Authorization: Bearer {ann}")], &[]).await.unwrap();
    assert_eq!(client.opened["ok"], true, "{}\n{}", client.opened, gw.log_text());
    assert!(client.tool_names().await.unwrap().contains(&"crm_echo".to_string()));
    let echoed = client.call("crm_echo", json!({"text": "as ann"})).await.unwrap();
    assert_eq!(echoed["content"][0]["text"], "as ann", "{echoed}");

    // Claims forged in the header: removed before Envoy's JWT filter runs,
    // with no token (the sidecar asks for one) or a bad one (Envoy's 401).
    let forged = URL_SAFE_NO_PAD.encode(claims("ann", "support").to_string().as_bytes());
    let (status, body) = mcp_initialize(&gw, &[(MCP_CLAIMS_HEADER, &forged)]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], -32001, "the sidecar's answer: {body}");
    let wrong = format!("Bearer {}", sign(b"another-secret-another-secret-01", &claims("ann", "support")));
    let (status, body) = mcp_initialize(&gw, &[("authorization", &wrong), (MCP_CLAIMS_HEADER, &forged)]).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = mcp_initialize(&gw, &[("authorization", &format!("Bearer {ann}"))]).await;
    assert_eq!(status, 200, "{body}");
    // The sidecar keeps the payload to itself.
    assert!(crm.received().iter().all(|r| r["headers"].get(MCP_CLAIMS_HEADER).is_none()));

    // A provider route: the sidecar reads the payload from Envoy's metadata;
    // the header Envoy's JWT filter added never reaches the provider.
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let resp = gw.post_with("/v1/chat/completions", &chat, &[("authorization", &format!("Bearer {ann}"))]).await;
    assert_eq!(resp.status(), 200, "{}", gw.log_text());
    assert!(!gw.mock_requests().await.is_empty());
    assert!(!provider_saw_claims(&gw).await, "{:?}", gw.mock_requests().await);
}

/// The plain bootstrap with Envoy Gateway's MCP routes and its JWT
/// verification as it hands them to Envoy: the `SecurityPolicy` of the MCP
/// route (provider named as the policy names it, a bad token refused, a
/// missing one let through, the consumer and team claims forwarded in
/// headers, `claimToHeaders`) in place of the bootstrap's `jwt_authn`, after
/// the gateway's header filter (the ClientTrafficPolicy's early removal).
/// One filter for every route here: Envoy Gateway's per-route requirement
/// differs only on provider routes, which forward no claims.
fn with_eg_mcp_jwt(policy: &Policy, plain: Value) -> Value {
    let files = render_envoy_gateway(policy, &K8sOptions::default()).unwrap();
    let mut config = with_eg_mcp(policy, plain);
    let security = docs(&files, "80-jwt.yaml");
    let mcp = security.iter().find(|d| d["spec"]["targetRefs"][0]["name"] == "tollgate-mcp").unwrap();
    let jwt = &mcp["spec"]["jwt"];
    assert_eq!(jwt["optional"], true);
    let provider = &jwt["providers"][0];
    let claim_to_headers: Vec<Value> = provider["claimToHeaders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| json!({"header_name": c["header"], "claim_name": c["claim"]}))
        .collect();
    let name = provider["name"].as_str().unwrap();
    let jwt_authn = json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {name: {
                "issuer": provider["issuer"],
                "audiences": provider["audiences"],
                "claim_to_headers": claim_to_headers,
                "payload_in_metadata": name,
                "local_jwks": {"inline_string": provider["localJWKS"]["inline"]},
            }},
            "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
                {"provider_name": name},
                {"allow_missing": {}},
            ]}}}],
        },
    });
    let ctp = docs(&files, "20-envoyproxy.yaml").into_iter().find(|d| d["kind"] == "ClientTrafficPolicy").unwrap();
    let early = ctp["spec"]["headers"]["earlyRequestHeaders"]["remove"].as_array().unwrap().clone();
    let filters = http_filters(&mut config);
    let removed: Vec<Value> = filters[0]["typed_config"]["mutations"]["request_mutations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["remove"].clone())
        .collect();
    assert_eq!(removed, early, "the bootstrap's header filter removes what the ClientTrafficPolicy does");
    let i = filters.iter().position(|f| f["name"] == "envoy.filters.http.jwt_authn").unwrap();
    assert!(i > 0, "the gateway's header filter runs first");
    filters[i] = jwt_authn;
    config
}

/// Envoy Gateway: a verified token's consumer and team claims identify the
/// MCP caller; forged claim headers never do.
#[tokio::test]
async fn envoy_gateway_mcp_routes_identify_jwt_callers() {
    let dir = std::env::temp_dir().join(format!("tollgate-mesh-mcp-{}-eg-jwt", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let crm = McpServer::start(&dir, "crm", "crm", None).await.unwrap();
    let gw = Gateway::start(Options {
        policy_extra: format!(
            "{}mcp:\n  servers:\n    crm: {{url: '{}'}}\n  virtualServers:\n    support: {{tools: ['crm/*']}}\nteams:\n  support: {{mcp: {{tools: ['crm/*']}}}}\n  sales: {{mcp: {{tools: ['crm/lookup_customer']}}}}\n",
            jwt_access(&dir, "jwt"),
            crm.url()
        ),
        envoy_edit: Some(with_eg_mcp_jwt),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("{}/mcp/support", gw.url);
    // A verified token names the caller: its team's grant gives the tools.
    let ann = sign(SECRET, &claims("ann", "support"));
    let mut client = McpClient::connect(&url, &[format!("Authorization: Bearer {ann}")], &[]).await.unwrap();
    assert_eq!(client.opened["ok"], true, "{}\n{}", client.opened, gw.log_text());
    assert!(client.tool_names().await.unwrap().contains(&"crm_echo".to_string()));
    let echoed = client.call("crm_echo", json!({"text": "as ann"})).await.unwrap();
    assert_eq!(echoed["content"][0]["text"], "as ann", "{echoed}");
    // Another team's token: that team's grant.
    let bob = sign(SECRET, &claims("bob", "sales"));
    let mut client = McpClient::connect(&url, &[format!("Authorization: Bearer {bob}")], &[]).await.unwrap();
    assert_eq!(client.tool_names().await.unwrap(), ["crm_lookup_customer"]);

    // Claims forged in the headers: removed before Envoy's JWT filter runs,
    // with no token (the sidecar asks for one), with a bad one (Envoy's 401),
    // and with a good token for another team (the token's claims win).
    let forged = [("x-tollgate-jwt-consumer", "ann"), ("x-tollgate-jwt-team", "support")];
    let (status, body) = mcp_initialize(&gw, &forged).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], -32001, "the sidecar's answer: {body}");
    let wrong = format!("Bearer {}", sign(b"another-secret-another-secret-01", &claims("ann", "support")));
    let (status, _) = mcp_initialize(&gw, &[("authorization", &wrong), forged[0], forged[1]]).await;
    assert_eq!(status, 401);
    let as_bob = format!("Bearer {bob}");
    let mut client = McpClient::connect(
        &url,
        &[
            format!("Authorization: {as_bob}"),
            "x-tollgate-jwt-team: support".into(),
            "x-tollgate-jwt-consumer: ann".into(),
        ],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(client.tool_names().await.unwrap(), ["crm_lookup_customer"], "bob's own team, whatever he sends");
    // The sidecar keeps the claims to itself.
    assert!(crm.received().iter().all(|r| r["headers"].get("x-tollgate-jwt-consumer").is_none()));
}

/// With the sidecar away (it fails open and the policy requires no
/// credential), a request with a verified token goes to the default
/// provider as Envoy has it: the filter before the router removes the
/// payload header there, as on every route but the MCP ones.
#[tokio::test]
async fn istio_keeps_the_jwt_payload_from_a_provider_when_the_sidecar_is_away() {
    let dir = std::env::temp_dir().join(format!("tollgate-mesh-mcp-{}-istio-jwt-away", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut gw = Gateway::start(Options {
        policy_extra: format!(
            "failMode: {{sidecar: open}}\n{}mcp:\n  servers:\n    crm: {{url: 'http://127.0.0.1:9/mcp'}}\n  virtualServers:\n    support: {{tools: ['crm/*']}}\n",
            jwt_access(&dir, "none"),
        ),
        envoy_edit: Some(with_istio_mcp_jwt),
        ..Default::default()
    })
    .await
    .unwrap();
    gw.kill("sidecar").await;
    let ann = sign(SECRET, &claims("ann", "support"));
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let resp = gw.post_with("/v1/chat/completions", &chat, &[("authorization", &format!("Bearer {ann}"))]).await;
    assert_eq!(resp.status(), 200, "{}", gw.log_text());
    // Envoy verified the token (and so added the header), then removed it.
    assert!(gw.stat("http.tollgate.jwt_authn.allowed").await.is_some_and(|n| n >= 1), "{}", gw.log_text());
    let seen = gw.mock_requests().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(!provider_saw_claims(&gw).await, "{seen:?}");
}
