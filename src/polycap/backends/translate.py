"""Caption, then translate: any captioner plus a machine-translation model, behind the one contract.

    polycap.load("translate:hf:Salesforce/blip-image-captioning-base", translator="hf:Helsinki-NLP/opus-mt-en-de")
    polycap.load("translate:polycap-base", translator="en-fr")          # a named language pair
    polycap.load("translate:hf:/models/git", translator={"de": "hf:/models/opus-mt-en-de",
                                                         "fr": "hf:/models/opus-mt-en-fr"})
    polycap.load("translate:hf:/models/blip", translator="hf:/models/nllb-200-distilled-600M",
                 target_langs=["de", "fr", "ar"])                          # one multilingual model

The captioner writes in ``source_lang`` (English by default) with the caller's options (beams,
sampling, seed, max_new_tokens all pass through); the translator turns every returned sequence
into the target language. A request in the source language is not translated. Each Caption keeps
what it was translated from in ``meta["source_caption"]``.

Translators are transformers seq2seq models: Marian (opus-mt, one pair per model; multi-target
models take a ``>>fr<<`` prefix token) and NLLB / M2M100 (many languages; the target is forced as
the first generated token, ``forced_bos_token_id``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from polycap.backends.base import Capabilities, Captioner
from polycap.errors import ModelNotFoundError, OptionError, PolycapError
from polycap.types import Alternative, Caption, GenerationOptions

# Named language pairs: translator="en-de" means this hub model.
PAIRS = {
    f"en-{t}": f"Helsinki-NLP/opus-mt-en-{t}" for t in ("de", "fr", "cs", "ar", "es", "it", "nl", "ru", "zh", "uk")
}
NLLB_DEFAULT = "facebook/nllb-200-distilled-600M"
# ISO 639-1 -> NLLB-200 (FLORES) codes for the languages people ask for most; others: pass the code itself.
NLLB_CODES = {
    "en": "eng_Latn", "de": "deu_Latn", "fr": "fra_Latn", "ar": "arb_Arab", "cs": "ces_Latn", "es": "spa_Latn",
    "it": "ita_Latn", "pt": "por_Latn", "nl": "nld_Latn", "ru": "rus_Cyrl", "uk": "ukr_Cyrl", "pl": "pol_Latn",
    "tr": "tur_Latn", "zh": "zho_Hans", "ja": "jpn_Jpan", "ko": "kor_Hang", "hi": "hin_Deva", "sv": "swe_Latn",
}  # fmt: skip


@runtime_checkable
class Translator(Protocol):
    """What the pipeline needs from a translator."""

    name: str

    def translate(self, texts: Sequence[str], target: str) -> list[str]: ...


class HFTranslator:
    """A transformers seq2seq translation model (Marian, NLLB, M2M100) from a folder or hub id."""

    def __init__(self, ref: str, device: str = "auto", source_lang: str = "en", max_new_tokens: int = 128):
        import transformers

        from polycap.backends.hf import loading
        from polycap.backends.torch_utils import require_torch, resolve_device

        require_torch()
        ref = PAIRS.get(ref, NLLB_DEFAULT if ref == "nllb" else ref).removeprefix("hf:")
        source = loading.resolve(ref)
        self.model_type = str(loading.load_config_dict(source).get("model_type", ""))
        self.name = f"hf:{ref}"
        self.ref = ref
        self.device = resolve_device(device)
        self.source_lang = source_lang
        self.max_new_tokens = max_new_tokens
        self.tokenizer = loading.from_pretrained(transformers.AutoTokenizer, source)
        model = loading.from_pretrained(transformers.AutoModelForSeq2SeqLM, source)
        self.model = model.to(self.device).eval()
        self._lock = threading.Lock()
        if self.multilingual:  # NLLB tokenizers take "eng_Latn", M2M100 ones "en" (its token is "__en__")
            token = self._lang_token(source_lang)
            self.tokenizer.src_lang = token[2:-2] if token.startswith("__") and token.endswith("__") else token
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(limit, int):
            self.max_new_tokens = min(max_new_tokens, limit - 2)

    def __repr__(self) -> str:
        return f"HFTranslator({self.ref!r}, type={self.model_type!r})"

    @property
    def multilingual(self) -> bool:
        return self.model_type != "marian"

    def fixed_target(self) -> str | None:
        """The one target language of a Marian pair model, read from its name (opus-mt-en-de -> de)."""
        if self.multilingual:
            return None
        tail = self.ref.rstrip("/").rsplit("/", 1)[-1].rsplit("-", 1)[-1]
        multi = tail == "mul"  # opus-mt-en-mul: many targets, chosen by a >>xxx<< token
        return tail if tail.isalpha() and tail.islower() and len(tail) in (2, 3) and not multi else None

    def _lang_token(self, lang: str) -> str:
        """The vocabulary token naming ``lang``: NLLB ``deu_Latn``, M2M100 ``__de__``, Marian ``>>de<<``."""
        candidates = [f">>{lang}<<"] if not self.multilingual else [NLLB_CODES.get(lang, lang), f"__{lang}__", lang]
        unk = self.tokenizer.unk_token_id
        for tok in candidates:
            tid = self.tokenizer.convert_tokens_to_ids(tok)
            if tid is not None and tid != unk:
                return tok
        if not self.multilingual:
            return ""
        raise OptionError(f"translator {self.name!r} has no language token for {lang!r} (tried {candidates})")

    def translate(self, texts: Sequence[str], target: str) -> list[str]:
        import torch

        if not texts:
            return []
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "num_beams": 1, "do_sample": False}
        prefix = ""
        if self.multilingual:
            kwargs["forced_bos_token_id"] = self.tokenizer.convert_tokens_to_ids(self._lang_token(target))
        else:
            prefix = self._lang_token(target)  # multi-target Marian models choose the target by this token
            prefix = f"{prefix} " if prefix else ""
        enc = self.tokenizer([prefix + t for t in texts], return_tensors="pt", padding=True)
        enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        with self._lock, torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        return [" ".join(t.split()) for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


class TranslatedCaptioner(Captioner):
    """Caption in ``source_lang`` with ``captioner``, translate into the requested language."""

    def __init__(
        self,
        captioner: Captioner,
        translators: Mapping[str, Translator],
        source_lang: str = "en",
        name: str | None = None,
    ):
        if not translators:
            raise OptionError("a translate: pipeline needs at least one translator")
        caps = captioner.capabilities
        langs = tuple(sorted({source_lang, *translators}))
        super().__init__(
            name or f"translate:{captioner.name}",
            Capabilities(languages=langs, beam_search=caps.beam_search, sampling=caps.sampling, scores=False,
                         max_batch_size=caps.max_batch_size),
        )  # fmt: skip
        captioner.check_options(GenerationOptions(lang=source_lang))
        self.captioner = captioner
        self.translators = dict(translators)
        self.source_lang = source_lang

    def __repr__(self) -> str:
        return f"TranslatedCaptioner(captioner={self.captioner!r}, langs={self.capabilities.languages})"

    @property
    def generation_defaults(self) -> dict[str, Any]:  # type: ignore[override]
        """The captioner's: its decoding defaults (e.g. polycap-base's trigram block) still apply."""
        return self.captioner.generation_defaults

    def check_options(self, options: GenerationOptions) -> None:
        super().check_options(options)
        self.captioner.check_options(replace(options, lang=self.source_lang))

    def caption_batch(self, images: Sequence[Image.Image], options: GenerationOptions) -> list[Caption]:
        source = self.captioner.caption_batch(images, replace(options, lang=self.source_lang))
        if len(source) != len(images):
            raise PolycapError(f"captioner {self.captioner.name!r} returned {len(source)} for {len(images)}")
        if options.lang == self.source_lang:
            for c in source:
                c.model = self.name
                c.meta = {**c.meta, "captioner": self.captioner.name}
            return source
        translator = self.translators[options.lang]
        # one translate() call for every text of the batch: captions and their alternatives
        texts = [t for c in source if c.ok for t in ([a.text for a in c.alternatives] or [c.text])]
        done = iter(translator.translate(texts, options.lang))
        out = []
        for c in source:
            meta = {"source_caption": c.text, "source_lang": c.lang, "source_score": c.score,
                    "captioner": self.captioner.name, "translator": translator.name}  # fmt: skip
            if not c.ok:
                failed = Caption.failed(f"captioning failed: {c.error}", options.lang, self.name)
                failed.meta = meta
                out.append(failed)
                continue
            alts = [Alternative(next(done)) for _ in c.alternatives]
            text = alts[0].text if alts else next(done)
            if alts:
                meta["source_alternatives"] = [a.text for a in c.alternatives]
            out.append(Caption(text=text, lang=options.lang, model=self.name, alternatives=alts, meta=meta))
        return out

    def info(self) -> dict[str, Any]:
        return {**super().info(), "captioner": self.captioner.name,
                "translators": {k: v.name for k, v in self.translators.items()}}  # fmt: skip


def load_translators(
    translator: Any, device: str, source_lang: str, target_langs: Sequence[str] | None
) -> dict[str, Translator]:
    """Target language -> translator, from a name, a {lang: name} mapping or Translator objects."""
    if isinstance(translator, Mapping):
        return {lang: _one(t, device, source_lang) for lang, t in translator.items()}
    one = _one(translator, device, source_lang)
    fixed = one.fixed_target() if isinstance(one, HFTranslator) else None
    if target_langs:
        wrong = [lang for lang in target_langs if fixed and lang != fixed]
        if wrong:
            raise OptionError(f"translator {one.name!r} translates into {fixed!r} only, not {', '.join(wrong)}")
        return dict.fromkeys(target_langs, one)
    if not fixed:
        raise OptionError(f"translator {one.name!r} translates into many languages; say which with target_langs=[...]")
    return {fixed: one}


def _one(ref: Any, device: str, source_lang: str) -> Translator:
    if isinstance(ref, Translator):
        return ref
    if not isinstance(ref, str) or not ref.strip():
        raise OptionError(f"translator must be a model name, a folder or a Translator, got {ref!r}")
    return HFTranslator(ref, device=device, source_lang=source_lang)


def load_translated(
    ref: str,
    *,
    load: Callable[..., Captioner],
    device: str = "auto",
    name: str | None = None,
    translator: Any = None,
    target_langs: Sequence[str] | None = None,
    source_lang: str = "en",
    **captioner_kwargs: Any,
) -> TranslatedCaptioner:
    """Loader of the ``translate:<captioner>`` scheme; ``translator`` is required. ``load`` builds the
    captioner from its name (the registry's loader, handed in by :meth:`Registry.add_pipeline`)."""
    if not ref.strip():
        raise ModelNotFoundError("translate: needs a captioner, e.g. translate:hf:/models/blip, translate:polycap-base")
    if translator is None:
        raise OptionError(
            f"{name or 'translate:' + ref} needs translator=...: a translation model (hf:Helsinki-NLP/opus-mt-en-de, "
            f"a local folder), a language pair ({', '.join(sorted(PAIRS))}), 'nllb', or a {{lang: model}} mapping"
        )
    translators = load_translators(translator, device, source_lang, target_langs)
    captioner = load(ref, device=device, **captioner_kwargs)
    return TranslatedCaptioner(captioner, translators, source_lang=source_lang, name=name)


def register(registry) -> None:
    registry.add_pipeline(
        "translate",
        load_translated,
        schemes=("translate",),
        description="caption with any captioner, then translate (Marian opus-mt, NLLB, M2M100)",
    )
