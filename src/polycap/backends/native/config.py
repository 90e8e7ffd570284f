"""The config of polycap's own captioners: data, saved as config.json next to the weights."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from polycap.errors import PolycapError


@dataclass
class NativeConfig:
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, folder: str | Path) -> None:
        path = Path(folder) / "config.json"
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NativeConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"model_card"})
        if unknown:
            raise PolycapError(f"unknown native config keys: {', '.join(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, folder: str | Path) -> NativeConfig:
        path = Path(folder) / "config.json"
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as e:
            raise PolycapError(f"cannot read {path}: {e}") from e
