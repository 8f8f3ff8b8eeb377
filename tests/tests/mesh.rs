//! The raw Envoy configuration the Kubernetes manifests carry (Istio's
//! EnvoyFilter patches, Envoy Gateway's patch policy) loads in the real
//! Envoy: the ext_proc filter, the clusters of aliases with several targets
//! (aggregate clusters whose upstream ext_proc reaches the sidecar through
//! the platform's cluster name) and the routes' actions. Istio and Envoy
//! Gateway pass these values to Envoy as they are, so a field Envoy does not
//! know or a wrong type would fail there; the manifests themselves are
//! checked against the platforms' schemas in `ext-proc-server/tests/k8s.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use serde_json::{json, Value};
use tokio::process::Command;
use tollgate_e2e::paths;
use tollgate_ext_proc::config::parse_policy;
use tollgate_ext_proc::envoy::{render, RenderOptions};
use tollgate_ext_proc::k8s::{render_envoy_gateway, render_istio, K8sOptions};

const POLICY: &str = "providers:\n  openai: {kind: openai, baseUrl: 'https://api.openai.com'}\n  anthropic: {kind: anthropic, baseUrl: 'https://api.anthropic.com'}\n  local: {kind: openai-compatible, baseUrl: 'http://127.0.0.1:8000'}\nmodels:\n  smart: {attemptTimeoutMs: 2000, targets: [{provider: openai, model: gpt-4o}, {provider: anthropic, model: claude-sonnet-4-5}, {provider: local, model: llama}]}\n";

/// Every YAML document of one rendered file.
fn docs(files: &[(String, String)], name: &str) -> Vec<Value> {
    let text = &files.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1;
    text.split("\n---\n").map(|d| serde_yaml_ng::from_str(d).unwrap()).collect()
}

/// A static cluster named like the platform's own cluster to the sidecar.
fn stub_sidecar(name: &str) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 10001}}}}]}]},
    })
}

/// The plain bootstrap of [`POLICY`] with its listener's HTTP filters,
/// routes and clusters taken from a platform's manifests instead.
fn bootstrap_with(http_filter: Option<Value>, clusters: Vec<Value>, actions: &[(String, Value)]) -> Value {
    let policy = parse_policy(POLICY).unwrap();
    let mut v = render(
        &policy,
        &RenderOptions { wasm_path: &paths().unwrap().wasm, access_log: "/dev/null", plugin_config: None },
    )
    .unwrap();
    let hcm = &mut v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    if let Some(f) = http_filter {
        hcm["http_filters"][1] = f;
    }
    let routes = hcm["route_config"]["virtual_hosts"][0]["routes"].as_array_mut().unwrap();
    for (header, action) in actions {
        let route = routes.iter_mut().find(|r| r["match"]["headers"][0]["string_match"]["exact"] == *header).unwrap();
        route["route"] = action.clone();
    }
    let all = v["static_resources"]["clusters"].as_array_mut().unwrap();
    // Keep the sidecar's and the providers' clusters; the fallback ones come from the manifests.
    all.retain(|c| {
        let name = c["name"].as_str().unwrap();
        !name.starts_with("target_") && !name.starts_with("alias_")
    });
    all.extend(clusters);
    v
}

async fn validates(what: &str, config: &Value) {
    let file = std::env::temp_dir().join(format!("tollgate-mesh-{what}-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    let out = Command::new(&paths().unwrap().envoy)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what}: Envoy refused the manifests' configuration:\n{text}");
    let _ = std::fs::remove_file(Path::new(&file));
}

#[tokio::test]
async fn istio_envoy_filter_patches_load_in_envoy() {
    let policy = parse_policy(POLICY).unwrap();
    let files = render_istio(&policy, &K8sOptions::default()).unwrap();
    let ext_proc = docs(&files, "30-envoyfilter.yaml")[0]["spec"]["configPatches"][0]["patch"]["value"].clone();
    let patches = docs(&files, "50-fallback.yaml")[0]["spec"]["configPatches"].as_array().unwrap().clone();
    let mut clusters: Vec<Value> =
        patches.iter().filter(|p| p["applyTo"] == "CLUSTER").map(|p| p["patch"]["value"].clone()).collect();
    assert_eq!(clusters.len(), 6, "three targets and three aggregate clusters");
    let sidecar = ext_proc["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"].as_str().unwrap().to_string();
    assert!(sidecar.starts_with("outbound|"), "{sidecar}");
    clusters.push(stub_sidecar(&sidecar));
    // The routes as Istio leaves them after the merge: its own action
    // (destination, timeout, retries) with the patch's fields over it.
    let vs = docs(&files, "40-providers.yaml").into_iter().find(|d| d["kind"] == "VirtualService").unwrap();
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
        action["retry_policy"]["retry_on"] = json!("5xx,reset,connect-failure,retriable-status-codes");
        action["retry_policy"]["retriable_status_codes"] = json!([429]);
        action["retry_policy"]["per_try_timeout"] = retries["perTryTimeout"].clone();
        actions.push((header, action));
    }
    assert_eq!(actions.len(), 3);
    validates("istio", &bootstrap_with(Some(ext_proc), clusters, &actions)).await;
}

#[tokio::test]
async fn envoy_gateway_patch_policy_loads_in_envoy() {
    let policy = parse_policy(POLICY).unwrap();
    let files = render_envoy_gateway(&policy, &K8sOptions::default()).unwrap();
    let patch = &docs(&files, "70-fallback.yaml")[0];
    let ops = patch["spec"]["jsonPatches"].as_array().unwrap();
    let clusters: Vec<Value> = ops
        .iter()
        .filter(|o| o["type"] == "type.googleapis.com/envoy.config.cluster.v3.Cluster")
        .map(|o| {
            let mut c = o["operation"]["value"].clone();
            // The sidecar's Service name does not resolve here.
            if c["name"] == "tollgate_sidecar" {
                c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
                    ["address"] = json!("localhost");
            }
            c
        })
        .collect();
    assert_eq!(clusters.len(), 7, "the sidecar, three targets and three aggregate clusters");
    let route = &docs(&files, "50-httproute.yaml")[0];
    let rules = route["spec"]["rules"].as_array().unwrap();
    let mut actions = Vec::new();
    for o in ops.iter().filter(|o| o["operation"]["op"] == "replace") {
        let path = o["operation"]["jsonPath"].as_str().unwrap();
        let rule: usize = path.split("/rule/").nth(1).unwrap().split('/').next().unwrap().parse().unwrap();
        let header = rules[rule]["matches"][0]["headers"][0]["value"].as_str().unwrap().to_string();
        actions.push((header, o["operation"]["value"].clone()));
    }
    assert_eq!(actions.len(), 3);
    // Envoy Gateway's sidecar cluster replaces the bootstrap's of the same name.
    let mut config = bootstrap_with(None, clusters, &actions);
    let all = config["static_resources"]["clusters"].as_array_mut().unwrap();
    let first = all.iter().position(|c| c["name"] == "tollgate_sidecar").unwrap();
    all.remove(first);
    validates("envoy-gateway", &config).await;
}
