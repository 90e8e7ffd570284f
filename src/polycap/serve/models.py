"""The models one server serves: a fixed list, loaded once each, in a thread, on first use.

Only the names given at startup are served. A request naming anything else gets a 404: letting
clients pick ``hf:...`` names or local folders would let them make the server download or read
whatever they like.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from polycap.backends.base import Captioner

log = logging.getLogger(__name__)

Loader = Callable[[str], Captioner]


class UnknownModel(LookupError):
    """The request named a model this server does not serve."""


class ModelUnavailable(RuntimeError):
    """A served model failed to load (the message says why); a later request tries again."""


class ModelPool:
    """Served model names (the first is the default) and their captioners, loaded lazily."""

    def __init__(self, names: Sequence[str], loader: Loader, ready: dict[str, Captioner] | None = None):
        if not names:
            raise ValueError("a server needs at least one model")
        self.names = list(dict.fromkeys(names))
        self._loader = loader
        self._loaded: dict[str, Captioner] = dict(ready or {})
        self._locks = {name: asyncio.Lock() for name in self.names}
        self.errors: dict[str, str] = {}

    @classmethod
    def from_captioners(cls, captioners: Sequence[Captioner]) -> ModelPool:
        """A pool of ready instances (tests, embedding applications); nothing is ever loaded."""

        def refuse(name: str) -> Captioner:
            raise ModelUnavailable(f"model {name!r} is not loaded")

        return cls([c.name for c in captioners], refuse, {c.name: c for c in captioners})

    @property
    def default(self) -> str:
        return self.names[0]

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def resolve_name(self, name: str | None) -> str:
        """The served name a request means (None: the default), or UnknownModel."""
        if name is None or name == "":
            return self.default
        if name not in self._locks:
            raise UnknownModel(f"model {name!r} is not served here; served models: {', '.join(self.names)}")
        return name

    async def get(self, name: str) -> Captioner:
        """The captioner for a served name, loading it (once, off the event loop) if needed."""
        if name in self._loaded:
            return self._loaded[name]
        async with self._locks[name]:
            if name not in self._loaded:
                try:
                    captioner = await asyncio.get_running_loop().run_in_executor(None, self._loader, name)
                except Exception as e:  # noqa: BLE001 - any load failure is reported the same way
                    self.errors[name] = f"{type(e).__name__}: {e}"
                    log.error("loading model %r failed: %s", name, self.errors[name])
                    raise ModelUnavailable(f"model {name!r} could not be loaded: {self.errors[name]}") from e
                self.errors.pop(name, None)
                self._loaded[name] = captioner
        return self._loaded[name]

    def info(self, registry_info: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """One entry per served model: languages and capabilities (from the loaded model if loaded)."""
        out = []
        for name in self.names:
            entry: dict[str, Any] = {"name": name, "default": name == self.default, "loaded": name in self._loaded}
            if name in self._loaded:
                info = self._loaded[name].info()
                entry.update({k: info[k] for k in ("languages", "beam_search", "sampling", "styles")})
                entry["backend"] = info["backend"]
            else:
                reg = registry_info.get(name, {})
                entry.update({"languages": reg.get("languages"), "backend": reg.get("backend")})
            if name in self.errors:
                entry["error"] = self.errors[name]
            out.append(entry)
        return out
