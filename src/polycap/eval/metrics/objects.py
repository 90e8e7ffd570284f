"""Object mentions in English captions: CHAIR (Rohrbach et al. 2018), object recall, largest object named.

The word list is data, ``coco_objects.json`` beside this module: COCO's 80 object categories, each
with the synonyms of Rohrbach et al.'s CHAIR code (``data/synonyms.txt`` of
github.com/LisaAnne/Hallucination), so that "puppy", "pup" and "beagles" all name *dog*.  How it
differs from that code, and why:

* **Plurals are listed, not computed.**  CHAIR singularises every word with a lemmatiser; here every
  word is written in the file with its plural forms (regular ones, "men", "mice", "knives", "geese",
  "people"; no plural for "sheep", "cattle", "scissors", "luggage").  Matching is then a plain
  lookup, the same on every machine, with nothing to download.  The two CHAIR entries that only
  catch its lemmatiser's output ("knive", "phon") are left out; "hair dryer" is added beside
  COCO's spelling "hair drier".
* **Phrases first.**  Multi-word names are matched before single words, longest first, so "hot dog"
  is a hot dog and no dog, "teddy bear" no bear, "fire hydrant", "baseball bat", "cell phone",
  "stove top oven" one object each.
* **Qualifier compounds** (``compounds`` in the file), CHAIR's hard-coded rules: "baby"/"adult" + an
  animal word names that animal and no person ("baby elephant" -> elephant; "baby animal" names
  nothing, since "animal" is no COCO category); "passenger jet"/"passenger train" -> the vehicle, no
  person; "toilet seat" -> toilet, no chair.  As in CHAIR, "seat" does not name a chair in a caption
  that names a toilet (``not_with``).  Our one addition: "jet ski" is a watercraft (boat), neither an
  airplane ("jet") nor skis.
* **"orange" the colour is not the fruit** (our addition: in Flickr8k's references nearly every
  "orange" is a colour, "an orange shirt").  The singular counts as the fruit only where no other
  word follows it or the next word is a function word ("an orange on a plate", "an orange and an
  apple"), and not in "orange and <colour>" or after a form of "be" ("the ball is orange").  The
  plural "oranges" always counts.  The word lists of this rule are ``colour_nouns`` in the file.
* **Distinct objects per caption**: a caption naming "a dog ... the dog" names *dog* once; CHAIRi
  counts objects, as the paper defines it (the reference code counts every repetition).

Text is lowercased (``str.casefold``) and split into runs of letters, so "hot-dog", "Hot dog" and
"hot dogs" all match; digits and punctuation separate words.  The list is English only.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["ObjectVocabulary", "coco_vocabulary", "object_scores", "words_of"]

VOCABULARY_FILE = Path(__file__).with_name("coco_objects.json")

_WORD = re.compile(r"[^\W\d_]+")
def words_of(text: str) -> list[str]:
    """The lowercased letter runs of ``text``: the units the word list is matched against."""
    return _WORD.findall(text.casefold())


@dataclass(frozen=True)
class ObjectVocabulary:
    """Surface forms -> object categories, matched longest phrase first (see the module doc)."""

    categories: tuple[str, ...]  # category names in COCO order
    ids: Mapping[str, int]  # category name -> COCO category id
    phrases: Mapping[tuple[str, ...], str | None]  # words -> category; None: a compound naming nothing
    not_with: Mapping[str, str]  # surface word -> category whose presence cancels it
    longest: int
    colour_nouns: Mapping[str, frozenset[str]] = field(default_factory=dict)  # "words", "noun_if_next", ...

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjectVocabulary:
        phrases: dict[tuple[str, ...], str | None] = {}
        for cat in data["categories"]:
            for word in cat["words"]:
                phrases[tuple(word.split())] = cat["name"]
        for phrase, target in data.get("compounds", {}).items():
            phrases[tuple(phrase.split())] = target
        return cls(
            categories=tuple(c["name"] for c in data["categories"]),
            ids={c["name"]: c["id"] for c in data["categories"]},
            phrases=phrases,
            not_with=dict(data.get("not_with", {})),
            longest=max(len(p) for p in phrases),
            colour_nouns={k: frozenset(v) for k, v in data.get("colour_nouns", {}).items()},
        )

    def with_names(self, names: Sequence[str]) -> ObjectVocabulary:
        """This vocabulary plus categories it lacks, each named by itself and its plural + "s"."""
        new = [n for n in dict.fromkeys(names) if n not in self.ids]
        if not new:
            return self
        phrases = dict(self.phrases)
        for name in new:
            for form in (name, name + "s"):
                phrases.setdefault(tuple(words_of(form)), name)
        longest = max(self.longest, *(len(words_of(n)) for n in new))
        return replace(self, categories=(*self.categories, *new), phrases=phrases, longest=longest)

    def mentions(self, text: str) -> dict[str, str]:
        """{category: the first words that named it} for each object ``text`` names."""
        words = words_of(text)
        found: list[tuple[str, str]] = []
        i = 0
        while i < len(words):
            for n in range(min(self.longest, len(words) - i), 0, -1):
                key = tuple(words[i : i + n])
                if key in self.phrases:
                    target = self.phrases[key]
                    if target is not None and not (n == 1 and self._is_colour(words, i)):
                        found.append((target, " ".join(key)))
                    i += n
                    break
            else:
                i += 1
        named = {cat for cat, _ in found}
        out: dict[str, str] = {}
        for cat, surface in found:
            if self.not_with.get(surface) in named:
                continue  # "seat" beside "toilet" is the toilet's seat
            out.setdefault(cat, surface)
        return out

    def categories_in(self, text: str) -> set[str]:
        return set(self.mentions(text))

    def _is_colour(self, words: list[str], i: int) -> bool:
        """Whether ``words[i]`` is a colour, not the noun it also spells ("orange"; see the module doc)."""
        rule = self.colour_nouns
        if words[i] not in rule.get("words", ()):
            return False
        if i > 0 and words[i - 1] in rule["be"]:
            return True  # "the ball is orange"
        if i + 1 >= len(words):
            return False  # "... and an orange"
        nxt = words[i + 1]
        if nxt in ("and", "or") and i + 2 < len(words) and words[i + 2] in rule["colours"]:
            return True  # "an orange and white cat"
        return nxt not in rule["noun_if_next"]  # "an orange shirt", not "an orange on a plate"



@lru_cache(maxsize=1)
def coco_vocabulary() -> ObjectVocabulary:
    """The COCO-80 word list shipped with polycap (``coco_objects.json``)."""
    return ObjectVocabulary.from_dict(json.loads(VOCABULARY_FILE.read_text(encoding="utf-8")))


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def object_scores(
    predictions: Mapping[Hashable, str],
    truth: Mapping[Hashable, set[str]],
    largest: Mapping[Hashable, str] | None = None,
    vocabulary: ObjectVocabulary | None = None,
    top_k: int = 10,
) -> dict[str, Any]:
    """Score the objects that captions name against the objects each image holds.

    Only images in both ``predictions`` and ``truth`` are scored (an image whose truth is an empty
    set is scored: anything its caption names is hallucinated).  With M_i the set of categories
    caption i names and G_i its image's categories:

    * ``CHAIRi`` = sum |M_i - G_i| / sum |M_i| (None when no caption names an object);
    * ``CHAIRs`` = share of captions with M_i - G_i non-empty;
    * ``recall`` = mean over images with G_i non-empty of |M_i & G_i| / |G_i|;
      ``recall_micro`` = sum |M_i & G_i| / sum |G_i|;
    * ``largest_named`` = share of the images in ``largest`` (image -> category of its largest
      annotated object) whose caption names that category; None without ``largest``.
    """
    vocab = vocabulary or coco_vocabulary()
    keys = [k for k in predictions if k in truth]
    named_total = halluc_total = halluc_caps = empty_caps = hits_total = gt_total = 0
    recalls: list[float] = []
    halluc_count: Counter[str] = Counter()
    largest_hits = largest_n = 0
    for k in keys:
        named, gt = vocab.categories_in(predictions[k]), truth[k]
        wrong = named - gt
        named_total += len(named)
        halluc_total += len(wrong)
        halluc_caps += bool(wrong)
        empty_caps += not named
        halluc_count.update(wrong)
        if gt:
            hits = len(named & gt)
            recalls.append(hits / len(gt))
            hits_total += hits
            gt_total += len(gt)
        if largest is not None and k in largest:
            largest_n += 1
            largest_hits += largest[k] in named
    return {
        "n_images": len(keys),
        "CHAIRi": _ratio(halluc_total, named_total),
        "CHAIRs": _ratio(halluc_caps, len(keys)),
        "recall": _ratio(sum(recalls), len(recalls)),
        "recall_micro": _ratio(hits_total, gt_total),
        "largest_named": _ratio(largest_hits, largest_n) if largest is not None else None,
        "n_largest": largest_n,
        "n_mentions": named_total,
        "n_hallucinated": halluc_total,
        "n_captions_without_objects": empty_caps,
        "mean_gt_objects": _ratio(sum(len(truth[k]) for k in keys), len(keys)),
        "top_hallucinated": dict(halluc_count.most_common(top_k)),
    }
