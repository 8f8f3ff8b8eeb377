//! `tollgate up` end to end: starts everything, serves a streamed answer,
//! stops every child on Ctrl-C (SIGINT). Also: the checked-in standalone
//! Envoy bootstrap loads in the real Envoy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tollgate_e2e::paths;
use tollgate_ext_proc::launch::{free_port, http_get, Signal};

#[tokio::test]
async fn up_serves_a_streamed_answer_and_stops_cleanly_on_ctrl_c() {
    let p = paths().unwrap();
    let home = std::env::temp_dir().join(format!("tollgate-up-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let (listen, admin, grpc, sadmin, mock) =
        (free_port().unwrap(), free_port().unwrap(), free_port().unwrap(), free_port().unwrap(), free_port().unwrap());
    let policy = home.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "listen: {{port: {listen}, adminPort: {admin}}}\nsidecar: {{grpcPort: {grpc}, adminPort: {sadmin}}}\nproviders:\n  mock: {{kind: mock, baseUrl: 'http://127.0.0.1:{mock}'}}\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(&p.tollgate)
        .arg("up")
        .arg("--policy")
        .arg(&policy)
        .env("TOLLGATE_HOME", &home)
        .env("TOLLGATE_ENVOY", &p.envoy)
        .env("TOLLGATE_WASM", &p.wasm)
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

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
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
    // The bootstrap names the filter by its path relative to the checkout.
    let config = std::fs::read_to_string(root.join("envoy/tollgate.yaml"))
        .unwrap()
        .replace("target/wasm32-wasip1/wasm-release/tollgate_filter.wasm", &p.wasm.display().to_string());
    let file = std::env::temp_dir().join(format!("tollgate-standalone-{}.yaml", std::process::id()));
    std::fs::write(&file, config).unwrap();
    let out = Command::new(&p.envoy)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("OK"), "{text}");
    let _ = std::fs::remove_file(&file);
}
