#!/usr/bin/env python3
"""Measure the PII scanner's structured detectors on labelled generated text.

Sentences come from the templates of Microsoft Presidio's evaluation toolkit
(presidio-evaluator's data_generator/raw_data/templates.txt, MIT; read as a data file,
nothing from the package is imported). Their {{slots}} are filled with Faker (MIT) values
for the en_US, en_GB and de_DE locales from a fixed seed, and every value inserted for a
measured type is labelled with its exact byte span. All texts go through ONE
`tollgate scan --pii --jsonl` process (the default policy); per type, recall is the share
of labelled values some finding of that type overlaps, precision the share of findings of
that type that overlap a labelled value of that type. Writes target/eval/pii-quality-<seed>.json.

It never changes the scanner: it only reads its findings.

Usage: pii_quality.py --tollgate PATH [--seed S] [--per-type N] [--base-reps N] [--out FILE]
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import re
import statistics
import sys
from pathlib import Path

from eval_common import pkg_dir, pkg_version, scan_jsonl

LOCALES = ("en_US", "en_GB", "de_DE")
TEMPLATES = Path("data_generator") / "raw_data" / "templates.txt"

# Template slot -> the scanner's entity type (Presidio's names).
MEASURED = {
    "email": "EMAIL_ADDRESS",
    "phone_number": "PHONE_NUMBER",
    "credit_card_number": "CREDIT_CARD",
    "ssn": "US_SSN",
    "iban": "IBAN_CODE",
    "ip_address": "IP_ADDRESS",
}
TYPES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS")
SLOT = re.compile(r"\{\{\s*([A-Za-z_0-9]+)\s*\}\}")


def load_templates(root: Path) -> list[str]:
    out = []
    for line in (root / TEMPLATES).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            # The file writes line breaks and commas of multi-line templates escaped.
            out.append(line.replace("\\n", "\n").replace("\\,", ","))
    return out


class Filler:
    """Values for one locale. Measured types come from Faker's providers for that locale;
    a US SSN always from en_US (the other locales' `ssn` is their own national number)."""

    def __init__(self, locale: str, seed: int):
        from faker import Faker

        self.f = Faker(locale)
        self.f.seed_instance(f"{seed}:{locale}")
        self.us = Faker("en_US")
        self.us.seed_instance(f"{seed}:{locale}:us")
        self.rng = random.Random(f"{seed}:{locale}:rng")
        self.locale = locale

    def measured(self, slot: str) -> tuple[str, str]:
        """The value and, for a card, the network Faker generated it for."""
        f = self.f
        if slot == "phone_number":
            # en_GB's phone_number() gives landlines only; a quarter are its mobile formats.
            if self.locale == "en_GB" and self.rng.random() < 0.25:
                return f.cellphone_number(), ""
            return f.phone_number(), ""
        if slot == "credit_card_number":
            # As credit_card_number() does: a card type drawn from Faker's list, then a number.
            from faker.providers.credit_card import Provider as Cards

            kind = f.random_element(list(Cards.credit_card_types))
            return f.credit_card_number(card_type=kind), Cards.credit_card_types[kind].name
        if slot == "email":
            return f.email(), ""
        if slot == "ssn":
            return self.us.ssn(), ""
        if slot == "iban":
            return f.iban(), ""
        if slot == "ip_address":
            return (f.ipv4(), "IPv4") if self.rng.random() < 0.5 else (f.ipv6(), "IPv6")
        raise KeyError(slot)

    def other(self, slot: str) -> str:
        """Unmeasured slots: names, places, dates, numbers: the text around the values."""
        f, rng = self.f, self.rng
        alias = {
            "person": "name", "organization": "company", "nation_woman": "country", "nation_plural": "country",
            "nationality": "country", "zipcode": "postcode", "state_abbr": "state_abbr",
        }
        name = alias.get(slot, slot)
        if name == "age":
            return str(rng.randint(18, 95))
        if name == "date_time":
            return f.date_time().strftime(rng.choice(["%Y-%m-%d %H:%M:%S", "%d.%m.%Y %H:%M", "%m/%d/%Y %I:%M %p"]))
        if name == "date_of_birth":
            return f.date_of_birth().strftime(rng.choice(["%Y-%m-%d", "%d.%m.%Y", "%m/%d/%Y", "%d %B %Y"]))
        if name == "us_driver_license":
            return self.us.bothify(rng.choice(["?#######", "#########", "?###-####-####"])).upper()
        for gen in (f, self.us):
            fn = getattr(gen, name, None)
            if callable(fn):
                v = fn()
                return v if isinstance(v, str) else str(v)
        return f.word()


def build_samples(seed: int, per_type: int, base_reps: int):
    """Every template filled base_reps times per locale; templates holding a rare type
    more often, so each measured type gets about per_type values. Returns samples with
    text and labels (type, start byte, end byte, value)."""
    templates = load_templates(pkg_dir("presidio_evaluator"))
    holders = collections.Counter()
    for t in templates:
        for ty in {MEASURED[s] for s in SLOT.findall(t) if s in MEASURED}:
            holders[ty] += 1
    samples = []
    for locale in LOCALES:
        filler = Filler(locale, seed)
        for ti, t in enumerate(templates):
            kinds = {MEASURED[s] for s in SLOT.findall(t) if s in MEASURED}
            reps = base_reps
            for ty in kinds:
                reps = max(reps, -(-per_type // (len(LOCALES) * holders[ty])))
            for r in range(reps):
                text, labels, pos = [], [], 0
                last = 0
                for m in SLOT.finditer(t):
                    lit = t[last:m.start()]
                    text.append(lit)
                    pos += len(lit.encode())
                    slot = m.group(1)
                    if slot in MEASURED:
                        v, sub = filler.measured(slot)
                        labels.append((MEASURED[slot], pos, pos + len(v.encode()), v, sub))
                    else:
                        v = filler.other(slot)
                    text.append(v)
                    pos += len(v.encode())
                    last = m.end()
                text.append(t[last:])
                samples.append(dict(id=f"{locale}:{ti}:{r}", locale=locale, template=ti, text="".join(text), labels=labels))
    return samples, len(templates)


def run_scan(tollgate: str, samples):
    results, elapsed, nbytes, _ = scan_jsonl([tollgate, "scan", "--pii", "--jsonl"], samples)
    return results, elapsed, nbytes


def overlaps(a, b):
    return a[0] < b[1] and b[0] < a[1]


def score(samples, results):
    per = {t: collections.Counter() for t in TYPES}
    by_sub = collections.defaultdict(collections.Counter)
    missed = collections.defaultdict(list)
    false_hits = collections.defaultdict(list)
    for s in samples:
        found = results[s["id"]]["pii"]
        text_b = s["text"].encode()
        for ty, a, b, v, sub in s["labels"]:
            c = per[ty]
            c["values"] += 1
            by_sub[f"{ty} {sub}".strip()]["values"] += 1
            same = [(f["start"], f["end"]) for f in found if f["type"] == ty and overlaps((a, b), (f["start"], f["end"]))]
            if same:
                c["found"] += 1
                by_sub[f"{ty} {sub}".strip()]["found"] += 1
                c["exact"] += (a, b) in same
            else:
                other = [f["type"] for f in found if overlaps((a, b), (f["start"], f["end"]))]
                missed[ty].append(dict(locale=s["locale"], value=v, kind=sub, as_type=other, text=s["text"]))
        for f in found:
            ty = f["type"]
            if ty not in per:
                continue
            span = (f["start"], f["end"])
            per[ty]["findings"] += 1
            if any(lt == ty and overlaps(span, (a, b)) for lt, a, b, _, _ in s["labels"]):
                per[ty]["true"] += 1
            else:
                under = [lt for lt, a, b, _, _ in s["labels"] if overlaps(span, (a, b))]
                false_hits[ty].append(dict(locale=s["locale"], found=text_b[span[0]:span[1]].decode(errors="replace"),
                                           label_there=under, text=s["text"]))
    return per, by_sub, missed, false_hits


def ratio(n, d):
    return round(n / d, 4) if d else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tollgate", required=True)
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--per-type", type=int, default=1500, help="about this many values of each measured type")
    ap.add_argument("--base-reps", type=int, default=10, help="fills of every template per locale")
    ap.add_argument("--out", default=None, help="default target/eval/pii-quality-<seed>.json")
    ap.add_argument("--examples", type=int, default=10)
    args = ap.parse_args()

    samples, n_templates = build_samples(args.seed, args.per_type, args.base_reps)
    results, elapsed, nbytes = run_scan(args.tollgate, samples)
    missing = [s["id"] for s in samples if s["id"] not in results]
    if missing:
        sys.exit(f"scanner returned nothing for {len(missing)} texts, e.g. {missing[:3]}")
    per, by_sub, missed, false_hits = score(samples, results)

    ns = [results[s["id"]]["ns"] for s in samples]
    kb = [len(s["text"].encode()) / 1024 for s in samples]
    ns_per_kb = sorted(n / k for n, k in zip(ns, kb) if k > 0)
    rng = random.Random(args.seed)

    def pick(items):
        return rng.sample(items, min(args.examples, len(items)))

    by_locale = {}
    for loc in LOCALES:
        sub = [s for s in samples if s["locale"] == loc]
        p, _, _, _ = score(sub, results)
        by_locale[loc] = {t: dict(recall=ratio(c["found"], c["values"]), precision=ratio(c["true"], c["findings"]),
                                  values=c["values"]) for t, c in p.items()}
    table = {t: dict(values=c["values"], found=c["found"], exact=c["exact"], findings=c["findings"], true=c["true"],
                     false_hits=c["findings"] - c["true"], recall=ratio(c["found"], c["values"]),
                     precision=ratio(c["true"], c["findings"]), exact_span=ratio(c["exact"], c["found"]))
             for t, c in per.items()}
    report = dict(
        data=dict(templates=f"presidio-evaluator=={pkg_version('presidio-evaluator')} {TEMPLATES}",
                  n_templates=n_templates, values=f"faker=={pkg_version('faker')}", locales=list(LOCALES),
                  texts=len(samples), bytes=nbytes),
        seed=args.seed, per_type=args.per_type, base_reps=args.base_reps,
        table=table, by_locale=by_locale,
        recall_by_kind={k: dict(values=c["values"], recall=ratio(c["found"], c["values"])) for k, c in sorted(by_sub.items())},
        latency=dict(mean_us=round(statistics.mean(ns) / 1000, 2), p50_us=round(statistics.median(ns) / 1000, 2),
                     p99_us=round(sorted(ns)[int(0.99 * (len(ns) - 1))] / 1000, 2),
                     mean_text_bytes=round(nbytes / len(samples)), us_per_kb_median=round(ns_per_kb[len(ns_per_kb) // 2] / 1000, 2),
                     wall_s=round(elapsed, 3)),
        examples=dict(missed={t: pick(v) for t, v in missed.items()}, false_hits={t: pick(v) for t, v in false_hits.items()}),
    )
    out = Path(args.out or f"target/eval/pii-quality-{args.seed}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    p = print
    p(f"PII detection quality (default policy), seed {args.seed}")
    p(f"  data: {report['data']['templates']} ({n_templates} templates), {report['data']['values']} "
      f"({', '.join(LOCALES)}); {len(samples)} texts, {nbytes / 1e6:.2f} MB")
    p("")
    p("  | type          | values | recall | precision | false hits | exact span |")
    p("  |---------------|-------:|-------:|----------:|-----------:|-----------:|")
    for t in TYPES:
        r = table[t]
        p(f"  | {t:<13} | {r['values']:>6} | {r['recall']:.4f} | {r['precision'] if r['precision'] is not None else 0:.4f}"
          f"    | {r['false_hits']:>10} | {r['exact_span'] or 0:>10.4f} |")
    L = report["latency"]
    p(f"\n  latency of PiiScanner::find per text (native, one process): mean {L['mean_us']} µs, "
      f"p50 {L['p50_us']} µs, p99 {L['p99_us']} µs; texts average {L['mean_text_bytes']} B, "
      f"median {L['us_per_kb_median']} µs per KB")
    p("\n  recall by locale        " + "  ".join(f"{t.split('_')[0][:6]:>6}" for t in TYPES))
    for loc in LOCALES:
        p(f"    {loc:<20} " + "  ".join(f"{(by_locale[loc][t]['recall'] or 0):>6.3f}" for t in TYPES))
    p("\n  card recall by the network Faker generated for")
    for k, c in sorted(by_sub.items()):
        if k.startswith("CREDIT_CARD "):
            p(f"    {k[len('CREDIT_CARD '):]:<28} {c['values']:>5}  {c['found'] / c['values']:.3f}")
    p(f"\n  details and examples: {out}")


if __name__ == "__main__":
    main()
