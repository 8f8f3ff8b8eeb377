#!/usr/bin/env bash
# Instructions the prompt firewall runs per scan of the json-1k workload's 1 KB prompt (the same
# text bench/instructions.py sends through Envoy), counted natively under callgrind: the default
# firewall, the same without the learned classifier, and the classifier alone. One scan is
# (I(300 scans) - I(100 scans)) / 200. See docs/firewall-quality.md ("Cost").
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "firewall-cost: valgrind not found" >&2; exit 1; }
cargo build --quiet --release --locked -p tollgate-core --example firewall
bin="${CARGO_TARGET_DIR:-target}/release/examples/firewall"
text="$(mktemp)"
trap 'rm -f "$text"' EXIT
python3 -c 'import sys; sys.path.insert(0, "bench"); import bench; sys.stdout.write(bench.prose(1024, 1024))' >"$text"
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" cost --text "$text" --times "$@" 2>&1 |
    awk '/Collected/ { gsub(",", "", $4); print $4 }'
}
for mode in "" --without-classifier --classifier-only; do
  a=$(count 100 $mode)
  b=$(count 300 $mode)
  printf '%-22s %8d instructions per scan\n' "${mode:-default firewall}" $(((b - a) / 200))
done
