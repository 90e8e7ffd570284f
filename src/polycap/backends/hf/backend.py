"""``HFCaptioner``: a Hugging Face captioning model driven as preprocess -> generate -> decode.

The per-architecture differences (model class, how a prompt enters, which output tokens echo it,
padding side) are data in :mod:`polycap.backends.hf.families`; this module is the same for all.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from polycap.backends.base import Capabilities, Captioner
from polycap.backends.hf import loading
from polycap.backends.hf.families import Family, family_for, florence_task
from polycap.errors import MissingDependencyError, ModelNotFoundError, OptionError
from polycap.types import Alternative, Caption, GenerationOptions

DTYPES = ("float32", "bfloat16", "float16")


class HFCaptioner(Captioner):
    """One transformers captioning model with its image processor and tokenizer.

    ``prompt`` conditions the caption (BLIP: "a photography of"; Florence-2: a task token); it is
    cut from the output. The captions are English: these models were trained on English text.
    """

    def __init__(
        self,
        name: str,
        model: Any,
        family: Family,
        tokenizer: Any,
        image_processor: Any,
        processor: Any = None,
        prompt: str | None = None,
        device: str = "cpu",
        max_batch_size: int = 16,
    ):
        super().__init__(name, Capabilities(languages=("en",), max_batch_size=max_batch_size))
        self.model = model
        self.family = family
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.processor = processor
        self.prompt = prompt if prompt is not None else family.default_prompt
        self.device = device
        self.tokenizer.padding_side = family.padding_side
        # BLIP-2 and Florence-2 mark image positions with a placeholder token; it is never caption text
        image_token = getattr(model.config, "image_token_id", None)
        self._suppress = [image_token] if isinstance(image_token, int) else []
        self._stop_ids = _stop_ids(model, family)
        self._lock = threading.Lock()  # one generate() at a time on one model

    def __repr__(self) -> str:
        return f"HFCaptioner(name={self.name!r}, family={self.family.name!r}, device={self.device!r})"

    # ---- preprocess -> generate -> decode --------------------------------------------------
    def caption_batch(self, images: Sequence[Image.Image], options: GenerationOptions) -> list[Caption]:
        import torch

        from polycap.backends.torch_utils import generate_kwargs, seed_everything

        inputs, strip = self._preprocess(list(images))
        kwargs = {**generate_kwargs(options), "output_scores": True, "return_dict_in_generate": True}
        if self._suppress:
            kwargs["suppress_tokens"] = self._suppress
        with self._lock, torch.inference_mode():
            seed_everything(options.seed)
            out = self.model.generate(**inputs, **kwargs)
        texts = self.tokenizer.batch_decode(out.sequences[:, strip:], skip_special_tokens=True)
        scores = self._scores(out, options)
        per = options.num_return_sequences
        caps = []
        for i in range(len(images)):
            alts = [Alternative(_clean(t), s) for t, s in zip(texts[i * per : (i + 1) * per], scores[i * per :])]
            best = alts[0]
            caps.append(
                Caption(
                    text=best.text,
                    lang=options.lang,
                    model=self.name,
                    score=best.score,
                    alternatives=alts if per > 1 else [],
                    meta={"family": self.family.name, **({"prompt": self.prompt} if self.prompt else {})},
                )
            )
        return caps

    def _preprocess(self, images: list[Image.Image]) -> tuple[dict[str, Any], int]:
        """Model inputs for a batch, and how many leading output tokens echo the prompt."""
        import torch

        mode, n, prompt = self.family.prompt_mode, len(images), self.prompt
        if mode == "processor":
            text = [prompt or ""] * n if (prompt or self.family.strip == "input") else None
            enc = dict(self.processor(images=images, text=text, return_tensors="pt", padding=True))
        elif mode == "task":
            enc = dict(self.processor(images=images, text=[prompt] * n, return_tensors="pt", padding=True))
        else:
            enc = {"pixel_values": self.image_processor(images, return_tensors="pt")["pixel_values"]}
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
            if mode == "bos_prefix":  # GIT: [CLS] prompt, no [SEP], so generation continues the prompt
                start = self.model.config.bos_token_id
                key = "input_ids"
            else:  # VisionEncoderDecoder: the decoder starts from decoder_start_token_id + prompt
                start = self.model.config.decoder_start_token_id
                key = "decoder_input_ids"
            enc[key] = torch.tensor([[start, *ids]] * n, dtype=torch.long)
            enc[key.replace("input_ids", "attention_mask")] = torch.ones_like(enc[key])
        strip = {"input": "input_ids", "input-1": "input_ids", "decoder": "decoder_input_ids"}.get(self.family.strip)
        n_strip = enc[strip].shape[1] if strip and strip in enc else 0
        if self.family.strip == "input-1" and n_strip:
            n_strip -= 1  # BLIP generates from input_ids[:, :-1] (the [SEP] is dropped)
        dtype = next(self.model.parameters()).dtype
        moved = {
            k: (v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device))
            for k, v in enc.items()
            if hasattr(v, "to")
        }
        return moved, n_strip

    def _scores(self, out: Any, options: GenerationOptions) -> list[float | None]:
        """Mean token log-probability of each returned sequence, or None where it is not known."""
        n = out.sequences.shape[0]
        if options.num_beams > 1:
            seq_scores = getattr(out, "sequences_scores", None)
            return [float(s) for s in seq_scores] if seq_scores is not None else [None] * n
        try:
            import torch

            trans = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
            gen = out.sequences[:, -trans.shape[1] :]
            is_eos = torch.isin(gen, torch.tensor(self._stop_ids, device=gen.device)).long()
            valid = (is_eos.cumsum(1) - is_eos) == 0  # generated tokens up to and including the first eos
            trans = torch.where(valid, trans.float(), torch.zeros_like(trans, dtype=torch.float))
            means = trans.sum(1) / valid.sum(1).clamp(min=1)
            return [float(m) if torch.isfinite(m) else None for m in means]
        except Exception:  # noqa: BLE001 - a score is a nice-to-have; never fail a caption for it
            return [None] * n

    def info(self) -> dict[str, Any]:
        return {**super().info(), "family": self.family.name, "prompt": self.prompt, "device": self.device}


def _stop_ids(model: Any, family: Family) -> list[int]:
    """Token ids that end a caption: the generation config's eos, plus [SEP] for BLIP (its generate() stops there)."""
    eos = model.generation_config.eos_token_id
    ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
    sep = getattr(getattr(model.config, "text_config", None), "sep_token_id", None)
    if family.strip == "input-1" and sep is not None:
        ids.append(sep)
    return ids or [-1]


def _clean(text: str) -> str:
    return " ".join(text.split())


def _torch_dtype(dtype: str | None, device: str) -> Any:
    import torch

    if dtype in (None, "auto"):
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise OptionError(f"dtype must be one of {', '.join(DTYPES)} or auto, got {dtype!r}")
    return getattr(torch, dtype)


def load_hf(
    ref: str,
    *,
    device: str = "auto",
    name: str | None = None,
    dtype: str | None = None,
    prompt: str | None = None,
    task: str | None = None,
    max_batch_size: int = 16,
) -> HFCaptioner:
    """Loader of the ``hf:`` scheme: a hub id or a local folder holding a supported architecture."""
    from polycap.backends.torch_utils import require_torch, resolve_device

    require_torch()
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - only without the extra
        raise MissingDependencyError("transformers", "hf", "Hugging Face models") from e
    source = loading.resolve(ref)
    config = loading.load_config_dict(source)
    if source.local and "base_model" in config and "model_type" not in config:  # a `polycap finetune` result
        kwargs = {"device": device, "dtype": dtype, "prompt": prompt, "task": task, "max_batch_size": max_batch_size}
        return _load_finetuned(Path(source.path_or_id), config, name=name, **kwargs)
    family = family_for(config, ref)
    if family.prompt_mode == "task":
        _check_native_florence(config, ref)
        prompt = florence_task(prompt, task)
    elif task:
        raise OptionError(f"task= applies to Florence-2 only; {family.name} takes a text prompt (prompt=...)")
    cls = getattr(transformers, family.model_class, None)
    if cls is None:
        raise MissingDependencyError(f"transformers with {family.model_class}", "hf", f"{family.name} models")
    device = resolve_device(device)
    model = loading.from_pretrained(cls, source, dtype=_torch_dtype(dtype, device)).to(device).eval()
    processor, image_processor, tokenizer = _load_preprocessing(transformers, family, source)
    complete_generation_config(model.generation_config, tokenizer)
    return HFCaptioner(
        name or f"hf:{ref}",
        model,
        family,
        tokenizer,
        image_processor,
        processor=processor,
        prompt=prompt,
        device=device,
        max_batch_size=max_batch_size,
    )


def _load_preprocessing(transformers: Any, family: Family, source: loading.ModelSource) -> tuple[Any, Any, Any]:
    """(processor or None, image processor, tokenizer); PIL image processors, so torchvision is not needed."""
    if family.separate_processor:
        image_processor = loading.from_pretrained(transformers.AutoImageProcessor, source, backend="pil")
        return None, image_processor, loading.from_pretrained(transformers.AutoTokenizer, source)
    processor = loading.from_pretrained(transformers.AutoProcessor, source, backend="pil")
    return processor, processor.image_processor, processor.tokenizer


def complete_generation_config(gen: Any, tokenizer: Any) -> None:
    """Fill in the pad and eos ids a checkpoint's generation config lacks, from its tokenizer (in place)."""
    if gen.pad_token_id is None:  # GPT-2 and friends have no pad token; pad with eos as they were trained
        gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else gen.eos_token_id
    if gen.eos_token_id is None and tokenizer.eos_token_id is not None:
        gen.eos_token_id = tokenizer.eos_token_id


def _check_native_florence(config: dict[str, Any], ref: str) -> None:
    """Refuse (clearly) a Florence-2 checkpoint in the original trust_remote_code layout."""
    text_type = (config.get("text_config") or {}).get("model_type")
    if text_type not in (None, "bart"):
        raise ModelNotFoundError(
            f"hf:{ref} is a Florence-2 checkpoint in the original remote-code layout (text_config model_type "
            f"{text_type!r}); transformers' native Florence2ForConditionalGeneration needs the converted layout, "
            "e.g. hf:florence-community/Florence-2-base or -large (polycap never runs trust_remote_code)"
        )


def _load_finetuned(folder: Path, config: dict[str, Any], *, name: str | None, **kwargs: Any) -> HFCaptioner:
    """A fine-tuning run folder: its base model (a folder beside it, a path or a hub id) plus its LoRA adapter."""
    base = str(config["base_model"])
    if (folder / base).is_dir():
        base = str(folder / base)
    if kwargs.get("prompt") is None:
        kwargs["prompt"] = config.get("prompt")
    captioner = load_hf(base, name=name or f"hf:{folder}", **kwargs)
    if config.get("languages"):  # fine-tuned on captions in these languages
        captioner.capabilities = replace(captioner.capabilities, languages=tuple(config["languages"]))
    adapter = config.get("adapter")
    if adapter:
        try:
            from peft import PeftModel
        except ImportError as e:
            raise MissingDependencyError("peft", "hf", "LoRA adapters") from e
        model = PeftModel.from_pretrained(captioner.model, str(folder / adapter))
        captioner.model = model.merge_and_unload().eval()  # plain model again: generate() works as before
    return captioner
