#!/usr/bin/env bash
# Measure the PII scanner's structured detectors (email, phone, card, SSN, IBAN, IP) on
# Presidio's evaluation templates filled with Faker values (en_US, en_GB, de_DE), from the
# pinned wheels in scripts/requirements-eval-pii.txt. Prints per-type recall, precision,
# false hits and the scanner's time per text; writes target/eval/pii-quality-<seed>.json.
# Runs the fixed seed and a second one (the result is not bound to one seed).
# Usage: scripts/pii-quality.sh [extra args for scripts/pii_quality.py, e.g. --per-type 3000]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/eval-env.sh
eval_env scan
for seed in 18 1800; do
  "$venv/bin/python" scripts/pii_quality.py --tollgate "$bin" --seed "$seed" "$@"
  echo
done
