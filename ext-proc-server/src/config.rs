//! Loading the policy file and the provider keys it references.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tollgate_core::access::StoreKind;
use tollgate_core::policy::{Policy, ProviderKind, SidecarTlsMode};

use std::sync::Arc;

use crate::audit::{AuditOptions, AuditWriter, FsyncPolicy};
use crate::auditing::AuditSink;
use crate::budget::Budget;
use crate::credentials::Credential;
use crate::keys::LiveKeys;
use crate::limits::embedded::EmbeddedStore;
use crate::limits::redis::RedisStore;
use crate::limits::Store;
use crate::shared::Shared;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read policy {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("policy {path}: {source}")]
    Invalid { path: String, source: tollgate_core::Error },
    #[error("{owner}: environment variable {var} is not set")]
    MissingKeyEnv { owner: String, var: String },
    #[error("{owner}: cannot read key file {path}: {source}")]
    KeyFile { owner: String, path: String, source: std::io::Error },
    #[error("{owner}: {message}")]
    Credentials { owner: String, message: String },
}

/// A path from the policy, relative to the policy file's directory.
pub fn policy_relative(policy_path: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        policy_path.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// The sidecar's TLS settings from the policy (its certificates made on
/// first start); `None` when a mesh authenticates Envoy instead.
pub fn sidecar_tls(policy: &Policy) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
    match policy.sidecar.tls.mode {
        SidecarTlsMode::Mesh => Ok(None),
        SidecarTlsMode::Mutual => {
            let dir = Path::new(&policy.sidecar.tls.dir);
            if crate::tls::ensure(dir, false)? {
                tracing::info!(dir = %dir.display(), "made the gateway's certificates for Envoy and the sidecar");
            }
            Ok(Some(crate::tls::server_config(dir)?))
        }
    }
}

/// Everything the sidecar serves from: policy, provider keys, virtual keys
/// (watched for changes) and the limiter with its store.
pub async fn build_shared(policy: Policy, policy_path: &Path) -> anyhow::Result<Shared> {
    let credentials = load_credentials(&policy)?;
    check_apis(&policy)?;
    let keys = LiveKeys::open(policy.access.key_store.as_deref().map(PathBuf::from))?;
    keys.watch(Duration::from_millis(500));
    let store: Store = match policy.limits.store {
        StoreKind::Embedded => {
            let dir = match policy.limits.dir.as_deref() {
                Some(dir) => PathBuf::from(dir),
                None => policy_relative(policy_path, "state"),
            };
            EmbeddedStore::open(&dir)?.into()
        }
        StoreKind::Redis => {
            let url = policy.limits.redis.as_deref().unwrap_or_default();
            RedisStore::connect_lazy(url, "tollgate:").await?.into()
        }
    };
    let budget = Budget::new(store, &policy);
    // Load the token encodings before serving: the first request must not
    // wait for them (past Envoy's message timeout, it would fail open).
    tokio::task::spawn_blocking(crate::tokens::warm_up).await?;
    let audit = if policy.audit.enabled {
        let dir = match policy.audit.dir.as_deref() {
            Some(dir) => PathBuf::from(dir),
            None => policy_relative(policy_path, "audit"),
        };
        let fsync: FsyncPolicy =
            policy.audit.fsync.parse().map_err(|e| anyhow::anyhow!("audit.fsync `{}`: {e}", policy.audit.fsync))?;
        let writer = AuditWriter::open(&dir, AuditOptions { fsync, ..Default::default() })?;
        tracing::info!(dir = %dir.display(), "audit log");
        let (inflight, left) = match crate::audit::inflight::InFlight::open(&dir) {
            Ok((journal, left)) => (Some(journal), left),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "no in-flight journal: a kill loses the requests in flight");
                (None, Vec::new())
            }
        };
        let sink = AuditSink {
            writer,
            text: policy.audit.text,
            fail_mode: policy.audit.fail_mode,
            errors: Default::default(),
            inflight,
        };
        if !left.is_empty() {
            tracing::warn!(requests = left.len(), "requests left in flight by the last run: recorded as incomplete");
            sink.left_in_flight(left).await;
        }
        Some(Arc::new(sink))
    } else {
        None
    };
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let cache = open_cache(&policy, policy_path, &metrics).await;
    let telemetry = crate::otel::Telemetry::from_policy(&policy)?.map(Arc::new);
    let mut shared = Shared::new(policy, credentials);
    shared.metrics = metrics;
    shared.cache = cache;
    shared.keys = keys;
    shared.budget = Some(budget);
    shared.audit = audit;
    shared.telemetry = telemetry;
    Ok(shared)
}

/// The response cache, when the policy enables it. A cache that cannot be
/// opened is logged and left off: the gateway serves without it.
async fn open_cache(
    policy: &Policy,
    policy_path: &Path,
    metrics: &Arc<crate::metrics::Metrics>,
) -> Option<Arc<crate::cache::Cache>> {
    let c = &policy.cache;
    if !c.enabled {
        return None;
    }
    let embedder = if c.semantic.enabled {
        let dir = c.semantic.model_dir.as_ref().map(PathBuf::from).or_else(crate::embed::default_model_dir);
        match dir {
            None => {
                tracing::warn!("semantic cache tier off: no embedding model found (run scripts/install.sh or set cache.semantic.modelDir)");
                None
            }
            Some(dir) => {
                let shown = dir.display().to_string();
                match tokio::task::spawn_blocking(move || crate::embed::Embedder::load(&dir)).await {
                    Ok(Ok(e)) => {
                        tracing::info!(model = shown, threshold = c.semantic.threshold, "semantic cache tier on");
                        Some(Arc::new(e))
                    }
                    Ok(Err(err)) => {
                        tracing::warn!(model = shown, error = %err, "semantic cache tier off: the embedding model does not load");
                        None
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "semantic cache tier off");
                        None
                    }
                }
            }
        }
    } else {
        None
    };
    let dir = c.dir.as_ref().map_or_else(|| policy_relative(policy_path, "cache"), PathBuf::from);
    let redis = match c.store {
        StoreKind::Redis => Some(c.redis.clone().or_else(|| policy.limits.redis.clone()).unwrap_or_default()),
        StoreKind::Embedded => None,
    };
    match crate::cache::Cache::open(c, &dir, redis.as_deref(), embedder, Arc::clone(metrics)).await {
        Ok(cache) => {
            tracing::info!(store = ?c.store, scope = ?c.scope, "response cache on");
            Some(Arc::new(cache))
        }
        Err(err) => {
            tracing::error!(error = %err, "response cache off: its store cannot be opened");
            None
        }
    }
}

/// The configuration new streams start from. A policy reload swaps it
/// whole; streams already running keep the one they started with.
#[derive(Clone)]
pub struct LiveShared(Arc<std::sync::RwLock<Shared>>);

impl LiveShared {
    pub fn new(shared: Shared) -> LiveShared {
        LiveShared(Arc::new(std::sync::RwLock::new(shared)))
    }

    /// A snapshot (cheap: the parts are shared).
    pub fn current(&self) -> Shared {
        match self.0.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, shared: Shared) {
        match self.0.write() {
            Ok(mut s) => *s = shared,
            Err(poisoned) => *poisoned.into_inner() = shared,
        }
    }
}

/// The serving configuration under a new policy: provider keys, routes,
/// grants, limits, prices and the cache follow the policy; the limit store,
/// the audit log, the virtual keys and the metrics are kept (changing where
/// those live, or the ports, takes a restart and is logged as such).
pub async fn reload_shared(current: &Shared, policy: Policy, policy_path: &Path) -> anyhow::Result<Shared> {
    policy.validate()?;
    let credentials = load_credentials(&policy)?;
    check_apis(&policy)?;
    let old = &current.policy;
    let (oc, nc) = (&old.cache, &policy.cache);
    // Where the cache lives and how much it holds belong to its open store.
    let cache_store_changed = (oc.store, &oc.dir, &oc.redis, oc.ttl_seconds, oc.max_entries, oc.max_bytes)
        != (nc.store, &nc.dir, &nc.redis, nc.ttl_seconds, nc.max_entries, nc.max_bytes)
        || oc.semantic.model_dir != nc.semantic.model_dir
        || (nc.semantic.enabled && !oc.semantic.enabled);
    for (what, changed) in [
        ("limits.store", old.limits.store != policy.limits.store || old.limits.redis != policy.limits.redis),
        ("cache store, limits or model", current.cache.is_some() && nc.enabled && cache_store_changed),
        ("audit", old.audit != policy.audit),
        ("telemetry", old.telemetry != policy.telemetry),
        ("access.keyStore", old.access.key_store != policy.access.key_store),
        ("listen / sidecar ports", old.listen != policy.listen || old.sidecar != policy.sidecar),
    ] {
        if changed {
            tracing::warn!(setting = what, "policy reload: this setting changes only on restart");
        }
    }
    let mut next = current.clone();
    next.credentials = Arc::new(credentials);
    next.prices = Arc::new(tollgate_core::pricing::PriceTable::new(&policy.pricing));
    next.review = Arc::new(crate::review::Review::new(&policy));
    next.budget = current.budget.as_ref().map(|b| b.with_policy(&policy));
    next.cache = match (&current.cache, nc.enabled) {
        (_, false) => None,
        // The open store (and model) serve the new settings: a second store
        // on the same directory would write the same log.
        (Some(cache), true) => Some(Arc::new(cache.with_policy(nc))),
        (None, true) => open_cache(&policy, policy_path, &current.metrics).await,
    };
    next.policy = Arc::new(policy);
    Ok(next)
}

/// Watch the policy file and apply each valid change to `live`; a change
/// that does not load or validate is refused (logged, counted in
/// `tollgate_policy_reloads_total{result="rejected"}`) and the last good
/// policy stays.
pub fn watch_policy(live: LiveShared, policy_path: PathBuf, every: Duration) {
    tokio::spawn(async move {
        let mut seen = std::fs::read(&policy_path).ok();
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let Ok(text) = tokio::fs::read(&policy_path).await else { continue };
            if seen.as_deref() == Some(text.as_slice()) {
                continue;
            }
            seen = Some(text);
            let current = live.current();
            let result = match load_policy(&policy_path) {
                Ok(policy) => reload_shared(&current, policy, &policy_path).await,
                Err(err) => Err(err.into()),
            };
            match result {
                Ok(next) => {
                    live.replace(next);
                    current.metrics.reloads.get_or_create(&crate::metrics::ReloadLabels { result: "ok" }).inc();
                    tracing::info!(policy = %policy_path.display(), "policy reloaded");
                }
                Err(err) => {
                    current.metrics.reloads.get_or_create(&crate::metrics::ReloadLabels { result: "rejected" }).inc();
                    tracing::error!(policy = %policy_path.display(), error = %format!("{err:#}"), "policy change rejected; the last good policy stays");
                }
            }
        }
    });
}

/// Parse a policy from YAML (or JSON, a subset of YAML) text.
pub fn parse_policy(text: &str) -> Result<Policy, tollgate_core::Error> {
    Policy::deserialize(serde_yaml_ng::Deserializer::from_str(text))
}

pub fn load_policy(path: &Path) -> Result<Policy, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
    let mut policy = parse_policy(&text).map_err(|source| ConfigError::Invalid { path: shown, source })?;
    resolve_paths(&mut policy, path);
    Ok(policy)
}

/// Make every file path in the policy absolute, relative to the policy file.
pub fn resolve_paths(policy: &mut Policy, policy_path: &Path) {
    let fix = |p: &mut String| *p = policy_relative(policy_path, p).display().to_string();
    if let Some(p) = policy.access.key_store.as_mut() {
        fix(p);
    }
    fix(&mut policy.sidecar.tls.dir);
    if let Some(jwt) = policy.access.jwt.as_mut() {
        fix(&mut jwt.jwks_file);
    }
    if let Some(p) = policy.limits.dir.as_mut() {
        fix(p);
    }
    if let Some(p) = policy.audit.dir.as_mut() {
        fix(p);
    }
    if let Some(p) = policy.cache.dir.as_mut() {
        fix(p);
    }
    if let Some(p) = policy.cache.semantic.model_dir.as_mut() {
        fix(p);
    }
    for provider in policy.providers.values_mut() {
        if let Some(p) = provider.key_file.as_mut() {
            fix(p);
        }
    }
    for server in policy.mcp.servers.values_mut() {
        if let Some(p) = server.key_file.as_mut() {
            fix(p);
        }
        if let Some(p) = server.openapi.as_mut() {
            fix(p);
        }
    }
}

/// Read every OpenAPI document the policy names (at load and reload, and
/// by `tollgate check`): a bad one is an error now, not missing tools later.
/// Returns the tools each REST server offers.
pub fn check_apis(policy: &Policy) -> anyhow::Result<Vec<(String, usize)>> {
    let mut out = Vec::new();
    for (name, server) in &policy.mcp.servers {
        if let Some(path) = &server.openapi {
            let api = load_api(path).map_err(|e| anyhow::anyhow!("mcp server `{name}`: {e}"))?;
            out.push((name.clone(), api.operations.len()));
        }
    }
    Ok(out)
}

/// Read an OpenAPI 3 document (YAML or JSON).
pub fn load_api(path: &str) -> Result<tollgate_core::mcp::openapi::Api, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    let doc: serde_json::Value =
        serde_yaml_ng::from_str(&text).map_err(|e| format!("`{path}` is not YAML or JSON: {e}"))?;
    tollgate_core::mcp::openapi::Api::from_document(&doc).map_err(|e| format!("`{path}`: {e}"))
}

/// The key of an MCP server's credential in [`load_credentials`]'s map
/// (provider names cannot hold `:`).
pub fn mcp_credential(server: &str) -> String {
    format!("mcp:{server}")
}

/// Read every provider key and MCP server credential the policy references
/// (`keyEnv` / `keyFile`); an MCP server's is under [`mcp_credential`].
pub fn load_credentials(policy: &Policy) -> Result<HashMap<String, Credential>, ConfigError> {
    let mut out = HashMap::new();
    for (name, server) in &policy.mcp.servers {
        let at = format!("mcp server `{name}`");
        if let Some(secret) = read_secret(&at, server.key_env.as_deref(), server.key_file.as_deref())? {
            out.insert(mcp_credential(name), Credential::new("authorization", format!("Bearer {secret}")));
        }
    }
    for (name, provider) in &policy.providers {
        let secret =
            read_secret(&format!("provider `{name}`"), provider.key_env.as_deref(), provider.key_file.as_deref())?;
        if let Some(secret) = secret {
            let cred = match provider.kind {
                ProviderKind::Anthropic => Credential::new("x-api-key", secret),
                ProviderKind::AzureOpenai => Credential::new("api-key", secret),
                ProviderKind::Gemini => Credential::new("x-goog-api-key", secret),
                _ => Credential::new("authorization", format!("Bearer {secret}")),
            };
            out.insert(name.clone(), cred);
        } else if let (ProviderKind::VertexAi, Some(path)) = (provider.kind, provider.credentials_file.as_deref()) {
            let tokens = crate::vertex::AccessTokens::load(path, provider.token_url.as_deref())
                .map_err(|message| ConfigError::Credentials { owner: format!("provider `{name}`"), message })?;
            let cred =
                Credential { header: "authorization", value: String::new(), tokens: Some(Arc::new(tokens)), aws: None };
            out.insert(name.clone(), cred);
        } else if provider.kind == ProviderKind::Bedrock {
            let owner = format!("provider `{name}`");
            let var = |name: Option<&str>, default: &str| -> Result<String, ConfigError> {
                let var = name.unwrap_or(default);
                match std::env::var(var) {
                    Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
                    _ => Err(ConfigError::MissingKeyEnv { owner: owner.clone(), var: var.to_string() }),
                }
            };
            let access = var(provider.access_key_env.as_deref(), "AWS_ACCESS_KEY_ID")?;
            let secret = var(provider.secret_key_env.as_deref(), "AWS_SECRET_ACCESS_KEY")?;
            let session = match var(provider.session_token_env.as_deref(), "AWS_SESSION_TOKEN") {
                Ok(token) => Some(token),
                Err(_) if provider.session_token_env.is_none() => None,
                Err(err) => return Err(err),
            };
            let region = provider.region.as_deref().unwrap_or_default();
            let keys = crate::aws::AwsKeys::new(&access, &secret, session, region);
            let cred =
                Credential { header: "authorization", value: String::new(), tokens: None, aws: Some(Arc::new(keys)) };
            out.insert(name.clone(), cred);
        }
    }
    Ok(out)
}

/// A secret from an environment variable or a file, trimmed.
fn read_secret(owner: &str, env: Option<&str>, file: Option<&str>) -> Result<Option<String>, ConfigError> {
    let name = owner.to_string();
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(v.trim().to_string())),
            _ => Err(ConfigError::MissingKeyEnv { owner: name, var: var.to_string() }),
        };
    }
    if let Some(path) = file {
        let v = std::fs::read_to_string(path).map_err(|source| ConfigError::KeyFile {
            owner: name,
            path: path.to_string(),
            source,
        })?;
        return Ok(Some(v.trim().to_string()));
    }
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_file_and_env_are_redacted_in_debug() {
        let dir = std::env::temp_dir().join(format!("tollgate-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("anthropic");
        std::fs::write(&key, "sk-ant-secret\n").unwrap();
        let policy = parse_policy(&format!(
            "providers:\n  a: {{kind: anthropic, baseUrl: 'https://api.anthropic.com', keyFile: '{}'}}\n  o: {{kind: openai, baseUrl: 'http://x'}}\n",
            key.display()
        ))
        .unwrap();
        let creds = load_credentials(&policy).unwrap();
        assert_eq!(creds["a"].header, "x-api-key");
        assert_eq!(creds["a"].value, "sk-ant-secret");
        assert!(!creds.contains_key("o"));
        assert!(!format!("{:?}", creds["a"]).contains("secret"));
    }

    #[test]
    fn missing_key_env_is_an_error_naming_it() {
        let policy =
            parse_policy("providers:\n  o: {kind: openai, baseUrl: 'http://x', keyEnv: TOLLGATE_TEST_SURELY_UNSET}\n")
                .unwrap();
        let err = load_credentials(&policy).unwrap_err().to_string();
        assert!(err.contains("TOLLGATE_TEST_SURELY_UNSET"), "{err}");
    }

    /// The policy shown in the README stays valid.
    #[test]
    fn readme_policy_example_validates() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let section = readme.split("## The policy").nth(1).unwrap();
        let yaml = section.split("```yaml").nth(1).unwrap().split("```").next().unwrap();
        let policy = parse_policy(yaml).unwrap();
        assert!(policy.providers.contains_key("openai"));
        assert!(!policy.inspection.pii.custom.is_empty());
    }

    /// The routing example in the README stays valid.
    #[test]
    fn readme_routing_example_validates() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let section = readme.split("## Routing, translation and fallback").nth(1).unwrap();
        let yaml = section.split("```yaml").nth(1).unwrap().split("```").next().unwrap();
        let providers = "providers:\n  openai: {kind: openai, baseUrl: 'http://x'}\n  anthropic: {kind: anthropic, baseUrl: 'http://y'}\n  local: {kind: openai-compatible, baseUrl: 'http://z'}\n";
        let policy = parse_policy(&format!("{providers}{yaml}")).unwrap();
        assert_eq!(policy.models["thrifty"].strategy, tollgate_core::policy::Strategy::Cost);
        assert_eq!(policy.models["split"].targets[0].weight, 3);
    }

    /// The audit example in the README stays valid.
    #[test]
    fn readme_audit_example_validates() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let section = readme.split("## Audit log and metrics").nth(1).unwrap();
        let yaml = section.split("```yaml").nth(1).unwrap().split("```").next().unwrap();
        let policy = parse_policy(&format!("providers:\n  o: {{kind: openai, baseUrl: 'http://x'}}\n{yaml}")).unwrap();
        assert_eq!(policy.audit.text, tollgate_core::policy::AuditText::Masked);
        assert_eq!(policy.audit.fsync, "every");
    }

    /// The firewall thresholds example in the README stays valid, and its
    /// filter defers to the most lenient team.
    #[test]
    fn readme_firewall_example_validates() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let section = readme.split("## Inspection").nth(1).unwrap();
        let yaml = section.split("```yaml").nth(1).unwrap().split("```").next().unwrap();
        let yaml: String = yaml.lines().map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l))).collect();
        let policy =
            parse_policy(&format!("providers:\n  openai: {{kind: openai, baseUrl: 'http://x'}}\n{yaml}")).unwrap();
        policy.validate().unwrap();
        let filter = tollgate_core::filter_config::FilterConfig::from_policy(&policy);
        assert_eq!(filter.firewall_levels("support-bot").block, 0.99);
        assert_eq!(filter.firewall_levels("support-bot").flag, 0.3);
    }

    /// The cache example in the README stays valid.
    #[test]
    fn readme_cache_example_validates() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let section = readme.split("## Response cache").nth(1).unwrap();
        let yaml = section.split("```yaml").nth(1).unwrap().split("```").next().unwrap();
        let policy =
            parse_policy(&format!("providers:\n  openai: {{kind: openai, baseUrl: 'http://x'}}\n{yaml}")).unwrap();
        policy.validate().unwrap();
        assert!(policy.cache.enabled);
        assert_eq!(policy.cache.read_only_tools, ["search_docs"]);
        assert_eq!(policy.models["support-bot"].cache.as_ref().unwrap().threshold, Some(0.9));
    }

    /// The identity and limits example in the README stays valid.
    #[test]
    fn readme_access_example_validates() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let section = readme.split("## Identity, limits and budgets").nth(1).unwrap();
        let yaml = section.split("```yaml").nth(1).unwrap().split("```").next().unwrap();
        let policy = parse_policy(&format!("providers:\n  o: {{kind: openai, baseUrl: 'http://x'}}\n{yaml}")).unwrap();
        assert_eq!(policy.consumers["alice"].team, "research");
        assert_eq!(policy.teams["research"].limits.cost_per_day, Some(50.0));
        assert_eq!(policy.pricing["llama3"].input, 0.1);
    }

    #[test]
    fn openapi_documents_are_checked_when_the_policy_loads() {
        let dir = std::env::temp_dir().join(format!("tollgate-mcp-apis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.yaml");
        std::fs::write(&good, "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /a: {get: {operationId: a, responses: {'200': {description: ok}}}}\n").unwrap();
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "openapi: 2.0\npaths: {}\n").unwrap();
        let policy = |path: &std::path::Path| {
            parse_policy(&format!(
                "providers:\n  m: {{kind: mock, baseUrl: 'http://127.0.0.1:1'}}\nmcp:\n  servers:\n    rest: {{openapi: '{}', baseUrl: 'http://127.0.0.1:1'}}\n",
                path.display()
            ))
            .unwrap()
        };
        assert_eq!(check_apis(&policy(&good)).unwrap(), [("rest".to_string(), 1)]);
        let err = check_apis(&policy(&bad)).unwrap_err().to_string();
        assert!(err.contains("mcp server `rest`"), "{err}");
        let err = check_apis(&policy(&dir.join("missing.yaml"))).unwrap_err().to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
