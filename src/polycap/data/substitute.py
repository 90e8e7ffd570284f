"""Substitution augmentation: swap the object a caption names for another concept's name.

During training a caption's object word is replaced by another concept's name and the decoder is told
that concept (Decoupled Novel Object Captioner, OSCAR), so it learns to name what it is told.
:func:`swap_concept` does the replacement in one of polycap's five languages and fixes the grammar
that sits right next to the noun; it returns ``None`` whenever the result could be wrong, and the
caller then keeps the original caption. :func:`swap_candidates` lists the concepts that can be
swapped in.

What is fixed:

- **Number.** A plural form becomes the new concept's plural, a singular its singular. The number of a
  form comes from the table (name, plural, the singular or plural of a synonym listed beside it) or
  from the determiner in front of it.
- **en:** "a"/"an" right before the noun.
- **de:** the determiner right before the noun (der/ein/kein/sein/ihr/dieser... and im/am/vom/zum/
  beim/zur/ins/ans/aufs), by the old gender, the form and the article seen; when these allow several
  cases that the new noun writes differently, a preceding preposition decides (or the start of the
  caption: nominative). Weak masculine nouns (Elefant -> den Elefanten) and the dative plural
  (Hunden) are handled. Plurals need no article change.
- **fr:** un/une, le/la/l', du/de la/de l', au/à la/à l', ce/cet/cette, mon/ma... by the new gender,
  with elision before a vowel or mute h ("l'oiseau", never "l'chien"); "de" -> "d'".
- **ar:** the proclitics (و ف ب ك ل ال لل and their stacks) stay; the stem becomes the new singular,
  plural, dual or indefinite accusative.
- **cs:** the case of the old form (from its case table) is kept; the preposition s/se, z/ze, v/ve,
  k/ke is re-vocalised for the new word.

What returns ``None`` (the caller keeps the caption):

- **de:** a singular after an adjective ("ein brauner Hund": the ending would be wrong), a genitive
  singular form ("des Hundes"), a synonym (the table gives no gender for it), a case the words before
  leave open where the new noun needs to know it ("streichelt eine Katze": "einen Hund" or "ein Hund"?),
  and determiners without a rule here (euer, manch-, solch-, welch-).
- **fr:** a singular after a pre-nominal adjective whose determiner has the other gender ("un petit
  chien" -> feminine), and aucun/quel/tout/certain.
- **ar:** a possessive suffix (كلبه "his dog", also when it could be the spelling كلبة), a form whose
  number the table does not give (جراء), a definite phrase name.
- **cs:** a synonym without case forms, a form whose number the words before leave open (kočky:
  gen. sg. or nom. pl.).
- **all:** a form whose number cannot be told, ambiguous forms, mass nouns and pluralia tantum (old or
  new), and any result in which ``mentions`` would not find the new concept, would still find the old
  one, or would lose another one.

Not fixed (left as they are): the agreement of verbs, of French post-nominal adjectives ("un chien
noir" -> "une abeille noir") and of Czech and Arabic adjectives ("hnědý kočka", "قطة أبيض"). When
several Czech cases of the same number fit, the first of nom, acc, gen, dat, loc, ins is taken
("drží psa" -> "kočku") unless a preposition decides. Inserted words are lower-case, as polycap-base
writes; everything else in the caption stays byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from polycap.data.concepts import (
    _AR_PREFIXES,
    _AR_SUFFIXES,
    LANGUAGES,
    ConceptName,
    ConceptTable,
    ConceptTableError,
    load_concepts,
    normalise,
    tokens,
)

# A caption word: letters and digits, with the combining marks (Arabic harakat) they carry.
_WORD = re.compile(r"(?:[^\W_]|[\u0300-\u036f\u064b-\u065f\u0670])+")
_APOSTROPHES = "'\u2019"


@dataclass(frozen=True)
class _Tok:
    start: int
    end: int
    norm: str  # normalised as concepts.tokens() writes it


@dataclass(frozen=True)
class _Hit:
    """One mention of the old concept: caption words [i, j), the table form they matched."""

    i: int
    j: int
    form: str
    prefix: str = ""  # ar: the proclitics in front of the stem
    clean: bool = True  # ar: no possessive suffix, no clitic inside a phrase


@dataclass
class _Ctx:
    text: str
    toks: list[_Tok]
    old: ConceptName
    new: ConceptName

    def prev(self, i: int, k: int = 1) -> str | None:
        """The normalised word ``k`` places before word ``i``; None at the start of the caption."""
        return self.toks[i - k].norm if i - k >= 0 else None

    def noun(self, hit: _Hit, word: str) -> tuple[int, int, str]:
        return (self.toks[hit.i].start, self.toks[hit.j - 1].end, word)

    def word(self, i: int, new: str) -> tuple[int, int, str]:
        """Replace word ``i`` by ``new``, keeping a capital first letter ("Ein" -> "Eine")."""
        t = self.toks[i]
        return (t.start, t.end, _like(self.text[t.start : t.end], new))

    def gap(self, i: int) -> str:
        """The characters between word ``i - 1`` and word ``i``."""
        return self.text[self.toks[i - 1].end : self.toks[i].start]


def _like(orig: str, new: str) -> str:
    return new[:1].upper() + new[1:] if orig[:1].isupper() else new


# ---- public API -----------------------------------------------------------------------------------------
def swap_concept(text: str, lang: str, old: str, new: str, table: ConceptTable | None = None) -> str | None:
    """`text` with every mention of concept `old` replaced by concept `new`'s name in `lang`, with the grammar
    around it fixed where it is simple; None when it cannot be done safely (then the caller keeps the caption)."""
    _check_lang(lang)
    table = table if table is not None else load_concepts()
    old_c, new_c = table[old], table[new]
    if old == new or lang not in old_c.names or lang not in new_c.names:
        return None
    old_e, new_e = old_c.names[lang], new_c.names[lang]
    if not (_swappable(old_e) and _swappable(new_e)):
        return None
    before = table.mentions(text, lang)
    if old not in before:
        return None
    toks = _tokenise(text, lang)
    hits = _find(toks, lang, old, table)
    if not hits or any(h.form in old_e.ambiguous for h in hits):
        return None
    ctx = _Ctx(text, toks, old_e, new_e)
    edits: list[tuple[int, int, str]] = []
    for hit in hits:
        found = _SWAP[lang](ctx, hit)
        if found is None:
            return None
        edits += found
    out = _apply(text, edits)
    if out is None or out == text:
        return None
    after = table.mentions(out, lang)
    inserted: set[str] = set()
    for _, _, rep in edits:
        inserted |= table.mentions(rep, lang)
    if old in after or new not in after or not (before - {old}) <= after or not after - before <= inserted:
        return None
    return out


def swap_candidates(lang: str, table: ConceptTable | None = None) -> tuple[str, ...]:
    """ids of the concepts that can be swapped in for `lang` (have a name in lang, countable, not
    plural_only) - cached."""
    _check_lang(lang)
    cache = _cache(table if table is not None else load_concepts())
    if lang not in cache.candidates:
        cache.candidates[lang] = tuple(c.id for c in cache.table if lang in c.names and _swappable(c.names[lang]))
    return cache.candidates[lang]


def _check_lang(lang: str) -> None:
    if lang not in LANGUAGES:
        raise ConceptTableError(f"no language {lang!r} in the concept table; languages: {', '.join(LANGUAGES)}")


def _swappable(entry: ConceptName) -> bool:
    return entry.countable and not entry.plural_only


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str | None:
    """The text with the edits made; None if two of them overlap."""
    out, pos = [], 0
    for start, end, rep in sorted(set(edits)):
        if start < pos:
            return None
        out += [text[pos:start], rep]
        pos = end
    return "".join(out) + text[pos:]


# ---- finding the mentions: the same longest-phrase rule as concepts.mentions ------------------------------
@dataclass(frozen=True)
class _Phrase:
    tokens: tuple[str, ...]
    concept: str | None  # None: a stop phrase
    form: str  # the table form (ar: the normalised match form)
    respelled: bool = False  # ar: a final ة written ه, which may also be the possessive "his" (كلبه)


@dataclass
class _TableCache:
    table: ConceptTable
    phrases: dict[str, dict[str, list[_Phrase]]] = field(default_factory=dict)
    candidates: dict[str, tuple[str, ...]] = field(default_factory=dict)


_CACHES: dict[int, _TableCache] = {}


def _cache(table: ConceptTable) -> _TableCache:
    cache = _CACHES.get(id(table))
    if cache is None or cache.table is not table:
        cache = _CACHES[id(table)] = _TableCache(table)
    return cache


def _phrases(table: ConceptTable, lang: str) -> dict[str, list[_Phrase]]:
    """Every form of every concept (and the stop phrases), by first word."""
    cache = _cache(table)
    if lang not in cache.phrases:
        index: dict[str, list[_Phrase]] = {}
        found = [(c.id, f) for c in table for f in (c.names[lang].match if lang == "ar" else c.names[lang].words)]
        found += [(None, f) for f in table.stop_phrases.get(lang, ())]
        for cid, form in found:
            toks = tokens(form, lang)
            if not toks:
                continue
            index.setdefault(toks[0], []).append(_Phrase(toks, cid, form))
            respelled = tuple(t[:-1] + "ه" if t.endswith("ة") else t for t in toks)
            if lang == "ar" and respelled != toks:  # captions often write a final ة as ه
                index.setdefault(respelled[0], []).append(_Phrase(respelled, cid, form, True))
        cache.phrases[lang] = index
    return cache.phrases[lang]


def _tokenise(text: str, lang: str) -> list[_Tok]:
    out = []
    for m in _WORD.finditer(text):
        for norm in tokens(m.group(), lang):
            out.append(_Tok(m.start(), m.end(), norm))
    return out


def _readings(norm: str, lang: str) -> list[tuple[str, str, str]]:
    """(stem, proclitics, suffix) a word may be, least stripped first; only Arabic strips clitics.
    A one-letter proclitic leaves at least three letters, as in concepts.mentions."""
    out = [(norm, "", "")]
    if lang != "ar":
        return out
    out += [
        (norm[len(p) :], p, "")
        for p in _AR_PREFIXES
        if norm.startswith(p) and len(norm) - len(p) >= (3 if len(p) == 1 else 2)
    ]
    for stem, p, _ in list(out):
        for s in _AR_SUFFIXES:
            if stem.endswith(s) and len(stem) - len(s) >= 3:
                base = stem[: -len(s)]
                out.append((base, p, s))
                if base.endswith("ت"):
                    out.append((base[:-1] + "ة", p, s))
    unique: dict[str, tuple[str, str, str]] = {}
    for r in out:
        unique.setdefault(r[0], r)
    return list(unique.values())


def _find(toks: list[_Tok], lang: str, old: str, table: ConceptTable) -> list[_Hit]:
    """The mentions of ``old``, longest phrase first, adjacent ones merged ("greyhound dog" is one)."""
    index = _phrases(table, lang)
    cands = [_readings(t.norm, lang) for t in toks]
    hits: list[_Hit] = []
    i = 0
    while i < len(toks):
        n, best = _longest(index, cands, i)
        if not n:
            i += 1
            continue
        mine = [(p, r, clean) for p, r, clean in best if p.concept == old]
        if mine and _gate_open(table, lang, toks, cands, index, mine[0][0], i, n):
            phrase, (_, prefix, suffix), clean = mine[0]
            hit = _Hit(i, i + n, phrase.form, prefix, clean and not suffix)
            if hits and hits[-1].j == i:  # the head decides: last word, first in fr and ar
                last = hits.pop()
                form = last.form if lang in ("fr", "ar") else hit.form
                hit = _Hit(last.i, hit.j, form, last.prefix, last.clean and hit.clean)
            hits.append(hit)
        i += n
    return hits


def _longest(index, cands, i):
    """The longest phrases starting at word ``i``, reached with the least clitic stripping."""
    best: list = []
    best_key = (0, 0)
    for rank, reading in enumerate(cands[i]):
        for p in index.get(reading[0], ()):
            n = len(p.tokens)
            if i + n > len(cands) or not all(p.tokens[k] in [r[0] for r in cands[i + k]] for k in range(1, n)):
                continue
            key = (n, -rank)
            if key > best_key:
                best, best_key = [], key
            if key == best_key:
                clean = all(p.tokens[k] == cands[i + k][0][0] for k in range(1, n))
                last = reading[0] if n == 1 else cands[i + n - 1][0][0]
                clean = clean and not (p.respelled and last[:-1] in index)  # كلبه: كلبة, or كلب + "his"?
                best.append((p, reading, clean))
    return best_key[0], best


def _gate_open(table, lang, toks, cands, index, phrase: _Phrase, i: int, n: int) -> bool:
    """A gated form names the concept only after a determiner, as in concepts.mentions."""
    entry = table[phrase.concept].names[lang]
    if phrase.form not in entry.gated:
        return True
    dets = {normalise(d, lang) for d in table.determiners.get(lang, ())}
    if i == 0 or toks[i - 1].norm not in dets:
        return False
    if i + n >= len(toks):
        return True
    followers = table.followers.get(lang)
    if followers is not None:
        return toks[i + n].norm in {normalise(w, lang) for w in followers}
    return not _longest(index, cands, i + n)[0]


# ---- number of a form, from the table -----------------------------------------------------------------
def _number(form: str, entry: ConceptName, prev: str | None, grammar: dict) -> str | None:
    """The number ("sg", "pl") of an en/fr form: from the table (the form and its singular or plural beside
    it), else from the determiner before it; None when neither tells."""
    words = set(entry.words)
    sg, pl = entry.sg.lower(), entry.pl.lower()
    is_sg = form == sg or any(w in words for w in grammar["plurals"](form) if w != form)
    is_pl = form == pl or any(w in words for w in grammar["singulars"](form) if w != form)
    if is_sg != is_pl:
        return "sg" if is_sg else "pl"
    by_det = "sg" if prev in grammar["sg_dets"] else "pl" if prev in grammar["pl_dets"] else None
    if is_sg or by_det:  # sg == pl ("sheep", "perdrix"): the determiner tells
        return by_det
    return None if form.endswith(grammar["pl_endings"]) else "sg"


def _en_plurals(w: str) -> list[str]:
    return [w + "s", w + "es"] + ([w[:-1] + "ies"] if w.endswith("y") else [])


def _en_singulars(w: str) -> list[str]:
    out = [w[:-1]] if w.endswith("s") else []
    out += [w[:-2]] if w.endswith("es") else []
    return out + ([w[:-3] + "y"] if w.endswith("ies") else [])


_EN = {
    "plurals": _en_plurals,
    "singulars": _en_singulars,
    "sg_dets": {"a", "an", "one", "another", "each", "every", "this", "that"},
    "pl_dets": {"two", "three", "four", "five", "six", "these", "those", "several", "many", "both", "few"},
    "pl_endings": ("s",),
}


def _fr_head(form: str, fn: Callable[[str], list[str]]) -> list[str]:
    """``fn`` applied to the first word of a French form (the head: "chiens de berger"), or to all."""
    words = form.split(" ")
    out = [" ".join([w, *words[1:]]) for w in fn(words[0])]
    if len(words) > 1:
        out += [" ".join(v) for v in zip(*(fn(w) for w in words))]
    return out


def _fr_plural_word(w: str) -> list[str]:
    return (
        [w + "s", w + "x"]
        + ([w[:-2] + "aux"] if w.endswith("al") else [])
        + ([w[:-3] + "aux"] if w.endswith("ail") else [])
    )


def _fr_singular_word(w: str) -> list[str]:
    out = [w[:-1]] if w.endswith(("s", "x")) else []
    return out + ([w[:-3] + "al", w[:-3] + "ail"] if w.endswith("aux") else [])


# ---- English ------------------------------------------------------------------------------------------
def _swap_en(c: _Ctx, hit: _Hit) -> list | None:
    number = _number(hit.form, c.old, c.prev(hit.i), _EN)
    if number is None:
        return None
    edits = [c.noun(hit, (c.new.pl if number == "pl" else c.new.sg).lower())]
    if number == "sg" and c.prev(hit.i) in ("a", "an"):
        if not c.new.article:
            return None
        edits.append(c.word(hit.i - 1, c.new.article))
    return edits


# ---- German -------------------------------------------------------------------------------------------
_CASES = ("nom", "acc", "dat", "gen")
_DE_DEF = {"m": ("der", "den", "dem", "des"), "f": ("die", "die", "der", "der"), "n": ("das", "das", "dem", "des"),
           "pl": ("die", "die", "den", "der")}  # fmt: skip
_DE_EIN = {"m": ("", "en", "em", "es"), "f": ("e", "e", "er", "er"), "n": ("", "", "em", "es"),
           "pl": ("e", "e", "en", "er")}  # fmt: skip
_DE_DIESER = {"m": ("er", "en", "em", "es"), "f": ("e", "e", "er", "er"), "n": ("es", "es", "em", "es"),
              "pl": ("e", "e", "en", "er")}  # fmt: skip
_DE_EIN_STEMS = ("ein", "kein", "mein", "dein", "sein", "ihr", "unser")
_DE_DIESER_STEMS = ("dies", "jed", "jen")
_DE_CONTRACTIONS = {"im": ("in", "dem"), "am": ("an", "dem"), "vom": ("von", "dem"), "zum": ("zu", "dem"),
                    "beim": ("bei", "dem"), "zur": ("zu", "der"), "ins": ("in", "das"), "ans": ("an", "das"),
                    "aufs": ("auf", "das")}  # fmt: skip
_DE_CONTRACT = {v: k for k, v in _DE_CONTRACTIONS.items()}
# Determiner-like words with no rule here (a singular after them returns None); before a plural they
# change nothing.
_DE_UNFIXABLE = {"euer", "eure", "euren", "eurem", "eurer", "eures", "manch", "manche", "mancher", "manches",
                 "manchen", "manchem", "solch", "solche", "solcher", "solches", "solchen", "solchem", "welch",
                 "welche", "welcher", "welches", "welchen", "welchem", "alle", "aller", "allen", "allem", "alles",
                 "beide", "beiden", "zwei", "drei", "vier", "fünf", "mehrere", "viele", "vielen", "einige",
                 "einigen"}  # fmt: skip
_TWO_WAY = {"acc", "dat"}
_DE_GOVERNS = {"mit": {"dat"}, "von": {"dat"}, "zu": {"dat"}, "bei": {"dat"}, "aus": {"dat"}, "nach": {"dat"},
               "seit": {"dat"}, "gegenüber": {"dat"}, "für": {"acc"}, "durch": {"acc"}, "gegen": {"acc"},
               "ohne": {"acc"}, "um": {"acc"}, "in": _TWO_WAY, "an": _TWO_WAY, "auf": _TWO_WAY, "über": _TWO_WAY,
               "unter": _TWO_WAY, "vor": _TWO_WAY, "hinter": _TWO_WAY, "neben": _TWO_WAY, "zwischen": _TWO_WAY,
               "während": {"gen"}, "trotz": {"gen"}, "ist": {"nom"}, "sind": {"nom"}, "war": {"nom"},
               "waren": {"nom"}, "wird": {"nom"}, None: {"nom"}}  # fmt: skip
# Words ending like an adjective (-e, -er, -en, -em, -es) that are not one.
_DE_NOT_ADJ = {"über", "unter", "hinter", "oder", "aber", "wieder", "gegen", "ohne", "neben", "oben", "unten"}
_DE_NOT_WEAK = {"see"}  # der See, des Sees: strong, though the table lists no genitive


def _de_det(kind: str, stem: str, gender: str, case: str) -> str | None:
    k = _CASES.index(case)
    if kind == "der":
        return _DE_DEF[gender][k]
    if kind == "ein" and not (stem == "ein" and gender == "pl"):
        return stem + _DE_EIN[gender][k]
    return stem + _DE_DIESER[gender][k] if kind == "dieser" else None


def _de_determiners() -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    families = [("der", "")] + [("ein", s) for s in _DE_EIN_STEMS] + [("dieser", s) for s in _DE_DIESER_STEMS]
    for kind, stem in families:
        for g in _DE_DEF:
            for case in _CASES:
                word = _de_det(kind, stem, g, case)
                if word and (kind, stem) not in out.setdefault(word, []):
                    out[word].append((kind, stem))
    return out


_DE_DETS = _de_determiners()


def _de_weak(e: ConceptName) -> bool:
    """A weak masculine noun (der Elefant, den Elefanten): plural -en/-n and no genitive -s."""
    s, p = normalise(e.sg, "de"), normalise(e.pl, "de")
    no_genitive = not {s + "s", s + "es"} & set(e.words)
    return e.gender == "m" and p in (s + "n", s + "en") and no_genitive and s not in _DE_NOT_WEAK


def _de_readings(form: str, e: ConceptName) -> list[tuple[str, str]]:
    """(number, case) readings of a form of the name; [] for a genitive singular or a synonym."""
    s, p, form = normalise(e.sg, "de"), normalise(e.pl, "de"), normalise(form, "de")
    weak, dat_pl = _de_weak(e), p.endswith(("n", "s"))
    out = []
    if form == s:
        out += [("sg", c) for c in (("nom",) if weak else _CASES if e.gender == "f" else _CASES[:3])]
    if form == p:
        out += [("pl", c) for c in _CASES if c != "dat" or dat_pl]
        out += [("sg", c) for c in _CASES[1:]] if weak else []
    if form == p + "n" and not dat_pl:
        out.append(("pl", "dat"))
    return out


def _de_noun(e: ConceptName, number: str, case: str) -> str | None:
    s, p = e.sg.lower(), e.pl.lower()
    if number == "pl":
        return p + "n" if case == "dat" and not p.endswith(("n", "s")) else p
    if case == "nom":
        return s
    if _de_weak(e):
        return p
    return None if case == "gen" and e.gender != "f" else s


def _de_adjective(w: str | None) -> bool:
    return w is not None and w.endswith(("e", "er", "en", "em", "es")) and w not in _DE_NOT_ADJ


def _de_skippable(w: str) -> bool:
    """Words that may stand between a plural noun and its determiner: adjectives, numbers, quantifiers."""
    return w not in _DE_DETS and w not in _DE_CONTRACTIONS and (_de_adjective(w) or w.isdigit() or w in _DE_UNFIXABLE)


def _swap_de(c: _Ctx, hit: _Hit) -> list | None:
    readings = _de_readings(hit.form, c.old)
    if not readings or " " in c.new.sg:
        return None
    i = k = hit.i
    while k > max(0, i - 4) and _de_skippable(c.toks[k - 1].norm):
        k -= 1
    if k < i:  # an adjective before a singular would need new endings: plurals only
        readings = [r for r in readings if r[0] == "pl"]
    plural = {_de_noun(c.new, num, case) for num, case in readings if num == "pl"}
    if readings and len(plural) == 1 and all(num == "pl" for num, _ in readings):
        return [c.noun(hit, plural.pop())]  # plural determiners are the same for every gender
    w, prep, seen, families = c.prev(k), None, None, []
    if w in _DE_CONTRACTIONS:
        prep, seen = _DE_CONTRACTIONS[w]
        families, governor = [("der", "")], prep
    elif w in _DE_DETS:
        seen, families, governor = w, _DE_DETS[w], c.prev(k, 2)
    else:
        governor = w
    if seen is not None:  # (article family, number, case) that the article seen allows
        options = [(f, num, case) for f in families for num, case in readings
                   if _de_det(*f, c.old.gender if num == "sg" else "pl", case) == seen]  # fmt: skip
    else:  # no article: a bare singular is never genitive, and rarer than a plural
        options = [(None, num, case) for num, case in readings if (num, case) != ("sg", "gen")]
        if any(num == "pl" for _, num, _ in options):
            options = [o for o in options if o[1] == "pl"]
        if any(num == "sg" for _, num, _ in options) and (
            w in _DE_UNFIXABLE or (w not in _DE_GOVERNS and c.prev(k, 2) in _DE_DETS)
        ):
            return None  # a determiner without a rule, or article + word + noun ("ein rosa Hund")

    def result(f, num, case):
        art = None if f is None else _de_det(*f, c.new.gender if num == "sg" else "pl", case)
        return art, _de_noun(c.new, num, case)

    outs = {result(*o) for o in options}
    if len(outs) > 1:  # the cases disagree in the new noun: the governing word decides
        allowed = _DE_GOVERNS.get(governor, set())
        outs = {result(*o) for o in options if o[2] in allowed}
    if len(outs) != 1:
        return None
    art, noun = outs.pop()
    if noun is None or (seen is not None and art is None):
        return None
    edits = [c.noun(hit, noun)]
    if prep is not None and art != seen:
        edits.append(c.word(k - 1, _DE_CONTRACT.get((prep, art), f"{prep} {art}")))
    elif art is not None and art != seen:
        edits.append(c.word(k - 1, art))
    return edits


# ---- French -------------------------------------------------------------------------------------------
_FR_SG_DETS = {"un": "m", "une": "f", "le": "m", "la": "f", "l": None, "du": "m", "au": "m", "ce": "m", "cet": "m",
               "cette": "f", "mon": "m", "ma": "f", "ton": "m", "ta": "f", "son": "m", "sa": "f", "notre": None,
               "votre": None, "leur": None, "chaque": None}  # fmt: skip
_FR_UNFIXABLE = {"aucun", "aucune", "quel", "quelle", "nul", "nulle", "tout", "toute", "certain", "certaine"}
_FR_PL_DETS = {"les", "des", "ces", "mes", "tes", "ses", "nos", "vos", "leurs", "aux", "deux", "trois", "quatre",
               "cinq", "six", "sept", "huit", "neuf", "dix", "plusieurs", "quelques"}  # fmt: skip
_FR = {
    "plurals": lambda w: _fr_head(w, _fr_plural_word),
    "singulars": lambda w: _fr_head(w, _fr_singular_word),
    "sg_dets": set(_FR_SG_DETS) | _FR_UNFIXABLE,
    "pl_dets": _FR_PL_DETS,
    "pl_endings": ("s", "x"),
}
# Adjectives (and adverbs) that come before a French noun; the others follow it and are left as they are.
_FR_PRENOMINAL = {"petit", "petite", "grand", "grande", "gros", "grosse", "jeune", "vieux", "vieil", "vieille",
                  "beau", "bel", "belle", "joli", "jolie", "bon", "bonne", "mauvais", "mauvaise", "autre", "premier",
                  "première", "dernier", "dernière", "nouveau", "nouvel", "nouvelle", "long", "longue", "énorme",
                  "seul", "seule", "même", "haut", "haute", "gentil", "gentille", "très", "plus", "si",
                  "assez"}  # fmt: skip
_FR_VOWELS = "aeéèêëiîïoôuûùyhâàœæ"
_FR_H_ASPIRE = {"hibou", "homard", "héron", "hamster", "harpe", "hache", "hamburger", "hot-dog", "hyène", "hockey",
                "haricot", "hérisson", "hamac", "hangar", "haie", "hutte", "hublot", "housse"}  # fmt: skip


def _fr_vowel(word: str) -> bool:
    """Whether a French word elides the article before it (l'oiseau, l'horloge; but le hibou)."""
    return word[:1] in _FR_VOWELS and word.split(" ")[0].rstrip("sx") not in _FR_H_ASPIRE and word not in _FR_H_ASPIRE


def _fr_article(kind: str, gender: str, vowel: bool) -> str:
    if kind == "def":
        return "l'" if vowel else "le" if gender == "m" else "la"
    if kind == "indef":
        return "un" if gender == "m" else "une"
    if kind == "dem":
        return ("cet" if vowel else "ce") if gender == "m" else "cette"
    return kind + ("on" if gender == "m" or vowel else "a")  # mon/ma, ton/ta, son/sa


def _swap_fr(c: _Ctx, hit: _Hit) -> list | None:
    i, p1, p2 = hit.i, c.prev(hit.i), c.prev(hit.i, 2)
    number = _number(hit.form, c.old, p1, _FR)
    by_det = "sg" if p1 in _FR["sg_dets"] else "pl" if p1 in _FR_PL_DETS else None
    if number is None or (by_det and by_det != number):
        return None
    word = (c.new.pl if number == "pl" else c.new.sg).lower()
    vowel, g = _fr_vowel(word), c.new.gender
    edits = [c.noun(hit, word)]

    def det(first: int, out: str):  # words [first, i) become ``out``; elision joins it to the noun
        gap = c.gap(i)
        glue = next((ch for ch in gap if ch in _APOSTROPHES), "'") if out.endswith("'") else (
            " " if any(ch in _APOSTROPHES for ch in gap) else gap)  # fmt: skip
        t = c.toks[first]
        out = _like(c.text[t.start : t.end], out.rstrip("'"))
        edits.append((t.start, c.toks[i].start, out + glue))
        return edits

    if p1 in ("de", "d"):
        return det(i - 1, "d'" if vowel else "de")
    if number == "pl":
        return edits
    if p1 in ("le", "la", "l") and p2 in ("de", "à") or p1 in ("du", "au"):
        prep = p2 if p1 in ("le", "la", "l") else {"du": "de", "au": "à"}[p1]
        first = i - 2 if p1 in ("le", "la", "l") else i - 1
        art = _fr_article("def", g, vowel)
        joined = {("de", "le"): "du", ("à", "le"): "au"}.get((prep, art), f"{prep} {art}")
        return det(first, joined)
    if p1 in ("le", "la", "l"):
        return det(i - 1, _fr_article("def", g, vowel))
    if p1 in ("un", "une"):
        return det(i - 1, _fr_article("indef", g, vowel))
    if p1 in ("ce", "cet", "cette"):
        return det(i - 1, _fr_article("dem", g, vowel))
    if p1 in ("mon", "ma", "ton", "ta", "son", "sa"):
        return det(i - 1, _fr_article(p1[0], g, vowel))
    if p1 in _FR_UNFIXABLE:
        return None
    if p1 in _FR_SG_DETS:  # notre, votre, leur, chaque: the same for both genders
        return edits
    k = 1
    while c.prev(i, k) in _FR_PRENOMINAL:  # "un petit chien": the adjective agrees with the old gender
        k += 1
    w = c.prev(i, k)
    if k > 1 and w in _FR_SG_DETS and (_FR_SG_DETS[w] or c.old.gender) != g:
        return None
    return edits


# ---- Arabic -------------------------------------------------------------------------------------------
def _ar_kind(form: str, e: ConceptName) -> str | None:
    """What an Arabic form of the old concept is: sg, pl, dual_nom, dual_gen, acc (indefinite); None if unclear."""
    s, p, match = normalise(e.sg, "ar"), normalise(e.pl, "ar"), set(e.match)

    def lemma(w: str) -> bool:  # a singular: the name, or a form with its dual beside it
        stem = w[:-1] + "ت" if w.endswith("ة") else w
        return w == s or (stem + "ان") in match or (stem + "ين") in match

    if s == p:
        return None
    if form == s:
        return "sg"
    if form == p:
        return "pl"
    if p.endswith("ون") and form == p[:-2] + "ين":  # sound plural: looks like a dual
        return None
    for end, kind in (("ان", "dual_nom"), ("ين", "dual_gen")):
        base = form[: -len(end)]
        if form.endswith(end) and (lemma(base) or (base.endswith("ت") and lemma(base[:-1] + "ة"))):
            return kind
    if form.endswith("ا") and lemma(form[:-1]):
        return "acc"
    return "sg" if lemma(form) else None


def _ar_word(e: ConceptName, kind: str) -> str:
    s, match = e.sg, set(e.match)
    if kind in ("sg", "pl"):
        return s if kind == "sg" else e.pl
    if kind == "acc":
        return s + "ا" if normalise(s + "ا", "ar") in match else s
    dual = (s[:-1] + "ت" if s.endswith("ة") else s) + ("ان" if kind == "dual_nom" else "ين")
    return dual if normalise(dual, "ar") in match else e.pl


def _swap_ar(c: _Ctx, hit: _Hit) -> list | None:
    kind = _ar_kind(hit.form, c.old)
    if not hit.clean or kind is None:
        return None  # a possessive suffix (كلبه), a clitic inside a phrase, or a form of unknown number
    word, prefix = _ar_word(c.new, kind), hit.prefix
    definite = prefix.endswith(("ال", "لل"))
    if definite and (" " in word or kind == "acc"):
        return None  # the article of a phrase ("the hunting dog") is not simple
    if prefix.endswith("لل") and word.startswith("ل"):
        prefix = prefix[:-1]  # ل + ال + ليمونة is written لليمونة
    return [c.noun(hit, prefix + word)]


# ---- Czech --------------------------------------------------------------------------------------------
_CS_ORDER = ("nom", "acc", "gen", "dat", "loc", "ins")
_CS_KEYS = _CS_ORDER + tuple(k + "_pl" for k in _CS_ORDER)
_GEN, _LOC_ACC, _ACC_INS = {"gen"}, {"loc", "acc"}, {"acc", "ins"}
_CS_GOVERNS = {"s": {"ins"}, "se": {"ins"}, "k": {"dat"}, "ke": {"dat"}, "proti": {"dat"}, "kvůli": {"dat"},
               "bez": _GEN, "do": _GEN, "od": _GEN, "u": _GEN, "z": _GEN, "ze": _GEN, "kolem": _GEN, "okolo": _GEN,
               "vedle": _GEN, "podél": _GEN, "během": _GEN, "kromě": _GEN, "blízko": _GEN, "uprostřed": _GEN,
               "pro": {"acc"}, "přes": {"acc"}, "skrz": {"acc"}, "při": {"loc"}, "v": _LOC_ACC, "ve": _LOC_ACC,
               "na": _LOC_ACC, "o": _LOC_ACC, "po": _LOC_ACC, "za": _ACC_INS, "pod": _ACC_INS, "nad": _ACC_INS,
               "před": _ACC_INS, "mezi": _ACC_INS}  # fmt: skip
_CS_PLURAL_WORDS = {"dva", "dvě", "tři", "čtyři", "oba", "obě", "dvěma", "třemi", "čtyřmi", "oběma", "pět", "šest",
                    "několik", "mnoho", "hodně"}  # fmt: skip
_CS_ADJECTIVE_ENDINGS = ("ý", "á", "é", "í", "ého", "ému", "ém", "ým", "ou", "ých", "ými")
_CS_TWO = {"dva": ("dvě", "dva"), "dvě": ("dvě", "dva"), "oba": ("obě", "oba"), "obě": ("obě", "oba")}  # f/n, m
_CS_VOCALISED = {"s": "se", "z": "ze", "v": "ve", "k": "ke"}
_CS_VOCALISE_BEFORE = {"s": "szšž", "z": "szšž", "v": "vfw", "k": "kgq"}


def _cs_preposition(prep: str, word: str) -> str:
    """s/se, z/ze, v/ve, k/ke before ``word``: the vowel before the same or a like consonant ("se sovou",
    "ve vodě") and before ps- ("se psem"), not otherwise ("s kočkou")."""
    base = prep[0]
    vocal = word[:1] in _CS_VOCALISE_BEFORE[base] or word.startswith("ps")
    return _CS_VOCALISED[base] if vocal else base


def _cs_context(c: _Ctx, i: int) -> tuple[int, str | None]:
    """Past the adjectives before a Czech noun: the position of a number word (dva, pět; 0 if none) and
    the word before them all, which may be a preposition that tells the case."""
    k, number = 1, 0
    while k <= 5 and c.prev(i, k) is not None:
        w = c.prev(i, k)
        if w in _CS_PLURAL_WORDS and not number:
            number = k
        elif not (w == "a" or w.endswith(_CS_ADJECTIVE_ENDINGS)):
            break
        k += 1
    return number, c.prev(i, k)


def _swap_cs(c: _Ctx, hit: _Hit) -> list | None:
    form = normalise(hit.form, "cs")
    keys = [k for k in _CS_KEYS if normalise(c.old.cases.get(k, ""), "cs") == form]
    if not keys or any(k not in c.new.cases for k in keys):
        return None  # a synonym without case forms
    number, governor = _cs_context(c, hit.i)
    if len({c.new.cases[k] for k in keys}) > 1:  # the words before tell the number and the case
        if number:
            keys = [k for k in keys if k.endswith("_pl")]
        if governor in _CS_GOVERNS:
            keys = [k for k in keys if k.removesuffix("_pl") in _CS_GOVERNS[governor]]
        if not keys or (len({k.endswith("_pl") for k in keys}) > 1 and len({c.new.cases[k] for k in keys}) > 1):
            return None  # singular or plural cannot be told (kočky: gen. sg. or nom. pl.)
    word = c.new.cases[keys[0]].lower()
    edits = [c.noun(hit, word)]
    two = c.prev(hit.i, number) if number else None
    if two in _CS_TWO and keys[0].endswith("_pl"):  # dva psi, dvě kočky
        want = _CS_TWO[two][c.new.gender == "m"]
        if want != two:
            edits.append(c.word(hit.i - number, want))
    p1 = c.prev(hit.i)
    if p1 in _CS_VOCALISED or p1 in _CS_VOCALISED.values():
        want = _cs_preposition(p1, word)
        if want != p1:
            edits.append(c.word(hit.i - 1, want))
    return edits


_SWAP: dict[str, Callable[[_Ctx, _Hit], list | None]] = {
    "en": _swap_en,
    "de": _swap_de,
    "fr": _swap_fr,
    "ar": _swap_ar,
    "cs": _swap_cs,
}
