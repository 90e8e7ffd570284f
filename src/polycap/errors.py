"""Exceptions polycap raises on purpose. Every message names what was wrong and what is allowed."""

from __future__ import annotations

from collections.abc import Iterable


class PolycapError(Exception):
    """Base class of every error polycap raises deliberately."""


class ImageError(PolycapError, ValueError):
    """An input could not be turned into an RGB image. ``source`` names the input."""

    def __init__(self, message: str, source: str | None = None):
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class OptionError(PolycapError, ValueError):
    """A generation option has an invalid value, or the backend does not support it."""


class UnsupportedLanguageError(OptionError):
    """The backend cannot caption in the requested language."""

    def __init__(self, lang: str, supported: list[str] | tuple[str, ...], model: str = ""):
        self.lang = lang
        self.supported = sorted(supported)
        who = f"model {model!r}" if model else "this model"
        super().__init__(f"{who} does not support language {lang!r}; supported: {', '.join(self.supported)}")


class ModelNotFoundError(PolycapError, LookupError):
    """No registered model, scheme or folder matches a name."""


class MissingDependencyError(PolycapError, ImportError):
    """An optional dependency (an extra) is needed for this feature."""

    def __init__(self, package: str, extra: str, feature: str = ""):
        what = f" for {feature}" if feature else ""
        super().__init__(f"{package} is required{what}; install it with: pip install 'polycap[{extra}]'")


def check_keys(given: Iterable[str], known: Iterable[str], what: str, error: type[PolycapError] = PolycapError) -> None:
    """Raise ``error`` naming the keys of ``given`` that are not ``known``, and the known ones:
    "unknown {what}: a, b; known: ...". The one check behind every config and option mapping."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise error(f"unknown {what}: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
