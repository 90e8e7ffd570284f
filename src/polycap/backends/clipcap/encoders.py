"""Image encoders a ClipCap model can use; each gives (B, N, C) features the feature cache stores.

* ``efficientnet-lite2`` and ``tiny-conv``: the shared encoders of :mod:`polycap.backends.encoders`
  ((B, 81, 1280) grid), the ones polycap's own models use.
* ``clip``: a transformers ``CLIPVisionModelWithProjection`` from a folder or hub id, giving the
  projected image embedding as one position (``output: embeds``, (B, 1, P), ClipCap's input) or
  the patch tokens (``output: grid``, (B, 1 + patches, H)).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polycap.backends import encoders as shared
from polycap.backends.encoders import feature_dim  # noqa: F401 - the trainer takes both from here
from polycap.errors import PolycapError


class CLIPEncoder(nn.Module):
    def __init__(self, model: nn.Module, processor: Any, ref: str, output: str = "embeds"):
        super().__init__()
        if output not in ("embeds", "grid"):
            raise PolycapError(f"clip encoder output must be 'embeds' or 'grid', got {output!r}")
        self.model, self.processor, self.ref, self.output = model.eval(), processor, ref, output
        self.model.requires_grad_(False)
        cfg = model.config
        self.feature_dim = cfg.projection_dim if output == "embeds" else cfg.hidden_size
        slug = Path(ref).name if Path(ref).is_dir() else ref.replace("/", "--")
        self.name = f"clip-{slug}-{output}"

    @classmethod
    def from_pretrained(cls, ref: str, output: str = "embeds") -> CLIPEncoder:
        from transformers import AutoImageProcessor, CLIPVisionModelWithProjection

        from polycap.backends.hf import loading

        source = loading.resolve(ref)
        model = loading.from_pretrained(CLIPVisionModelWithProjection, source)
        processor = loading.from_pretrained(AutoImageProcessor, source)
        return cls(model, processor, ref, output)

    def preprocessing_id(self) -> str:
        """Keys the feature cache: the processor settings and the weights' identity (config + size)."""
        proc = json.dumps(self.processor.to_dict(), sort_keys=True, default=str)
        weights = json.dumps(self.model.config.to_dict(), sort_keys=True, default=str)
        n = sum(p.numel() for p in self.model.parameters())
        first = next(self.model.parameters()).flatten()[:64].tolist()
        digest = hashlib.sha256(f"{proc}|{weights}|{n}|{first}".encode()).hexdigest()[:16]
        return f"clip-{self.output}-{digest}"

    def preprocess(self, images: list[Any]) -> torch.Tensor:
        return self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixels.to(next(self.model.parameters()).dtype))
        if self.output == "embeds":
            return out.image_embeds[:, None, :].float()  # (B, 1, P)
        return out.last_hidden_state.float()  # (B, 1 + patches, H)


def build_encoder(spec: dict[str, Any], inference: bool = False) -> nn.Module:
    """Encoders by name: ``clip`` here, the others shared (:func:`polycap.backends.encoders.build_encoder`);
    weights come from installed packages or local/cached folders."""
    if spec.get("name") == "clip":
        if not spec.get("path"):
            raise PolycapError("the clip encoder needs a path: a local folder or a hub id")
        return CLIPEncoder.from_pretrained(spec["path"], spec.get("output", "embeds"))
    if spec.get("name") not in shared.KNOWN:
        raise PolycapError(f"unknown encoder {spec.get('name')!r}; known: {', '.join(shared.KNOWN)}, clip")
    return shared.build_encoder(spec, inference=inference)
