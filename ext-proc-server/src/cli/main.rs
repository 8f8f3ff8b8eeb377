//! The `tollgate` command.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tollgate_core::filter_config::FilterConfig;
use tollgate_ext_proc::cli::envoy::{render_yaml, RenderOptions};
use tollgate_ext_proc::cli::{scan, up};
use tollgate_ext_proc::config::{build_shared, load_policy, watch_policy, LiveShared};
use tollgate_ext_proc::server;

#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about = "Tollgate: an AI gateway inside Envoy")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the ext_proc sidecar.
    Serve {
        #[arg(long)]
        policy: PathBuf,
        /// gRPC listen address (default: the policy's sidecar.host:grpcPort).
        #[arg(long)]
        grpc: Option<SocketAddr>,
        /// Health/admin HTTP address (default: sidecar.host:adminPort).
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Threads serving ext_proc streams (default: half the CPUs this
        /// process may use, at least one). Envoy's workers usually share
        /// the machine, and fewer sidecar threads wake each other less:
        /// see docs/benchmarks.md. Embeddings run on threads of their own.
        #[arg(long, env = "TOLLGATE_WORKERS", value_parser = clap::value_parser!(u16).range(1..))]
        workers: Option<u16>,
    },
    /// Start Envoy, the filter, the sidecar (and the mock provider without keys).
    Up(up::UpOptions),
    /// Run the offline OpenAI/Anthropic-compatible mock provider.
    Mock {
        #[arg(long, default_value = "127.0.0.1:10002")]
        listen: SocketAddr,
        #[command(flatten)]
        config: tollgate_mock::MockConfig,
    },
    /// Scan text for PII and prompt injection with the policy's inspection settings.
    /// Reads one text from standard input, or JSONL (`{"id","text"}` per line) with --jsonl.
    Scan {
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long)]
        jsonl: bool,
        /// With --jsonl: only the PII findings and the scanner's time per text.
        #[arg(long, requires = "jsonl")]
        pii: bool,
    },
    /// Validate a policy file.
    Check {
        #[arg(long)]
        policy: PathBuf,
    },
    /// Manage virtual keys in the policy's key store (`access.keyStore`).
    Keys {
        #[command(subcommand)]
        what: KeysCmd,
    },
    /// Check, read and search the audit log (default directory: the one `tollgate up` writes).
    Audit {
        #[command(subcommand)]
        what: AuditCmd,
    },
    /// MCP tool pins on the running sidecar: list them, approve a changed definition.
    Mcp {
        #[command(subcommand)]
        what: McpCmd,
        /// The policy of the running gateway (finds the sidecar's admin port).
        #[arg(long, global = true)]
        policy: Option<PathBuf>,
        /// The sidecar's admin address (default: from the policy, else 127.0.0.1:10003).
        #[arg(long, global = true)]
        admin: Option<String>,
    },
    /// Spend per team, consumer and model, from the running sidecar.
    Usage {
        /// The policy of the running gateway (finds the sidecar's admin port).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// The sidecar's admin address (default: from the policy, else 127.0.0.1:10003).
        #[arg(long)]
        admin: Option<String>,
        #[arg(long)]
        team: Option<String>,
        /// First day: `YYYY-MM-DD`, or a span back from today such as `7d` (default: this month).
        #[arg(long)]
        since: Option<String>,
        /// Print JSON rows instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Measure the semantic cache on labelled pairs (JSONL `{"a","b","paraphrase"}` per line):
    /// hit and false-hit rates per similarity threshold, and the recommended threshold.
    CacheQuality {
        #[arg(long)]
        pairs: PathBuf,
        /// Embedding model directory (default: the one `scripts/install.sh` installs).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Embed every text of a JSONL stream (`{"id","text"}` per line) with the sidecar's sentence
    /// model, one vector per window of a long text: for the quality measurements.
    Embed {
        /// Embedding model directory (default: the one `scripts/install.sh` installs).
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Make the gateway's certificates for mutual TLS between Envoy and the
    /// sidecar in the policy's `sidecar.tls.dir` (or `--dir`): a new private
    /// authority signing one certificate for each. `tollgate serve`, `up` and
    /// `render envoy` make them when absent; `--replace` rotates them (restart
    /// Envoy and the sidecar after).
    Certs {
        #[arg(long, required_unless_present = "dir")]
        policy: Option<PathBuf>,
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        replace: bool,
    },
    /// Render configuration from a policy.
    Render {
        #[command(subcommand)]
        what: RenderCmd,
    },
    /// Package the filter or the sidecar as an OCI image layout, for a registry.
    Package {
        #[command(subcommand)]
        what: PackageCmd,
    },
}

#[derive(Debug, Subcommand)]
enum PackageCmd {
    /// Write the filter as an OCI image layout (one layer holding `plugin.wasm`, the format
    /// Istio's WasmPlugin and Envoy Gateway pull); push it with skopeo, crane or oras.
    Wasm {
        #[arg(long)]
        out: PathBuf,
        /// The built filter (default: the checkout's wasm-release build).
        #[arg(long, env = "TOLLGATE_WASM")]
        wasm: Option<PathBuf>,
        #[arg(long, default_value = "latest")]
        tag: String,
    },
    /// Write the sidecar as a runnable Linux container image (OCI image layout, no container
    /// engine needed): the binary, the shared libraries it loads, CA certificates and a
    /// non-root user; it runs `tollgate serve` as the rendered Deployment does. Push it with
    /// skopeo, crane or oras.
    Sidecar {
        #[arg(long)]
        out: PathBuf,
        /// The `tollgate` binary to package (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
        #[arg(long, default_value = "latest")]
        tag: String,
        /// Embedding model directory for the semantic cache, shipped at
        /// /usr/share/tollgate/model (TOLLGATE_EMBED_MODEL points there).
        #[arg(long)]
        embed_model: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum McpCmd {
    /// Pinned tool definitions and changed ones waiting for approval (JSON).
    Tools,
    /// Pin the changed definition of `<server>/<tool>`: it is listed and callable again.
    Approve { tool: String },
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Check the hash chain; reports the first broken or missing record.
    Verify { dir: Option<PathBuf> },
    /// The last N records (JSON lines).
    Tail {
        dir: Option<PathBuf>,
        #[arg(short = 'n', default_value_t = 20)]
        n: usize,
    },
    /// Records matching every filter given (JSON lines).
    Query {
        dir: Option<PathBuf>,
        #[arg(long)]
        consumer: Option<String>,
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        model: Option<String>,
        /// RFC 3339 time, or a span back from now such as `1h`.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// Text the decisions must contain (e.g. `refused`, `stream_cut`).
        #[arg(long)]
        decision: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCmd {
    /// Create a key for a consumer; prints the secret once.
    Create {
        #[arg(long)]
        policy: PathBuf,
        #[arg(long)]
        consumer: String,
        /// Lifetime such as `30d` or `12h` (default: no expiry).
        #[arg(long)]
        expires: Option<humantime::Duration>,
    },
    /// Revoke a key by id (takes effect within a second, no restart).
    Revoke {
        #[arg(long)]
        policy: PathBuf,
        id: String,
    },
    /// List keys (ids, consumers, dates; never secrets).
    List {
        #[arg(long)]
        policy: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum RenderCmd {
    /// Envoy's bootstrap (YAML).
    Envoy {
        #[arg(long)]
        policy: PathBuf,
        /// Path of the built filter as Envoy will see it.
        #[arg(long, default_value = "target/wasm32-wasip1/wasm-release/tollgate_filter.wasm")]
        wasm: PathBuf,
        #[arg(long, default_value = "/dev/stdout")]
        access_log: String,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Serve the listener and clusters as file-based xDS from this directory
        /// (`lds.yaml`, `cds.yaml`; Envoy picks up later renders without a restart):
        /// the bootstrap then only points there.
        #[arg(long)]
        xds_dir: Option<PathBuf>,
    },
    /// The wasm filter's plugin configuration (JSON).
    FilterConfig {
        #[arg(long)]
        policy: PathBuf,
    },
    /// Kubernetes manifests for an Istio ingress gateway: WasmPlugin, EnvoyFilter (ext_proc),
    /// the sidecar's Deployment/Service/ConfigMap and the providers.
    Istio(K8sArgs),
    /// Kubernetes manifests for Envoy Gateway: EnvoyExtensionPolicy (wasm + extProc),
    /// Backends, HTTPRoute and the sidecar.
    EnvoyGateway(K8sArgs),
}

#[derive(Debug, clap::Args)]
struct K8sArgs {
    #[arg(long)]
    policy: PathBuf,
    /// Write one file per manifest group into DIR (default: print them all, `---` separated).
    #[arg(long)]
    out: Option<PathBuf>,
    /// OCI image of the filter (`tollgate package wasm`, pushed).
    #[arg(long)]
    image: Option<String>,
    /// Container image running `tollgate serve`.
    #[arg(long)]
    sidecar_image: Option<String>,
    #[arg(long, default_value = "tollgate")]
    namespace: String,
    #[arg(long)]
    gateway_namespace: Option<String>,
    /// Istio: ingress gateway pod labels, KEY=VALUE, repeatable (default istio=ingressgateway).
    #[arg(long = "selector", value_parser = parse_kv)]
    selector: Vec<(String, String)>,
    /// Istio: an existing networking.istio.io Gateway (ns/name) instead of rendering one.
    #[arg(long)]
    istio_gateway: Option<String>,
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Envoy Gateway: the Gateway to attach to.
    #[arg(long, default_value = "eg")]
    gateway: String,
    /// Envoy Gateway: attach the policy to the whole Gateway instead of the rendered HTTPRoute.
    #[arg(long)]
    target_gateway: bool,
    /// Envoy Gateway: the Gateway's listener serving the HTTPRoute (its routes are patched
    /// for aliases with several targets).
    #[arg(long, default_value = "http")]
    listener: String,
    #[command(flatten)]
    access: Box<K8sAccessArgs>,
}

/// Who may reach the sidecar in Kubernetes.
#[derive(Debug, clap::Args)]
struct K8sAccessArgs {
    /// Istio: the ingress gateway's service account, the only identity the sidecar answers.
    #[arg(long, default_value = "istio-ingressgateway")]
    gateway_service_account: String,
    /// Istio: the mesh's trust domain (of the gateway's identity).
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// NetworkPolicy: the namespace of the gateway's Envoy pods (default: Istio, the gateway
    /// namespace; Envoy Gateway, envoy-gateway-system).
    #[arg(long)]
    gateway_pods_namespace: Option<String>,
    /// NetworkPolicy: labels of the gateway's Envoy pods, KEY=VALUE, repeatable (default: Istio,
    /// the --selector labels; Envoy Gateway, its owning-gateway labels of --gateway).
    #[arg(long = "gateway-pods-selector", value_parser = parse_kv)]
    gateway_pods_selector: Vec<(String, String)>,
    /// Envoy Gateway: the certificates Envoy and the sidecar authenticate each other with
    /// (default: the policy's sidecar.tls.dir); made when absent.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.into(), v.into())).ok_or_else(|| format!("`{s}`: expected KEY=VALUE"))
}

impl K8sArgs {
    fn options(&self) -> tollgate_ext_proc::cli::k8s::K8sOptions {
        use tollgate_ext_proc::cli::k8s::{K8sOptions, TargetKind};
        let mut o = K8sOptions {
            namespace: self.namespace.clone(),
            gateway_namespace: self.gateway_namespace.clone(),
            istio_gateway: self.istio_gateway.clone(),
            gateway_name: self.gateway.clone(),
            listener: self.listener.clone(),
            gateway_service_account: self.access.gateway_service_account.clone(),
            trust_domain: self.access.trust_domain.clone(),
            gateway_pods_namespace: self.access.gateway_pods_namespace.clone(),
            tls_dir: self.access.tls_dir.clone(),
            ..Default::default()
        };
        if !self.access.gateway_pods_selector.is_empty() {
            o.gateway_pods_selector = Some(self.access.gateway_pods_selector.iter().cloned().collect());
        }
        if let Some(i) = &self.image {
            o.image = i.clone();
        }
        if let Some(i) = &self.sidecar_image {
            o.sidecar_image = i.clone();
        }
        if !self.selector.is_empty() {
            o.gateway_selector = self.selector.iter().cloned().collect();
        }
        if !self.hosts.is_empty() {
            o.hosts = self.hosts.clone();
        }
        if self.target_gateway {
            o.target_kind = TargetKind::Gateway;
        }
        o
    }
}

/// Write rendered manifests into `out`, or print them as one `---` separated stream.
/// The files are owner-only: some hold Secrets (Envoy Gateway's certificates).
fn write_manifests(files: Vec<(String, String)>, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    match out {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            for (name, text) in &files {
                let p = dir.join(name);
                tollgate_ext_proc::tls::write_private(&p, text.as_bytes())
                    .with_context(|| format!("writing {}", p.display()))?;
                println!("wrote {}", p.display());
            }
        }
        None => {
            for (i, (name, text)) in files.iter().enumerate() {
                if i > 0 {
                    println!("---");
                }
                println!("# {name}");
                print!("{text}");
            }
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Cmd::Serve { workers, .. } = &cli.command {
        builder.worker_threads(workers.map_or_else(default_workers, usize::from));
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("tollgate: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tollgate: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The sidecar's worker threads by default: half the CPUs, at least one.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).try_init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Serve { policy, grpc, admin, .. } => {
            init_tracing();
            let policy_path = policy;
            let policy = load_policy(&policy_path)?;
            let host: std::net::IpAddr =
                policy.sidecar.host.parse().with_context(|| format!("sidecar.host `{}`", policy.sidecar.host))?;
            let grpc = grpc.unwrap_or(SocketAddr::new(host, policy.sidecar.grpc_port));
            let admin = admin.unwrap_or(SocketAddr::new(host, policy.sidecar.admin_port));
            let tls = tollgate_ext_proc::config::sidecar_tls(&policy)?;
            let shared = build_shared(policy, &policy_path).await?;
            let grpc = server::bind(grpc).await?;
            let admin = server::bind(admin).await?;
            let live = LiveShared::new(shared);
            watch_policy(live.clone(), policy_path, std::time::Duration::from_millis(100));
            server::run(live, grpc, admin, tls, server::shutdown_signal()).await
        }
        Cmd::Up(opts) => up::up(opts).await,
        Cmd::Mock { listen, config } => {
            init_tracing();
            let listener = server::bind(listen).await?;
            println!("mock provider listening on http://{}", listener.local_addr()?);
            tollgate_mock::serve(listener, config, server::shutdown_signal()).await?;
            Ok(())
        }
        Cmd::Scan { policy, jsonl, pii } => {
            let inspection = match policy {
                Some(path) => load_policy(&path)?.inspection,
                None => Default::default(),
            };
            let scanner = scan::Scanner::new(&inspection)?;
            let stdin = std::io::stdin().lock();
            if jsonl {
                let stdout = std::io::BufWriter::new(std::io::stdout().lock());
                let (ok, bad) = if pii {
                    scan::scan_pii_jsonl(&scanner, stdin, stdout)?
                } else {
                    scan::scan_jsonl(&scanner, stdin, stdout)?
                };
                eprintln!("tollgate scan: {ok} scanned, {bad} unreadable");
            } else {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::BufReader::new(stdin), &mut text)?;
                print!("{}", scan::human_report(&scanner, &text));
            }
            Ok(())
        }
        Cmd::Check { policy } => {
            let p = load_policy(&policy)?;
            let apis = tollgate_ext_proc::config::check_apis(&p)?;
            println!("{}: ok ({} providers, {} model aliases)", policy.display(), p.providers.len(), p.models.len());
            for (server, tools) in apis {
                println!("mcp server `{server}`: {tools} tools from its OpenAPI document");
            }
            print!("{}", unpriced_report(&tollgate_ext_proc::budget::unpriced_models(&p)));
            Ok(())
        }
        Cmd::Keys { what } => keys_command(what),
        Cmd::Audit { what } => audit_command(what),
        Cmd::Mcp { what, policy, admin } => mcp_command(what, policy, admin).await,
        Cmd::Usage { policy, admin, team, since, json } => usage_command(policy, admin, team, since, json).await,
        Cmd::Embed { model } => {
            use tollgate_ext_proc::cli::embed_jsonl;
            use tollgate_ext_proc::embed;
            let dir = model.or_else(embed::default_model_dir).ok_or_else(|| {
                anyhow::anyhow!("no embedding model found: run scripts/install.sh or pass --model DIR")
            })?;
            let embedder = embed::Embedder::load(&dir)?;
            let stdout = std::io::BufWriter::new(std::io::stdout().lock());
            let (ok, bad) =
                tokio::task::block_in_place(|| embed_jsonl::run(&embedder, std::io::stdin().lock(), stdout))?;
            eprintln!("embedded {ok} texts, skipped {bad} lines");
            Ok(())
        }
        Cmd::CacheQuality { pairs, model, json } => {
            use tollgate_ext_proc::{cache::quality, embed};
            let file = std::fs::File::open(&pairs).with_context(|| format!("opening {}", pairs.display()))?;
            let labelled =
                quality::read_pairs(std::io::BufReader::new(file)).with_context(|| format!("{}", pairs.display()))?;
            let dir = model.or_else(embed::default_model_dir).ok_or_else(|| {
                anyhow::anyhow!("no embedding model found: run scripts/install.sh or pass --model DIR")
            })?;
            let embedder = embed::Embedder::load(&dir)?;
            let report =
                tokio::task::block_in_place(|| quality::evaluate(&embedder, &labelled, quality::DEFAULT_BATCH))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", quality::render(&report));
            }
            Ok(())
        }
        Cmd::Package { what: PackageCmd::Wasm { out, wasm, tag } } => {
            let wasm = wasm
                .or_else(tollgate_ext_proc::cli::launch::find_wasm)
                .ok_or_else(|| anyhow::anyhow!("no built filter: run scripts/test.sh or pass --wasm"))?;
            let opts = tollgate_ext_proc::cli::package::PackageOptions { tag, ..Default::default() };
            let report = tollgate_ext_proc::cli::package::write_oci_layout(&wasm, &out, &opts)?;
            println!("{report}");
            Ok(())
        }
        Cmd::Package { what: PackageCmd::Sidecar { out, binary, tag, embed_model } } => {
            use tollgate_ext_proc::cli::package::{write_sidecar_layout, PackageOptions, SidecarOptions};
            let binary = match binary {
                Some(path) => path,
                None => std::env::current_exe().context("finding the tollgate binary: pass --binary")?,
            };
            let opts = SidecarOptions { binary, embed_model, package: PackageOptions { tag, ..Default::default() } };
            let report = tokio::task::block_in_place(|| write_sidecar_layout(&out, &opts))?;
            println!("{report}");
            Ok(())
        }
        Cmd::Certs { policy, dir, replace } => {
            let dir = match (dir, policy) {
                (Some(dir), _) => dir,
                (None, Some(policy)) => PathBuf::from(load_policy(&policy)?.sidecar.tls.dir),
                (None, None) => anyhow::bail!("give --policy or --dir"),
            };
            if tollgate_ext_proc::tls::ensure(&dir, replace)? {
                println!("wrote the gateway's certificates to {}", dir.display());
            } else {
                println!("{} already holds the gateway's certificates (--replace makes new ones)", dir.display());
            }
            Ok(())
        }
        Cmd::Render { what } => match what {
            RenderCmd::Envoy { policy, wasm, access_log, out, xds_dir } => {
                let policy = load_policy(&policy)?;
                // Envoy loads the certificates it renders references to.
                tollgate_ext_proc::config::sidecar_tls(&policy)?;
                let opts = RenderOptions { wasm_path: &wasm, access_log: &access_log, plugin_config: None };
                let yaml = match xds_dir {
                    Some(dir) => {
                        let dir = std::path::absolute(&dir)?;
                        tollgate_ext_proc::cli::envoy::write_dynamic(&policy, &opts, &dir)?
                    }
                    None => render_yaml(&policy, &opts)?,
                };
                match out {
                    Some(path) => std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?,
                    None => print!("{yaml}"),
                }
                Ok(())
            }
            RenderCmd::FilterConfig { policy } => {
                let policy = load_policy(&policy)?;
                println!("{}", FilterConfig::from_policy(&policy).to_json());
                Ok(())
            }
            RenderCmd::Istio(a) => write_manifests(
                tollgate_ext_proc::cli::k8s::render_istio(&load_policy(&a.policy)?, &a.options())?,
                a.out.as_deref(),
            ),
            RenderCmd::EnvoyGateway(a) => write_manifests(
                tollgate_ext_proc::cli::k8s::render_envoy_gateway(&load_policy(&a.policy)?, &a.options())?,
                a.out.as_deref(),
            ),
        },
    }
}

/// `tollgate check`'s list of the models callers under a cost limit may use
/// that have no price (requests for them are refused).
fn unpriced_report(unpriced: &[tollgate_ext_proc::budget::Unpriced]) -> String {
    if unpriced.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "models without a price: refused to callers under a cost limit (set `pricing.<model>` or `pricing.default`):\n",
    );
    for u in unpriced {
        let model = if u.model == "*" { "any model not in the price table" } else { u.model.as_str() };
        out.push_str(&format!("  {model} ({}) for {}\n", u.via, u.scopes.join(", ")));
    }
    out
}

fn key_store_of(policy_path: &std::path::Path) -> anyhow::Result<PathBuf> {
    let policy = load_policy(policy_path)?;
    policy
        .access
        .key_store
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("{}: the policy sets no access.keyStore", policy_path.display()))
}

fn keys_command(what: KeysCmd) -> anyhow::Result<()> {
    use tollgate_ext_proc::keys::KeyFile;
    match what {
        KeysCmd::Create { policy, consumer, expires } => {
            let p = load_policy(&policy)?;
            if !p.consumers.contains_key(&consumer) {
                anyhow::bail!("consumer `{consumer}` is not in {} (add it under `consumers:` first)", policy.display());
            }
            let store = key_store_of(&policy)?;
            let mut file = KeyFile::load(&store)?;
            let now = std::time::SystemTime::now();
            let (secret, record) = file.create(&consumer, expires.map(|d| now + *d), now)?;
            file.save(&store)?;
            eprintln!(
                "created key {} for consumer `{consumer}` (team `{}`){}; it is shown once:",
                record.id,
                p.consumers[&consumer].team,
                record.expires.as_deref().map(|e| format!(", expires {e}")).unwrap_or_default()
            );
            println!("{secret}");
        }
        KeysCmd::Revoke { policy, id } => {
            let store = key_store_of(&policy)?;
            let mut file = KeyFile::load(&store)?;
            let consumer = file.revoke(&id)?.consumer.clone();
            file.save(&store)?;
            println!("revoked key {id} of consumer `{consumer}`");
        }
        KeysCmd::List { policy } => {
            let store = key_store_of(&policy)?;
            let file = KeyFile::load(&store)?;
            println!("{:<14} {:<20} {:<22} {:<22} STATE", "ID", "CONSUMER", "CREATED", "EXPIRES");
            let now = std::time::SystemTime::now();
            for k in &file.keys {
                let expired =
                    k.expires.as_deref().and_then(|e| humantime::parse_rfc3339_weak(e).ok()).is_some_and(|t| t <= now);
                let state = if k.revoked {
                    "revoked"
                } else if expired {
                    "expired"
                } else {
                    "active"
                };
                println!(
                    "{:<14} {:<20} {:<22} {:<22} {state}",
                    k.id,
                    k.consumer,
                    k.created,
                    k.expires.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(())
}

/// The sidecar's admin address: given, from the policy, or the default.
fn admin_address(admin: Option<String>, policy: Option<PathBuf>) -> anyhow::Result<String> {
    Ok(match (admin, policy) {
        (Some(a), _) => a,
        (None, Some(p)) => {
            let p = load_policy(&p)?;
            format!("{}:{}", p.sidecar.host, p.sidecar.admin_port)
        }
        (None, None) => "127.0.0.1:10003".into(),
    })
}

/// One call to the sidecar's admin endpoints (with the admin token when set): the 200 answer's body.
async fn admin_call(admin: &str, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<String> {
    let token = std::env::var(tollgate_ext_proc::server::ADMIN_TOKEN_ENV).ok();
    let (status, answer) = tollgate_ext_proc::cli::launch::http_request(admin, method, path, token.as_deref(), body)
        .await
        .with_context(|| format!("cannot reach the sidecar at {admin} (is the gateway up?)"))?;
    if status != 200 {
        let reason = serde_json::from_str::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| answer.trim().to_string());
        anyhow::bail!("sidecar at {admin} answered {status}: {reason}");
    }
    Ok(answer)
}

async fn mcp_command(what: McpCmd, policy: Option<PathBuf>, admin: Option<String>) -> anyhow::Result<()> {
    let admin = admin_address(admin, policy)?;
    match what {
        McpCmd::Tools => print!("{}", admin_call(&admin, "GET", "/mcp/tools", None).await?),
        McpCmd::Approve { tool } => {
            let body = serde_json::json!({ "tool": tool }).to_string();
            let answer: serde_json::Value =
                serde_json::from_str(&admin_call(&admin, "POST", "/mcp/approve", Some(&body)).await?)?;
            println!("approved {tool}: {}", answer["digest"].as_str().unwrap_or_default());
        }
    }
    Ok(())
}

async fn usage_command(
    policy: Option<PathBuf>,
    admin: Option<String>,
    team: Option<String>,
    since: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    use tollgate_ext_proc::limits::UsageRow;
    let admin = admin_address(admin, policy)?;
    let mut query = Vec::new();
    if let Some(since) = since {
        let day = match humantime::parse_duration(&since) {
            Ok(span) => tollgate_ext_proc::limits::utc_day(std::time::SystemTime::now() - span),
            Err(_) => since,
        };
        query.push(format!("since={day}"));
    }
    if let Some(team) = team {
        query.push(format!("team={team}"));
    }
    let path = format!("/usage?{}", query.join("&"));
    let body = admin_call(&admin, "GET", &path, None).await?;
    let rows: Vec<UsageRow> = serde_json::from_str(&body).with_context(|| format!("unexpected answer from {admin}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<11} {:<14} {:<16} {:<28} {:>8} {:>10} {:>10} {:>12}",
        "DAY", "TEAM", "CONSUMER", "MODEL", "REQUESTS", "INPUT", "OUTPUT", "COST (USD)"
    );
    let mut total = 0u64;
    for r in &rows {
        total += r.cost_micros;
        println!(
            "{:<11} {:<14} {:<16} {:<28} {:>8} {:>10} {:>10} {:>12.6}",
            r.day,
            r.team,
            r.consumer,
            r.model,
            r.requests,
            r.input_tokens,
            r.output_tokens,
            tollgate_core::pricing::usd(r.cost_micros)
        );
    }
    println!("total: ${:.6} over {} rows", tollgate_core::pricing::usd(total), rows.len());
    Ok(())
}

/// A time given as RFC 3339 or as a span back from now (`1h`).
fn parse_when(s: &str) -> anyhow::Result<std::time::SystemTime> {
    if let Ok(span) = humantime::parse_duration(s) {
        return Ok(std::time::SystemTime::now() - span);
    }
    humantime::parse_rfc3339_weak(s).with_context(|| format!("`{s}` is neither a time nor a span such as 1h"))
}

fn audit_command(what: AuditCmd) -> anyhow::Result<()> {
    use tollgate_ext_proc::audit;
    let default_dir = || tollgate_ext_proc::home::tollgate_home().join("audit");
    match what {
        AuditCmd::Verify { dir } => {
            let dir = dir.unwrap_or_else(default_dir);
            let report = audit::verify(&dir)?;
            println!("{}: {report}", dir.display());
            if !report.is_ok() {
                anyhow::bail!("the audit log in {} is broken", dir.display());
            }
        }
        AuditCmd::Tail { dir, n } => {
            for rec in audit::tail(dir.unwrap_or_else(default_dir), n)? {
                println!("{}", serde_json::to_string(&rec)?);
            }
        }
        AuditCmd::Query { dir, consumer, team, model, since, until, decision } => {
            let filter = audit::Filter {
                consumer,
                team,
                model,
                since: since.as_deref().map(parse_when).transpose()?,
                until: until.as_deref().map(parse_when).transpose()?,
                decision_contains: decision,
            };
            for rec in audit::query(dir.unwrap_or_else(default_dir), &filter)? {
                println!("{}", serde_json::to_string(&rec)?);
            }
        }
    }
    Ok(())
}
