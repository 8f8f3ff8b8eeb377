//! The `tollgate-mock` binary: prints its address, serves, exits on signals.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run_and_signal(signal: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate-mock"))
        .args(["--listen", "127.0.0.1:0", "--name", "bin-mock", "--latency-ms", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{addr}");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let resp = reqwest::get(format!("http://{addr}/healthz")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-mock-provider"], "bin-mock");
    });

    let status = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status after {signal}: {status:?}");
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("tollgate-mock did not exit after {signal}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn binary_exits_cleanly_on_sigterm() {
    run_and_signal("-TERM");
}

#[test]
fn binary_exits_cleanly_on_sigint() {
    run_and_signal("-INT");
}

#[test]
fn binary_reports_a_busy_port() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-mock")).args(["--listen", &addr]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}
