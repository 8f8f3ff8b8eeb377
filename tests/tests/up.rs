//! `tollgate up` end to end: starts everything, serves a streamed answer
//! and the demo MCP server's tools, stops every child on Ctrl-C (SIGINT).
//! Also: the checked-in standalone Envoy bootstrap loads in the real Envoy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tollgate_e2e::{paths, test_port, validate_in_envoy};
use tollgate_ext_proc::cli::launch::{http_get, Signal};

/// Run `tollgate up ARGS` with its home in `home`; returns the child and its
/// banner once it says it is up.
async fn start_up(args: &[&str], home: &std::path::Path) -> (UpChild, String) {
    let p = paths().unwrap();
    let mut child = Command::new(&p.tollgate)
        .arg("up")
        .args(args)
        .env("TOLLGATE_HOME", home)
        .env("TOLLGATE_ENVOY", &p.envoy)
        .env("TOLLGATE_WASM", &p.wasm)
        // The embedding model stays where scripts/install.sh put it.
        .env(
            "TOLLGATE_EMBED_MODEL",
            tollgate_ext_proc::embed::default_model_dir().expect("no embedding model: run scripts/install.sh"),
        )
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    let up = tokio::time::timeout(Duration::from_secs(90), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            banner.push_str(&line);
            banner.push('\n');
            if line.contains("Ctrl-C") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(up, Ok(true), "tollgate up did not come up:\n{banner}");
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (UpChild(child), banner)
}

/// `tollgate up` as a child. If a test fails before stopping it, dropping it
/// sends Ctrl-C (SIGINT) and waits, so `up` stops its own children too (a
/// SIGKILL would leave Envoy, the sidecar and the mock running).
struct UpChild(tokio::process::Child);

impl Drop for UpChild {
    fn drop(&mut self) {
        let Some(id) = self.0.id() else { return };
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(id as i32), Signal::SIGINT);
        for _ in 0..200 {
            if self.0.try_wait().is_ok_and(|s| s.is_some()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn interrupt(child: &mut UpChild) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.0.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.0.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}

/// The shell commands of the banner's MCP section (a command may go on over
/// lines ending in `\`).
fn banner_mcp_commands(banner: &str) -> Vec<String> {
    let section = banner.split("MCP gateway:").nth(1).unwrap_or_else(|| panic!("no MCP section:\n{banner}"));
    let mut commands = Vec::new();
    let mut lines = section.lines().map(str::trim).skip_while(|l| !l.starts_with("curl "));
    while let Some(line) = lines.next() {
        if !line.starts_with("curl ") {
            break;
        }
        let mut command = line.to_string();
        while command.ends_with('\\') {
            command.pop();
            command.push_str(lines.next().unwrap_or_default());
        }
        commands.push(command);
    }
    commands
}

async fn sh(command: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(command).output().await.unwrap();
    assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The banner's curls open a session on the demo virtual server, list the
/// demo MCP server's tools and call one, through Envoy and the sidecar's
/// MCP gateway to the mock's `/mcp`.
async fn demo_mcp_tools_through_the_gateway(banner: &str, port: &str, mock_port: &str, key: &str) {
    let endpoint = format!("http://127.0.0.1:{port}/mcp/demo");
    assert!(banner.contains(&endpoint), "{banner}");
    let commands = banner_mcp_commands(banner);
    assert_eq!(commands.len(), 3, "initialize, tools/list, tools/call:\n{banner}");

    let init = sh(&commands[0]).await;
    let session = init
        .lines()
        .find_map(|l| l.split_once(':').filter(|(name, _)| name.eq_ignore_ascii_case("mcp-session-id")))
        .map(|(_, value)| value.trim().to_string())
        .unwrap_or_else(|| panic!("no session header:\n{init}"));
    let (_, body) = init.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no body:\n{init}"));
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["result"]["protocolVersion"], "2025-06-18", "{body}");
    let with_session = |c: &str| c.replace("<from above>", &session);

    let listed: serde_json::Value = serde_json::from_str(&sh(&with_session(&commands[1])).await).unwrap();
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["demo_echo", "demo_get_forecast", "demo_lookup_order"], "{listed}");
    let forecast =
        listed["result"]["tools"].as_array().unwrap().iter().find(|t| t["name"] == "demo_get_forecast").unwrap();
    assert_eq!(forecast["inputSchema"]["required"], serde_json::json!(["city"]), "{forecast}");

    let called: serde_json::Value = serde_json::from_str(&sh(&with_session(&commands[2])).await).unwrap();
    assert_eq!(called["result"]["isError"], false, "{called}");
    let text = called["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("{called}"));
    assert!(text.starts_with("Forecast for Paris (made-up demo data): day 1: "), "{text}");

    // The call reached the mock's MCP server under the tool's own name.
    let (_, seen) = http_get(&format!("127.0.0.1:{mock_port}"), "/mock/requests").await.unwrap();
    let seen: Vec<serde_json::Value> = serde_json::from_str(&seen).unwrap();
    let upstream: Vec<serde_json::Value> = seen
        .iter()
        .filter(|r| r["path"] == "/mcp")
        .map(|r| serde_json::from_str(r["body"].as_str().unwrap()).unwrap())
        .collect();
    let methods: Vec<&str> = upstream.iter().map(|m| m["method"].as_str().unwrap_or_default()).collect();
    assert_eq!(methods[..3], ["initialize", "notifications/initialized", "tools/list"], "{upstream:?}");
    let last = upstream.last().unwrap();
    assert_eq!(last["method"], "tools/call", "{last}");
    assert_eq!(last["params"]["name"], "get_forecast", "{last}");

    // Another tool in the same session, and no session without the key.
    let client = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        client
            .post(&endpoint)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session)
            .json(&body)
    };
    let echo = serde_json::json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
        "params": {"name": "demo_echo", "arguments": {"text": "hello through the gateway"}}});
    let resp = post(echo.clone()).bearer_auth(key).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let echoed: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echoed["result"]["content"][0]["text"], "hello through the gateway", "{echoed}");
    let resp = post(echo).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn quickstart_requires_its_demo_key_and_reports_demo_spend() {
    let home = std::env::temp_dir().join(format!("tollgate-quickstart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let ports: Vec<String> = (0..5).map(|_| test_port().unwrap().to_string()).collect();
    let args = [
        "--port",
        &ports[0],
        "--admin-port",
        &ports[1],
        "--sidecar-port",
        &ports[2],
        "--sidecar-admin-port",
        &ports[3],
        "--mock-port",
        &ports[4],
    ];
    let (mut child, banner) = start_up(&args, &home).await;
    let key = banner
        .split_whitespace()
        .find(|w| w.starts_with("tg-"))
        .map(|w| w.trim_end_matches('\''))
        .unwrap_or_else(|| panic!("no demo key in the banner:\n{banner}"))
        .to_string();
    assert!(banner.contains(&format!("Bearer {key}")), "the curl example carries the key:\n{banner}");
    let url = format!("http://127.0.0.1:{}/v1/chat/completions", ports[0]);
    let body = serde_json::json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "Say hello"}]});
    let client = reqwest::Client::new();
    let resp = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 401, "requests without the key are rejected");
    let resp = client.post(&url).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("data: [DONE]"));
    // The cache is on with nothing configured: the same prompt and a
    // paraphrase of it are answered from the cache.
    let ask = |content: &str| {
        let body = serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]});
        client.post(&url).bearer_auth(&key).json(&body).send()
    };
    let cache_header =
        |r: &reqwest::Response| r.headers().get("x-tollgate-cache").map(|v| v.to_str().unwrap().to_string());
    let first = ask("How do I reset my password?").await.unwrap();
    assert_eq!(cache_header(&first).as_deref(), Some("miss"));
    let first = first.text().await.unwrap();
    for (content, tier) in [("How do I reset my password?", "exact"), ("How can I reset my password?", "semantic")] {
        let hit = ask(content).await.unwrap();
        assert_eq!(cache_header(&hit).as_deref(), Some("hit"), "{content}");
        assert_eq!(hit.headers()["x-tollgate-cache-tier"], tier);
        let text = hit.text().await.unwrap();
        let answer =
            |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap()["choices"][0]["message"]["content"].clone();
        assert_eq!(answer(&text), answer(&first));
    }
    demo_mcp_tools_through_the_gateway(&banner, &ports[0], &ports[4], &key).await;
    // The demo team's spend shows in `tollgate usage`.
    let p = paths().unwrap();
    let out = Command::new(&p.tollgate)
        .args(["usage", "--admin", &format!("127.0.0.1:{}", ports[3])])
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.lines().any(|l| l.contains("demo") && l.contains("gpt-4o-mini")), "{report}");
    interrupt(&mut child).await;
    // The key is kept (never its secret in the store) and printed again next time.
    let store = std::fs::read_to_string(home.join("keys.yaml")).unwrap();
    assert!(!store.contains(key.rsplit('-').next().unwrap()));
    let (mut child, banner) = start_up(&args, &home).await;
    assert!(banner.contains(&key), "the same demo key on the next start:\n{banner}");
    interrupt(&mut child).await;
    let _ = std::fs::remove_dir_all(&home);
}

#[tokio::test]
async fn up_serves_a_streamed_answer_and_stops_cleanly_on_ctrl_c() {
    let home = std::env::temp_dir().join(format!("tollgate-up-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let (listen, admin, grpc, sadmin, mock) =
        (test_port().unwrap(), test_port().unwrap(), test_port().unwrap(), test_port().unwrap(), test_port().unwrap());
    let policy = home.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "listen: {{port: {listen}, adminPort: {admin}}}\nsidecar: {{grpcPort: {grpc}, adminPort: {sadmin}}}\nproviders:\n  mock: {{kind: mock, baseUrl: 'http://127.0.0.1:{mock}'}}\n"
        ),
    )
    .unwrap();
    let policy = policy.display().to_string();
    let (mut child, banner) = start_up(&["--policy", &policy], &home).await;
    assert!(banner.contains(&format!("http://127.0.0.1:{listen}")), "{banner}");
    assert!(banner.contains("curl -N"), "prints a working curl: {banner}");

    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{listen}/v1/chat/completions"))
        .json(&serde_json::json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "Say hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-tollgate-backend"], "mock");
    let body = resp.text().await.unwrap();
    assert!(body.contains("data: [DONE]"), "{body}");
    assert!(body.matches("data: ").count() > 3, "streamed in several events: {body}");

    interrupt(&mut child).await;
    // Every child is gone: nothing answers on their ports any more.
    for (what, port, path) in [("envoy", admin, "/ready"), ("sidecar", sadmin, "/healthz"), ("mock", mock, "/healthz")]
    {
        assert!(http_get(&format!("127.0.0.1:{port}"), path).await.is_err(), "{what} still running after Ctrl-C");
    }
    let _ = std::fs::remove_dir_all(&home);
}

#[tokio::test]
async fn standalone_bootstrap_validates_in_envoy() {
    let p = paths().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // The bootstrap names the filter and the certificates for Envoy and the
    // sidecar by their paths relative to the checkout.
    let tls = tempfile_dir("standalone-tls");
    tollgate_ext_proc::tls::ensure(&tls, false).unwrap();
    let config = std::fs::read_to_string(root.join("envoy/tollgate.yaml"))
        .unwrap()
        .replace("target/wasm32-wasip1/wasm-release/tollgate_filter.wasm", &p.wasm.display().to_string())
        .replace("envoy/tls/", &format!("{}/", tls.display()));
    let (ok, text) = validate_in_envoy("standalone", &config).await.unwrap();
    let _ = std::fs::remove_dir_all(&tls);
    assert!(ok, "{text}");
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// One request of the reload test's load: any failure is reported, never retried.
async fn one_request(client: &reqwest::Client, url: &str, stream: bool) -> Result<(), String> {
    let body = serde_json::json!({"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "Keep going"}]});
    let resp = client.post(url).json(&body).send().await.map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| format!("read: {e}"))?;
    if status != 200 || (stream && !text.contains("data: [DONE]")) {
        return Err(format!("{status}: {text}"));
    }
    Ok(())
}

#[tokio::test]
async fn policy_changes_apply_live_under_load_and_a_bad_one_is_refused() {
    let home = std::env::temp_dir().join(format!("tollgate-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let (listen, admin, grpc, sadmin, mock) =
        (test_port().unwrap(), test_port().unwrap(), test_port().unwrap(), test_port().unwrap(), test_port().unwrap());
    let base = format!(
        "listen: {{port: {listen}, adminPort: {admin}}}\nsidecar: {{grpcPort: {grpc}, adminPort: {sadmin}}}\nproviders:\n  mock: {{kind: mock, baseUrl: 'http://127.0.0.1:{mock}'}}\n"
    );
    // v2: an alias (a sidecar change) and a custom PII pattern (a filter change).
    let v2 = format!(
        "{base}models:\n  fast: {{targets: [{{provider: mock, model: gpt-4o-mini}}]}}\ninspection:\n  pii:\n    custom: [{{name: EMPLOYEE_ID, patterns: ['EMP-[0-9]{{6}}'], action: mask}}]\n"
    );
    let policy = home.join("policy.yaml");
    std::fs::write(&policy, &base).unwrap();
    let policy_arg = policy.display().to_string();
    let (mut child, _) = start_up(&["--policy", &policy_arg], &home).await;
    let url = format!("http://127.0.0.1:{listen}/v1/chat/completions");
    let client = reqwest::Client::new();

    // Load for the whole test: four clients, streamed and not.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && ok < 5000 {
                    match one_request(&client, &url, i % 2 == 0).await {
                        Ok(()) => ok += 1,
                        Err(e) => failed.push(e),
                    }
                }
                (ok, failed)
            })
        })
        .collect();

    // What the provider saw of a probe, and which model answered.
    let probe = |model: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "Badge EMP-123456 please"}]});
            let v: serde_json::Value = client.post(&url).json(&body).send().await.unwrap().json().await.unwrap();
            v
        }
    };
    let masked = |v: &serde_json::Value| {
        // The mock echoes what it received; the filter restores it for the client,
        // so the model name tells the alias apart and the provider log the masking.
        v["model"].as_str().unwrap_or_default().to_string()
    };
    let provider_saw_mask = || async {
        let (_, body) = http_get(&format!("127.0.0.1:{mock}"), "/mock/requests").await.unwrap();
        let seen: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        seen.iter().rev().find(|r| r.to_string().contains("Badge")).map(|r| r.to_string().contains("<EMPLOYEE_ID_1>"))
    };
    assert_eq!(masked(&probe("fast").await), "fast", "no alias yet: the model is passed through");
    assert_eq!(provider_saw_mask().await, Some(false));

    // Each change takes effect within a second, with the load running.
    let apply = |text: String| {
        let policy = policy.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            std::fs::write(&policy, text).unwrap();
            std::time::Instant::now()
        }
    };
    let changed = apply(v2.clone()).await;
    // In effect within a second: a probe sent a second or more after the
    // change sees it (how long the probe itself takes under load does not
    // count against the gateway).
    loop {
        let sent = changed.elapsed();
        let alias = masked(&probe("fast").await) == "gpt-4o-mini";
        if alias && provider_saw_mask().await == Some(true) {
            break;
        }
        assert!(sent < Duration::from_secs(1), "v2 not in effect for a probe sent {sent:?} after the change");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An invalid policy is refused: v2 stays in force.
    let _ = apply(format!("{v2}limits: {{store: nowhere}}\n")).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(masked(&probe("fast").await), "gpt-4o-mini");
    assert_eq!(provider_saw_mask().await, Some(true));
    let (_, metrics) = http_get(&format!("127.0.0.1:{sadmin}"), "/metrics").await.unwrap();
    assert!(metrics.contains(r#"tollgate_policy_reloads_total{result="ok"} 1"#), "{metrics}");

    // Back to the base policy: both changes are undone.
    let changed = apply(base.clone()).await;
    // In effect within a second: a probe sent a second or more after the
    // change sees it (how long the probe itself takes under load does not
    // count against the gateway).
    loop {
        let sent = changed.elapsed();
        let alias = masked(&probe("fast").await) == "gpt-4o-mini";
        if !alias && provider_saw_mask().await == Some(false) {
            break;
        }
        assert!(sent < Duration::from_secs(1), "base not in effect for a probe sent {sent:?} after the change");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        let (ok, failed) = w.await.unwrap();
        assert!(failed.is_empty(), "requests failed during reloads: {failed:?}");
        total += ok;
    }
    assert!(total > 20, "the load ran ({total} requests)");
    interrupt(&mut child).await;
    let _ = std::fs::remove_dir_all(&home);
}
