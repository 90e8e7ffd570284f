"""The caption manifest: polycap's one data format (JSON Lines, one image per line).

``{"image": "<path relative to the manifest>", "split": "train", "captions": {"en": [...], "de": [...]}}``
Training, fine-tuning and evaluation all read it through :func:`read_manifest`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from polycap.errors import PolycapError


@dataclass
class ManifestItem:
    key: str  # the "image" field as written in the manifest: the item's stable id
    image: Path  # absolute path, resolved against the manifest's folder
    split: str | None = None
    captions: dict[str, list[str]] = field(default_factory=dict)


def read_manifest(path: str | Path, split: str | None = None, langs: list[str] | None = None) -> list[ManifestItem]:
    """Read a manifest; keep only ``split`` when given, and only ``langs`` in ``captions``.

    Malformed lines raise a :class:`PolycapError` naming the file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise PolycapError(f"manifest not found: {path}")
    root = path.resolve().parent
    items: list[ManifestItem] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
                key = rec["image"]
                caps = rec.get("captions") or {}
                if not isinstance(key, str) or not isinstance(caps, dict):
                    raise TypeError("'image' must be a string and 'captions' an object")
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise PolycapError(f"{path}:{lineno}: bad manifest line ({e})") from e
            if split is not None and rec.get("split") != split:
                continue
            if langs is not None:
                caps = {k: v for k, v in caps.items() if k in langs}
            items.append(
                ManifestItem(
                    key=key,
                    image=(root / key).resolve() if not Path(key).is_absolute() else Path(key),
                    split=rec.get("split"),
                    captions={k: [str(c) for c in v] for k, v in caps.items()},
                )
            )
    return items


def write_subset(path: str | Path, dest: str | Path, counts: dict[str, int]) -> Path:
    """Write the first ``counts[split]`` items of each split of manifest ``path`` to ``dest``, with
    absolute image paths so ``dest`` can live anywhere (smoke runs, tests, step-time benches)."""
    items = read_manifest(path)
    dest = Path(dest)
    with dest.open("w", encoding="utf-8") as f:
        for split, n in counts.items():
            for it in [it for it in items if it.split == split][:n]:
                rec = {"image": str(it.image), "split": split, "captions": it.captions}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return dest
