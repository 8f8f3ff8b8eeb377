#!/usr/bin/env bash
# Measure the default prompt-firewall rule pack on public corpora shipped in pinned PyPI
# packages (scripts/requirements-eval.txt). Prints detection / false-positive rates, rule
# hits and scan throughput; writes target/eval/firewall-quality.json.
# Run after scripts/install.sh (which creates the venv); creates the venv itself if missing.
# Usage: scripts/firewall-quality.sh [extra args for scripts/firewall_quality.py]
set -euo pipefail
cd "$(dirname "$0")/.."
home="${TOLLGATE_HOME:-$HOME/.tollgate}"
venv="$home/venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import importlib.util as u, sys; sys.exit(0 if u.find_spec("garak") and u.find_spec("agentdojo") else 1)' 2>/dev/null \
   || ! "$venv/bin/pip" freeze 2>/dev/null | grep -qxF -e "garak==0.17.1" ; then
  "$venv/bin/pip" install -q --no-deps --require-hashes -r scripts/requirements-eval.txt
fi
if [ -n "${TOLLGATE_BIN:-}" ]; then
  bin="$TOLLGATE_BIN"
elif [ -x target/release/tollgate ]; then
  bin=target/release/tollgate
else
  cargo build -q -p tollgate-ext-proc --bin tollgate
  bin=target/debug/tollgate
fi
exec "$venv/bin/python" scripts/firewall_quality.py --tollgate "$bin" "$@"
