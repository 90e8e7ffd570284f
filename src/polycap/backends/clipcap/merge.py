"""Merge clipcap model folders that share an encoder and a frozen LM into one multilingual folder.

Prefix adapters are per language and the LM is frozen (``mode: mapper``), so adapters trained in
separate runs (say en in one session, de/ar/fr in the next) combine without retraining: the merged
folder holds every adapter, the union of the languages, each language's prompt and output vocabulary.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

from polycap.backends.clipcap.config import ClipCapConfig, read_output_vocab
from polycap.errors import PolycapError

# what every merged folder must agree on: the same image features, mapper shape and LM
SHARED = ("encoder", "features", "feature_dim", "mapper", "lm", "lm_width", "output_vocab")


def merge_folders(folders: list[str | Path], out: str | Path, name: str | None = None) -> ClipCapConfig:
    """Write one model folder at ``out`` holding every adapter of ``folders``; returns its config."""
    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise PolycapError("merging needs at least two clipcap model folders")
    cfgs = [ClipCapConfig.load(f) for f in folders]
    first = cfgs[0]
    langs: list[str] = []
    for f, c in zip(folders, cfgs):
        if c.mode != "mapper":
            raise PolycapError(f"{f}: only adapters over a frozen LM (mode: mapper) can be merged; "
                               f"this one is {c.mode}")
        for key in SHARED:
            if getattr(c, key) != getattr(first, key):
                raise PolycapError(f"{f} differs from {folders[0]} in {key!r}: "
                                   f"{getattr(c, key)!r} vs {getattr(first, key)!r}")
        dup = sorted(set(langs) & set(c.languages))
        if dup:
            raise PolycapError(f"{f}: language(s) {', '.join(dup)} are in more than one folder")
        langs += c.languages
    prompts = {lang: c.prompt_for(lang) for c in cfgs for lang in c.languages}
    merged = replace(
        first, name=name or first.name, languages=langs,
        prompt={k: v for k, v in prompts.items() if v} or None,
        max_length=max(c.max_length for c in cfgs),
        model_card={"merged_from": [str(f) for f in folders], "sources": [asdict(c)["model_card"] for c in cfgs]},
    )
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise PolycapError(f"{out} exists and is not empty")
    (out / "adapters").mkdir(parents=True, exist_ok=True)
    vocab: dict[str, list[int]] = {}
    for f, c in zip(folders, cfgs):
        for lang in c.languages:
            src = f / "adapters" / f"{lang}.safetensors"
            if not src.is_file():
                raise PolycapError(f"{f} has no adapter for {lang!r} ({src.name} missing in adapters/)")
            shutil.copyfile(src, out / "adapters" / src.name)
        if c.output_vocab == "captions":
            vocab.update(read_output_vocab(f, c.languages))
    if vocab:
        (out / "output_vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    merged.save(out)
    return merged
