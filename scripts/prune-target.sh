#!/usr/bin/env bash
# Keeps a long-lived cargo target dir from filling the disk: when less than
# TOLLGATE_MIN_FREE_GB (default 20) is free where it lives, removes the
# incremental caches and every test executable but the newest of each name
# in debug/deps (cargo leaves one per build of a changed test behind; they
# are rebuilt when needed). Called by scripts/test.sh before it builds.
set -euo pipefail
target="${1:-${CARGO_TARGET_DIR:-target}}"
min_gb="${TOLLGATE_MIN_FREE_GB:-20}"
[ -d "$target" ] || exit 0
free_gb=$(df -Pk "$target" | awk 'NR==2 {print int($4 / 1048576)}')
if [ "$free_gb" -ge "$min_gb" ]; then
  exit 0
fi
echo "==> ${free_gb} GB free (< ${min_gb}): pruning $target" >&2
rm -rf "$target"/debug/incremental "$target"/release/incremental
python3 - "$target/debug/deps" <<'PY'
import collections, os, re, sys
deps = sys.argv[1]
if not os.path.isdir(deps):
    sys.exit(0)
groups = collections.defaultdict(list)
for name in os.listdir(deps):
    path = os.path.join(deps, name)
    # Executables are named <crate>-<16 hex digits>, without an extension.
    if re.fullmatch(r".+-[0-9a-f]{16}", name) and os.path.isfile(path) and os.access(path, os.X_OK):
        groups[name[:-17]].append(path)
freed = 0
for paths in groups.values():
    paths.sort(key=os.path.getmtime)
    for path in paths[:-1]:
        freed += os.path.getsize(path)
        os.remove(path)
print(f"==> removed {freed / 1e9:.1f} GB of stale test executables", file=sys.stderr)
PY
df -h "$target" | tail -1 >&2
