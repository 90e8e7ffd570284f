"""Shared fixtures. Everything is generated locally: no downloads, no network."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

import polycap

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "flickr8k"


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache(tmp_path_factory):
    """Exported onnx graphs go to a fresh folder of this test session, never to ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POLYCAP_ONNX_CACHE", str(tmp_path_factory.mktemp("onnx-cache")))
        mp.delenv("POLYCAP_RUNTIME", raising=False)
        yield


@pytest.fixture(scope="session")
def flickr8k() -> Path:
    if not (SHARED_DATA / "captions.jsonl").is_file():
        pytest.skip(f"Flickr8k data not found at {SHARED_DATA} (../shared beside the repo)")
    return SHARED_DATA


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    """A folder of three small, valid photos of different sizes and colours."""
    folder = tmp_path / "photos"
    folder.mkdir()
    specs = [((64, 48), (200, 30, 30)), ((40, 40), (20, 160, 40)), ((33, 70), (10, 10, 220))]
    for i, (size, colour) in enumerate(specs):
        Image.new("RGB", size, colour).save(folder / f"img{i}.png")
    return folder


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    """A few broken inputs that must fail per item, never the batch."""
    d = tmp_path / "bad"
    d.mkdir()
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("not an image")
    good = d / "ok.png"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(good)
    trunc = d / "trunc.png"
    trunc.write_bytes(good.read_bytes()[:40])
    return {"empty": d / "empty.jpg", "text": d / "text.jpg", "truncated": trunc, "missing": d / "nope.jpg", "ok": good}


@pytest.fixture(scope="session")
def load_registered():
    """``load(name)``: a registered model, loaded once per session with the hub switched off (an
    offline model must not need it); the contract tests and the shipped-model tests share it."""
    loaded = {}

    def load(name: str):
        if name not in loaded:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("HF_HUB_OFFLINE", "1")
                loaded[name] = polycap.load(name, device="cpu")
        return loaded[name]

    return load
