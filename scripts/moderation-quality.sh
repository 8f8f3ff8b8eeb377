#!/usr/bin/env bash
# Measure the moderation model on public data from the pinned wheels
# (scripts/requirements-eval-moderation.txt, scripts/requirements-eval.txt): per-category
# precision, recall and F1 on the held-back test split, false positives on benign text, recall
# on a second public set, latency per text. Writes target/eval/moderation-quality.json.
# Usage: scripts/moderation-quality.sh [--model FILE] [--threshold T]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/eval-env.sh
# Only the venv is needed here, not a tollgate binary.
TOLLGATE_BIN="${TOLLGATE_BIN:-unused}" eval_env moderation
cargo build -q --release -p tollgate-core --example moderation
scorer="${CARGO_TARGET_DIR:-target}/release/examples/moderation"
exec "$venv/bin/python" scripts/moderation_quality.py --scorer "$scorer" "$@"
