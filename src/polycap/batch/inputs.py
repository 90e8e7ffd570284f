"""What a batch job captions: folders, globs, manifests (JSONL, CSV, Parquet) and WebDataset shards.

Every source becomes a stream of :class:`Item` (a stable ``id``, a ``path`` for people and for
sidecar files, the ``source`` that :func:`polycap.images.load_image` decodes, and the ``shard``
it came from), read lazily so that memory stays bounded however large the dataset is.

* a folder (recursive) or a glob: ``polycap.images.scan_image_files``; the id is the path as
  found (``photos/cats/1.jpg``);
* a manifest ``.jsonl``/``.csv``/``.parquet``: one image per row, the path or URL in ``--path-column``
  (default: the first of image, path, file_name, filename, url, image_url that exists), relative
  paths taken from the manifest's folder; the id from ``--id-column`` (default: an ``id`` column,
  else the path). polycap's caption manifest (``{"image": ..., "captions": ...}``) is one;
* a WebDataset shard ``.tar``: files grouped by key (the name up to the first dot of its last
  component); the first member with an image suffix is captioned; the id is ``<shard>/<key>``.

A glob of manifests or shards (``'shards/*.tar'``, quoted so that the shell left it alone) stands
for the files it matches, each one input (:func:`expand_inputs`).
"""

from __future__ import annotations

import csv
import glob
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polycap.errors import OptionError
from polycap.images import IMAGE_EXTENSIONS, is_url, scan_image_files
from polycap.records import escape_text

MANIFEST_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".parquet")
TAR_SUFFIXES = (".tar",)
PATH_COLUMNS = ("image", "path", "file_name", "filename", "url", "image_url")
GLOB_CHARS = frozenset("*?[")


@dataclass
class Item:
    """One image of a job."""

    id: str
    path: str
    source: Any  # a path, a URL, or the encoded bytes (tar members)
    shard: str = ""
    error: str | None = None  # set when the row itself is unusable (no path column value, ...)


@dataclass
class InputSpec:
    """How to read the inputs: the names given, and the manifest columns."""

    inputs: list[str]
    path_column: str | None = None
    id_column: str | None = None
    allow_urls: bool = False
    notes: list[str] = field(default_factory=list)  # what the folder walk passed over, for the caller


def kind_of(name: str) -> str:
    """``manifest``, ``tar`` or ``files`` (an image, a folder or a glob)."""
    low = name.lower()
    if os.path.isfile(name) and low.endswith(MANIFEST_SUFFIXES):
        return "manifest"
    if os.path.isfile(name) and low.endswith(TAR_SUFFIXES):
        return "tar"
    return "files"


def expand_inputs(names: list[str]) -> list[str]:
    """The inputs with each glob of manifests or tar shards replaced by the files it matches (sorted).

    A glob is expanded when its pattern ends with a manifest or shard suffix (``*.tar``,
    ``**/*.parquet``) or when everything it matches is a manifest or a shard; any other glob (of
    images, or of images and folders) stays one input for the folder walk, which takes images only.
    """
    out: list[str] = []
    for name in names:
        if os.path.exists(name) or not GLOB_CHARS & set(name) or is_url(name):
            out.append(name)
            continue
        matches = sorted(glob.glob(os.path.expanduser(name), recursive=True))
        data = [m for m in matches if kind_of(m) != "files"]
        explicit = name.lower().endswith(MANIFEST_SUFFIXES + TAR_SUFFIXES)
        out.extend(data if data and (explicit or len(data) == len(matches)) else [name])
    return out


def iter_items(spec: InputSpec, read_data: bool = True) -> Iterator[Item]:
    """Every item of every input, in input order; without ``read_data`` the members of tar shards
    are passed over unread (their items' ``source`` is empty: for listing ids, not for captioning)."""
    for name in expand_inputs(spec.inputs):
        kind = kind_of(name)
        if kind == "manifest":
            yield from _manifest_items(Path(name), spec)
        elif kind == "tar":
            yield from _tar_items(Path(name), read_data)
        else:
            yield from _file_items(name, spec)


def count_items(spec: InputSpec) -> int | None:
    """How many items the inputs hold, when that is cheap to know (None for tar shards)."""
    total = 0
    for name in expand_inputs(spec.inputs):
        kind = kind_of(name)
        if kind == "tar":
            return None
        if kind == "files":
            total += len(scan_image_files([name]).paths)
        elif name.lower().endswith(".parquet"):
            import pyarrow.parquet as pq

            total += pq.ParquetFile(name).metadata.num_rows
        else:
            with open(name, "rb") as f:
                lines = sum(1 for line in f if line.strip())
            total += lines - 1 if name.lower().endswith(".csv") else lines
    return total


def _file_items(name: str, spec: InputSpec) -> Iterator[Item]:
    scan = scan_image_files([name])
    if scan.skipped:
        spec.notes.append(f"{name}: skipped {len(scan.skipped)} files that are hidden or have no image suffix")
    for folder, reason in scan.unreadable:
        spec.notes.append(f"{escape_text(str(folder))}: cannot list the folder: {reason}")
    for p in scan.paths:
        s = os.fspath(p)
        yield Item(id=escape_text(s), path=s, source=s, shard=name)


def _manifest_rows(path: Path) -> Iterator[dict[str, Any]]:
    low = path.name.lower()
    if low.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise OptionError("reading Parquet manifests needs pyarrow: pip install 'polycap[batch]'") from e
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
    elif low.endswith(".csv"):
        with path.open(newline="", encoding="utf-8") as f:
            yield from csv.DictReader(f)
    else:
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    row = {"__error__": f"{path}:{lineno}: not a JSON line ({e})"}
                yield row if isinstance(row, dict) else {"__error__": f"{path}:{lineno}: not a JSON object"}


def _manifest_items(path: Path, spec: InputSpec) -> Iterator[Item]:
    base = path.parent
    column = spec.path_column
    for n, row in enumerate(_manifest_rows(path)):
        if column is None:
            column = next((c for c in PATH_COLUMNS if c in row), None)
            if column is None:
                raise OptionError(
                    f"{path}: no image column; name it with --path-column (columns: {', '.join(map(str, row))})"
                )
        value = row.get(column)
        rid = row.get(spec.id_column or "id")
        if spec.id_column and rid is None:
            raise OptionError(f"{path}: row {n + 1} has no --id-column {spec.id_column!r}")
        if "__error__" in row or not isinstance(value, str) or not value:
            rid = str(rid if rid is not None else f"{path.name}#{n + 1}")
            why = row.get("__error__") or f"row {n + 1} has no {column!r} value"
            yield Item(id=rid, path="", source=None, shard=str(path), error=why)
            continue
        url = is_url(value)
        source = value if url or os.path.isabs(value) else os.fspath(base / value)
        yield Item(id=str(rid if rid is not None else value), path=source, source=source, shard=str(path))


def _tar_items(path: Path, read_data: bool = True) -> Iterator[Item]:
    """Stream a WebDataset shard: one item per key, from its first image member."""
    seen: set[str] = set()
    try:
        tar = tarfile.open(path, mode="r|*")  # noqa: SIM115 - streamed, closed below
    except (tarfile.TarError, OSError) as e:
        yield Item(id=f"{path.name}", path=str(path), source=None, shard=str(path), error=f"cannot read the shard: {e}")
        return
    with tar:
        try:
            for member in tar:
                if not member.isfile():
                    continue
                dirname, _, base = member.name.rpartition("/")
                key, _, ext = base.partition(".")
                key = f"{dirname}/{key}" if dirname else key
                if key in seen or f".{ext.rsplit('.', 1)[-1].lower()}" not in IMAGE_EXTENSIONS:
                    continue
                seen.add(key)
                f = tar.extractfile(member) if read_data else None
                data = f.read() if f is not None else b""
                yield Item(id=f"{path.name}/{key}", path=f"{path}/{member.name}", source=data, shard=str(path))
        except (tarfile.TarError, OSError) as e:
            yield Item(id=f"{path.name}/#truncated", path=str(path), source=None, shard=str(path),
                       error=f"the shard is damaged after {len(seen)} images: {e}")  # fmt: skip
