//! `tollgate render istio|envoy-gateway`: the rendered manifests of the
//! quickstart policy are pinned by golden files, and every manifest validates
//! against the published Istio, Envoy Gateway, Gateway API and Kubernetes
//! schemas and typed models (npm `@kubernetes-models/*`, pinned in
//! tests/k8s/package-lock.json, installed by scripts/install.sh).
//!
//! Update the golden files after an intended change:
//!   TOLLGATE_UPDATE_GOLDEN=1 cargo test -p tollgate-ext-proc --test k8s
//! and review the diff (`git diff ext-proc-server/tests/golden/`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tollgate_core::policy::Policy;
use tollgate_ext_proc::cli::k8s::{render_envoy_gateway, render_istio, K8sOptions};
use tollgate_ext_proc::config::{load_policy, parse_policy};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Images pinned so a version bump does not churn the golden files; the
/// certificates (Envoy Gateway) from a directory of the test's own.
fn golden_options(tls: &Path) -> K8sOptions {
    K8sOptions {
        image: "oci://REGISTRY/tollgate-filter:0.1.0".into(),
        sidecar_image: "REGISTRY/tollgate:0.1.0".into(),
        tls_dir: Some(tls.to_path_buf()),
        ..Default::default()
    }
}

/// The body of every PEM block replaced by a placeholder: the golden files
/// pin where certificates and keys go, not the ones a test run made.
fn mask_pem(text: &str) -> String {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("-----BEGIN ") {
            inside = true;
            out.push(line.to_string());
            out.push(format!("{}<base64>", &line[..line.len() - t.len()]));
        } else if t.starts_with("-----END ") {
            inside = false;
            out.push(line.to_string());
        } else if !inside {
            out.push(line.to_string());
        }
    }
    let mut masked = out.join("\n");
    if text.ends_with('\n') {
        masked.push('\n');
    }
    masked
}

fn quickstart() -> Policy {
    load_policy(&golden_dir().join("quickstart-policy.yaml")).unwrap()
}

type Render = fn(&Policy, &K8sOptions) -> anyhow::Result<Vec<(String, String)>>;
const FLAVOURS: [(&str, Render); 2] = [("istio", render_istio), ("envoy-gateway", render_envoy_gateway)];

#[test]
fn golden_manifests_of_the_quickstart_policy() {
    let update = std::env::var("TOLLGATE_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let policy = quickstart();
    let tls = tempfile::tempdir().unwrap();
    let mut stale = Vec::new();
    for (flavour, render) in FLAVOURS {
        let dir = golden_dir().join(flavour);
        let files: Vec<(String, String)> = render(&policy, &golden_options(tls.path()))
            .unwrap()
            .into_iter()
            .map(|(name, text)| (name, mask_pem(&text)))
            .collect();
        if update {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, text) in &files {
                std::fs::write(dir.join(name), text).unwrap();
            }
            continue;
        }
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        on_disk.sort();
        let rendered: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
        if on_disk != rendered {
            stale.push(format!("{flavour}: files on disk {on_disk:?}, rendered {rendered:?}"));
        }
        for (name, text) in &files {
            let path = dir.join(name);
            let old = std::fs::read_to_string(&path).unwrap_or_default();
            if &old != text {
                stale.push(format!("{}:\n{}", path.display(), first_difference(&old, text)));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "rendered manifests differ from the golden files:\n{}\n\nIf the change is intended: TOLLGATE_UPDATE_GOLDEN=1 cargo test -p tollgate-ext-proc --test k8s, then review `git diff ext-proc-server/tests/golden/`",
        stale.join("\n")
    );
}

/// The first differing line, with a little context: enough to see what changed.
fn first_difference(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let i = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    let from = i.saturating_sub(2);
    let show = |lines: &[&str], sign: char| {
        lines.iter().skip(from).take(5).map(|l| format!("  {sign} {l}")).collect::<Vec<_>>().join("\n")
    };
    format!("  at line {}\n  golden:\n{}\n  rendered:\n{}", i + 1, show(&a, '-'), show(&b, '+'))
}

/// Where scripts/install.sh (install_k8s_validator) put the validator's packages.
fn validator_modules() -> PathBuf {
    if let Ok(dir) = std::env::var("TOLLGATE_K8S_VALIDATOR_MODULES") {
        return PathBuf::from(dir);
    }
    let home = std::env::var("TOLLGATE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".tollgate"));
    home.join("k8s-validate/node_modules")
}

/// Run tests/k8s/validate.mjs over `files`; (success, output).
fn validate(files: &[PathBuf]) -> (bool, String) {
    let modules = validator_modules();
    assert!(
        modules.join("@kubernetes-models/istio").is_dir() && modules.join("typescript").is_dir(),
        "the Kubernetes schema validator is not installed at {}: run scripts/install.sh (install_k8s_validator)",
        modules.display()
    );
    let out = Command::new("node")
        .arg(repo_root().join("tests/k8s/validate.mjs"))
        .arg("--modules")
        .arg(&modules)
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run node ({e}): run scripts/install.sh to install Node.js and the validator")
        });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn write_all(dir: &Path, files: &[(String, String)]) -> Vec<PathBuf> {
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

/// Policies covering every branch of the renderers: keys from env and files,
/// a key store, TLS and plain providers, IP and DNS hosts, a base path.
fn policies() -> Vec<(&'static str, Policy)> {
    let wide = parse_policy(
        "failMode: {filter: open, sidecar: closed}\n\
         access: {require: key, keyStore: keys.json}\n\
         audit: {dir: ./audit}\n\
         limits: {store: redis, redis: 'redis://redis:6379'}\n\
         providers:\n\
         \x20 openai: {kind: openai, baseUrl: 'https://api.openai.com', keyEnv: OPENAI_API_KEY}\n\
         \x20 anthropic: {kind: anthropic, baseUrl: 'https://api.anthropic.com/proxy', keyFile: /run/secrets/anthropic}\n\
         \x20 local: {kind: openai-compatible, baseUrl: 'http://10.0.0.7:8000'}\n\
         \x20 vllm: {kind: openai-compatible, baseUrl: 'http://vllm.models.svc.cluster.local:8000/v1'}\n\
         models:\n\
         \x20 gpt-4o-mini: {targets: [{provider: openai, model: gpt-4o-mini}]}\n",
    )
    .unwrap();
    // Fallback across providers and identity from JWTs, which both
    // platforms render with resources of their own (and, for an MCP virtual
    // server, Istio's payload header and Envoy Gateway's policy on its route).
    let jwks = std::env::temp_dir().join(format!("tollgate-k8s-jwks-{}.json", std::process::id()));
    std::fs::write(&jwks, r#"{"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "n": "sXch", "e": "AQAB"}]}"#)
        .unwrap();
    let fallback = parse_policy(&format!(
        "access: {{require: jwt, jwt: {{issuer: 'https://idp.example', audiences: [tollgate], jwksFile: '{}'}}}}\n\
         providers:\n\
         \x20 openai: {{kind: openai, baseUrl: 'https://api.openai.com', keyEnv: OPENAI_API_KEY}}\n\
         \x20 anthropic: {{kind: anthropic, baseUrl: 'https://api.anthropic.com', keyEnv: ANTHROPIC_API_KEY}}\n\
         \x20 local: {{kind: openai-compatible, baseUrl: 'http://10.0.0.7:8000'}}\n\
         models:\n\
         \x20 smart: {{attemptTimeoutMs: 2000, targets: [{{provider: openai, model: gpt-4o}}, {{provider: anthropic, model: claude-sonnet-4-5}}, {{provider: local, model: llama}}]}}\n\
         \x20 cheap: {{strategy: weighted, targets: [{{provider: openai, model: gpt-4o-mini, weight: 3}}, {{provider: local, model: llama, weight: 1}}]}}\n\
         mcp:\n\
         \x20 virtualServers:\n\
         \x20   support: {{}}\n",
        jwks.display()
    ))
    .unwrap();
    vec![("quickstart", quickstart()), ("wide", wide), ("fallback-jwt", fallback)]
}

#[test]
fn rendered_manifests_validate_against_the_published_schemas() {
    let tmp = tempfile::tempdir().unwrap();
    let tls = tmp.path().join("tls");
    let mut paths = Vec::new();
    for (label, policy) in policies() {
        for (flavour, render) in FLAVOURS {
            let variants = [
                ("default", golden_options(&tls)),
                (
                    "custom",
                    K8sOptions {
                        gateway_namespace: Some("edge".into()),
                        istio_gateway: Some("edge/public".into()),
                        hosts: vec!["ai.example.com".into()],
                        target_kind: tollgate_ext_proc::cli::k8s::TargetKind::Gateway,
                        replicas: Some(3),
                        gateway_service_account: "edge-gateway".into(),
                        trust_domain: "corp.example".into(),
                        gateway_pods_namespace: Some("edge-pods".into()),
                        gateway_pods_selector: Some([("app".to_string(), "edge".to_string())].into_iter().collect()),
                        ..golden_options(&tls)
                    },
                ),
            ];
            for (variant, opts) in variants {
                let files = render(&policy, &opts).unwrap();
                paths.extend(write_all(&tmp.path().join(format!("{label}-{flavour}-{variant}")), &files));
            }
        }
    }
    let (ok, out) = validate(&paths);
    assert!(ok, "rendered manifests do not validate:\n{out}");
    for kind in [
        "WasmPlugin",
        "EnvoyFilter",
        "ServiceEntry",
        "DestinationRule",
        "VirtualService",
        "networking.istio.io/v1/Gateway",
        "EnvoyExtensionPolicy",
        "EnvoyProxy",
        "Backend",
        "HTTPRoute",
        "ReferenceGrant",
        "EnvoyPatchPolicy",
        "SecurityPolicy",
        "RequestAuthentication",
        "PeerAuthentication",
        "AuthorizationPolicy",
        "ClientTrafficPolicy",
        "BackendTLSPolicy",
        "NetworkPolicy",
        "Secret",
        "Deployment",
        "Service",
        "ConfigMap",
        "Namespace",
    ] {
        assert!(out.contains(&format!("/{kind} ")) || out.contains(&format!("{kind} ")), "{kind} not checked:\n{out}");
    }
}

/// The validator is not a rubber stamp: a wrong enum value, an unknown field
/// and an unmodelled kind each fail.
#[test]
fn the_validator_rejects_bad_manifests() {
    let tmp = tempfile::tempdir().unwrap();
    let files = render_istio(&quickstart(), &golden_options(&tmp.path().join("tls"))).unwrap();
    let wasm = &files.iter().find(|(n, _)| n == "20-wasmplugin.yaml").unwrap().1;
    let cases = [
        ("bad-enum.yaml", wasm.replace("phase: AUTHZ", "phase: SOMEWHERE")),
        ("unknown-field.yaml", wasm.replace("phase: AUTHZ", "phase: AUTHZ\n  phaze: AUTHZ")),
        ("unknown-kind.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n".to_string()),
    ];
    for (name, text) in cases {
        assert_ne!(&text, wasm);
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        let (ok, out) = validate(&[path]);
        assert!(!ok, "{name} passed validation:\n{out}");
        assert!(out.contains("INVALID"), "{out}");
    }
}

/// `tollgate render envoy-gateway --out DIR --tls-dir CERTS`: the files are
/// owner-only (one holds private keys), the certificates are made once in
/// CERTS and read from there, so a second rendering writes the same files.
#[cfg(unix)]
#[test]
fn render_writes_private_files_and_reuses_the_certificates() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    let render = |out: &Path| {
        let status = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["render", "envoy-gateway", "--policy"])
            .arg(golden_dir().join("quickstart-policy.yaml"))
            .arg("--out")
            .arg(out)
            .arg("--tls-dir")
            .arg(&certs)
            .args(["--gateway-pods-namespace", "gw-pods", "--gateway-pods-selector", "app=gw"])
            .output()
            .unwrap();
        assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    render(&a);
    assert!(tollgate_ext_proc::tls::exists(&certs));
    render(&b);
    let mut names: Vec<String> =
        std::fs::read_dir(&a).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert!(names.contains(&"06-tls.yaml".to_string()), "{names:?}");
    for name in &names {
        let (x, y) = (a.join(name), b.join(name));
        assert_eq!(std::fs::read_to_string(&x).unwrap(), std::fs::read_to_string(&y).unwrap(), "{name}");
        assert_eq!(std::fs::metadata(&x).unwrap().permissions().mode() & 0o777, 0o600, "{name}");
    }
    let tls = std::fs::read_to_string(a.join("06-tls.yaml")).unwrap();
    let key = std::fs::read_to_string(certs.join("sidecar.key")).unwrap();
    assert!(tls.contains(key.lines().nth(1).unwrap()), "the sidecar's key from the directory");
    let access = std::fs::read_to_string(a.join("05-access.yaml")).unwrap();
    assert!(access.contains("kubernetes.io/metadata.name: gw-pods") && access.contains("app: gw"), "{access}");
}
