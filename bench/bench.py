#!/usr/bin/env python3
"""Tollgate's gateway benchmark: what each layer adds on top of plain Envoy.

Run through `scripts/bench.sh` (which builds in release mode and installs the
load generators); see docs/benchmarks.md for the method.

One mock provider with a fixed latency serves every configuration, all in one
run on one machine:

  1 baseline     plain Envoy -> mock (the rendered bootstrap without the wasm
                 and ext_proc filters)
  1b wasm-floor  + a wasm filter that does nothing (bench/wasm-floor): what
                 Envoy's wasm host costs per request before any filter code
  2 wasm-parse   + the wasm filter, PII, firewall and output guard turned off
                 (parsing, usage, metrics, filter state only)
  3 wasm-full    + the wasm filter with the default inspection (PII masking,
                 prompt firewall, output guard)
  4 ext-proc     + the ext_proc sidecar only (no wasm; audit off; no cache)
  5 full         wasm (default inspection) + sidecar (audit on, its default)
  5b full-audit-100ms
                 the same with `audit.fsync: 100ms` (records acknowledged once
                 written, fsynced every 100 ms): what the default's fsync
                 before each answer costs
  6 cache-hit    the full stack with the cache on, every request the same prompt:
                 answered from the cache (its exact tier; semantic hits, which
                 embed the prompt first, are measured by scripts/cache-bench.sh)

Each configuration is measured for non-streamed and streamed OpenAI chat
requests with ~1 KB and ~32 KB prompts, at a fixed request rate (oha) and at
saturation (wrk). Results: target/bench/gateway.{md,json,svg}.
"""

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import svgplot  # noqa: E402
import yamlsubset  # noqa: E402

PCTS = ["50", "75", "90", "95", "99", "99.9"]


class Config:
    def __init__(self, key, title, wasm, ext_proc, audit=False, cache=False, available=True, note=""):
        self.key, self.title, self.wasm, self.ext_proc, self.audit = key, title, wasm, ext_proc, audit
        self.cache, self.available, self.note = cache, available, note


CONFIGS = [
    Config("baseline", "1. plain Envoy → mock (baseline)", wasm=None, ext_proc=False),
    # Envoy's wasm host alone: an empty proxy-wasm filter in the same place.
    Config("wasm-floor", "1b. + a wasm filter that does nothing", wasm="floor", ext_proc=False),
    Config("wasm-parse", "2. + wasm filter, parsing and usage only", wasm="off", ext_proc=False),
    Config("wasm-full", "3. + wasm filter, PII masking and firewall", wasm="default", ext_proc=False),
    Config("ext-proc", "4. + ext_proc sidecar only (no cache, audit off)", wasm=None, ext_proc=True, audit=False),
    Config("full", "5. full stack (wasm + sidecar, audit on)", wasm="default", ext_proc=True, audit=True),
    # What durable audit costs: the same stack acknowledging records once
    # written, fsynced every 100 ms (at most that much lost in a crash).
    Config("full-audit-100ms", "5b. full stack, audit fsync every 100 ms", wasm="default", ext_proc=True, audit="100ms"),
    Config("cache-hit", "6. full stack, cache hit (exact tier)", wasm="default", ext_proc=True, audit=True, cache=True),
]

WORKLOADS = [
    # key, streamed, prompt bytes
    ("json-1k", False, 1024),
    ("sse-1k", True, 1024),
    ("json-32k", False, 32 * 1024),
    ("sse-32k", True, 32 * 1024),
]

# Neutral prose: no PII, nothing the prompt firewall scores.
SENTENCES = [
    "The harbour town wakes slowly, with fishing boats returning before the bakeries open their shutters.",
    "Gardeners in the valley rotate their crops every season so that the soil keeps its structure.",
    "A good field guide describes the shape of the leaves, the colour of the bark and the season of flowering.",
    "The old railway line now carries cyclists through orchards, tunnels and small stone villages.",
    "Bread dough needs time, warmth and patience more than it needs any particular technique.",
    "The museum keeps its collection of maps in a cool room where the light is always dim.",
    "In late autumn the river rises, and the ferry schedule changes to fewer crossings each day.",
    "Students compared the two translations of the poem and noticed how differently they handled rhyme.",
    "Volunteers count migrating birds from the ridge each morning and write the totals in a shared notebook.",
    "The recipe calls for roasted vegetables, a little olive oil, fresh herbs and a squeeze of lemon.",
    "Most of the library's reading rooms face north, which keeps the afternoon sun off the long tables.",
    "Summarize the main themes of the passage above in a few sentences for a general audience.",
    "The committee agreed to repaint the community hall in a pale green before the spring festival.",
    "Tide tables are printed weekly and pinned beside the door of the harbour master's office.",
    "A careful cook tastes the sauce several times and adjusts the seasoning little by little.",
]


def prose(nbytes, seed):
    rng = random.Random(seed)
    out = []
    size = 0
    while size < nbytes:
        s = rng.choice(SENTENCES)
        out.append(s)
        size += len(s) + 1
    text = " ".join(out)
    return text[:nbytes].rsplit(" ", 1)[0] + "."


def request_body(prompt_bytes, stream):
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": prose(prompt_bytes, prompt_bytes)},
        ],
        "max_tokens": 64,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


# ---------------------------------------------------------------- processes

STARTED = []  # every process this run started (stopped by pid at the end)


class Proc:
    def __init__(self, name, argv, log, env=None):
        self.name = name
        self.log = log
        with open(log, "ab") as f:
            self.p = subprocess.Popen(
                [str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=env
            )
        self.pid = self.p.pid
        STARTED.append(self)

    def alive(self):
        return self.p.poll() is None

    def stop(self, grace=5.0):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(grace)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        if self in STARTED:
            STARTED.remove(self)


def find_envoy(envoy):
    """`envoy` if given, else the one scripts/install.sh puts in the venv, else one on PATH."""
    if envoy:
        return envoy
    cand = Path(os.environ.get("TOLLGATE_HOME", Path.home() / ".tollgate")) / "venv/bin/envoy"
    return str(cand) if cand.is_file() else shutil.which("envoy")


def stop_all():
    for p in list(STARTED):
        p.stop()


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def http(method, url, body=None, headers=None, timeout=10):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers.items()), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers.items()), e.read()


def wait_ready(proc, url, timeout=60):
    start = time.time()
    while time.time() - start < timeout:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited before it was ready; see {proc.log}")
        try:
            if http("GET", url, timeout=2)[0] == 200:
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {url} after {timeout}s; see {proc.log}")


# ------------------------------------------------------------ /proc sampling

CLK = os.sysconf("SC_CLK_TCK")


def proc_sample(pid):
    """CPU seconds (user+system, all threads) and memory (kB) of a process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rfind(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK
        status = Path(f"/proc/{pid}/status").read_text()
        mem = {k: int(v) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M)}
        return {"t": time.monotonic(), "cpu_s": cpu, "rss_kb": mem.get("VmRSS"), "hwm_kb": mem.get("VmHWM")}
    except (OSError, IndexError, ValueError):
        return None


def proc_delta(before, after):
    if not before or not after:
        return None
    wall = after["t"] - before["t"]
    return {
        "cpu_pct_of_core": round(100.0 * (after["cpu_s"] - before["cpu_s"]) / wall, 1) if wall > 0 else None,
        "cpu_s": round(after["cpu_s"] - before["cpu_s"], 3),
        "rss_mib_before": round(before["rss_kb"] / 1024, 1),
        "rss_mib_after": round(after["rss_kb"] / 1024, 1),
        "hwm_mib": round(after["hwm_kb"] / 1024, 1),
    }


def wasm_memory(pid):
    """The wasm VMs' linear memories, from /proc/<pid>/smaps.

    V8 reserves a multi-GiB PROT_NONE region per wasm memory and commits the
    memory's pages at its start, so each linear memory is the read-write
    mapping that ends exactly where a >= 4 GiB `---p` mapping begins."""
    maps = []
    cur = None
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) ", line)
                if m:
                    cur = {"start": int(m.group(1), 16), "end": int(m.group(2), 16), "perm": m.group(3), "rss": 0}
                    maps.append(cur)
                elif line.startswith("Rss:") and cur is not None:
                    cur["rss"] = int(line.split()[1])
    except OSError:
        return None
    vms = []
    for i in range(1, len(maps)):
        big, prev = maps[i], maps[i - 1]
        if big["perm"] == "---p" and big["end"] - big["start"] >= 4 << 30:
            if prev["end"] == big["start"] and prev["perm"].startswith("rw"):
                vms.append({"size_kib": (prev["end"] - prev["start"]) // 1024, "rss_kib": prev["rss"]})
    return {
        "vms": len(vms),
        "linear_memory_kib": sum(v["size_kib"] for v in vms),
        "linear_memory_rss_kib": sum(v["rss_kib"] for v in vms),
        "per_vm": vms,
    }


def envoy_admin(admin):
    out = {}
    try:
        _, _, body = http("GET", f"http://{admin}/memory")
        out["memory"] = {k: int(v) for k, v in json.loads(body).items()}
    except (OSError, ValueError):
        pass
    try:
        _, _, body = http("GET", f"http://{admin}/stats?filter=wasm")
        stats = {}
        for line in body.decode().splitlines():
            k, _, v = line.partition(": ")
            if v.strip().lstrip("-").isdigit():
                stats[k] = int(v)
        out["wasm_stats"] = stats
    except OSError:
        pass
    return out


# ------------------------------------------------------------ configurations


def policy_text(ports, audit, inspection_off, cache=False):
    # TOLLGATE_BENCH_SIDECAR_TLS=mesh: Envoy and the sidecar in plaintext, to
    # measure what their mutual TLS (the default) costs.
    tls = os.environ.get("TOLLGATE_BENCH_SIDECAR_TLS")
    tls = f", tls: {{mode: {tls}}}" if tls else ""
    text = (
        f"listen: {{port: {ports['listen']}, adminPort: {ports['admin']}}}\n"
        f"sidecar: {{grpcPort: {ports['grpc']}, adminPort: {ports['sidecar_admin']}{tls}}}\n"
        "providers:\n"
        f"  mock: {{kind: mock, baseUrl: 'http://127.0.0.1:{ports['mock']}'}}\n"
        f"audit: {{enabled: {'true' if audit else 'false'}"
        f"{f', fsync: {audit}' if isinstance(audit, str) else ''}}}\n"
    )
    if cache:
        # Only the exact tier: no embedding model is loaded for a repeated prompt.
        text += "cache: {enabled: true, semantic: {enabled: false}}\n"
    if inspection_off:
        text += "inspection:\n  pii: {entities: {}}\n  firewall: {pack: none}\n  output: {entities: {}}\n"
    return text


def run_tool(argv, what):
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{what} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def build_bootstraps(tollgate, wasm, floor_wasm, ports, work):
    """Render the bootstrap once, derive one Envoy config (JSON) per configuration."""
    full_policy = work / "policy-full.yaml"
    full_policy.write_text(policy_text(ports, audit=True, inspection_off=False))
    off_policy = work / "policy-inspection-off.yaml"
    off_policy.write_text(policy_text(ports, audit=False, inspection_off=True))
    for p in (full_policy, off_policy):
        run_tool([tollgate, "check", "--policy", p], f"tollgate check {p.name}")
    rendered = work / "envoy-rendered.yaml"
    run_tool(
        [tollgate, "render", "envoy", "--policy", full_policy, "--wasm", wasm, "--access-log", "/dev/null", "--out", rendered],
        "tollgate render envoy",
    )
    plugin_off = run_tool([tollgate, "render", "filter-config", "--policy", off_policy], "render filter-config").strip()
    base = yamlsubset.loads(rendered.read_text())
    hcm = base["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    expected = ["tollgate.strip_gateway_headers", "tollgate.wasm", "envoy.filters.http.ext_proc", "envoy.filters.http.router"]
    if names != expected:
        raise RuntimeError(f"unexpected filter chain in the rendered bootstrap: {names}")
    out = {}
    for c in CONFIGS:
        if not c.available:
            continue
        cfg = json.loads(json.dumps(base))
        h = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        filters = []
        for f in h["http_filters"]:
            if f["name"] == "tollgate.strip_gateway_headers" and c.key == "baseline":
                continue  # plain Envoy: the gateway's header stripping is part of its cost
            if f["name"] == "tollgate.wasm":
                if c.wasm is None:
                    continue
                plugin = f["typed_config"]["config"]
                if c.wasm == "off":
                    plugin["configuration"]["value"] = plugin_off
                elif c.wasm == "floor":
                    plugin["vm_config"]["code"]["local"]["filename"] = str(floor_wasm)
                    plugin["configuration"]["value"] = ""
            elif f["name"] == "envoy.filters.http.ext_proc" and not c.ext_proc:
                continue
            filters.append(f)
        h["http_filters"] = filters
        path = work / f"envoy-{c.key}.json"
        path.write_text(json.dumps(cfg, indent=1))
        out[c.key] = path
    return out, {"full": full_policy, "inspection_off": off_policy, "rendered": rendered}


# -------------------------------------------------------------- load runs


def run_oha(tools, url, body_file, rate, duration, conns, out_json):
    argv = [
        tools["oha"], "--no-tui", "--output-format", "json", "-o", out_json,
        "-z", f"{duration}s", "-w", "-q", str(rate), "--latency-correction", "-c", str(conns),
        "-m", "POST", "-T", "application/json", "-D", body_file, url,
    ]
    subprocess.run([str(a) for a in argv], check=True, capture_output=True, timeout=duration + 60)
    d = json.loads(Path(out_json).read_text())
    s = d["summary"]
    lp = d.get("latencyPercentiles") or {}
    status = {str(k): v for k, v in (d.get("statusCodeDistribution") or {}).items()}
    errors = d.get("errorDistribution") or {}
    total = sum(status.values()) + sum(errors.values())
    ok = sum(v for k, v in status.items() if k.startswith("2"))
    return {
        "tool": "oha",
        "requests": total,
        "ok": ok,
        "errors": total - ok,
        "error_detail": {**{f"status {k}": v for k, v in status.items() if not k.startswith("2")}, **errors},
        "rps": round(total / s["total"], 1) if s.get("total") else None,
        "latency_ms": {p: round(lp[f"p{p}"] * 1000, 3) for p in PCTS if lp.get(f"p{p}") is not None},
        "mean_ms": round(s["average"] * 1000, 3) if s.get("average") is not None else None,
    }


def run_wrk(tools, url, body_file, duration, conns, out_json):
    env = dict(os.environ, TOLLGATE_BENCH_BODY=str(body_file), TOLLGATE_BENCH_OUT=str(out_json))
    argv = [tools["wrk"], "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s", "-s", HERE / "post.lua", url]
    subprocess.run([str(a) for a in argv], check=True, capture_output=True, env=env, timeout=duration + 60)
    d = json.loads(Path(out_json).read_text())
    errs = d["errors"]
    bad = errs["connect"] + errs["read"] + errs["write"] + errs["status"] + errs["timeout"]
    pct = d["latency_us"]["percentiles"]
    return {
        "tool": "wrk",
        "requests": d["requests"],
        "ok": d["requests"] - errs["status"],
        "errors": bad,
        "error_detail": {k: v for k, v in errs.items() if v},
        "rps": round(d["requests"] / (d["duration_us"] / 1e6), 1),
        "latency_ms": {p: round(pct[p] / 1000, 3) for p in PCTS if p in pct},
        "mean_ms": round(d["latency_us"]["mean"] / 1000, 3),
    }


def measure(kind, tools, url, body_file, args, procs, rate, scratch):
    """One measured run with /proc samples of every component around it."""
    warm = scratch / f"warm-{kind}.json"
    if kind == "rate":
        run_oha(tools, url, body_file, rate, args.warmup, args.rate_connections, warm)
    else:
        run_wrk(tools, url, body_file, args.warmup, args.sat_connections, warm)
    time.sleep(0.3)
    before = {n: proc_sample(p.pid) for n, p in procs.items()}
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = scratch / f"{kind}.json"
    if kind == "rate":
        res = run_oha(tools, url, body_file, rate, args.duration, args.rate_connections, out)
        res["target_rps"] = rate
    else:
        res = run_wrk(tools, url, body_file, args.sat_duration, args.sat_connections, out)
        res["connections"] = args.sat_connections
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = {n: proc_sample(p.pid) for n, p in procs.items()}
    res["resources"] = {n: proc_delta(before[n], after[n]) for n in procs}
    wall = after[next(iter(procs))]["t"] - before[next(iter(procs))]["t"]
    lg = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    res["resources"]["loadgen"] = {"cpu_pct_of_core": round(100 * lg / wall, 1), "cpu_s": round(lg, 3)}
    return res


def sanity(url, body, stream, cfg):
    """One request by hand: 200, a complete answer, and the layers engaged
    (with the cache: a second request, answered from it)."""
    status, headers, data = http("POST", url, body, {"content-type": "application/json"}, timeout=30)
    problems = []
    if cfg.cache:
        status, headers, data = http("POST", url, body, {"content-type": "application/json"}, timeout=30)
        if {k.lower(): v for k, v in headers.items()}.get("x-tollgate-cache") != "hit":
            problems.append("the repeated request was not a cache hit")
    h = {k.lower(): v for k, v in headers.items()}
    if status != 200:
        problems.append(f"status {status}: {data[:200]!r}")
    if stream and not data.rstrip().endswith(b"data: [DONE]"):
        problems.append("stream did not end with data: [DONE]")
    if not stream and b'"choices"' not in data:
        problems.append("no choices in the answer")
    tollgate_wasm = cfg.wasm in ("off", "default")
    if tollgate_wasm != ("x-tollgate-request-id" in h):
        problems.append(f"x-tollgate-request-id {'missing' if tollgate_wasm else 'unexpected'}")
    if cfg.ext_proc != ("x-tollgate-backend" in h):
        problems.append(f"x-tollgate-backend {'missing' if cfg.ext_proc else 'unexpected'}")
    return {"status": status, "response_bytes": len(data), "problems": problems}


# -------------------------------------------------------------- reporting


def machine_info():
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    except (OSError, AttributeError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": _loadavg(),
    }


def _loadavg():
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return ""


def fmt(v, nd=0, plus=False):
    if v is None:
        return "–"
    s = f"{v:+,.{nd}f}" if plus else f"{v:,.{nd}f}"
    return s


def analyse(results, args):
    """Added latency, throughput ratio and target verdicts against the baseline."""
    for wl in results["workloads"]:
        for mode in ("rate", "saturation"):
            base = results["runs"].get("baseline", {}).get(wl, {}).get(mode)
            for key, per_wl in results["runs"].items():
                run = per_wl.get(wl, {}).get(mode)
                if not run or "latency_ms" not in run:
                    continue
                # CPU per request: steadier than tail latency on a shared machine.
                if run.get("requests"):
                    run["cpu_us_per_request"] = {
                        name: round(res["cpu_s"] * 1e6 / run["requests"], 1)
                        for name, res in (run.get("resources") or {}).items()
                        if name in ("envoy", "sidecar") and res and res.get("cpu_s") is not None
                    }
                if base and "latency_ms" in base:
                    run["added_us"] = {
                        p: round((run["latency_ms"][p] - base["latency_ms"][p]) * 1000, 1)
                        for p in ("50", "90", "99")
                        if p in run["latency_ms"] and p in base["latency_ms"]
                    }
                    if mode == "saturation" and base.get("rps"):
                        run["throughput_ratio"] = round(run["rps"] / base["rps"], 3)
    targets = []

    def get(cfg, wl, mode):
        return results["runs"].get(cfg, {}).get(wl, {}).get(mode) or {}

    def added_p99(cfg, wl, limit_us, what):
        """The fixed-rate target: added p99 under `limit_us` (missed too when the rate was not reached)."""
        r = get(cfg, wl, "rate")
        v = (r.get("added_us") or {}).get("99")
        overloaded = bool(r) and r.get("rps", 0) < 0.95 * r.get("target_rps", 0)
        return {
            "target": f"{what} at {r.get('target_rps', args.rate)} req/s",
            "config": cfg, "workload": wl, "measured": None if v is None else f"{v:+.0f} µs",
            "met": None if v is None else (v < limit_us and not overloaded),
        }

    for wl in ("json-1k", "sse-1k"):
        if wl not in results["workloads"]:
            continue
        targets.append(added_p99("wasm-full", wl, 150, "wasm filter, full inspection: added p99 < 150 µs, 1 KB prompt"))
        r = get("wasm-full", wl, "saturation")
        t = r.get("throughput_ratio")
        targets.append({
            "target": "wasm filter, full inspection: < 20 % throughput loss vs plain Envoy at saturation",
            "config": "wasm-full", "workload": wl,
            "measured": None if t is None else f"{(1 - t) * 100:.1f} % loss ({t:.3f}×)",
            "met": None if t is None else (1 - t) < 0.20,
        })
        targets.append(added_p99("full", wl, 1000, "full stack, no cache hit: added p99 < 1 ms"))
        targets.append(added_p99(
            "full-audit-100ms", wl, 1000, "full stack, no cache hit, audit fsync every 100 ms: added p99 < 1 ms"))
        hit, base = get("cache-hit", wl, "rate"), get("baseline", wl, "rate")
        h50, b50 = (hit.get("latency_ms") or {}).get("50"), (base.get("latency_ms") or {}).get("50")
        targets.append({
            "target": "a cache hit is answered faster than plain Envoy reaching the provider (p50, fixed rate)",
            "config": "cache-hit", "workload": wl,
            "measured": None if h50 is None or b50 is None else f"{h50:.2f} ms vs {b50:.2f} ms",
            "met": None if h50 is None or b50 is None else h50 < b50,
        })
    results["targets"] = targets


def verdict(met):
    return "not measured" if met is None else ("**met**" if met else "**missed**")


def markdown(results):
    m = results["machine"]
    s = results["settings"]
    L = []
    L.append("# Tollgate gateway benchmark\n")
    L.append(
        f"Run {results['started']} ({results['wall_time_s']:.0f} s wall){' — **quick run**' if s['quick'] else ''}. "
        f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['mem_gib']} GiB, Linux {m['kernel']}; "
        f"load average {m.get('loadavg_at_start', '?')} at the start, {m.get('loadavg_at_end', '?')} at the end "
        "(anything else running on the machine shows up as noise). "
        f"{results['versions'].get('envoy', '')}; tollgate {results['versions'].get('git', '')}; "
        f"{results['versions'].get('oha', '')}; {results['versions'].get('wrk', '')}.\n"
    )
    L.append(
        f"Mock provider latency {s['mock_latency_ms']} ms (fixed). Envoy `--concurrency 1`, nothing pinned. "
        f"Fixed rate: oha `-q` ({s['rate']} req/s for 1 KB prompts, {s['rate_32k']} req/s for 32 KB), "
        f"{s['duration']} s, {s['rate_connections']} connections, latency correction on. "
        f"Saturation: wrk, 1 thread, {s['sat_connections']} connections, {s['sat_duration']} s. "
        f"Each measured run follows a {s['warmup']} s warm-up. Added latency = the configuration's percentile "
        "minus the baseline's, same workload and mode. CPU is % of one core over the measured run "
        "(from /proc/<pid>/stat); RSS from /proc/<pid>/status after the run.\n"
    )
    labels = {c.key: c.title for c in CONFIGS}
    for wl, streamed, size in WORKLOADS:
        if wl not in results["workloads"]:
            continue
        L.append(f"\n## {'Streamed' if streamed else 'Non-streamed'}, {size // 1024} KB prompt (`{wl}`)\n")
        L.append(
            "| configuration | fixed rate: req/s | p50 ms | +p50 µs | +p90 µs | +p99 µs | Envoy CPU | sidecar CPU "
            "| Envoy CPU µs/req (+ vs baseline) | sidecar CPU µs/req "
            "| saturation: req/s | × baseline | p99 ms | Envoy CPU | sidecar CPU | Envoy RSS MiB | sidecar RSS MiB | errors |"
        )
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        base_envoy = (
            (results["runs"].get("baseline", {}).get(wl, {}).get("rate") or {}).get("cpu_us_per_request") or {}
        ).get("envoy")
        for c in CONFIGS:
            if not c.available:
                L.append(f"| {c.title} | {c.note} |" + " |" * 17)
                continue
            runs = results["runs"].get(c.key, {}).get(wl)
            if not runs:
                err = results.get("failures", {}).get(c.key, "not run")
                L.append(f"| {c.title} | failed: {err} |" + " |" * 17)
                continue
            r, sat = runs.get("rate") or {}, runs.get("saturation") or {}
            add = r.get("added_us") or {}
            rr, sr = r.get("resources") or {}, sat.get("resources") or {}

            def cpu(res, name):
                x = res.get(name)
                return f"{x['cpu_pct_of_core']:.0f} %" if x and x.get("cpu_pct_of_core") is not None else "–"

            def rss(name):
                x = sr.get(name) or rr.get(name)
                return fmt(x["rss_mib_after"], 1) if x else "–"

            per_req = r.get("cpu_us_per_request") or {}
            envoy_us = per_req.get("envoy")
            envoy_cell = fmt(envoy_us, 0)
            if envoy_us is not None and base_envoy is not None and c.key != "baseline":
                envoy_cell += f" ({envoy_us - base_envoy:+.0f})"
            rate_cell = fmt(r.get("rps"), 0)
            if r and r.get("rps", 0) < 0.95 * r.get("target_rps", 0):
                rate_cell += " (overloaded)"
            errors = (r.get("errors") or 0) + (sat.get("errors") or 0)
            L.append(
                f"| {c.title} | {rate_cell} | {fmt((r.get('latency_ms') or {}).get('50'), 2)} "
                f"| {fmt(add.get('50'), 0, True)} | {fmt(add.get('90'), 0, True)} | {fmt(add.get('99'), 0, True)} "
                f"| {cpu(rr, 'envoy')} | {cpu(rr, 'sidecar')} | {envoy_cell} | {fmt(per_req.get('sidecar'), 0)} "
                f"| {fmt(sat.get('rps'), 0)} | {fmt(sat.get('throughput_ratio'), 3)} "
                f"| {fmt((sat.get('latency_ms') or {}).get('99'), 2)} | {cpu(sr, 'envoy')} | {cpu(sr, 'sidecar')} "
                f"| {rss('envoy')} | {rss('sidecar')} | {errors} |"
            )
    L.append("\n## Targets\n")
    L.append("| target | configuration | workload | measured | verdict |")
    L.append("|---|---|---|---:|---|")
    for t in results.get("targets", []):
        L.append(f"| {t['target']} | {t['config']} | `{t['workload']}` | {t['measured'] or '–'} | {verdict(t['met'])} |")
    floor = floor_lines(results)
    if floor:
        L.append(
            "\nWhat Envoy's wasm host costs before any filter code runs (configuration 1b, an empty proxy-wasm "
            "filter), against Tollgate's filter with full inspection (3); Envoy CPU per request at the fixed rate "
            "above the baseline, and throughput at saturation:\n"
        )
        L.extend(floor)
    L.append(
        "\nSemantic-tier hits (the prompt embedded first) and misses on a cached route: "
        "scripts/cache-bench.sh (docs/cache-benchmarks.md)."
    )
    L.append("\n## Wasm VM memory\n")
    L.append(
        "Linear memory of the filter's wasm VMs, read from `/proc/<envoy>/smaps` (V8 commits each wasm memory at the "
        "start of a multi-GiB reserved region; the read-write mapping right before it is the linear memory), after "
        "start-up and after all workloads. Envoy's admin `/memory` (tcmalloc) does not see V8's allocations; it is "
        "shown for the rest of Envoy. `wasm VMs` counts the VMs found (Envoy's `wasm.wasm_vm_count` stat in brackets).\n"
    )
    L.append(
        "| configuration | wasm VMs | linear memory KiB (idle → end) | resident KiB (idle → end) "
        "| Envoy RSS MiB (idle → end) | /memory allocated MiB (end) |"
    )
    L.append("|---|---:|---:|---:|---:|---:|")
    for c in CONFIGS:
        mem = results.get("memory", {}).get(c.key)
        if not c.available or not mem:
            continue
        i, e = mem.get("idle") or {}, mem.get("end") or {}
        wi, we = i.get("wasm") or {}, e.get("wasm") or {}
        vmc = (e.get("admin", {}).get("wasm_stats") or {}).get("wasm.wasm_vm_count")
        alloc = (e.get("admin", {}).get("memory") or {}).get("allocated")
        L.append(
            f"| {c.title} | {we.get('vms', 0)} ({vmc if vmc is not None else '–'}) "
            f"| {fmt(wi.get('linear_memory_kib'))} → {fmt(we.get('linear_memory_kib'))} "
            f"| {fmt(wi.get('linear_memory_rss_kib'))} → {fmt(we.get('linear_memory_rss_kib'))} "
            f"| {fmt((i.get('rss_kb') or 0) / 1024, 1)} → {fmt((e.get('rss_kb') or 0) / 1024, 1)} "
            f"| {fmt(alloc / 2**20 if alloc else None, 1)} |"
        )
    probs = [(k, wl, p) for k, per in results.get("sanity", {}).items() for wl, s in per.items() for p in s["problems"]]
    if probs or results.get("failures"):
        L.append("\n## Problems\n")
        for k, wl, p in probs:
            L.append(f"- {k} `{wl}`: {p}")
        for k, e in results.get("failures", {}).items():
            L.append(f"- {k}: {e}")
    rel = {k: os.path.relpath(v, ROOT) for k, v in results["files"].items()}
    L.append(f"\nLatency distributions: `{rel['svg']}`; raw numbers: `{rel['json']}`.\n")
    return "\n".join(L)


def floor_lines(results):
    """Configuration 1b against 3, per 1 KB workload measured with both."""
    def run(key, wl, mode):
        return results["runs"].get(key, {}).get(wl, {}).get(mode) or {}

    def envoy_us(key, wl):
        return (run(key, wl, "rate").get("cpu_us_per_request") or {}).get("envoy")

    lines = []
    for wl in ("json-1k", "sse-1k"):
        base, floor, full = envoy_us("baseline", wl), envoy_us("wasm-floor", wl), envoy_us("wasm-full", wl)
        if None in (base, floor, full):
            continue
        fr = run("wasm-floor", wl, "saturation").get("throughput_ratio")
        ur = run("wasm-full", wl, "saturation").get("throughput_ratio")
        lines.append(
            f"- `{wl}`: the empty filter {floor - base:+.0f} µs, Tollgate's {full - base:+.0f} µs "
            f"(its own code and host calls: {full - floor:+.0f} µs); saturation {fmt(fr, 3)}× and {fmt(ur, 3)}× "
            "the baseline."
        )
    return lines


def plot(results):
    panels = []
    for mode, label in (("rate", "fixed rate"), ("saturation", "saturation")):
        row = []
        for wl, _, _ in WORKLOADS:
            if wl not in results["workloads"]:
                continue
            series = {}
            for c in CONFIGS:
                run = results["runs"].get(c.key, {}).get(wl, {}).get(mode)
                if run and run.get("latency_ms"):
                    series[c.title] = run["latency_ms"]
            row.append((f"{wl}, {label}", series))
        panels.append(row)
    names = [c.title for c in CONFIGS if c.available]
    s = results["settings"]
    return svgplot.render(
        panels,
        names,
        "Tollgate: end-to-end latency percentiles per configuration",
        f"mock latency {s['mock_latency_ms']} ms; fixed rate {s['rate']}/{s['rate_32k']} req/s (1 KB/32 KB) with oha; "
        f"saturation with wrk, {s['sat_connections']} connections; {results['machine']['nproc']} CPUs",
    )


# -------------------------------------------------------------------- main


def version(argv):
    try:
        r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs (about 4 minutes in all)")
    ap.add_argument("--tollgate", default=str(ROOT / "target/release/tollgate"))
    ap.add_argument("--wasm", default=str(ROOT / "target/wasm32-wasip1/wasm-release/tollgate_filter.wasm"))
    ap.add_argument("--wasm-floor", default=str(ROOT / "target/wasm32-wasip1/wasm-release/tollgate_wasm_floor.wasm"),
                    help="the empty filter of configuration 1b (bench/wasm-floor)")
    ap.add_argument("--envoy", default=None, help="default: $TOLLGATE_ENVOY, ~/.tollgate/venv/bin/envoy, PATH")
    ap.add_argument("--oha", default=str(ROOT / "target/bench/tools/bin/oha"))
    ap.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    ap.add_argument("--out", default=str(ROOT / "target/bench"))
    ap.add_argument("--mock-latency-ms", type=int, default=20)
    ap.add_argument("--rate", type=int, default=1000, help="fixed rate for 1 KB prompts (req/s)")
    ap.add_argument("--rate-32k", type=int, default=250, help="fixed rate for 32 KB prompts (req/s)")
    ap.add_argument("--duration", type=float, default=None, help="fixed-rate run length, s (default 15, quick 5)")
    ap.add_argument("--sat-duration", type=float, default=None, help="saturation run length, s (default 8, quick 3)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up before each run, s (default 2, quick 1)")
    ap.add_argument("--rate-connections", type=int, default=64)
    ap.add_argument("--sat-connections", type=int, default=256)
    ap.add_argument("--configs", default=",".join(c.key for c in CONFIGS if c.available))
    ap.add_argument("--workloads", default=",".join(w[0] for w in WORKLOADS))
    args = ap.parse_args()
    args.duration = args.duration or (5 if args.quick else 15)
    args.sat_duration = args.sat_duration or (3 if args.quick else 8)
    args.warmup = args.warmup or (1 if args.quick else 2)

    envoy = find_envoy(args.envoy or os.environ.get("TOLLGATE_ENVOY"))
    for name, path in (("tollgate", args.tollgate), ("wasm filter", args.wasm), ("empty wasm filter", args.wasm_floor),
                       ("envoy", envoy),
                       ("oha", args.oha), ("wrk", args.wrk)):
        if not path or not (Path(path).is_file() or shutil.which(path)):
            sys.exit(f"bench: no {name} at {path!r}: run scripts/bench.sh (it builds and installs what is missing)")
    tools = {"oha": args.oha, "wrk": args.wrk}
    wanted = set(args.configs.split(","))
    workloads = [w for w in WORKLOADS if w[0] in set(args.workloads.split(","))]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "gateway-run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.time()
    git = version(["git", "-C", ROOT, "describe", "--always", "--dirty"])
    results = {
        "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "versions": {
            "envoy": "Envoy " + (re.search(r"/(\d+\.\d+\.\d+)/", version([envoy, "--version"]) or "") or [None, "?"])[1],
            "git": git,
            "oha": version([args.oha, "--version"]),
            "wrk": (version([args.wrk, "-v"]) or "wrk").split(" [")[0],
        },
        "settings": {
            "quick": args.quick, "mock_latency_ms": args.mock_latency_ms, "rate": args.rate, "rate_32k": args.rate_32k,
            "duration": args.duration, "sat_duration": args.sat_duration, "warmup": args.warmup,
            "rate_connections": args.rate_connections, "sat_connections": args.sat_connections,
            "envoy_concurrency": 1,
        },
        "configs": {c.key: {"title": c.title, "available": c.available, "note": c.note,
                            "wasm": c.wasm, "ext_proc": c.ext_proc, "audit": c.audit if c.ext_proc else None}
                    for c in CONFIGS},
        "workloads": [w[0] for w in workloads],
        "runs": {},
        "memory": {},
        "sanity": {},
        "failures": {},
        "files": {k: str(out / f"gateway.{k}") for k in ("md", "json", "svg")},
    }
    names = ["listen", "admin", "grpc", "sidecar_admin", "mock"]
    ports = dict(zip(names, free_ports(len(names))))
    bootstraps, policies = build_bootstraps(args.tollgate, args.wasm, Path(args.wasm_floor).resolve(), ports, work)
    bodies = {}
    for wl, stream, size in workloads:
        p = work / f"body-{wl}.json"
        p.write_bytes(request_body(size, stream))
        bodies[wl] = p
    url = f"http://127.0.0.1:{ports['listen']}/v1/chat/completions"
    admin = f"127.0.0.1:{ports['admin']}"

    log = work / "components.log"
    try:
        mock = Proc("mock", [args.tollgate, "mock", "--listen", f"127.0.0.1:{ports['mock']}",
                             "--latency-ms", args.mock_latency_ms], log)
        wait_ready(mock, f"http://127.0.0.1:{ports['mock']}/healthz")
        for c in CONFIGS:
            if not c.available or c.key not in wanted:
                continue
            print(f"bench: {c.title}", file=sys.stderr, flush=True)
            procs = {}
            sidecar = envoy_p = None
            try:
                if c.ext_proc:
                    policy = work / f"policy-{c.key}.yaml"
                    policy.write_text(policy_text(ports, audit=c.audit, inspection_off=False, cache=c.cache))
                    shutil.rmtree(work / "audit", ignore_errors=True)
                    sidecar = Proc("sidecar", [args.tollgate, "serve", "--policy", policy], work / f"sidecar-{c.key}.log")
                    wait_ready(sidecar, f"http://127.0.0.1:{ports['sidecar_admin']}/healthz")
                envoy_p = Proc("envoy", [envoy, "-c", bootstraps[c.key], "--concurrency", "1", "--log-level", "warn",
                                         "--disable-hot-restart"], work / f"envoy-{c.key}.log")
                wait_ready(envoy_p, f"http://{admin}/ready")
                procs["envoy"] = envoy_p
                if sidecar:
                    procs["sidecar"] = sidecar
                procs["mock"] = mock
                time.sleep(0.5)
                idle = proc_sample(envoy_p.pid) or {}
                mem = {"idle": {"rss_kb": idle.get("rss_kb"), "wasm": wasm_memory(envoy_p.pid), "admin": envoy_admin(admin)}}
                results["memory"][c.key] = mem
                for wl, stream, size in workloads:
                    scratch = work / c.key / wl
                    scratch.mkdir(parents=True, exist_ok=True)
                    body = bodies[wl].read_bytes()
                    chk = sanity(url, body, stream, c)
                    results["sanity"].setdefault(c.key, {})[wl] = chk
                    if chk["problems"]:
                        print(f"bench:   {wl}: sanity check: {'; '.join(chk['problems'])}", file=sys.stderr)
                    runs = results["runs"].setdefault(c.key, {}).setdefault(wl, {})
                    rate = args.rate if size <= 1024 else args.rate_32k
                    for kind in ("rate", "saturation"):
                        for name, p in procs.items():
                            if not p.alive():
                                raise RuntimeError(f"{name} exited; see {p.log}")
                        try:
                            runs[kind] = measure(kind, tools, url, bodies[wl], args, procs, rate, scratch)
                        except (subprocess.SubprocessError, OSError, ValueError, KeyError) as e:
                            runs[kind] = {"error": str(e)}
                        r = runs[kind]
                        lat = r.get("latency_ms", {})
                        print(f"bench:   {wl:8} {kind:10} {r.get('rps', 0):8.0f} req/s  p50 {lat.get('50', 0):7.2f} ms"
                              f"  p99 {lat.get('99', 0):7.2f} ms  errors {r.get('errors', r.get('error'))}",
                              file=sys.stderr, flush=True)
                end = proc_sample(envoy_p.pid) or {}
                mem["end"] = {"rss_kb": end.get("rss_kb"), "wasm": wasm_memory(envoy_p.pid), "admin": envoy_admin(admin)}
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                results["failures"][c.key] = str(e)
                print(f"bench:   failed: {e}", file=sys.stderr)
            finally:
                for p in (envoy_p, sidecar):
                    if p:
                        p.stop()
                shutil.rmtree(work / "audit", ignore_errors=True)
    finally:
        stop_all()

    results["wall_time_s"] = round(time.time() - t0, 1)
    results["machine"]["loadavg_at_end"] = _loadavg()
    analyse(results, args)
    Path(results["files"]["json"]).write_text(json.dumps(results, indent=1) + "\n")
    Path(results["files"]["svg"]).write_text(plot(results))
    md = markdown(results)
    Path(results["files"]["md"]).write_text(md)
    print(md)
    print(f"\nbench: wrote {results['files']['md']}, {results['files']['json']}, {results['files']['svg']} "
          f"in {results['wall_time_s']:.0f} s", file=sys.stderr)
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
