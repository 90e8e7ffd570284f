"""What differs between Hugging Face captioning architectures, as data keyed by ``model_type``.

transformers v5 removed the ``image-to-text`` pipeline and ``AutoModelForVision2Seq``, so polycap
drives each family's processor and ``generate()`` itself. Per family we need to know:

- the model class;
- how a text prompt (conditional captioning) enters ``generate()``:
  ``processor`` (BLIP, BLIP-2: the processor tokenizes it, BLIP-2 also inserts the image tokens),
  ``bos_prefix`` (GIT: ``[CLS] + prompt`` without the trailing ``[SEP]``, as ``input_ids``),
  ``decoder_prefix`` (VisionEncoderDecoder: ``decoder_start + prompt`` as ``decoder_input_ids``),
  ``task`` (Florence-2: a task token such as ``<CAPTION>`` the processor expands; encoder input);
- how many leading output tokens echo the prompt and must be cut (``strip``):
  ``input`` (decoder-only LMs return the whole input), ``input-1`` (BLIP drops the last input token),
  ``none`` (encoder-decoders return only the decoder side);
- the padding side for batched prompts: left for decoder-only language models.
"""

from __future__ import annotations

from dataclasses import dataclass

from polycap.errors import ModelNotFoundError


@dataclass(frozen=True)
class Family:
    name: str
    model_class: str
    prompt_mode: str  # processor | bos_prefix | decoder_prefix | task
    strip: str  # input | input-1 | decoder | none
    padding_side: str = "right"
    default_prompt: str | None = None
    separate_processor: bool = False  # image processor + tokenizer saved separately (no processor class)


FLORENCE_TASKS = {
    "caption": "<CAPTION>",
    "detailed": "<DETAILED_CAPTION>",
    "more_detailed": "<MORE_DETAILED_CAPTION>",
    "more-detailed": "<MORE_DETAILED_CAPTION>",
}

FAMILIES: dict[str, Family] = {
    "blip": Family("BLIP", "BlipForConditionalGeneration", "processor", "input-1"),
    "blip-2": Family("BLIP-2", "Blip2ForConditionalGeneration", "processor", "input", padding_side="left"),
    "git": Family("GIT", "GitForCausalLM", "bos_prefix", "input", padding_side="left"),
    "vision-encoder-decoder": Family(
        "VisionEncoderDecoder", "VisionEncoderDecoderModel", "decoder_prefix", "decoder", separate_processor=True
    ),
    "florence2": Family("Florence-2", "Florence2ForConditionalGeneration", "task", "none", default_prompt="<CAPTION>"),
}


def family_for(config: dict, ref: str) -> Family:
    """The family of a model from its config.json ``model_type``."""
    model_type = str(config.get("model_type", ""))
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    if model_type == "blip_2":
        return FAMILIES["blip-2"]
    known = ", ".join(f"{k} ({f.name})" for k, f in FAMILIES.items())
    raise ModelNotFoundError(
        f"hf:{ref} has model_type {model_type or '(none)'!r}, which polycap cannot caption with; supported: {known}"
    )


def florence_task(prompt: str | None, task: str | None) -> str:
    """Florence-2 task token from ``task`` (caption, detailed, more_detailed) or a raw ``<TOKEN>`` prompt."""
    if task:
        key = task.strip().lower()
        if key not in FLORENCE_TASKS:
            from polycap.errors import OptionError

            raise OptionError(f"unknown Florence-2 caption task {task!r}; known: caption, detailed, more_detailed")
        return FLORENCE_TASKS[key]
    return prompt or "<CAPTION>"
