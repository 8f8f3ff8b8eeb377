//! `tollgate serve` runs as many ext_proc worker threads as asked
//! (`--workers`, `TOLLGATE_WORKERS`), and by default half the CPUs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Start the sidecar and read how many workers it says it serves with.
fn workers_of(args: &[&str], env: &[(&str, &str)]) -> usize {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let (grpc, admin) = (free_port(), free_port());
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "sidecar: {{grpcPort: {grpc}, adminPort: {admin}}}\nproviders: {{mock: {{kind: mock, baseUrl: 'http://127.0.0.1:1'}}}}\naudit: {{enabled: false}}\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.arg("serve").arg("--policy").arg(&policy).args(args).stdout(Stdio::piped()).stderr(Stdio::null());
    cmd.env_remove("TOLLGATE_WORKERS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child: Child = cmd.spawn().unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let line = stdout.lines().map_while(Result::ok).find(|l| l.starts_with("tollgate sidecar: ext_proc on"));
    child.kill().unwrap();
    child.wait().unwrap();
    let line = line.expect("the sidecar did not start");
    let (_, rest) = line.split_once(" (").unwrap();
    // `(mutual TLS, N workers)`
    rest.split_once(" workers)").unwrap().0.rsplit(", ").next().unwrap().parse().unwrap()
}

#[test]
fn serve_runs_the_workers_asked_for() {
    assert_eq!(workers_of(&["--workers", "3"], &[]), 3);
    assert_eq!(workers_of(&[], &[("TOLLGATE_WORKERS", "2")]), 2);
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(workers_of(&[], &[]), (cpus / 2).max(1));
}
