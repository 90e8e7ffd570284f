"""Prompt templates (files under ``prompts/``) and the cleanup of what language models answer.

Templates are plain text with ``${name}`` placeholders (``string.Template``), so a user's own
template may contain braces, JSON or code without escaping. Variables:

* ``caption.txt`` (vision call): ``${language}`` (English name, e.g. "German"), ``${lang}`` (the
  code), ``${style}`` (the style as given) and ``${style_instruction}`` (from ``styles/<name>.txt``);
* ``rewrite.txt`` (text call of a style pipeline): the same plus ``${description}``.

Unknown placeholders are left as they are rather than failing, so a template written for one
call can be reused for the other. Styles with a file (``social``, ``alt-text``, ``detailed``,
``hashtags``) use it; any other style string is a free instruction placed into ``styles/custom.txt``.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from string import Template

from polycap.errors import OptionError
from polycap.types import GenerationOptions

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
NAMED_STYLES = ("social", "alt-text", "detailed", "hashtags")
_STYLE_ALIASES = {"alt": "alt-text", "alttext": "alt-text", "alt_text": "alt-text", "hashtag": "hashtags"}


@lru_cache(maxsize=32)
def _read(relative: str) -> str:
    return (PROMPT_DIR / relative).read_text(encoding="utf-8").strip()


@lru_cache(maxsize=1)
def _languages() -> dict[str, str]:
    table = json.loads(_read("languages.json"))
    return {k: v for k, v in table.items() if not k.startswith("_")}


def language_name(code: str) -> str:
    """English name of a language code for prompts ("de" -> "German", "pt-BR" -> "Brazilian Portuguese").

    Unknown tags fall back to their primary subtag, then to "the language with code X", which
    large models understand for any ISO 639 code.
    """
    tag = code.strip().replace("_", "-").lower()
    table = _languages()
    if tag in table:
        return table[tag]
    primary = tag.split("-")[0]
    if primary in table:
        return f"{table[primary]} ({code})"
    return f"the language with code {code!r}"


def normalise_style(style: str | None) -> str | None:
    """Named styles are matched case-insensitively with a few aliases; free text is kept as is."""
    if style is None or not style.strip():
        return None
    key = style.strip().lower()
    key = _STYLE_ALIASES.get(key, key)
    return key if key in NAMED_STYLES else style.strip()


def style_instruction(style: str | None) -> str:
    """The sentence that tells the model how to write (from a file, or a free instruction)."""
    name = normalise_style(style)
    if name is None:
        return _read("styles/default.txt")
    if name in NAMED_STYLES:
        return _read(f"styles/{name}.txt")
    return Template(_read("styles/custom.txt")).safe_substitute(instruction=name)


def load_template(prompt: str | None = None, prompt_file: str | Path | None = None) -> str | None:
    """A user's template: given inline, read from a file, or None for the built-in one."""
    if prompt is not None and prompt_file is not None:
        raise OptionError("give either prompt or prompt_file, not both")
    if prompt_file is not None:
        path = Path(prompt_file).expanduser()
        try:
            prompt = path.read_text(encoding="utf-8")
        except OSError as e:
            raise OptionError(f"cannot read the prompt file {path}: {e.strerror or e}") from e
    if prompt is not None and not prompt.strip():
        raise OptionError("the prompt template is empty")
    return prompt


def _variables(options: GenerationOptions, style: str | None) -> dict[str, str]:
    return {
        "language": language_name(options.lang),
        "lang": options.lang,
        "style": normalise_style(style) or "",
        "style_instruction": style_instruction(style),
    }


def caption_prompt(options: GenerationOptions, template: str | None = None, style: str | None = None) -> str:
    """The text sent with the image; ``style`` overrides ``options.style`` (a default style)."""
    text = template if template is not None else _read("caption.txt")
    return Template(text).safe_substitute(_variables(options, options.style or style)).strip()


def rewrite_prompt(
    description: str, options: GenerationOptions, template: str | None = None, style: str | None = None
) -> str:
    """The text a rewriting language model gets in a describe-then-rewrite style pipeline."""
    text = template if template is not None else _read("rewrite.txt")
    variables = _variables(options, options.style or style)
    return Template(text).safe_substitute(variables, description=description.strip()).strip()


# --------------------------------------------------------------------------------------------
# Cleanup: models add preambles, labels and quotes even when told not to
# --------------------------------------------------------------------------------------------

_PREAMBLE = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|okay|ok|absolutely)\b[,.!]*\s*)?"
    r"here(?:'s|’s| is| are)\b[^\n:：]{0,100}[:：]\s*",
    re.IGNORECASE,
)
_ACK = re.compile(r"^\s*(?:sure|certainly|of course|okay|absolutely)\b[,.!]*\s*\n", re.IGNORECASE)
_LABEL = re.compile(
    r"^\s*(?:\*\*|__)?(?:(?:image |social[- ]media |short )?caption|alt[- ]?text|description|answer|output)"
    r"(?:\*\*|__)?\s*[:：]\s*(?:\*\*|__)?",
    re.IGNORECASE,
)
_ALT_PREFIX = re.compile(
    r"^(?:an?\s+|the\s+)?(?:image|picture|photo|photograph|illustration|screenshot)\s+"
    r"(?:of|showing|shows|depicting|depicts|that shows|with)\s+",
    re.IGNORECASE,
)
_TRAILING_NOTE = re.compile(r"\n\s*\(?(?:note|notes|explanation)\s*[:：].*\Z", re.IGNORECASE | re.DOTALL)
_QUOTE_PAIRS = (('"', '"'), ("'", "'"), ("“", "”"), ("„", "“"), ("„", "”"), ("«", "»"), ("»", "«"),
                ("‘", "’"), ("‚", "‘"), ("「", "」"), ("『", "』"), ("`", "`"))
_SINGLE_PARAGRAPH_STYLES = (None, "alt-text")


def clean_caption(text: str | None, style: str | None = None) -> str:
    """Strip preambles ("Here is a caption:"), labels ("Caption:"), wrapping quotes and notes.

    Plain and alt-text captions keep only their first paragraph (a model sometimes adds a
    second "alternative"); alt text also loses a leading "Image of ...".
    """
    if not text:
        return ""
    style = normalise_style(style)
    out = _TRAILING_NOTE.sub("", text.strip())
    out = _ACK.sub("", out, count=1)
    out = _PREAMBLE.sub("", out, count=1).strip()
    out = _LABEL.sub("", out, count=1).strip()
    if style in _SINGLE_PARAGRAPH_STYLES:
        out = re.split(r"\n\s*\n", out, maxsplit=1)[0].strip()
    out = _strip_wrappers(out)
    if style == "alt-text":
        stripped = _ALT_PREFIX.sub("", out, count=1)
        if stripped != out and stripped:
            out = stripped[0].upper() + stripped[1:]
    return out.strip()


def _strip_wrappers(text: str) -> str:
    """Remove one layer of markdown bold/italic and of matching outer quotes, if they wrap it all."""
    for mark in ("**", "__", "*", "_"):
        if len(text) > 2 * len(mark) and text.startswith(mark) and text.endswith(mark):
            inner = text[len(mark) : -len(mark)]
            if mark not in inner:
                text = inner.strip()
                break
    for left, right in _QUOTE_PAIRS:
        if len(text) >= 2 and text.startswith(left) and text.endswith(right):
            inner = text[1:-1]
            if left not in inner and right not in inner:  # "a" and "b" is not one quoted caption
                return inner.strip()
    return text
