#!/usr/bin/env bash
# Rebuild the prompt firewall's classifier (core/models/firewall.bin) from the public corpora
# pinned in scripts/requirements-eval-firewall.txt: prepares the data (scripts/firewall_train.py)
# and fits it (core/examples/firewall.rs). Deterministic: the same wheels give the same file.
# Then run scripts/firewall-quality.sh to measure it. See docs/firewall-quality.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/eval-env.sh
eval_env scan
out="${CARGO_TARGET_DIR:-target}/train"
mkdir -p "$out"
"$venv/bin/python" scripts/firewall_train.py --train "$out/firewall-train.jsonl" --val "$out/firewall-val.jsonl" "$@"
cargo run --quiet --release --locked -p tollgate-core --example firewall -- train \
  --data "$out/firewall-train.jsonl" --val "$out/firewall-val.jsonl" --out core/models/firewall.bin
