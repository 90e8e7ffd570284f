"""Writing caption records as text, JSON, JSON Lines or CSV, one whole record at a time.

File names are bytes on POSIX, and Python hands over the ones that are not valid UTF-8 as ``str``
with surrogate escapes, which no UTF-8 writer accepts. Records therefore carry names in one escaped
form: each undecodable byte as ``\\xNN`` (``café`` in Latin-1 -> ``caf\\xe9``), plus an
``image_bytes`` field with the exact bytes (base64) only for such names. The ``text`` format and
stderr lines also escape tabs, newlines and other control characters (``\\t``, ``\\n``, ``\\x1b``),
so one image is always one line.
"""

from __future__ import annotations

import base64
import codecs
import csv
import io
import json
import os
import re
import textwrap
from typing import IO, Any

from polycap.types import Caption

FORMATS = ("text", "json", "jsonl", "csv")
CSV_FIELDS = ["image", "lang", "caption", "score", "model", "seconds", "error", "image_bytes"]

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


class RecordWriter:
    """Write records to a text stream as they come, each in one ``write`` followed by a flush.

    A killed job therefore leaves only whole records: whole lines for ``jsonl``/``csv``/``text``
    and, for ``json``, an array of whole elements that only lacks its closing ``]``.
    """

    def __init__(self, stream: IO[str], fmt: str):
        self.stream, self.fmt = stream, fmt
        self.count = 0
        # JSON to a stream that is not UTF-8 (an ASCII terminal) uses \uNNNN escapes: still valid JSON
        self.ascii = not _is_utf8(getattr(stream, "encoding", None) or "utf-8")
        if fmt == "csv":
            self._put(_csv_line(CSV_FIELDS))
        elif fmt == "json":
            self._put("[")

    def write(self, c: Caption) -> None:
        chunk = self.format(c)
        if chunk:
            self._put(chunk)
        self.count += 1

    def format(self, c: Caption) -> str:
        """The text ``write`` adds for one caption ("" for a failed item in ``text``: stderr has it)."""
        if self.fmt == "text":
            if not c.ok:
                return ""
            return "\t".join(escape_text(x or "", controls=True) for x in (c.source, c.lang, c.text)) + "\n"
        rec = record(c)
        if self.fmt == "jsonl":
            return _json(rec, self.ascii) + "\n"
        if self.fmt == "csv":
            return _csv_line([rec.get(k) for k in CSV_FIELDS])
        # json: the same text json.dump(records, indent=2) would give, one element at a time
        return ("\n" if self.count == 0 else ",\n") + textwrap.indent(_json(rec, self.ascii, indent=2), "  ")

    def close(self) -> None:
        if self.fmt == "json":
            self._put("\n]\n" if self.count else "]\n")
        else:
            self.stream.flush()

    def _put(self, chunk: str) -> None:
        self.stream.write(chunk)
        self.stream.flush()


def _json(rec: dict[str, Any], ascii_only: bool, indent: int | None = None) -> str:
    # default=str: a backend's odd value in ``meta`` must not cost the record
    return json.dumps(rec, ensure_ascii=ascii_only, indent=indent, default=str)


def _is_utf8(encoding: str) -> bool:
    try:
        return codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False


def _csv_line(values: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerow(values)
    return buf.getvalue()
