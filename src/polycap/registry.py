"""Model names -> backend factories. One registry; built-ins and plugins register the same way.

A plugin is an entry point in the ``polycap.backends`` group whose value is a callable
``register(registry)``. It adds backends (``add_backend``: a loader plus the name schemes it
owns, e.g. ``hf``), pipelines over other models (``add_pipeline``: the loader also receives the
registry's ``load``) and named models (``add_model``). polycap's own backends are plugins too.

Name resolution in :meth:`Registry.resolve`, first match wins:
1. ``scheme:rest`` where a backend owns ``scheme`` (``hf:Salesforce/blip...``);
2. a local folder holding ``config.json`` whose ``backend`` field names a backend;
3. a registered model name (``polycap-base``).
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from polycap.errors import ModelNotFoundError, PolycapError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "polycap.backends"
# Loaded directly when the installed metadata lacks them (a source tree never installed, or newer than its install).
_BUILTIN_PLUGINS = (
    "polycap.backends.native:register",
    "polycap.backends.remote:register",
    "polycap.backends.compose:register",
    "polycap.backends.hf:register",
    "polycap.backends.translate:register",
    "polycap.backends.clipcap:register",
)

Loader = Callable[..., Any]  # loader(ref: str, *, device: str, **kwargs) -> Captioner


@dataclass
class BackendSpec:
    name: str
    loader: Loader
    schemes: tuple[str, ...] = ()
    description: str = ""


@dataclass
class ModelSpec:
    """A named model: which backend loads it, with what reference and fixed arguments."""

    name: str
    backend: str
    ref: str
    description: str = ""
    languages: tuple[str, ...] | None = ("en",)
    kwargs: dict[str, Any] = field(default_factory=dict)
    offline: Callable[[], bool] = lambda: True  # is it usable without network right now?
    default: bool = False  # the default model of polycap.load() / the CLI

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": self.backend,
            "description": self.description,
            "languages": list(self.languages) if self.languages else None,
            "offline": bool(self.offline()),
            "default": self.default,
        }


class Registry:
    def __init__(self) -> None:
        self.backends: dict[str, BackendSpec] = {}
        self.models: dict[str, ModelSpec] = {}
        self.plugin_errors: dict[str, str] = {}

    # ---- registration (called by plugins) ---------------------------------------------------
    def add_backend(self, name: str, loader: Loader, schemes: tuple[str, ...] = (), description: str = "") -> None:
        self.backends[name] = BackendSpec(name, loader, tuple(schemes), description)

    def add_pipeline(
        self, name: str, loader: Callable[..., Any], schemes: tuple[str, ...] = (), description: str = ""
    ) -> None:
        """A backend built from other models: ``loader(ref, *, load, device, **kwargs)`` is called with
        ``load=self.load``, this registry's own loader, for the models it wraps."""
        self.add_backend(name, functools.partial(loader, load=self.load), schemes, description)

    def add_model(self, spec: ModelSpec) -> None:
        self.models[spec.name] = spec

    # ---- lookup ----------------------------------------------------------------------------
    def scheme_owner(self, scheme: str) -> BackendSpec | None:
        for b in self.backends.values():
            if scheme in b.schemes:
                return b
        return None

    def load(self, name: str | None = None, device: str = "auto", **kwargs: Any) -> Any:
        """Build the captioner ``name`` names (the default model when None): what ``polycap.load`` does.

        Pipeline backends (``style:``, ``translate:``) get this method handed in at registration
        (see :meth:`add_pipeline`), so they load their inner models without importing the package.
        """
        name = name or self.default_model()
        backend, ref, fixed = self.resolve(name)
        return backend.loader(ref, device=device, name=name, **{**fixed, **kwargs})

    def list_models(self) -> list[dict[str, Any]]:
        """Registered models with backend, languages, offline availability and default flag."""
        return [m.info() for m in self.models.values()]

    def default_model(self) -> str:
        defaults = [m.name for m in self.models.values() if m.default]
        if not defaults:
            raise ModelNotFoundError("no default model is registered; pass a model name")
        return defaults[0]

    def resolve(self, name: str) -> tuple[BackendSpec, str, dict[str, Any]]:
        """Return (backend, ref, fixed kwargs) for a model name; see the module docstring."""
        scheme, sep, rest = name.partition(":")
        if sep and len(scheme) > 1:  # len>1 keeps Windows drive letters ("C:\\...") out
            owner = self.scheme_owner(scheme)
            if owner is not None:
                return owner, rest, {}
        path = Path(name).expanduser()
        if path.is_dir():
            return self._resolve_folder(path), str(path), {}
        if name in self.models:
            spec = self.models[name]
            return self._backend(spec.backend, name), spec.ref, dict(spec.kwargs)
        raise ModelNotFoundError(self._not_found_message(name, bool(sep)))

    def _resolve_folder(self, path: Path) -> BackendSpec:
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise ModelNotFoundError(f"folder {path} has no config.json, so no backend can load it")
        try:
            backend = json.loads(cfg_path.read_text(encoding="utf-8")).get("backend")
        except (json.JSONDecodeError, AttributeError) as e:
            raise PolycapError(f"{cfg_path} is not a valid JSON object: {e}") from e
        if not backend:
            raise ModelNotFoundError(
                f"{cfg_path} has no 'backend' field; known backends: {', '.join(sorted(self.backends))}"
            )
        return self._backend(backend, str(path))

    def _backend(self, backend: str, for_name: str) -> BackendSpec:
        if backend not in self.backends:
            hint = f" (plugin errors: {self.plugin_errors})" if self.plugin_errors else ""
            raise ModelNotFoundError(
                f"{for_name!r} needs backend {backend!r}, which is not installed; "
                f"installed backends: {', '.join(sorted(self.backends))}{hint}"
            )
        return self.backends[backend]

    def _not_found_message(self, name: str, had_scheme: bool) -> str:
        known = sorted(self.models)
        close = difflib.get_close_matches(name, known, n=3)
        msg = f"unknown model {name!r}."
        if close:
            msg += f" Did you mean: {', '.join(close)}?"
        msg += f" Registered models: {', '.join(known) or 'none'}."
        schemes = sorted(s for b in self.backends.values() for s in b.schemes)
        if schemes:
            msg += f" Schemes: {', '.join(s + ':' for s in schemes)}."
        if had_scheme:
            msg += " (the scheme may belong to a backend whose extra is not installed)"
        return msg + " A local model folder (with config.json) also works."


def _load_plugin(registry: Registry, label: str, load: Callable[[], Any]) -> None:
    try:
        load()(registry)
    except Exception as e:  # noqa: BLE001 - a broken plugin must not break polycap
        registry.plugin_errors[label] = f"{type(e).__name__}: {e}"
        log.warning("polycap plugin %s failed to register: %s", label, e)


def discover() -> Registry:
    """Build a registry from every installed ``polycap.backends`` entry point."""
    registry = Registry()
    eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    known = {ep.value for ep in eps}
    for target in _BUILTIN_PLUGINS:  # a source tree never installed, or newer than its install:
        if target not in known:  # the same plugins, loaded directly
            eps.append(metadata.EntryPoint(name=target, value=target, group=ENTRY_POINT_GROUP))
    for ep in eps:
        _load_plugin(registry, ep.name, ep.load)
    return registry


_REGISTRY: Registry | None = None


def get_registry(refresh: bool = False) -> Registry:
    """The process-wide registry, discovered on first use (``refresh`` re-reads entry points)."""
    global _REGISTRY
    if _REGISTRY is None or refresh:
        _REGISTRY = discover()
    return _REGISTRY
