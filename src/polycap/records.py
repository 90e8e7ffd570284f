"""The public shape of a caption record, and the escaping of names every writer of records shares.

File names are bytes on POSIX, and Python hands over the ones that are not valid UTF-8 as ``str``
with surrogate escapes, which no UTF-8 writer accepts. Records therefore carry names in one escaped
form: each undecodable byte as ``\\xNN`` (``café`` in Latin-1 -> ``caf\\xe9``), plus an
``image_bytes`` field with the exact bytes (base64) only for such names. One-line outputs (the
``text`` format, stderr lines) also escape tabs, newlines and other control characters.

The CLI, the server and batch jobs all build records here, so the keys are the same everywhere.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Any

from polycap.types import Caption

__all__ = ["coco_image_id", "coco_state_path", "error_line", "escape_text", "name_bytes", "record"]

_SURROGATES = re.compile("[\ud800-\udfff]")
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group()
    code = ord(ch)
    if ch in _NAMED:
        return _NAMED[ch]
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogate escape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_text(s: str, controls: bool = False) -> str:
    """``s`` as valid Unicode: undecodable bytes as ``\\xNN``, other lone surrogates as ``\\uNNNN``;
    with ``controls`` also tab, newline and other control characters (for one-line output)."""
    pattern = _UNPRINTABLE if controls else _SURROGATES
    return pattern.sub(_escape_char, s) if pattern.search(s) else s


def name_bytes(name: str | None) -> bytes | None:
    """The exact bytes of a file name that is not valid Unicode text, else None."""
    if not name or not _SURROGATES.search(name):
        return None
    try:
        return os.fsencode(name)
    except UnicodeEncodeError:  # a surrogate that no byte produced: keep its code point's bytes
        return name.encode("utf-8", "surrogatepass")


def record(c: Caption) -> dict[str, Any]:
    """The public shape of one caption record (CLI, server and batch jobs use the same keys)."""
    rec: dict[str, Any] = {
        "image": escape_text(c.source) if c.source else c.source,
        "lang": c.lang,
        "caption": escape_text(c.text),
        "score": c.score,
        "model": c.model,
        "seconds": round(c.seconds, 4) if c.seconds is not None else None,
        "error": escape_text(c.error) if c.error else c.error,
    }
    raw = name_bytes(c.source)
    if raw is not None:
        rec["image_bytes"] = base64.b64encode(raw).decode("ascii")
    if c.alternatives:
        rec["alternatives"] = [{"caption": escape_text(a.text), "score": a.score} for a in c.alternatives]
    if c.meta:
        rec["meta"] = c.meta
    return rec


def error_line(c: Caption) -> str:
    """``error: <image>: <reason>`` on one line, naming the image once (ImageError names it too)."""
    source, error = c.source or "", c.error or ""
    if source and error.startswith(f"{source}: "):
        error = error[len(source) + 2 :]
    return f"error: {escape_text(source, controls=True)}: {escape_text(error, controls=True)}"


def coco_image_id(image_id: str) -> int | str:
    """COCO ids are numbers: ``COCO_val2014_000000391895.jpg`` -> 391895; other names stay text.

    ``polycap batch --coco`` writes its results with these ids; ``polycap score`` maps them back.
    """
    stem = Path(image_id).stem
    m = re.search(r"(\d+)$", stem)
    return int(m.group(1)) if m and (stem.isdigit() or stem.startswith("COCO_")) else image_id


def coco_state_path(results: Path) -> Path:
    """The journal ``polycap batch --coco FILE.json`` keeps beside its results: ``FILE.json.state.jsonl``
    (one entry per image and language: the record ``id``, ``lang``, ``caption``, ``error``)."""
    return results.with_name(results.name + ".state.jsonl")
