"""Hugging Face captioners (BLIP, BLIP-2, GIT, VisionEncoderDecoder, Florence-2) behind the one contract.

``polycap.load("hf:Salesforce/blip-image-captioning-base")`` or ``polycap.load("hf:/a/local/folder")``.
The architecture comes from the folder's ``config.json`` (``model_type``), never from the name.
transformers is imported only when a model is loaded, so registering costs nothing. See docs/hf.md.
"""

from __future__ import annotations

from typing import Any


def _load(ref: str, *, device: str = "auto", name: str | None = None, **kwargs: Any):
    from polycap.backends.hf.backend import load_hf  # torch/transformers are imported only here

    return load_hf(ref, device=device, name=name, **kwargs)


# Well-known checkpoints under short names; any other one works as hf:<hub id> or hf:<folder>.
KNOWN = {
    "blip-base": ("Salesforce/blip-image-captioning-base", "BLIP base (COCO captions)"),
    "blip-large": ("Salesforce/blip-image-captioning-large", "BLIP large (COCO captions)"),
    "blip2-opt-2.7b": ("Salesforce/blip2-opt-2.7b", "BLIP-2 with OPT-2.7B (large: ~15 GB in float32)"),
    "git-base-coco": ("microsoft/git-base-coco", "GIT base fine-tuned on COCO"),
    "vit-gpt2": ("nlpconnect/vit-gpt2-image-captioning", "ViT encoder + GPT-2 decoder"),
    "florence-2-base": ("florence-community/Florence-2-base", "Florence-2 base, native transformers port"),
}


def register(registry) -> None:
    from polycap.backends.hf.loading import is_cached
    from polycap.registry import ModelSpec

    registry.add_backend(
        "hf",
        _load,
        schemes=("hf",),
        description="Hugging Face captioners (BLIP, BLIP-2, GIT, ViT-GPT2, Florence-2); English captions",
    )
    for name, (repo, what) in KNOWN.items():
        registry.add_model(
            ModelSpec(
                name=name,
                backend="hf",
                ref=repo,
                description=f"{what}; captions in English only (other languages: translate:{name})",
                languages=("en",),
                offline=lambda repo=repo: is_cached(repo),
            )
        )
