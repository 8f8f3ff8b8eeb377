//! The `tollgate` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tollgate_core::filter_config::FilterConfig;
use tollgate_ext_proc::config::{load_credentials, load_policy};
use tollgate_ext_proc::envoy::{render_yaml, RenderOptions};
use tollgate_ext_proc::processor::Shared;
use tollgate_ext_proc::{scan, server, up};

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
    },
    /// Validate a policy file.
    Check {
        #[arg(long)]
        policy: PathBuf,
    },
    /// Render configuration from a policy.
    Render {
        #[command(subcommand)]
        what: RenderCmd,
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
    },
    /// The wasm filter's plugin configuration (JSON).
    FilterConfig {
        #[arg(long)]
        policy: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).try_init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Serve { policy, grpc, admin } => {
            init_tracing();
            let policy = load_policy(&policy)?;
            let credentials = load_credentials(&policy)?;
            let host: std::net::IpAddr =
                policy.sidecar.host.parse().with_context(|| format!("sidecar.host `{}`", policy.sidecar.host))?;
            let grpc = grpc.unwrap_or(SocketAddr::new(host, policy.sidecar.grpc_port));
            let admin = admin.unwrap_or(SocketAddr::new(host, policy.sidecar.admin_port));
            let shared = Shared { policy: Arc::new(policy), credentials: Arc::new(credentials) };
            let grpc = server::bind(grpc).await?;
            let admin = server::bind(admin).await?;
            server::run(shared, grpc, admin, server::shutdown_signal()).await
        }
        Cmd::Up(opts) => up::up(opts).await,
        Cmd::Mock { listen, config } => {
            init_tracing();
            let listener = server::bind(listen).await?;
            println!("mock provider listening on http://{}", listener.local_addr()?);
            tollgate_mock::serve(listener, config, server::shutdown_signal()).await?;
            Ok(())
        }
        Cmd::Scan { policy, jsonl } => {
            let inspection = match policy {
                Some(path) => load_policy(&path)?.inspection,
                None => Default::default(),
            };
            let scanner = scan::Scanner::new(&inspection)?;
            let stdin = std::io::stdin().lock();
            if jsonl {
                let stdout = std::io::BufWriter::new(std::io::stdout().lock());
                let (ok, bad) = scan::scan_jsonl(&scanner, stdin, stdout)?;
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
            println!(
                "{}: ok ({} providers, {} model aliases)",
                policy.display(),
                p.providers.len(),
                p.models.len()
            );
            Ok(())
        }
        Cmd::Render { what } => match what {
            RenderCmd::Envoy { policy, wasm, access_log, out } => {
                let policy = load_policy(&policy)?;
                let yaml = render_yaml(&policy, &RenderOptions { wasm_path: &wasm, access_log: &access_log, plugin_config: None })?;
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
        },
    }
}

