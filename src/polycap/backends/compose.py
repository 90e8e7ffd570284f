"""Styled captions from any captioner: describe the image, then have a text model rewrite it.

There are two ways to a styled caption (``style="social"``, ``"alt-text"``, ``"detailed"``,
``"hashtags"`` or any free instruction):

1. Remote vision models write it in one call: ``polycap.load("openai:gpt-4o-mini").caption(img,
   style="social")``.
2. Any other captioner becomes the *describer* of a two-stage pipeline, built with the ``style:``
   scheme; a *rewriter* turns its plain description into the styled caption::

       polycap.load("style:polycap-base", rewriter="anthropic:claude-haiku-4-5", style="social")
       polycap.load("style:polycap-base", rewriter="/models/qwen2.5-0.5b-instruct")

   The rewriter is a remote model name (used text-only), a local folder holding a transformers
   causal LM, or any object with ``generate(prompt, options) -> str`` (:class:`TextGenerator`).

Why a scheme rather than an extra argument on every loader: the describer stays a plain model
name loaded by its own backend, no backend has to know about styles, and the pipeline is itself
a Captioner, so the CLI, server, batch jobs and evaluation use it like any model.

The rewrite prompt (``remote/prompts/rewrite.txt``) tells the model to use only facts stated in
the description (no invented people, places or brands) and to write in the target language; the
answer is cleaned like a remote caption (no preamble, quotes or "Image of"). Both texts are kept:
``Caption.text`` is the styled caption, ``Caption.meta["description"]`` what it was written from.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from polycap.backends.base import Capabilities, Captioner
from polycap.backends.remote import prompts
from polycap.errors import ModelNotFoundError, OptionError, PolycapError
from polycap.types import Caption, GenerationOptions

LOCAL_MIN_NEW_TOKENS = 64  # a styled caption is longer than the 30-token default of captioners


@runtime_checkable
class TextGenerator(Protocol):
    """What a rewriter needs: a name for records, and one text-in, text-out call.

    Implementations may also offer ``generate_with_meta(prompt, options) -> (text, meta)``; the
    pipeline then records the rewriter's provider, token usage and latency.
    """

    name: str

    def generate(self, prompt: str, options: GenerationOptions) -> str: ...


class LocalTextGenerator:
    """A transformers causal (instruct) LM from a local folder; never downloads anything.

    The tokenizer's chat template is used when it has one (instruct models), else the prompt is
    fed as plain text. Only the newly generated tokens are returned.
    """

    def __init__(self, folder: str | Path, device: str = "auto", max_new_tokens: int | None = None):
        from polycap.backends.torch_utils import require_torch, resolve_device

        require_torch()
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:  # pragma: no cover - only without the extra
            from polycap.errors import MissingDependencyError

            raise MissingDependencyError("transformers", "torch", "local rewriting models") from e
        self.folder = Path(folder).expanduser()
        self.name = f"local:{self.folder.name}"
        self.device = resolve_device(device)
        self.max_new_tokens = max_new_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(self.folder, local_files_only=True).to(self.device).eval()
        self._lock = threading.Lock()  # one generate() at a time on one model

    def __repr__(self) -> str:
        return f"LocalTextGenerator({str(self.folder)!r}, device={self.device!r})"

    def generate(self, prompt: str, options: GenerationOptions) -> str:
        import torch

        from polycap.backends.torch_utils import seed_everything

        inputs = self._encode(prompt)
        budget = self.max_new_tokens or max(options.max_new_tokens, LOCAL_MIN_NEW_TOKENS)
        kwargs: dict[str, Any] = {
            "max_new_tokens": budget,
            "min_new_tokens": min(options.min_new_tokens, budget),
            "do_sample": options.do_sample,
            "pad_token_id": self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else self.tokenizer.eos_token_id,
        }
        if options.do_sample:
            kwargs.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k or 0)
        with self._lock, torch.inference_mode():
            seed_everything(options.seed)
            out = self.model.generate(**inputs, **kwargs)
        new_tokens = out[0, inputs["input_ids"].shape[1] :]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()

    def _encode(self, prompt: str) -> dict[str, Any]:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            enc = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=True, return_tensors="pt"
            )
        else:
            enc = tok(prompt, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}


class StyledCaptioner(Captioner):
    """Describe with ``describer``, rewrite with ``rewriter`` into ``style`` and the target language.

    The describer runs deterministically (greedy, or beams if asked) in ``describe_lang``
    (default: its own default language, usually English, where captioners are strongest); the
    sampling options (do_sample, temperature, top_p, seed) go to the rewriter, where the
    creativity belongs. Any language can be asked for: the rewriter writes it.
    """

    def __init__(
        self,
        describer: Captioner,
        rewriter: TextGenerator,
        style: str | None = None,
        name: str | None = None,
        template: str | None = None,
        describe_lang: str | None = None,
        max_concurrency: int | None = None,
    ):
        caps = describer.capabilities
        super().__init__(
            name or f"style:{describer.name}",
            Capabilities(languages=None, beam_search=caps.beam_search, sampling=True, styles=True, scores=False,
                         max_batch_size=caps.max_batch_size),
        )
        if not isinstance(rewriter, TextGenerator):
            raise OptionError(f"rewriter {rewriter!r} has no generate(prompt, options) method")
        self.describer = describer
        self.rewriter = rewriter
        self.style = prompts.normalise_style(style)
        self.template = template
        self.describe_lang = describe_lang or describer.default_lang
        self.max_concurrency = max_concurrency or getattr(rewriter, "max_concurrency", 1)
        describer.check_options(GenerationOptions(lang=self.describe_lang))

    def __repr__(self) -> str:
        return f"StyledCaptioner(describer={self.describer!r}, rewriter={self.rewriter!r}, style={self.style!r})"

    def check_options(self, options: GenerationOptions) -> None:
        super().check_options(options)
        if options.num_return_sequences != 1:
            raise OptionError(f"model {self.name!r} writes one styled caption per image (num_return_sequences=1)")

    def caption_batch(self, images: Sequence[Image.Image], options: GenerationOptions) -> list[Caption]:
        descriptions = self.describer.caption_batch(images, self._describe_options(options))
        if len(descriptions) != len(images):
            raise PolycapError(f"describer {self.describer.name!r} returned {len(descriptions)} for {len(images)}")
        workers = max(1, min(self.max_concurrency, len(descriptions)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="polycap-rewrite") as pool:
            return list(pool.map(lambda d: self._rewrite(d, options), descriptions))

    def _describe_options(self, options: GenerationOptions) -> GenerationOptions:
        return GenerationOptions(
            lang=self.describe_lang,
            max_new_tokens=options.max_new_tokens,
            num_beams=options.num_beams,
            length_penalty=options.length_penalty,
            no_repeat_ngram_size=options.no_repeat_ngram_size,
        )

    def _rewrite(self, description: Caption, options: GenerationOptions) -> Caption:
        style = prompts.normalise_style(options.style) or self.style
        meta: dict[str, Any] = {
            "description": description.text,
            "description_lang": description.lang,
            "describer": self.describer.name,
            "rewriter": self.rewriter.name,
            "style": style,
        }
        if not description.ok:
            return _failed(f"describing failed: {description.error}", options, self.name, meta)
        prompt = prompts.rewrite_prompt(description.text, options, self.template, style)
        try:
            if hasattr(self.rewriter, "generate_with_meta"):
                raw, rewrite_meta = self.rewriter.generate_with_meta(prompt, options)
                meta["rewrite"] = rewrite_meta
            else:
                raw = self.rewriter.generate(prompt, options)
        except Exception as e:  # noqa: BLE001 - one failed rewrite must not fail the batch
            detail = str(e) if isinstance(e, PolycapError) else f"{type(e).__name__}: {e}"
            return _failed(f"rewriting failed: {detail}", options, self.name, meta)
        text = prompts.clean_caption(raw, style)
        if not text:
            error = f"rewriting failed: the rewriter returned no caption ({raw[:80]!r})"
            return _failed(error, options, self.name, meta)
        return Caption(text=text, lang=options.lang, model=self.name, meta=meta)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "describer": self.describer.name, "rewriter": self.rewriter.name, "style": self.style}


def _failed(error: str, options: GenerationOptions, model: str, meta: dict[str, Any]) -> Caption:
    cap = Caption.failed(error, options.lang, model)
    cap.meta = meta
    return cap


def load_text_generator(
    ref: Any, load: Callable[..., Any], device: str = "auto", **kwargs: Any
) -> TextGenerator:
    """A rewriter from a TextGenerator object, a local causal-LM folder, or a model name.

    A folder is a transformers model when its config.json has no polycap ``backend`` field; any
    other name goes through ``load`` (the registry's loader, as :func:`polycap.load`) and must
    support text-only generation (the remote backends do).
    """
    if not isinstance(ref, (str, Path)):
        if isinstance(ref, TextGenerator):
            return ref
        raise OptionError(f"rewriter must be a model name, a folder or a TextGenerator, got {type(ref).__name__}")
    path = Path(ref).expanduser()
    if path.is_dir() and not _is_polycap_folder(path):
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"rewriter folder {path} has no config.json (a transformers causal LM is needed)")
        return LocalTextGenerator(path, device=device, **kwargs)
    model = load(str(ref), device=device, **kwargs)
    if not isinstance(model, TextGenerator):
        raise OptionError(
            f"{ref!r} cannot rewrite text (it only captions images); use a remote model such as "
            "openai:gpt-4o-mini, or a local folder with a transformers causal language model"
        )
    return model


def _is_polycap_folder(path: Path) -> bool:
    try:
        return "backend" in json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def load_styled(
    ref: str,
    *,
    load: Callable[..., Captioner],
    device: str = "auto",
    name: str | None = None,
    rewriter: Any = None,
    style: str | None = None,
    rewriter_options: dict[str, Any] | None = None,
    describer_options: dict[str, Any] | None = None,
    prompt: str | None = None,
    prompt_file: str | Path | None = None,
    describe_lang: str | None = None,
    max_concurrency: int | None = None,
) -> StyledCaptioner:
    """Loader of the ``style:<describer>`` scheme; ``rewriter`` is required. ``load`` builds the
    describer (and a named rewriter) from its name: the registry's loader, handed in by
    :meth:`Registry.add_pipeline`."""
    if not ref.strip():
        raise ModelNotFoundError("style: needs a describer model, e.g. style:polycap-base")
    if rewriter is None:
        raise OptionError(
            f"{name or 'style:' + ref} needs rewriter=...: a remote model (e.g. openai:gpt-4o-mini), a local "
            "folder with a transformers causal language model, or a TextGenerator object (CLI: --rewriter)"
        )
    template = prompts.load_template(prompt, prompt_file)
    describer = load(ref, device=device, **(describer_options or {}))
    generator = load_text_generator(rewriter, load, device=device, **(rewriter_options or {}))
    return StyledCaptioner(describer, generator, style=style, name=name, template=template,
                           describe_lang=describe_lang, max_concurrency=max_concurrency)


def register(registry) -> None:
    registry.add_pipeline(
        "style", load_styled, schemes=("style",), description="describe with any captioner, rewrite into a style"
    )
