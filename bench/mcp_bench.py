#!/usr/bin/env python3
"""The MCP gateway's cost per tool call: a `tools/call` through Envoy and the
sidecar against the same call sent to the MCP server directly, in one run.

Run through `scripts/mcp-bench.sh` (which builds in release mode); see
docs/benchmarks.md ("MCP tool calls") for the method.

One gateway, started once: Envoy (one worker; its bootstrap turns the wasm
filter off on MCP routes) and the sidecar (`tollgate serve`, default inspection, audit as `--audit` says: on
with its default fsync, as shipped), virtual keys required, and three
upstream MCP servers, each behind its own virtual server:

  json   bench/mcp_upstream.py: a minimal Streamable HTTP server (standard
         library), answering each POST with one JSON body
  sse    the same, answering with one server-sent event
  sdk    tests/mcp/server.py on the official MCP Python SDK (the `crm`
         variant), answering with server-sent events, as the SDK does by
         default; served by uvicorn on its own socket
         (bench/mcp_sdk_server.py)

For each upstream the client opens two sessions (`initialize`, then
`notifications/initialized`; through the gateway also `tools/list`), one
straight to the server and one through Envoy at /mcp/<server>, each on its
own keep-alive HTTP/1.1 connection, and calls the server's `echo` tool
sequentially with a short neutral text: through the gateway its arguments
are scanned for personal data, its result by the firewall, and the call is
counted and audited. Calls alternate between the two paths and the upstreams
in a shuffled order, round by round, so every row sees the same machine.
Every answer must be a 200 whose result echoes the text; any other fails the
run. Latency is measured from sending the request to reading the last byte.

The target (issue 19): at most 1 ms added at p50, measured against the
minimal JSON server (whose own time is the smallest and steadiest); the other
two rows are for information.
"""

import argparse
import datetime as dt
import http.client
import json
import os
import random
import re
import shutil
import socket
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402  (helpers: processes, ports, readiness, machine info)

# key, title, started with
UPSTREAMS = [
    ("json", "minimal server, JSON answers", "bench/mcp_upstream.py"),
    ("sse", "minimal server, SSE answers", "bench/mcp_upstream.py --sse"),
    ("sdk", "official MCP Python SDK server (SSE answers)", "bench/mcp_sdk_server.py --variant crm"),
]
TARGET_UPSTREAM = "json"
TARGET_ADDED_P50_MS = 1.0
PATHS = [("direct", "direct to the server"), ("gateway", "through Envoy + sidecar")]
PCTS = (50, 90, 99)
PROTOCOL = "2025-11-25"
ACCEPT = "application/json, text/event-stream"


class Client:
    """One keep-alive HTTP/1.1 connection (TCP_NODELAY) to one address."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def post(self, path, data, headers):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.conn.connect()
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        h = {"content-type": "application/json", "accept": ACCEPT, **headers}
        t0 = time.perf_counter()
        try:
            self.conn.request("POST", path, data, h)
            r = self.conn.getresponse()
            payload = r.read()
        except (http.client.HTTPException, OSError):
            self.close()
            raise
        elapsed = time.perf_counter() - t0
        if r.getheader("connection", "").lower() == "close":
            self.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, payload, elapsed

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def messages(headers, payload):
    """The JSON-RPC messages of an answer: one JSON body, or the data of each event."""
    if headers.get("content-type", "").startswith("text/event-stream"):
        out = []
        for block in payload.decode("utf-8", "replace").replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(line[5:].lstrip(" ") for line in block.split("\n") if line.startswith("data:"))
            if data.strip():
                out.append(json.loads(data))
        return out
    return [json.loads(payload)] if payload.strip() else []


def response_to(rid, headers, payload):
    for m in messages(headers, payload):
        if m.get("id") == rid and ("result" in m or "error" in m):
            return m
    return None


class Session:
    """One MCP client session on one path."""

    def __init__(self, port, path, extra_headers):
        self.client = Client(port)
        self.path = path
        self.headers = dict(extra_headers)
        self.next_id = 0

    def rpc(self, method, params=None, notify=False):
        msg = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        rid = None
        if not notify:
            self.next_id += 1
            rid = msg["id"] = self.next_id
        status, headers, payload, elapsed = self.client.post(self.path, json.dumps(msg).encode(), self.headers)
        return status, headers, payload, elapsed, rid

    def open(self, list_tools):
        status, headers, payload, _, rid = self.rpc("initialize", {
            "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "mcp-bench", "version": "1"}})
        answer = response_to(rid, headers, payload) if status == 200 else None
        if not answer or "result" not in answer:
            raise RuntimeError(f"initialize on {self.path}: status {status}: {payload[:300]!r}")
        session = headers.get("mcp-session-id")
        if not session:
            raise RuntimeError(f"initialize on {self.path}: no mcp-session-id")
        self.headers["mcp-session-id"] = session
        self.headers["mcp-protocol-version"] = answer["result"].get("protocolVersion", PROTOCOL)
        status, _, payload, _, _ = self.rpc("notifications/initialized", notify=True)
        if status not in (200, 202):
            raise RuntimeError(f"notifications/initialized on {self.path}: status {status}: {payload[:300]!r}")
        if list_tools:
            status, headers, payload, _, rid = self.rpc("tools/list")
            answer = response_to(rid, headers, payload) if status == 200 else None
            if not answer or "result" not in answer:
                raise RuntimeError(f"tools/list on {self.path}: status {status}: {payload[:300]!r}")
            return [t.get("name") for t in answer["result"].get("tools", [])]
        return []

    def call(self, tool, text):
        """One `tools/call` of the echo tool: (seconds, problem or None)."""
        status, headers, payload, elapsed, rid = self.rpc("tools/call", {"name": tool, "arguments": {"text": text}})
        if status != 200:
            return elapsed, f"status {status}: {payload[:200]!r}"
        try:
            answer = response_to(rid, headers, payload)
        except ValueError:
            return elapsed, f"not JSON: {payload[:200]!r}"
        result = (answer or {}).get("result") or {}
        content = result.get("content") or [{}]
        if result.get("isError") or content[0].get("text") != text:
            return elapsed, f"unexpected answer: {payload[:300]!r}"
        return elapsed, None

    def close(self):
        self.client.close()


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


def policy_text(ports, upstream_ports, work, audit):
    text = bench.policy_text(ports, audit={"on": True, "off": False}.get(audit, audit), inspection_off=False)
    text += f"access: {{require: key, keyStore: '{work / 'keys.yaml'}'}}\n"
    text += "mcp:\n  servers:\n"
    for key, port in upstream_ports.items():
        text += f"    {key}: {{url: 'http://127.0.0.1:{port}/mcp'}}\n"
    text += "  virtualServers:\n"
    for key in upstream_ports:
        text += f"    {key}: {{tools: ['{key}/*']}}\n"
    grants = ", ".join(f"'{k}/*'" for k in upstream_ports)
    text += f"teams:\n  bench: {{mcp: {{tools: [{grants}]}}}}\nconsumers:\n  bench: {{team: bench}}\n"
    return text


def start_upstream(key, port, work, python):
    log = work / f"upstream-{key}.log"
    if key == "sdk":
        argv = [python, HERE / "mcp_sdk_server.py", "--port", port, "--name", "sdk", "--variant", "crm"]
        env = dict(os.environ, NO_PROXY="*", no_proxy="*", PYTHONDONTWRITEBYTECODE="1")
    else:
        argv = [sys.executable, HERE / "mcp_upstream.py", "--port", port] + (["--sse"] if key == "sse" else [])
        env = None
    p = bench.Proc(f"upstream {key}", argv, log, env=env)
    start = time.time()
    while time.time() - start < 60:
        if not p.alive():
            raise RuntimeError(f"the {key} MCP server exited; see {log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the {key} MCP server did not listen in 60 s; see {log}")


def sidecar_metrics(port):
    """`tollgate_mcp_calls_total` by server and result, and the call duration's sum and count by server."""
    try:
        _, _, data = bench.http("GET", f"http://127.0.0.1:{port}/metrics", timeout=5)
    except OSError:
        return {}
    calls, dur = {}, {}
    for line in data.decode(errors="replace").splitlines():
        m = re.match(r'^(tollgate_mcp_calls_total|tollgate_mcp_call_duration_seconds_(?:sum|count))\{([^}]*)\} (\S+)', line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        v = float(m.group(3))
        if m.group(1) == "tollgate_mcp_calls_total":
            key = f"{labels.get('server')}/{labels.get('result')}"
            calls[key] = calls.get(key, 0) + v
        else:
            d = dur.setdefault(labels.get("server"), {"sum": 0.0, "count": 0.0})
            d["sum" if m.group(1).endswith("_sum") else "count"] += v
    return {"calls": calls, "duration": dur}


def run(args, envoy, work):
    names = ["listen", "admin", "grpc", "sidecar_admin", "mock"]
    upstreams = [u[0] for u in UPSTREAMS if u[0] in args.upstreams]
    free = bench.free_ports(len(names) + len(upstreams))
    ports = dict(zip(names, free))
    upstream_ports = dict(zip(upstreams, free[len(names):]))

    policy = work / "policy.yaml"
    policy.write_text(policy_text(ports, upstream_ports, work, args.audit))
    bench.run_tool([args.tollgate, "check", "--policy", policy], "tollgate check")
    rendered = work / "envoy.yaml"
    bench.run_tool(
        [args.tollgate, "render", "envoy", "--policy", policy, "--wasm", args.wasm, "--access-log", "/dev/null",
         "--out", rendered],
        "tollgate render envoy",
    )
    key = bench.run_tool([args.tollgate, "keys", "create", "--policy", policy, "--consumer", "bench"],
                         "tollgate keys create").strip()

    procs = {}
    for k, port in upstream_ports.items():
        procs[f"upstream-{k}"] = start_upstream(k, port, work, args.python)
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "warn")
    sidecar = bench.Proc("sidecar", [args.tollgate, "serve", "--policy", policy], work / "sidecar.log", env=env)
    bench.wait_ready(sidecar, f"http://127.0.0.1:{ports['sidecar_admin']}/healthz", timeout=120)
    envoy_p = bench.Proc("envoy", [envoy, "-c", rendered, "--concurrency", "1", "--log-level", "warn",
                                   "--disable-hot-restart"], work / "envoy.log")
    bench.wait_ready(envoy_p, f"http://127.0.0.1:{ports['admin']}/ready")
    procs["envoy"], procs["sidecar"] = envoy_p, sidecar

    sessions = {}
    for k, port in upstream_ports.items():
        direct = Session(port, "/mcp", {})
        direct.open(list_tools=False)
        gateway = Session(ports["listen"], f"/mcp/{k}", {"authorization": f"Bearer {key}"})
        tools = gateway.open(list_tools=True)
        if f"{k}_echo" not in tools:
            raise RuntimeError(f"the gateway does not list {k}_echo: {tools}")
        sessions[(k, "direct")] = (direct, "echo")
        sessions[(k, "gateway")] = (gateway, f"{k}_echo")

    text = " ".join(bench.SENTENCES[:2])
    results = {"problems": [], "samples": {}, "checked": 0}
    rng = random.Random(19)
    order = list(sessions)
    t0 = None
    before = {}
    for rnd in range(args.warmup + args.calls):
        if rnd == args.warmup:
            t0 = time.time()
            before = {n: bench.proc_sample(p.pid) for n, p in procs.items()}
        rng.shuffle(order)
        for k in order:
            s, tool = sessions[k]
            elapsed, problem = s.call(tool, text)
            results["checked"] += 1
            if problem:
                results["problems"].append(f"{k[0]}/{k[1]}: {problem}")
            elif rnd >= args.warmup:
                results["samples"].setdefault(f"{k[0]}/{k[1]}", []).append(elapsed)
        if len(results["problems"]) > 20:
            break
        if rnd % 50 == 0:
            for n, p in procs.items():
                if not p.alive():
                    raise RuntimeError(f"{n} exited; see {p.log}")
    after = {n: bench.proc_sample(p.pid) for n, p in procs.items()}
    results["measure_wall_s"] = round(time.time() - (t0 or time.time()), 1)
    results["resources"] = {n: bench.proc_delta(before.get(n), after.get(n)) for n in procs}
    results["gateway_calls_measured"] = sum(len(v) for k, v in results["samples"].items() if k.endswith("/gateway"))
    results["sidecar_metrics"] = sidecar_metrics(ports["sidecar_admin"])
    for s, _ in sessions.values():
        s.close()
    return results


def analyse(raw):
    out = {}
    for key, _, _ in UPSTREAMS:
        rows = {p: summary(raw["samples"][f"{key}/{p}"]) for p, _ in PATHS if raw["samples"].get(f"{key}/{p}")}
        if len(rows) < 2:
            continue
        d, g = rows["direct"], rows["gateway"]
        g["ratio_vs_direct"] = {f"p{p}": round(g[f"p{p}_ms"] / d[f"p{p}_ms"], 3) for p in PCTS}
        g["added_ms"] = {f"p{p}": round(g[f"p{p}_ms"] - d[f"p{p}_ms"], 3) for p in PCTS}
        out[key] = rows
    return out


def fmt(v, nd=2, plus=False):
    return "–" if v is None else f"{v:+,.{nd}f}" if plus else f"{v:,.{nd}f}"


def markdown(res):
    m, s = res["machine"], res["settings"]
    L = ["# Tollgate MCP gateway: a tool call through the gateway vs straight to the server\n"]
    L.append(
        f"Run {res['started']}. Machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['mem_gib']} GiB, Linux {m['kernel']}; "
        f"load average {m.get('loadavg_at_start', '?')} at the start, {m.get('loadavg_at_end', '?')} at the end. "
        f"{res['versions']['envoy']}, git {res['versions']['git']}.\n"
    )
    L.append(
        f"Gateway: Envoy (1 worker; the wasm filter is off on MCP routes) + sidecar (default inspection: arguments scanned for personal data, "
        f"results by the firewall; virtual key required; audit **{s['audit']}**). `tools/call` of `echo` with a "
        f"{s['text_bytes']}-byte text, {s['calls']} measured calls per row after {s['warmup']} warm-up rounds, "
        "sequential, each path on its own keep-alive connection, the rows interleaved. Latency = request sent → last "
        "byte read. Ratio = through the gateway / direct at the same percentile; added = the difference of the "
        "percentiles.\n"
    )
    L.append("| upstream | path | n | p50 ms | p90 ms | p99 ms | mean ms | ratio p50 | ratio p90 | ratio p99 | added p50 ms |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    titles = {u[0]: u[1] for u in UPSTREAMS}
    for key, rows in res["latency"].items():
        for p, ptitle in PATHS:
            r = rows[p]
            q, a = r.get("ratio_vs_direct", {}), r.get("added_ms", {})
            ratios = " | ".join(f"{fmt(q[f'p{p}'], 3)}×" if q else "–" for p in PCTS)
            L.append(
                f"| {titles[key]} | {ptitle} | {r['n']} | {fmt(r['p50_ms'])} | {fmt(r['p90_ms'])} | {fmt(r['p99_ms'])} "
                f"| {fmt(r['mean_ms'])} | {ratios} | {fmt(a.get('p50'), 3, plus=True) if a else '–'} |"
            )
    t = res.get("target") or {}
    if t:
        verdict = "**met**" if t["met"] else "**missed**"
        L.append(
            f"\nTarget: a `tools/call` through the gateway adds ≤ {TARGET_ADDED_P50_MS:g} ms at p50 "
            f"(against the minimal JSON server): {fmt(t['added_p50_ms'], 3, plus=True)} ms, {verdict}.\n"
        )
    r = res.get("resources") or {}
    calls = res.get("gateway_calls_measured") or 0
    if r and calls:
        per = {n: x["cpu_s"] / calls * 1e6 for n, x in r.items() if x and n in ("envoy", "sidecar")}
        if per:
            L.append(
                "CPU per call through the gateway over the measured phase: "
                + ", ".join(f"{n} {v:,.0f} µs" for n, v in per.items())
                + f" ({calls} gateway calls in {res['measure_wall_s']} s; the direct calls use neither).\n"
            )
    met = res.get("sidecar_metrics") or {}
    dur = met.get("duration") or {}
    if dur:
        cells = ", ".join(f"{k} {v['sum'] / v['count'] * 1000:.3f} ms" for k, v in dur.items() if v.get("count"))
        L.append(f"The sidecar's own `tollgate_mcp_call_duration_seconds`, mean over the whole run: {cells}.\n")
    if res["problems"]:
        L.append("\n## Problems\n")
        L.extend(f"- {p}" for p in res["problems"][:50])
    else:
        L.append(f"All {res['checked']} calls answered 200 with the text echoed.\n")
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="300 calls per row after 20 warm-up rounds")
    ap.add_argument("--tollgate", default=str(ROOT / "target/release/tollgate"))
    ap.add_argument("--wasm", default=str(ROOT / "target/wasm32-wasip1/wasm-release/tollgate_filter.wasm"))
    ap.add_argument("--envoy", default=None, help="default: $TOLLGATE_ENVOY, ~/.tollgate/venv/bin/envoy, PATH")
    ap.add_argument("--python", default=None,
                    help="Python with the MCP SDK for the sdk upstream (default: the Tollgate venv's)")
    ap.add_argument("--out", default=str(ROOT / "target/bench"), help="directory for mcp.{md,json} and the run")
    ap.add_argument("--calls", type=int, default=None, help="measured calls per row (default 3000, quick 300)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up rounds (default 100, quick 20)")
    ap.add_argument("--audit", choices=["on", "off", "100ms"], default="on",
                    help="the sidecar's audit log: on with fsync before each answer (the default, as shipped), "
                         "off, or fsync every 100 ms")
    ap.add_argument("--upstreams", default=",".join(u[0] for u in UPSTREAMS),
                    help="which upstream servers to measure (default: all)")
    args = ap.parse_args()
    args.calls = args.calls or (300 if args.quick else 3000)
    args.warmup = args.warmup if args.warmup is not None else (20 if args.quick else 100)
    args.upstreams = [u for u in args.upstreams.split(",") if u]
    unknown = set(args.upstreams) - {u[0] for u in UPSTREAMS}
    if unknown or not args.upstreams:
        sys.exit(f"mcp_bench: --upstreams takes some of {', '.join(u[0] for u in UPSTREAMS)}")
    home = Path(os.environ.get("TOLLGATE_HOME", Path.home() / ".tollgate"))
    args.python = args.python or str(home / "venv/bin/python")

    envoy = bench.find_envoy(args.envoy or os.environ.get("TOLLGATE_ENVOY"))
    need = [("tollgate", args.tollgate), ("wasm filter", args.wasm), ("envoy", envoy)]
    if "sdk" in args.upstreams:
        need.append(("Python with the MCP SDK", args.python))
    for name, path in need:
        if not path or not (Path(path).is_file() or shutil.which(path)):
            sys.exit(f"mcp_bench: no {name} at {path!r}: run scripts/mcp-bench.sh (it builds and installs what is missing)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "mcp-run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.time()
    res = {
        "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": bench.machine_info(),
        "versions": {
            "envoy": "Envoy " + (re.search(r"/(\d+\.\d+\.\d+)/", bench.version([envoy, "--version"]) or "") or [None, "?"])[1],
            "git": bench.version(["git", "-C", ROOT, "describe", "--always", "--dirty"]),
            "mcp_sdk": bench.version([args.python, "-c", "import importlib.metadata as m; print(m.version('mcp'))"])
            if "sdk" in args.upstreams else None,
        },
        "settings": {"calls": args.calls, "warmup": args.warmup, "audit": args.audit, "upstreams": args.upstreams,
                     "envoy_concurrency": 1, "text_bytes": len(" ".join(bench.SENTENCES[:2]).encode()),
                     "quick": args.quick},
    }
    failed = None
    try:
        raw = run(args, envoy, work)
    except (RuntimeError, OSError, http.client.HTTPException, ValueError) as e:
        failed = str(e)
        raw = {"problems": [f"run failed: {e}"], "samples": {}, "checked": 0}
    finally:
        bench.stop_all()
    res["machine"]["loadavg_at_end"] = bench._loadavg()
    res["latency"] = analyse(raw)
    for k in ("problems", "checked", "measure_wall_s", "resources", "gateway_calls_measured", "sidecar_metrics"):
        res[k] = raw.get(k)
    t = res["latency"].get(TARGET_UPSTREAM, {}).get("gateway", {}).get("added_ms")
    if t:
        res["target"] = {"added_p50_ms": t["p50"], "limit_ms": TARGET_ADDED_P50_MS, "met": t["p50"] <= TARGET_ADDED_P50_MS}
    res["wall_time_s"] = round(time.time() - t0, 1)

    md = markdown(res)
    (out / "mcp.md").write_text(md + "\n")
    (out / "mcp.json").write_text(json.dumps(res, indent=1) + "\n")
    print(md)
    print(f"\nmcp_bench: wrote {out / 'mcp.md'} and .json in {res['wall_time_s']:.0f} s", file=sys.stderr)
    if failed or res["problems"]:
        print(f"mcp_bench: FAILED: {failed or str(len(res['problems'])) + ' bad answers'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        bench.stop_all()
        sys.exit(130)
