"""Shared by the quality measurements (scripts/*_quality.py): where the corpus packages pinned
in scripts/requirements-eval.txt are installed, read without importing them."""

import importlib.util
import sys
from pathlib import Path


def pkg_dir(name: str) -> Path:
    """Directory of an installed top-level package, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"package {name!r} not installed: pip install --no-deps --require-hashes -r scripts/requirements-eval.txt")
    return Path(list(spec.submodule_search_locations)[0])


def pkg_version(name: str) -> str:
    from importlib.metadata import version
    return version(name)


def scan_jsonl(cmd: list[str], samples):
    """Send every sample's `{"id", "text"}` through ONE process (`tollgate scan --jsonl ...`) and
    read one JSON verdict per line back, by id. Returns (verdicts, seconds, payload bytes,
    the process's standard error); exits when the process fails."""
    import json
    import subprocess
    import threading
    import time

    payload = "".join(json.dumps({"id": s["id"], "text": s["text"]}, ensure_ascii=False) + "\n" for s in samples).encode()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.perf_counter()

    def feed():
        proc.stdin.write(payload)
        proc.stdin.close()

    th = threading.Thread(target=feed)
    th.start()
    out = proc.stdout.read()
    err = proc.stderr.read()
    proc.wait()
    elapsed = time.perf_counter() - t0
    th.join()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[1:])} failed ({proc.returncode}): {err.decode(errors='replace')}")
    results = {}
    for line in out.decode().split("\n"):
        if line.strip():
            r = json.loads(line)
            results[r["id"]] = r
    return results, elapsed, len(payload), err.decode(errors="replace").strip()
