#!/usr/bin/env python3
"""The response cache end to end: a hit through Envoy against the same request
served by the mock provider, in one run.

Run through `scripts/cache-bench.sh` (which builds in release mode and also
runs the store and embedding benchmark, `ext-proc-server/examples/cache_bench.rs`);
see docs/cache-benchmarks.md for the method.

One stack, started once: the mock provider (no added latency), the sidecar
(`tollgate serve`, `cache: {enabled: true}` with the embedded store, audit as
`--audit` says: on by default, as shipped) and Envoy (one worker) with the wasm
filter (default inspection) and ext_proc, from the bootstrap `tollgate render
envoy` writes. The same temperature-0 OpenAI chat request is sent
sequentially over one keep-alive connection, in five variants, interleaved
round by round (so every variant sees the same machine):

  no-cache        `Cache-Control: no-cache`: not looked up, served by the
                  mock, the answer stored (embedding included): the baseline
  miss            a fresh `x-tollgate-cache-namespace` per request: exact
                  lookup, embedding, semantic lookup (nothing found), the
                  mock, the answer stored: what a real miss costs
  no-cache,       `Cache-Control: no-cache, no-store`: the cache is skipped
  no-store        entirely (no embedding, nothing stored)
  exact hit       the cached request again: answered by the sidecar
  semantic hit    a paraphrase of the cached prompt: embedding + scan, answered
                  by the sidecar

each non-streamed and streamed (`stream: true`). Every response must be a 200
with the expected `x-tollgate-cache` (and tier) header and a complete body;
any that is not fails the run. Latency is measured from sending the request
to reading the last byte of the answer.
"""

import argparse
import datetime as dt
import http.client
import json
import os
import random
import re
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402  (helpers: processes, ports, readiness, machine info)
import yamlsubset  # noqa: E402

SYSTEM = "You are a concise assistant for home bakers."
PROMPT = "How do I keep my sourdough starter alive while I am away on holiday for two weeks?"
PARAPHRASE = "How can I keep my sourdough starter alive while I'm away on holiday for two weeks?"

# key, title, headers, expected x-tollgate-cache, expected tier, prompt
VARIANTS = [
    ("no-cache", "served by the mock (`no-cache`, answer stored) — baseline", {"cache-control": "no-cache"}, "skip", None, PROMPT),
    ("miss", "miss (fresh namespace: lookup + embedding + mock + store)", None, "miss", None, PROMPT),
    ("bypass", "cache skipped (`no-cache, no-store`)", {"cache-control": "no-cache, no-store"}, "skip", None, PROMPT),
    ("exact", "exact hit (answered by the sidecar)", {}, "hit", "exact", PROMPT),
    ("semantic", "semantic hit (paraphrase: embedding + scan)", {}, "hit", "semantic", PARAPHRASE),
]
BASELINE = "no-cache"
MODES = [("json", False), ("sse", True)]
PCTS = (50, 90, 99)


def body(prompt, stream):
    b = {
        "model": "gpt-4o-mini",
        "temperature": 0,
        "max_tokens": 64,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
    }
    if stream:
        b["stream"] = True
    return json.dumps(b).encode()


class Client:
    """One keep-alive HTTP/1.1 connection to Envoy (reopened if it closes)."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def post(self, path, data, headers):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            h = {"content-type": "application/json", **headers}
            t0 = time.perf_counter()
            try:
                self.conn.request("POST", path, data, h)
                r = self.conn.getresponse()
                t_head = time.perf_counter()
                payload = r.read()
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt:
                    raise
                continue
            t_end = time.perf_counter()
            if r.getheader("connection", "").lower() == "close":
                self.close()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, payload, t_head - t0, t_end - t0
        raise RuntimeError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def check(variant, stream, status, headers, payload):
    """Problems with one response (empty when it is what the variant expects)."""
    key, _, _, want, tier, _ = variant
    problems = []
    if status != 200:
        problems.append(f"status {status}: {payload[:200]!r}")
    got = headers.get("x-tollgate-cache")
    if got != want:
        problems.append(f"x-tollgate-cache {got!r}, expected {want!r}")
    if tier and headers.get("x-tollgate-cache-tier") != tier:
        problems.append(f"x-tollgate-cache-tier {headers.get('x-tollgate-cache-tier')!r}, expected {tier!r}")
    backend = headers.get("x-tollgate-backend")
    if (want == "hit") != (backend == "cache"):
        problems.append(f"x-tollgate-backend {backend!r}")
    if stream:
        if not payload.rstrip().endswith(b"data: [DONE]"):
            problems.append("stream did not end with data: [DONE]")
    else:
        try:
            if not json.loads(payload).get("choices"):
                problems.append("no choices in the answer")
        except ValueError:
            problems.append(f"answer is not JSON: {payload[:120]!r}")
    return problems


def pct(values, p):
    s = sorted(values)
    if not s:
        return None
    rank = max(1, min(len(s), -(-p * len(s) // 100)))
    return s[rank - 1]


def summary(samples):
    ms = [x * 1000 for x in samples]
    return {
        "n": len(ms),
        "mean_ms": round(sum(ms) / len(ms), 3) if ms else None,
        **{f"p{p}_ms": round(pct(ms, p), 3) if ms else None for p in PCTS},
        "max_ms": round(max(ms), 3) if ms else None,
    }


def policy_text(ports, audit, work):
    return bench.policy_text(ports, audit=audit, inspection_off=False) + f"cache: {{enabled: true, dir: '{work / 'cache'}'}}\n"


def render(tollgate, wasm, ports, work, audit):
    policy = work / "policy.yaml"
    policy.write_text(policy_text(ports, audit, work))
    bench.run_tool([tollgate, "check", "--policy", policy], "tollgate check")
    rendered = work / "envoy.yaml"
    bench.run_tool(
        [tollgate, "render", "envoy", "--policy", policy, "--wasm", wasm, "--access-log", "/dev/null", "--out", rendered],
        "tollgate render envoy",
    )
    base = yamlsubset.loads(rendered.read_text())
    hcm = base["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    if names != ["tollgate.strip_gateway_headers", "tollgate.wasm", "envoy.filters.http.ext_proc", "envoy.filters.http.router"]:
        raise RuntimeError(f"unexpected filter chain in the rendered bootstrap: {names}")
    return policy, rendered


def sidecar_metrics(port):
    """The sidecar's cache histograms and counters (Prometheus text)."""
    try:
        _, _, data = bench.http("GET", f"http://127.0.0.1:{port}/metrics", timeout=5)
    except OSError:
        return {}
    out = {}
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("tollgate_cache_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            if name.endswith("_sum") or name.endswith("_count") or "_total" in name:
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
    return out


def run(args, envoy, work):
    names = ["listen", "admin", "grpc", "sidecar_admin", "mock"]
    ports = dict(zip(names, bench.free_ports(len(names))))
    shutil.rmtree(work / "cache", ignore_errors=True)
    policy, rendered = render(args.tollgate, args.wasm, ports, work, args.audit == "on")
    log = work / "components.log"
    mock = bench.Proc("mock", [args.tollgate, "mock", "--listen", f"127.0.0.1:{ports['mock']}", "--latency-ms", 0], log)
    bench.wait_ready(mock, f"http://127.0.0.1:{ports['mock']}/healthz")
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "warn")
    sidecar = bench.Proc("sidecar", [args.tollgate, "serve", "--policy", policy], work / "sidecar.log", env=env)
    bench.wait_ready(sidecar, f"http://127.0.0.1:{ports['sidecar_admin']}/healthz", timeout=120)
    envoy_p = bench.Proc("envoy", [envoy, "-c", rendered, "--concurrency", "1", "--log-level", "warn",
                                   "--disable-hot-restart"], work / "envoy.log")
    bench.wait_ready(envoy_p, f"http://127.0.0.1:{ports['admin']}/ready")
    procs = {"envoy": envoy_p, "sidecar": sidecar, "mock": mock}

    client = Client(ports["listen"])
    path = "/v1/chat/completions"
    bodies = {(v[0], m): body(v[5], stream) for v in VARIANTS for m, stream in MODES}
    results = {"problems": [], "samples": {}, "similarity": {}, "checked": 0}
    counter = [0]

    def send(variant, mode, stream, record):
        key, _, headers, _, _, _ = variant
        h = dict(headers or {})
        if key == "miss":
            counter[0] += 1
            h["x-tollgate-cache-namespace"] = f"bench-miss-{os.getpid()}-{counter[0]}"
        status, rh, payload, t_head, t_total = client.post(path, bodies[(key, mode)], h)
        results["checked"] += 1
        probs = check(variant, stream, status, rh, payload)
        if probs:
            results["problems"].append(f"{key}/{mode}: {'; '.join(probs)}")
        if record and not probs:
            s = results["samples"].setdefault(f"{key}/{mode}", {"total": [], "head": []})
            s["total"].append(t_total)
            s["head"].append(t_head)
        if key == "semantic" and rh.get("x-tollgate-cache-similarity"):
            results["similarity"][mode] = rh["x-tollgate-cache-similarity"]
        return probs

    # Prime: the first request of the prompt is a miss and stores the answer
    # (non-streamed; `stream` is not part of the key, so it serves both).
    prime = ("prime", "", {}, "miss", None, PROMPT)
    bodies[("prime", "json")] = body(PROMPT, False)
    probs = send(prime, "json", False, False)
    if probs:
        raise RuntimeError(f"priming request: {'; '.join(probs)}")

    rng = random.Random(7)
    t0 = time.time()
    before = {n: bench.proc_sample(p.pid) for n, p in procs.items()}
    for rnd in range(args.warmup + args.requests):
        order = [(v, m, s) for v in VARIANTS for m, s in MODES]
        rng.shuffle(order)
        for v, m, s in order:
            send(v, m, s, rnd >= args.warmup)
        if len(results["problems"]) > 20:
            break
        for n, p in procs.items():
            if not p.alive():
                raise RuntimeError(f"{n} exited; see {p.log}")
    after = {n: bench.proc_sample(p.pid) for n, p in procs.items()}
    results["measure_wall_s"] = round(time.time() - t0, 1)
    results["resources"] = {n: bench.proc_delta(before[n], after[n]) for n in procs}
    results["sidecar_metrics"] = sidecar_metrics(ports["sidecar_admin"])
    client.close()
    return results


def analyse(raw):
    out = {}
    for mode, _ in MODES:
        rows = {}
        for v in VARIANTS:
            s = raw["samples"].get(f"{v[0]}/{mode}")
            if not s:
                continue
            rows[v[0]] = {"total": summary(s["total"]), "first_byte": summary(s["head"])}
        base = rows.get(BASELINE)
        for k, r in rows.items():
            if base:
                r["ratio_vs_baseline"] = {
                    f"p{p}": round(r["total"][f"p{p}_ms"] / base["total"][f"p{p}_ms"], 3) for p in PCTS
                }
                r["saved_ms_p50"] = round(base["total"]["p50_ms"] - r["total"]["p50_ms"], 3)
        out[mode] = rows
    return out


def fmt(v, nd=2):
    return "–" if v is None else f"{v:,.{nd}f}"


def markdown(res):
    m = res["machine"]
    L = ["# Tollgate response cache: hit vs miss through Envoy\n"]
    L.append(
        f"Run {res['started']}. Machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['mem_gib']} GiB, Linux {m['kernel']}; "
        f"load average {m.get('loadavg_at_start', '?')} at the start, {m.get('loadavg_at_end', '?')} at the end. "
        f"{res['versions']['envoy']}, git {res['versions']['git']}.\n"
    )
    s = res["settings"]
    L.append(
        f"Full stack: Envoy (1 worker) + wasm filter (default inspection) + sidecar (`cache: {{enabled: true}}`, "
        f"embedded store, audit **{s['audit']}**) + mock provider (no added latency). {s['requests']} measured "
        f"requests per row after {s['warmup']} warm-up rounds, sequential on one keep-alive connection, the rows "
        f"interleaved. Latency = request sent → last byte read. Ratio = row / baseline (`no-cache`) at the same "
        f"percentile. Semantic-hit similarity: {', '.join(f'{k} {v}' for k, v in res['similarity'].items()) or '–'}.\n"
    )
    titles = {v[0]: v[1] for v in VARIANTS}
    for mode, _ in MODES:
        rows = res["latency"].get(mode, {})
        L.append(f"\n## {'non-streamed (JSON)' if mode == 'json' else 'streamed (SSE)'}\n")
        L.append("| request | n | p50 ms | p90 ms | p99 ms | mean ms | ratio p50 | ratio p90 | ratio p99 | first byte p50 ms |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for v in VARIANTS:
            r = rows.get(v[0])
            if not r:
                L.append(f"| {titles[v[0]]} | 0 | – | – | – | – | – | – | – | – |")
                continue
            t, q = r["total"], r.get("ratio_vs_baseline", {})
            L.append(
                f"| {titles[v[0]]} | {t['n']} | {fmt(t['p50_ms'])} | {fmt(t['p90_ms'])} | {fmt(t['p99_ms'])} "
                f"| {fmt(t['mean_ms'])} | {fmt(q.get('p50'), 3)}× | {fmt(q.get('p90'), 3)}× | {fmt(q.get('p99'), 3)}× "
                f"| {fmt(r['first_byte']['p50_ms'])} |"
            )
    r = res.get("resources") or {}
    if r:
        cells = ", ".join(
            f"{n} {x['cpu_s']:.1f} s ({x['cpu_pct_of_core']:.0f} % of a core), RSS {x['rss_mib_after']:.0f} MiB"
            for n, x in r.items() if x
        )
        L.append(f"\nCPU over the measured phase ({res['measure_wall_s']} s): {cells}.\n")
    met = res.get("sidecar_metrics") or {}

    def avg(name):
        c, sm = met.get(f"{name}_count"), met.get(f"{name}_sum")
        return None if not c else sm / c * 1000

    lk, em = avg("tollgate_cache_lookup_seconds"), avg("tollgate_cache_embedding_seconds")
    if lk is not None or em is not None:
        L.append(
            f"Sidecar's own metrics over the whole run: mean cache lookup {fmt(lk, 3)} ms "
            f"(`tollgate_cache_lookup_seconds`, embedding included), mean embedding {fmt(em, 3)} ms "
            f"(`tollgate_cache_embedding_seconds`).\n"
        )
    if res["problems"]:
        L.append("\n## Problems\n")
        L.extend(f"- {p}" for p in res["problems"][:50])
    else:
        L.append(f"All {res['checked']} responses were 200 with the expected `x-tollgate-cache` header and a complete body.\n")
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tollgate", default=str(ROOT / "target/release/tollgate"))
    ap.add_argument("--wasm", default=str(ROOT / "target/wasm32-wasip1/wasm-release/tollgate_filter.wasm"))
    ap.add_argument("--envoy", default=None, help="default: $TOLLGATE_ENVOY, ~/.tollgate/venv/bin/envoy, PATH")
    ap.add_argument("--out", default=str(ROOT / "target/bench"), help="directory for cache-e2e.{md,json} and the run")
    ap.add_argument("--requests", type=int, default=300, help="measured requests per row (default 300)")
    ap.add_argument("--warmup", type=int, default=20, help="warm-up rounds (default 20)")
    ap.add_argument("--audit", choices=["on", "off"], default="on", help="the sidecar's audit log (default on, as shipped)")
    ap.add_argument("--store-json", help="the store/embedding JSON from the cache_bench example, merged into cache.json")
    ap.add_argument("--store-md", help="its markdown, appended to cache.md")
    args = ap.parse_args()

    envoy = bench.find_envoy(args.envoy or os.environ.get("TOLLGATE_ENVOY"))
    for name, path in (("tollgate", args.tollgate), ("wasm filter", args.wasm), ("envoy", envoy)):
        if not path or not (Path(path).is_file() or shutil.which(path)):
            sys.exit(f"cache_bench: no {name} at {path!r}: run scripts/cache-bench.sh (it builds what is missing)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "cache-run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.time()
    res = {
        "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": bench.machine_info(),
        "versions": {
            "envoy": "Envoy " + (re.search(r"/(\d+\.\d+\.\d+)/", bench.version([envoy, "--version"]) or "") or [None, "?"])[1],
            "git": bench.version(["git", "-C", ROOT, "describe", "--always", "--dirty"]),
        },
        "settings": {"requests": args.requests, "warmup": args.warmup, "audit": args.audit, "mock_latency_ms": 0,
                     "envoy_concurrency": 1, "prompt": PROMPT, "paraphrase": PARAPHRASE, "system": SYSTEM},
    }
    failed = None
    try:
        raw = run(args, envoy, work)
    except (RuntimeError, OSError, http.client.HTTPException) as e:
        failed = str(e)
        raw = {"problems": [f"run failed: {e}"], "samples": {}, "similarity": {}, "checked": 0}
    finally:
        bench.stop_all()
    res["machine"]["loadavg_at_end"] = bench._loadavg()
    res["latency"] = analyse(raw)
    for k in ("problems", "similarity", "checked", "measure_wall_s", "resources", "sidecar_metrics"):
        res[k] = raw.get(k)
    res["wall_time_s"] = round(time.time() - t0, 1)

    md = markdown(res)
    (out / "cache-e2e.md").write_text(md + "\n")
    (out / "cache-e2e.json").write_text(json.dumps(res, indent=1) + "\n")
    combined_md = md
    combined = {"end_to_end": res}
    if args.store_json and Path(args.store_json).is_file():
        combined["store_and_embedding"] = json.loads(Path(args.store_json).read_text())
    if args.store_md and Path(args.store_md).is_file():
        combined_md = Path(args.store_md).read_text().rstrip() + "\n\n" + md
    if args.store_json or args.store_md:
        (out / "cache.json").write_text(json.dumps(combined, indent=1) + "\n")
        (out / "cache.md").write_text(combined_md + "\n")
    print(md)
    print(f"\ncache_bench: wrote {out / 'cache-e2e.md'} and .json in {res['wall_time_s']:.0f} s"
          + (f"; {out / 'cache.md'} and .json" if args.store_json or args.store_md else ""), file=sys.stderr)
    if failed or res["problems"]:
        print(f"cache_bench: FAILED: {failed or str(len(res['problems'])) + ' bad responses'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        bench.stop_all()
        sys.exit(130)
