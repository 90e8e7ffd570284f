"""Training samples over cached encoder features, batched by image.

A unit is one image with up to ``per_image`` of its captions (any language). A batch of units
computes the image memory once per image and repeats it for that image's captions, which is
4x less projection work than one row per caption at the same number of captions per step.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch

from polycap.backends.native.tokenizer import CaptionTokenizer
from polycap.data.manifest import ManifestItem


@dataclass
class Unit:
    row: int  # row of the image in the feature tensor
    captions: list[list[int]]  # token ids, each "<lang> ... </s>"
    mirrored: bool = False  # use the image's mirrored view (see ``mirror_units``)


# Words for "left" and "right" (word starts; Arabic fuses prefixes, so there a substring): a
# mirrored photo contradicts a caption that has one. Over-matching ("Recht", "droit" = straight)
# only means that caption is never shown mirrored. A language not listed is never mirrored.
SIDE_WORDS = {
    "en": r"\b(left|right)",
    "de": r"\b(link|recht)",
    "fr": r"\b(gauche|droit)",
    "cs": r"\b(lev|prav|vlevo|vpravo|nalevo|napravo)",
    "ar": r"(يمين|يسار|يمنى|يسرى)",
}
_SIDE_RE = {lang: re.compile(pattern, re.IGNORECASE) for lang, pattern in SIDE_WORDS.items()}


def mirror_safe(text: str, lang: str) -> bool:
    """Whether ``text`` still describes the photo mirrored left to right (no left/right word)."""
    pattern = _SIDE_RE.get(lang)
    return pattern is not None and pattern.search(text) is None


def caption_entries(items: list[ManifestItem], langs: list[str]) -> list[tuple[int, str, str]]:
    """Every (item index, lang, text) of the given items' non-empty captions, in pool order."""
    return [(i, lang, text) for i, it in enumerate(items) for lang in langs
            for text in it.captions.get(lang, []) if text.strip()]


def caption_pool(
    items: list[ManifestItem], rows: list[int], langs: list[str], tok: CaptionTokenizer, max_length: int
) -> list[tuple[int, list[int]]]:
    """Every (feature row, token ids) pair of the given items in the given languages."""
    return [(rows[i], tok.encode(text, lang, max_length)) for i, lang, text in caption_entries(items, langs)]


def epoch_units(
    pool: list[tuple[int, list[int]]], per_image: int, seed: int, by_length: bool = False
) -> list[Unit]:
    """Shuffle each image's captions, cut them into units of ``per_image``, shuffle the units.

    ``by_length``: an image's shuffled captions are ordered by length before they are cut, so the
    captions of one unit are about as long as each other (less padding; see ``epoch_batches``).
    Deterministic in ``seed`` (the trainer passes seed + epoch), so a resumed run rebuilds the
    same order and skips the batches it already did.
    """
    rng = random.Random(seed)
    by_row: dict[int, list[list[int]]] = {}
    for row, ids in pool:
        by_row.setdefault(row, []).append(ids)
    units = []
    for row in sorted(by_row):
        caps = by_row[row]
        rng.shuffle(caps)
        if by_length:
            caps.sort(key=len)  # stable: captions of equal length keep their shuffled order
        units.extend(Unit(row, caps[i : i + per_image]) for i in range(0, len(caps), per_image))
    rng.shuffle(units)
    return units


def mirror_units(units: list[Unit], unsafe: set[tuple[int, ...]], seed: int, p: float = 0.5) -> list[Unit]:
    """Flip augmentation: each unit with no caption in ``unsafe`` (token ids of the captions that
    must not be mirrored, see ``mirror_safe``) is shown mirrored with probability ``p``.

    Deterministic in ``seed``; the units' order is kept. Other units stay as they are.
    """
    rng = random.Random(seed)
    out = []
    for u in units:
        coin = rng.random() < p  # drawn for every unit, so one unit's captions do not shift the others
        flip = coin and not any(tuple(c) in unsafe for c in u.captions)
        out.append(Unit(u.row, u.captions, mirrored=flip) if flip else u)
    return out


def epoch_batches(units: list[Unit], per_batch: int, window: int, seed: int) -> list[list[Unit]]:
    """Cut shuffled units into batches of ``per_batch``.

    ``window`` > 0 buckets by length: each run of ``window`` batches' worth of units is sorted by its
    longest caption before it is cut, and the batches are then shuffled, so a batch pads to about
    its own captions' length rather than to the longest of 64 random captions. ``window`` 0 keeps
    the units' order. Deterministic in ``seed``.
    """
    if window <= 0:
        return [units[i : i + per_batch] for i in range(0, len(units), per_batch)]
    span = per_batch * window
    batches: list[list[Unit]] = []
    for start in range(0, len(units), span):
        chunk = sorted(units[start : start + span], key=lambda u: max(len(c) for c in u.captions))
        batches.extend(chunk[i : i + per_batch] for i in range(0, len(chunk), per_batch))
    random.Random(seed).shuffle(batches)
    return batches


def collate(units: list[Unit], pad_id: int, mirror_offset: int = 0
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (image rows (I,), caption->image index (B,), input_ids (B, T), attention_mask (B, T)).

    A mirrored unit's row is ``row + mirror_offset``: the trainer stores the mirrored views after
    the plain ones in one feature tensor.
    """
    rows = torch.tensor([u.row + (mirror_offset if u.mirrored else 0) for u in units])
    owner = torch.tensor([i for i, u in enumerate(units) for _ in u.captions])
    seqs = [ids for u in units for ids in u.captions]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return rows, owner, ids, mask
