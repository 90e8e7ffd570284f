"""Human leave-one-out agreement on the val split, per language; prints JSON.

python bench/human_agreement.py [--data ../shared/data/flickr8k/captions.jsonl] [--no-meteor]

For each language, every image with at least two references takes part.  In round j, each
image's j-th reference is the "prediction" and its other references are the references; the
round is scored like any system (``polycap.eval.metrics.score``) and the rounds are averaged.
English: 5 rounds of 1 caption vs 4; German: 6 rounds of 1 vs 5 (the 6th German caption is a
professional translation of an English one, the others independent); Arabic: 3 rounds of 1 vs 2.
This is the ceiling a captioner can hope to reach against *fewer* references than the full
set, so compare systems with it only at the same reference count (``max_refs``).
French and Czech have one reference per image: not applicable.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from polycap.data.manifest import read_manifest
from polycap.eval.metrics import METRICS, score_report

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flickr8k" / "captions.jsonl"


def leave_one_out(refs: dict[str, list[str]], lang: str, metrics: list[str]) -> dict:
    """Average of the rounds' scores; METEOR's configuration note comes along."""
    n_refs = min(len(v) for v in refs.values())
    rounds, notes = [], {}
    for j in range(n_refs):
        preds = {k: v[j] for k, v in refs.items()}
        others = {k: v[:j] + v[j + 1 :] for k, v in refs.items()}
        report = score_report(others, preds, metrics=metrics, lang=lang)
        rounds.append(report.scores)
        notes.update({k: v for k, v in report.notes.items() if k in ("METEOR", "tokenizer")})
    averaged = {}
    for m in metrics:
        values = [r[m] for r in rounds]
        averaged[m] = None if any(v is None for v in values) else round(sum(values) / len(values), 4)
    return {
        "n_images": len(refs),
        "n_refs_per_image": n_refs - 1,
        "rounds": n_refs,
        "metrics": averaged,
        "notes": notes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--split", default="val")
    ap.add_argument("--langs", default="en,de,ar,fr,cs")
    ap.add_argument("--no-meteor", action="store_true", help="skip METEOR (Java)")
    args = ap.parse_args()
    metrics = [m for m in METRICS if not (args.no_meteor and m == "METEOR")]
    items = read_manifest(args.data, split=args.split)
    languages = {}
    for lang in args.langs.split(","):
        refs = {it.key: it.captions[lang] for it in items if len(it.captions.get(lang, [])) >= 2}
        if not refs:
            n_one = sum(1 for it in items if len(it.captions.get(lang, [])) == 1)
            languages[lang] = {
                "n_images": n_one,
                "n_refs_per_image": 1 if n_one else 0,
                "metrics": None,
                "not_applicable": "one reference per image: nothing to leave one out against",
            }
            continue
        if len({len(v) for v in refs.values()}) > 1:  # keep rounds comparable: same count per image
            n = min(len(v) for v in refs.values())
            refs = {k: v[:n] for k, v in refs.items()}
        languages[lang] = leave_one_out(refs, lang, metrics)
    print(json.dumps({"split": args.split, "languages": languages}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
