#!/usr/bin/env bash
# Rebuild the moderation model (core/src/moderation/model.bin) from the public data in the
# pinned wheels (scripts/requirements-eval-moderation.txt and scripts/requirements-eval.txt):
# scripts/moderation_data.py writes the train / test splits into target/moderation/, and
# core/examples/moderation.rs trains on the train split only. Deterministic: the same wheels
# give the same model bytes. Usage: scripts/train-moderation.sh [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
out=core/src/moderation/model.bin
if [ "${1:-}" = "--out" ]; then out="$2"; fi
. scripts/eval-env.sh
# Only the venv is needed here, not a tollgate binary.
TOLLGATE_BIN="${TOLLGATE_BIN:-unused}" eval_env moderation
"$venv/bin/python" scripts/moderation_data.py --out target/moderation
cargo build -q --release -p tollgate-core --example moderation
dir="${CARGO_TARGET_DIR:-target}/release/examples"
"$dir/moderation" train --data target/moderation/train.jsonl --out "$out" --epochs 30 --l2 1e-4
sha256sum "$out"
