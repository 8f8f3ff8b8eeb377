//! Kubernetes manifests for Istio and Envoy Gateway, rendered from the one
//! policy file (`tollgate render istio|envoy-gateway`).
//!
//! Both flavours get the same filter configuration and ext_proc settings as
//! plain Envoy ([`crate::cli::envoy::plugin_config`], [`crate::cli::envoy::ext_proc_filter`]):
//!
//! - **Istio**: a `WasmPlugin` loading the filter from an OCI image onto the
//!   ingress gateway (by selector), an `EnvoyFilter` inserting ext_proc right
//!   after it on that gateway only, and the routes to the providers
//!   (`ServiceEntry`, `DestinationRule` for TLS, a `VirtualService` on the
//!   gateway keyed by the sidecar's `x-tollgate-provider` header);
//! - **Envoy Gateway**: an `EnvoyExtensionPolicy` (wasm + extProc) attached to
//!   an `HTTPRoute` or a `Gateway`, an `EnvoyProxy` that orders the wasm
//!   filter before ext_proc, a `Backend` per provider and the `HTTPRoute`;
//! - both: the sidecar's `Namespace`, `ConfigMap` (the policy, and the
//!   OpenAPI documents of MCP REST servers), `Deployment` and `Service`;
//!   provider keys and MCP server credentials come from a `Secret` the
//!   operator creates (its name and keys are in the Deployment and in the
//!   file's header);
//! - MCP virtual servers (`mcp.virtualServers`): plain Envoy's routes
//!   ([`crate::cli::envoy::mcp_routes`]), `/mcp/<name>` to the sidecar's gRPC port
//!   with ext_proc off. Istio: VirtualService routes, an `EnvoyFilter` for
//!   what they cannot say (ext_proc off, the idle timeout) and a
//!   `ServiceEntry` per upstream host outside the cluster for the sidecar's
//!   egress; Envoy Gateway: an `HTTPRoute` to the sidecar's Service and its
//!   own `EnvoyExtensionPolicy` (the filter, no ext_proc). With
//!   `access.jwt`, Istio's `RequestAuthentication` puts a verified token's
//!   payload in the header the sidecar reads on those routes
//!   ([`MCP_CLAIMS_HEADER`]; a filter before the router removes it on every
//!   other route); Envoy Gateway's `SecurityPolicy` covers the MCP route too,
//!   but Envoy Gateway cannot forward the payload, so JWT callers of MCP
//!   routes are not identified there.
//!
//! Only the gateway's Envoy may talk to the sidecar (it decides identity and
//! adds provider keys), and its admin endpoints are not open:
//!
//! - **Istio**: the sidecar runs in the mesh (`sidecar.tls.mode: mesh` in the
//!   pod's policy); a `PeerAuthentication` makes its workload accept mutual
//!   TLS only, and an `AuthorizationPolicy` lets only the ingress gateway's
//!   identity (`<trust domain>/ns/<ns>/sa/<service account>`) reach its gRPC
//!   port, and nobody reach its admin port but for `/healthz` and `/readyz`;
//!   the gateway's Envoy strips client-sent `x-tollgate-*` routing headers
//!   and normalises paths as plain Envoy does;
//! - **Envoy Gateway**: the sidecar keeps its own mutual TLS: its certificate
//!   and the authority in a `Secret`, Envoy's client certificate in another
//!   (referenced by the `EnvoyProxy`), and a `BackendTLSPolicy` that makes
//!   Envoy verify the sidecar's name; a `ClientTrafficPolicy` strips the
//!   routing headers and keeps escaped slashes;
//! - both: a `NetworkPolicy` admits the gRPC port from the gateway's pods
//!   only and the admin port from the sidecar's namespace only; the admin
//!   endpoints need the token of the optional `Secret` `<name>-admin`.
//!
//! Output: `(file name, YAML)` pairs sorted by name; the names carry a
//! numeric prefix so `kubectl apply -f DIR/` creates the namespace first.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};
use tollgate_core::policy::{envoy_duration, BaseUrl, FailMode, Policy, SidecarTlsMode};
use tollgate_core::{ApiFamily, ApiKind};

use crate::cli::envoy::{
    ext_proc_filter, fallback, is_ip, plugin_config, strip_gateway_headers, unrouted_may_pass, Fallback, FallbackRoute,
    SidecarRef, Unrouted, GATEWAY_REQUEST_HEADERS, MCP_CLAIMS_HEADER, MCP_IDLE_MS,
};
use crate::extproc::{METADATA_NAMESPACE, PROVIDER_HEADER};
use crate::identity::JWT_PAYLOAD_KEY;

/// Where the sidecar mounts the policy (from the ConfigMap).
pub const POLICY_DIR: &str = "/etc/tollgate/policy";
/// The policy file's name inside the ConfigMap and the mount.
pub const POLICY_FILE: &str = "policy.json";
/// Where provider key files are mounted (from the Secret).
pub const KEYS_DIR: &str = "/etc/tollgate/keys";
/// Where the virtual-key store is mounted (from its own Secret).
pub const ACCESS_DIR: &str = "/etc/tollgate/access";
/// Writable state of the sidecar (audit log, embedded stores).
pub const DATA_DIR: &str = "/var/lib/tollgate";
/// Where the sidecar's certificate and the authority are mounted (Envoy
/// Gateway; from the Secret `<name>-sidecar-tls`).
pub const TLS_DIR: &str = "/etc/tollgate/tls";
/// The key of the admin token in the optional Secret `<name>-admin`.
pub const ADMIN_TOKEN_KEY: &str = "token";
/// The sidecar's user and group in its pod.
const SIDECAR_UID: u32 = 65532;

/// What `kind` an Envoy Gateway policy attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// Every route of the Gateway.
    Gateway,
    /// One HTTPRoute (by default the one rendered here, so only AI traffic
    /// pays for the filter and the sidecar).
    HttpRoute,
}

impl TargetKind {
    fn as_str(self) -> &'static str {
        match self {
            TargetKind::Gateway => "Gateway",
            TargetKind::HttpRoute => "HTTPRoute",
        }
    }
}

/// Inputs besides the policy.
#[derive(Debug, Clone)]
pub struct K8sOptions {
    /// Prefix of every resource name and the sidecar's app label.
    pub name: String,
    /// Namespace of the sidecar (Deployment, Service, ConfigMap, Secret).
    pub namespace: String,
    /// Namespace of the gateway-attached resources. Istio: the ingress
    /// gateway's namespace (default `istio-system`); Envoy Gateway: the
    /// Gateway's and the HTTPRoute's (default `default`).
    pub gateway_namespace: Option<String>,
    /// OCI image of the filter (`oci://REGISTRY/tollgate-filter:VERSION`).
    pub image: String,
    /// Container image of the sidecar (`tollgate serve`).
    pub sidecar_image: String,
    /// Istio: labels selecting the ingress gateway's pods.
    pub gateway_selector: BTreeMap<String, String>,
    /// Istio: the `networking.istio.io` Gateway (`namespace/name`) the
    /// provider routes bind to; `None` renders one named after [`Self::name`].
    pub istio_gateway: Option<String>,
    /// Hosts the routes answer (Istio Gateway/VirtualService, HTTPRoute hostnames).
    pub hosts: Vec<String>,
    /// Envoy Gateway: the Gateway the HTTPRoute attaches to.
    pub gateway_name: String,
    /// Envoy Gateway: the Gateway's listener the HTTPRoute is served on
    /// (its route configuration is patched for aliases with several targets).
    pub listener: String,
    /// Envoy Gateway: what the EnvoyExtensionPolicy targets, and its name
    /// (`None`: the Gateway, or the HTTPRoute rendered here).
    pub target_kind: TargetKind,
    pub target_name: Option<String>,
    /// Sidecar replicas (`None`: 1 with embedded stores, 2 with Redis).
    pub replicas: Option<u32>,
    /// Secret holding the provider keys (created by the operator).
    pub keys_secret: String,
    /// Istio: the ingress gateway's service account. With the gateway's
    /// namespace and [`Self::trust_domain`] it names the only identity the
    /// sidecar's gRPC port answers.
    pub gateway_service_account: String,
    /// Istio: the mesh's trust domain.
    pub trust_domain: String,
    /// NetworkPolicy: the namespace the gateway's Envoy pods run in (`None`:
    /// Istio, the gateway namespace; Envoy Gateway, `envoy-gateway-system`,
    /// where it runs the proxies of every Gateway).
    pub gateway_pods_namespace: Option<String>,
    /// NetworkPolicy: labels of the gateway's Envoy pods (`None`: Istio,
    /// [`Self::gateway_selector`]; Envoy Gateway, its owning-gateway labels
    /// of [`Self::gateway_name`]).
    pub gateway_pods_selector: Option<BTreeMap<String, String>>,
    /// Envoy Gateway: the directory of the certificates Envoy and the sidecar
    /// authenticate each other with (`None`: the policy's `sidecar.tls.dir`);
    /// made when absent, read when there, so rendering again gives the same
    /// manifests.
    pub tls_dir: Option<PathBuf>,
}

impl Default for K8sOptions {
    fn default() -> Self {
        let version = env!("CARGO_PKG_VERSION");
        K8sOptions {
            name: "tollgate".into(),
            namespace: "tollgate".into(),
            gateway_namespace: None,
            image: format!("oci://REGISTRY/tollgate-filter:{version}"),
            sidecar_image: format!("REGISTRY/tollgate:{version}"),
            gateway_selector: [("istio".to_string(), "ingressgateway".to_string())].into_iter().collect(),
            istio_gateway: None,
            hosts: vec!["*".into()],
            gateway_name: "eg".into(),
            listener: "http".into(),
            target_kind: TargetKind::HttpRoute,
            target_name: None,
            replicas: None,
            keys_secret: "tollgate-provider-keys".into(),
            gateway_service_account: "istio-ingressgateway".into(),
            trust_domain: "cluster.local".into(),
            gateway_pods_namespace: None,
            gateway_pods_selector: None,
            tls_dir: None,
        }
    }
}

/// The Kubernetes flavour a rendering is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    Istio,
    EnvoyGateway,
}

impl Flavour {
    fn as_str(self) -> &'static str {
        match self {
            Flavour::Istio => "istio",
            Flavour::EnvoyGateway => "envoy-gateway",
        }
    }
}

/// Where the gateway's Envoy pods run and their labels (for the NetworkPolicy).
struct GatewayPods {
    namespace: String,
    labels: BTreeMap<String, String>,
}

fn gateway_pods(opts: &K8sOptions, flavour: Flavour, gw_ns: &str) -> GatewayPods {
    let namespace = opts.gateway_pods_namespace.clone().unwrap_or_else(|| match flavour {
        Flavour::Istio => gw_ns.to_string(),
        Flavour::EnvoyGateway => "envoy-gateway-system".into(),
    });
    let labels = opts.gateway_pods_selector.clone().unwrap_or_else(|| match flavour {
        Flavour::Istio => opts.gateway_selector.clone(),
        Flavour::EnvoyGateway => [
            ("gateway.envoyproxy.io/owning-gateway-name".to_string(), opts.gateway_name.clone()),
            ("gateway.envoyproxy.io/owning-gateway-namespace".to_string(), gw_ns.to_string()),
        ]
        .into_iter()
        .collect(),
    });
    GatewayPods { namespace, labels }
}

/// The labels of the sidecar's pods.
fn sidecar_labels(opts: &K8sOptions) -> Value {
    json!({"app.kubernetes.io/name": opts.name})
}

/// The NetworkPolicy of the sidecar's pods: gRPC from the gateway's Envoy
/// pods only, the admin port from the sidecar's own namespace only (the
/// kubelet's probes come from the node, which NetworkPolicy always admits).
fn network_policy(policy: &Policy, opts: &K8sOptions, pods: &GatewayPods) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(&format!("{}-sidecar", opts.name), &opts.namespace),
        "spec": {
            "podSelector": {"matchLabels": sidecar_labels(opts)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": pods.namespace}},
                        "podSelector": {"matchLabels": pods.labels},
                    }],
                    "ports": [{"protocol": "TCP", "port": policy.sidecar.grpc_port}],
                },
                {
                    "from": [{"podSelector": {}}],
                    "ports": [{"protocol": "TCP", "port": policy.sidecar.admin_port}],
                },
            ],
        },
    })
}

/// The identity of the Istio ingress gateway (its SPIFFE principal).
fn istio_gateway_principal(opts: &K8sOptions, gw_ns: &str) -> String {
    format!("{}/ns/{gw_ns}/sa/{}", opts.trust_domain, opts.gateway_service_account)
}

/// Istio: the sidecar's workload takes mutual TLS only, its gRPC port
/// answers the ingress gateway's identity only, and its admin port nobody
/// but for the health paths (the kubelet's probes, which Istio sends
/// through the pod's own agent; they carry no identity).
fn istio_sidecar_security(policy: &Policy, opts: &K8sOptions, gw_ns: &str) -> Vec<Value> {
    let selector = json!({"matchLabels": sidecar_labels(opts)});
    let peer = json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": meta(&format!("{}-sidecar", opts.name), &opts.namespace),
        "spec": {"selector": selector, "mtls": {"mode": "STRICT"}},
    });
    let authz = json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": meta(&format!("{}-sidecar", opts.name), &opts.namespace),
        "spec": {
            "selector": selector,
            "action": "ALLOW",
            "rules": [
                {
                    "from": [{"source": {"principals": [istio_gateway_principal(opts, gw_ns)]}}],
                    "to": [{"operation": {"ports": [policy.sidecar.grpc_port.to_string()]}}],
                },
                {
                    "to": [{"operation": {
                        "ports": [policy.sidecar.admin_port.to_string()],
                        "methods": ["GET"],
                        "paths": ["/healthz", "/readyz"],
                    }}],
                },
            ],
        },
    });
    vec![peer, authz]
}

/// The names of the TLS objects Envoy Gateway's flavour renders.
fn sidecar_tls_secret(opts: &K8sOptions) -> String {
    format!("{}-sidecar-tls", opts.name)
}
fn envoy_client_secret(opts: &K8sOptions) -> String {
    format!("{}-envoy-client", opts.name)
}
fn sidecar_ca_config_map(opts: &K8sOptions) -> String {
    format!("{}-sidecar-ca", opts.name)
}

/// The certificates of an Envoy Gateway rendering: read from the
/// directory (made there first when it has none).
fn read_certificates(policy: &Policy, opts: &K8sOptions) -> anyhow::Result<crate::tls::Bundle> {
    let dir = opts.tls_dir.clone().unwrap_or_else(|| PathBuf::from(&policy.sidecar.tls.dir));
    crate::tls::ensure(&dir, false)?;
    crate::tls::Bundle::read(&dir)
}

/// Envoy Gateway: the sidecar's certificate and the authority (mounted at
/// [`TLS_DIR`]), Envoy's client certificate (in the EnvoyProxy's namespace),
/// the authority for Envoy and the BackendTLSPolicy that has Envoy speak TLS
/// to the sidecar and check its name.
fn eg_tls_objects(opts: &K8sOptions, gw_ns: &str, certs: &crate::tls::Bundle) -> Vec<Value> {
    use crate::tls::{CA_FILE, SIDECAR_CERT, SIDECAR_KEY, SIDECAR_NAME};
    let ns = &opts.namespace;
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta(&sidecar_tls_secret(opts), ns),
            "type": "Opaque",
            "stringData": {CA_FILE: certs.ca, SIDECAR_CERT: certs.sidecar_cert, SIDECAR_KEY: certs.sidecar_key},
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta(&envoy_client_secret(opts), gw_ns),
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": certs.envoy_cert, "tls.key": certs.envoy_key},
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(&sidecar_ca_config_map(opts), ns),
            "data": {"ca.crt": certs.ca},
        }),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "BackendTLSPolicy",
            "metadata": meta(&format!("{}-sidecar", opts.name), ns),
            "spec": {
                "targetRefs": [{"group": "", "kind": "Service", "name": opts.name, "sectionName": "grpc"}],
                "validation": {
                    "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": sidecar_ca_config_map(opts)}],
                    "hostname": SIDECAR_NAME,
                },
            },
        }),
    ]
}

/// Istio: the HCM settings and the header filter plain Envoy has
/// ([`crate::cli::envoy`]), patched into the ingress gateway: one spelling of
/// every path, escaped slashes kept; the gateway's own request headers
/// removed from clients before any filter reads them.
fn istio_edge_patches(policy: &Policy) -> Vec<Value> {
    let hcm = json!({"filter": {"name": "envoy.filters.network.http_connection_manager"}});
    vec![
        json!({
            "applyTo": "NETWORK_FILTER",
            "match": {"context": "GATEWAY", "listener": {"filterChain": hcm}},
            "patch": {"operation": "MERGE", "value": {"typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "normalize_path": true,
                "merge_slashes": true,
                "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
                // A client slower than this to send its request gets 408.
                "request_timeout": envoy_duration(policy.timeouts.request_ms),
            }}},
        }),
        json!({
            "applyTo": "HTTP_FILTER",
            "match": {"context": "GATEWAY", "listener": {"filterChain": hcm}},
            "patch": {"operation": "INSERT_FIRST", "value": strip_gateway_headers()},
        }),
    ]
}

/// The cluster Envoy Gateway makes for the EnvoyExtensionPolicy's ext_proc
/// (with the BackendTLSPolicy's TLS and the EnvoyProxy's client
/// certificate): the upstream ext_proc of fallback reaches the sidecar
/// through it too.
pub fn eg_ext_proc_cluster(opts: &K8sOptions, gw_ns: &str) -> String {
    format!("envoyextensionpolicy/{gw_ns}/{}/extproc/0", opts.name)
}

type Files = Vec<(String, String)>;

/// The manifests for an Istio ingress gateway.
pub fn render_istio(policy: &Policy, opts: &K8sOptions) -> anyhow::Result<Files> {
    check_renderable(policy)?;
    let gw_ns = opts.gateway_namespace.clone().unwrap_or_else(|| "istio-system".into());
    let selector = json!({"matchLabels": opts.gateway_selector});
    let wasm_plugin = json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": meta(&opts.name, &gw_ns),
        "spec": {
            "selector": selector,
            "url": opts.image,
            "imagePullPolicy": "IfNotPresent",
            // After Istio's authentication (a verified JWT is there), before
            // its authorization filters.
            "phase": "AUTHZ",
            "failStrategy": match policy.fail_mode.filter { FailMode::Open => "FAIL_OPEN", FailMode::Closed => "FAIL_CLOSE" },
            "pluginConfig": plugin_config_value(policy)?,
            "match": [{"mode": "SERVER"}],
        },
    });
    // Istio names a WasmPlugin's HTTP filter `<namespace>.<name>`.
    let wasm_filter_name = format!("{gw_ns}.{}", opts.name);
    // Istio's cluster for the sidecar's Service; its name is no authority.
    let host = sidecar_host(opts);
    let cluster = format!("outbound|{}||{host}", policy.sidecar.grpc_port);
    let sidecar = SidecarRef { cluster: &cluster, authority: Some(&host) };
    let envoy_filter = json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": meta(&format!("{}-ext-proc", opts.name), &gw_ns),
        "spec": {
            "workloadSelector": {"labels": opts.gateway_selector},
            "configPatches": std::iter::once(json!({
                "applyTo": "HTTP_FILTER",
                "match": {
                    "context": "GATEWAY",
                    "listener": {"filterChain": {"filter": {
                        "name": "envoy.filters.network.http_connection_manager",
                        "subFilter": {"name": wasm_filter_name},
                    }}},
                },
                "patch": {"operation": "INSERT_AFTER", "value": ext_proc_filter(policy, sidecar)},
            }))
            .chain(istio_edge_patches(policy))
            .chain(istio_provider_timeouts(policy, opts))
            .collect::<Vec<_>>(),
        },
    });

    let gateway_ref = match &opts.istio_gateway {
        Some(g) => g.clone(),
        None => format!("{gw_ns}/{}", opts.name),
    };
    let mut routing = Vec::new();
    if opts.istio_gateway.is_none() {
        routing.push(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": meta(&opts.name, &gw_ns),
            "spec": {
                "selector": opts.gateway_selector,
                "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": opts.hosts}],
            },
        }));
    }
    // MCP virtual servers first, so that no provider route takes their paths.
    let mcp = mcp_routes(policy, &cluster);
    let mut http_routes: Vec<Value> = mcp
        .iter()
        .map(|(slug, route)| {
            json!({
                "name": mcp_route_name(opts, slug),
                "match": [{"uri": {"exact": route["match"]["path"]}}],
                "route": [{"destination": {"host": host, "port": {"number": policy.sidecar.grpc_port}}}],
            })
        })
        .collect();
    let default_provider = policy.default_provider().ok_or_else(|| anyhow::anyhow!("the policy has no provider"))?;
    for (name, provider) in &policy.providers {
        let url = base_url(name, &provider.base_url)?;
        let host = istio_host(name, &url);
        let mut entry = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": meta(&format!("{}-provider-{name}", opts.name), &gw_ns),
            "spec": {
                "hosts": [host],
                "location": "MESH_EXTERNAL",
                // The gateway speaks plain HTTP to this port; a TLS provider's
                // DestinationRule originates TLS.
                "ports": [{"number": url.port, "name": "http", "protocol": "HTTP"}],
                "resolution": "DNS",
            },
        });
        if is_ip(&url.host) {
            entry["spec"]["resolution"] = json!("STATIC");
            entry["spec"]["endpoints"] = json!([{"address": url.host}]);
        }
        routing.push(entry);
        if url.tls {
            routing.push(json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": meta(&format!("{}-provider-{name}", opts.name), &gw_ns),
                "spec": {
                    "host": host,
                    "trafficPolicy": {"portLevelSettings": [{
                        "port": {"number": url.port},
                        "tls": {"mode": "SIMPLE", "sni": url.host},
                    }]},
                },
            }));
        }
        http_routes.push(istio_route(
            policy,
            &istio_provider_route_name(opts, name),
            Some(json!({"headers": {PROVIDER_HEADER: {"exact": name}}, "uri": {"prefix": "/"}})),
            &host,
            &url,
        ));
    }
    let fallback = fallback(policy, sidecar, &cluster_prefix(opts))?;
    for route in &fallback.routes {
        http_routes.push(istio_fallback_route(policy, opts, route)?);
    }
    // What the sidecar did not route: see `istio_unrouted_routes`.
    let url = base_url(default_provider, &policy.providers[default_provider].base_url)?;
    http_routes.extend(istio_unrouted_routes(policy, opts, &istio_host(default_provider, &url), &url));
    routing.push(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": meta(&opts.name, &gw_ns),
        "spec": {"hosts": opts.hosts, "gateways": [gateway_ref], "http": http_routes},
    }));

    let mut files = common_files(policy, opts, Flavour::Istio, &gw_ns)?;
    files.push(("20-wasmplugin.yaml".into(), yaml_docs("The filter on the ingress gateway.", &[wasm_plugin])?));
    files.push((
        "30-envoyfilter.yaml".into(),
        yaml_docs(
            &format!(
                "ext_proc to the sidecar, right after the filter, on the ingress gateway only; the gateway's own request\nheaders ({}) removed from clients first; paths normalised (slashes merged,\nescaped slashes kept as sent).",
                GATEWAY_REQUEST_HEADERS.join(", ")
            ),
            &[envoy_filter],
        )?,
    ));
    files.push(("40-providers.yaml".into(), yaml_docs("Routes from the ingress gateway to the providers.", &routing)?));
    if !fallback.routes.is_empty() {
        files.push((
            "50-fallback.yaml".into(),
            yaml_docs(
                "Aliases with several targets: a cluster per target and aggregate clusters whose upstream ext_proc\n(the sidecar) shapes each attempt; the VirtualService's fallback routes are pointed at them.\nEnvoy's retries walk the targets; `x-envoy-attempt-count` (added on this gateway) tells the sidecar which one.",
                &[istio_fallback_filter(opts, &gw_ns, &fallback)],
            )?,
        ));
    }
    // With JWTs, the verified payload goes to the sidecar on MCP routes in a
    // header (see `istio_mcp_filter`).
    let mcp_claims = policy.access.jwt.is_some() && !mcp.is_empty();
    if !mcp.is_empty() {
        let mut docs = vec![istio_mcp_filter(opts, &gw_ns, &mcp, mcp_claims, &wasm_filter_name)];
        docs.extend(istio_mcp_egress(policy, opts)?);
        let mut what = String::from(
            "MCP virtual servers: the VirtualService sends `/mcp/<name>` to the sidecar (HTTP/2, the mesh's mutual TLS),\nwhich serves the MCP gateway itself; this EnvoyFilter skips ext_proc and the filter on those routes (the\nsidecar identifies the caller and inspects the traffic) and sets no route timeout but an idle one, as plain\nEnvoy does. The ServiceEntries let the\nsidecar reach the upstream MCP servers from its namespace when the mesh admits registered hosts only\n(`outboundTrafficPolicy: REGISTRY_ONLY`); in-cluster names are in the registry already.",
        );
        if mcp_claims {
            what.push_str(&format!(
                "\nThe RequestAuthentication (`60-jwt.yaml`) puts a verified token's payload in `{MCP_CLAIMS_HEADER}`\non every request; the filter this EnvoyFilter inserts before the router removes it on every route of the\ngateway but these, so that it reaches the sidecar alone."
            ));
        }
        files.push(("45-mcp.yaml".into(), yaml_docs(&what, &docs)?));
    }
    if let Some(jwt) = &policy.access.jwt {
        let mut rule = json!({
            "issuer": jwt.issuer,
            "audiences": jwt.audiences,
            "jwks": read_jwks(jwt)?,
            "forwardOriginalToken": false,
        });
        let mut what = String::from(
            "access.jwt: the gateway verifies bearer tokens (a request without one goes on to the sidecar,\nwhich asks for credentials as the policy says; a bad token gets Istio's 401). The verified payload\nreaches the sidecar in Envoy's `envoy.filters.http.jwt_authn` metadata",
        );
        if mcp_claims {
            // MCP routes reach the sidecar as an upstream, without ext_proc's
            // metadata: the payload travels in a header there. The gateway's
            // first filter removes a client's copy before Envoy's JWT filter
            // runs; `45-mcp.yaml` removes Envoy's on every other route.
            rule["outputPayloadToHeader"] = json!(MCP_CLAIMS_HEADER);
            what.push_str(&format!(
                ", and on the MCP routes\nin `{MCP_CLAIMS_HEADER}` (removed from clients first, and by `45-mcp.yaml` on every other route)."
            ));
        } else {
            what.push('.');
        }
        let authn = json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "RequestAuthentication",
            "metadata": meta(&opts.name, &gw_ns),
            "spec": {
                "selector": {"matchLabels": opts.gateway_selector},
                "jwtRules": [rule],
            },
        });
        files.push(("60-jwt.yaml".into(), yaml_docs(&what, &[authn])?));
    }
    files.sort();
    Ok(files)
}

/// The MCP routes as plain Envoy has them ([`crate::cli::envoy::mcp_routes`]: an
/// exact path to the sidecar, no route timeout but an idle one, ext_proc
/// off), each with a name made from its path (`/mcp/support`: `mcp-support`).
fn mcp_routes(policy: &Policy, sidecar_cluster: &str) -> Vec<(String, Value)> {
    crate::cli::envoy::mcp_routes(policy, sidecar_cluster)
        .into_iter()
        .map(|route| {
            let path = route["match"]["path"].as_str().unwrap_or_default();
            let mut slug = String::new();
            for c in path.chars() {
                if c.is_ascii_alphanumeric() {
                    slug.push(c.to_ascii_lowercase());
                } else if !slug.is_empty() && !slug.ends_with('-') {
                    slug.push('-');
                }
            }
            (slug.trim_end_matches('-').to_string(), route)
        })
        .collect()
}

/// The name of an MCP route (Istio: the VirtualService route's, which its
/// Envoy route takes): `tollgate-mcp-<virtual server>`.
fn mcp_route_name(opts: &K8sOptions, slug: &str) -> String {
    format!("{}-{slug}", opts.name)
}

/// The name of the filter that removes [`MCP_CLAIMS_HEADER`] on Istio's
/// gateway, just before the router, on every route but the MCP ones.
pub const ISTIO_CLAIMS_FILTER: &str = "tollgate.strip_jwt_claims";

/// Envoy's `header_mutation` filter removing the JWT payload that Istio's
/// `outputPayloadToHeader` adds to every request with a verified token.
fn strip_jwt_claims() -> Value {
    json!({
        "name": ISTIO_CLAIMS_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"remove": MCP_CLAIMS_HEADER}]},
        },
    })
}

/// Istio: the EnvoyFilter that gives each MCP route plain Envoy's settings
/// Istio's VirtualService cannot express (ext_proc and the WasmPlugin's
/// filter, `wasm_filter`, off on the route; its idle timeout), matched by
/// the route's name.
///
/// `claims` (the policy has `access.jwt`): a `RequestAuthentication` has no
/// paths, so Istio's JWT filter adds the verified payload
/// ([`MCP_CLAIMS_HEADER`]) to every request with a token. A filter just
/// before the router removes it, on every route of the gateway (other
/// VirtualServices' too) but the MCP ones, where it is turned off: the
/// payload reaches the sidecar, never a provider.
fn istio_mcp_filter(opts: &K8sOptions, gw_ns: &str, mcp: &[(String, Value)], claims: bool, wasm_filter: &str) -> Value {
    let mut patches: Vec<Value> = mcp
        .iter()
        .map(|(slug, route)| {
            let mut per_filter = route["typed_per_filter_config"].clone();
            // The sidecar inspects MCP traffic itself: the filter steps aside.
            per_filter[wasm_filter] =
                json!({"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true});
            if claims {
                per_filter[ISTIO_CLAIMS_FILTER] =
                    json!({"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true});
            }
            json!({
                "applyTo": "HTTP_ROUTE",
                "match": {"context": "GATEWAY", "routeConfiguration": {"vhost": {"route": {"name": mcp_route_name(opts, slug)}}}},
                "patch": {"operation": "MERGE", "value": {
                    "route": {"timeout": route["route"]["timeout"], "idle_timeout": route["route"]["idle_timeout"]},
                    "typed_per_filter_config": per_filter,
                }},
            })
        })
        .collect();
    if claims {
        patches.push(json!({
            "applyTo": "HTTP_FILTER",
            "match": {
                "context": "GATEWAY",
                "listener": {"filterChain": {"filter": {
                    "name": "envoy.filters.network.http_connection_manager",
                    "subFilter": {"name": "envoy.filters.http.router"},
                }}},
            },
            "patch": {"operation": "INSERT_BEFORE", "value": strip_jwt_claims()},
        }));
    }
    json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": meta(&format!("{}-mcp", opts.name), gw_ns),
        "spec": {"workloadSelector": {"labels": opts.gateway_selector}, "configPatches": patches},
    })
}

/// The upstream MCP servers' addresses (the MCP endpoint, or the REST
/// API's base), by server name.
fn mcp_upstreams(policy: &Policy) -> anyhow::Result<Vec<(&str, BaseUrl)>> {
    let mut out = Vec::new();
    for (name, server) in &policy.mcp.servers {
        let field = if server.url.is_some() { "url" } else { "baseUrl" };
        let raw = server.endpoint().ok_or_else(|| anyhow::anyhow!("mcp.servers.{name}: no url or baseUrl"))?;
        let url = BaseUrl::parse(raw).map_err(|m| anyhow::anyhow!("mcp.servers.{name}.{field}: {m}"))?;
        out.push((name.as_str(), url));
    }
    Ok(out)
}

/// A name the cluster resolves itself (a Service's short or `.svc` name),
/// which Istio's registry has without a ServiceEntry.
fn in_cluster(host: &str) -> bool {
    !is_ip(host) && (!host.contains('.') || host.ends_with(".svc") || host.contains(".svc."))
}

/// Istio: a ServiceEntry per upstream MCP host outside the cluster, in the
/// sidecar's namespace and for it alone (`exportTo: .`), so that a mesh
/// admitting registered hosts only lets the sidecar reach it. The sidecar
/// speaks TLS itself to an `https` server (Istio passes it through by SNI).
fn istio_mcp_egress(policy: &Policy, opts: &K8sOptions) -> anyhow::Result<Vec<Value>> {
    // One entry per host (Istio takes one ServiceEntry per host), named
    // after its first server, with every port the servers use.
    let mut hosts: BTreeMap<String, (&str, Vec<Value>)> = BTreeMap::new();
    for (server, url) in mcp_upstreams(policy)? {
        if in_cluster(&url.host) {
            continue;
        }
        let (name, protocol) = if url.tls { ("tls", "TLS") } else { ("http", "HTTP") };
        let port = json!({"number": url.port, "name": format!("{name}-{}", url.port), "protocol": protocol});
        let (_, ports) = hosts.entry(url.host.clone()).or_insert((server, Vec::new()));
        if ports.iter().all(|p| p["number"] != url.port) {
            ports.push(port);
        }
    }
    Ok(hosts
        .into_iter()
        .map(|(host, (server, ports))| {
            let mut entry = json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "ServiceEntry",
                "metadata": meta(&format!("{}-mcp-{server}", opts.name), &opts.namespace),
                "spec": {
                    "hosts": [host],
                    "exportTo": ["."],
                    "location": "MESH_EXTERNAL",
                    "ports": ports,
                    "resolution": "DNS",
                },
            });
            if is_ip(&host) {
                // ServiceEntry hosts are names: a made-up one, and the address.
                entry["spec"]["hosts"] = json!([format!("{server}.mcp.tollgate.internal")]);
                entry["spec"]["addresses"] = json!([host]);
                entry["spec"]["resolution"] = json!("STATIC");
                entry["spec"]["endpoints"] = json!([{"address": host}]);
            }
            entry
        })
        .collect())
}

/// The route name Istio gives the Envoy route of an alias variant (a
/// VirtualService route's `name` becomes its Envoy route's name).
fn istio_provider_route_name(opts: &K8sOptions, provider: &str) -> String {
    format!("{}-provider-{provider}", opts.name)
}

fn istio_unrouted_route_name(opts: &K8sOptions) -> String {
    format!("{}-unrouted", opts.name)
}

/// The attempt and idle timeouts of the provider routes, which a
/// VirtualService cannot say without retries of its own: patched onto the
/// routes by name as plain Envoy has them ([`crate::cli::envoy`]). A
/// provider that has not begun its answer within `timeouts.attemptMs` is a
/// 504; an answer silent for `timeouts.idleMs` is ended. Istio's retry
/// policy, if the mesh has one, stays as it is.
fn istio_provider_timeouts(policy: &Policy, opts: &K8sOptions) -> Vec<Value> {
    let t = &policy.timeouts;
    let mut names: Vec<String> = policy.providers.keys().map(|p| istio_provider_route_name(opts, p)).collect();
    if unrouted_may_pass(policy) {
        names.push(istio_unrouted_route_name(opts));
    }
    names
        .into_iter()
        .map(|name| {
            json!({
                "applyTo": "HTTP_ROUTE",
                "match": {"context": "GATEWAY", "routeConfiguration": {"vhost": {"route": {"name": name}}}},
                "patch": {"operation": "MERGE", "value": {"route": {
                    "idle_timeout": envoy_duration(t.idle_ms),
                    "retry_policy": {"per_try_timeout": envoy_duration(t.attempt_ms)},
                }}},
            })
        })
        .collect()
}

fn fallback_route_name(opts: &K8sOptions, route: &FallbackRoute) -> String {
    format!("{}-fallback-{}-{}", opts.name, route.alias, route.first)
}

/// The VirtualService route of an alias variant: the sidecar's header
/// match, Envoy's retries (one per further target), and a destination
/// Istio requires but the EnvoyFilter replaces by the aggregate cluster.
fn istio_fallback_route(policy: &Policy, opts: &K8sOptions, route: &FallbackRoute) -> anyhow::Result<Value> {
    let targets = &policy.models[&route.alias].targets;
    let first = &targets[route.first].provider;
    let url = base_url(first, &policy.providers[first].base_url)?;
    let action = &route.action;
    let mut retries = json!({
        "attempts": action["retry_policy"]["num_retries"],
        "retryOn": "5xx,reset,connect-failure,retriable-status-codes,429",
    });
    if let Some(t) = action["retry_policy"]["per_try_timeout"].as_str() {
        retries["perTryTimeout"] = json!(t);
    }
    Ok(json!({
        "name": fallback_route_name(opts, route),
        "match": [{"headers": {PROVIDER_HEADER: {"exact": route.header_value}}, "uri": {"prefix": "/"}}],
        "route": [{"destination": {"host": istio_host(first, &url), "port": {"number": url.port}}}],
        "headers": {"request": {"remove": [PROVIDER_HEADER]}},
        "timeout": action["timeout"],
        "retries": retries,
    }))
}

/// The EnvoyFilter that adds the fallback clusters to the ingress gateway
/// and points each variant's route at its aggregate cluster.
fn istio_fallback_filter(opts: &K8sOptions, gw_ns: &str, fallback: &Fallback) -> Value {
    let gateway = json!({"context": "GATEWAY"});
    let mut patches: Vec<Value> = fallback
        .clusters
        .iter()
        .map(|c| json!({"applyTo": "CLUSTER", "match": gateway, "patch": {"operation": "ADD", "value": c}}))
        .collect();
    // The sidecar tells the attempts apart by Envoy's attempt count.
    patches.push(json!({
        "applyTo": "VIRTUAL_HOST",
        "match": gateway,
        "patch": {"operation": "MERGE", "value": {"include_request_attempt_count": true, "include_attempt_count_in_response": true}},
    }));
    for route in &fallback.routes {
        let r = &route.action;
        patches.push(json!({
            "applyTo": "HTTP_ROUTE",
            "match": {"context": "GATEWAY", "routeConfiguration": {"vhost": {"route": {"name": fallback_route_name(opts, route)}}}},
            // Istio's own retry policy (from the VirtualService) stays; this
            // adds the walk over priorities and the short back-off.
            "patch": {"operation": "MERGE", "value": {"route": {
                "cluster": r["cluster"],
                "idle_timeout": r["idle_timeout"],
                "retry_policy": {
                    "retry_priority": r["retry_policy"]["retry_priority"],
                    "retry_back_off": r["retry_policy"]["retry_back_off"],
                },
            }}},
        }));
    }
    json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": meta(&format!("{}-fallback", opts.name), gw_ns),
        "spec": {"workloadSelector": {"labels": opts.gateway_selector}, "configPatches": patches},
    })
}

/// The JWKS document of `access.jwt` (Istio and Envoy Gateway take it inline).
fn read_jwks(jwt: &tollgate_core::access::JwtPolicy) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(&jwt.jwks_file)
        .map_err(|e| anyhow::anyhow!("access.jwt.jwksFile {}: {e}", jwt.jwks_file))?;
    let parsed: Value =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("access.jwt.jwksFile {}: {e}", jwt.jwks_file))?;
    if !parsed["keys"].is_array() {
        anyhow::bail!("access.jwt.jwksFile {}: not a JWKS document (no `keys` list)", jwt.jwks_file);
    }
    Ok(serde_json::to_string(&parsed)?)
}

/// The manifests for Envoy Gateway.
pub fn render_envoy_gateway(policy: &Policy, opts: &K8sOptions) -> anyhow::Result<Files> {
    check_renderable(policy)?;
    let gw_ns = opts.gateway_namespace.clone().unwrap_or_else(|| "default".into());
    let certs = read_certificates(policy, opts)?;
    let target_name = match (&opts.target_name, opts.target_kind) {
        (Some(n), _) => n.clone(),
        (None, TargetKind::Gateway) => opts.gateway_name.clone(),
        (None, TargetKind::HttpRoute) => opts.name.clone(),
    };
    let timeout = duration(policy.sidecar.timeout_ms);
    let image = opts.image.strip_prefix("oci://").unwrap_or(&opts.image);
    let mut ext_proc = json!({
        "backendRefs": [{
            "group": "",
            "kind": "Service",
            "name": opts.name,
            "namespace": opts.namespace,
            "port": policy.sidecar.grpc_port,
        }],
        "failOpen": policy.fail_mode.sidecar == FailMode::Open,
        "messageTimeout": timeout,
        // The same phases as plain Envoy (crate::cli::envoy::processing_mode):
        // headers both ways, the buffered request body; the sidecar asks for
        // the response body itself (mode override) when it needs it.
        "processingMode": {"allowModeOverride": true, "request": {"body": "Buffered"}, "response": {}},
        "metadata": {"writableNamespaces": [METADATA_NAMESPACE]},
    });
    if policy.access.jwt.is_some() {
        ext_proc["metadata"]["accessibleNamespaces"] = json!([crate::identity::JWT_NAMESPACE]);
    }
    let extension_policy = json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyExtensionPolicy",
        "metadata": meta(&opts.name, &gw_ns),
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": opts.target_kind.as_str(), "name": target_name}],
            "wasm": [{
                "name": "tollgate",
                "rootID": "tollgate",
                "code": {"type": "Image", "image": {"url": image}, "pullPolicy": "IfNotPresent"},
                "config": plugin_config_value(policy)?,
                "failOpen": policy.fail_mode.filter == FailMode::Open,
            }],
            "extProc": [ext_proc],
        },
    });
    // Envoy Gateway puts ext_proc before wasm by default; Tollgate needs the
    // filter first (it masks PII before the sidecar sees the request). Envoy
    // presents its client certificate to the sidecar (and to any other
    // backend it speaks TLS to, which may ignore it).
    let envoy_proxy = json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyProxy",
        "metadata": meta(&opts.name, &gw_ns),
        "spec": {
            "filterOrder": [{"name": "envoy.filters.http.wasm", "before": "envoy.filters.http.ext_proc"}],
            "backendTLS": {"clientCertificateRef": {
                "group": "",
                "kind": "Secret",
                "name": envoy_client_secret(opts),
                "namespace": gw_ns,
            }},
        },
    });
    // Clients cannot set the gateway's own request headers (removed before
    // routing and every filter), and paths keep escaped slashes (model names
    // and ARNs with `%2F`); Envoy Gateway normalises paths and merges
    // slashes by default.
    // The whole Gateway: the HTTPRoute may be served on any of its listeners.
    let client_target = json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": opts.gateway_name});
    let client_traffic = json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "ClientTrafficPolicy",
        "metadata": meta(&opts.name, &gw_ns),
        "spec": {
            "targetRefs": [client_target],
            "headers": {"earlyRequestHeaders": {"remove": GATEWAY_REQUEST_HEADERS}},
            "path": {"escapedSlashesAction": "KeepUnchanged", "disableMergeSlashes": false},
            "timeout": {"http": {
                // A client slower than this to send its request gets 408.
                "requestReceivedTimeout": envoy_duration(policy.timeouts.request_ms),
                // Envoy Gateway has no idle timeout per route: the whole
                // gateway's is `timeouts.idleMs`, but never below the 300 s
                // plain Envoy gives MCP streams.
                "streamIdleTimeout": envoy_duration(policy.timeouts.idle_ms.max(MCP_IDLE_MS)),
            }},
        },
    });

    let default_provider = policy.default_provider().ok_or_else(|| anyhow::anyhow!("the policy has no provider"))?;
    let mut backends = Vec::new();
    let mut rules = Vec::new();
    let mut route_filters = Vec::new();
    for (name, provider) in &policy.providers {
        let url = base_url(name, &provider.base_url)?;
        let backend_name = format!("{}-provider-{name}", opts.name);
        let endpoint = if is_ip(&url.host) {
            json!({"ip": {"address": url.host, "port": url.port}})
        } else {
            json!({"fqdn": {"hostname": url.host, "port": url.port}})
        };
        let mut backend = json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "Backend",
            "metadata": meta(&backend_name, &gw_ns),
            "spec": {"endpoints": [endpoint]},
        });
        if url.tls {
            backend["spec"]["tls"] = json!({"wellKnownCACertificates": "System", "sni": url.host});
        }
        backends.push(backend);
        if !url.path.is_empty() {
            route_filters.push(eg_path_filter(&backend_name, &gw_ns, &url));
        }
        rules.push(eg_rule(policy, Some(json!(eg_provider_matches(name))), &backend_name, &url));
    }
    let eg_sidecar = eg_ext_proc_cluster(opts, &gw_ns);
    let sidecar_authority = sidecar_host(opts);
    let fallback = fallback(
        policy,
        SidecarRef { cluster: &eg_sidecar, authority: Some(&sidecar_authority) },
        &cluster_prefix(opts),
    )?;
    let mut fallback_rules = Vec::new();
    for route in &fallback.routes {
        let first = &policy.models[&route.alias].targets[route.first].provider;
        let url = base_url(first, &policy.providers[first].base_url)?;
        fallback_rules.push((rules.len(), route));
        // The backend is a placeholder Envoy Gateway requires; the patch
        // policy points the route at the alias's aggregate cluster.
        let mut rule = eg_rule(
            policy,
            Some(json!(eg_provider_matches(&route.header_value))),
            &format!("{}-provider-{first}", opts.name),
            &url,
        );
        rule["filters"] = json!([rule["filters"][0]]);
        rules.push(rule);
    }
    let url = base_url(default_provider, &policy.providers[default_provider].base_url)?;
    // What the sidecar did not route: see `eg_unrouted_rules`.
    let (unrouted, replies) =
        eg_unrouted_rules(policy, opts, &gw_ns, &format!("{}-provider-{default_provider}", opts.name), &url);
    rules.extend(unrouted);
    route_filters.extend(replies);
    let mut parent = json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": opts.gateway_name});
    if !fallback_rules.is_empty() {
        // The patch policy edits this listener's routes: attach to it alone,
        // so no listener serves the fallback rules unpatched.
        parent["sectionName"] = json!(opts.listener);
    }
    let hostnames = eg_hostnames(opts);
    let mcp = mcp_routes(policy, "");
    let mcp_docs = if mcp.is_empty() {
        Vec::new()
    } else {
        eg_mcp(policy, opts, &gw_ns, &parent, &hostnames, &mcp, &extension_policy["spec"]["wasm"])
    };
    let mut route_spec = json!({"parentRefs": [parent], "rules": rules});
    if !hostnames.is_empty() {
        route_spec["hostnames"] = json!(hostnames);
    }
    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": meta(&opts.name, &gw_ns),
        "spec": route_spec,
    });
    let provider_timeouts = eg_provider_timeouts(policy, opts, &gw_ns);

    let mut files = common_files(policy, opts, Flavour::EnvoyGateway, &gw_ns)?;
    files.push((
        "06-tls.yaml".into(),
        yaml_docs(
            &format!(
                "Mutual TLS between the gateway's Envoy and the sidecar, from the certificates in the TLS directory\n(`tollgate certs`): the sidecar's certificate and the authority (Secret `{}`, mounted at {TLS_DIR}),\nEnvoy's client certificate (Secret `{}`, in the EnvoyProxy's namespace), and the BackendTLSPolicy that has\nEnvoy check the sidecar's name against the authority (ConfigMap `{}`). This file holds private keys: keep it\nprivate, or create the Secrets from the directory with `kubectl create secret` instead.",
                sidecar_tls_secret(opts),
                envoy_client_secret(opts),
                sidecar_ca_config_map(opts)
            ),
            &eg_tls_objects(opts, &gw_ns, &certs),
        )?,
    ));
    files.push((
        "20-envoyproxy.yaml".into(),
        yaml_docs(
            &format!(
                "Filter order (wasm before ext_proc) and Envoy's client certificate to the sidecar; reference it from the Gateway:\n#   spec.infrastructure.parametersRef: {{group: gateway.envoyproxy.io, kind: EnvoyProxy, name: {}}}\nThe ClientTrafficPolicy removes the gateway's own request headers ({}) from clients and keeps\nescaped slashes in paths.",
                opts.name,
                GATEWAY_REQUEST_HEADERS.join(", ")
            ),
            &[envoy_proxy, client_traffic],
        )?,
    ));
    files.push((
        "30-envoyextensionpolicy.yaml".into(),
        yaml_docs("The filter and ext_proc to the sidecar.", &[extension_policy])?,
    ));
    files.push((
        "40-backends.yaml".into(),
        yaml_docs("The providers (Envoy Gateway's `extensionApis.enableBackend` must be on).", &backends)?,
    ));
    files.push((
        "50-httproute.yaml".into(),
        yaml_docs(
            "Routes to the providers, keyed by the sidecar's choice (x-tollgate-provider); what the sidecar did not route\nis refused (503 for an API request unless the policy fails open and needs no credential, 404 for any\nother path) by the HTTPRouteFilters' direct responses. Rules carry the API paths as regular expressions\nso that Envoy Gateway's ordering keeps the sidecar's routes first.",
            &[route, provider_timeouts].into_iter().chain(route_filters).collect::<Vec<_>>(),
        )?,
    ));
    if !mcp_docs.is_empty() {
        files.push((
            "55-mcp.yaml".into(),
            yaml_docs(
                "MCP virtual servers: `/mcp/<name>` goes to the sidecar's Service (HTTP/2 as its `grpc` port says, with the\nBackendTLSPolicy's mutual TLS), which serves the MCP gateway itself; no request timeout (Envoy Gateway then sets\nno idle timeout either; the sidecar bounds each upstream message by `mcp.timeoutMs`). The route's own\nEnvoyExtensionPolicy has the filter and no ext_proc (the sidecar identifies the caller); it takes precedence\nover one attached to the Gateway.",
                &mcp_docs,
            )?,
        ));
    }
    if !fallback_rules.is_empty() {
        files.push((
            "70-fallback.yaml".into(),
            yaml_docs(
                "Aliases with several targets: a cluster per target and aggregate clusters whose upstream ext_proc\n(the sidecar) shapes each attempt, added to the Gateway's xDS; the HTTPRoute's fallback rules are pointed\nat them. Envoy Gateway's `extensionApis.enableEnvoyPatchPolicy` must be on.",
                &[eg_fallback_patch(opts, &gw_ns, &fallback, &fallback_rules)],
            )?,
        ));
    }
    if let Some(jwt) = &policy.access.jwt {
        let spec = json!({
            // A request without a token goes on to the sidecar, which asks for
            // credentials as the policy says; a bad token gets a 401 here.
            "optional": true,
            "providers": [{
                // Envoy Gateway publishes the payload under the provider's name.
                "name": JWT_PAYLOAD_KEY,
                "issuer": jwt.issuer,
                "audiences": jwt.audiences,
                "localJWKS": {"type": "Inline", "inline": read_jwks(jwt)?},
            }],
        });
        let security = |name: &str, kind: &str, target: &str| {
            json!({
                "apiVersion": "gateway.envoyproxy.io/v1alpha1",
                "kind": "SecurityPolicy",
                "metadata": meta(name, &gw_ns),
                "spec": {
                    "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": kind, "name": target}],
                    "jwt": spec,
                },
            })
        };
        let mut docs = vec![security(&opts.name, opts.target_kind.as_str(), &target_name)];
        let mut what = String::from(
            "access.jwt: the gateway verifies bearer tokens (`localJWKS` needs Envoy Gateway 1.4 or later).",
        );
        if !mcp.is_empty() {
            // The MCP route's own, whatever the first one targets (a policy
            // on a route takes precedence over one on its Gateway). Envoy
            // Gateway forwards single claims (`claimToHeaders`), not the
            // payload: the consumer and team claims, in headers the
            // ClientTrafficPolicy removes from every client request first.
            let name = eg_mcp_route_name(opts);
            let mut doc = security(&name, "HTTPRoute", &name);
            doc["spec"]["jwt"]["providers"][0]["claimToHeaders"] = json!([
                {"header": tollgate_core::mcp::CONSUMER_CLAIM_HEADER, "claim": jwt.consumer_claim},
                {"header": tollgate_core::mcp::TEAM_CLAIM_HEADER, "claim": jwt.team_claim},
            ]);
            docs.push(doc);
            what.push_str(
                "\nThe second one covers the MCP route: a bad token gets a 401 there too; a good one's consumer and team\nclaims reach the sidecar, which identifies the caller by them.",
            );
        }
        files.push(("80-jwt.yaml".into(), yaml_docs(&what, &docs)?));
    }
    if gw_ns != opts.namespace {
        let mut from =
            vec![json!({"group": "gateway.envoyproxy.io", "kind": "EnvoyExtensionPolicy", "namespace": gw_ns})];
        let mut what = "Lets the EnvoyExtensionPolicy reach the sidecar's Service in its namespace.";
        if !mcp.is_empty() {
            from.push(json!({"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": gw_ns}));
            what = "Lets the EnvoyExtensionPolicy and the MCP HTTPRoute reach the sidecar's Service in its namespace.";
        }
        let grant = json!({
            "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "kind": "ReferenceGrant",
            "metadata": meta(&format!("{}-ext-proc", opts.name), &opts.namespace),
            "spec": {
                "from": from,
                "to": [{"group": "", "kind": "Service", "name": opts.name}],
            },
        });
        files.push(("60-referencegrant.yaml".into(), yaml_docs(what, &[grant])?));
    }
    files.sort();
    Ok(files)
}

/// Envoy Gateway: the name of the MCP virtual servers' HTTPRoute (and of
/// the policies attached to it).
fn eg_mcp_route_name(opts: &K8sOptions) -> String {
    format!("{}-mcp", opts.name)
}

/// Envoy Gateway: the HTTPRoute of the MCP virtual servers (exact paths to
/// the sidecar's Service, on the same Gateway, listener and hostnames as
/// the providers' route) and its EnvoyExtensionPolicy: the filter as on the
/// providers' route, no ext_proc. A policy attached to a route takes
/// precedence over one attached to its Gateway, so ext_proc stays off here
/// whatever the main policy targets.
fn eg_mcp(
    policy: &Policy,
    opts: &K8sOptions,
    gw_ns: &str,
    parent: &Value,
    hostnames: &[&str],
    mcp: &[(String, Value)],
    wasm: &Value,
) -> Vec<Value> {
    let name = eg_mcp_route_name(opts);
    let matches: Vec<Value> =
        mcp.iter().map(|(_, r)| json!({"path": {"type": "Exact", "value": r["match"]["path"]}})).collect();
    // One rule for all: plain Envoy's routes differ by path only.
    let timeout = mcp.first().map_or_else(|| json!("0s"), |(_, r)| r["route"]["timeout"].clone());
    let mut spec = json!({
        "parentRefs": [parent],
        "rules": [{
            "matches": matches,
            "backendRefs": [{
                "group": "",
                "kind": "Service",
                "name": opts.name,
                "namespace": opts.namespace,
                "port": policy.sidecar.grpc_port,
            }],
            "timeouts": {"request": timeout},
        }],
    });
    if !hostnames.is_empty() {
        spec["hostnames"] = json!(hostnames);
    }
    vec![
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": meta(&name, gw_ns),
            "spec": spec,
        }),
        json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "EnvoyExtensionPolicy",
            "metadata": meta(&name, gw_ns),
            "spec": {
                "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": name}],
                "wasm": wasm,
            },
        }),
    ]
}

/// The prefix of the clusters the manifests add to the gateway's Envoy
/// (per install, so two do not collide).
fn cluster_prefix(opts: &K8sOptions) -> String {
    format!("{}_", opts.name)
}

/// The HTTPRoute's hostnames (`*` is every host: none listed).
fn eg_hostnames(opts: &K8sOptions) -> Vec<&str> {
    opts.hosts.iter().map(String::as_str).filter(|h| *h != "*").collect()
}

/// Envoy Gateway's name for the Envoy route of an HTTPRoute rule's match
/// on one hostname.
fn eg_route_name(namespace: &str, route: &str, rule: usize, matched: usize, hostname: &str) -> String {
    format!("httproute/{namespace}/{route}/rule/{rule}/match/{matched}/{}", hostname.replace('.', "_"))
}

/// POST to each API path (of one family, or all), as an HTTPRoute matches
/// it, with the sidecar's header when given.
fn eg_api_matches(header: Option<&str>, family: Option<ApiFamily>) -> Vec<Value> {
    ApiKind::ALL
        .iter()
        .filter(|api| family.is_none_or(|f| api.family() == f))
        .map(|api| {
            let mut m = json!({"path": {"type": "RegularExpression", "value": api.path_regex()}, "method": "POST"});
            if let Some(value) = header {
                m["headers"] = json!([{"type": "Exact", "name": PROVIDER_HEADER, "value": value}]);
            }
            m
        })
        .collect()
}

/// The matches of a rule the sidecar picks by its header: any path, and
/// each API path again. Envoy Gateway orders routes by the Gateway API's
/// precedence (a regular-expression path before a prefix, then more header
/// and method matches first), not as listed: the API paths with the header
/// come before the refusal of unrouted API requests (the same paths, no
/// header), and the catch-all with the header before the 404s.
fn eg_provider_matches(header: &str) -> Vec<Value> {
    std::iter::once(json!({"headers": [{"type": "Exact", "name": PROVIDER_HEADER, "value": header}]}))
        .chain(eg_api_matches(Some(header), None))
        .collect()
}

/// The provider's base path put before the request's: an Envoy Gateway
/// rewrite by regular expression (the Gateway API's `ReplacePrefixMatch`
/// takes one path-prefix match only, and the rule has several).
fn eg_path_filter(backend: &str, gw_ns: &str, url: &BaseUrl) -> Value {
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "HTTPRouteFilter",
        "metadata": meta(&format!("{backend}-path"), gw_ns),
        "spec": {"urlRewrite": {"path": {
            "type": "ReplaceRegexMatch",
            "replaceRegexMatch": {"pattern": "^/", "substitution": format!("{}/", url.path)},
        }}},
    })
}

fn eg_extension_ref(name: &str) -> Value {
    json!({"type": "ExtensionRef", "extensionRef": {"group": "gateway.envoyproxy.io", "kind": "HTTPRouteFilter", "name": name}})
}

/// The HTTPRoute rules after the sidecar's, as plain Envoy's
/// [`crate::cli::envoy::unrouted_routes`], and the HTTPRouteFilters whose
/// direct responses they refer to: an API request the sidecar did not
/// route goes to the default provider only when [`unrouted_may_pass`],
/// else 503 in its API's shape; any other path 404 (Anthropic's shape when
/// the request has an `anthropic-version` header).
fn eg_unrouted_rules(
    policy: &Policy,
    opts: &K8sOptions,
    gw_ns: &str,
    default_backend: &str,
    default_url: &BaseUrl,
) -> (Vec<Value>, Vec<Value>) {
    let mut rules = Vec::new();
    let mut filters = Vec::new();
    let mut reply = |name: String, case: Unrouted, matches: Option<Vec<Value>>| {
        let (status, body) = case.reply();
        filters.push(json!({
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "HTTPRouteFilter",
            "metadata": meta(&name, gw_ns),
            "spec": {"directResponse": {
                "contentType": "application/json",
                "statusCode": status,
                "body": {"type": "Inline", "inline": body},
            }},
        }));
        let mut rule = json!({"filters": [eg_extension_ref(&name)]});
        if let Some(m) = matches {
            rule["matches"] = json!(m);
        }
        rule
    };
    let family_name = |f: ApiFamily| match f {
        ApiFamily::OpenAi => "openai",
        ApiFamily::Anthropic => "anthropic",
        ApiFamily::Gemini => "gemini",
        ApiFamily::Bedrock => "bedrock",
    };
    if unrouted_may_pass(policy) {
        rules.push(eg_rule(policy, Some(json!(eg_api_matches(None, None))), default_backend, default_url));
    } else {
        for family in [ApiFamily::OpenAi, ApiFamily::Anthropic, ApiFamily::Gemini, ApiFamily::Bedrock] {
            let api = ApiKind::ALL.into_iter().find(|a| a.family() == family).unwrap_or(ApiKind::OpenAiChat);
            rules.push(reply(
                format!("{}-unavailable-{}", opts.name, family_name(family)),
                Unrouted::Api(api),
                Some(eg_api_matches(None, Some(family))),
            ));
        }
    }
    rules.push(reply(
        format!("{}-not-found-anthropic", opts.name),
        Unrouted::Unknown(ApiFamily::Anthropic),
        Some(vec![json!({"headers": [{"type": "RegularExpression", "name": "anthropic-version", "value": ".*"}]})]),
    ));
    rules.push(reply(format!("{}-not-found-openai", opts.name), Unrouted::Unknown(ApiFamily::OpenAi), None));
    (rules, filters)
}

/// The EnvoyPatchPolicy that adds the fallback clusters to the Gateway's
/// xDS (their upstream ext_proc reaches the sidecar through Envoy Gateway's
/// own cluster for the EnvoyExtensionPolicy, [`eg_ext_proc_cluster`], with
/// its mutual TLS) and replaces the action of each variant's route by the
/// alias's.
fn eg_fallback_patch(opts: &K8sOptions, gw_ns: &str, fallback: &Fallback, rules: &[(usize, &FallbackRoute)]) -> Value {
    const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    const ROUTES: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    let mut patches: Vec<Value> = fallback
        .clusters
        .iter()
        .map(|c| json!({"type": CLUSTER, "name": c["name"], "operation": {"op": "add", "path": "", "value": c}}))
        .collect();
    let route_config = format!("{gw_ns}/{}/{}", opts.gateway_name, opts.listener);
    // The sidecar tells the attempts apart by Envoy's attempt count.
    for field in ["include_request_attempt_count", "include_attempt_count_in_response"] {
        patches.push(json!({"type": ROUTES, "name": route_config, "operation": {
            "op": "add", "jsonPath": "$.virtual_hosts[*]", "path": format!("/{field}"), "value": true,
        }}));
    }
    // Envoy Gateway names a route without hostnames by `*`.
    let mut hostnames = eg_hostnames(opts);
    if hostnames.is_empty() {
        hostnames.push("*");
    }
    for (rule, route) in rules {
        for host in &hostnames {
            // Every match of the rule (`eg_provider_matches`) is a route of its own.
            for m in 0..=ApiKind::ALL.len() {
                let name = eg_route_name(gw_ns, &opts.name, *rule, m, host);
                patches.push(json!({"type": ROUTES, "name": route_config, "operation": {
                    "op": "replace",
                    "jsonPath": format!("$.virtual_hosts[*].routes[?(@.name=='{name}')]"),
                    "path": "/route",
                    "value": route.action,
                }}));
            }
        }
    }
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyPatchPolicy",
        "metadata": meta(&format!("{}-fallback", opts.name), gw_ns),
        "spec": {
            "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": opts.gateway_name},
            "type": "JSONPatch",
            "jsonPatches": patches,
        },
    })
}

/// A policy the manifests can carry.
fn check_renderable(policy: &Policy) -> anyhow::Result<()> {
    if policy.providers.is_empty() {
        anyhow::bail!("the policy has no provider");
    }
    Ok(())
}

fn meta(name: &str, namespace: &str) -> Value {
    json!({"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "tollgate"}})
}

fn base_url(name: &str, raw: &str) -> anyhow::Result<BaseUrl> {
    BaseUrl::parse(raw).map_err(|m| anyhow::anyhow!("providers.{name}.baseUrl: {m}"))
}

fn plugin_config_value(policy: &Policy) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(&plugin_config(policy))?)
}

fn duration(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn sidecar_host(opts: &K8sOptions) -> String {
    format!("{}.{}.svc.cluster.local", opts.name, opts.namespace)
}

/// A provider's host in Istio's registry: its DNS name, or a made-up name
/// for an IP address (ServiceEntry hosts must be names).
fn istio_host(provider: &str, url: &BaseUrl) -> String {
    if is_ip(&url.host) {
        format!("{provider}.tollgate.internal")
    } else {
        url.host.clone()
    }
}

/// The API paths as Istio matches them: POST to each path of the API table
/// (of one family, or all).
fn istio_api_matches(family: Option<ApiFamily>) -> Vec<Value> {
    ApiKind::ALL
        .iter()
        .filter(|api| family.is_none_or(|f| api.family() == f))
        .map(|api| json!({"uri": {"regex": api.path_regex()}, "method": {"exact": "POST"}}))
        .collect()
}

/// A VirtualService route that answers itself (JSON, as plain Envoy's
/// refusals do).
fn istio_reply(case: Unrouted, matches: Option<Vec<Value>>) -> Value {
    let (status, body) = case.reply();
    let mut route = json!({
        "directResponse": {"status": status, "body": {"string": body}},
        "headers": {"response": {"set": {"content-type": "application/json"}}},
    });
    if let Some(m) = matches {
        route["match"] = json!(m);
    }
    route
}

/// The VirtualService routes after the sidecar's, as plain Envoy's
/// [`crate::cli::envoy::unrouted_routes`]: an API request the sidecar did not
/// route goes to the default provider only when [`unrouted_may_pass`],
/// else 503 in its API's shape; any other path 404 (Anthropic's shape when
/// the request has an `anthropic-version` header). Istio keeps the order.
fn istio_unrouted_routes(policy: &Policy, opts: &K8sOptions, default_host: &str, default_url: &BaseUrl) -> Vec<Value> {
    let mut routes = Vec::new();
    if unrouted_may_pass(policy) {
        let mut route = istio_route(policy, &istio_unrouted_route_name(opts), None, default_host, default_url);
        route["match"] = json!(istio_api_matches(None));
        routes.push(route);
    } else {
        for family in [ApiFamily::OpenAi, ApiFamily::Anthropic, ApiFamily::Gemini, ApiFamily::Bedrock] {
            let api = ApiKind::ALL.into_iter().find(|a| a.family() == family).unwrap_or(ApiKind::OpenAiChat);
            routes.push(istio_reply(Unrouted::Api(api), Some(istio_api_matches(Some(family)))));
        }
    }
    routes.push(istio_reply(
        Unrouted::Unknown(ApiFamily::Anthropic),
        Some(vec![json!({"headers": {"anthropic-version": {"regex": ".*"}}})]),
    ));
    routes.push(istio_reply(Unrouted::Unknown(ApiFamily::OpenAi), None));
    routes
}

/// A provider's route in the VirtualService; `timeouts.totalMs` bounds it
/// (the attempt and idle timeouts: [`istio_provider_timeouts`]).
fn istio_route(policy: &Policy, name: &str, matches: Option<Value>, host: &str, url: &BaseUrl) -> Value {
    let mut route = json!({
        "name": name,
        "route": [{"destination": {"host": host, "port": {"number": url.port}}}],
        "headers": {"request": {"remove": [PROVIDER_HEADER]}},
        "timeout": envoy_duration(policy.timeouts.total_ms),
    });
    if let Some(m) = matches {
        route["match"] = json!([m]);
    }
    let mut rewrite = serde_json::Map::new();
    if url.tls {
        rewrite.insert("authority".into(), json!(url.host));
    }
    if !url.path.is_empty() {
        rewrite.insert("uri".into(), json!(format!("{}/", url.path)));
    }
    if !rewrite.is_empty() {
        route["rewrite"] = Value::Object(rewrite);
    }
    route
}

/// The provider HTTPRoute's attempt timeout, which Envoy Gateway takes from
/// a BackendTrafficPolicy's retry (the HTTPRoute's `backendRequest` is not
/// a per-attempt bound there): no retry (Envoy's retries of an alias are
/// the fallback patch's, which replaces those routes' whole action), each
/// attempt bounded by `timeouts.attemptMs`; the whole exchange by
/// `timeouts.totalMs`, as the rules say.
fn eg_provider_timeouts(policy: &Policy, opts: &K8sOptions, gw_ns: &str) -> Value {
    let t = &policy.timeouts;
    json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "BackendTrafficPolicy",
        "metadata": meta(&format!("{}-providers", opts.name), gw_ns),
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": opts.name}],
            "retry": {"numRetries": 0, "perRetry": {"timeout": envoy_duration(t.attempt_ms)}},
            "timeout": {"http": {"requestTimeout": envoy_duration(t.total_ms)}},
        },
    })
}

/// A provider's HTTPRoute rule; `timeouts.totalMs` bounds it (the attempt
/// timeout: [`eg_provider_timeouts`]).
fn eg_rule(policy: &Policy, matches: Option<Value>, backend: &str, url: &BaseUrl) -> Value {
    let mut filters =
        vec![json!({"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": [PROVIDER_HEADER]}})];
    let mut rewrite = serde_json::Map::new();
    if url.tls {
        rewrite.insert("hostname".into(), json!(url.host));
    }
    if !rewrite.is_empty() {
        filters.push(json!({"type": "URLRewrite", "urlRewrite": rewrite}));
    }
    if !url.path.is_empty() {
        // See `eg_path_filter`.
        filters.push(eg_extension_ref(&format!("{backend}-path")));
    }
    let mut rule = json!({
        "backendRefs": [{"group": "gateway.envoyproxy.io", "kind": "Backend", "name": backend, "port": url.port}],
        "filters": filters,
        "timeouts": {"request": envoy_duration(policy.timeouts.total_ms)},
    });
    if let Some(m) = matches {
        rule["matches"] = m;
    }
    rule
}

/// The policy as the sidecar reads it in the pod: provider key files, the
/// key store and writable directories moved to the pod's mounts; Envoy
/// authenticated by Istio's mesh, or by the sidecar's own mutual TLS from
/// the mounted certificates (Envoy Gateway).
fn pod_policy(policy: &Policy, flavour: Flavour) -> Policy {
    let mut p = policy.clone();
    p.sidecar.tls.mode = match flavour {
        Flavour::Istio => SidecarTlsMode::Mesh,
        Flavour::EnvoyGateway => SidecarTlsMode::Mutual,
    };
    // The pod's path (a directory of the machine rendering means nothing there).
    p.sidecar.tls.dir = TLS_DIR.into();
    for (name, provider) in p.providers.iter_mut() {
        if provider.key_file.is_some() {
            provider.key_file = Some(format!("{KEYS_DIR}/{name}"));
        }
    }
    for (name, server) in p.mcp.servers.iter_mut() {
        if server.key_file.is_some() {
            server.key_file = Some(format!("{KEYS_DIR}/{}", mcp_key(name)));
        }
        if let Some(doc) = server.openapi.as_mut() {
            *doc = format!("{POLICY_DIR}/{}", openapi_key(name, doc));
        }
    }
    if let Some(store) = p.access.key_store.as_mut() {
        *store = format!("{ACCESS_DIR}/{}", file_name(store));
    }
    if p.audit.enabled {
        p.audit.dir = Some(format!("{DATA_DIR}/audit"));
    }
    p.limits.dir = Some(format!("{DATA_DIR}/state"));
    if p.cache.enabled {
        p.cache.dir = Some(format!("{DATA_DIR}/cache"));
    }
    p
}

/// The Secret key (and file under [`KEYS_DIR`]) of an MCP server's
/// credential file: provider names have no `.`, so it is no provider's.
fn mcp_key(server: &str) -> String {
    format!("mcp.{server}")
}

/// The ConfigMap key (and file under [`POLICY_DIR`]) of an MCP server's
/// OpenAPI document, with the document's own extension.
fn openapi_key(server: &str, path: &str) -> String {
    let ext = std::path::Path::new(path).extension().and_then(|e| e.to_str()).unwrap_or("yaml");
    format!("openapi-{server}.{ext}")
}

fn file_name(path: &str) -> String {
    std::path::Path::new(path).file_name().map_or_else(|| "keys".into(), |n| n.to_string_lossy().into_owned())
}

/// The Secret keys the operator must create: (secret key, what it holds).
pub fn secret_keys(policy: &Policy) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    for (name, provider) in &policy.providers {
        if let Some(var) = &provider.key_env {
            keys.push((var.clone(), format!("API key of provider `{name}` (environment {var})")));
        } else if provider.key_file.is_some() {
            keys.push((name.clone(), format!("API key of provider `{name}` (file {KEYS_DIR}/{name})")));
        }
    }
    for (name, server) in &policy.mcp.servers {
        if let Some(var) = &server.key_env {
            if keys.iter().all(|(k, _)| k != var) {
                keys.push((var.clone(), format!("credential of MCP server `{name}` (environment {var})")));
            }
        } else if server.key_file.is_some() {
            let key = mcp_key(name);
            keys.push((key.clone(), format!("credential of MCP server `{name}` (file {KEYS_DIR}/{key})")));
        }
    }
    keys
}

/// Namespace, ConfigMap, Service and Deployment of the sidecar, and what
/// guards it: the NetworkPolicy (both) and Istio's mutual TLS and
/// authorization.
fn common_files(policy: &Policy, opts: &K8sOptions, flavour: Flavour, gw_ns: &str) -> anyhow::Result<Files> {
    let ns = &opts.namespace;
    let labels = json!({"app.kubernetes.io/name": opts.name, "app.kubernetes.io/part-of": "tollgate"});
    let mut namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    if flavour == Flavour::Istio {
        // The gateway reaches the sidecar over the mesh's mutual TLS; the
        // PeerAuthentication and AuthorizationPolicy below admit nothing else.
        namespace["metadata"]["labels"] = json!({"istio-injection": "enabled"});
    }
    let mut config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(&format!("{}-policy", opts.name), ns),
        "data": {POLICY_FILE: serde_json::to_string_pretty(&pod_policy(policy, flavour))? + "\n"},
    });
    // The OpenAPI documents of REST servers beside the policy.
    for (name, server) in &policy.mcp.servers {
        if let Some(doc) = &server.openapi {
            let text =
                std::fs::read_to_string(doc).map_err(|e| anyhow::anyhow!("mcp.servers.{name}.openapi {doc}: {e}"))?;
            config_map["data"][openapi_key(name, doc)] = json!(text);
        }
    }
    let pods = gateway_pods(opts, flavour, gw_ns);
    let mut access = vec![network_policy(policy, opts, &pods)];
    let mut access_header = format!(
        "Who reaches the sidecar: its gRPC port (provider keys, identity decisions) only from the gateway's Envoy\npods (namespace `{}`, labels {}), its admin port only from namespace `{ns}` (the kubelet's probes come\nfrom the node, which NetworkPolicy always admits). Needs a CNI that enforces NetworkPolicy.",
        pods.namespace,
        pods.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    );
    match flavour {
        Flavour::Istio => {
            access.extend(istio_sidecar_security(policy, opts, gw_ns));
            access_header.push_str(&format!(
                "\nIstio: the sidecar takes mutual TLS only, its gRPC port answers only the ingress gateway's identity\n({}), and its admin port answers only /healthz and /readyz (the probes).",
                istio_gateway_principal(opts, gw_ns)
            ));
        }
        Flavour::EnvoyGateway => access_header.push_str(
            "\nEnvoy Gateway: the sidecar also takes only mutual TLS from Envoy's client certificate (06-tls.yaml).",
        ),
    }
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(&opts.name, ns),
        "spec": {
            "selector": {"app.kubernetes.io/name": opts.name},
            "ports": [
                {"name": "grpc", "port": policy.sidecar.grpc_port, "targetPort": "grpc", "appProtocol": "grpc"},
                {"name": "http-admin", "port": policy.sidecar.admin_port, "targetPort": "admin", "appProtocol": "http"},
            ],
        },
    });

    let admin_secret = format!("{}-admin", opts.name);
    let mut env = vec![
        json!({"name": "RUST_LOG", "value": "info"}),
        // In its own pod the sidecar shares no CPU with Envoy: one worker
        // per CPU of its limit (the node's, without one; rounded up).
        json!({"name": "TOLLGATE_WORKERS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}}}),
        // The admin endpoints listen beyond loopback: without the token they
        // answer nothing but the probes (401).
        json!({"name": crate::server::ADMIN_TOKEN_ENV, "valueFrom": {"secretKeyRef": {
            "name": admin_secret, "key": ADMIN_TOKEN_KEY, "optional": true,
        }}}),
    ];
    let mut volumes = vec![
        json!({"name": "policy", "configMap": {"name": format!("{}-policy", opts.name)}}),
        json!({"name": "data", "emptyDir": {}}),
    ];
    let mut mounts = vec![
        json!({"name": "policy", "mountPath": POLICY_DIR, "readOnly": true}),
        json!({"name": "data", "mountPath": DATA_DIR}),
    ];
    let mut file_items = Vec::new();
    for (name, provider) in &policy.providers {
        if let Some(var) = &provider.key_env {
            env.push(json!({"name": var, "valueFrom": {"secretKeyRef": {"name": opts.keys_secret, "key": var}}}));
        } else if provider.key_file.is_some() {
            file_items.push(json!({"key": name, "path": name}));
        }
    }
    for (name, server) in &policy.mcp.servers {
        if let Some(var) = &server.key_env {
            if env.iter().all(|e| e["name"] != json!(var)) {
                env.push(json!({"name": var, "valueFrom": {"secretKeyRef": {"name": opts.keys_secret, "key": var}}}));
            }
        } else if server.key_file.is_some() {
            let key = mcp_key(name);
            file_items.push(json!({"key": key, "path": key}));
        }
    }
    if !file_items.is_empty() {
        volumes.push(json!({"name": "keys", "secret": {"secretName": opts.keys_secret, "items": file_items}}));
        mounts.push(json!({"name": "keys", "mountPath": KEYS_DIR, "readOnly": true}));
    }
    if flavour == Flavour::EnvoyGateway {
        // Owner and group read only; the pod's fsGroup is the sidecar's group.
        let items: Vec<Value> = [crate::tls::CA_FILE, crate::tls::SIDECAR_CERT, crate::tls::SIDECAR_KEY]
            .iter()
            .map(|f| json!({"key": f, "path": f}))
            .collect();
        volumes.push(json!({"name": "tls", "secret": {"secretName": sidecar_tls_secret(opts), "items": items, "defaultMode": 0o440}}));
        mounts.push(json!({"name": "tls", "mountPath": TLS_DIR, "readOnly": true}));
    }
    if let Some(store) = &policy.access.key_store {
        let key = file_name(store);
        volumes.push(json!({"name": "access", "secret": {"secretName": format!("{}-access", opts.name), "items": [{"key": key, "path": key}]}}));
        mounts.push(json!({"name": "access", "mountPath": ACCESS_DIR, "readOnly": true}));
    }
    let redis = policy.limits.store == tollgate_core::access::StoreKind::Redis;
    let replicas = opts.replicas.unwrap_or(if redis { 2 } else { 1 });
    let probe = |path: &str| json!({"httpGet": {"path": path, "port": "admin"}, "periodSeconds": 5});
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(&opts.name, ns),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": opts.name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{
                        "name": "tollgate",
                        "image": opts.sidecar_image,
                        "args": serve_args(policy.sidecar.grpc_port, policy.sidecar.admin_port),
                        "env": env,
                        "ports": [
                            {"name": "grpc", "containerPort": policy.sidecar.grpc_port},
                            {"name": "admin", "containerPort": policy.sidecar.admin_port},
                        ],
                        "readinessProbe": probe("/readyz"),
                        "livenessProbe": probe("/healthz"),
                        "volumeMounts": mounts,
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true,
                            "runAsUser": SIDECAR_UID,
                            "runAsGroup": SIDECAR_UID,
                        },
                    }],
                    "securityContext": {"fsGroup": SIDECAR_UID},
                    "volumes": volumes,
                },
            },
        },
    });
    let mut header = format!(
        "The sidecar (`tollgate serve`), rendered for {}.\n# Its admin endpoints (/usage, /metrics, /api/recent) need `Authorization: Bearer <token>` with the token of\n# the Secret `{admin_secret}` (optional; without it they answer 401, the probes still work):\n#   kubectl -n {ns} create secret generic {admin_secret} --from-literal={ADMIN_TOKEN_KEY}=$(openssl rand -hex 32)",
        flavour.as_str()
    );
    let keys = secret_keys(policy);
    if !keys.is_empty() {
        let what = if policy.mcp.servers.values().any(|s| s.key_env.is_some() || s.key_file.is_some()) {
            "Provider keys and MCP server credentials"
        } else {
            "Provider keys"
        };
        header.push_str(&format!(
            "\n# {what} come from the Secret `{}` in namespace `{ns}` (create it first):\n#   kubectl -n {ns} create secret generic {} {}",
            opts.keys_secret,
            opts.keys_secret,
            keys.iter().map(|(k, _)| format!("--from-literal={k}=...")).collect::<Vec<_>>().join(" ")
        ));
        for (k, what) in &keys {
            header.push_str(&format!("\n#   {k}: {what}"));
        }
    }
    if let Some(store) = &policy.access.key_store {
        header.push_str(&format!(
            "\n# Virtual keys come from the Secret `{}-access` (key `{}`):\n#   kubectl -n {ns} create secret generic {}-access --from-file={}={store}",
            opts.name,
            file_name(store),
            opts.name,
            file_name(store)
        ));
    }
    Ok(vec![
        ("00-namespace.yaml".into(), yaml_docs("The sidecar's namespace.", &[namespace])?),
        ("05-access.yaml".into(), yaml_docs(&access_header, &access)?),
        ("10-sidecar.yaml".into(), yaml_docs(&header, &[config_map, service, deployment])?),
    ])
}

/// `tollgate serve` in the pod (and as the sidecar image's default command):
/// the policy from the ConfigMap mount, gRPC and admin on all interfaces.
pub fn serve_args(grpc_port: u16, admin_port: u16) -> Vec<String> {
    vec![
        "serve".into(),
        "--policy".into(),
        format!("{POLICY_DIR}/{POLICY_FILE}"),
        "--grpc".into(),
        format!("0.0.0.0:{grpc_port}"),
        "--admin".into(),
        format!("0.0.0.0:{admin_port}"),
    ]
}

/// YAML documents with a header comment.
fn yaml_docs(what: &str, docs: &[Value]) -> anyhow::Result<String> {
    let mut out = String::from("# Rendered by `tollgate render` from the policy. Do not edit by hand.\n");
    for line in what.lines() {
        if !line.starts_with('#') {
            out.push_str("# ");
        }
        out.push_str(line);
        out.push('\n');
    }
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml_ng::to_string(doc)?);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::config::parse_policy;

    const POLICY: &str = "failMode: {filter: closed, sidecar: open}\nproviders:\n  openai: {kind: openai, baseUrl: 'https://api.openai.com', keyEnv: OPENAI_API_KEY}\n  anthropic: {kind: anthropic, baseUrl: 'https://api.anthropic.com/proxy', keyFile: /run/secrets/anthropic}\n  local: {kind: openai-compatible, baseUrl: 'http://10.0.0.7:8000'}\nmodels:\n  gpt-4o-mini: {targets: [{provider: openai, model: gpt-4o-mini}]}\n";

    fn docs(files: &[(String, String)], file: &str) -> Vec<Value> {
        let text = &files.iter().find(|(n, _)| n == file).unwrap_or_else(|| panic!("no {file}")).1;
        text.split("\n---\n").map(|d| serde_yaml_ng::from_str::<Value>(d).unwrap()).collect()
    }

    fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
        docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"))
    }

    /// A certificate directory of the tests' own, made once.
    fn test_tls_dir() -> PathBuf {
        static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap()).path().join("tls");
        crate::tls::ensure(&dir, false).unwrap();
        dir
    }

    /// Options for Envoy Gateway, reading the tests' certificates.
    fn eg_opts() -> K8sOptions {
        K8sOptions { tls_dir: Some(test_tls_dir()), ..Default::default() }
    }

    #[test]
    fn istio_wasm_plugin_and_ext_proc_after_it_on_the_gateway() {
        let policy = parse_policy(POLICY).unwrap();
        let files = render_istio(&policy, &K8sOptions::default()).unwrap();
        let names: Vec<_> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "00-namespace.yaml",
                "05-access.yaml",
                "10-sidecar.yaml",
                "20-wasmplugin.yaml",
                "30-envoyfilter.yaml",
                "40-providers.yaml"
            ]
        );
        let wasm = &docs(&files, "20-wasmplugin.yaml")[0];
        assert_eq!(wasm["kind"], "WasmPlugin");
        assert_eq!(wasm["metadata"]["namespace"], "istio-system");
        assert_eq!(wasm["spec"]["selector"]["matchLabels"]["istio"], "ingressgateway");
        assert_eq!(wasm["spec"]["failStrategy"], "FAIL_CLOSE");
        assert!(wasm["spec"]["url"].as_str().unwrap().starts_with("oci://REGISTRY/tollgate-filter:"));
        // The same plugin configuration as plain Envoy.
        assert_eq!(wasm["spec"]["pluginConfig"], serde_json::from_str::<Value>(&plugin_config(&policy)).unwrap());

        let ef = &docs(&files, "30-envoyfilter.yaml")[0];
        assert_eq!(ef["spec"]["workloadSelector"]["labels"]["istio"], "ingressgateway");
        let patch = &ef["spec"]["configPatches"][0];
        assert_eq!(patch["applyTo"], "HTTP_FILTER");
        assert_eq!(patch["match"]["context"], "GATEWAY");
        assert_eq!(patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"], "istio-system.tollgate");
        assert_eq!(patch["patch"]["operation"], "INSERT_AFTER");
        let cluster = "outbound|10001||tollgate.tollgate.svc.cluster.local";
        let sidecar = SidecarRef { cluster, authority: Some("tollgate.tollgate.svc.cluster.local") };
        assert_eq!(patch["patch"]["value"], ext_proc_filter(&policy, sidecar));
        assert_eq!(patch["patch"]["value"]["typed_config"]["failure_mode_allow"], true);
    }

    #[test]
    fn istio_fail_strategy_follows_the_policy() {
        let policy = parse_policy(&POLICY.replace("filter: closed", "filter: open")).unwrap();
        let files = render_istio(&policy, &K8sOptions::default()).unwrap();
        assert_eq!(docs(&files, "20-wasmplugin.yaml")[0]["spec"]["failStrategy"], "FAIL_OPEN");
        let files = render_envoy_gateway(&policy, &eg_opts()).unwrap();
        assert_eq!(docs(&files, "30-envoyextensionpolicy.yaml")[0]["spec"]["wasm"][0]["failOpen"], true);
    }

    #[test]
    fn custom_selector_and_namespaces() {
        let policy = parse_policy(POLICY).unwrap();
        let opts = K8sOptions {
            gateway_selector: [("app".to_string(), "ai-gw".to_string())].into_iter().collect(),
            gateway_namespace: Some("edge".into()),
            istio_gateway: Some("edge/public".into()),
            ..Default::default()
        };
        let files = render_istio(&policy, &opts).unwrap();
        let wasm = &docs(&files, "20-wasmplugin.yaml")[0];
        assert_eq!(wasm["spec"]["selector"]["matchLabels"], json!({"app": "ai-gw"}));
        let ef = &docs(&files, "30-envoyfilter.yaml")[0];
        assert_eq!(ef["metadata"]["namespace"], "edge");
        assert_eq!(ef["spec"]["workloadSelector"]["labels"], json!({"app": "ai-gw"}));
        assert_eq!(
            ef["spec"]["configPatches"][0]["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
            "edge.tollgate"
        );
        let providers = docs(&files, "40-providers.yaml");
        assert!(providers.iter().all(|d| d["kind"] != "Gateway"), "uses the operator's Gateway");
        assert_eq!(kind(&providers, "VirtualService")["spec"]["gateways"], json!(["edge/public"]));
    }

    #[test]
    fn istio_routes_to_providers() {
        let policy = parse_policy(POLICY).unwrap();
        let files = render_istio(&policy, &K8sOptions::default()).unwrap();
        let docs = docs(&files, "40-providers.yaml");
        let entries: Vec<_> = docs.iter().filter(|d| d["kind"] == "ServiceEntry").collect();
        assert_eq!(entries.len(), 3);
        let local = entries.iter().find(|e| e["metadata"]["name"] == "tollgate-provider-local").unwrap();
        assert_eq!(local["spec"]["resolution"], "STATIC");
        assert_eq!(local["spec"]["endpoints"][0]["address"], "10.0.0.7");
        let rules: Vec<_> = docs.iter().filter(|d| d["kind"] == "DestinationRule").collect();
        assert_eq!(rules.len(), 2, "TLS origination for the two https providers");
        let vs = kind(&docs, "VirtualService");
        let http = vs["spec"]["http"].as_array().unwrap();
        // Three provider routes, the unrouted API requests, two 404s.
        assert_eq!(http.len(), 3 + 1 + 2);
        assert_eq!(http[0]["match"][0]["headers"][PROVIDER_HEADER]["exact"], "anthropic");
        assert_eq!(http[0]["rewrite"], json!({"authority": "api.anthropic.com", "uri": "/proxy/"}));
        // Failing open without credentials: unrouted API requests (POST to an
        // API path) reach the default provider; nothing else does.
        assert_eq!(policy.default_provider(), Some("anthropic"));
        assert_eq!(http[3]["route"][0]["destination"]["host"], "api.anthropic.com");
        let api_matches = http[3]["match"].as_array().unwrap();
        assert_eq!(api_matches.len(), ApiKind::ALL.len());
        for (m, api) in api_matches.iter().zip(ApiKind::ALL) {
            assert_eq!(m, &json!({"uri": {"regex": api.path_regex()}, "method": {"exact": "POST"}}));
        }
        check_istio_not_found(&http[4..]);
    }

    /// The last two VirtualService routes: 404 in Anthropic's shape for a
    /// request with `anthropic-version`, else in OpenAI's.
    fn check_istio_not_found(routes: &[Value]) {
        assert_eq!(routes.len(), 2);
        for (route, family) in routes.iter().zip([ApiFamily::Anthropic, ApiFamily::OpenAi]) {
            let (status, body) = Unrouted::Unknown(family).reply();
            assert_eq!(route["directResponse"], json!({"status": status, "body": {"string": body}}));
            assert_eq!(route["headers"]["response"]["set"]["content-type"], "application/json");
            assert!(route.get("route").is_none());
        }
        assert_eq!(routes[0]["match"], json!([{"headers": {"anthropic-version": {"regex": ".*"}}}]));
        assert!(routes[1].get("match").is_none(), "the catch-all comes last");
    }

    #[test]
    fn istio_refuses_unrouted_requests_unless_open_and_anonymous() {
        for extra in [
            "failMode: {sidecar: closed}\n",
            "access: {require: key, keyStore: k.yaml}\n",
            "access: {require: jwt, jwt: {issuer: i, jwksFile: j}}\n",
        ] {
            let policy = parse_policy(&format!(
                "providers:\n  openai: {{kind: openai, baseUrl: 'https://api.openai.com'}}\n{extra}"
            ))
            .unwrap();
            assert!(!unrouted_may_pass(&policy));
            let url = BaseUrl::parse("https://api.openai.com").unwrap();
            let vs = istio_unrouted_routes(&policy, &K8sOptions::default(), "api.openai.com", &url);
            assert_eq!(vs.len(), 6, "{extra}");
            assert!(vs.iter().all(|r| r.get("route").is_none()), "{extra}: no unrouted request reaches a provider");
            let families = [ApiFamily::OpenAi, ApiFamily::Anthropic, ApiFamily::Gemini, ApiFamily::Bedrock];
            for (route, family) in vs[..4].iter().zip(families) {
                let api = ApiKind::ALL.into_iter().find(|a| a.family() == family).unwrap();
                let (status, body) = Unrouted::Api(api).reply();
                assert_eq!(status, 503);
                assert_eq!(route["directResponse"], json!({"status": status, "body": {"string": body}}));
                assert!(body.contains("gateway_unavailable") || family == ApiFamily::Anthropic, "{body}");
                assert_eq!(route["match"], json!(istio_api_matches(Some(family))));
            }
            let paths: usize = vs[..4].iter().map(|r| r["match"].as_array().unwrap().len()).sum();
            assert_eq!(paths, ApiKind::ALL.len(), "every API path is refused");
            check_istio_not_found(&vs[4..]);
        }
    }

    #[test]
    fn sidecar_mounts_policy_and_keys() {
        let policy = parse_policy(POLICY).unwrap();
        let files = render_istio(&policy, &K8sOptions::default()).unwrap();
        let docs = docs(&files, "10-sidecar.yaml");
        let cm = kind(&docs, "ConfigMap");
        let pod_policy = Policy::from_json(cm["data"][POLICY_FILE].as_str().unwrap().as_bytes()).unwrap();
        pod_policy.validate().unwrap();
        assert_eq!(pod_policy.providers["anthropic"].key_file.as_deref(), Some("/etc/tollgate/keys/anthropic"));
        assert_eq!(pod_policy.providers["openai"].key_env.as_deref(), Some("OPENAI_API_KEY"));
        let dep = kind(&docs, "Deployment");
        let pod = &dep["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["args"][2], "/etc/tollgate/policy/policy.json");
        let env = c["env"].as_array().unwrap();
        let key = env.iter().find(|e| e["name"] == "OPENAI_API_KEY").unwrap();
        assert_eq!(
            key["valueFrom"]["secretKeyRef"],
            json!({"name": "tollgate-provider-keys", "key": "OPENAI_API_KEY"})
        );
        let keys = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "keys").unwrap();
        assert_eq!(keys["secret"]["items"], json!([{"key": "anthropic", "path": "anthropic"}]));
        assert_eq!(
            dep["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
            dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        );
        let svc = kind(&docs, "Service");
        assert_eq!(svc["spec"]["ports"][0]["appProtocol"], "grpc");
        let header = &files.iter().find(|(n, _)| n == "10-sidecar.yaml").unwrap().1;
        assert!(header.contains("--from-literal=OPENAI_API_KEY=..."));
    }

    #[test]
    fn envoy_gateway_policy_backends_and_route() {
        let policy = parse_policy(POLICY).unwrap();
        let files = render_envoy_gateway(&policy, &eg_opts()).unwrap();
        let names: Vec<_> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "00-namespace.yaml",
                "05-access.yaml",
                "06-tls.yaml",
                "10-sidecar.yaml",
                "20-envoyproxy.yaml",
                "30-envoyextensionpolicy.yaml",
                "40-backends.yaml",
                "50-httproute.yaml",
                "60-referencegrant.yaml"
            ]
        );
        let eep = &docs(&files, "30-envoyextensionpolicy.yaml")[0];
        assert_eq!(
            eep["spec"]["targetRefs"][0],
            json!({"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "tollgate"})
        );
        let wasm = &eep["spec"]["wasm"][0];
        assert_eq!(wasm["code"]["type"], "Image");
        assert!(wasm["code"]["image"]["url"].as_str().unwrap().starts_with("REGISTRY/tollgate-filter:"));
        assert_eq!(wasm["config"], serde_json::from_str::<Value>(&plugin_config(&policy)).unwrap());
        assert_eq!(wasm["failOpen"], false);
        let ext = &eep["spec"]["extProc"][0];
        assert_eq!(ext["failOpen"], true);
        assert_eq!(ext["backendRefs"][0]["namespace"], "tollgate");
        assert_eq!(ext["processingMode"]["request"]["body"], "Buffered");
        let order = &docs(&files, "20-envoyproxy.yaml")[0]["spec"]["filterOrder"][0];
        assert_eq!(order["before"], "envoy.filters.http.ext_proc");
        let backends = docs(&files, "40-backends.yaml");
        assert_eq!(backends.len(), 3);
        assert_eq!(backends[1]["spec"]["endpoints"][0]["ip"]["address"], "10.0.0.7");
        assert_eq!(backends[2]["spec"]["tls"]["sni"], "api.openai.com");
        let route = &docs(&files, "50-httproute.yaml")[0];
        let rules = route["spec"]["rules"].as_array().unwrap();
        // Three provider rules, the unrouted API requests, two 404s.
        assert_eq!(rules.len(), 3 + 1 + 2);
        assert_eq!(route["spec"]["parentRefs"][0]["name"], "eg");
        assert_eq!(rules[0]["matches"], json!(eg_provider_matches("anthropic")));
        // The base path by Envoy Gateway's regex rewrite (several matches).
        let filters = docs(&files, "50-httproute.yaml");
        assert_eq!(
            rules[0]["filters"].as_array().unwrap().last().unwrap(),
            &eg_extension_ref("tollgate-provider-anthropic-path")
        );
        let path = filters.iter().find(|d| d["metadata"]["name"] == "tollgate-provider-anthropic-path").unwrap();
        assert_eq!(
            path["spec"]["urlRewrite"]["path"]["replaceRegexMatch"],
            json!({"pattern": "^/", "substitution": "/proxy/"})
        );
        // Failing open without credentials: unrouted API requests reach the default provider.
        assert_eq!(rules[3]["matches"], json!(eg_api_matches(None, None)));
        assert_eq!(rules[3]["backendRefs"][0]["name"], "tollgate-provider-anthropic");
        check_eg_not_found(&rules[4..], &filters);
        check_eg_order(rules);
    }

    /// The last two rules: 404 in Anthropic's shape for a request with
    /// `anthropic-version`, else in OpenAI's, by the HTTPRouteFilters.
    fn check_eg_not_found(rules: &[Value], docs: &[Value]) {
        assert_eq!(rules.len(), 2);
        for (rule, family) in rules.iter().zip([ApiFamily::Anthropic, ApiFamily::OpenAi]) {
            check_eg_reply(rule, docs, Unrouted::Unknown(family));
        }
        assert_eq!(
            rules[0]["matches"],
            json!([{"headers": [{"type": "RegularExpression", "name": "anthropic-version", "value": ".*"}]}])
        );
        assert!(rules[1].get("matches").is_none(), "the catch-all");
    }

    fn check_eg_reply(rule: &Value, docs: &[Value], case: Unrouted) {
        assert!(rule.get("backendRefs").is_none());
        let name = rule["filters"][0]["extensionRef"]["name"].as_str().unwrap();
        let filter = docs.iter().find(|d| d["kind"] == "HTTPRouteFilter" && d["metadata"]["name"] == name).unwrap();
        let (status, body) = case.reply();
        assert_eq!(
            filter["spec"]["directResponse"],
            json!({"contentType": "application/json", "statusCode": status, "body": {"type": "Inline", "inline": body}})
        );
    }

    /// Envoy Gateway's route order (its `internal/gatewayapi/sort.go`: exact
    /// path, then regex, then prefix; longer paths; more header matches, the
    /// method counting as one; more exact ones), applied to the rules'
    /// matches: every match with the sidecar's header comes before every
    /// one without, so no refusal shadows a routed request.
    fn check_eg_order(rules: &[Value]) {
        let key = |m: &Value| {
            let path = &m["path"];
            let kind = match path["type"].as_str() {
                Some("Exact") => 2,
                Some("RegularExpression") => 1,
                _ => 0,
            };
            let len = match path["value"].as_str() {
                None | Some("/") => 0,
                Some(v) => v.len(),
            };
            let headers = m["headers"].as_array().map(Vec::len).unwrap_or(0) + usize::from(m.get("method").is_some());
            let exact = m["headers"].as_array().map(|h| h.iter().filter(|h| h["type"] == "Exact").count()).unwrap_or(0)
                + usize::from(m.get("method").is_some());
            (kind, len, headers, exact)
        };
        let mut all: Vec<(Value, bool)> = Vec::new();
        for rule in rules {
            let matches = rule["matches"].as_array().cloned().unwrap_or_else(|| vec![json!({})]);
            for m in matches {
                let routed = m["headers"].as_array().is_some_and(|h| h.iter().any(|h| h["name"] == PROVIDER_HEADER));
                all.push((m, routed));
            }
        }
        all.sort_by_key(|(m, _)| std::cmp::Reverse(key(m)));
        // A request the sidecar routed meets its own match before any
        // refusal: on a refusal's path, with every header the sidecar sets.
        let header = |m: &Value| m["headers"][0]["value"].clone();
        let values: Vec<Value> = all.iter().filter(|(_, routed)| *routed).map(|(m, _)| header(m)).collect();
        for (j, (refusal, _)) in all.iter().enumerate().filter(|(_, (_, routed))| !routed) {
            for value in &values {
                let first = all.iter().position(|(m, routed)| {
                    *routed
                        && header(m) == *value
                        && (m.get("path").is_none()
                            || (m["path"] == refusal["path"] && m["method"] == refusal["method"]))
                });
                assert!(first.unwrap() < j, "{value}'s requests are shadowed by {refusal}");
            }
        }
    }

    #[test]
    fn envoy_gateway_refuses_unrouted_requests_unless_open_and_anonymous() {
        let policy = parse_policy(&format!("{POLICY}access: {{require: key, keyStore: k.yaml}}\n")).unwrap();
        let files = render_envoy_gateway(&policy, &eg_opts()).unwrap();
        let docs = docs(&files, "50-httproute.yaml");
        let rules = docs[0]["spec"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 3 + 4 + 2);
        assert!(rules[3..].iter().all(|r| r.get("backendRefs").is_none()), "no unrouted request reaches a provider");
        let families = [ApiFamily::OpenAi, ApiFamily::Anthropic, ApiFamily::Gemini, ApiFamily::Bedrock];
        for (rule, family) in rules[3..7].iter().zip(families) {
            let api = ApiKind::ALL.into_iter().find(|a| a.family() == family).unwrap();
            check_eg_reply(rule, &docs, Unrouted::Api(api));
            assert_eq!(rule["matches"], json!(eg_api_matches(None, Some(family))));
        }
        check_eg_not_found(&rules[7..], &docs);
        check_eg_order(rules);
    }

    #[test]
    fn envoy_gateway_target_gateway_same_namespace() {
        let policy = parse_policy(POLICY).unwrap();
        let opts =
            K8sOptions { target_kind: TargetKind::Gateway, gateway_namespace: Some("tollgate".into()), ..eg_opts() };
        let files = render_envoy_gateway(&policy, &opts).unwrap();
        assert!(files.iter().all(|(n, _)| n != "60-referencegrant.yaml"));
        let eep = &docs(&files, "30-envoyextensionpolicy.yaml")[0];
        assert_eq!(eep["spec"]["targetRefs"][0]["kind"], "Gateway");
        assert_eq!(eep["spec"]["targetRefs"][0]["name"], "eg");
    }

    #[test]
    fn provider_routes_carry_the_policys_timeouts() {
        let timeouts = "timeouts: {requestMs: 30000, attemptMs: 90000, idleMs: 400000, totalMs: 600000}\n";
        let policy = parse_policy(&format!("{POLICY}{timeouts}")).unwrap();
        let istio = render_istio(&policy, &K8sOptions::default()).unwrap();
        let vs = kind(&docs(&istio, "40-providers.yaml"), "VirtualService").clone();
        let routes = vs["spec"]["http"].as_array().unwrap();
        let to_providers: Vec<&Value> = routes.iter().filter(|r| r.get("route").is_some()).collect();
        assert!(!to_providers.is_empty());
        assert!(to_providers.iter().all(|r| r["timeout"] == "600s"), "{routes:?}");
        // Every provider route (by name) gets the attempt and idle timeouts
        // as plain Envoy has them; the gateway's HCM the request timeout.
        let ef = &docs(&istio, "30-envoyfilter.yaml")[0];
        let patches = ef["spec"]["configPatches"].as_array().unwrap();
        let patched: Vec<&Value> = patches.iter().filter(|p| p["applyTo"] == "HTTP_ROUTE").collect();
        let names: Vec<&str> = to_providers.iter().filter_map(|r| r["name"].as_str()).collect();
        assert_eq!(names.len(), to_providers.len(), "every provider route is named: {routes:?}");
        for name in &names {
            let p = patched
                .iter()
                .find(|p| p["match"]["routeConfiguration"]["vhost"]["route"]["name"] == *name)
                .unwrap_or_else(|| panic!("no timeouts for {name}"));
            assert_eq!(p["patch"]["operation"], "MERGE");
            assert_eq!(
                p["patch"]["value"]["route"],
                json!({"idle_timeout": "400s", "retry_policy": {"per_try_timeout": "90s"}})
            );
        }
        assert_eq!(patched.len(), names.len());
        let hcm = patches.iter().find(|p| p["applyTo"] == "NETWORK_FILTER").unwrap();
        assert_eq!(hcm["patch"]["value"]["typed_config"]["request_timeout"], "30s");

        let eg = render_envoy_gateway(&policy, &eg_opts()).unwrap();
        let files = docs(&eg, "50-httproute.yaml");
        let route = &files[0];
        let rules = route["spec"]["rules"].as_array().unwrap();
        let with_backends: Vec<&Value> = rules.iter().filter(|r| r.get("backendRefs").is_some()).collect();
        assert!(!with_backends.is_empty());
        assert!(with_backends.iter().all(|r| r["timeouts"]["request"] == "600s"), "{rules:?}");
        let btp = kind(&files, "BackendTrafficPolicy");
        assert_eq!(
            btp["spec"]["targetRefs"][0],
            json!({"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": route["metadata"]["name"]})
        );
        assert_eq!(btp["spec"]["retry"], json!({"numRetries": 0, "perRetry": {"timeout": "90s"}}));
        assert_eq!(btp["spec"]["timeout"]["http"]["requestTimeout"], "600s");
        let ctp = kind(&docs(&eg, "20-envoyproxy.yaml"), "ClientTrafficPolicy").clone();
        assert_eq!(
            ctp["spec"]["timeout"]["http"],
            json!({"requestReceivedTimeout": "30s", "streamIdleTimeout": "400s"})
        );
        // A shorter idle timeout does not cut MCP streams sooner than plain Envoy does.
        let short = parse_policy(&format!("{POLICY}timeouts: {{idleMs: 150000}}\n")).unwrap();
        let eg = render_envoy_gateway(&short, &eg_opts()).unwrap();
        let ctp = kind(&docs(&eg, "20-envoyproxy.yaml"), "ClientTrafficPolicy").clone();
        assert_eq!(ctp["spec"]["timeout"]["http"]["streamIdleTimeout"], "300s");
    }

    #[test]
    fn istio_fallback_routes_point_at_the_aliases_aggregate_clusters() {
        let policy = parse_policy(&format!(
            "{POLICY}  smart: {{attemptTimeoutMs: 1500, targets: [{{provider: openai, model: gpt-4o}}, {{provider: anthropic, model: claude-sonnet-4-5}}]}}\n"
        ))
        .unwrap();
        let files = render_istio(&policy, &K8sOptions::default()).unwrap();
        let sidecar = format!("outbound|{}||tollgate.tollgate.svc.cluster.local", policy.sidecar.grpc_port);
        let expected = crate::cli::envoy::fallback(
            &policy,
            SidecarRef { cluster: &sidecar, authority: Some("tollgate.tollgate.svc.cluster.local") },
            "tollgate_",
        )
        .unwrap();
        assert_eq!(expected.routes.len(), 2, "one route per possible first target");
        let vs = kind(&docs(&files, "40-providers.yaml"), "VirtualService").clone();
        let filter = &docs(&files, "50-fallback.yaml")[0];
        let patches = filter["spec"]["configPatches"].as_array().unwrap();
        // Every cluster the plain Envoy bootstrap has for the alias, with the
        // upstream ext_proc reaching the sidecar through Istio's cluster.
        let added: Vec<&Value> =
            patches.iter().filter(|p| p["applyTo"] == "CLUSTER").map(|p| &p["patch"]["value"]).collect();
        assert_eq!(added, expected.clusters.iter().collect::<Vec<_>>());
        let upstream = &added[2]["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"][0]["typed_config"]
            ["grpc_service"]["envoy_grpc"]["cluster_name"];
        assert_eq!(upstream, &json!(sidecar));
        for route in &expected.routes {
            let name = format!("tollgate-fallback-smart-{}", route.first);
            assert!(route.action["cluster"].as_str().unwrap().starts_with("tollgate_alias_smart_"));
            let vs_route = vs["spec"]["http"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap();
            assert_eq!(vs_route["match"][0]["headers"][PROVIDER_HEADER]["exact"], route.header_value);
            assert_eq!(vs_route["retries"]["attempts"], 1);
            assert_eq!(vs_route["retries"]["perTryTimeout"], "1.5s");
            assert!(vs_route["retries"]["retryOn"].as_str().unwrap().contains("429"));
            let merge = patches
                .iter()
                .find(|p| {
                    p["applyTo"] == "HTTP_ROUTE" && p["match"]["routeConfiguration"]["vhost"]["route"]["name"] == name
                })
                .unwrap();
            assert_eq!(merge["patch"]["operation"], "MERGE");
            assert_eq!(merge["patch"]["value"]["route"]["cluster"], route.action["cluster"]);
        }
        assert!(patches
            .iter()
            .any(|p| p["applyTo"] == "VIRTUAL_HOST" && p["patch"]["value"]["include_request_attempt_count"] == true));
    }

    #[test]
    fn envoy_gateway_fallback_patches_the_rules_routes() {
        let policy = parse_policy(&format!(
            "{POLICY}  smart: {{targets: [{{provider: openai, model: gpt-4o}}, {{provider: local, model: llama}}]}}\n"
        ))
        .unwrap();
        let opts = K8sOptions { hosts: vec!["ai.example.com".into()], ..eg_opts() };
        let files = render_envoy_gateway(&policy, &opts).unwrap();
        let eg_cluster = "envoyextensionpolicy/default/tollgate/extproc/0";
        let sidecar = SidecarRef { cluster: eg_cluster, authority: Some("tollgate.tollgate.svc.cluster.local") };
        let expected = crate::cli::envoy::fallback(&policy, sidecar, "tollgate_").unwrap();
        let route = &docs(&files, "50-httproute.yaml")[0];
        let rules = route["spec"]["rules"].as_array().unwrap();
        assert_eq!(route["spec"]["parentRefs"][0]["sectionName"], "http", "attached to the patched listener only");
        let patch = &docs(&files, "70-fallback.yaml")[0];
        assert_eq!(patch["kind"], "EnvoyPatchPolicy");
        assert_eq!(patch["spec"]["targetRef"]["name"], "eg");
        let ops = patch["spec"]["jsonPatches"].as_array().unwrap();
        let clusters: Vec<&Value> = ops
            .iter()
            .filter(|o| o["type"] == "type.googleapis.com/envoy.config.cluster.v3.Cluster")
            .map(|o| &o["operation"]["value"])
            .collect();
        // The upstream ext_proc reaches the sidecar through Envoy Gateway's own
        // cluster for the EnvoyExtensionPolicy (with its mutual TLS): no
        // cluster of the patch's own goes there in plaintext.
        assert_eq!(clusters, expected.clusters.iter().collect::<Vec<_>>());
        assert_eq!(eg_ext_proc_cluster(&opts, "default"), eg_cluster);
        let upstream = &clusters[2]["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"][0]["typed_config"]
            ["grpc_service"]["envoy_grpc"];
        assert_eq!(upstream["cluster_name"], eg_cluster);
        assert_eq!(upstream["authority"], "tollgate.tollgate.svc.cluster.local");
        for r in &expected.routes {
            // The rule matching the variant's header, and the patch replacing
            // its route's action by the alias's (rule index in the name).
            let i = rules.iter().position(|rule| rule["matches"][0]["headers"][0]["value"] == r.header_value).unwrap();
            let name = format!("httproute/default/tollgate/rule/{i}/match/0/ai_example_com");
            let op =
                ops.iter().find(|o| o["operation"]["jsonPath"].as_str().is_some_and(|p| p.contains(&name))).unwrap();
            assert_eq!(op["name"], "default/eg/http");
            assert_eq!(op["operation"]["op"], "replace");
            assert_eq!(op["operation"]["path"], "/route");
            assert_eq!(op["operation"]["value"], r.action);
        }
    }

    #[test]
    fn jwt_is_verified_by_the_platforms_own_policy() {
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, r#"{"keys": [{"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"}]}"#).unwrap();
        let policy = parse_policy(&format!(
            "{POLICY}access: {{require: jwt, jwt: {{issuer: 'https://idp.example', audiences: [tollgate], jwksFile: '{}'}}}}\n",
            jwks.display()
        ))
        .unwrap();
        let istio = render_istio(&policy, &K8sOptions::default()).unwrap();
        let authn = &docs(&istio, "60-jwt.yaml")[0];
        assert_eq!(authn["kind"], "RequestAuthentication");
        let rule = &authn["spec"]["jwtRules"][0];
        assert_eq!(rule["issuer"], "https://idp.example");
        assert_eq!(rule["audiences"], json!(["tollgate"]));
        let keys: Value = serde_json::from_str(rule["jwks"].as_str().unwrap()).unwrap();
        assert_eq!(keys["keys"][0]["kid"], "k1");
        // ext_proc is sent the verified payload.
        let filter = &docs(&istio, "30-envoyfilter.yaml")[0];
        assert_eq!(
            filter["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["metadata_options"]
                ["forwarding_namespaces"]["untyped"],
            json!([crate::identity::JWT_NAMESPACE])
        );

        let eg = render_envoy_gateway(&policy, &eg_opts()).unwrap();
        let security = &docs(&eg, "80-jwt.yaml")[0];
        let provider = &security["spec"]["jwt"]["providers"][0];
        assert_eq!(provider["name"], JWT_PAYLOAD_KEY, "the payload's metadata key");
        assert_eq!(security["spec"]["jwt"]["optional"], true);
        assert_eq!(provider["localJWKS"]["inline"], rule["jwks"]);

        // A JWKS file that is missing or is not one is an error naming it.
        for bad in ["", "{\"nokeys\": 1}"] {
            std::fs::write(&jwks, bad).unwrap();
            let err = render_istio(&policy, &K8sOptions::default()).unwrap_err().to_string();
            assert!(err.contains("access.jwt.jwksFile"), "{err}");
        }
    }

    /// The NetworkPolicy of a rendering: the sidecar's pods, gRPC from the
    /// gateway's pods only, admin from the sidecar's namespace only.
    fn check_network_policy(files: &Files, pods_ns: &str, pods: Value) {
        let access = docs(files, "05-access.yaml");
        let np = kind(&access, "NetworkPolicy");
        assert_eq!(np["metadata"]["namespace"], "tollgate");
        assert_eq!(np["spec"]["podSelector"]["matchLabels"], json!({"app.kubernetes.io/name": "tollgate"}));
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));
        let rules = np["spec"]["ingress"].as_array().unwrap();
        assert_eq!(rules.len(), 2, "nothing else is admitted");
        assert_eq!(rules[0]["ports"], json!([{"protocol": "TCP", "port": 10001}]));
        assert_eq!(
            rules[0]["from"],
            json!([{
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": pods_ns}},
                "podSelector": {"matchLabels": pods},
            }]),
            "one peer: pods with the gateway's labels in the gateway's namespace (both must match)"
        );
        assert_eq!(rules[1]["ports"], json!([{"protocol": "TCP", "port": 10003}]));
        assert_eq!(rules[1]["from"], json!([{"podSelector": {}}]), "the sidecar's own namespace");
        // The Deployment's pods are the ones selected.
        let dep = kind(&docs(files, "10-sidecar.yaml"), "Deployment").clone();
        assert_eq!(dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"], "tollgate");
    }

    /// The sidecar reads its admin token from an optional Secret.
    fn check_admin_token(files: &Files) {
        let dep = kind(&docs(files, "10-sidecar.yaml"), "Deployment").clone();
        let env = dep["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap().clone();
        let token = env.iter().find(|e| e["name"] == crate::server::ADMIN_TOKEN_ENV).unwrap();
        assert_eq!(
            token["valueFrom"]["secretKeyRef"],
            json!({"name": "tollgate-admin", "key": "token", "optional": true})
        );
        // The admin port listens beyond loopback (the probes reach it), so
        // the sidecar asks for the token.
        let args = dep["spec"]["template"]["spec"]["containers"][0]["args"].as_array().unwrap().clone();
        assert_eq!(args[6], "0.0.0.0:10003");
        let probe = &dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"];
        assert_eq!(probe["path"], "/readyz");
    }

    fn pod_policy_of(files: &Files) -> Policy {
        let cm = kind(&docs(files, "10-sidecar.yaml"), "ConfigMap").clone();
        Policy::from_json(cm["data"][POLICY_FILE].as_str().unwrap().as_bytes()).unwrap()
    }

    #[test]
    fn istio_admits_only_the_ingress_gateways_identity() {
        let policy = parse_policy(POLICY).unwrap();
        let files = render_istio(&policy, &K8sOptions::default()).unwrap();
        // Plaintext gRPC in the pod: the mesh authenticates Envoy.
        let pod = pod_policy_of(&files);
        pod.validate().unwrap();
        assert_eq!(pod.sidecar.tls.mode, SidecarTlsMode::Mesh);
        assert_eq!(pod.sidecar.tls.dir, TLS_DIR, "no path of the rendering machine");
        assert!(files.iter().all(|(n, _)| n != "06-tls.yaml"), "no certificates of Tollgate's own");
        let access = docs(&files, "05-access.yaml");
        let peer = kind(&access, "PeerAuthentication");
        assert_eq!(peer["apiVersion"], "security.istio.io/v1");
        assert_eq!(peer["metadata"]["namespace"], "tollgate");
        assert_eq!(peer["spec"]["selector"]["matchLabels"], json!({"app.kubernetes.io/name": "tollgate"}));
        assert_eq!(peer["spec"]["mtls"]["mode"], "STRICT");
        let authz = kind(&access, "AuthorizationPolicy");
        assert_eq!(authz["metadata"]["namespace"], "tollgate");
        assert_eq!(authz["spec"]["selector"], peer["spec"]["selector"]);
        assert_eq!(authz["spec"]["action"], "ALLOW");
        let rules = authz["spec"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0],
            json!({
                "from": [{"source": {"principals": ["cluster.local/ns/istio-system/sa/istio-ingressgateway"]}}],
                "to": [{"operation": {"ports": ["10001"]}}],
            })
        );
        // The admin port: the probes' paths, from anyone (they carry no
        // identity); nothing else.
        assert!(rules[1].get("from").is_none());
        assert_eq!(
            rules[1]["to"],
            json!([{"operation": {"ports": ["10003"], "methods": ["GET"], "paths": ["/healthz", "/readyz"]}}])
        );
        check_network_policy(&files, "istio-system", json!({"istio": "ingressgateway"}));
        check_admin_token(&files);
    }

    #[test]
    fn istio_identity_and_pods_follow_the_options() {
        let policy = parse_policy(POLICY).unwrap();
        let opts = K8sOptions {
            gateway_namespace: Some("edge".into()),
            gateway_selector: [("app".to_string(), "ai-gw".to_string())].into_iter().collect(),
            gateway_service_account: "ai-gw".into(),
            trust_domain: "corp.example".into(),
            ..Default::default()
        };
        let files = render_istio(&policy, &opts).unwrap();
        let access = docs(&files, "05-access.yaml");
        let authz = kind(&access, "AuthorizationPolicy");
        assert_eq!(
            authz["spec"]["rules"][0]["from"][0]["source"]["principals"],
            json!(["corp.example/ns/edge/sa/ai-gw"])
        );
        check_network_policy(&files, "edge", json!({"app": "ai-gw"}));
        // Pods elsewhere than the gateway's config (a separately deployed gateway).
        let opts = K8sOptions {
            gateway_pods_namespace: Some("gateways".into()),
            gateway_pods_selector: Some([("gw".to_string(), "ai".to_string())].into_iter().collect()),
            ..opts
        };
        check_network_policy(&render_istio(&policy, &opts).unwrap(), "gateways", json!({"gw": "ai"}));
    }

    #[test]
    fn istio_gateway_strips_gateway_headers_and_normalises_paths() {
        let policy = parse_policy(POLICY).unwrap();
        let files = render_istio(&policy, &K8sOptions::default()).unwrap();
        let ef = &docs(&files, "30-envoyfilter.yaml")[0];
        let patches = ef["spec"]["configPatches"].as_array().unwrap();
        // The filter, the HCM settings, the header filter; then the provider routes' timeouts.
        assert_eq!(patches.iter().filter(|p| p["applyTo"] != "HTTP_ROUTE").count(), 3);
        let hcm = &patches[1];
        assert_eq!(hcm["applyTo"], "NETWORK_FILTER");
        assert_eq!(hcm["match"]["context"], "GATEWAY");
        assert_eq!(
            hcm["match"]["listener"]["filterChain"]["filter"]["name"],
            "envoy.filters.network.http_connection_manager"
        );
        assert_eq!(hcm["patch"]["operation"], "MERGE");
        let merged = &hcm["patch"]["value"]["typed_config"];
        assert!(merged["@type"].as_str().unwrap().ends_with(".HttpConnectionManager"));
        // The same settings as plain Envoy's listener.
        let plain = crate::cli::envoy::render(
            &policy,
            &crate::cli::envoy::RenderOptions {
                wasm_path: std::path::Path::new("/x.wasm"),
                access_log: "/dev/null",
                plugin_config: None,
            },
        )
        .unwrap();
        let plain_hcm = &plain["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        for field in ["normalize_path", "merge_slashes", "path_with_escaped_slashes_action"] {
            assert_eq!(merged[field], plain_hcm[field], "{field}");
        }
        let strip = &patches[2];
        assert_eq!(strip["applyTo"], "HTTP_FILTER");
        assert_eq!(strip["patch"]["operation"], "INSERT_FIRST");
        assert_eq!(strip["patch"]["value"], plain_hcm["http_filters"][0]);
        assert_eq!(strip["patch"]["value"], strip_gateway_headers());
    }

    #[test]
    fn envoy_gateway_keeps_mutual_tls_to_the_sidecar() {
        let policy = parse_policy(POLICY).unwrap();
        let files = render_envoy_gateway(&policy, &eg_opts()).unwrap();
        let dir = test_tls_dir();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        // The sidecar serves mutual TLS from the mounted certificates.
        let pod = pod_policy_of(&files);
        pod.validate().unwrap();
        assert_eq!(pod.sidecar.tls.mode, SidecarTlsMode::Mutual);
        assert_eq!(pod.sidecar.tls.dir, TLS_DIR);
        let tls = docs(&files, "06-tls.yaml");
        let secrets: Vec<&Value> = tls.iter().filter(|d| d["kind"] == "Secret").collect();
        assert_eq!(secrets.len(), 2);
        let sidecar = secrets.iter().find(|s| s["metadata"]["name"] == "tollgate-sidecar-tls").unwrap();
        assert_eq!(sidecar["metadata"]["namespace"], "tollgate");
        assert_eq!(
            sidecar["stringData"],
            json!({"ca.pem": read("ca.pem"), "sidecar.pem": read("sidecar.pem"), "sidecar.key": read("sidecar.key")}),
            "the sidecar gets its own key and the authority, not Envoy's key"
        );
        let client = secrets.iter().find(|s| s["metadata"]["name"] == "tollgate-envoy-client").unwrap();
        assert_eq!(client["metadata"]["namespace"], "default", "beside the EnvoyProxy that references it");
        assert_eq!(client["type"], "kubernetes.io/tls");
        assert_eq!(client["stringData"], json!({"tls.crt": read("envoy.pem"), "tls.key": read("envoy.key")}));
        let ca = kind(&tls, "ConfigMap");
        assert_eq!(ca["metadata"]["namespace"], "tollgate");
        assert_eq!(ca["data"]["ca.crt"], read("ca.pem"));
        let btls = kind(&tls, "BackendTLSPolicy");
        assert_eq!(btls["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(btls["metadata"]["namespace"], "tollgate", "beside the Service");
        assert_eq!(
            btls["spec"]["targetRefs"],
            json!([{"group": "", "kind": "Service", "name": "tollgate", "sectionName": "grpc"}])
        );
        assert_eq!(btls["spec"]["validation"]["hostname"], crate::tls::SIDECAR_NAME);
        assert_eq!(
            btls["spec"]["validation"]["caCertificateRefs"],
            json!([{"group": "", "kind": "ConfigMap", "name": "tollgate-sidecar-ca"}])
        );
        // The Service's port the policy names is the sidecar's gRPC port.
        let svc = kind(&docs(&files, "10-sidecar.yaml"), "Service").clone();
        assert_eq!(svc["spec"]["ports"][0]["name"], "grpc");
        // Envoy presents its client certificate.
        let proxy = &docs(&files, "20-envoyproxy.yaml")[0];
        assert_eq!(
            proxy["spec"]["backendTLS"]["clientCertificateRef"],
            json!({"group": "", "kind": "Secret", "name": "tollgate-envoy-client", "namespace": "default"})
        );
        // The sidecar's pod mounts its certificate where the pod policy says,
        // readable by its group only.
        let dep = kind(&docs(&files, "10-sidecar.yaml"), "Deployment").clone();
        let pod_spec = &dep["spec"]["template"]["spec"];
        let volume = pod_spec["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "tls").unwrap();
        assert_eq!(volume["secret"]["secretName"], "tollgate-sidecar-tls");
        assert_eq!(volume["secret"]["defaultMode"], 0o440);
        let mount =
            pod_spec["containers"][0]["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "tls").unwrap();
        assert_eq!(mount["mountPath"], TLS_DIR);
        assert_eq!(mount["readOnly"], true);
        assert_eq!(pod_spec["securityContext"]["fsGroup"], SIDECAR_UID);
        // The sidecar's certificate is what the BackendTLSPolicy checks.
        assert!(crate::tls::server_config(&dir).is_ok());
        check_network_policy(
            &files,
            "envoy-gateway-system",
            json!({"gateway.envoyproxy.io/owning-gateway-name": "eg", "gateway.envoyproxy.io/owning-gateway-namespace": "default"}),
        );
        check_admin_token(&files);
        assert!(kind(&docs(&files, "05-access.yaml"), "NetworkPolicy").is_object());
        assert!(docs(&files, "05-access.yaml").iter().all(|d| d["kind"] == "NetworkPolicy"));
    }

    #[test]
    fn envoy_gateway_strips_gateway_headers_and_keeps_escaped_slashes() {
        let policy = parse_policy(POLICY).unwrap();
        let files = render_envoy_gateway(&policy, &eg_opts()).unwrap();
        let ctp = kind(&docs(&files, "20-envoyproxy.yaml"), "ClientTrafficPolicy").clone();
        assert_eq!(ctp["metadata"]["namespace"], "default");
        assert_eq!(
            ctp["spec"]["targetRefs"],
            json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "eg"}])
        );
        assert_eq!(ctp["spec"]["headers"]["earlyRequestHeaders"]["remove"], json!(GATEWAY_REQUEST_HEADERS));
        assert_eq!(ctp["spec"]["path"], json!({"escapedSlashesAction": "KeepUnchanged", "disableMergeSlashes": false}));
    }

    #[test]
    fn envoy_gateway_certificates_are_made_once_and_read_from_the_directory() {
        let policy = parse_policy(POLICY).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let opts = K8sOptions { tls_dir: Some(dir.clone()), ..Default::default() };
        let first = render_envoy_gateway(&policy, &opts).unwrap();
        assert!(crate::tls::exists(&dir), "made when absent");
        assert_eq!(render_envoy_gateway(&policy, &opts).unwrap(), first, "read, not made again");
        // Without the option: the policy's own directory.
        let mut policy = policy;
        policy.sidecar.tls.dir = dir.display().to_string();
        assert_eq!(render_envoy_gateway(&policy, &K8sOptions::default()).unwrap(), first);
        // Other certificates, other manifests.
        crate::tls::ensure(&dir, true).unwrap();
        assert_ne!(render_envoy_gateway(&policy, &K8sOptions::default()).unwrap(), first);
    }

    #[test]
    fn rendering_is_deterministic() {
        let policy = parse_policy(POLICY).unwrap();
        let opts = eg_opts();
        assert_eq!(render_istio(&policy, &opts).unwrap(), render_istio(&policy, &opts).unwrap());
        assert_eq!(render_envoy_gateway(&policy, &opts).unwrap(), render_envoy_gateway(&policy, &opts).unwrap());
    }

    /// The test policy with an `mcp` section: MCP servers over HTTP and
    /// HTTPS, two on one host, one in the cluster, one by address, a REST
    /// API from an OpenAPI document, credentials from the environment and
    /// from a file.
    fn mcp_policy(dir: &std::path::Path) -> Policy {
        let spec = dir.join("weather.json");
        std::fs::write(&spec, r#"{"openapi": "3.0.3", "info": {"title": "w", "version": "1"}, "paths": {}}"#).unwrap();
        let mcp = format!(
            "mcp:\n  servers:\n    crm: {{url: 'http://crm.internal:8080/mcp', keyEnv: CRM_MCP_TOKEN}}\n    crm-admin: {{url: 'http://crm.internal:8081/mcp', keyEnv: OPENAI_API_KEY}}\n    github: {{url: 'https://mcp.example.com/mcp', keyFile: /run/secrets/github}}\n    tickets: {{url: 'http://tickets.support.svc.cluster.local:9000/mcp'}}\n    lab: {{url: 'http://10.0.0.9:7000/mcp'}}\n    weather: {{openapi: '{}', baseUrl: 'http://weather.internal'}}\n  virtualServers:\n    support: {{tools: ['crm/*', 'weather/get_forecast']}}\n    ops: {{tools: ['github/*', 'tickets/*', 'lab/*', 'crm-admin/*']}}\n",
            spec.display()
        );
        parse_policy(&format!("{POLICY}{mcp}")).unwrap()
    }

    #[test]
    fn no_mcp_section_renders_no_mcp_objects() {
        let policy = parse_policy(POLICY).unwrap();
        for files in
            [render_istio(&policy, &K8sOptions::default()).unwrap(), render_envoy_gateway(&policy, &eg_opts()).unwrap()]
        {
            assert!(files.iter().all(|(n, text)| !n.contains("mcp") && !text.contains("/mcp/")), "{files:?}");
        }
    }

    #[test]
    fn istio_routes_mcp_virtual_servers_to_the_sidecar() {
        let tmp = tempfile::tempdir().unwrap();
        let policy = mcp_policy(tmp.path());
        let files = render_istio(&policy, &K8sOptions::default()).unwrap();
        // First in the VirtualService: exact paths to the sidecar's Service.
        let routing = docs(&files, "40-providers.yaml");
        let vs = kind(&routing, "VirtualService");
        let http = vs["spec"]["http"].as_array().unwrap();
        for (i, name) in ["ops", "support"].iter().enumerate() {
            assert_eq!(
                http[i],
                json!({
                    "name": format!("tollgate-mcp-{name}"),
                    "match": [{"uri": {"exact": format!("/mcp/{name}")}}],
                    "route": [{"destination": {"host": "tollgate.tollgate.svc.cluster.local", "port": {"number": 10001}}}],
                }),
                "no timeout: Istio sets none by default"
            );
        }
        assert!(http[2]["match"][0]["headers"]["x-tollgate-provider"].is_object(), "then the providers");
        // The EnvoyFilter gives each route plain Envoy's settings, by name.
        let mcp = docs(&files, "45-mcp.yaml");
        let ef = kind(&mcp, "EnvoyFilter");
        assert_eq!(ef["metadata"]["namespace"], "istio-system");
        assert_eq!(ef["spec"]["workloadSelector"]["labels"], json!({"istio": "ingressgateway"}));
        let patches = ef["spec"]["configPatches"].as_array().unwrap();
        let plain = crate::cli::envoy::mcp_routes(&policy, "x");
        assert_eq!(patches.len(), 2);
        for (i, name) in ["ops", "support"].iter().enumerate() {
            let p = &patches[i];
            assert_eq!(p["applyTo"], "HTTP_ROUTE");
            assert_eq!(p["match"]["context"], "GATEWAY");
            assert_eq!(p["match"]["routeConfiguration"]["vhost"]["route"]["name"], format!("tollgate-mcp-{name}"));
            assert_eq!(p["patch"]["operation"], "MERGE");
            let value = &p["patch"]["value"];
            assert_eq!(value["route"], json!({"timeout": "0s", "idle_timeout": "300s"}));
            let per_filter = value["typed_per_filter_config"].as_object().unwrap();
            assert_eq!(
                per_filter["envoy.filters.http.ext_proc"],
                plain[i]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]
            );
            assert_eq!(per_filter["envoy.filters.http.ext_proc"]["disabled"], true);
            // The WasmPlugin's filter, by the name Istio gives it, steps aside too.
            assert_eq!(per_filter["istio-system.tollgate"]["disabled"], true);
            assert_eq!(per_filter.len(), 2);
        }
        let wasm = kind(&docs(&files, "20-wasmplugin.yaml"), "WasmPlugin").clone();
        assert_eq!(
            format!(
                "{}.{}",
                wasm["metadata"]["namespace"].as_str().unwrap(),
                wasm["metadata"]["name"].as_str().unwrap()
            ),
            "istio-system.tollgate"
        );
        // The ext_proc filter those routes turn off is the one inserted on the gateway.
        let ext_proc = &docs(&files, "30-envoyfilter.yaml")[0]["spec"]["configPatches"][0]["patch"]["value"];
        assert_eq!(ext_proc["name"], "envoy.filters.http.ext_proc");
        // Egress for the sidecar: one entry per host outside the cluster.
        let entries: Vec<&Value> = mcp.iter().filter(|d| d["kind"] == "ServiceEntry").collect();
        let names: Vec<&str> = entries.iter().map(|e| e["metadata"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["tollgate-mcp-lab", "tollgate-mcp-crm", "tollgate-mcp-github", "tollgate-mcp-weather"]);
        for e in &entries {
            assert_eq!(e["metadata"]["namespace"], "tollgate", "beside the sidecar");
            assert_eq!(e["spec"]["exportTo"], json!(["."]), "for the sidecar alone");
            assert_eq!(e["spec"]["location"], "MESH_EXTERNAL");
        }
        let by_name = |n: &str| *entries.iter().find(|e| e["metadata"]["name"] == n).unwrap();
        let crm = by_name("tollgate-mcp-crm");
        assert_eq!(crm["spec"]["hosts"], json!(["crm.internal"]));
        assert_eq!(crm["spec"]["resolution"], "DNS");
        assert_eq!(
            crm["spec"]["ports"],
            json!([
                {"number": 8080, "name": "http-8080", "protocol": "HTTP"},
                {"number": 8081, "name": "http-8081", "protocol": "HTTP"},
            ])
        );
        assert_eq!(
            by_name("tollgate-mcp-github")["spec"]["ports"],
            json!([{"number": 443, "name": "tls-443", "protocol": "TLS"}]),
            "the sidecar speaks TLS itself"
        );
        assert_eq!(by_name("tollgate-mcp-weather")["spec"]["hosts"], json!(["weather.internal"]));
        let lab = by_name("tollgate-mcp-lab");
        assert_eq!(lab["spec"]["hosts"], json!(["lab.mcp.tollgate.internal"]));
        assert_eq!(lab["spec"]["addresses"], json!(["10.0.0.9"]));
        assert_eq!(lab["spec"]["resolution"], "STATIC");
        assert_eq!(lab["spec"]["endpoints"], json!([{"address": "10.0.0.9"}]));
        check_mcp_pod(&files, tmp.path());
        // Every route plain Envoy has for MCP, whatever the policy adds (access.jwt here).
        let jwks = tmp.path().join("jwks.json");
        std::fs::write(&jwks, r#"{"keys": []}"#).unwrap();
        let mut with_jwt = policy.clone();
        with_jwt.access.jwt = Some(
            serde_json::from_value(json!({"issuer": "https://idp.example", "jwksFile": jwks.display().to_string()}))
                .unwrap(),
        );
        let plain: Vec<Value> =
            crate::cli::envoy::mcp_routes(&with_jwt, "x").iter().map(|r| r["match"]["path"].clone()).collect();
        for files in [
            render_istio(&with_jwt, &K8sOptions::default()).unwrap(),
            render_envoy_gateway(&with_jwt, &eg_opts()).unwrap(),
        ] {
            let paths: Vec<Value> = if files.iter().any(|(n, _)| n == "45-mcp.yaml") {
                let vs = kind(&docs(&files, "40-providers.yaml"), "VirtualService").clone();
                let http = vs["spec"]["http"].as_array().unwrap().clone();
                let mcp: Vec<Value> =
                    http.into_iter().take_while(|r| r["match"][0]["uri"]["exact"].is_string()).collect();
                let ef = kind(&docs(&files, "45-mcp.yaml"), "EnvoyFilter").clone();
                let patches = ef["spec"]["configPatches"].as_array().unwrap().clone();
                assert_eq!(patches.iter().filter(|p| p["applyTo"] == "HTTP_ROUTE").count(), mcp.len());
                mcp.iter().map(|r| r["match"][0]["uri"]["exact"].clone()).collect()
            } else {
                let route = kind(&docs(&files, "55-mcp.yaml"), "HTTPRoute").clone();
                route["spec"]["rules"][0]["matches"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["path"]["value"].clone())
                    .collect()
            };
            assert_eq!(paths, plain);
        }
        // The sidecar's gRPC port, which MCP shares, still answers the gateway alone.
        assert!(docs(&files, "05-access.yaml").iter().any(|d| d["kind"] == "AuthorizationPolicy"));
    }

    /// The sidecar's pod has what the MCP servers need: credentials from the
    /// Secret, the OpenAPI document beside the policy, the pod's paths in
    /// the policy.
    fn check_mcp_pod(files: &Files, dir: &std::path::Path) {
        let pod = pod_policy_of(files);
        pod.validate().unwrap();
        assert_eq!(pod.mcp.servers["github"].key_file.as_deref(), Some("/etc/tollgate/keys/mcp.github"));
        assert_eq!(pod.mcp.servers["crm"].key_env.as_deref(), Some("CRM_MCP_TOKEN"));
        assert_eq!(pod.mcp.servers["weather"].openapi.as_deref(), Some("/etc/tollgate/policy/openapi-weather.json"));
        let sidecar = docs(files, "10-sidecar.yaml");
        let cm = kind(&sidecar, "ConfigMap");
        assert_eq!(cm["data"]["openapi-weather.json"], std::fs::read_to_string(dir.join("weather.json")).unwrap());
        let dep = kind(&sidecar, "Deployment");
        let spec = &dep["spec"]["template"]["spec"];
        let env = spec["containers"][0]["env"].as_array().unwrap();
        let from_secret =
            |var: &str| env.iter().filter(|e| e["name"] == var).map(|e| e["valueFrom"].clone()).collect::<Vec<_>>();
        assert_eq!(
            from_secret("CRM_MCP_TOKEN"),
            [json!({"secretKeyRef": {"name": "tollgate-provider-keys", "key": "CRM_MCP_TOKEN"}})]
        );
        assert_eq!(from_secret("OPENAI_API_KEY").len(), 1, "one variable for a provider and a server sharing it");
        let keys = spec["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "keys").unwrap();
        assert_eq!(
            keys["secret"]["items"],
            json!([{"key": "anthropic", "path": "anthropic"}, {"key": "mcp.github", "path": "mcp.github"}])
        );
        let text = &files.iter().find(|(n, _)| n == "10-sidecar.yaml").unwrap().1;
        assert!(text.contains("--from-literal=CRM_MCP_TOKEN=... --from-literal=mcp.github=..."), "{text}");
        assert!(text.contains("Provider keys and MCP server credentials"), "{text}");
    }

    #[test]
    fn envoy_gateway_routes_mcp_virtual_servers_to_the_sidecar() {
        let tmp = tempfile::tempdir().unwrap();
        let policy = mcp_policy(tmp.path());
        for target_kind in [TargetKind::HttpRoute, TargetKind::Gateway] {
            let opts = K8sOptions { target_kind, hosts: vec!["ai.example.com".into()], ..eg_opts() };
            let files = render_envoy_gateway(&policy, &opts).unwrap();
            let main = kind(&docs(&files, "50-httproute.yaml"), "HTTPRoute").clone();
            let main_policy = docs(&files, "30-envoyextensionpolicy.yaml")[0].clone();
            let mcp = docs(&files, "55-mcp.yaml");
            let route = kind(&mcp, "HTTPRoute");
            assert_eq!(
                route["metadata"],
                json!({"name": "tollgate-mcp", "namespace": "default", "labels": {"app.kubernetes.io/part-of": "tollgate"}})
            );
            assert_eq!(route["spec"]["parentRefs"], main["spec"]["parentRefs"], "where the providers' route is");
            assert_eq!(route["spec"]["hostnames"], json!(["ai.example.com"]));
            assert_eq!(
                route["spec"]["rules"],
                json!([{
                    "matches": [
                        {"path": {"type": "Exact", "value": "/mcp/ops"}},
                        {"path": {"type": "Exact", "value": "/mcp/support"}},
                    ],
                    "backendRefs": [{"group": "", "kind": "Service", "name": "tollgate", "namespace": "tollgate", "port": 10001}],
                    "timeouts": {"request": "0s"},
                }])
            );
            // The Service's port is HTTP/2 to Envoy Gateway and under the BackendTLSPolicy.
            let svc = kind(&docs(&files, "10-sidecar.yaml"), "Service").clone();
            assert_eq!(
                svc["spec"]["ports"][0],
                json!({"name": "grpc", "port": 10001, "targetPort": "grpc", "appProtocol": "grpc"})
            );
            // The filter, no ext_proc, on that route alone.
            let ext = kind(&mcp, "EnvoyExtensionPolicy");
            assert_eq!(ext["metadata"]["name"], "tollgate-mcp");
            assert_eq!(
                ext["spec"]["targetRefs"],
                json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "tollgate-mcp"}])
            );
            assert_eq!(ext["spec"]["wasm"], main_policy["spec"]["wasm"]);
            assert!(ext["spec"].get("extProc").is_none());
            assert!(main_policy["spec"]["extProc"].is_array());
            // The route may reach the Service in the sidecar's namespace.
            let grant = &docs(&files, "60-referencegrant.yaml")[0];
            assert_eq!(
                grant["spec"]["from"],
                json!([
                    {"group": "gateway.envoyproxy.io", "kind": "EnvoyExtensionPolicy", "namespace": "default"},
                    {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "default"},
                ])
            );
            // No egress objects: Envoy Gateway's sidecar is outside any mesh.
            assert!(files.iter().all(|(_, text)| !text.contains("kind: ServiceEntry")));
            check_mcp_pod(&files, tmp.path());
        }
        // Fallback's patch policy attaches the routes to one listener: the MCP route too.
        let policy = parse_policy(
            "providers:\n  openai: {kind: openai, baseUrl: 'https://api.openai.com'}\n  local: {kind: openai-compatible, baseUrl: 'http://10.0.0.7:8000'}\nmodels:\n  smart: {targets: [{provider: openai, model: a}, {provider: local, model: b}]}\nmcp:\n  virtualServers:\n    support: {}\n",
        )
        .unwrap();
        let files = render_envoy_gateway(&policy, &eg_opts()).unwrap();
        let route = kind(&docs(&files, "55-mcp.yaml"), "HTTPRoute").clone();
        assert_eq!(route["spec"]["parentRefs"][0]["sectionName"], "http");
        assert!(route["spec"].get("hostnames").is_none(), "every host");
    }

    /// `policy` with `access.jwt` (a JWKS file in `dir`).
    fn with_jwt(policy: &Policy, dir: &std::path::Path) -> Policy {
        let jwks = dir.join("jwks.json");
        std::fs::write(&jwks, r#"{"keys": [{"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"}]}"#).unwrap();
        let mut p = policy.clone();
        p.access.jwt = Some(
            serde_json::from_value(json!({
                "issuer": "https://idp.example",
                "audiences": ["tollgate"],
                "jwksFile": jwks.display().to_string(),
            }))
            .unwrap(),
        );
        p
    }

    #[test]
    fn istio_forwards_the_jwt_payload_to_the_sidecar_on_mcp_routes_only() {
        let tmp = tempfile::tempdir().unwrap();
        let policy = with_jwt(&mcp_policy(tmp.path()), tmp.path());
        let files = render_istio(&policy, &K8sOptions::default()).unwrap();
        // Envoy's JWT filter puts the verified payload in the header the sidecar reads.
        let rule = &docs(&files, "60-jwt.yaml")[0]["spec"]["jwtRules"][0];
        assert_eq!(rule["outputPayloadToHeader"], MCP_CLAIMS_HEADER);
        assert_eq!(rule["forwardOriginalToken"], false);
        // A client's copy is removed by the gateway's first filter, before Istio's JWT filter.
        let edge = docs(&files, "30-envoyfilter.yaml")[0]["spec"]["configPatches"].as_array().unwrap().clone();
        let first = edge.iter().find(|p| p["patch"]["operation"] == "INSERT_FIRST").unwrap();
        assert_eq!(first["applyTo"], "HTTP_FILTER");
        let removed = &first["patch"]["value"]["typed_config"]["mutations"]["request_mutations"];
        assert!(removed.as_array().unwrap().contains(&json!({"remove": MCP_CLAIMS_HEADER})), "{removed}");
        // Envoy's copy is removed just before the router, on every route but the MCP ones.
        let ef = kind(&docs(&files, "45-mcp.yaml"), "EnvoyFilter").clone();
        let patches = ef["spec"]["configPatches"].as_array().unwrap();
        let filter = patches.iter().find(|p| p["applyTo"] == "HTTP_FILTER").unwrap();
        assert_eq!(filter["patch"]["operation"], "INSERT_BEFORE");
        assert_eq!(
            filter["match"]["listener"]["filterChain"]["filter"],
            json!({"name": "envoy.filters.network.http_connection_manager", "subFilter": {"name": "envoy.filters.http.router"}})
        );
        assert_eq!(filter["match"]["context"], "GATEWAY");
        assert_eq!(filter["patch"]["value"], strip_jwt_claims());
        assert_eq!(
            filter["patch"]["value"]["typed_config"]["mutations"]["request_mutations"],
            json!([{"remove": MCP_CLAIMS_HEADER}])
        );
        let vs = kind(&docs(&files, "40-providers.yaml"), "VirtualService").clone();
        let to_sidecar: Vec<&Value> = vs["spec"]["http"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["route"][0]["destination"]["host"] == "tollgate.tollgate.svc.cluster.local")
            .collect();
        let routes: Vec<&Value> = patches.iter().filter(|p| p["applyTo"] == "HTTP_ROUTE").collect();
        let plain = crate::cli::envoy::mcp_routes(&policy, "x");
        assert_eq!(routes.len(), plain.len(), "the virtual servers and their metadata");
        assert_eq!(to_sidecar.len(), plain.len(), "no other route reaches the sidecar");
        for (r, p) in to_sidecar.iter().zip(&routes) {
            assert_eq!(p["match"]["routeConfiguration"]["vhost"]["route"]["name"], r["name"]);
            let per_filter = &p["patch"]["value"]["typed_per_filter_config"];
            assert_eq!(
                per_filter[ISTIO_CLAIMS_FILTER],
                json!({"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true})
            );
            assert_eq!(per_filter["envoy.filters.http.ext_proc"]["disabled"], true);
        }

        // No payload header without MCP routes or without JWTs.
        let files =
            render_istio(&with_jwt(&parse_policy(POLICY).unwrap(), tmp.path()), &K8sOptions::default()).unwrap();
        assert!(docs(&files, "60-jwt.yaml")[0]["spec"]["jwtRules"][0].get("outputPayloadToHeader").is_none());
        assert!(files.iter().all(|(_, text)| !text.contains(ISTIO_CLAIMS_FILTER)));
        let files = render_istio(&mcp_policy(tmp.path()), &K8sOptions::default()).unwrap();
        assert!(files.iter().all(|(_, text)| !text.contains(ISTIO_CLAIMS_FILTER)));
        let ef = kind(&docs(&files, "45-mcp.yaml"), "EnvoyFilter").clone();
        assert!(ef["spec"]["configPatches"].as_array().unwrap().iter().all(|p| p["applyTo"] == "HTTP_ROUTE"));
    }

    #[test]
    fn envoy_gateway_verifies_tokens_on_the_mcp_route_too() {
        let tmp = tempfile::tempdir().unwrap();
        let policy = with_jwt(&mcp_policy(tmp.path()), tmp.path());
        for target_kind in [TargetKind::HttpRoute, TargetKind::Gateway] {
            let files = render_envoy_gateway(&policy, &K8sOptions { target_kind, ..eg_opts() }).unwrap();
            let security = docs(&files, "80-jwt.yaml");
            assert_eq!(security.len(), 2);
            let (main, mcp) = (&security[0], &security[1]);
            assert_eq!(main["metadata"]["name"], "tollgate");
            assert_eq!(main["spec"]["targetRefs"][0]["kind"], target_kind.as_str());
            assert_eq!(mcp["metadata"]["name"], "tollgate-mcp");
            assert_eq!(
                mcp["spec"]["targetRefs"],
                json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "tollgate-mcp"}])
            );
            // The same verification; on the MCP route the consumer and team
            // claims are forwarded to the sidecar (Envoy Gateway cannot
            // forward the payload), on no other route.
            let mut same = mcp["spec"]["jwt"].clone();
            let forwarded = same["providers"][0].as_object_mut().unwrap().remove("claimToHeaders").unwrap();
            assert_eq!(same, main["spec"]["jwt"]);
            assert_eq!(
                forwarded,
                json!([
                    {"header": "x-tollgate-jwt-consumer", "claim": "sub"},
                    {"header": "x-tollgate-jwt-team", "claim": "team"},
                ])
            );
            assert_eq!(mcp["spec"]["jwt"]["optional"], true, "gateway keys still pass");
            // A client's copy of those headers never reaches the sidecar.
            let ctp = kind(&docs(&files, "20-envoyproxy.yaml"), "ClientTrafficPolicy").clone();
            let removed = ctp["spec"]["headers"]["earlyRequestHeaders"]["remove"].as_array().unwrap().clone();
            for header in [MCP_CLAIMS_HEADER, "x-tollgate-jwt-consumer", "x-tollgate-jwt-team"] {
                assert!(removed.contains(&json!(header)), "{header}: {removed:?}");
            }
        }
        // Without MCP routes, one SecurityPolicy.
        let files = render_envoy_gateway(&with_jwt(&parse_policy(POLICY).unwrap(), tmp.path()), &eg_opts()).unwrap();
        assert_eq!(docs(&files, "80-jwt.yaml").len(), 1);
    }
}
