"""A pure-Python re-implementation of the PTB tokenisation pycocoevalcap runs before scoring.

pycocoevalcap pipes all captions, joined by newlines, through Stanford CoreNLP 3.4.1's
``PTBTokenizer -preserveLines -lowerCase`` (a JFlex lexer) and then drops a fixed list of
punctuation tokens.  Every COCO-style BLEU/METEOR/ROUGE-L/CIDEr number depends on that output,
so to match the reference scores without Java we reproduce the lexer: the rules below follow
CoreNLP's ``PTBLexer.flex`` in its priority order, adjusted to what the 3.4.1 jar actually does
(checked against the jar: all 35,000 English Flickr8k captions, see ``tests/test_metrics.py``,
and some 60,000 generated strings full of quotes, abbreviations, numbers, URLs and symbols).

How the emulation works: JFlex picks, at each position, the rule with the *longest* match
(trailing context included) and breaks ties by rule order.  Python's ``re`` alternation is
first-match, so each rule (and each alternative of a rule whose alternatives can overlap) is
its own compiled pattern, and :func:`_longest` tries them all and keeps the longest.  That is
slow, so captions made only of plain words and free-standing punctuation skip the lexer
(``str.split`` gives the same tokens by construction), as do plain words inside other captions.

Known differences from the jar: character classes come from Python's Unicode database (BMP
letters for JFlex's ``[:letter:]``), not JFlex 1.4's older tables, so letters added to Unicode
since 2014 may be tokenised differently; and line separators inside a caption (CR, U+2028,
U+2029, VT, FF) become spaces, where pycocoevalcap would shift every later caption onto the
wrong image (it only replaces "\\n").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from functools import lru_cache

# The tokens pycocoevalcap's PTBTokenizer wrapper removes after tokenising (its PUNCTUATIONS).
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

# --- character classes (JFlex macro names in the comments) -------------------------------
_L = r"[\pL]"  # [:letter:]; \pL is expanded to the BMP letters in compiled_rules()
_LETTER = (  # LETTER: letters, SGML letter entities, and combining marks JFlex misses
    r"(?:[\pL]|&[aeiouAEIOU](?i:acute|grave|uml);|[\u00AD\u0237-\u024F\u02C2-\u02C5"
    r"\u02D2-\u02DF\u02E5-\u02FF\u0300-\u036F\u0370-\u037D\u0384\u0385\u03CF\u03F6"
    r"\u03FC-\u03FF\u0483-\u0487\u04CF\u04F6-\u04FF\u0510-\u0525\u055A-\u055F\u0591-\u05BD"
    r"\u05BF\u05C1\u05C2\u05C4\u05C5\u05C7\u0615-\u061A\u063B-\u063F\u064B-\u065E\u0670"
    r"\u06D6-\u06EF\u06FA-\u06FF\u070F\u0711\u0730-\u074F\u0750-\u077F\u07A6-\u07B1"
    r"\u07CA-\u07F5\u07FA\u0900-\u0903\u093C\u093E-\u094E\u0951-\u0955\u0962-\u0963"
    r"\u0981-\u0983\u09BC-\u09C4\u09C7\u09C8\u09CB-\u09CD\u09D7\u09E2\u09E3\u0A01-\u0A03"
    r"\u0A3C\u0A3E-\u0A4F\u0A81-\u0A83\u0ABC-\u0ACF\u0B82\u0BBE-\u0BC2\u0BC6-\u0BC8"
    r"\u0BCA-\u0BCD\u0C01-\u0C03\u0C3E-\u0C56\u0D3E-\u0D44\u0D46-\u0D48\u0E30-\u0E3A"
    r"\u0E47-\u0E4E\u0EB1-\u0EBC\u0EC8-\u0ECD])"
)
_DIGIT = r"[\d\u07C0-\u07C9]"
_AN = r"[\pL\d]"  # [\p{Alpha}\p{Digit}]
_SPACE = r"[ \t\u00A0\u2000-\u200A\u3000]"
_NEWLINE = r"(?:\r\n|[\r\n\u2028\u2029\u000B\u000C\u0085])"
_SPACENL = rf"(?:{_SPACE}|{_NEWLINE})"
_APOS = r"(?:['\u0092\u2019]|&apos;)"
_APOSETC = rf"(?:{_APOS}|[`\u0091\u2018\u201B])"
_HYPHEN = r"[-_\u058A\u2010\u2011]"
_NUM = rf"(?:{_DIGIT}*(?:[.:,\u00AD\u066B\u066C]{_DIGIT}+)+|{_DIGIT}+)"
_ACRO = r"(?:[A-Za-z](?:\.[A-Za-z])*|(?i:(?:canada|sino|korean|eu|japan|non)-u\.s|u\.s\.-(?:u\.k|u\.s\.s\.r)))"
_ACRO2 = r"(?:[A-Za-z](?:\.[A-Za-z])+|(?i:(?:canada|sino|korean|eu|japan|non)-u\.s|u\.s\.-(?:u\.k|u\.s\.s\.r)))"
_WORD = rf"{_LETTER}(?:{_LETTER}|{_DIGIT})*(?:[.!?]{_LETTER}(?:{_LETTER}|{_DIGIT})*)*"
_REDAUX = rf"{_APOS}(?:[msdMSD]|(?i:re|ve|ll))"
_SWORD = r"[A-Za-z\u00AD]*[A-MO-Za-mo-z]\u00AD*"
_SREDAUX = rf"(?i:n){_APOSETC}(?i:t)"

_ABMONTH = "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
_ABDAYS = "mon|tue|tues|wed|thu|thurs|fri"
_ABSTATE = (
    r"(?i:ala|ariz)|[A](?i:z)|[A](?i:rk)|(?i:calif|colo|conn|ct|dak)|[D](?i:el)|(?i:fla|ga)"
    r"|[I](?i:ll)|(?i:ind|kans?|ky)|[L](?i:a)|[M](?i:ass)|(?i:md|mich|minn)|[M](?i:iss)"
    r"|(?i:mo|mont|neb|nev|okla)|[O](?i:re)|[P](?i:a)|(?i:penn|tenn)|[T](?i:ex)|(?i:va|vt)"
    r"|[W](?i:ash)|(?i:wisc?|wyo)"
)
_ABCOMP = r"inc|cos?|corp|pp?t[ye]s?|ltd|plc|rt|bancorp|bhd|assn|univ|intl|sys"
_ABBREV1 = (
    rf"(?:(?i:{_ABMONTH}|{_ABDAYS})|{_ABSTATE}|(?i:{_ABCOMP}|tel|est|ext|sq"
    r"|jr|bros|(?:ed|ph)\.d|esq|etc|al|seq|bldg))\."
)
_ABTITLE = (
    r"(?i:mr|mrs|ms)|[M](?i:iss)|(?i:drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs"
    r"|govs?|adm|rev|maj|sgt|cpl|pvt|capt|ste?|ave|pres|lieut|rt|hon|brig|co?mdr|pfc|spc"
    r"|supts?|det|mt|ft|adj|adv|asst|assoc|ens|insp|mlle|mme|msgr|sfc|sr)"
)
_ABBREV4 = (
    rf"(?:{_ACRO}|{_ABTITLE}|(?i:vs)|[v]|(?i:alex|wm|jos|cie|a\.k\.a|cf|treas|ph)"
    r"|(?i:invt|elec|natl|m[ft]g|dept|blvd|rd|ave))"
)
_ACRONYM_NEXT = (
    r"(?:[A]bout|[A]ccording|[A]dditionally|[A]fter|[A]n|[A]|[A]s|[A]t|[B]ut|[D]id|[D]uring"
    r"|[E]arlier|[H]e|[H]er|[H]ere|[H]ow|[H]owever|[I]f|[I]n|[I]t|[L]ast|[M]any|[M]ore"
    r"|[M]r\.|[M]s\.|[N]ow|[O]nce|[O]ne|[O]ther|[O]ur|[S]he|[S]ince|[S]o|[S]ome|[S]uch|[T]hat"
    r"|[T]he|[T]heir|[T]hen|[T]here|[T]hese|[T]hey|[T]his|[W]e|[W]hen|[W]hile|[W]hat|[W]ho"
    r"|[W]hy|[Y]et|[Y]ou)"
)
_SGML = (
    r"<(?:[!?][A-Za-z\-][^>\r\n]*|[A-Za-z][A-Za-z0-9_:.\-]*(?: +(?:[A-Za-z][A-Za-z0-9_:.\-]*"
    r"|[A-Za-z][A-Za-z0-9_:.\-]* *= *(?:'[^'\n]*'|\"[^\"\n]*\")))* */?"
    r"|/[A-Za-z][A-Za-z0-9_:.\-]*) *>"
)
_FILE_EXT = (
    "bat|bmp|c|class|cgi|cpp|dll|doc|docx|exe|gif|gz|h|htm|html|jar|java|jpeg|jpg|mov"
    "|mp3|pdf|php|pl|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip"
)
_MISCSYMBOL = (
    r"[+%&~\^|\\\u00A6\u00A7\u00A8\u00A9\u00AC\u00AE\u00AF\u00B0-\u00B3\u00B4-\u00BA\u00D7\u00F7"
    r"\u0387\u05BE\u05C0\u05C3\u05C6\u05F3\u05F4\u0600-\u0603\u0606-\u060A\u060C\u0614\u061B"
    r"\u061E\u066A\u066D\u0703-\u070D\u07F6\u07F7\u07F8\u0964\u0965\u0E4F\u1FBD\u2016\u2017"
    r"\u2020-\u2025\u2030-\u2038\u203B\u203C\u2043\u203E-\u2042\u2044\u207A-\u207F\u208A-\u208E"
    r"\u2100-\u214F\u2190-\u21FF\u2200-\u2BFF\u3001-\u3006\u3008-\u3020\u30FB\uFF01-\uFF0F"
    r"\uFF1A-\uFF20\uFF3B-\uFF40\uFF5B-\uFF65]"
)

# --- token normalisations (the lexer actions) ----------------------------------------------
_CURRENCY = {"\u00a2": "cents", "\u00a3": "#", "\u0080": "$", "\u00a4": "$", "\u20a0": "$", "\u20ac": "$"}
_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "{": "-LCB-", "}": "-RCB-", "[": "-LSB-", "]": "-RSB-"}


def _amp(tok: str) -> str:
    return tok.replace("&amp;", "&")


def _parens(tok: str) -> str:
    return tok.replace("(", "-LRB-").replace(")", "-RRB-")


def _nbsp(tok: str) -> str:
    return tok.replace(" ", "\u00a0")


def _hyphens(tok: str) -> str:
    return "--" if 3 <= len(tok) <= 4 else tok


# Actions: a normaliser (str -> str), or one of these markers.
_SKIP = "skip"  # whitespace, &nbsp;, untokenizable characters: no token
_ABBREV1_SPLIT = "abbrev1"  # keep the period in the token and also return it as a token
_ACRONYM_SPLIT = "acronym"  # like _ABBREV1_SPLIT, but "I." becomes "I" + "."

Action = Callable[[str], str] | str | int  # an int n: give back the last n characters


def _latex_quotes(tok: str, left: bool) -> str:
    """PTBLexer's latexQuotes(): map a quote token to `` ` ' '' (all later dropped as punctuation)."""
    if left:
        tok = re.sub(r"&apos;|'", "`", tok)
        tok = re.sub(r"\"|''|'`|`'|&quot;", "``", tok)
    else:
        tok = re.sub(r"&apos;|'", "'", tok)
        tok = re.sub(r"\"|''|'`|`'|&quot;", "''", tok)
    tok = re.sub("[\u0082\u008b\u0091\u2018\u201a\u201b\u2039]", "`", tok)
    tok = re.sub("[\u0092\u009b\u00b4\u2019\u203a]", "'", tok)
    tok = re.sub("[\u0084\u0093\u201c\u201e\u00ab]|[\u0091\u2018]'", "``", tok)
    return re.sub("[\u0094\u201d\u00bb]|[\u0092\u2019]'", "''", tok)


def _same(tok: str) -> str:
    return tok


def _left(tok: str) -> str:
    return _latex_quotes(tok, True)


def _right(tok: str) -> str:
    return _latex_quotes(tok, False)


_APOWORD = [
    rf"{_APOS}(?i:n){_APOS}?",
    rf"[lLdDjJ]{_APOS}",
    rf"(?i:dunkin){_APOS}",
    rf"(?i:somethin){_APOS}",
    rf"(?i:ol){_APOS}",
    rf"{_APOS}(?i:em)",
    rf"[A-HJ-XZn]{_APOSETC}{_L}{{2}}{_L}*",
    rf"{_APOS}[2-9]0(?i:s)",
    rf"{_APOS}(?i:till?)",
    rf"{_L}{_L}*[aeiouyAEIOUY]{_APOSETC}[aeiouA-Z]{_L}*",
    rf"{_APOS}(?i:cause)",
    r"(?i:cont'd\.?)",
    r"(?i:nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)",
    rf"(?i:o){_APOSETC}(?i:o)",
]
_THING = rf"(?:[dDoOlL]{_APOSETC}{_AN})?{_AN}+(?:{_HYPHEN}(?:[dDoOlL]{_APOSETC}{_AN})?{_AN}+)*"
_HTHING = rf"[A-Za-z0-9][A-Za-z0-9.,\u00AD]*(?:-(?:{_ACRO2}\.|[A-Za-z0-9\u00AD]+))+"
_LDOTS = r"\.{3,5}|[\u0085\u2026]"  # the 3.4.1 jar takes at most five dots at once
_SPACEDLDOTS = r"(?:\.[ \u00A0]){2,4}\."
_DBLQUOT = r"\"|&(?i:quot);"
_QUOTES = rf"(?:''|[`\u2018-\u201F\u0082\u0084\u0091-\u0094\u2039\u203A\u00AB\u00BB]{{1,2}}|{_APOS})"

# The lexer rules: (body, trailing context or None, action), in PTBLexer's priority order.
# Each alternative of APOWORD is its own rule so that the longest one wins, as in JFlex.
_RULES: list[tuple[str, str | None, Action]] = [
    (r"(?i:c\+\+|c#|f#)", None, _same),
    (r"(?i:cannot)", None, 3),
    (r"(?i:'twas)", None, 3),
    (rf"{_APOS}(?i:tis)|(?i:gonna|gotta|lemme|gimme|wanna)", None, 2),
    (_SGML, None, _nbsp),
    (r"&(?i:md|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]", None, lambda t: "--"),
    (r"&(?i:amp);", None, lambda t: "&"),
    (r"&(?i:ht|tl|ur|lr|qc|ql|qr|odq|cdq|#[0-9]+);", None, _same),
    (_WORD, _REDAUX, _same),
    (_SWORD, _SREDAUX, _same),
    (_WORD, None, _same),
    *[(a, None, _same) for a in _APOWORD],
    (rf"(?i:y){_APOS}", _L, _same),
    (r"(?i:ftp|https?)://[^ \t\n\f\r\"<>|(){}]+[^ \t\n\f\r\"<>|.!?(){},-]", None, _same),
    (
        r"(?:(?i:www)\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4}"
        r"|(?:[^ \t\n\f\r\"`'<>|.!?(){}\x2C-\x5F$]+\.)+(?i:com|net|org|edu))"
        r"(?:/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-])?",
        None,
        _same,
    ),
    (
        r"(?:&(?i:lt);|<)?[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00A0{}]*@"
        r"(?:[^ \t\n\f\r\"<>|(){}.\u00A0]+\.)*[^ \t\n\f\r\"<>|(){}.\u00A0]+"
        r"(?:&(?i:gt);|>)?",
        None,
        _same,
    ),
    (r"[@\uFF20][a-zA-Z_][a-zA-Z_0-9]*", None, _same),
    (rf"[#\uFF03]{_LETTER}+", None, _same),
    (_REDAUX, r"[^A-Za-z]", _right),
    (_SREDAUX, r"[^A-Za-z]", _right),
    (rf"{_DIGIT}{{1,2}}[\-/]{_DIGIT}{{1,2}}[\-/]{_DIGIT}{{2,4}}", None, _same),
    (rf"[\-+]?{_NUM}", None, _same),
    (r"[\u207A\u207B\u208A\u208B]?(?:[\u2070\u00B9\u00B2\u00B3\u2074-\u2079]+|[\u2080-\u2089]+)", None, _same),
    (rf"(?:{_DIGIT}{{1,4}}[- \u00A0])?{_DIGIT}{{1,4}}(?:\\?/|\u2044){_DIGIT}{{1,4}}", None, _nbsp),
    (r"[\u00BC\u00BD\u00BE\u2153-\u215E]", None, lambda t: _FRACTIONS.get(t, t)),
    (
        r"-(?i:rrb|lrb|rcb|lcb|rsb|lsb)-|(?i:c\.d\.s|pro-|anti-|s(?:&|&amp;)p-500|s(?:&|&amp;)ls"
        rf"|cap{_APOS}n|c{_APOS}est)",
        None,
        _amp,
    ),
    (r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}", None, _same),
    (r"[A-Z]*\$|#", None, _same),
    (
        r"[\u00A2\u00A3\u00A4\u00A5\u0080\u20A0\u20AC\u060B\u0E3F\u20A4\uFFE0\uFFE1\uFFE5\uFFE6]",
        None,
        lambda t: _CURRENCY.get(t, t),
    ),
    (rf"{_ACRO}\.", rf"{_SPACENL}+{_ACRONYM_NEXT}{_SPACENL}", _ACRONYM_SPLIT),
    (r"(?i:ca|figs?|prop|nos?|art|bldg|pp|op)\.", rf"{_SPACENL}?\d", _same),
    (r"(?i:pt[ey]|co)\.", rf"{_SPACE}(?i:ltd|lim)", _same),
    (_ABBREV1, rf"{_SPACENL}(?:{_SPACENL}|UPPER)", _ABBREV1_SPLIT),
    (_ABBREV1, r"[\s\S][\s\S]", _same),
    (_ABBREV1, None, _ABBREV1_SPLIT),
    (rf"{_ABBREV4}\.", None, _same),
    (_ABBREV4, _SPACE, _same),
    (_ACRO, _SPACENL, _same),
    (rf"{_APOS}[0-9][0-9]", _SPACENL, _same),
    (rf"{_AN}+(?:\.{_AN}+)*\.(?i:{_FILE_EXT})", rf"{_SPACENL}|[.?!,]", _same),
    (rf"{_WORD}\.", r"[,;:\u3001]", _same),
    (
        r"(?:\([0-9]{2,3}\)[ \u00A0]?|(?:\+\+?)?(?:[0-9]{2,4}[\- \u00A0])?[0-9]{2,4}[\- \u00A0])"
        r"[0-9]{3,4}[\- \u00A0]?[0-9]{3,5}|(?:(?:\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\."
        r"[0-9]{3,5}",
        None,
        lambda t: _parens(_nbsp(t)),
    ),
    (_DBLQUOT, r"[\pL\d$]", _left),
    (_DBLQUOT, None, _right),
    ("\x7f", None, _SKIP),
    (r"<|&(?i:lt);", None, lambda t: "<"),
    (r">|&(?i:gt);", None, lambda t: ">"),
    (r"[<>]?[:;=][\-o*']?[()DPdpO\\{@|\[\]]", r"[^A-Za-z0-9]", _parens),
    (
        r"[\^x=~<>]\.\[\^x=~<>]|[\-\^x=~<>']_[\-\^x=~<>']|\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)"
        r"|\([\^x=~<>']-[\^x=~<>'`]\)",
        None,
        _parens,
    ),
    (r"[{}\[\]()]", None, lambda t: _BRACKETS[t]),
    (r"-+", None, _hyphens),
    (_LDOTS, rf"\.{_SPACENL}+{_L}", lambda t: "..."),
    (_SPACEDLDOTS, rf"{_SPACE}\.{_SPACENL}+{_L}", lambda t: "..."),
    (rf"{_LDOTS}|{_SPACEDLDOTS}", None, lambda t: "..."),
    (r"@+|#+|_+", None, _same),
    (r"\*+|(?:\\\*){1,3}", None, _same),
    (r"[,;:\u3001]", None, _same),
    (r"[?!]+", None, _same),
    (r"[.\u00A1\u00BF\u037E\u0589\u061F\u06D4\u0700-\u0702\u07FA\u3002]", None, _same),
    (r"=", None, _same),
    (r"/", None, _same),
    (_HTHING, None, _same),
    (rf"{_HTHING}\.", r"[,;:\u3001]", _same),
    (_THING, None, _same),
    (rf"{_THING}\.", r"[,;:\u3001]", _same),
    (r"[A-Z]+(?:(?:[+&]|&(?i:amp);)[A-Z]+)+\.", r"[,;:\u3001]", _amp),
    (r"[A-Z]+(?:(?:[+&]|&(?i:amp);)[A-Z]+)+", None, _amp),
    ("'", r"[A-Za-z][^ \t\n\r\u00A0]", _left),
    (_QUOTES, None, _right),
    (_REDAUX, None, _right),
    (_SREDAUX, None, _right),
    (r"<<|>>", None, _same),
    (_MISCSYMBOL, None, _same),
    (r"[\u0086\u0087\u0089\u0095\u0098\u0099]", None, _same),
    (rf"\0|{_SPACE}+|[\u200B\u200E\u200F\uFEFF]|&(?i:nbsp);", None, _SKIP),
    (r"[\s\S]", None, _SKIP),  # untokenizable: PTBTokenizer deletes it (with a warning)
]


def _bmp_class(keep: Callable[[str], bool]) -> str:
    """The body of a regex character class holding the BMP characters ``keep`` accepts.

    JFlex 1.4 works on UTF-16 units, so astral characters never match its classes (they are
    untokenisable and deleted); limiting our classes to the BMP reproduces that.
    """
    parts, start, prev = [], None, None
    for code in range(0x10000):
        if 0xD800 <= code < 0xE000 or not keep(chr(code)):
            continue
        if start is not None and code == prev + 1:
            prev = code
            continue
        if start is not None:
            parts.append(f"\\u{start:04x}-\\u{prev:04x}" if prev > start else f"\\u{start:04x}")
        start = prev = code
    if start is not None:
        parts.append(f"\\u{start:04x}-\\u{prev:04x}" if prev > start else f"\\u{start:04x}")
    return "".join(parts)


@lru_cache(maxsize=1)
def _classes() -> tuple[str, str]:
    """([:letter:] body, [:uppercase:] class): Java's Character.isLetter / isUpperCase."""
    letters = _bmp_class(lambda c: unicodedata.category(c).startswith("L"))
    upper = _bmp_class(lambda c: unicodedata.category(c) == "Lu")
    return letters, f"[{upper}]"


@lru_cache(maxsize=1)
def compiled_rules() -> list[tuple[re.Pattern[str], Action, bool]]:
    """The lexer rules, compiled on the first call and cached for the process: (pattern, action,
    has trailing context in group ``t``). Calling it early moves that one-off cost out of the
    first tokenisation."""
    letters, upper = _classes()
    out = []
    for body, trail, action in _RULES:
        body = body.replace("\\pL", letters)
        if trail is None:
            out.append((re.compile(f"(?:{body})"), action, False))
        else:
            trail = trail.replace("UPPER", upper).replace("\\pL", letters)
            out.append((re.compile(f"(?:{body})(?=(?P<t>{trail}))"), action, True))
    return out


# Tokens whose outcome never depends on the rules: a run of ASCII letters followed by
# whitespace or the end (no rule can match longer from here, and every rule matching exactly
# that run returns it unchanged), free-standing ,;:. and ?! runs.  See _lex_line.
_FAST = re.compile(
    r"(?P<w>[A-Za-z]+)(?=[ \t\n]|\Z)"
    r"|(?P<p>[,;:]|\.(?![ \u00A0]\.))(?=[ \t\n]|\Z)"
    r"|(?P<q>[?!]+)(?=[ \t\n]|\Z)"
)
_SPACES = re.compile(r"[ \t]+")
# A whole line of plain words and free-standing punctuation: its tokens are its pieces.
_SIMPLE_LINE = re.compile(r" *(?:(?:[A-Za-z]+|[,;:]|[?!]+|\.) +)*(?:[A-Za-z]+|[,;:]|[?!]+|\.)? *")
_SIMPLE_LINE_TRAPS = re.compile(r"\. \.|(?i:\b(?:cannot|gonna|gotta|lemme|gimme|wanna)\b)")
_ASSIMILATIONS = frozenset(["cannot", "gonna", "gotta", "lemme", "gimme", "wanna"])


def _longest(text: str, pos: int) -> tuple[int, int, Action]:
    """JFlex's choice at ``pos``: (matched length, length incl. trailing context, action)."""
    best_total, best_len, best_action = -1, 0, None
    for pattern, action, has_trail in compiled_rules():
        m = pattern.match(text, pos)
        if m is None:
            continue
        length = m.end() - pos
        total = length + (len(m.group("t")) if has_trail else 0)
        if total > best_total:
            best_total, best_len, best_action = total, length, action
    assert best_action is not None  # the last rule matches any character
    return best_len, best_total, best_action


def _lex_first_line(text: str) -> list[str]:
    """PTB tokens of ``text`` up to its first newline (before lowercasing).

    What follows the newline is only read as trailing context, as the jar reads the next line.
    """
    toks: list[str] = []
    pos, n = 0, len(text)
    fast, spaces = _FAST.match, _SPACES.match
    while pos < n and text[pos] != "\n":
        m = spaces(text, pos)
        if m:
            pos = m.end()
            continue
        m = fast(text, pos)
        if m and not (m.lastgroup == "w" and m.group().lower() in _ASSIMILATIONS):
            toks.append(m.group())
            pos = m.end()
            continue
        length, _, action = _longest(text, pos)
        tok = text[pos : pos + length]
        pos += length
        if action == _SKIP:
            continue
        if isinstance(action, int):  # give back the last n characters
            pos -= action
            tok = tok[:-action]
        elif action in (_ABBREV1_SPLIT, _ACRONYM_SPLIT):
            pos -= 1  # the period is also returned as the next token
            if action == _ACRONYM_SPLIT and len(tok) == 2:
                tok = tok[:-1]
        else:
            tok = action(tok)
        toks.append(tok)
    return toks


# Line separators the jar would treat as a new line; pycocoevalcap only replaces "\n", so any
# of these in a caption shifts every later caption onto the wrong image.  We map them to spaces.
_LINE_BREAKS = re.compile("[\r\n\u2028\u2029\u000b\u000c]")


def _context(captions: Sequence[str], i: int) -> str:
    """The text after caption ``i`` that the jar's lookahead can reach: up to a non-blank one."""
    parts = []
    for c in captions[i + 1 : i + 50]:
        parts.append(c)
        if c.strip():
            break
    return "\n".join(parts)


def ptb_tokenize_batch(captions: Sequence[str]) -> list[str]:
    """Tokenise captions exactly as pycocoevalcap's PTBTokenizer does for one ``tokenize`` call.

    Returns one string per caption: lowercased PTB tokens joined by single spaces, with
    pycocoevalcap's punctuation list removed.  The jar sees the captions as one newline-joined
    text, and a few rules look across the line break (an abbreviation at the end of a caption
    followed by an upper-case letter is also a sentence end), so each caption is lexed with the
    captions after it as context.  Plain captions (words and free-standing punctuation) skip
    the lexer: their tokens are their pieces.
    """
    captions = [_LINE_BREAKS.sub(" ", c) for c in captions]
    out = []
    simple, traps, punct = _SIMPLE_LINE.fullmatch, _SIMPLE_LINE_TRAPS.search, PUNCTUATIONS
    for i, cap in enumerate(captions):
        if simple(cap) and not traps(cap):
            toks = cap.lower().split()
        else:
            text = cap if i == len(captions) - 1 else cap + "\n" + _context(captions, i)  # jar: EOF
            toks = " ".join(_lex_first_line(text)).lower().rstrip().split(" ")
        out.append(" ".join([w for w in toks if w not in punct]))
    return out
