"""Caption tokenisation for the metrics: COCO's PTB tokenisation for English, a Unicode one otherwise.

Every n-gram metric is only as comparable as its tokenisation.  For English we reproduce what
pycocoevalcap does (Stanford PTBTokenizer, lowercased, COCO's punctuation list removed; see
:mod:`.ptb`) so our numbers equal published COCO-style numbers.  PTB rules are English-specific
(contractions, abbreviations), so every other language goes through :func:`unicode_tokenize`:

1. NFKC normalisation, so compatibility forms (full-width letters, ligatures, presentation forms
   of Arabic letters) compare equal to their plain forms;
2. ``str.casefold()`` (a no-op for scripts without case, e.g. Arabic), so "Straße" = "STRASSE";
3. punctuation (Unicode category P*) becomes a word break and is dropped, as COCO drops its
   punctuation list; this also splits elisions and compounds ("l'homme" -> "l", "homme");
4. symbols (S*: currency, math, emoji) are kept, each as a token of its own, as PTB keeps "&",
   "%", "$" -- they can carry meaning ("+", "°") and dropping them would hide differences;
5. format characters (Cf: soft hyphen, zero-width joiners, BOM) are deleted, except the
   zero-width space, which separates words; letters keep their diacritics and combining marks
   (M*); then the text is split on whitespace.

Tokenised captions are handled as single strings of space-joined tokens, because that is what
pycocoevalcap's scorers receive and how they split them matters: BLEU and CIDEr use
``str.split()``, ROUGE-L ``str.split(" ")``.  The two differ on PTB tokens such as fractions
("5 7/8" is one token with a no-break space inside) and on empty captions.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from polycap.eval.metrics.ptb import ptb_tokenize_batch

__all__ = ["tokenize", "tokenize_batch", "unicode_tokenize", "is_english"]


def is_english(lang: str) -> bool:
    """True for language tags that get COCO's PTB tokenisation ("en", "en-US", "EN_gb")."""
    return lang.lower().replace("_", "-").split("-")[0] == "en"


class _CharMap(dict[int, str]):
    """str.translate table filled on demand: what each character becomes (see module doc)."""

    def __missing__(self, code: int) -> str:
        ch = chr(code)
        cat = unicodedata.category(ch)
        if ch == "\u200b" or cat[0] in "PZ" or cat == "Cc":
            out = " "
        elif cat[0] == "S":
            out = f" {ch} "
        elif cat == "Cf":
            out = ""
        else:
            out = ch
        self[code] = out
        return out


_CHARMAP = _CharMap()


def unicode_tokenize(text: str) -> str:
    """Language-neutral tokenisation; returns the tokens joined by single spaces."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(text.translate(_CHARMAP).split())


def tokenize_batch(texts: Sequence[str], lang: str = "en") -> list[str]:
    """Tokenise many captions at once; one space-joined string per caption.

    For English this is one pycocoevalcap ``PTBTokenizer.tokenize`` call on the same captions in
    the same order, bit for bit (a few PTB rules look across caption boundaries).
    """
    if is_english(lang):
        return ptb_tokenize_batch(texts)
    return [unicode_tokenize(t) for t in texts]


def tokenize(text: str, lang: str = "en") -> list[str]:
    """The tokens of one caption: PTB-style for English, :func:`unicode_tokenize` otherwise."""
    joined = tokenize_batch([text], lang)[0]
    return joined.split(" ") if joined else []
