"""Where a ``hf:`` model comes from: a local folder, the local Hugging Face cache, or the hub.

This is the one place that may touch the network (principle 4). Every failure to find a model
becomes one :class:`ModelNotFoundError` that names the model, the places looked and the fix, instead
of a traceback from deep inside the hub client.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polycap.errors import ModelNotFoundError, PolycapError

_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class ModelSource:
    """A resolved reference: ``path_or_id`` is what ``from_pretrained`` gets."""

    ref: str
    path_or_id: str
    local: bool  # a folder on disk (never needs the network)
    offline: bool  # hub access is disabled (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)

    def pretrained_kwargs(self) -> dict[str, Any]:
        return {"local_files_only": self.local or self.offline}


def hub_offline() -> bool:
    """True when the environment asks transformers/huggingface_hub not to use the network."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cache_dir() -> str:
    """The Hugging Face hub cache, found the way huggingface_hub finds it (without importing it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def is_cached(repo_id: str) -> bool:
    """Whether a snapshot of ``repo_id`` with a config.json is in the local hub cache (cheap; no imports)."""
    snapshots = Path(hub_cache_dir()) / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any((s / "config.json").is_file() for s in snapshots.iterdir())


def resolve(ref: str) -> ModelSource:
    """A local folder if ``ref`` is one, else a hub id (``org/name``)."""
    ref = ref.strip()
    if not ref:
        raise ModelNotFoundError("hf: needs a model, e.g. hf:Salesforce/blip-image-captioning-base or hf:/a/folder")
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"folder {path} has no config.json, so it is not a transformers model folder")
        return ModelSource(ref, str(path), local=True, offline=hub_offline())
    if ref.startswith(("/", "./", "../", "~")) or os.sep in ref.replace("/", "") or ref.count("/") > 1:
        raise ModelNotFoundError(f"hf:{ref}: no such folder (a hub id looks like org/name)")
    return ModelSource(ref, ref, local=False, offline=hub_offline())


def not_found(source: ModelSource, cause: BaseException | None = None) -> ModelNotFoundError:
    """The one clear error for a model that is neither local nor reachable."""
    if source.local:
        where = f"the folder {source.path_or_id}"
    else:
        hub = "the hub was not asked (HF_HUB_OFFLINE is set)" if source.offline else "the hub could not provide it"
        where = f"the Hugging Face cache {hub_cache_dir()}; {hub}"
    short = _short_cause(cause)
    folder = f"/models/{source.ref.rsplit('/', 1)[-1]}"
    wait = "" if source.offline or source.local else " Set HF_HUB_OFFLINE=1 to use local files only, without waiting."
    return ModelNotFoundError(
        f"Hugging Face model {source.ref!r} is not available: looked in {where}."
        f"{f' Cause: {short}.' if short else ''}"
        f" To use it offline, download it once where the hub is reachable: hf download {source.ref} --local-dir "
        f"{folder} (huggingface-cli download with huggingface_hub < 1.0), then load hf:{folder}.{wait}"
    )


def _short_cause(cause: BaseException | None) -> str:
    if cause is None:
        return ""
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {first[:200].rstrip('.')}" if first else type(cause).__name__


def load_config_dict(source: ModelSource) -> dict[str, Any]:
    """The model's config.json as a dict (from disk, the cache, or the hub)."""
    if source.local:
        path = Path(source.path_or_id) / "config.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise PolycapError(f"{path} is not a readable JSON file: {e}") from None
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(source.path_or_id, "config.json", local_files_only=source.offline)
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except Exception as e:  # noqa: BLE001 - every hub failure (offline, 404, network) gets the same clear error
        raise not_found(source, e) from None


def from_pretrained(cls: Any, source: ModelSource, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` with hub errors turned into the one clear error."""
    try:
        return cls.from_pretrained(source.path_or_id, **source.pretrained_kwargs(), **kwargs)
    except (OSError, ValueError) as e:
        if _looks_missing(e):
            raise not_found(source, e) from None
        raise PolycapError(f"could not load {cls.__name__} from {source.ref!r}: {_short_cause(e)}") from e


def _looks_missing(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, OSError) or any(w in text for w in ("not found", "does not appear", "connect", "offline"))
