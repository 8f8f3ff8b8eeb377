//! The project venv's Python running an official client SDK script
//! (`tests/sdk`, `tests/gemini`, `tests/bedrock`), with nothing from the
//! environment that could point the SDK elsewhere.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// Environment variables the SDKs read for endpoints and credentials:
/// removed, so a script reaches only what the test names.
const SDK_ENV: [&str; 10] = [
    "OPENAI_BASE_URL",
    "ANTHROPIC_BASE_URL",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "AWS_BEARER_TOKEN_BEDROCK",
];

/// The venv's Python, or a panic that says how to get it.
pub fn venv_python() -> PathBuf {
    let home = match std::env::var_os("TOLLGATE_HOME") {
        Some(h) => PathBuf::from(h),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is not set")).join(".tollgate"),
    };
    let python = home.join("venv").join("bin").join("python");
    assert!(
        python.is_file(),
        "no Python at {}: run scripts/install.sh (it installs the SDKs from scripts/requirements-sdk.txt)",
        python.display()
    );
    python
}

/// Run `script ARGS` with the venv's Python (loopback only: no proxy, no
/// SDK settings or AWS profile from the environment), within 120 s.
pub async fn run(script: &Path, args: &[String]) -> Output {
    let python = venv_python();
    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg(script).args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    for key in SDK_ENV {
        cmd.env_remove(key);
    }
    let run = cmd
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_PROXY", "*")
        .env("no_proxy", "*")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| panic!("{} did not finish in 120 s", script.display()))
        .unwrap_or_else(|e| panic!("cannot run {} {}: {e}", python.display(), script.display()))
}
