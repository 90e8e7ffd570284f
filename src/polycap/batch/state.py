"""Crash-safe files for batch jobs: append-only JSON Lines journals and atomic replacement.

A job may be killed (``kill -9``, a power cut of the container, Ctrl-C) at any instant, and the
same command run again must continue exactly: no record twice, none missing, no half line. Two
rules give that:

* a record is one ``os.write`` of one whole line to a file opened with ``O_APPEND``; a kill can
  only leave a torn *last* line, which :func:`read_jsonl` cuts off (and truncates away) on restart;
* every other file (a sidecar caption, an image with new metadata, a Parquet part, a COCO results
  file) is written to a temporary file in the same folder and moved over the target with
  ``os.replace``, which is atomic on POSIX: readers see the old file or the new one, never a mix.

A kill between creating such a temporary file and the rename leaves it behind (``.<name>.<pid>
.polycap-tmp`` beside the target); each output removes the ones of its own targets on the next
start (:func:`remove_stale_temps`).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_MARK = ".polycap-tmp"


def read_jsonl(path: Path, repair: bool = True) -> Iterator[dict[str, Any]]:
    """The whole JSON lines of ``path`` (nothing if it is missing); a torn last line is cut off.

    With ``repair`` the file is truncated after its last whole line, so that appending goes on
    from a clean end. A line that is whole but not JSON is skipped (it cannot be ours).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    end = data.rfind(b"\n") + 1
    if repair and end < len(data):
        with path.open("r+b") as f:
            f.truncate(end)
    for line in data[:end].splitlines():
        if line.strip():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                yield rec


class Journal:
    """An append-only JSON Lines file, each entry written whole in one system call."""

    def __init__(self, path: Path, fsync: bool = False):
        self.path = path
        self.fsync = fsync
        self._fd: int | None = None

    def entries(self) -> list[dict[str, Any]]:
        """Every whole entry (the torn tail of a killed run, and the temporary file of a killed
        :meth:`rewrite`, are removed first)."""
        remove_stale_temps(self.path)
        return list(read_jsonl(self.path))

    def append(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry, ensure_ascii=False, default=str) + "\n").encode("utf-8", "backslashreplace")
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        view = memoryview(line)
        while view:  # a regular file takes it in one call; the loop only guards against a short write
            view = view[os.write(self._fd, view) :]
        if self.fsync:
            os.fsync(self._fd)

    def rewrite(self, entries: list[dict[str, Any]]) -> None:
        """Replace the whole journal atomically (e.g. without the failed entries, for a retry)."""
        self.close()
        text = "".join(json.dumps(e, ensure_ascii=False, default=str) + "\n" for e in entries)
        write_atomic(self.path, text.encode("utf-8", "backslashreplace"))

    def drop_last(self) -> None:
        """Cut the last entry off (it described a write that never happened)."""
        data = self.path.read_bytes()
        end = data.rstrip(b"\n").rfind(b"\n") + 1
        with self.path.open("r+b") as f:
            f.truncate(end)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def temp_path(target: Path) -> Path:
    """A temporary name beside ``target`` (same folder, so ``os.replace`` is a rename)."""
    return target.with_name(f".{target.name}.{os.getpid()}{TMP_MARK}")


def remove_stale_temps(target: Path) -> int:
    """Remove what killed runs left of :func:`write_atomic` for ``target``: the files
    ``.<target name>.<pid>.polycap-tmp`` beside it, of any process but this one; how many.

    Only names made by :func:`temp_path` for this very target are touched, so files of other
    targets (and the user's own files) in the same folder stay.
    """
    prefix = f".{target.name}."
    removed = 0
    try:
        candidates = list(target.parent.glob(glob.escape(prefix) + "*" + TMP_MARK))
    except OSError:
        return 0
    for tmp in candidates:
        pid = tmp.name[len(prefix) : -len(TMP_MARK)]
        if pid.isdigit() and int(pid) != os.getpid():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed += 1
    return removed


def write_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` so that the file is either the old one or the whole new one."""
    tmp = temp_path(target)
    try:
        with tmp.open("wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def sha256_file(path: Path) -> str | None:
    """The hex SHA-256 of a file, None if it cannot be read."""
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
