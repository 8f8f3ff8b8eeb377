#!/usr/bin/env bash
# Measure the default prompt-firewall rule pack on public corpora shipped in pinned PyPI
# packages (scripts/requirements-eval.txt). Prints detection / false-positive rates, rule
# hits and scan throughput; writes target/eval/firewall-quality.json.
# Run after scripts/install.sh (which creates the venv); creates the venv itself if missing.
# Usage: scripts/firewall-quality.sh [extra args for scripts/firewall_quality.py]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/eval-env.sh
eval_env scan
exec "$venv/bin/python" scripts/firewall_quality.py --tollgate "$bin" "$@"
