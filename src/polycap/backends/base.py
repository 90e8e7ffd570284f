"""The one contract: a backend implements ``caption_batch``; this base class adds the rest.

Input loading, option checks, chunked batching and per-item error isolation live here once, so
every backend (and the CLI, server, evaluation and batch jobs that call them) behaves the same.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from polycap.errors import OptionError, PolycapError, UnsupportedLanguageError
from polycap.types import Caption, GenerationOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Capabilities:
    """What a backend supports; options outside it are refused with an error naming the limits.

    ``languages`` None means any language (e.g. a remote LLM told which language to write).
    """

    languages: tuple[str, ...] | None = ("en",)
    beam_search: bool = True
    sampling: bool = True
    styles: bool = False
    scores: bool = True
    max_batch_size: int = 32


class Captioner(ABC):
    """Base class of every backend. Subclasses implement :meth:`caption_batch` only."""

    def __init__(self, name: str, capabilities: Capabilities | None = None):
        self.name = name
        self.capabilities = capabilities or Capabilities()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    @abstractmethod
    def caption_batch(self, images: Sequence[Image.Image], options: GenerationOptions) -> list[Caption]:
        """Caption RGB images (already loaded and checked) with validated options.

        Returns one Caption per image, in order. It may raise for the whole batch; the base
        class then retries item by item so only the culprit fails.
        """

    # ---- options ---------------------------------------------------------------------------
    def check_options(self, options: GenerationOptions) -> None:
        """Raise a clear error if ``options`` ask for something this backend cannot do."""
        caps = self.capabilities
        if caps.languages is not None and options.lang not in caps.languages:
            raise UnsupportedLanguageError(options.lang, caps.languages, self.name)
        if options.num_beams > 1 and not caps.beam_search:
            raise OptionError(f"model {self.name!r} does not support beam search (num_beams=1 only)")
        if options.do_sample and not caps.sampling:
            raise OptionError(f"model {self.name!r} does not support sampling (do_sample)")
        if options.style and not caps.styles:
            raise OptionError(
                f"model {self.name!r} does not write styled captions; use a style pipeline "
                "(a describer plus a rewriting language model) or a backend that supports styles"
            )

    #: Options this model uses unless the caller sets them (a native model folder's ``generation``).
    generation_defaults: dict[str, Any] = {}

    def default_options(self) -> GenerationOptions:
        """The options used when the caller gives none: the default language + ``generation_defaults``."""
        return GenerationOptions.from_kwargs(None, **{"lang": self.default_lang, **self.generation_defaults})

    def make_options(self, options: GenerationOptions | None = None, **kwargs: Any) -> GenerationOptions:
        """``options`` (else the model's defaults), with ``kwargs`` applied, checked against the model."""
        base = options or self.default_options()
        opts = GenerationOptions.from_kwargs(base, **kwargs) if kwargs else base
        self.check_options(opts)
        return opts

    @property
    def default_lang(self) -> str:
        langs = self.capabilities.languages
        return "en" if not langs or "en" in langs else langs[0]

    # ---- entry points built on caption_batch -----------------------------------------------
    def caption(self, image: Any, options: GenerationOptions | None = None, **kwargs: Any) -> Caption:
        """Caption one image (any input :func:`polycap.images.load_image` accepts)."""
        return self.caption_many([image], options, **kwargs)[0]

    def caption_many(
        self,
        inputs: Iterable[Any],
        options: GenerationOptions | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> list[Caption]:
        """Caption many inputs; bad inputs become Captions with ``error`` set."""
        return list(self.iter_captions(inputs, options, batch_size=batch_size, **kwargs))

    def iter_captions(
        self,
        inputs: Iterable[Any],
        options: GenerationOptions | None = None,
        batch_size: int | None = None,
        max_pixels: int | None = None,
        langs: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[Caption]:
        """Yield Captions in input order, loading and captioning in chunks.

        With ``langs``, each image is loaded once and captioned once per language; the
        captions come image-major (all languages of image 1, then image 2, ...).
        Every option is checked before any image is touched.
        """
        from polycap.images import DEFAULT_MAX_PIXELS

        base = self.make_options(options, **kwargs)
        per_lang = [self.make_options(base, lang=lang) for lang in langs] if langs else [base]
        cap = self.capabilities.max_batch_size
        size = max(1, min(batch_size or cap, cap))
        limit = max_pixels or DEFAULT_MAX_PIXELS
        chunk: list[Any] = []
        for item in inputs:
            chunk.append(item)
            if len(chunk) == size:
                yield from self._caption_chunk(chunk, per_lang, limit)
                chunk = []
        if chunk:
            yield from self._caption_chunk(chunk, per_lang, limit)

    def caption_batch_langs(
        self, images: Sequence[Image.Image], per_lang: Sequence[GenerationOptions]
    ) -> list[list[Caption]]:
        """Caption the same images once per options object; returns [options][image].

        The default calls :meth:`caption_batch` per language; backends that can share work
        between languages (encode each image once) override this.
        """
        return [self.caption_batch(images, opts) for opts in per_lang]

    def _caption_chunk(
        self, inputs: list[Any], per_lang: list[GenerationOptions], max_pixels: int
    ) -> list[Caption]:
        from polycap.images import describe_source, load_image

        sources = [describe_source(item) for item in inputs]
        table: list[list[Caption | None]] = [[None] * len(per_lang) for _ in inputs]
        good: list[tuple[int, Image.Image]] = []
        for i, item in enumerate(inputs):
            try:
                good.append((i, load_image(item, max_pixels=max_pixels)))
            except PolycapError as e:
                for j, opts in enumerate(per_lang):
                    table[i][j] = Caption.failed(str(e), opts.lang, self.name, sources[i])
        for i, row in self._run_isolated(good, per_lang):
            for j, cap in enumerate(row):
                cap.source = cap.source or sources[i]
                table[i][j] = cap
        return [c for row in table for c in row if c is not None]

    def _run_isolated(
        self, good: list[tuple[int, Image.Image]], per_lang: list[GenerationOptions]
    ) -> list[tuple[int, list[Caption]]]:
        """Caption the loaded images as one batch; if the batch fails, retry one by one."""
        if not good:
            return []
        idx, imgs = zip(*good)
        try:
            by_lang = self._timed_batch(list(imgs), per_lang)
            return [(i, [by_lang[j][k] for j in range(len(per_lang))]) for k, i in enumerate(idx)]
        except Exception as e:  # noqa: BLE001 - isolate the culprit below
            if len(good) == 1:
                log.warning("captioning failed: %s", e)
                msg = f"{type(e).__name__}: {e}"
                return [(idx[0], [Caption.failed(msg, o.lang, self.name) for o in per_lang])]
            log.info("batch of %d failed (%s); retrying item by item", len(good), e)
            out: list[tuple[int, list[Caption]]] = []
            for pair in good:
                out.extend(self._run_isolated([pair], per_lang))
            return out

    def _timed_batch(self, images: list[Image.Image], per_lang: list[GenerationOptions]) -> list[list[Caption]]:
        start = time.perf_counter()
        by_lang = self.caption_batch_langs(images, per_lang)
        for caps in by_lang:
            if len(caps) != len(images):
                raise PolycapError(f"backend {self.name!r} returned {len(caps)} captions for {len(images)} images")
        share = (time.perf_counter() - start) / (len(images) * len(per_lang))
        for caps in by_lang:
            for c in caps:
                if c.seconds is None:
                    c.seconds = share
        return by_lang

    def info(self) -> dict[str, Any]:
        caps = self.capabilities
        return {
            "name": self.name,
            "backend": type(self).__name__,
            "languages": list(caps.languages) if caps.languages else None,
            "beam_search": caps.beam_search,
            "sampling": caps.sampling,
            "styles": caps.styles,
        }
