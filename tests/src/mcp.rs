//! MCP servers and clients on the official Python SDK (`tests/mcp/*.py`),
//! for the MCP gateway's end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The Tollgate venv's Python (the SDKs are installed there by `scripts/install.sh`).
pub fn venv_python() -> anyhow::Result<PathBuf> {
    let home = match std::env::var_os("TOLLGATE_HOME") {
        Some(h) => PathBuf::from(h),
        None => PathBuf::from(std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set"))?).join(".tollgate"),
    };
    let python = home.join("venv").join("bin").join("python");
    if !python.is_file() {
        return Err(anyhow!("no Python at {}: run scripts/install.sh", python.display()));
    }
    Ok(python)
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp").join(name)
}

fn python_command(python: &Path) -> Command {
    let mut cmd = Command::new(python);
    cmd.env("NO_PROXY", "*").env("no_proxy", "*").env("PYTHONDONTWRITEBYTECODE", "1").kill_on_drop(true);
    cmd
}

/// An MCP server (`tests/mcp/server.py`) recording every request it receives.
pub struct McpServer {
    pub port: u16,
    pub record: PathBuf,
    _child: Child,
}

impl McpServer {
    /// Start `variant` (`crm`, `weather`, `poisoned`, `many`) in `dir`; with
    /// `token`, it answers only `Authorization: Bearer <token>`.
    pub async fn start(dir: &Path, name: &str, variant: &str, token: Option<&str>) -> anyhow::Result<McpServer> {
        McpServer::start_with(dir, name, variant, token, &[]).await
    }

    /// The same on the older HTTP+SSE transport (GET `/mcp` is the stream).
    pub async fn start_legacy(dir: &Path, name: &str, variant: &str) -> anyhow::Result<McpServer> {
        McpServer::start_with(dir, name, variant, None, &["--legacy-sse"]).await
    }

    async fn start_with(
        dir: &Path,
        name: &str,
        variant: &str,
        token: Option<&str>,
        extra: &[&str],
    ) -> anyhow::Result<McpServer> {
        let python = venv_python()?;
        let port = crate::test_port()?;
        let record = dir.join(format!("mcp-{name}.jsonl"));
        let mut cmd = python_command(&python);
        cmd.arg(script("server.py"))
            .args(["--port", &port.to_string(), "--name", name, "--variant", variant, "--record"])
            .arg(&record)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join(format!("mcp-{name}.log")))?);
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        cmd.args(extra);
        let mut child = cmd.spawn().context("cannot start tests/mcp/server.py")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if line.trim() == "READY" {
                    return Ok(());
                }
            }
            Err(anyhow!("the MCP server exited before READY"))
        })
        .await
        .map_err(|_| anyhow!("the MCP server was not READY in 30 s"))?;
        ready?;
        Ok(McpServer { port, record, _child: child })
    }

    /// Its MCP endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Every request it received (`{"method", "path", "headers", "body"}`).
    pub fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The `params` of every `tools/call` it received.
    pub fn calls(&self) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| r["body"]["method"] == "tools/call")
            .map(|r| r["body"]["params"].clone())
            .collect()
    }

    /// Change a tool's definition while it runs (a rug pull; see tests/mcp/README.md).
    pub async fn mutate(&self) -> anyhow::Result<Value> {
        let url = format!("http://127.0.0.1:{}/admin/mutate", self.port);
        Ok(reqwest::Client::new().post(url).send().await?.json().await?)
    }
}

/// A client session (`tests/mcp/client.py`) driven one step at a time.
pub struct McpClient {
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    _child: Child,
    /// The first line: `initialize`'s outcome.
    pub opened: Value,
}

impl McpClient {
    /// Connect to `url` with these extra headers (`Name: value`), and more
    /// client arguments (`--session-id ID`, `--keep-session`).
    pub async fn connect(url: &str, headers: &[String], args: &[&str]) -> anyhow::Result<McpClient> {
        let python = venv_python()?;
        let mut cmd = python_command(&python);
        cmd.arg(script("client.py")).args(["--url", url, "--timeout", "20"]).args(args);
        for h in headers {
            cmd.args(["--header", h]);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let opened = read_line(&mut lines).await?;
        Ok(McpClient { stdin, lines, _child: child, opened })
    }

    /// Run one step (`{"op": "list"}`, `{"op": "call", ...}`) and return its answer.
    pub async fn step(&mut self, step: Value) -> anyhow::Result<Value> {
        let mut line = serde_json::to_vec(&step)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        self.stdin.flush().await?;
        read_line(&mut self.lines).await
    }

    /// The tool names `list` shows.
    pub async fn tool_names(&mut self) -> anyhow::Result<Vec<String>> {
        let listed = self.step(serde_json::json!({"op": "list"})).await?;
        if listed["ok"] != true {
            return Err(anyhow!("list failed: {listed}"));
        }
        let mut names: Vec<String> = listed["tools"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t["name"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }

    /// Call a tool.
    pub async fn call(&mut self, name: &str, arguments: Value) -> anyhow::Result<Value> {
        self.step(serde_json::json!({"op": "call", "name": name, "arguments": arguments})).await
    }
}

async fn read_line(lines: &mut Lines<BufReader<ChildStdout>>) -> anyhow::Result<Value> {
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .map_err(|_| anyhow!("the MCP client did not answer in 60 s"))??
        .ok_or_else(|| anyhow!("the MCP client exited"))?;
    serde_json::from_str(&line).with_context(|| format!("not JSON from the MCP client: {line}"))
}
