#!/usr/bin/env python3
"""Summarize criterion results as ratios to a same-run baseline.

Reads <criterion>/**/new/{benchmark,estimates}.json (written by `cargo bench`)
and writes micro.md and micro.json into --out: per benchmark its median time
(micro.json also has criterion's 95% interval of the median),
MB/s (10^6 bytes/s) when the group set a byte throughput, and its median
divided by the median of its group's baseline row (the benchmark whose name
starts with `baseline`). Only results written at or after --since (epoch
seconds) are used, so stale runs and other benches' groups are left out.

    python3 scripts/microbench_report.py --since 1700000000
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


def load(criterion: Path, since: float):
    """One dict per benchmark run since `since`."""
    rows = []
    for bench_json in criterion.glob("**/new/benchmark.json"):
        est_json = bench_json.with_name("estimates.json")
        if not est_json.exists() or est_json.stat().st_mtime < since:
            continue
        bench = json.loads(bench_json.read_text())
        est = json.loads(est_json.read_text())
        throughput = bench.get("throughput") or {}
        name = bench.get("function_id") or bench.get("full_id", "?")
        if bench.get("value_str"):
            name += "/" + bench["value_str"]
        rows.append(
            {
                "group": bench.get("group_id", "?"),
                "bench": name,
                "median_ns": est["median"]["point_estimate"],
                "median_ci_ns": [
                    est["median"]["confidence_interval"]["lower_bound"],
                    est["median"]["confidence_interval"]["upper_bound"],
                ],
                "bytes": throughput.get("Bytes") or throughput.get("BytesDecimal"),
                "mtime": est_json.stat().st_mtime,
            }
        )
    return rows


def summarize(rows):
    """Groups in the order they ran, each with its rows and their ratios."""
    groups = {}
    for r in sorted(rows, key=lambda r: r["mtime"]):
        groups.setdefault(r["group"], []).append(r)
    out = []
    for name, items in groups.items():
        base = next((r for r in items if r["bench"].startswith("baseline")), None)
        entries = []
        for r in items:
            mbps = r["bytes"] / (r["median_ns"] * 1e-9) / 1e6 if r["bytes"] and r["median_ns"] > 0 else None
            ratio = r["median_ns"] / base["median_ns"] if base and base["median_ns"] > 0 else None
            entries.append(
                {
                    "bench": r["bench"],
                    "median_ns": round(r["median_ns"], 1),
                    "median_ci95_ns": [round(x, 1) for x in r["median_ci_ns"]],
                    "bytes": r["bytes"],
                    "mb_per_s": round(mbps, 1) if mbps is not None else None,
                    "ratio": round(ratio, 2) if ratio is not None else None,
                }
            )
        out.append({"group": name, "baseline": base["bench"] if base else None, "rows": entries})
    return out


def fmt_time(ns: float) -> str:
    if ns < 1e3:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.2f} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


def machine():
    info = {"cpus": os.cpu_count(), "platform": platform.platform()}
    try:
        info["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def render(groups, info) -> str:
    load = " / ".join(str(x) for x in info.get("load_avg", []))
    lines = [
        "# Micro-benchmarks",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {info['cpus']} CPUs, load average {load or '?'} at the end; "
        f"{info['platform']}.",
        "",
        "Median per call; MB/s = 10^6 bytes/s of the group's input; "
        "**× baseline** = median / median of the group's `baseline*` row, measured in the same run.",
        "",
        "| group | benchmark | median | MB/s | × baseline |",
        "|---|---|--:|--:|--:|",
    ]
    for g in groups:
        for i, r in enumerate(g["rows"]):
            mbps = f"{r['mb_per_s']:,.1f}" if r["mb_per_s"] is not None else ""
            ratio = f"{r['ratio']:,.2f}" if r["ratio"] is not None else ""
            bench = f"*{r['bench']}*" if r["bench"] == g["baseline"] else r["bench"]
            group = f"`{g['group']}`" if i == 0 else ""
            lines.append(f"| {group} | {bench} | {fmt_time(r['median_ns'])} | {mbps} | {ratio} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--criterion", default="target/criterion", help="criterion's output directory")
    p.add_argument("--since", type=float, default=0.0, help="ignore results older than this (epoch seconds)")
    p.add_argument("--out", default="target/bench", help="where micro.md and micro.json go")
    a = p.parse_args()

    rows = load(Path(a.criterion), a.since)
    if not rows:
        sys.exit(f"no criterion results in {a.criterion} since {a.since:.0f}")
    groups = summarize(rows)
    info = machine()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    md = render(groups, info)
    (out / "micro.md").write_text(md)
    (out / "micro.json").write_text(json.dumps({"machine": info, "groups": groups}, indent=2) + "\n")
    sys.stdout.write(md)
    print(f"\nwrote {out / 'micro.md'} and {out / 'micro.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
