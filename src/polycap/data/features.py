"""A disk cache of frozen-encoder features, so training never runs the image encoder twice.

Layout (one folder per encoder + preprocessing, so changing either never mixes features)::

    cache_dir/<encoder name>-<sha256(preprocessing_id)[:10]>/
        index.json               {"items": {key: [shard file, row]}, "files": {path: [size, mtime_ns, sha256]}, ...}
        shard-00000.safetensors  "features": (n, N, C) float16; metadata "keys": JSON list, row order
        shard-00001.safetensors  ...

Keys are the sha256 of the image file's bytes (``<sha>-flip`` for the mirrored view), so a renamed
or copied file hits the cache and an edited file does not. Shards are immutable once written; each
write is a temp file + ``os.replace``, shard first and index second, and a shard the index does not
know (a run killed between the two) is adopted from its own metadata on the next open. So a killed
extraction leaves a usable cache and a rerun computes only what is missing.

Safetensors, not pickle: loading a cache can never run code, and shards are read by memory map.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from polycap.errors import PolycapError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
FLIP_SUFFIX = "-flip"
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.safetensors$")


class MissingFeaturesError(PolycapError, LookupError):
    """Features were asked for an image the cache has not computed (or could not read)."""


class Encoder(Protocol):
    """What the cache needs from an encoder; EfficientNetLite2Encoder and test stand-ins fit it."""

    name: str

    def preprocessing_id(self) -> str: ...

    def preprocess(self, images: list[Any]) -> Any: ...  # list[PIL.Image] -> (B, 3, H, W)

    def __call__(self, pixels: Any) -> Any: ...  # (B, 3, H, W) -> (B, N, C)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` holds either the old or the new content, never a partial one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_shard_header(path: Path) -> tuple[dict[str, Any], int]:
    """The safetensors JSON header of a shard and the byte offset where tensor data starts."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return header, 8 + n


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FeatureCache:
    """Encoder features per image content, computed once by :meth:`ensure`, read by :meth:`get`."""

    def __init__(self, cache_dir: str | Path, encoder: Encoder, shard_size: int = 256):
        """Open (or create) the cache folder of this encoder + preprocessing under ``cache_dir``."""
        self.encoder = encoder
        self.preprocessing_id = str(encoder.preprocessing_id())
        pid_hash = hashlib.sha256(self.preprocessing_id.encode()).hexdigest()[:10]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder.name)
        self.root = Path(cache_dir) / f"{slug}-{pid_hash}"
        self.root.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        self.failed: dict[str, str] = {}  # path -> reason, from the last ensure()
        self._maps: dict[str, np.memmap] = {}
        self._index = self._load_index()

    # ---- index -------------------------------------------------------------------------------

    @property
    def index_path(self) -> Path:
        return self.root / "index.json"

    def _empty_index(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "encoder": self.encoder.name,
            "preprocessing_id": self.preprocessing_id,
            "feature_shape": None,  # [N, C] once the first features are written
            "dtype": "float16",
            "items": {},
            "files": {},
        }

    def _load_index(self) -> dict[str, Any]:
        """Read index.json, then adopt any shard it does not list (a run killed mid-write)."""
        index = self._empty_index()
        if self.index_path.exists():
            try:
                index.update(json.loads(self.index_path.read_text("utf-8")))
            except (OSError, json.JSONDecodeError) as e:
                log.warning("feature cache index %s unreadable (%s); rebuilding from shards", self.index_path, e)
        on_disk = sorted(p.name for p in self.root.iterdir() if _SHARD_RE.match(p.name))
        # forget rows of shards someone deleted by hand: they would fail later, at read time
        present = set(on_disk)
        index["items"] = {k: loc for k, loc in index["items"].items() if loc[0] in present}
        known = {shard for shard, _ in index["items"].values()}
        for shard in on_disk:
            if shard in known:
                continue
            header, _ = _read_shard_header(self.root / shard)
            keys = json.loads(header.get("__metadata__", {}).get("keys", "[]"))
            for row, key in enumerate(keys):
                index["items"].setdefault(key, [shard, row])
            if index["feature_shape"] is None and "features" in header:
                index["feature_shape"] = header["features"]["shape"][1:]
        return index

    def _save_index(self) -> None:
        _atomic_write(self.index_path, json.dumps(self._index, separators=(",", ":")).encode())

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise writers (two extraction runs on one cache) with an advisory file lock."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no locking, one writer at a time please
            yield
            return
        with open(self.root / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---- keys --------------------------------------------------------------------------------

    def key_for(self, path: str | Path, flip: bool = False) -> str:
        """The cache key of an image file: sha256 of its bytes, plus ``-flip`` for the mirrored view.

        Hashes are remembered by (path, size, mtime), so asking again does not reread the file.
        """
        path = Path(path)
        st = path.stat()
        name = os.path.abspath(path)
        known = self._index["files"].get(name)
        if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
            digest = known[2]
        else:
            digest = _sha256_file(path)
            self._index["files"][name] = [st.st_size, st.st_mtime_ns, digest]
        return digest + (FLIP_SUFFIX if flip else "")

    def __contains__(self, key: str) -> bool:
        return key in self._index["items"]

    def __len__(self) -> int:
        return len(self._index["items"])

    # ---- compute -----------------------------------------------------------------------------

    def _pending_jobs(self, paths: list[Path], flip: bool) -> list[tuple[Path, str, bool]]:
        """(path, key, mirrored?) for every view not cached yet, each key once."""
        views = (False, True) if flip else (False,)
        jobs: dict[str, tuple[Path, str, bool]] = {}
        for path in paths:
            try:
                keys = [(self.key_for(path, v), v) for v in views]
            except OSError as e:
                self._report(path, f"cannot read file: {e}")
                continue
            for key, mirrored in keys:
                if key not in self._index["items"] and key not in jobs:
                    jobs[key] = (path, key, mirrored)
        return list(jobs.values())

    def _report(self, path: Path, reason: str) -> None:
        self.failed[str(path)] = reason
        log.warning("feature cache: skipping %s: %s", path, reason)

    def ensure(self, paths: list[Path], flip: bool = False, batch_size: int = 4, progress: bool = True) -> None:
        """Compute and store the features of every image in ``paths`` that is not cached yet.

        ``flip=True`` also caches the mirrored view of each image. Unreadable images are logged and
        listed in ``self.failed`` instead of stopping the run. ``batch_size`` is the encoder batch:
        small batches are faster per image on a CPU (cache effects; measured in bench/README.md).
        """
        self.failed = {}
        with self._locked():
            for stale in self.root.glob(".*.tmp-*"):  # half-written files of a killed run
                stale.unlink(missing_ok=True)
            self._index = self._load_index()  # another run may have added shards meanwhile
            jobs = self._pending_jobs([Path(p) for p in paths], flip)
            self._save_index()  # keep the freshly computed hashes even if nothing is missing
            if not jobs:
                return
            bar = _progress(progress)
            with bar or nullcontext():
                task = bar.add_task("encoding images", total=len(jobs)) if bar else None
                pending_keys: list[str] = []
                pending: list[np.ndarray] = []
                for start in range(0, len(jobs), batch_size):
                    keys, feats = self._encode(jobs[start : start + batch_size])
                    pending_keys += keys
                    pending += feats
                    if len(pending_keys) >= self.shard_size:
                        self._write_shard(pending_keys, pending)
                        pending_keys, pending = [], []
                    if bar is not None:
                        bar.advance(task, min(batch_size, len(jobs) - start))
                if pending_keys:
                    self._write_shard(pending_keys, pending)
        if self.failed:
            log.warning("feature cache: %d image(s) skipped, see FeatureCache.failed", len(self.failed))

    def _encode(self, jobs: list[tuple[Path, str, bool]]) -> tuple[list[str], list[np.ndarray]]:
        """Decode, preprocess and encode one batch; returns keys and (N, C) float16 arrays."""
        from PIL import ImageOps

        from polycap.images import load_image  # fully decoded RGB, EXIF orientation applied

        images, keys = [], []
        for path, key, mirrored in jobs:
            try:
                img = load_image(path)
            except Exception as e:  # ImageError mostly; any decoder failure skips one image, not the run
                self._report(path, f"cannot decode image: {type(e).__name__}: {e}")
                continue
            images.append(ImageOps.mirror(img) if mirrored else img)
            keys.append(key)
        if not images:
            return [], []
        feats = self.encoder(self.encoder.preprocess(images))  # (B, N, C)
        arr = feats.detach().to("cpu").float().numpy().astype(np.float16)  # (B, N, C) float16
        self._check_shape(arr.shape[1:])
        return keys, list(arr)

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        expected = self._index["feature_shape"]
        if expected is None:
            self._index["feature_shape"] = list(shape)
        elif list(shape) != list(expected):
            raise PolycapError(
                f"encoder {self.encoder.name!r} now gives features of shape {tuple(shape)}, but the cache "
                f"at {self.root} holds {tuple(expected)}; change its name or preprocessing_id()"
            )

    def _next_shard_name(self) -> str:
        numbers = [int(m.group(1)) for p in self.root.iterdir() if (m := _SHARD_RE.match(p.name))]
        return f"shard-{max(numbers, default=-1) + 1:05d}.safetensors"

    def _write_shard(self, keys: list[str], feats: list[np.ndarray]) -> None:
        """Write one immutable shard, then point the index at it (both atomically)."""
        import torch
        from safetensors.torch import save

        name = self._next_shard_name()
        tensor = torch.from_numpy(np.stack(feats))  # (n, N, C) float16
        meta = {"keys": json.dumps(keys), "encoder": self.encoder.name, "preprocessing_id": self.preprocessing_id}
        _atomic_write(self.root / name, save({"features": tensor}, metadata=meta))
        for row, key in enumerate(keys):
            self._index["items"][key] = [name, row]
        self._save_index()
        log.info("feature cache: wrote %s (%d rows, %d cached in all)", name, len(keys), len(self))

    # ---- read --------------------------------------------------------------------------------

    def _shard(self, name: str) -> np.memmap:
        """Memory-map a shard's (n, N, C) float16 array; pages are shared by every reader process."""
        if name not in self._maps:
            path = self.root / name
            header, data_start = _read_shard_header(path)
            info = header["features"]
            if info["dtype"] != "F16":
                raise PolycapError(f"{path}: expected float16 features, found {info['dtype']}")
            self._maps[name] = np.memmap(
                path,
                dtype=np.float16,
                mode="r",
                offset=data_start + info["data_offsets"][0],
                shape=tuple(info["shape"]),
            )
        return self._maps[name]

    def get(self, paths: list[Path], flip: bool = False) -> Any:
        """Features of ``paths`` as a (B, N, C) float16 torch tensor, in the order given."""
        keys = []
        for path in paths:
            try:
                keys.append(self.key_for(path, flip))
            except OSError as e:
                raise MissingFeaturesError(f"cannot read {path} to look up its features: {e}") from e
        return self.get_keys(keys, paths)

    def get_keys(self, keys: list[str], paths: list[Path] | None = None) -> Any:
        """Features for cache keys (see :meth:`key_for`) as a (B, N, C) float16 torch tensor."""
        import torch

        shape = self._index["feature_shape"]
        out = np.empty((len(keys), *(shape or (0, 0))), dtype=np.float16)  # (B, N, C)
        for i, key in enumerate(keys):
            loc = self._index["items"].get(key)
            if loc is None:
                what = str(paths[i]) if paths else key
                why = self.failed.get(what)
                hint = f" (it was skipped: {why})" if why else "; run FeatureCache.ensure() on it first"
                raise MissingFeaturesError(
                    f"no cached {self.encoder.name} features for {what} (key {key}) in {self.root}{hint}"
                )
            out[i] = self._shard(loc[0])[loc[1]]
        return torch.from_numpy(out)


def _progress(enabled: bool) -> Any:
    """A rich progress bar (None when progress is off)."""
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
