//! Harness for the end-to-end tests: starts a real Envoy loading the built
//! filter, the real sidecar (`tollgate serve`) and the mock provider
//! (`tollgate mock`) on loopback ports chosen at run time.
//!
//! Paths come from `TOLLGATE_BIN`, `TOLLGATE_ENVOY` and `TOLLGATE_WASM`
//! (set by `scripts/test.sh`), else from the checkout's build outputs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub mod faulty;
pub mod mcp;
pub mod python;

use anyhow::{anyhow, Context as _};
use tokio::process::Command;
use tollgate_ext_proc::cli::envoy::{render, render_yaml, RenderOptions};
use tollgate_ext_proc::cli::launch::{self, envoy_command, wait_ready, Proc};
use tollgate_ext_proc::config::{parse_policy, resolve_paths};

/// The binaries and the filter under test.
#[derive(Debug, Clone)]
pub struct Paths {
    pub tollgate: PathBuf,
    pub envoy: PathBuf,
    pub wasm: PathBuf,
}

pub fn paths() -> anyhow::Result<Paths> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or_else(|| anyhow!("no workspace"))?;
    let target = launch::target_dir(root);
    let tollgate = match std::env::var_os("TOLLGATE_BIN") {
        Some(p) => PathBuf::from(p),
        None => ["debug", "release"]
            .iter()
            .map(|profile| target.join(profile).join("tollgate"))
            .find(|p| p.is_file())
            .ok_or_else(|| anyhow!("no tollgate binary: run `cargo build -p tollgate-ext-proc` or set TOLLGATE_BIN"))?,
    };
    let envoy =
        launch::find_envoy().ok_or_else(|| anyhow!("no envoy: run scripts/install.sh or set TOLLGATE_ENVOY"))?;
    let wasm = match std::env::var_os("TOLLGATE_WASM") {
        Some(p) => PathBuf::from(p),
        None => target.join("wasm32-wasip1").join("wasm-release").join(launch::WASM_FILE),
    };
    if !wasm.is_file() {
        return Err(anyhow!("no filter at {}: run scripts/test.sh or set TOLLGATE_WASM", wasm.display()));
    }
    Ok(Paths { tollgate, envoy, wasm })
}

/// How to start a gateway.
#[derive(Debug, Clone)]
pub struct Options {
    /// Extra top-level policy YAML (failMode, models, inspection ...).
    pub policy_extra: String,
    /// Extra keys inside the mock provider's entry (e.g. `keyEnv: X`).
    pub provider_extra: String,
    /// More providers, as lines under `providers:` (e.g. `  dead: {kind: openai, baseUrl: 'http://127.0.0.1:9'}`).
    pub providers_extra: String,
    /// Start the sidecar (false: test the sidecar-down fail modes).
    pub sidecar: bool,
    /// Replace the rendered plugin configuration.
    pub plugin_config: Option<String>,
    /// Edit the rendered bootstrap before Envoy starts (e.g. swap in the
    /// Envoy configuration a Kubernetes manifest carries).
    pub envoy_edit: Option<fn(&tollgate_core::policy::Policy, serde_json::Value) -> serde_json::Value>,
    /// Extra environment for the sidecar.
    pub sidecar_env: Vec<(String, String)>,
    /// Extra arguments for `tollgate serve`.
    pub sidecar_args: Vec<String>,
    /// Extra keys of the policy's `sidecar` map (e.g. `timeoutMs: 300`).
    pub sidecar_extra: String,
    /// Serve the sidecar's admin endpoints on every address, not loopback only.
    pub expose_sidecar_admin: bool,
    /// Extra arguments for `tollgate mock` (e.g. `--token-ttl-secs 3`).
    pub mock_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            policy_extra: String::new(),
            provider_extra: String::new(),
            providers_extra: String::new(),
            sidecar: true,
            plugin_config: None,
            envoy_edit: None,
            sidecar_env: Vec::new(),
            sidecar_args: Vec::new(),
            sidecar_extra: String::new(),
            expose_sidecar_admin: false,
            mock_args: Vec::new(),
        }
    }
}

/// A running gateway; everything stops when it is dropped.
pub struct Gateway {
    pub url: String,
    pub admin: String,
    pub mock: String,
    /// The sidecar's admin address (health, usage, metrics).
    pub sidecar_admin: String,
    /// The sidecar's gRPC (ext_proc) address.
    pub sidecar_grpc: String,
    /// The arguments `start_sidecar` adds to `tollgate serve`.
    sidecar_args: Vec<String>,
    pub policy_path: PathBuf,
    pub dir: PathBuf,
    pub access_log: PathBuf,
    pub log: PathBuf,
    procs: Vec<Proc>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn scratch_dir() -> anyhow::Result<PathBuf> {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("tollgate-e2e-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The policy text for a gateway on the given ports (`{dir}` in the extra
/// policy stands for the gateway's scratch directory, `{mock}` for the mock
/// provider's address).
fn policy_text(ports: &Ports, opts: &Options, dir: &Path) -> String {
    let text = format!(
        "listen: {{port: {}, adminPort: {}}}\nsidecar: {{grpcPort: {}, adminPort: {}{}}}\nproviders:\n  mock: {{kind: mock, baseUrl: 'http://127.0.0.1:{}'{}}}\n{}{}",
        ports.listen,
        ports.admin,
        ports.grpc,
        ports.sidecar_admin,
        if opts.sidecar_extra.is_empty() { String::new() } else { format!(", {}", opts.sidecar_extra) },
        ports.mock,
        if opts.provider_extra.is_empty() { String::new() } else { format!(", {}", opts.provider_extra) },
        if opts.providers_extra.is_empty() { String::new() } else { format!("{}\n", opts.providers_extra.trim_end()) },
        opts.policy_extra
    );
    text.replace("{dir}", &dir.display().to_string()).replace("{mock}", &format!("127.0.0.1:{}", ports.mock))
}

/// The policy as the sidecar will read it from `policy_path`: its paths
/// resolved there, and the certificates for Envoy and the sidecar made
/// beside it (Envoy loads them even when a test starts no sidecar).
fn test_policy(text: &str, policy_path: &Path) -> anyhow::Result<tollgate_core::policy::Policy> {
    let mut policy = parse_policy(text).map_err(|e| anyhow!("test policy: {e}"))?;
    resolve_paths(&mut policy, policy_path);
    tollgate_ext_proc::config::sidecar_tls(&policy)?;
    Ok(policy)
}

struct Ports {
    listen: u16,
    admin: u16,
    grpc: u16,
    sidecar_admin: u16,
    mock: u16,
}

impl Gateway {
    /// Start a gateway. Ports are picked free at run time; another test can
    /// take one in between, so a start that fails on a port is tried again
    /// on fresh ports (any other failure is reported at once).
    pub async fn start(opts: Options) -> anyhow::Result<Gateway> {
        let mut tries = 0;
        loop {
            tries += 1;
            match Gateway::start_once(opts.clone()).await {
                Err(err) if tries < 3 && is_port_clash(&err) => {
                    eprintln!("gateway start hit a taken port, retrying: {err:#}");
                }
                other => return other,
            }
        }
    }

    async fn start_once(opts: Options) -> anyhow::Result<Gateway> {
        let paths = paths()?;
        let dir = scratch_dir()?;
        let ports = Ports {
            listen: test_port()?,
            admin: test_port()?,
            grpc: test_port()?,
            sidecar_admin: test_port()?,
            mock: test_port()?,
        };
        let text = policy_text(&ports, &opts, &dir);
        let policy_path = dir.join("policy.yaml");
        let policy = test_policy(&text, &policy_path)?;
        std::fs::write(&policy_path, &text)?;
        let access_log = dir.join("access.log");
        let log = dir.join("gateway.log");
        let render_opts = RenderOptions {
            wasm_path: &paths.wasm,
            access_log: &access_log.display().to_string(),
            plugin_config: opts.plugin_config.clone(),
        };
        let envoy_yaml = match opts.envoy_edit {
            // JSON is YAML too.
            Some(edit) => serde_json::to_string_pretty(&edit(&policy, render(&policy, &render_opts)?))?,
            None => render_yaml(&policy, &render_opts)?,
        };
        let envoy_config = dir.join("envoy.yaml");
        std::fs::write(&envoy_config, envoy_yaml)?;

        let ready = Duration::from_secs(60);
        let mut gw = Gateway {
            url: format!("http://127.0.0.1:{}", ports.listen),
            admin: format!("127.0.0.1:{}", ports.admin),
            mock: format!("127.0.0.1:{}", ports.mock),
            sidecar_admin: format!("127.0.0.1:{}", ports.sidecar_admin),
            sidecar_grpc: format!("127.0.0.1:{}", ports.grpc),
            sidecar_args: {
                let mut args = opts.sidecar_args.clone();
                if opts.expose_sidecar_admin {
                    args.extend(["--admin".to_string(), format!("0.0.0.0:{}", ports.sidecar_admin)]);
                }
                args
            },
            policy_path: policy_path.clone(),
            dir,
            access_log,
            log: log.clone(),
            procs: Vec::new(),
        };
        let mock_addr = gw.mock.clone();
        let mut mock = Proc::spawn(
            "mock",
            Command::new(&paths.tollgate)
                .args(["mock", "--listen", &mock_addr, "--name", "mock"])
                .args(&opts.mock_args),
            &log,
        )?;
        let r = wait_ready(&mut mock, &mock_addr, "/healthz", ready).await;
        gw.procs.push(mock);
        r.with_context(|| gw.log_text())?;

        if opts.sidecar {
            gw.start_sidecar(&opts.sidecar_env).await?;
        }

        // `TOLLGATE_TEST_ENVOY_LOG=debug` to see Envoy's filter chain at work.
        let level = std::env::var("TOLLGATE_TEST_ENVOY_LOG").unwrap_or_else(|_| "info".into());
        let mut envoy = Proc::spawn("envoy", &mut envoy_command(&paths.envoy, &envoy_config, &level), &log)?;
        let admin = gw.admin.clone();
        let r = wait_ready(&mut envoy, &admin, "/ready", ready).await;
        gw.procs.push(envoy);
        r.with_context(|| gw.log_text())?;
        // Envoy reports ready even when a listener failed to bind (its port
        // taken meanwhile by another test): check the listener answers.
        let listen = ("127.0.0.1", ports.listen);
        let mut bound = false;
        for _ in 0..40 {
            if tokio::net::TcpStream::connect(listen).await.is_ok() {
                bound = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !bound {
            return Err(anyhow!("Envoy's listener on port {} is not accepting connections", ports.listen))
                .with_context(|| gw.log_text());
        }
        Ok(gw)
    }

    /// Start (or restart) the sidecar on the gateway's policy.
    pub async fn start_sidecar(&mut self, env: &[(String, String)]) -> anyhow::Result<()> {
        let paths = paths()?;
        let mut cmd = Command::new(&paths.tollgate);
        cmd.arg("serve").arg("--policy").arg(&self.policy_path).args(&self.sidecar_args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut sidecar = Proc::spawn("sidecar", &mut cmd, &self.log)?;
        let r = wait_ready(&mut sidecar, &self.sidecar_admin, "/healthz", Duration::from_secs(60)).await;
        self.procs.push(sidecar);
        r.with_context(|| self.log_text())
    }

    /// Run `tollgate ARGS` (e.g. `keys create`) and return its standard output.
    pub async fn tollgate(&self, args: &[&str]) -> anyhow::Result<String> {
        let paths = paths()?;
        let out = Command::new(&paths.tollgate).args(args).output().await?;
        if !out.status.success() {
            return Err(anyhow!("tollgate {args:?} failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Create a virtual key for `consumer` in the gateway's key store, and
    /// wait until the sidecar has read it (it looks every 500 ms).
    pub async fn create_key(&self, consumer: &str) -> String {
        let policy = self.policy_path.display().to_string();
        let out = self.tollgate(&["keys", "create", "--policy", &policy, "--consumer", consumer]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        out.trim().to_string()
    }

    /// Everything the components logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A counter from Envoy's `/stats` (wasm metrics carry a `wasmcustom.` prefix).
    pub async fn stat(&self, name: &str) -> Option<u64> {
        let (_, body) = launch::http_get(&self.admin, "/stats").await.ok()?;
        body.lines().find_map(|line| {
            let (key, value) = line.split_once(": ")?;
            (key == name || key.strip_prefix("wasmcustom.") == Some(name)).then(|| value.trim().parse().ok())?
        })
    }

    /// Wait until `stat(name)` reaches at least `min`; returns the last value.
    pub async fn wait_stat(&self, name: &str, min: u64) -> Option<u64> {
        let mut last = None;
        for _ in 0..100 {
            last = self.stat(name).await;
            if last.is_some_and(|v| v >= min) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        last
    }

    /// Access-log records (JSON), waiting until at least `n` are written.
    pub async fn access_log(&self, n: usize) -> Vec<serde_json::Value> {
        let mut records = Vec::new();
        for _ in 0..60 {
            let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
            records = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            if records.len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        records
    }

    /// The audit records in the default directory (`audit/` beside the policy), in order.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(self.dir.join("audit"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_segment(p))
            .collect();
        files.sort();
        for f in files {
            for line in std::fs::read_to_string(f).unwrap_or_default().lines() {
                out.extend(serde_json::from_str::<serde_json::Value>(line).ok());
            }
        }
        out
    }

    /// The audit record of the request with gateway id `id`, or sent with
    /// `x-request-id: id` (null if none).
    pub fn audit_record(&self, id: &str) -> serde_json::Value {
        self.audit_records()
            .into_iter()
            .find(|r| r["requestId"] == id || r["clientRequestId"] == id)
            .unwrap_or(serde_json::Value::Null)
    }

    /// What the mock provider received.
    pub async fn mock_requests(&self) -> Vec<serde_json::Value> {
        let (_, body) = launch::http_get(&self.mock, "/mock/requests").await.unwrap_or_default();
        serde_json::from_str(&body).unwrap_or_default()
    }

    /// Send `sig` to one component by name (e.g. SIGSTOP to stall the sidecar).
    pub fn signal(&self, name: &str, sig: launch::Signal) {
        for p in self.procs.iter().filter(|p| p.name == name) {
            p.signal(sig);
        }
    }

    /// Stop one component by name (e.g. "sidecar") with SIGKILL.
    pub async fn kill(&mut self, name: &str) {
        for p in &mut self.procs {
            if p.name == name {
                p.signal(launch::Signal::SIGKILL);
                let _ = p.wait().await;
            }
        }
        self.procs.retain_mut(|p| p.name != name);
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // kill_on_drop stops the children; keep the scratch dir only on failure.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("gateway files kept in {}", self.dir.display());
        }
    }
}

/// `envoy --mode validate` on a configuration text: whether Envoy accepts
/// it, and what it printed.
pub async fn validate_in_envoy(what: &str, config: &str) -> anyhow::Result<(bool, String)> {
    let file = std::env::temp_dir().join(format!("tollgate-validate-{what}-{}.yaml", std::process::id()));
    std::fs::write(&file, config)?;
    let out = Command::new(&paths()?.envoy)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&file)
        .output()
        .await?;
    let _ = std::fs::remove_file(&file);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success() && text.contains("OK"), text))
}

/// Run Envoy on a config and return (exit status, output) — for configs that must be rejected.
pub async fn run_envoy_expecting_exit(opts: Options, timeout: Duration) -> anyhow::Result<(Option<i32>, String)> {
    let paths = paths()?;
    let dir = scratch_dir()?;
    let ports = Ports {
        listen: test_port()?,
        admin: test_port()?,
        grpc: test_port()?,
        sidecar_admin: test_port()?,
        mock: test_port()?,
    };
    let policy = test_policy(&policy_text(&ports, &opts, &dir), &dir.join("policy.yaml"))?;
    let envoy_yaml = render_yaml(
        &policy,
        &RenderOptions { wasm_path: &paths.wasm, access_log: "/dev/null", plugin_config: opts.plugin_config.clone() },
    )?;
    let config = dir.join("envoy.yaml");
    std::fs::write(&config, envoy_yaml)?;
    let log = dir.join("envoy.log");
    let mut envoy = Proc::spawn("envoy", &mut envoy_command(&paths.envoy, &config, "info"), &log)?;
    let status = tokio::time::timeout(timeout, envoy.wait()).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let code = match status {
        Ok(Ok(s)) => s.code(),
        _ => {
            envoy.stop(Duration::from_secs(2)).await;
            None
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok((code, text))
}

/// Whether `path` is a segment of an audit log (`audit-<seq>.jsonl`; the
/// directory also holds the in-flight journal).
pub fn is_segment(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
}

/// Every byte of an answer until it ends or breaks off, and whether it
/// ended cleanly (not reset). Panics when it has not ended after 20 s: a
/// hang.
pub async fn read_body(resp: reqwest::Response) -> (Vec<u8>, bool) {
    use futures::StreamExt as _;
    let mut chunks = resp.bytes_stream();
    let mut body = Vec::new();
    let read = async {
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(c) => body.extend_from_slice(&c),
                Err(_) => return false,
            }
        }
        true
    };
    let clean_end = tokio::time::timeout(Duration::from_secs(20), read).await.expect("the answer never ended: a hang");
    (body, clean_end)
}

/// The events of a complete SSE body, parsed with the gateway's own parser.
pub fn sse_events(body: &[u8]) -> Vec<tollgate_core::SseEvent> {
    let mut parser = tollgate_core::SseParser::new(1 << 20);
    let mut out = Vec::new();
    parser.feed(body, &mut out).unwrap();
    parser.finish(&mut out).unwrap();
    out
}

impl Gateway {
    /// POST a JSON body to the gateway.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.post_with(path, body, &[]).await
    }

    /// POST a JSON body with extra headers.
    pub async fn post_with(&self, path: &str, body: &serde_json::Value, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
            .post(format!("{}{path}", self.url))
            .json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    /// The sidecar's spend report rows.
    pub async fn usage_rows(&self) -> Vec<serde_json::Value> {
        let (status, body) = launch::http_get(&self.sidecar_admin, "/usage").await.unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Envoy's counters whose name ends in `suffix`, summed (e.g. the
    /// upstream resets of every cluster).
    pub async fn envoy_counter(&self, suffix: &str) -> u64 {
        let body = reqwest::get(format!("http://{}/stats", self.admin)).await.unwrap().text().await.unwrap();
        body.lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| k.ends_with(suffix))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum()
    }

    /// A counter from the sidecar's `/metrics`.
    pub async fn sidecar_metric(&self, name: &str) -> Option<u64> {
        let (_, body) = launch::http_get(&self.sidecar_admin, "/metrics").await.ok()?;
        body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

/// First port of the range the tests hand out: below Linux's ephemeral
/// range (32768-60999), so neither `bind(0)` nor an outgoing connection of
/// any process on the machine is ever given one of these ports.
const TEST_PORTS: std::ops::Range<u32> = 20000..32000;

/// A loopback port no other test holds: tests run as separate processes, so
/// the next port comes from a counter in a locked file shared by all of
/// them, and is checked free before it is handed out. (Ports from
/// `bind(0)` are not enough: the kernel hands the same one to the next
/// caller as soon as it is released, e.g. to another test's sidecar,
/// which then answers this test's readiness probe.)
pub fn test_port() -> anyhow::Result<u16> {
    use nix::fcntl::{Flock, FlockArg};
    use std::io::{Read as _, Seek as _, Write as _};

    let path = std::env::temp_dir().join("tollgate-e2e-ports");
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
    let mut file =
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| anyhow!("lock {}: {e}", path.display()))?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let span = TEST_PORTS.end - TEST_PORTS.start;
    let mut next: u32 = text.trim().parse().unwrap_or(std::process::id() % span);
    for _ in 0..span {
        let port = u16::try_from(TEST_PORTS.start + next % span)?;
        next = (next + 1) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            file.set_len(0)?;
            file.rewind()?;
            write!(file, "{next}")?;
            return Ok(port);
        }
    }
    Err(anyhow!("no free port in {TEST_PORTS:?}"))
}

/// Whether a failed start lost a port to another process.
fn is_port_clash(err: &anyhow::Error) -> bool {
    let text = format!("{err:#}").to_lowercase();
    text.contains("address already in use") || text.contains("not accepting connections")
}

/// A `redis-server` on a free loopback port, stopped on drop.
pub struct Redis {
    pub url: String,
    port: u16,
    child: std::process::Child,
}

impl Redis {
    pub fn start() -> anyhow::Result<Redis> {
        Redis::start_on(test_port()?)
    }

    /// Kill the server (SIGKILL: nothing saved) and start an empty one on
    /// the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.child = Redis::spawn(self.port)?;
        Ok(())
    }

    /// Kill the server (it stays down until [`Redis::restart`]).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn start_on(port: u16) -> anyhow::Result<Redis> {
        Ok(Redis { url: format!("redis://127.0.0.1:{port}"), port, child: Redis::spawn(port)? })
    }

    /// A server on `port`, once it accepts connections.
    fn spawn(port: u16) -> anyhow::Result<std::process::Child> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| anyhow!("cannot start redis-server (run scripts/install.sh): {e}"))?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(child);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(anyhow!("redis-server did not start on port {port}"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
