"""Where a batch job's records go, each output keeping its own state so a rerun continues exactly.

Every output answers :meth:`Output.status` for one (image, language): ``None`` (still to write),
``"done"``, ``"failed"`` (an error record is kept; ``--retry-failed`` drops those on start) or
``"existing"`` (a caption the user already had, kept by ``--existing skip``). The engine captions
an image for the languages some output still needs and hands each output only what it lacks, so
several outputs in one job stay exact even when a kill left them at different points.

* :class:`JsonlOutput`: the JSON Lines file is its own state (one whole line per record);
* :class:`ParquetOutput`: a folder of ``part-NNNNN.parquet`` files, each written atomically, read
  back on start (pyarrow, pandas, DuckDB, Spark and Ray read such a folder as one table);
* :class:`CocoOutput`: COCO results JSON (``[{"image_id", "caption"}]``), one file per language,
  rewritten atomically at the end of every run from its journal ``<file>.state.jsonl``;
* sidecar text files and image metadata: :mod:`polycap.batch.sidecars`.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from polycap.batch.inputs import Item
from polycap.batch.state import TMP_MARK, Journal, read_jsonl, remove_stale_temps, write_atomic
from polycap.records import coco_image_id, coco_state_path

Key = tuple[str, str]  # (image id, language)


class Output(ABC):
    """One destination of records; see the module docstring."""

    name = "output"

    def __init__(self) -> None:
        self.state: dict[Key, str] = {}  # key -> "done" | "failed"

    @abstractmethod
    def start(self, retry_failed: bool) -> None:
        """Read the state a previous run left (repairing a torn end); drop failures to retry them."""

    def status(self, item: Item, lang: str) -> str | None:
        return self.state.get((item.id, lang))

    @abstractmethod
    def write(self, item: Item, recs: list[dict[str, Any]]) -> dict[str, str] | None:
        """Write the records of one image (one per language this output still lacks).

        Returns {language: error} for records this output could not take (kept as failed), if any.
        """

    def close(self) -> None:
        """Flush what is buffered; called once at the end of the run, also after an interruption."""
        return None

    def failed_keys(self) -> set[Key]:
        return {k for k, v in self.state.items() if v == "failed"}

    def _load(self, entries: list[dict[str, Any]]) -> None:
        for e in entries:
            if "id" in e and "lang" in e:
                self.state[(str(e["id"]), str(e["lang"]))] = "failed" if e.get("error") else "done"


class JsonlOutput(Output):
    """Records as JSON Lines, appended one whole line per ``os.write``."""

    name = "jsonl"

    def __init__(self, path: Path):
        super().__init__()
        self.journal = Journal(path)

    def start(self, retry_failed: bool) -> None:
        entries = self.journal.entries()
        if any("id" not in e or "lang" not in e for e in entries):
            from polycap.errors import OptionError

            raise OptionError(
                f"{self.journal.path} holds lines that are not polycap batch records (no id/lang, e.g. the output "
                "of polycap caption); give --out a new file"
            )
        self._load(entries)
        if retry_failed and self.failed_keys():
            kept = [e for e in entries if not e.get("error")]
            self.journal.rewrite(kept)
            self.state = {k: v for k, v in self.state.items() if v != "failed"}

    def write(self, item: Item, recs: list[dict[str, Any]]) -> dict[str, str] | None:
        for rec in recs:
            self.journal.append(rec)
            self.state[(item.id, rec["lang"])] = "failed" if rec.get("error") else "done"

    def close(self) -> None:
        self.journal.close()


PARQUET_COLUMNS = ("id", "path", "lang", "caption", "score", "model", "options", "error", "seconds", "extra")


def parquet_schema():
    import pyarrow as pa

    types = {"score": pa.float64(), "seconds": pa.float64()}
    return pa.schema([(c, types.get(c, pa.string())) for c in PARQUET_COLUMNS])


def parquet_row(rec: dict[str, Any]) -> dict[str, Any]:
    """A record as a flat Parquet row: ``options`` and any other fields as JSON text."""
    row = {c: rec.get(c) for c in PARQUET_COLUMNS[:-1]}
    row["options"] = json.dumps(rec.get("options") or {}, sort_keys=True)
    extra = {k: v for k, v in rec.items() if k not in PARQUET_COLUMNS}
    row["extra"] = json.dumps(extra, default=str, ensure_ascii=False) if extra else None
    return row


def record_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`parquet_row` (the Ray engine and tests compare records with it)."""
    rec = {c: row.get(c) for c in PARQUET_COLUMNS[:-1]}
    rec["options"] = json.loads(row["options"]) if row.get("options") else {}
    rec.update(json.loads(row["extra"]) if row.get("extra") else {})
    return rec


class ParquetOutput(Output):
    """A folder of Parquet parts; rows are buffered and written ``flush_rows`` at a time."""

    name = "parquet"

    def __init__(self, folder: Path, flush_rows: int = 1000):
        super().__init__()
        try:
            import pyarrow  # noqa: F401
        except ImportError as e:
            from polycap.errors import OptionError

            raise OptionError("--parquet needs pyarrow: pip install 'polycap[batch]'") from e
        self.folder, self.flush_rows = folder, flush_rows
        self.rows: list[dict[str, Any]] = []
        self.next_part = 0

    def parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet"))

    def start(self, retry_failed: bool) -> None:
        import pyarrow.parquet as pq

        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(f"*{TMP_MARK}"):
            stale.unlink()  # a part a killed run did not finish
        for part in self.parts():
            table = pq.read_table(part, columns=["id", "lang", "error"])
            rows = table.to_pylist()
            if retry_failed and any(r["error"] for r in rows):
                full = pq.read_table(part)
                keep = [r for r in full.to_pylist() if not r["error"]]
                self._write_table(part, keep)
                rows = [r for r in rows if not r["error"]]
            self._load(rows)
            self.next_part = max(self.next_part, int(re.sub(r"\D", "", part.stem) or 0) + 1)

    def write(self, item: Item, recs: list[dict[str, Any]]) -> dict[str, str] | None:
        for rec in recs:
            self.rows.append(parquet_row(rec))
            self.state[(item.id, rec["lang"])] = "failed" if rec.get("error") else "done"
        if len(self.rows) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self._write_table(self.folder / f"part-{self.next_part:05d}.parquet", self.rows)
            self.next_part += 1
            self.rows = []

    def close(self) -> None:
        self.flush()

    @staticmethod
    def _write_table(target: Path, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(rows, schema=parquet_schema()), sink)
        write_atomic(target, sink.getvalue().to_pybytes())


class CocoOutput(Output):
    """COCO caption results, one JSON file per language, rebuilt from a journal at each close."""

    name = "coco"

    def __init__(self, path: Path, langs: list[str]):
        super().__init__()
        self.path, self.langs = path, langs
        self.journal = Journal(coco_state_path(path))
        self.entries: list[dict[str, Any]] = []

    def file_for(self, lang: str) -> Path:
        if len(self.langs) == 1:
            return self.path
        return self.path.with_name(f"{self.path.stem}.{lang}{self.path.suffix}")

    def start(self, retry_failed: bool) -> None:
        for lang in self.langs:
            remove_stale_temps(self.file_for(lang))  # a results file a killed close() did not finish
        self.entries = self.journal.entries()
        if retry_failed and any(e.get("error") for e in self.entries):
            self.entries = [e for e in self.entries if not e.get("error")]
            self.journal.rewrite(self.entries)
        self._load(self.entries)

    def write(self, item: Item, recs: list[dict[str, Any]]) -> dict[str, str] | None:
        for rec in recs:
            entry = {"id": item.id, "lang": rec["lang"], "caption": rec.get("caption") or "", "error": rec.get("error")}
            self.journal.append(entry)
            self.entries.append(entry)
            self.state[(item.id, rec["lang"])] = "failed" if entry["error"] else "done"

    def close(self) -> None:
        self.journal.close()
        for lang in self.langs:
            results = [
                {"image_id": coco_image_id(e["id"]), "caption": e["caption"]}
                for e in self.entries
                if e["lang"] == lang and not e.get("error")
            ]
            write_atomic(self.file_for(lang), (json.dumps(results, ensure_ascii=False, indent=1) + "\n").encode())


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file or a Parquet folder/file, as dicts (for tests and tools)."""
    if path.is_dir() or path.suffix == ".parquet":
        import pyarrow.parquet as pq

        parts = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        return [record_from_row(r) for p in parts for r in pq.read_table(p).to_pylist()]
    return list(read_jsonl(path, repair=False))
