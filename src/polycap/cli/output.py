"""Writing caption records as text, JSON, JSON Lines or CSV, streaming where the format allows."""

from __future__ import annotations

import csv
import json
from typing import IO, Any

from polycap.types import Caption

FORMATS = ("text", "json", "jsonl", "csv")
CSV_FIELDS = ["image", "lang", "caption", "score", "model", "seconds", "error"]


def record(c: Caption) -> dict[str, Any]:
    """The public shape of one caption record (CLI, server and batch jobs use the same keys)."""
    rec: dict[str, Any] = {
        "image": c.source,
        "lang": c.lang,
        "caption": c.text,
        "score": c.score,
        "model": c.model,
        "seconds": round(c.seconds, 4) if c.seconds is not None else None,
        "error": c.error,
    }
    if c.alternatives:
        rec["alternatives"] = [{"caption": a.text, "score": a.score} for a in c.alternatives]
    if c.meta:
        rec["meta"] = c.meta
    return rec


class RecordWriter:
    def __init__(self, stream: IO[str], fmt: str):
        self.stream, self.fmt = stream, fmt
        self.buffer: list[dict[str, Any]] = []
        self.csv = csv.DictWriter(stream, CSV_FIELDS, extrasaction="ignore") if fmt == "csv" else None
        if self.csv:
            self.csv.writeheader()

    def write(self, c: Caption) -> None:
        rec = record(c)
        if self.fmt == "json":
            self.buffer.append(rec)
            return
        if self.fmt == "jsonl":
            self.stream.write(json.dumps(rec, ensure_ascii=False) + "\n")
        elif self.csv:
            self.csv.writerow(rec)
        elif c.ok:  # text: errors go to stderr only
            self.stream.write(f"{c.source}\t{c.lang}\t{c.text}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            json.dump(self.buffer, self.stream, ensure_ascii=False, indent=2)
            self.stream.write("\n")
        self.stream.flush()
