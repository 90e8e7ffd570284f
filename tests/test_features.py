"""FeatureCache with a tiny random stand-in encoder: seconds, no weights, no network."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from polycap.data.features import FeatureCache, MissingFeaturesError  # noqa: E402


class TinyEncoder(torch.nn.Module):
    """Same interface as EfficientNetLite2Encoder: 8x8 input, a 2x2 grid (N=4) of C=6 features."""

    name = "tiny-test"
    feature_dim = 6

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(3, self.feature_dim)
        self.images_seen = 0  # images run through forward, to prove reuse

    def preprocessing_id(self) -> str:
        return "8px-squash-v1"

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        arr = np.stack([np.asarray(im.convert("RGB").resize((8, 8)), dtype=np.float32) for im in images])
        return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0  # (B, 3, 8, 8)

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        self.images_seen += pixels.shape[0]
        grid = torch.nn.functional.avg_pool2d(pixels, 4)  # (B, 3, 2, 2)
        return self.proj(grid.flatten(2).transpose(1, 2))  # (B, 4, 6)


def _photo(path: Path, seed: int) -> Path:
    """An asymmetric random picture, so its mirror image has different features."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "photos"
    folder.mkdir()
    return [_photo(folder / f"p{i}.png", i) for i in range(5)]


def test_compute_once_then_reuse(tmp_path: Path, photos: list[Path]) -> None:
    enc = TinyEncoder()
    cache = FeatureCache(tmp_path / "cache", enc)
    cache.ensure(photos, batch_size=2, progress=False)
    assert enc.images_seen == 5
    feats = cache.get(photos)
    assert feats.shape == (5, 4, 6) and feats.dtype == torch.float16
    expected = enc(enc.preprocess([Image.open(p) for p in photos])).half()
    torch.testing.assert_close(feats, expected)

    cache.ensure(photos, progress=False)  # all cached: no forward at all
    assert enc.images_seen == 5 + 5  # (the +5 is the reference computation above)
    reopened = FeatureCache(tmp_path / "cache", enc)  # a new process sees the same features
    torch.testing.assert_close(reopened.get(photos[::-1]), feats.flip(0))


def test_adding_images_computes_only_new_ones(tmp_path: Path, photos: list[Path]) -> None:
    enc = TinyEncoder()
    cache = FeatureCache(tmp_path / "cache", enc, shard_size=2)
    cache.ensure(photos[:3], batch_size=1, progress=False)
    first = cache.get(photos[:3])
    enc.images_seen = 0
    cache = FeatureCache(tmp_path / "cache", enc, shard_size=2)
    cache.ensure(photos, batch_size=1, progress=False)
    assert enc.images_seen == 2
    torch.testing.assert_close(cache.get(photos[:3]), first)
    shards = sorted(p.name for p in cache.root.glob("shard-*.safetensors"))
    assert len(shards) == 3  # 3 old rows in 2 shards (2 + 1), the 2 new rows in a third
    assert cache.root.name.startswith("tiny-test-")


def test_key_is_content_hash(tmp_path: Path, photos: list[Path]) -> None:
    enc = TinyEncoder()
    cache = FeatureCache(tmp_path / "cache", enc)
    cache.ensure(photos[:1], progress=False)
    enc.images_seen = 0
    copy = tmp_path / "renamed copy.png"
    shutil.copy(photos[0], copy)
    cache.ensure([copy], progress=False)
    assert enc.images_seen == 0
    assert cache.key_for(copy) == cache.key_for(photos[0])
    torch.testing.assert_close(cache.get([copy]), cache.get(photos[:1]))
    _photo(copy, seed=99)  # the same name with new content is a new key
    assert cache.key_for(copy) != cache.key_for(photos[0])


def test_corrupt_image_is_skipped_and_reported(
    tmp_path: Path, photos: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    missing = tmp_path / "gone.jpg"
    cache = FeatureCache(tmp_path / "cache", TinyEncoder())
    with caplog.at_level(logging.WARNING, logger="polycap.data.features"):
        cache.ensure([photos[0], bad, missing, photos[1]], batch_size=4, progress=False)
    assert set(cache.failed) == {str(bad), str(missing)}
    assert str(bad) in caplog.text
    assert cache.get([photos[0], photos[1]]).shape == (2, 4, 6)
    with pytest.raises(MissingFeaturesError, match="broken.jpg.*skipped"):
        cache.get([bad])
    with pytest.raises(MissingFeaturesError, match="ensure"):
        cache.get([photos[2]])  # readable but never computed


def test_flip_views_are_distinct(tmp_path: Path, photos: list[Path]) -> None:
    enc = TinyEncoder()
    cache = FeatureCache(tmp_path / "cache", enc)
    cache.ensure(photos[:2], flip=True, progress=False)
    assert enc.images_seen == 4  # both views of both images
    plain, mirrored = cache.get(photos[:2]), cache.get(photos[:2], flip=True)
    assert not torch.equal(plain, mirrored)
    assert cache.key_for(photos[0], flip=True) == cache.key_for(photos[0]) + "-flip"
    # a 2x2 grid of a mirrored image is the grid of the image with its columns swapped
    swapped = plain.view(2, 2, 2, 6).flip(2).reshape(2, 4, 6)
    torch.testing.assert_close(mirrored, swapped, atol=2e-2, rtol=0)  # resize rounding only


def test_index_writes_are_atomic_and_recoverable(tmp_path: Path, photos: list[Path]) -> None:
    enc = TinyEncoder()
    cache = FeatureCache(tmp_path / "cache", enc, shard_size=2)
    cache.ensure(photos, batch_size=1, progress=False)  # shards of 2, 2 and 1 rows
    feats = cache.get(photos)
    assert not list(cache.root.glob(".*tmp*"))  # no temp files left behind
    index = json.loads(cache.index_path.read_text())
    assert index["feature_shape"] == [4, 6] and index["preprocessing_id"] == "8px-squash-v1"

    # a run killed after writing a shard but before the index: the shard is adopted on open
    index["items"] = {k: v for k, v in index["items"].items() if v[0] != "shard-00002.safetensors"}
    cache.index_path.write_text(json.dumps(index))
    enc.images_seen = 0
    recovered = FeatureCache(tmp_path / "cache", enc)
    recovered.ensure(photos, progress=False)
    assert enc.images_seen == 0
    torch.testing.assert_close(recovered.get(photos), feats)

    # a lost index is rebuilt from the shards' own metadata
    cache.index_path.write_text("{ truncated")
    torch.testing.assert_close(FeatureCache(tmp_path / "cache", enc).get(photos), feats)


def test_other_preprocessing_gets_its_own_folder(tmp_path: Path, photos: list[Path]) -> None:
    enc = TinyEncoder()
    FeatureCache(tmp_path / "cache", enc).ensure(photos[:1], progress=False)
    other = TinyEncoder()
    other.preprocessing_id = lambda: "16px-crop-v2"  # type: ignore[method-assign]
    cache = FeatureCache(tmp_path / "cache", other)
    with pytest.raises(MissingFeaturesError):
        cache.get(photos[:1])
    assert len(list((tmp_path / "cache").iterdir())) == 2
