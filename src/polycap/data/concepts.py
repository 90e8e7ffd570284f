"""The concept vocabulary: ImageNet-1k classes -> basic-level concepts, named in en, de, fr, ar and cs.

The 1,000 ImageNet classes are what the image encoder recognises; people captioning a photo say
"a dog", not "a Staffordshire Bull Terrier". ``concepts.json`` (beside this module; how it was made:
``docs/concepts.md``) maps every class to one of a few hundred concepts and gives each concept's
name in every language polycap speaks, with the grammar a caption needs (plural, gender, article,
Czech case forms) and the other words that also name it ("puppy", "Welpe", "chiot", "جرو", "štěně").

:func:`mentions` finds the concepts a caption names, with whole-word matching that knows each
language's shape: Arabic clitics (و، ب، ال، لل ... and possessive endings), Czech inflection (every
case form is listed), German compounds ("Schäferhund" names a dog) for the concepts marked safe.

Light on purpose: standard library only, loaded once and cached.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

from polycap.errors import PolycapError

LANGUAGES = ("en", "de", "fr", "ar", "cs")
TABLE_PATH = Path(__file__).with_name("concepts.json")
N_CLASSES = 1000

_AR_MARKS = re.compile("[\u064b-\u0652\u0670\u0640]")  # harakat, dagger alif, tatweel
_NON_WORD = re.compile(r"[\W_]+")
# Arabic proclitics (conjunction, preposition, article) in the orders they stack; longest first.
_AR_PREFIXES = tuple(sorted(
    {"و", "ف", "ب", "ك", "ل", "ال", "وال", "فال", "بال", "كال", "لل", "ولل", "فلل", "وب", "فب", "وك", "ول", "فل",
     "وبال", "فبال", "وكال"},
    key=len, reverse=True,
))  # fmt: skip
# Possessive pronouns: كلبه "his dog". Not ي "my": it would also strip nisba adjectives (برتقالي "orange").
_AR_SUFFIXES = ("هما", "هم", "هن", "ها", "ه", "نا", "كم", "ك")
_MIN_COMPOUND_PREFIX = 3  # "Schäferhund": at least three letters before the head noun


class ConceptTableError(PolycapError, ValueError):
    """The concept table is malformed, or a lookup asked for something it does not have."""


@dataclass(frozen=True)
class ConceptName:
    """How one language names one concept."""

    lang: str
    sg: str  # display form (German nouns capitalised)
    pl: str  # plural; equal to ``sg`` for mass nouns and pluralia tantum
    gender: str | None  # de: m/f/n; fr: m/f; ar: m/f; cs: m/f/n; en: None
    article: str | None  # indefinite article a caption uses ("a", "an", "ein", "eine", "un", "une", "des")
    synonyms: tuple[str, ...]
    words: tuple[str, ...]  # every accepted surface form, lower-cased as polycap-base writes them
    ambiguous: frozenset[str] = frozenset()  # forms that often mean something else ("orange", "fly")
    gated: frozenset[str] = frozenset()  # forms that count only after a determiner ("a watch", not "he watches")
    unmatched: tuple[str, ...] = ()  # display forms never matched: they are mostly another word (ar أسود "black")
    animate: bool | None = None  # cs masculine nouns
    plural_only: bool = False
    countable: bool = True
    cases: Mapping[str, str] = field(default_factory=dict)  # cs: nom, gen, dat, acc, loc, ins (+ "_pl")
    match: tuple[str, ...] = ()  # ar: normalised forms without the article (what matching compares)
    compound_heads: tuple[str, ...] = ()  # de: forms that name the concept at the end of a compound
    compound_exclude: tuple[str, ...] = ()  # de: compounds with such a head that do not ("Warteschlange")


@dataclass(frozen=True)
class Concept:
    """A basic-level concept ("dog") and the ImageNet classes it gathers."""

    id: str
    parent: str | None  # a broader concept whose words also name it (eagle -> bird), or None
    classes: tuple[int, ...]
    names: Mapping[str, ConceptName]

    def __hash__(self) -> int:  # ids are unique in a table; names hold unhashable mappings
        return hash(self.id)

    def name(self, lang: str, plural: bool = False) -> str:
        """The concept's name in ``lang`` (display form: "Hund", "cheval"); its plural if asked."""
        entry = self._entry(lang)
        return entry.pl if plural else entry.sg

    def words(self, lang: str) -> tuple[str, ...]:
        """All lower-cased surface forms that name this concept in ``lang``; the singular first."""
        return self._entry(lang).words

    def _entry(self, lang: str) -> ConceptName:
        try:
            return self.names[lang]
        except KeyError:
            raise _unknown_language(lang) from None


@dataclass(frozen=True)
class ImageNetClass:
    index: int
    wnid: str
    label: str  # the simple English label (imagenet-simple-labels)
    concept: str  # concept id


@dataclass(frozen=True)
class _Entry:
    tokens: tuple[str, ...]
    concept: str | None  # None: a stop phrase ("en train de" is no train)
    ambiguous: bool
    gated: bool = False


class _Index:
    """Phrase index of one language: first token -> entries, longest first; German compound heads."""

    def __init__(
        self,
        lang: str,
        concepts: Mapping[str, Concept],
        stop_phrases: list[str],
        determiners: list[str],
        followers: list[str] | None,
    ):
        self.lang = lang
        self.first: dict[str, list[_Entry]] = {}
        self.heads: dict[str, list[str]] = {}
        self.not_compounds: dict[str, frozenset[str]] = {}
        self.determiners = frozenset(normalise(d, lang) for d in determiners)
        # en/de put adjectives before the noun: a gated form must also end its noun phrase
        self.followers = None if followers is None else frozenset(normalise(w, lang) for w in followers)
        for c in concepts.values():
            entry = c.names[lang]
            forms = entry.match if lang == "ar" else entry.words
            amb = {" ".join(tokens(w, lang)) for w in entry.ambiguous}
            gated = {" ".join(tokens(w, lang)) for w in entry.gated}
            for form in forms:
                toks = tokens(form, lang)
                if toks:
                    key = " ".join(toks)
                    for variant in _spellings(toks, lang):
                        self._add(_Entry(variant, c.id, key in amb, key in gated))
            for head in entry.compound_heads:
                self.heads.setdefault(normalise(head, lang), []).append(c.id)
            self.not_compounds[c.id] = frozenset(normalise(w, lang) for w in entry.compound_exclude)
        for phrase in stop_phrases:
            self._add(_Entry(tokens(phrase, lang), None, False))
        for entries in self.first.values():
            entries.sort(key=lambda e: -len(e.tokens))

    def _add(self, e: _Entry) -> None:
        entries = self.first.setdefault(e.tokens[0], [])
        if e not in entries:
            entries.append(e)

    def find(self, text: str, strict: bool) -> set[str]:
        toks = tokens(text, self.lang)
        cands = [_candidates(t, self.lang) for t in toks]
        found: set[str] = set()
        i = 0
        while i < len(toks):
            hits = self._longest(cands, i)
            if hits:
                n = len(hits[0].tokens)
                for e in hits:
                    if not e.concept or (strict and e.ambiguous):
                        continue
                    if not e.gated or self._gate_open(toks, cands, i, n):
                        found.add(e.concept)
                i += n
                continue
            if self.heads:
                found |= self._compound(toks[i])
            i += 1
        return found

    def _longest(self, cands: list[tuple[str, ...]], i: int) -> list[_Entry]:
        """The longest entries starting at word ``i``; among equally long ones, those reached with the
        least clitic stripping (ar: طائرة is an aeroplane, not طائر "bird" + ه)."""
        best: list[_Entry] = []
        best_key = (0, 0)
        for rank, c in enumerate(cands[i]):
            for e in self.first.get(c, ()):
                n = len(e.tokens)
                if n < best_key[0]:
                    break
                if i + n <= len(cands) and all(e.tokens[j] in cands[i + j] for j in range(1, n)):
                    key = (n, -rank)
                    if key > best_key:
                        best, best_key = [], key
                    if key == best_key and e not in best:
                        best.append(e)
        return best

    def _gate_open(self, toks: tuple[str, ...], cands: list[tuple[str, ...]], i: int, n: int) -> bool:
        """A gated form counts right after a determiner ("a watch", not "he watches"; "la porte", not
        "il porte") and, where adjectives come first (en, de), at the end of its noun phrase: followed by
        nothing or by a preposition or verb ("an orange on the table", not "an orange toy")."""
        if i == 0 or toks[i - 1] not in self.determiners:
            return False
        if i + n >= len(toks):
            return True
        if self.followers is not None:
            return toks[i + n] in self.followers
        return not self._longest(cands, i + n)

    def _compound(self, tok: str) -> set[str]:
        """German: the longest known head noun at the end of ``tok`` ("schäferhund" -> dog)."""
        for k in range(len(tok) - _MIN_COMPOUND_PREFIX, 3, -1):
            ids = self.heads.get(tok[-k:])
            if ids:
                return {cid for cid in ids if tok not in self.not_compounds[cid]}
        return set()


@dataclass(frozen=True)
class ConceptTable:
    """The loaded table: concepts by id (file order), and the 1,000 ImageNet classes."""

    version: int
    concepts: Mapping[str, Concept]
    classes: tuple[ImageNetClass, ...]
    stop_phrases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    determiners: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    followers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    _indexes: dict[str, _Index] = field(default_factory=dict, repr=False, compare=False)

    def __getitem__(self, concept_id: str) -> Concept:
        try:
            return self.concepts[concept_id]
        except KeyError:
            raise ConceptTableError(f"unknown concept {concept_id!r}") from None

    def __iter__(self) -> Iterator[Concept]:
        return iter(self.concepts.values())

    def __len__(self) -> int:
        return len(self.concepts)

    @property
    def ids(self) -> tuple[str, ...]:
        """Concept ids in file order (the order of a model's concept vector)."""
        return tuple(self.concepts)

    def concept_of_class(self, index: int) -> Concept:
        """The concept of ImageNet-1k class ``index`` (standard order, 0..999)."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.classes):
            last = len(self.classes) - 1
            raise ConceptTableError(f"ImageNet class index must be an integer 0..{last}, got {index!r}")
        return self.concepts[self.classes[index].concept]

    def class_concept_indices(self) -> list[int]:
        """For each of the 1,000 classes, the position of its concept in :attr:`ids`."""
        pos = {cid: i for i, cid in enumerate(self.concepts)}
        return [pos[c.concept] for c in self.classes]

    def mentions(self, text: str, lang: str, *, strict: bool = False) -> set[str]:
        """Ids of the concepts ``text`` names in ``lang``.

        Whole words only ("category" is no cat), longest phrase first ("hot dog" is food, not a dog).
        ``strict`` leaves out forms that often mean something else ("orange" the colour, "fly" the verb).
        """
        if lang not in LANGUAGES:
            raise _unknown_language(lang)
        index = self._indexes.get(lang)
        if index is None:
            follow = self.followers.get(lang)
            index = self._indexes[lang] = _Index(
                lang,
                self.concepts,
                list(self.stop_phrases.get(lang, ())),
                list(self.determiners.get(lang, ())),
                None if follow is None else list(follow),
            )
        return index.find(text, strict)

    def names_subject(self, text: str, lang: str, concept_id: str, *, strict: bool = False) -> bool:
        """Whether ``text`` names the concept or its broader parent ("a bird" names an eagle)."""
        concept = self[concept_id]
        found = self.mentions(text, lang, strict=strict)
        return concept.id in found or (concept.parent is not None and concept.parent in found)


def _unknown_language(lang: str) -> ConceptTableError:
    return ConceptTableError(f"no language {lang!r} in the concept table; languages: {', '.join(LANGUAGES)}")


# ---- text normalisation shared by the table and the captions ---------------------------------------
def normalise(text: str, lang: str) -> str:
    """NFKC, lower case, as polycap-base writes; Arabic without marks and with one spelling of
    alif with hamza and of final yeh; German ß as ss (both spellings occur)."""
    text = unicodedata.normalize("NFKC", text).lower()
    if lang == "ar":
        text = _AR_MARKS.sub("", text)
        # آ stays (مرآة "mirror" is not المرأة "the woman"), and so does ة: a final ه is "his"
        text = re.sub("[أإٱ]", "ا", text).replace("ى", "ي")
    elif lang == "de":
        text = text.replace("ß", "ss")
    return text


def tokens(text: str, lang: str) -> tuple[str, ...]:
    """Words of ``text``: hyphens, apostrophes and punctuation separate ("l'oiseau" -> l, oiseau)."""
    return tuple(t for t in _NON_WORD.split(normalise(text, lang)) if t)


def _spellings(toks: tuple[str, ...], lang: str) -> list[tuple[str, ...]]:
    """The spellings a form is indexed under: Arabic captions often write a final ة as ه (قطه)."""
    if lang != "ar" or not any(t.endswith("ة") for t in toks):
        return [toks]
    return [toks, tuple(t[:-1] + "ه" if t.endswith("ة") else t for t in toks)]


def _candidates(tok: str, lang: str) -> tuple[str, ...]:
    """The forms a caption word may be, least stripped first: itself, or for Arabic the word without
    its clitics. A one-letter proclitic leaves at least three letters (فقط "only" is not ف + قط "cat")."""
    if lang != "ar":
        return (tok,)
    out = [tok]
    for p in _AR_PREFIXES:
        if tok.startswith(p) and len(tok) - len(p) >= (3 if len(p) == 1 else 2):
            out.append(tok[len(p) :])
    for stem in list(out):
        for s in _AR_SUFFIXES:
            if stem.endswith(s) and len(stem) - len(s) >= 3:
                base = stem[: -len(s)]
                out.append(base)
                if base.endswith("ت"):  # قطته "his cat": the teh marbuta of قطة
                    out.append(base[:-1] + "ة")
    return tuple(dict.fromkeys(out))


# ---- loading ------------------------------------------------------------------------------------------
def _name(lang: str, raw: dict, where: str) -> ConceptName:
    for key in ("sg", "pl", "words"):
        if not raw.get(key):
            raise ConceptTableError(f"{where}: {lang} has no {key!r}")
    if lang != "en" and lang != "ar" and raw.get("gender") is None and not raw.get("plural_only"):
        raise ConceptTableError(f"{where}: {lang} has no gender")
    return ConceptName(
        lang=lang,
        sg=raw["sg"],
        pl=raw["pl"],
        gender=raw.get("gender"),
        article=raw.get("article"),
        synonyms=tuple(raw.get("synonyms", ())),
        words=tuple(raw["words"]),
        ambiguous=frozenset(raw.get("ambiguous", ())),
        gated=frozenset(raw.get("gated", ())),
        unmatched=tuple(raw.get("unmatched", ())),
        animate=raw.get("animate"),
        plural_only=bool(raw.get("plural_only", False)),
        countable=bool(raw.get("countable", True)),
        cases=MappingProxyType(dict(raw.get("cases", {}))),
        match=tuple(raw.get("match", ())),
        compound_heads=tuple(raw.get("compound_heads", ())),
        compound_exclude=tuple(raw.get("compound_exclude", ())),
    )


def parse_table(data: dict, source: str = "concepts.json") -> ConceptTable:
    """A :class:`ConceptTable` from the parsed JSON; one clear error naming what is wrong."""
    try:
        raw_concepts, raw_classes = data["concepts"], data["classes"]
    except (KeyError, TypeError):
        raise ConceptTableError(f"{source}: needs 'concepts' and 'classes'") from None
    members: dict[str, list[int]] = {}
    classes = []
    for i, rec in enumerate(raw_classes):
        if rec.get("index") != i or not rec.get("concept"):
            raise ConceptTableError(f"{source}: class {i} needs 'index': {i} and a 'concept'")
        classes.append(ImageNetClass(i, rec.get("wnid", ""), rec.get("label", ""), rec["concept"]))
        members.setdefault(rec["concept"], []).append(i)
    concepts: dict[str, Concept] = {}
    for rec in raw_concepts:
        cid = rec.get("id")
        if not cid or cid in concepts:
            raise ConceptTableError(f"{source}: concept id missing or repeated: {cid!r}")
        names = rec.get("names", {})
        missing = [lang for lang in LANGUAGES if lang not in names]
        if missing:
            raise ConceptTableError(f"{source}: concept {cid!r} has no {', '.join(missing)}")
        where = f"{source}: concept {cid!r}"
        concepts[cid] = Concept(
            id=cid,
            parent=rec.get("parent"),
            classes=tuple(members.get(cid, ())),
            names=MappingProxyType({lang: _name(lang, names[lang], where) for lang in LANGUAGES}),
        )
    unknown = sorted({c.concept for c in classes} - set(concepts))
    unknown += sorted({c.parent for c in concepts.values() if c.parent and c.parent not in concepts})
    if unknown:
        raise ConceptTableError(f"{source}: unknown concepts referenced: {', '.join(unknown)}")
    stops = {lang: tuple(v) for lang, v in data.get("stop_phrases", {}).items()}
    dets = {lang: tuple(v) for lang, v in data.get("determiners", {}).items()}
    follow = {lang: tuple(v) for lang, v in data.get("followers", {}).items()}
    return ConceptTable(
        data.get("version", 1),
        MappingProxyType(concepts),
        tuple(classes),
        MappingProxyType(stops),
        MappingProxyType(dets),
        MappingProxyType(follow),
    )


@lru_cache(maxsize=4)
def load_concepts(path: str | Path | None = None) -> ConceptTable:
    """The concept table shipped with polycap (or the one at ``path``), loaded once."""
    path = Path(path) if path is not None else TABLE_PATH
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConceptTableError(f"concept table not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ConceptTableError(f"{path}: not valid JSON ({e})") from None
    table = parse_table(data, str(path))
    if len(table.classes) != N_CLASSES and path == TABLE_PATH:
        raise ConceptTableError(f"{path}: has {len(table.classes)} classes, ImageNet-1k has {N_CLASSES}")
    return table


def concept_of_class(index: int) -> Concept:
    """The concept of ImageNet-1k class ``index`` in the shipped table (``281`` tabby cat -> cat)."""
    return load_concepts().concept_of_class(index)


def mentions(text: str, lang: str, *, strict: bool = False) -> set[str]:
    """Ids of the concepts ``text`` names in ``lang``, by the shipped table (see :meth:`ConceptTable.mentions`)."""
    return load_concepts().mentions(text, lang, strict=strict)


def names_subject(text: str, lang: str, concept_id: str, *, strict: bool = False) -> bool:
    """Whether ``text`` names the concept (or its parent), by the shipped table."""
    return load_concepts().names_subject(text, lang, concept_id, strict=strict)
