"""Writing caption records as text, JSON, JSON Lines or CSV, one whole record at a time.

The record shape and the escaping of names live in :mod:`polycap.records` (batch jobs use them
too, and they may not import the CLI); they are re-exported here for existing imports. The
``text`` format and stderr lines escape tabs, newlines and other control characters, so one image
is always one line.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import textwrap
from typing import IO, Any

from polycap.records import error_line, escape_text, name_bytes, record  # noqa: F401 - re-exported
from polycap.types import Caption

FORMATS = ("text", "json", "jsonl", "csv")
CSV_FIELDS = ["image", "lang", "caption", "score", "model", "seconds", "error", "image_bytes"]


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
