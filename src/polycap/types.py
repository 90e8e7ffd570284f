"""The data that crosses every boundary: generation options in, captions out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from polycap.errors import OptionError


@dataclass(frozen=True)
class GenerationOptions:
    """How to decode a caption. Every backend receives the same options object.

    Values are validated on construction, so a bad value fails before any model work starts.
    """

    lang: str = "en"
    max_new_tokens: int = 30
    min_new_tokens: int = 0
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    num_return_sequences: int = 1
    seed: int | None = None
    style: str | None = None  # free text; the style backends interpret it

    def __post_init__(self) -> None:
        _check_int(self, "max_new_tokens", minimum=1)
        _check_int(self, "min_new_tokens", minimum=0)
        _check_int(self, "num_beams", minimum=1)
        _check_int(self, "no_repeat_ngram_size", minimum=0)
        _check_int(self, "num_return_sequences", minimum=1)
        if self.top_k is not None:
            _check_int(self, "top_k", minimum=1)
        if self.seed is not None:
            _check_int(self, "seed", minimum=0)
        if self.min_new_tokens > self.max_new_tokens:
            raise OptionError(
                f"min_new_tokens ({self.min_new_tokens}) must not exceed max_new_tokens ({self.max_new_tokens})"
            )
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise OptionError(f"temperature must be > 0, got {self.temperature!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise OptionError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.length_penalty, (int, float)):
            raise OptionError(f"length_penalty must be a number, got {self.length_penalty!r}")
        if not (isinstance(self.lang, str) and self.lang.strip()):
            raise OptionError(f"lang must be a non-empty language code, got {self.lang!r}")
        if not self.do_sample and self.num_return_sequences > self.num_beams:
            raise OptionError(
                f"num_return_sequences ({self.num_return_sequences}) needs num_beams >= "
                f"{self.num_return_sequences} or do_sample=True (greedy decoding gives one sequence)"
            )

    @classmethod
    def from_kwargs(cls, base: GenerationOptions | None = None, **kwargs: Any) -> GenerationOptions:
        """Build options from keyword arguments, naming any unknown one in the error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise OptionError(f"unknown generation option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return replace(base or cls(), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_int(opts: GenerationOptions, name: str, minimum: int) -> None:
    value = getattr(opts, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise OptionError(f"{name} must be >= {minimum}, got {value}")


@dataclass
class Alternative:
    """One of several returned sequences (num_return_sequences > 1)."""

    text: str
    score: float | None = None


@dataclass
class Caption:
    """One caption of one image in one language, or the error that prevented it.

    ``score`` is the mean token log-probability where the backend knows it. ``seconds`` is the
    wall time spent on this item (a batch's time is shared equally among its items). ``meta``
    holds backend-specific facts (provider, token usage, the description a style rewrote, ...).
    """

    text: str
    lang: str
    model: str
    score: float | None = None
    alternatives: list[Alternative] = field(default_factory=list)
    seconds: float | None = None
    error: str | None = None
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, error: str, lang: str, model: str, source: str | None = None) -> Caption:
        return cls(text="", lang=lang, model=model, error=error, source=source)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
