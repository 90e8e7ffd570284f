"""An on-disk cache of successful remote responses, so re-running a batch costs nothing.

One JSON file per key, where the key is the sha256 of the canonical JSON of everything that
decides the answer: the uploaded image's sha256, provider, endpoint, model, the exact prompt and
the request parameters. API keys are never part of a key or a record. Writes are atomic (a
temporary file renamed into place), so a crash or two processes writing the same key can never
leave a half-written file; an unreadable file is treated as a miss.

Location: ``cache_dir`` if given, else ``$POLYCAP_CACHE_DIR/remote``, else
``$XDG_CACHE_HOME/polycap/remote``, else ``~/.cache/polycap/remote``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """polycap's cache root (``POLYCAP_CACHE_DIR`` overrides it) + ``remote``."""
    root = os.environ.get("POLYCAP_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "remote"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "polycap" / "remote"


def cache_key(fields: dict[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no whitespace) of ``fields``."""
    canonical = json.dumps({"v": FORMAT_VERSION, **fields}, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                           default=repr)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """``get``/``put`` JSON records by key under ``root/<key[:2]>/<key>.json``."""

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.root)!r})"

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.debug("ignoring unreadable cache entry %s: %s", path, e)
            return None
        return record if isinstance(record, dict) and record.get("v") == FORMAT_VERSION else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store ``record`` atomically; a cache that cannot be written only costs a warning."""
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump({"v": FORMAT_VERSION, **record}, f, ensure_ascii=False, indent=1)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            log.warning("could not write the response cache at %s: %s", path, e)


class SingleFlight:
    """Serialise work on equal keys, so identical requests in flight at once cost one call.

    The second caller waits for the first and then finds its answer in the cache. Entries are
    dropped when nobody holds them, so memory does not grow with the number of keys seen.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: dict[str, list[Any]] = {}  # key -> [lock, number of holders and waiters]

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            entry = self._held.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._held[key]
