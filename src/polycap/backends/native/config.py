"""The config of polycap's own captioners: data, saved as config.json next to the weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from polycap.backends.model_config import JsonConfig, typed


@dataclass
class NativeConfig(JsonConfig):
    name: str = "polycap-base"
    backend: str = "native"
    arch: str = "transformer"  # "transformer" (GPT-2 blocks with cross-attention) or "lstm"
    languages: list[str] = field(default_factory=lambda: ["en", "de", "ar", "fr", "cs"])
    encoder: dict[str, Any] = field(default_factory=lambda: {"name": "efficientnet-lite2"})
    encoder_dim: int = 1280  # channels of the encoder's feature grid
    grid_positions: int = 81  # h*w of the encoder's feature grid
    d_model: int = 384
    n_layer: int = 3
    n_head: int = 6
    dropout: float = 0.1
    max_length: int = 40  # tokens, including the language token and </s>
    vocab_size: int = 8000
    generation: dict[str, Any] = field(default_factory=dict)  # default GenerationOptions overrides
    concepts: dict[str, Any] = field(default_factory=dict)  # ConceptSettings (concepts.py); {} = off
    concept_slots: int = 0  # concepts the decoder's memory holds (0: a model without the concept path)
    concept_pieces: int = 6  # tokens of each concept's name

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NativeConfig:
        """A config.json's fields; its free-form ``model_card`` (measured scores) is not part of the model."""
        return typed(cls, {k: v for k, v in data.items() if k != "model_card"}, "key(s) in native config")

