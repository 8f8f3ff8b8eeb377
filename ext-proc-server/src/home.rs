//! Where Tollgate keeps its files on a machine.

use std::path::PathBuf;

/// Where Tollgate keeps what it installs and runs: `$TOLLGATE_HOME`, else `~/.tollgate`.
pub fn tollgate_home() -> PathBuf {
    if let Some(home) = std::env::var_os("TOLLGATE_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("HOME").map_or_else(|| PathBuf::from(".tollgate"), |h| PathBuf::from(h).join(".tollgate"))
}

/// The Python virtualenv holding the pinned wheels.
pub fn venv_dir() -> PathBuf {
    tollgate_home().join("venv")
}
