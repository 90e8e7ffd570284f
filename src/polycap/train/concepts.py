"""The concept path in training: what the encoder's classifier recognises in each cached feature
row, the names fed to the decoder, and substitution augmentation.

Flickr8k's captions name few of the things the classifier knows (41 of 30,000 English captions say
"cat"), so a decoder that only ever saw true concepts would learn to copy "dog" and little else.
Substitution (as in the Decoupled Novel Object Captioner): each epoch, a share of the captions that
name a concept are shown with that word swapped for another concept's name in the caption's
language (``polycap.data.substitute`` fixes the article and case), and the decoder is fed the new
concept in place of the old one. It learns to name the concept it is given, whatever the image's
Flickr8k prior says, while the true concepts of the other captions keep it honest.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch

from polycap.backends.native.concepts import ConceptHead, ConceptInput, concept_input, confident, name_pieces
from polycap.data.substitute import swap_candidates, swap_concept

# Languages whose adjectives agree with the noun's gender, which substitution does not rewrite
# ("hnědý pes" -> "hnědý kočka"): there a concept is only swapped for one of the same gender.
SAME_GENDER = ("fr", "cs", "ar")

Chosen = list[tuple[int, float]]  # (concept index, probability), best first


class Swapped(list):
    """A caption's token ids after substitution, with the concept swap it was made by."""

    def __init__(self, ids: list[int], old: int, new: int, p: float):
        super().__init__(ids)
        self.old, self.new, self.p = old, new, p


def _first_position(words: tuple[str, ...], text: str) -> int:
    low = text.lower()
    found = [i for i in (low.find(w) for w in words) if i >= 0]
    return min(found, default=len(low))


class TrainConcepts:
    def __init__(self, head: ConceptHead, table, tokenizer, langs: list[str], slots: int, pieces: int,
                 min_prob: float):
        self.head, self.table, self.tok = head, table, tokenizer
        self.slots, self.pieces, self.min_prob = slots, pieces, min_prob
        self.index = {cid: i for i, cid in enumerate(table.ids)}
        self.names = {lang: name_pieces(table, lang, tokenizer.tok, pieces) for lang in langs}
        self.lang_of_id = {tokenizer.lang_id(lang): lang for lang in langs}
        self.swappable: list[tuple[int, str, str, int]] = []  # (pool index, lang, text, old concept index)
        self._choices: dict[tuple[str, str | None], list[int]] = {}
        self._spelled: dict[tuple[int, str], tuple[tuple[int, ...], ...]] = {}

    def recognise(self, features: torch.Tensor, chunk: int = 1024) -> list[Chosen]:
        """Per feature row, the confident concepts (as inference chooses them)."""
        out: list[Chosen] = []
        for s in range(0, features.shape[0], chunk):
            out.extend(confident(self.head(features[s : s + chunk].float()), self.min_prob, self.slots))
        return out

    def find_swappable(self, texts: list[tuple[str, str]], within: int = 0) -> None:
        """Remember which pool captions (``texts[j]`` = (lang, text) of pool entry j) name a concept;
        ``within`` > 0: only those that name it within their first ``within`` words."""
        self.swappable = []
        for j, (lang, text) in enumerate(texts):
            named = self.table.mentions(text, lang)
            if not named:
                continue
            # the concept named first: most often the caption's subject
            first = min(sorted(named), key=lambda cid: _first_position(self.table[cid].words(lang), text))
            at = _first_position(self.table[first].words(lang), text)
            if within and len(text[:at].split()) >= within:
                continue
            self.swappable.append((j, lang, text, self.index[first]))

    def epoch_pool(self, pool: list[tuple[int, list[int]]], share: float, seed: int,
                   encode: Callable[[str, str], list[int]]) -> list[tuple[int, list[int]]]:
        """``pool`` with a ``share`` of the swappable captions substituted (deterministic in ``seed``)."""
        if share <= 0 or not self.swappable:
            return pool
        rng = random.Random(seed)
        out = list(pool)
        ids = self.table.ids
        for j, lang, text, old in self.swappable:
            if rng.random() >= share:
                continue
            choices = self._candidates(lang, old)
            if not choices:
                continue
            new = rng.choice(choices)
            p = rng.uniform(self.min_prob, 1.0)
            if new == old or not self.names[lang][new]:
                continue
            swapped = swap_concept(text, lang, ids[old], ids[new], self.table)
            if swapped:
                out[j] = (pool[j][0], Swapped(encode(swapped, lang), old, new, p))
        return out

    def spellings(self, index: int, lang: str) -> tuple[tuple[int, ...], ...]:
        """Token ids of concept ``index``'s singular and plural in ``lang`` (cached)."""
        key = (index, lang)
        if key not in self._spelled:
            entry = self.table[self.table.ids[index]].names[lang]
            forms = {tuple(self.tok.tok.encode(f.lower(), add_special_tokens=False).ids) for f in (entry.sg, entry.pl)}
            self._spelled[key] = tuple(sorted(f for f in forms if f))
        return self._spelled[key]

    def name_positions(self, ids: Swapped) -> list[int]:
        """Positions in a substituted caption's ids where its new concept's name is spelled."""
        lang = self.lang_of_id[ids[0]]
        found: set[int] = set()
        for form in self.spellings(ids.new, lang):
            n = len(form)
            for i in range(len(ids) - n + 1):
                if tuple(ids[i : i + n]) == form:
                    found.update(range(i, i + n))
        return sorted(found)

    def _candidates(self, lang: str, old: int) -> list[int]:
        """The concepts ``old`` may be swapped for in ``lang`` (cached per language and gender)."""
        gender = self.table[self.table.ids[old]].names[lang].gender if lang in SAME_GENDER else None
        key = (lang, gender)
        if key not in self._choices:
            self._choices[key] = [self.index[c] for c in swap_candidates(lang, self.table)
                                  if gender is None or self.table[c].names[lang].gender == gender]
        return self._choices[key]

    def batch_input(self, captions: list[tuple[list[int], Chosen]]) -> ConceptInput:
        """The fed concepts of a batch: per caption its token ids and its image row's concepts."""
        chosen, names = [], []
        for ids, real in captions:
            if isinstance(ids, Swapped):
                rest = [(i, p) for i, p in real if i not in (ids.old, ids.new)]
                real = sorted([(ids.new, ids.p), *rest], key=lambda x: -x[1])[: self.slots]
            chosen.append(real)
            names.append(self.names[self.lang_of_id[ids[0]]])
        return concept_input(chosen, names, self.slots, self.pieces)
