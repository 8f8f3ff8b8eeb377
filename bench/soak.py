#!/usr/bin/env python3
"""Tollgate's soak: the full stack under a long, bounded load, its memory and
file descriptors sampled until the end.

Run through `scripts/soak.sh` (which builds in release mode); see the "Soak"
section of docs/reliability.md.

The stack is the one of the benchmark's configuration 5 (bench/bench.py):
Envoy (`--concurrency 2`) with the wasm filter (the default inspection: PII
masking, prompt firewall, output guard) and the ext_proc sidecar (audit on),
in front of the offline mock provider. The load, from this process (asyncio,
raw HTTP/1.1 on keep-alive connections, no dependency):

  1. streams: `--streams` clients (default 1,000), each one connection sending
     streamed OpenAI chat requests back to back for `--minutes` (default 10);
     the mock waits `--chunk-delay-ms` between SSE chunks so that every
     stream stays open for a while (about 20 s by default);
  2. sequential: `--sequential` requests (default 10,000) one after the other
     on one connection, streamed and non-streamed in turn, without delays.

Every prompt carries an e-mail address and a phone number (masked on the way
to the provider, restored in the answer); every answer carries an AWS-style
access key, which the mock appends (`x-mock-append`) and the output guard
redacts. A request counts as an error unless it gets a 200 and exactly the
expected text (the prompt restored, the key redacted) in a well-formed answer
(for a stream: every event's data JSON or `[DONE]`, one `[DONE]`, last).

Every `--sample-seconds` (default 5): Envoy's and the sidecar's RSS
(/proc/<pid>/status) and open file descriptors (/proc/<pid>/fd), the filter's
wasm VMs' linear memory (/proc/<envoy>/smaps, as in the benchmark) and
Envoy's heap (admin /memory).

The check, for each of Envoy RSS, Envoy fds, wasm linear memory, sidecar RSS
and sidecar fds: the largest sample from minute `--settle-minutes` (default
2) of the load to the end of the run (the sequential requests included) is
at most `--tolerance` (default 5 %) above the first sample taken at or after
that minute. The run fails (exit 1) when one of them grows more, when any
request is an error, when a process exits, when the mock received any of
the prompts' PII in clear, or when the audit log lacks a record for an
answered request (or holds two with one request id). Results:
target/soak/soak.{md,json,svg}.
"""

import argparse
import asyncio
import collections
import datetime as dt
import json
import os
import random
import re
import resource
import shutil
import statistics
import string
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402
import svgplot  # noqa: E402

REDACTED_SECRET = "[REDACTED_SECRET]"  # what the output guard writes for a SECRET (redact)
REPLY_PREFIX = "Mock reply to: "  # the mock's answer: this, the prompt, then x-mock-append
ECHO_LIMIT = 200  # characters of the prompt the mock echoes (the masked prompt must stay under it)
FIRST = ["jane", "omar", "li", "ana", "kofi", "marta", "yusuf", "ines", "tom", "priya"]
LAST = ["doe", "haddad", "chen", "silva", "mensah", "kowalska", "demir", "roux", "berg", "nair"]

# --------------------------------------------------------------- requests


class Request:
    """One request of the load: its body, headers and the answer expected."""

    def __init__(self, rng, stream, no_delay=False):
        name = f"{rng.choice(FIRST)}.{rng.choice(LAST)}{rng.randrange(1000)}"
        email = f"{name}@example.org"
        phone = f"415-555-{rng.randrange(10000):04d}"
        sentence = rng.choice(bench.SENTENCES)
        prompt = f"Write to {email} or call {phone}: {sentence}"
        # The mock echoes the masked prompt up to ECHO_LIMIT characters; its
        # placeholders (<EMAIL_ADDRESS_1>, <PHONE_NUMBER_1>) are at most a few
        # characters longer than the values they replace: 20 of slack.
        assert len(prompt) < ECHO_LIMIT - 20, prompt
        key = "AKIA" + "".join(rng.choice(string.ascii_uppercase + "234567") for _ in range(16))
        before, after = bench.prose(160, rng.random()), bench.prose(160, rng.random())
        append = f"{before} The access key is {key} for now. {after}"
        self.pii = (email, phone)
        self.stream = stream
        self.expected = f"{REPLY_PREFIX}{prompt} {append.replace(key, REDACTED_SECRET)}"
        body = {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": prompt},
            ],
            "max_tokens": 1024,
        }
        if stream:
            body["stream"] = True
        self.body = json.dumps(body).encode()
        self.headers = {"content-type": "application/json", "x-mock-append": append}
        if no_delay:
            self.headers.update({"x-mock-latency-ms": "0", "x-mock-chunk-delay-ms": "0"})


def check_answer(req, status, headers, body):
    """None when the answer is the expected one, else what is wrong (an error kind)."""
    if status != 200:
        return f"status {status}"
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return "malformed: not UTF-8"
    if not req.stream:
        try:
            content = json.loads(text)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return "malformed: not a chat completion"
        return None if content == req.expected else "wrong content"
    if not headers.get("content-type", "").startswith("text/event-stream"):
        return "malformed: not text/event-stream"
    if not text.endswith("\n\n"):
        return "malformed: stream cut inside an event"
    parts, done = [], 0
    for event in text[:-2].split("\n\n"):
        data = [line[5:].removeprefix(" ") for line in event.split("\n") if line.startswith("data:")]
        if not data:
            if all(line.startswith(":") for line in event.split("\n")):
                continue  # a comment
            return "malformed: event without data"
        payload = "\n".join(data)
        if done:
            return "malformed: event after [DONE]"
        if payload == "[DONE]":
            done += 1
            continue
        try:
            obj = json.loads(payload)
        except ValueError:
            return "malformed: event data not JSON"
        if not isinstance(obj, dict):
            return "malformed: event data not an object"
        if "error" in obj:
            return f"error event: {str(obj['error'])[:80]}"
        for choice in obj.get("choices") or []:
            parts.append((choice.get("delta") or {}).get("content") or "")
    if not done:
        return "malformed: no [DONE]"
    return None if "".join(parts) == req.expected else "wrong content"


# ------------------------------------------------------------ HTTP client


class Conn:
    """One keep-alive HTTP/1.1 connection (asyncio streams; no dependency)."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def request(self, path, req):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        head = [f"POST {path} HTTP/1.1", f"host: {self.host}:{self.port}", f"content-length: {len(req.body)}"]
        head += [f"{k}: {v}" for k, v in req.headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + req.body)
        await self.writer.drain()
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        keep = headers.get("connection", "").lower() != "close"
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while await self.reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # trailers
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            body = b"".join(parts)
        elif "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        else:
            body, keep = await self.reader.read(), False
        if not keep:
            self.close()
        return status, headers, body

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Load:
    """Counts of the load, per phase, shared by the clients and the sampler."""

    def __init__(self, host, port, path, timeout):
        self.host, self.port, self.path, self.timeout = host, port, path, timeout
        self.inflight = 0
        self.ok = collections.Counter()
        self.errors = collections.defaultdict(collections.Counter)  # phase -> kind -> count
        self.examples = {}  # error kind -> one example
        self.durations = collections.defaultdict(list)  # phase -> seconds per request
        self.pii = set()  # every e-mail address and phone number sent

    def error_total(self):
        return sum(sum(c.values()) for c in self.errors.values())

    async def one(self, conn, req, phase):
        self.pii.update(req.pii)
        self.inflight += 1
        t = time.monotonic()
        try:
            status, headers, body = await asyncio.wait_for(conn.request(self.path, req), self.timeout)
            problem = check_answer(req, status, headers, body)
            if problem and problem.startswith("status"):
                self.examples.setdefault(problem, body[:300].decode("utf-8", "replace"))
        except asyncio.TimeoutError:
            problem = f"timeout ({self.timeout:.0f} s)"
            conn.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as e:
            problem = f"connection: {type(e).__name__}"
            self.examples.setdefault(problem, str(e)[:300])
            conn.close()
        finally:
            self.inflight -= 1
        if problem:
            self.errors[phase][problem] += 1
            return False
        self.ok[phase] += 1
        self.durations[phase].append(time.monotonic() - t)
        return True


async def stream_client(load, i, n, ramp_s, deadline, seed):
    rng = random.Random(seed)
    await asyncio.sleep(ramp_s * i / n)
    conn = Conn(load.host, load.port)
    while time.monotonic() < deadline:
        if not await load.one(conn, Request(rng, stream=True), "streams") and conn.writer is None:
            await asyncio.sleep(0.5)  # not hammering a gateway that refuses connections
    conn.close()


async def sequential_client(load, count, seed):
    rng = random.Random(seed)
    conn = Conn(load.host, load.port)
    for k in range(count):
        await load.one(conn, Request(rng, stream=k % 2 == 0, no_delay=True), "sequential")
    conn.close()


# --------------------------------------------------------------- sampling


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def sample(procs, admin):
    """One sample of every measured quantity (blocking; run off the event loop)."""
    out = {}
    for name in ("envoy", "sidecar"):
        s = bench.proc_sample(procs[name].pid) or {}
        out[f"{name}_rss_mib"] = s["rss_kb"] / 1024 if s.get("rss_kb") is not None else None
        out[f"{name}_fds"] = fd_count(procs[name].pid)
        out[f"{name}_cpu_s"] = s.get("cpu_s")
    wasm = bench.wasm_memory(procs["envoy"].pid) or {}
    out["wasm_vms"] = wasm.get("vms")
    out["wasm_linear_mib"] = wasm["linear_memory_kib"] / 1024 if wasm.get("vms") else None
    out["wasm_resident_mib"] = wasm["linear_memory_rss_kib"] / 1024 if wasm.get("vms") else None
    try:
        _, _, body = bench.http("GET", f"http://{admin}/memory", timeout=5)
        out["envoy_heap_mib"] = int(json.loads(body)["allocated"]) / 2**20
    except (OSError, ValueError, KeyError):
        out["envoy_heap_mib"] = None
    return out


async def sampler(load, procs, admin, t0, every, samples, phase, stop):
    loop = asyncio.get_running_loop()
    while True:
        s = await loop.run_in_executor(None, sample, procs, admin)
        s.update({
            "t_s": round(time.monotonic() - t0, 1), "phase": phase[0], "inflight": load.inflight,
            "ok": sum(load.ok.values()), "errors": load.error_total(),
        })
        samples.append(s)
        dead = [n for n, p in procs.items() if not p.alive()]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited during the soak")
        try:
            await asyncio.wait_for(stop.wait(), every)
            return
        except asyncio.TimeoutError:
            pass


def cpu_mark(procs, t0):
    """Wall time since t0 and CPU seconds of Envoy, the sidecar and this process (the load generator)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out = {"t_s": time.monotonic() - t0, "loadgen_cpu_s": ru.ru_utime + ru.ru_stime}
    for name, p in procs.items():
        out[f"{name}_cpu_s"] = (bench.proc_sample(p.pid) or {}).get("cpu_s")
    return out


async def run_load(args, load, procs, admin):
    samples, phase, stop = [], ["streams"], asyncio.Event()
    t0 = time.monotonic()
    marks = {"start": cpu_mark(procs, t0)}
    sampling = asyncio.create_task(sampler(load, procs, admin, t0, args.sample_seconds, samples, phase, stop))
    deadline = t0 + args.minutes * 60
    clients = asyncio.gather(*(
        stream_client(load, i, args.streams, args.ramp_seconds, deadline, args.seed * 1_000_003 + i)
        for i in range(args.streams)
    ))
    # The sampler raises when a process exits: the load stops then.
    await asyncio.wait([clients, sampling], return_when=asyncio.FIRST_COMPLETED)
    marks["streams_end"] = cpu_mark(procs, t0)
    seq = None
    if clients.done() and not sampling.done():
        phase[0] = "sequential"
        seq = asyncio.create_task(sequential_client(load, args.sequential, args.seed))
        await asyncio.wait([seq, sampling], return_when=asyncio.FIRST_COMPLETED)
        marks["sequential_end"] = cpu_mark(procs, t0)
        if not sampling.done():
            await asyncio.sleep(args.sample_seconds)  # one more sample after the last request
    stop.set()
    failure = None
    try:
        await sampling
    except RuntimeError as e:
        failure = str(e)
    for task in (clients, seq):
        if task is None:
            continue
        if not task.done():
            task.cancel()
        elif task.exception():
            failure = failure or f"the load generator failed: {task.exception()!r}"
    return samples, marks, failure


# --------------------------------------------------------------- analysis

CHECKED = [
    # key, label, unit
    ("envoy_rss_mib", "Envoy RSS", "MiB"),
    ("envoy_fds", "Envoy open fds", ""),
    ("wasm_linear_mib", "wasm VMs' linear memory (sum)", "MiB"),
    ("sidecar_rss_mib", "sidecar RSS", "MiB"),
    ("sidecar_fds", "sidecar open fds", ""),
]
SHOWN = [
    ("envoy_heap_mib", "Envoy heap (admin /memory, allocated)", "MiB"),
    ("wasm_resident_mib", "wasm VMs' linear memory, resident", "MiB"),
]


def analyse(samples, settle_s, tolerance_pct):
    """Per quantity: the first sample at or after `settle_s` (the reference),
    the largest from there to the end, and whether it stays within tolerance."""
    after = [s for s in samples if s["t_s"] >= settle_s]
    rows = []
    for key, label, unit in CHECKED + SHOWN:
        vals = [s[key] for s in after if s.get(key) is not None]
        first = next((s[key] for s in samples if s.get(key) is not None), None)
        row = {"key": key, "label": label, "unit": unit, "checked": (key, label, unit) in CHECKED,
               "start": first, "reference": vals[0] if vals else None,
               "max_after": max(vals) if vals else None, "end": vals[-1] if vals else None}
        streams = [s[key] for s in after if s["phase"] == "streams" and s.get(key) is not None]
        row["end_of_streams"] = streams[-1] if streams else None
        if vals and vals[0]:
            row["growth_pct"] = 100.0 * (max(vals) - vals[0]) / vals[0]
            row["ok"] = row["growth_pct"] <= tolerance_pct
        else:
            row["growth_pct"], row["ok"] = None, None
        rows.append(row)
    return rows


def cpu_pct(a, b, name):
    """CPU of `name` between two marks, in % of one core."""
    if not a or not b or a.get(f"{name}_cpu_s") is None or b.get(f"{name}_cpu_s") is None or b["t_s"] <= a["t_s"]:
        return None
    return 100.0 * (b[f"{name}_cpu_s"] - a[f"{name}_cpu_s"]) / (b["t_s"] - a["t_s"])


def pctl(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def fmt(v, nd=1):
    return bench.fmt(v, nd)


def dur(seconds):
    if seconds is None:
        return "–"
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


def markdown(res):
    s, m = res["settings"], res["machine"]
    L = ["# Tollgate soak\n"]
    L.append(
        f"Run {res['started']} ({res['wall_time_s'] / 60:.1f} min wall){' — **quick run**' if s['quick'] else ''}. "
        f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['mem_gib']} GiB, Linux {m['kernel']}; load average "
        f"{m.get('loadavg_at_start', '?')} at the start, {m.get('loadavg_at_end', '?')} at the end. "
        f"{res['versions']['envoy']} (`--concurrency {s['envoy_concurrency']}`); tollgate {res['versions']['git']}.\n"
    )
    L.append(
        f"Full stack: Envoy, the wasm filter (PII masking, prompt firewall, output guard: the default inspection), "
        f"the sidecar (audit on), the mock provider ({s['mock_latency_ms']} ms before the first byte, "
        f"{s['chunk_delay_ms']} ms between SSE chunks). Load: {s['streams']:,} clients each streaming requests back "
        f"to back on one connection for {s['minutes']:g} min (started over {s['ramp_seconds']:g} s), then "
        f"{s['sequential']:,} sequential requests on one connection, streamed and non-streamed in turn, without "
        f"delays. Samples every {s['sample_seconds']:g} s.\n"
    )
    L.append("## Check\n")
    L.append(
        f"Reference: the first sample at or after minute {s['settle_minutes']:g} of the load "
        f"(t = {fmt(res['reference_t_s'], 0)} s). Growth: the largest sample from there to the end of the run "
        f"(both phases) over the reference; at most {s['tolerance_pct']:g} % passes.\n"
    )
    L.append("| quantity | at start | reference | end of streams | max after reference | end of run | growth | verdict |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in res["memory"]:
        nd = 1 if r["unit"] else 0
        label = f"{r['label']} ({r['unit']})" if r["unit"] else r["label"]
        growth = "–" if r["growth_pct"] is None else f"{r['growth_pct']:+.1f} %"
        if not r["checked"]:
            verdict = "(shown)"
        else:
            verdict = "no data" if r["ok"] is None else ("**pass**" if r["ok"] else "**fail**")
        L.append(
            f"| {label} | {fmt(r['start'], nd)} | {fmt(r['reference'], nd)} | {fmt(r['end_of_streams'], nd)} "
            f"| {fmt(r['max_after'], nd)} | {fmt(r['end'], nd)} | {growth} | {verdict} |"
        )
    L.append("\n## Load\n")
    L.append("| phase | requests answered as expected | errors | req/s | duration p50 | p99 | max "
             "| Envoy CPU | sidecar CPU | load generator CPU |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for ph in ("streams", "sequential"):
        p = res["phases"].get(ph) or {}
        d = p.get("duration_s") or {}
        L.append(
            f"| {ph} | {p.get('ok', 0):,} | {p.get('errors', 0):,} | {fmt(p.get('rps'), 1)} "
            f"| {dur(d.get('p50'))} | {dur(d.get('p99'))} | {dur(d.get('max'))} "
            f"| {fmt(p.get('envoy_cpu_pct'), 0)} % | {fmt(p.get('sidecar_cpu_pct'), 0)} % "
            f"| {fmt(p.get('loadgen_cpu_pct'), 0)} % |"
        )
    L.append("\nCPU in % of one core over the phase.")
    if res["error_kinds"]:
        L.append("\nErrors by kind: " + "; ".join(f"{k} ({ph}): {n:,}" for (ph, k), n in res["error_kinds"]) + ".")
    ins = res.get("inspection") or {}
    if ins:
        L.append(
            "\nThe filter's counters over the run (Envoy stats): "
            + ", ".join(f"`{k}` {v:+,}" for k, v in ins.items()) + "."
        )
    if res.get("pii_at_mock") is not None:
        L.append(
            f"\nThe last {res['mock_records']} requests the mock recorded hold "
            f"{res['pii_at_mock']} of the prompts' e-mail addresses and phone numbers in clear."
        )
    a = res.get("audit") or {}
    L.append(f"\nThe audit log holds {a.get('records', 0):,} records with {a.get('distinct_ids', 0):,} distinct "
             f"request ids, for {sum(p.get('ok', 0) for p in res['phases'].values()):,} requests answered as expected.")
    if res["problems"]:
        L.append("\n## Problems\n")
        L.extend(f"- {p}" for p in res["problems"])
    L.append(f"\nVerdict: **{'pass' if not res['problems'] else 'fail'}**.")
    rel = {k: os.path.relpath(v, ROOT) for k, v in res["files"].items()}
    L.append(f"\nCurves: `{rel['svg']}`; every sample: `{rel['json']}`.\n")
    return "\n".join(L)


def plot(res):
    samples = res["samples"]
    by = {r["key"]: r for r in res["memory"]}

    def series(key):
        return [(s["t_s"] / 60, s.get(key)) for s in samples]

    def limit(key):
        r = by.get(key) or {}
        ref = r.get("reference")
        return ref * (1 + res["settings"]["tolerance_pct"] / 100) if ref else None

    panels = [
        {"title": "Envoy RSS and heap", "unit": "MiB", "limit": limit("envoy_rss_mib"),
         "series": {"RSS": series("envoy_rss_mib"), "heap (/memory allocated)": series("envoy_heap_mib")}},
        {"title": "wasm VMs' linear memory (all VMs)", "unit": "MiB", "limit": limit("wasm_linear_mib"),
         "series": {"size": series("wasm_linear_mib"), "resident": series("wasm_resident_mib")}},
        {"title": "Envoy open file descriptors", "unit": "fds", "limit": limit("envoy_fds"),
         "series": {"Envoy": series("envoy_fds")}},
        {"title": "sidecar RSS", "unit": "MiB", "limit": limit("sidecar_rss_mib"),
         "series": {"sidecar": series("sidecar_rss_mib")}},
        {"title": "sidecar open file descriptors", "unit": "fds", "limit": limit("sidecar_fds"),
         "series": {"sidecar": series("sidecar_fds")}},
        {"title": "requests in flight", "unit": "requests", "series": {"in flight": series("inflight")}},
    ]
    s = res["settings"]
    markers = [(s["settle_minutes"], f"reference (min {s['settle_minutes']:g})")]
    if res["marks"].get("streams_end"):
        markers.append((res["marks"]["streams_end"]["t_s"] / 60, "sequential"))
    return svgplot.render_time_series(
        panels,
        "Tollgate soak: memory and file descriptors of the full stack under load",
        f"{s['streams']:,} concurrent streams for {s['minutes']:g} min, then {s['sequential']:,} sequential requests; "
        f"sampled every {s['sample_seconds']:g} s; dashed red: reference + {s['tolerance_pct']:g} %; "
        f"{res['machine']['nproc']} CPUs, {res['started']}",
        markers=markers,
    )


# -------------------------------------------------------------------- main


def audit_records(audit_dir):
    """How many records the sidecar's audit log holds, and how many distinct request ids."""
    records, ids = 0, set()
    for seg in sorted(Path(audit_dir).glob("audit-*.jsonl")):
        with open(seg) as f:
            for line in f:
                if line.strip():
                    records += 1
                    ids.add(json.loads(line).get("requestId"))
    return {"records": records, "distinct_ids": len(ids)}


def envoy_counters(admin):
    try:
        _, _, body = bench.http("GET", f"http://{admin}/stats?filter=^wasmcustom%5C.tollgate", timeout=5)
    except OSError:
        return {}
    out = {}
    for line in body.decode().splitlines():
        k, _, v = line.partition(": ")
        if v.strip().isdigit():
            out[k.removeprefix("wasmcustom.")] = int(v)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="a short run: 2 minutes, 200 streams, 1,000 sequential requests, reference at minute 1")
    ap.add_argument("--minutes", type=float, default=None, help="length of the streaming phase (default 10)")
    ap.add_argument("--streams", type=int, default=None, help="concurrent streaming clients (default 1,000)")
    ap.add_argument("--sequential", type=int, default=None, help="sequential requests after the streams (default 10,000)")
    ap.add_argument("--settle-minutes", type=float, default=None,
                    help="minute of the load whose sample is the reference of the growth check (default 2)")
    ap.add_argument("--tolerance", type=float, default=5.0, help="largest growth allowed after the reference, %%")
    ap.add_argument("--sample-seconds", type=float, default=5.0)
    ap.add_argument("--ramp-seconds", type=float, default=None, help="the streaming clients start over this time "
                    "(default 20)")
    ap.add_argument("--chunk-delay-ms", type=int, default=250, help="the mock's delay between SSE chunks")
    ap.add_argument("--mock-latency-ms", type=int, default=20, help="the mock's delay before the first byte")
    ap.add_argument("--timeout", type=float, default=120.0, help="a request not answered in this time is an error, s")
    ap.add_argument("--envoy-concurrency", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tollgate", default=str(ROOT / "target/release/tollgate"))
    ap.add_argument("--wasm", default=str(ROOT / "target/wasm32-wasip1/wasm-release/tollgate_filter.wasm"))
    ap.add_argument("--envoy", default=None, help="default: $TOLLGATE_ENVOY, ~/.tollgate/venv/bin/envoy, PATH")
    ap.add_argument("--out", default=str(ROOT / "target/soak"))
    args = ap.parse_args()
    quick = {"minutes": 2, "streams": 200, "sequential": 1000, "settle_minutes": 1, "ramp_seconds": 10}
    full = {"minutes": 10, "streams": 1000, "sequential": 10000, "settle_minutes": 2, "ramp_seconds": 20}
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.settle_minutes >= args.minutes:
        sys.exit(f"soak: the reference (minute {args.settle_minutes:g}) must fall inside the {args.minutes:g}-minute "
                 "streaming phase (--settle-minutes, --minutes)")

    envoy = bench.find_envoy(args.envoy or os.environ.get("TOLLGATE_ENVOY"))
    for name, path in (("tollgate", args.tollgate), ("wasm filter", args.wasm), ("envoy", envoy)):
        if not path or not (Path(path).is_file() or shutil.which(path)):
            sys.exit(f"soak: no {name} at {path!r}: run scripts/soak.sh (it builds what is missing)")
    # A connection per client, on each side of Envoy: raise the soft limit
    # (Envoy and the sidecar inherit it).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * args.streams + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY else want, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 2 * args.streams + 256:
        sys.exit(f"soak: the open-file limit ({hard}) is too low for {args.streams} streams")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    files = {k: str(out / f"soak.{k}") for k in ("md", "json", "svg")}
    names = ["listen", "admin", "grpc", "sidecar_admin", "mock"]
    ports = dict(zip(names, bench.free_ports(len(names))))
    policy = work / "policy.yaml"
    policy.write_text(bench.policy_text(ports, audit=True, inspection_off=False))
    bench.run_tool([args.tollgate, "check", "--policy", policy], "tollgate check")
    bootstrap = work / "envoy.yaml"
    bench.run_tool([args.tollgate, "render", "envoy", "--policy", policy, "--wasm", args.wasm,
                    "--access-log", "/dev/null", "--out", bootstrap], "tollgate render envoy")
    admin = f"127.0.0.1:{ports['admin']}"
    res = {
        "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": bench.machine_info(),
        "versions": {
            "envoy": "Envoy " + (re.search(r"/(\d+\.\d+\.\d+)/", bench.version([envoy, "--version"]) or "")
                                 or [None, "?"])[1],
            "git": bench.version(["git", "-C", ROOT, "describe", "--always", "--dirty"]),
        },
        "settings": {
            "quick": args.quick, "minutes": args.minutes, "streams": args.streams, "sequential": args.sequential,
            "settle_minutes": args.settle_minutes, "tolerance_pct": args.tolerance,
            "sample_seconds": args.sample_seconds, "ramp_seconds": args.ramp_seconds,
            "chunk_delay_ms": args.chunk_delay_ms, "mock_latency_ms": args.mock_latency_ms,
            "timeout_s": args.timeout, "envoy_concurrency": args.envoy_concurrency, "seed": args.seed,
        },
        "files": files,
    }
    t_start = time.time()
    load = Load("127.0.0.1", ports["listen"], "/v1/chat/completions", args.timeout)
    problems = []
    try:
        log = work / "components.log"
        mock = bench.Proc("mock", [args.tollgate, "mock", "--listen", f"127.0.0.1:{ports['mock']}",
                                   "--latency-ms", args.mock_latency_ms, "--chunk-delay-ms", args.chunk_delay_ms], log)
        bench.wait_ready(mock, f"http://127.0.0.1:{ports['mock']}/healthz")
        # The audit log goes next to the policy (work/), removed with it.
        sidecar = bench.Proc("sidecar", [args.tollgate, "serve", "--policy", policy], work / "sidecar.log")
        bench.wait_ready(sidecar, f"http://127.0.0.1:{ports['sidecar_admin']}/healthz")
        envoy_p = bench.Proc("envoy", [envoy, "-c", bootstrap, "--concurrency", args.envoy_concurrency,
                                       "--log-level", "warn", "--disable-hot-restart"], work / "envoy.log")
        bench.wait_ready(envoy_p, f"http://{admin}/ready")
        procs = {"envoy": envoy_p, "sidecar": sidecar}
        counters0 = envoy_counters(admin)
        print(f"soak: {args.streams:,} streams for {args.minutes:g} min, then {args.sequential:,} sequential "
              f"requests; writing {out}", file=sys.stderr, flush=True)

        async def with_progress():
            async def progress():
                while True:
                    await asyncio.sleep(30)
                    print(f"soak: {sum(load.ok.values()):,} answered, {load.error_total():,} errors, "
                          f"{load.inflight:,} in flight", file=sys.stderr, flush=True)
            p = asyncio.create_task(progress())
            try:
                return await run_load(args, load, procs, admin)
            finally:
                p.cancel()

        samples, marks, failure = asyncio.run(with_progress())
        counters1 = envoy_counters(admin)
        if failure:
            problems.append(failure)
        try:
            _, _, body = bench.http("GET", f"http://127.0.0.1:{ports['mock']}/mock/requests", timeout=10)
            recorded = json.loads(body)
            res["mock_records"] = len(recorded)
            res["pii_at_mock"] = sum(1 for r in recorded for v in load.pii if v in r.get("body", ""))
        except (OSError, ValueError):
            res["mock_records"], res["pii_at_mock"] = 0, None
    finally:
        bench.stop_all()
    res["audit"] = audit_records(work / "audit")

    res["wall_time_s"] = round(time.time() - t_start, 1)
    res["machine"]["loadavg_at_end"] = bench._loadavg()
    settle_s = args.settle_minutes * 60
    res["samples"], res["marks"] = samples, marks
    res["memory"] = analyse(samples, settle_s, args.tolerance)
    ref = next((s for s in samples if s["t_s"] >= settle_s), None)
    res["reference_t_s"] = ref["t_s"] if ref else None
    res["phases"] = {}
    for ph, (a, b) in {"streams": ("start", "streams_end"), "sequential": ("streams_end", "sequential_end")}.items():
        a, b = marks.get(a), marks.get(b)
        span = b["t_s"] - a["t_s"] if a and b else None
        d = load.durations.get(ph) or []
        n = load.ok[ph] + sum(load.errors[ph].values())
        res["phases"][ph] = {
            "ok": load.ok[ph], "errors": sum(load.errors[ph].values()), "seconds": span,
            "rps": n / span if span else None,
            "duration_s": {"p50": pctl(d, 50), "p99": pctl(d, 99), "max": max(d) if d else None,
                           "mean": statistics.fmean(d) if d else None},
            **{f"{name}_cpu_pct": cpu_pct(a, b, name) for name in ("envoy", "sidecar", "loadgen")},
        }
    res["error_kinds"] = sorted(((ph, k), n) for ph, c in load.errors.items() for k, n in c.items())
    res["error_examples"] = load.examples
    res["inspection"] = {k: counters1[k] - counters0.get(k, 0) for k in sorted(counters1)
                         if counters1[k] - counters0.get(k, 0)}

    for r in res["memory"]:
        nd = 1 if r["unit"] else 0
        if r["checked"] and r["ok"] is False:
            problems.append(f"{r['label']} grew {r['growth_pct']:+.1f} % after minute {args.settle_minutes:g} "
                            f"({fmt(r['reference'], nd)} → {fmt(r['max_after'], nd)}), more than {args.tolerance:g} %")
        if r["checked"] and r["ok"] is None:
            problems.append(f"{r['label']}: no sample after minute {args.settle_minutes:g}")
    if load.error_total():
        problems.append(f"{load.error_total():,} requests failed: "
                        + "; ".join(f"{k}: {n:,}" for (_, k), n in res["error_kinds"]))
    if not load.ok["streams"] or (args.sequential and not load.ok["sequential"]):
        problems.append("a phase answered no request")
    if res.get("pii_at_mock"):
        problems.append(f"the mock received {res['pii_at_mock']} PII values in clear")
    answered = sum(load.ok.values())
    if res["audit"]["records"] < answered or res["audit"]["distinct_ids"] != res["audit"]["records"]:
        problems.append(f"{answered:,} requests answered, {res['audit']['records']:,} audit records with "
                        f"{res['audit']['distinct_ids']:,} distinct request ids")
    res["problems"] = problems
    res["error_kinds"] = [[list(k), n] for k, n in res["error_kinds"]]
    Path(files["json"]).write_text(json.dumps(res, indent=1) + "\n")
    res["error_kinds"] = [(tuple(k), n) for k, n in res["error_kinds"]]
    Path(files["svg"]).write_text(plot(res))
    md = markdown(res)
    Path(files["md"]).write_text(md)
    print(md)
    print(f"soak: wrote {files['md']}, {files['json']}, {files['svg']} in {res['wall_time_s'] / 60:.1f} min",
          file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        bench.stop_all()
        sys.exit(130)
