"""The shared remote captioner: everything but the wire format lives here, once for all providers.

A provider module only builds its SDK client and turns (prompt, JPEG bytes, parameters) into one
API call and a :class:`Reply`. This class adds the rest, so behaviour is uniform across providers:

* prompting from template files (:mod:`.prompts`), styles in one call, cleanup of the answer;
* upload preparation: the (already EXIF-upright) image is shrunk to ``max_side`` and sent as JPEG;
* an on-disk response cache (:mod:`.cache`), keyed by image hash, provider, endpoint, model,
  prompt and parameters;
* one retry policy (:mod:`.retry`) with the SDKs' own retries turned off, and a per-request timeout;
* a concurrency limit: a batch runs on a thread pool, and a semaphore bounds the requests in
  flight across every caller of this captioner (so a server with many threads obeys it too);
* per-item failures: refusals, empty or malformed responses and exhausted retries become
  ``Caption.failed`` for that image only;
* API keys: read from the environment only, held in a :class:`Secret` that never prints, and
  scrubbed from every message before it becomes a Caption error or a log line.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import time
from abc import abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from polycap.backends.base import Capabilities, Captioner
from polycap.backends.remote import prompts
from polycap.backends.remote.cache import ResponseCache, SingleFlight, cache_key
from polycap.backends.remote.retry import RemoteError, RetryPolicy, as_policy, call_with_retries
from polycap.errors import MissingDependencyError, ModelNotFoundError, OptionError, PolycapError
from polycap.types import Caption, GenerationOptions

log = logging.getLogger(__name__)

DEFAULT_MIN_OUTPUT_TOKENS = 256  # see RemoteSettings.max_output_tokens


class MissingKeyError(PolycapError):
    """No API key in the environment for a provider that needs one."""

    def __init__(self, who: str, env_vars: Sequence[str]):
        names = " or ".join(env_vars)
        super().__init__(
            f"{who} needs an API key in the environment variable {names}; keys are read only "
            "from the environment (never from arguments, files or configs)"
        )


class Secret:
    """An API key that never shows itself: not in repr/str, not picklable, scrubbable from text."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("an API key cannot be pickled or saved")


def read_key(env_vars: Sequence[str], who: str, required: bool = True) -> Secret | None:
    """The first non-empty variable of ``env_vars``; a missing required key names the variables."""
    for var in env_vars:
        value = os.environ.get(var, "").strip()
        if value:
            return Secret(value)
    if required:
        raise MissingKeyError(who, env_vars)
    return None


def require(module: str, package: str, feature: str) -> Any:
    """Import an SDK lazily, with the install hint of the ``[remote]`` extra if it is missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(package, "remote", feature) from e


@dataclass
class RemoteSettings:
    """Keyword arguments every remote backend accepts (``polycap.load(name, **kwargs)``).

    ``max_output_tokens`` caps the API's output tokens; by default it is
    ``max(max_new_tokens, 256)``, because the caption's length is set by the prompt and a low cap
    only truncates styled captions (and starves models that think before answering).
    ``extra_params`` are merged into the request (a value of None removes a parameter, e.g.
    ``{"temperature": None}`` for models that refuse one). ``style`` is a default style.
    """

    base_url: str | None = None
    timeout: float = 60.0
    max_retries: int = 4
    retry: RetryPolicy | None = None
    max_concurrency: int = 4
    max_side: int = 1024
    jpeg_quality: int = 85
    cache: bool = True
    cache_dir: str | Path | None = None
    prompt: str | None = None
    prompt_file: str | Path | None = None
    max_output_tokens: int | None = None
    extra_params: dict[str, Any] = field(default_factory=dict)
    style: str | None = None

    def __post_init__(self) -> None:
        _positive("timeout", self.timeout, number=True)
        _positive("max_concurrency", self.max_concurrency)
        _positive("max_side", self.max_side)
        if self.max_output_tokens is not None:
            _positive("max_output_tokens", self.max_output_tokens)
        if isinstance(self.jpeg_quality, bool) or not isinstance(self.jpeg_quality, int) or not (
            1 <= self.jpeg_quality <= 95
        ):
            raise OptionError(f"jpeg_quality must be an integer in 1..95, got {self.jpeg_quality!r}")
        if not isinstance(self.extra_params, dict):
            raise OptionError(f"extra_params must be a dict, got {type(self.extra_params).__name__}")
        self.retry = as_policy(self.retry, self.max_retries)

    @classmethod
    def from_kwargs(cls, who: str, kwargs: dict[str, Any]) -> RemoteSettings:
        known = sorted(f.name for f in fields(cls))
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise OptionError(f"{who}: unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return cls(**{k: v for k, v in kwargs.items() if v is not None})  # None means "the default"


def _positive(name: str, value: Any, number: bool = False) -> None:
    kinds = (int, float) if number else (int,)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        raise OptionError(f"{name} must be a positive {'number' if number else 'integer'}, got {value!r}")


@dataclass(frozen=True)
class CallParams:
    """Provider-neutral request parameters derived from GenerationOptions."""

    max_tokens: int
    temperature: float
    top_p: float | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def apply_extra(self, request: dict[str, Any], as_body: bool = False) -> dict[str, Any]:
        """``request`` with None values dropped and ``extra`` merged in.

        A None in ``extra`` removes that parameter. With ``as_body`` the other extras travel as
        raw JSON fields (the SDKs' ``extra_body``), so they work whether or not the installed SDK
        knows the parameter; otherwise they are merged as keyword arguments.
        """
        out = {k: v for k, v in request.items() if v is not None and self.extra.get(k, ...) is not None}
        extras = {k: v for k, v in self.extra.items() if v is not None}
        if as_body:
            return {**out, "extra_body": extras} if extras else out
        return {**out, **extras}


@dataclass
class Reply:
    """What a provider answered, already parsed out of its wire format."""

    text: str | None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    refusal: str | None = None  # set when the provider declined on content-policy grounds


def encode_image(image: Image.Image, max_side: int, quality: int) -> bytes:
    """JPEG bytes of ``image`` with its longer side at most ``max_side`` (aspect kept).

    Images reach backends already upright (``load_image`` applies EXIF orientation), and the
    JPEG written here carries no EXIF, so the provider sees exactly the upright pixels.
    """
    im = image if image.mode == "RGB" else image.convert("RGB")
    longest = max(im.size)
    if longest > max_side:
        scale = max_side / longest
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        im = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class RemoteCaptioner(Captioner):
    """Base class of the provider backends; they implement ``_make_client`` and ``_send``."""

    provider: ClassVar[str] = ""
    key_env: ClassVar[tuple[str, ...]] = ()
    key_required: ClassVar[bool] = True
    example: ClassVar[str] = ""

    def __init__(self, model: str, settings: RemoteSettings, key: Secret | None, name: str | None = None):
        super().__init__(
            name or f"{self.provider}:{model}",
            Capabilities(
                languages=None, beam_search=False, sampling=True, styles=True, scores=False, max_batch_size=64
            ),
        )
        self.model = model
        self.settings = settings
        self._key = key
        self._template = prompts.load_template(settings.prompt, settings.prompt_file)
        self._cache = ResponseCache(settings.cache_dir) if settings.cache else None
        self._slots = threading.BoundedSemaphore(settings.max_concurrency)
        self._single_flight = SingleFlight()
        self._client = self._make_client(key.reveal() if key else None)  # builds objects, no network

    @classmethod
    def load(cls, ref: str, *, name: str | None = None, **kwargs: Any) -> RemoteCaptioner:
        """Build from a ``provider:model`` reference; the loader registered for the scheme calls this."""
        model = ref.strip()
        who = name or f"{cls.provider}:{model}"
        if not model:
            raise ModelNotFoundError(f"{cls.provider}: needs a model name, e.g. {cls.provider}:{cls.example}")
        settings = cls.configure(RemoteSettings.from_kwargs(who, kwargs), who)
        return cls(model, settings, read_key(cls.key_env, who, cls.key_required), name=who)

    @classmethod
    def configure(cls, settings: RemoteSettings, who: str) -> RemoteSettings:
        """Provider hook to complete settings from the environment (e.g. a base URL)."""
        return settings

    # ---- provider hooks -------------------------------------------------------------------
    @abstractmethod
    def _make_client(self, api_key: str | None) -> Any:
        """The SDK client, with SDK retries off and ``settings.timeout`` set."""

    @abstractmethod
    def _send(self, prompt: str, image: bytes | None, params: CallParams) -> Reply:
        """One API call (text-only when ``image`` is None); SDK exceptions propagate."""

    # ---- the contract -----------------------------------------------------------------------
    def check_options(self, options: GenerationOptions) -> None:
        super().check_options(options)
        if options.num_return_sequences != 1:
            raise OptionError(f"model {self.name!r} returns one caption per call (num_return_sequences=1)")

    def caption_batch(self, images: Sequence[Image.Image], options: GenerationOptions) -> list[Caption]:
        return self.caption_batch_langs(images, [options])[0]

    def caption_batch_langs(
        self, images: Sequence[Image.Image], per_lang: Sequence[GenerationOptions]
    ) -> list[list[Caption]]:
        """Encode each image once; every (language, image) request shares one bounded thread pool."""
        payloads = [encode_image(im, self.settings.max_side, self.settings.jpeg_quality) for im in images]
        jobs = [(opts, data) for opts in per_lang for data in payloads]
        workers = max(1, min(self.settings.max_concurrency, len(jobs)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"polycap-{self.provider}") as pool:
            flat = list(pool.map(lambda job: self._caption_one(job[1], job[0]), jobs))
        n = len(payloads)
        return [flat[j * n : (j + 1) * n] for j in range(len(per_lang))]

    @property
    def max_concurrency(self) -> int:
        """Requests this captioner may have in flight (a style pipeline rewrites this many at once)."""
        return self.settings.max_concurrency

    def generate(self, prompt: str, options: GenerationOptions) -> str:
        """Text-only completion (the :class:`~polycap.backends.compose.TextGenerator` protocol)."""
        return self.generate_with_meta(prompt, options)[0]

    def generate_with_meta(self, prompt: str, options: GenerationOptions) -> tuple[str, dict[str, Any]]:
        """Like :meth:`generate`, plus provider, usage and latency; raises RemoteError on failure."""
        try:
            return self._complete(prompt, None, options, options.style or self.settings.style)
        except RemoteError:
            raise
        except Exception as e:  # noqa: BLE001 - same scrubbing as caption errors
            raise RemoteError(self._error_text(e)) from None

    def info(self) -> dict[str, Any]:
        s = self.settings
        return {**super().info(), "provider": self.provider, "model": self.model, "base_url": s.base_url,
                "max_side": s.max_side, "max_concurrency": s.max_concurrency, "cache": s.cache}

    # ---- one request ------------------------------------------------------------------------
    def _caption_one(self, image: bytes, options: GenerationOptions) -> Caption:
        start = time.perf_counter()
        try:
            prompt = prompts.caption_prompt(options, self._template, self.settings.style)
            text, meta = self._complete(prompt, image, options, options.style or self.settings.style)
            cap = Caption(text=text, lang=options.lang, model=self.name, meta=meta)
        except Exception as e:  # noqa: BLE001 - one bad answer must not fail the batch
            message = self._error_text(e)
            log.warning("%s", message)
            cap = Caption.failed(message, options.lang, self.name)
            cap.meta = {"provider": self.provider, "model": self.model}
        cap.seconds = time.perf_counter() - start
        return cap

    def _complete(
        self, prompt: str, image: bytes | None, options: GenerationOptions, style: str | None
    ) -> tuple[str, dict[str, Any]]:
        """Cached or fresh answer to one prompt: (clean text, meta). Raises RemoteError."""
        params = self._params(options)
        if self._cache is None:
            record, cached = self._request(prompt, image, params), False
        else:
            key = self._cache_key(prompt, image, params)
            with self._single_flight.hold(key):  # a duplicate in flight waits, then hits the cache
                record = self._cache.get(key)
                cached = record is not None
                if record is None:
                    record = self._request(prompt, image, params)
                    self._clean(record, style)  # raises before an unusable answer is cached
                    self._cache.put(key, record)
        text = self._clean(record, style)
        meta = {
            "provider": self.provider,
            "model": self.model,
            "usage": record["usage"],
            "latency_s": record["latency_s"],
            "cached": cached,
            "attempts": 0 if cached else record["attempts"],
            "finish_reason": record.get("finish_reason"),
        }
        if style:
            meta["style"] = prompts.normalise_style(style)
        return text, meta

    def _request(self, prompt: str, image: bytes | None, params: CallParams) -> dict[str, Any]:
        """Call the API (bounded concurrency, retries) and validate the reply into a record."""
        with self._slots:
            start = time.perf_counter()
            reply, attempts = call_with_retries(
                lambda: self._send(prompt, image, params), self.settings.retry, self.name, self._scrub
            )
            latency = time.perf_counter() - start
        if reply.refusal:
            raise RemoteError(f"{self.name}: refused by the provider's content policy ({reply.refusal})")
        if not (reply.text or "").strip():
            raise RemoteError(f"{self.name}: empty response (finish reason: {reply.finish_reason or 'none'})")
        return {
            "text": reply.text,
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
            "latency_s": round(latency, 4),
            "attempts": attempts,
            "finish_reason": reply.finish_reason,
            "provider": self.provider,
            "model": self.model,
            "created": time.time(),
        }

    def _clean(self, record: dict[str, Any], style: str | None) -> str:
        text = prompts.clean_caption(record["text"], style)
        if not text:
            raise RemoteError(f"{self.name}: the response held no caption after cleanup: {record['text'][:80]!r}")
        return text

    def _params(self, options: GenerationOptions) -> CallParams:
        budget = self.settings.max_output_tokens or max(options.max_new_tokens, DEFAULT_MIN_OUTPUT_TOKENS)
        return CallParams(
            max_tokens=budget,
            temperature=float(options.temperature) if options.do_sample else 0.0,
            top_p=float(options.top_p) if options.do_sample and options.top_p < 1 else None,
            seed=options.seed,
            extra=dict(self.settings.extra_params),
        )

    def _cache_key(self, prompt: str, image: bytes | None, params: CallParams) -> str:
        return cache_key(
            {
                "provider": self.provider,
                "endpoint": self.settings.base_url,
                "model": self.model,
                "image": hashlib.sha256(image).hexdigest() if image is not None else None,
                "prompt": prompt,
                "params": {"max_tokens": params.max_tokens, "temperature": params.temperature,
                           "top_p": params.top_p, "seed": params.seed, "extra": params.extra},
            }
        )

    def _scrub(self, text: str) -> str:
        return self._key.scrub(text) if self._key else text

    def _error_text(self, e: BaseException) -> str:
        text = str(e) if isinstance(e, PolycapError) else f"{self.name}: {type(e).__name__}: {e}"
        return self._scrub(text)
