//! A `redis-server` of the test's own, listening on a Unix socket in a
//! temporary directory (no TCP port another test could take first), killed
//! on drop. Shared by the limit-store and cache-store tests.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    socket: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap())
    }

    /// Start on the socket in `dir` (again, after [`stop`](Self::stop)).
    pub fn start_in(dir: tempfile::TempDir) -> Self {
        match Command::new("redis-server").arg("--version").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!("`redis-server --version` failed: {}", out.status),
            Err(e) => panic!(
                "redis-server is needed by this test and cannot be run ({e}); \
                 install it with scripts/install.sh or `apt-get install -y redis-server`"
            ),
        }
        let socket = dir.path().join("redis.sock");
        let mut child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&socket).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("redis-server on {} exited early: {status}", socket.display());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server on {} did not start in 10 s", socket.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer { child, socket, dir: Some(dir) }
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stop the server, keeping its directory (and so its address) for a restart.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.take().unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
