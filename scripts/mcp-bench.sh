#!/usr/bin/env bash
# The MCP gateway's cost per tool call in one command (docs/benchmarks.md, "MCP
# tool calls"): a `tools/call` through Envoy + the sidecar against the same call
# sent straight to the MCP server, sequential on keep-alive connections, for a
# minimal JSON server, a minimal SSE server and the official Python SDK's server
# (bench/mcp_bench.py). Builds the filter (wasm-release) and `tollgate` (release);
# installs Envoy and the MCP SDK (scripts/install.sh, TOLLGATE_SKIP_BUILD=1) when
# missing. Writes target/bench/mcp.{md,json}.
#
#   scripts/mcp-bench.sh            # 3000 calls per row (about 45 seconds after the builds)
#   scripts/mcp-bench.sh --quick    # 300 calls per row (about 10 seconds)
#   scripts/mcp-bench.sh --help     # calls, warm-up, audit mode, upstreams
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

home="${TOLLGATE_HOME:-$HOME/.tollgate}"
have_envoy() { [ -n "${TOLLGATE_ENVOY:-}" ] || [ -x "$home/venv/bin/envoy" ] || command -v envoy >/dev/null; }
have_sdk() { [ -x "$home/venv/bin/python" ] && "$home/venv/bin/python" -c 'import mcp.server' 2>/dev/null; }
if ! have_envoy || ! have_sdk; then
  say "installing Envoy and the MCP SDK (scripts/install.sh)"
  TOLLGATE_SKIP_BUILD=1 scripts/install.sh
fi

target="${CARGO_TARGET_DIR:-target}"
say "building the wasm filter (wasm-release)"
cargo build --locked --quiet -p tollgate-filter --target wasm32-wasip1 --profile wasm-release
say "building tollgate (release)"
cargo build --locked --quiet --release -p tollgate-ext-proc --bin tollgate

say "tool calls through the gateway and direct (bench/mcp_bench.py)"
exec python3 bench/mcp_bench.py \
  --tollgate "$target/release/tollgate" \
  --wasm "$target/wasm32-wasip1/wasm-release/tollgate_filter.wasm" \
  --out target/bench "$@"
