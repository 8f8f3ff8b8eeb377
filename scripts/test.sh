#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds once, then runs
# lints, the wasm32 check of core, unit/property tests, the sidecar's
# handler and gRPC tests, and the end-to-end tests through a real Envoy.
set -euo pipefail
cd "$(dirname "$0")/.."
TOLLGATE_SKIP_BUILD=1 scripts/install.sh
home="${TOLLGATE_HOME:-$HOME/.tollgate}"
target="${CARGO_TARGET_DIR:-$PWD/target}"
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
start=$(date +%s)
scripts/prune-target.sh "$target"

say "building the wasm filter (wasm-release)"
cargo build --locked -p tollgate-filter --target wasm32-wasip1 --profile wasm-release
wasm="$target/wasm32-wasip1/wasm-release/tollgate_filter.wasm"
say "filter size: $(stat -c %s "$wasm") bytes"
say "checking core for wasm32"
cargo check --locked -p tollgate-core --target wasm32-wasip1
say "formatting (rustfmt.toml)"
cargo fmt --all --check
say "clippy (unwrap/expect/panic denied outside tests)"
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo clippy --locked -p tollgate-filter -p tollgate-wasm-floor --target wasm32-wasip1 -- -D warnings
say "building tollgate"
cargo build --locked -p tollgate-ext-proc --bin tollgate

export TOLLGATE_BIN="$target/debug/tollgate"
export TOLLGATE_WASM="$wasm"
export TOLLGATE_ENVOY="${TOLLGATE_ENVOY:-$home/venv/bin/envoy}"
say "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast --test-threads 4
else
  cargo test --locked --workspace --no-fail-fast -- --test-threads 4
fi
say "done in $(( $(date +%s) - start ))s"
