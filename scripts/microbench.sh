#!/usr/bin/env bash
# Hot-path micro-benchmarks in one command (docs/microbenchmarks.md):
#   1. core: request parsing, PII scan/mask, firewall, SSE parse/usage/restore,
#      usage from JSON (core/benches/hot_paths.rs);
#   2. sidecar cache: key computation and exact-tier lookups in a 10k-entry
#      embedded store (ext-proc-server/benches/cache_paths.rs);
#   3. the report: median per benchmark, MB/s where it has a byte size, and the
#      ratio to its group's baseline measured in this same run
#      (scripts/microbench_report.py → target/bench/micro.{md,json}).
#
#   scripts/microbench.sh              # criterion defaults (3 s warm-up, 5 s per benchmark): ~12 min
#   scripts/microbench.sh --quick      # 1 s warm-up, 2 s per benchmark: ~6 min
# (times on a loaded 2-core VM, after the first build of the two bench binaries)
#   scripts/microbench.sh --quick pii  # extra args go to criterion (here: a name filter)
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

args=(--noplot)
if [ "${1:-}" = "--quick" ]; then
  args+=(--warm-up-time 1 --measurement-time 2)
  shift
fi
args+=("$@")

target="${CARGO_TARGET_DIR:-target}"
# Results older than this run are ignored by the report (criterion keeps every
# earlier run, of these and other benches, under $target/criterion).
start=$(date +%s)

say "core hot paths (cargo bench -p tollgate-core --bench hot_paths)"
cargo bench -p tollgate-core --bench hot_paths -- "${args[@]}"
say "sidecar cache paths (cargo bench -p tollgate-ext-proc --bench cache_paths)"
cargo bench -p tollgate-ext-proc --bench cache_paths -- "${args[@]}"

say "report"
python3 scripts/microbench_report.py --criterion "$target/criterion" --since "$start" --out "$target/bench"
