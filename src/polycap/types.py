"""The data that crosses every boundary: generation options in, captions out."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from polycap.errors import OptionError, check_keys

# Upper bounds of the decoding options: far above any useful caption setting, low enough that a
# typo (``--beams 1000``: 13 s and 1.9 GB for one image) is refused up front instead of running.
MAX_NEW_TOKENS = 1024  # also bounds min_new_tokens and no_repeat_ngram_size
MAX_BEAMS = 16
MAX_RETURN_SEQUENCES = 16
MAX_TOP_K = 1_000_000  # above any vocabulary size
MAX_TEMPERATURE = 100.0
MAX_LENGTH_PENALTY = 10.0  # |length_penalty| <= 10
MAX_SEED = 2**31 - 1  # a seed every backend takes: torch's is 64-bit, numpy's 32-bit, Gemini's an int32


def _option(default: Any, help: str) -> Any:
    """A GenerationOptions field with its one-line help, which the CLI flags and the REST docs show."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class GenerationOptions:
    """How to decode a caption. Every backend receives the same options object.

    Values are validated on construction, so a bad value fails before any model work starts.
    """

    lang: str = _option("en", "Language code of the caption.")
    max_new_tokens: int = _option(30, "Maximum new tokens per caption.")
    min_new_tokens: int = _option(0, "Minimum new tokens per caption.")
    num_beams: int = _option(1, "Beam width (1 = greedy).")
    do_sample: bool = _option(False, "Sample instead of greedy/beam decoding.")
    temperature: float = _option(1.0, "Sampling temperature.")
    top_p: float = _option(1.0, "Nucleus sampling threshold.")
    top_k: int | None = _option(None, "Top-k sampling.")
    length_penalty: float = _option(1.0, "Beam search: > 1 favours longer captions, < 1 shorter.")
    no_repeat_ngram_size: int = _option(0, "Never repeat an n-gram of this many tokens (0: off).")
    num_return_sequences: int = _option(1, "Captions returned per image (alternatives).")
    seed: int | None = _option(None, "Random seed (sampling).")
    style: str | None = _option(None, "social, alt-text, detailed, hashtags or an instruction.")  # free text

    def __post_init__(self) -> None:
        _check_int(self, "max_new_tokens", 1, MAX_NEW_TOKENS)
        _check_int(self, "min_new_tokens", 0, MAX_NEW_TOKENS)
        _check_int(self, "num_beams", 1, MAX_BEAMS)
        _check_int(self, "no_repeat_ngram_size", 0, MAX_NEW_TOKENS)
        _check_int(self, "num_return_sequences", 1, MAX_RETURN_SEQUENCES)
        if self.top_k is not None:
            _check_int(self, "top_k", 1, MAX_TOP_K)
        if self.seed is not None:
            _check_int(self, "seed", 0, MAX_SEED)
        if self.min_new_tokens > self.max_new_tokens:
            raise OptionError(
                f"min_new_tokens ({self.min_new_tokens}) must not exceed max_new_tokens ({self.max_new_tokens})"
            )
        if not (_is_finite(self.temperature) and 0 < self.temperature <= MAX_TEMPERATURE):
            raise OptionError(f"temperature must be > 0 and <= {MAX_TEMPERATURE:g}, got {_shown(self.temperature)}")
        if not (_is_finite(self.top_p) and 0 < self.top_p <= 1):
            raise OptionError(f"top_p must be in (0, 1], got {_shown(self.top_p)}")
        if not (_is_finite(self.length_penalty) and abs(self.length_penalty) <= MAX_LENGTH_PENALTY):
            raise OptionError(
                f"length_penalty must be a number from {-MAX_LENGTH_PENALTY:g} to {MAX_LENGTH_PENALTY:g}, "
                f"got {_shown(self.length_penalty)}"
            )
        if not (isinstance(self.lang, str) and self.lang.strip()):
            raise OptionError(f"lang must be a non-empty language code, got {_shown(self.lang)}")
        if not self.do_sample and self.num_return_sequences > self.num_beams:
            raise OptionError(
                f"num_return_sequences ({self.num_return_sequences}) needs num_beams >= "
                f"{self.num_return_sequences} or do_sample=True (greedy decoding gives one sequence)"
            )

    @classmethod
    def from_kwargs(cls, base: GenerationOptions | None = None, **kwargs: Any) -> GenerationOptions:
        """Build options from keyword arguments, naming any unknown one in the error."""
        check_keys(kwargs, [f.name for f in fields(cls)], "generation option(s)", OptionError)
        return replace(base or cls(), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OptionSpec:
    """One decoding option a caller may set: what the CLI flags and the REST parser are built from."""

    name: str
    type: type  # int, float, bool or str
    optional: bool  # None is a value (it is the default)
    default: Any
    help: str


def option_specs() -> tuple[OptionSpec, ...]:
    """Every GenerationOptions field but ``lang`` (each interface takes languages its own way), in
    declaration order: a field added to GenerationOptions appears in every interface from here."""
    specs = []
    for f in fields(GenerationOptions):
        if f.name == "lang":
            continue
        text = str(f.type).replace(" ", "")  # the annotation's text ("int", "int|None"): annotations are lazy here
        base, optional = text.removesuffix("|None"), text.endswith("|None")
        kind = {"int": int, "float": float, "bool": bool, "str": str}.get(base)
        if kind is None:
            raise TypeError(f"GenerationOptions.{f.name}: type {f.type!r} is not int, float, bool or str (| None)")
        specs.append(OptionSpec(f.name, kind, optional, f.default, f.metadata.get("help", "")))
    return tuple(specs)


def _check_int(opts: GenerationOptions, name: str, minimum: int, maximum: int) -> None:
    value = getattr(opts, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(f"{name} must be an integer, got {_shown(value)}")
    if value < minimum:
        raise OptionError(f"{name} must be >= {minimum}, got {_shown(value)}")
    if value > maximum:
        raise OptionError(f"{name} must be <= {maximum}, got {_shown(value)}")


def _is_finite(value: Any) -> bool:
    """A real number that is neither NaN nor infinite (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)  # an int is finite, however large


def _shown(value: Any) -> str:
    """``repr`` for an error message, cut short: a 400-digit number need not fill the terminal."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's limit on digits to print
        return "a number too large to print"
    return text if len(text) <= 40 else text[:37] + "..."


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
