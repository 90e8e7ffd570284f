"""The onnx runtime of polycap's own models: same captions as torch, the fast path really taken,
the torch fallback where it must be, exported graphs cached by weights, clear errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import polycap  # noqa: E402
from polycap.backends.native.backend import NativeCaptioner  # noqa: E402
from polycap.errors import MissingDependencyError, PolycapError  # noqa: E402
from polycap.runtime import onnx as ox  # noqa: E402
from polycap.types import GenerationOptions  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path_factory, monkeypatch) -> Path:
    folder = tmp_path_factory.getbasetemp() / "onnx-cache"  # shared by the tests: one export per model
    monkeypatch.setenv("POLYCAP_ONNX_CACHE", str(folder))
    monkeypatch.delenv("POLYCAP_RUNTIME", raising=False)
    return folder


@pytest.fixture
def tiny_pair():
    return polycap.load("polycap-tiny-random", runtime="onnx"), polycap.load("polycap-tiny-random", runtime="torch")


def _images() -> list[Image.Image]:
    colours = [(200, 30, 30), (20, 160, 40), (10, 10, 220), (240, 240, 240), (0, 0, 0)]
    return [Image.new("RGB", (40 + 7 * i, 30 + 5 * i), c) for i, c in enumerate(colours)]


def test_runtime_choice(tiny_pair):
    fast, slow = tiny_pair
    assert fast.runtime == "onnx" and isinstance(fast._generator, ox.OnnxGPT2Decoder)
    assert slow.runtime == "torch" and slow._generator is None
    assert polycap.load("polycap-tiny-random").runtime == "onnx"  # auto, on CPU with the extra installed
    fast.use_runtime("torch")
    assert fast.runtime == "torch" and fast._generator is None


@pytest.mark.parametrize(
    "opts",
    [
        {"num_beams": 1},
        {"num_beams": 3},
        {"num_beams": 3, "num_return_sequences": 2},
        {"num_beams": 1, "do_sample": True, "top_k": 5, "seed": 7},
        {"num_beams": 1, "no_repeat_ngram_size": 2, "min_new_tokens": 8, "max_new_tokens": 8},
    ],
)
def test_same_captions_as_torch(tiny_pair, opts):
    fast, slow = tiny_pair
    for lang in fast.capabilities.languages[:2]:
        o = GenerationOptions(lang=lang, **opts)
        a, b = fast.caption_batch(_images(), o), slow.caption_batch(_images(), o)
        assert [c.text for c in a] == [c.text for c in b]
        assert [c.score for c in a] == pytest.approx([c.score for c in b], abs=1e-4)
        assert [[x.text for x in c.alternatives] for c in a] == [[x.text for x in c.alternatives] for c in b]


def test_every_step_runs_in_onnxruntime(tiny_pair, monkeypatch):
    fast, _ = tiny_pair
    gen = fast._generator
    runs, torch_calls = [], []
    real_run = gen.session.run
    monkeypatch.setattr(gen.session, "run", lambda *a, **k: runs.append(1) or real_run(*a, **k), raising=False)
    parent_forward = ox.GPT2LMHeadModel.forward
    monkeypatch.setattr(ox.GPT2LMHeadModel, "forward", lambda *a, **k: torch_calls.append(1) or parent_forward(*a, **k))
    o = GenerationOptions(lang=fast.default_lang, num_beams=1, min_new_tokens=6, max_new_tokens=6)
    fast.caption_batch(_images()[:2], o)
    assert len(runs) == 6 and torch_calls == []  # one exported step per token, the torch forward never


def test_torch_fallback_for_other_calls(tiny_pair):
    """Calls generate() does not make (several tokens, padding, gradients) give the torch decoder's output."""
    fast, _ = tiny_pair
    gen, dec = fast._generator, fast.model.decoder
    memory = torch.randn(2, fast.cfg.grid_positions, fast.cfg.d_model)
    ids = torch.tensor([[5, 9, 11], [5, 12, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    with torch.inference_mode():
        a = gen(input_ids=ids, attention_mask=mask, encoder_hidden_states=memory).logits
        b = dec(input_ids=ids, attention_mask=mask, encoder_hidden_states=memory).logits
    assert torch.equal(a, b)
    out = gen(input_ids=ids[:, :1], encoder_hidden_states=memory)  # grad enabled: torch
    assert out.logits.requires_grad


def test_exports_are_cached_by_weights(tmp_path, monkeypatch):
    onnx_cache = tmp_path
    monkeypatch.setenv("POLYCAP_ONNX_CACHE", str(onnx_cache))
    polycap.load("polycap-tiny-random", runtime="onnx")
    files = sorted(onnx_cache.glob("*.onnx"))
    assert [f.name.split("-")[0] for f in files] == ["gpt2", "tiny"]  # the decoder step and the encoder
    assert all(f"-v{ox.FORMAT}-" in f.name for f in files)
    mtimes = [f.stat().st_mtime_ns for f in files]
    polycap.load("polycap-tiny-random", runtime="onnx")
    assert sorted(onnx_cache.glob("*.onnx")) == files and [f.stat().st_mtime_ns for f in files] == mtimes
    cap = polycap.load("polycap-tiny-random", runtime="torch")
    with torch.no_grad():
        cap.model.decoder.transformer.h[0].mlp.c_fc.weight.add_(0.5)  # new weights: a new export
    cap.use_runtime("onnx")
    assert len(list(onnx_cache.glob("gpt2-step-*.onnx"))) == 2 and len(list(onnx_cache.glob("tiny-*.onnx"))) == 1
    assert not list(onnx_cache.glob("*.tmp"))


def test_exports_are_checked_once_per_onnxruntime_version(tmp_path, monkeypatch):
    import onnxruntime

    onnx_cache = tmp_path
    monkeypatch.setenv("POLYCAP_ONNX_CACHE", str(onnx_cache))
    polycap.load("polycap-tiny-random", runtime="onnx")
    markers = sorted(onnx_cache.glob("*.verified"))
    assert [m.read_text().strip() for m in markers] == [onnxruntime.__version__] * 2  # decoder and encoder
    calls = []
    real_check = NativeCaptioner._check_generator
    monkeypatch.setattr(NativeCaptioner, "_check_generator", lambda self, g: calls.append(1) or real_check(self, g))
    polycap.load("polycap-tiny-random", runtime="onnx")
    assert calls == []  # verified before
    for m in markers:
        m.write_text("0.0.1\n")  # another onnxruntime: check again
    assert polycap.load("polycap-tiny-random", runtime="onnx").runtime == "onnx" and calls == [1]
    assert all(m.read_text().strip() == onnxruntime.__version__ for m in markers)


def test_a_wrong_step_is_caught(monkeypatch, caplog, tmp_path):
    """A generator that does not reproduce the model (here: another model's weights) is refused."""
    monkeypatch.setenv("POLYCAP_ONNX_CACHE", str(tmp_path))  # no marker from earlier tests
    cap = polycap.load("polycap-tiny-random", runtime="torch")
    other = polycap.load("polycap-tiny-random", runtime="torch")
    with torch.no_grad():
        other.model.decoder.lm_head.weight.mul_(-1.0)  # tied: the token embedding too
    real = ox.OnnxGPT2Decoder.from_decoder
    monkeypatch.setattr(ox.OnnxGPT2Decoder, "from_decoder", classmethod(lambda cls, d: real(other.model.decoder)))
    with caplog.at_level(logging.WARNING):
        cap.use_runtime("auto")
    assert cap.runtime == "torch" and "staying on torch" in caplog.text
    with pytest.raises(PolycapError, match="onnx decoder step"):
        cap.use_runtime("onnx")


def test_runtime_errors(monkeypatch):
    with pytest.raises(PolycapError, match="unknown runtime 'tensorrt'; choose one of: auto, torch, onnx"):
        polycap.load("polycap-tiny-random", runtime="tensorrt")
    with pytest.raises(PolycapError, match="CPU only"):
        ox.resolve_runtime("onnx", "cuda")
    assert ox.resolve_runtime("auto", "cuda") == "torch"
    monkeypatch.setenv("POLYCAP_RUNTIME", "torch")
    assert polycap.load("polycap-tiny-random").runtime == "torch"
    monkeypatch.delenv("POLYCAP_RUNTIME")
    monkeypatch.setattr(ox, "available", lambda: False)
    assert polycap.load("polycap-tiny-random").runtime == "torch"  # auto without the extra: torch, quietly
    with pytest.raises(MissingDependencyError, match=r"pip install 'polycap\[onnx\]'"):
        polycap.load("polycap-tiny-random", runtime="onnx")


def test_trainer_captioners_stay_on_torch():
    """Training changes the weights, so the captioner it validates with must not hold an export."""
    from polycap.backends.native.tiny import build_tiny_random

    cfg, model, _, tok = build_tiny_random()
    assert NativeCaptioner(cfg, model, None, tok, "cpu").runtime == "torch"


@pytest.fixture(scope="module")
def base_pair(tmp_path_factory):
    """The shipped model on both runtimes, loaded once for this module."""
    from polycap.registry import get_registry

    folder = get_registry().resolve("polycap-base")[1]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POLYCAP_ONNX_CACHE", str(tmp_path_factory.getbasetemp() / "onnx-cache"))
        return NativeCaptioner.from_folder(folder, "cpu", "onnx"), NativeCaptioner.from_folder(folder, "cpu", "torch")


def test_polycap_base_onnx_encoder_matches_torch(base_pair):
    fast, slow = base_pair
    assert isinstance(fast.encoder, ox.OnnxEncoder) and fast.encoder.name == slow.encoder.name
    photos = [Image.open(p) for p in sorted(EXAMPLES.glob("*.jpg"))]
    with torch.inference_mode():
        a, b = fast.encode(photos), slow.encode(photos)
    assert a.shape == b.shape == (len(photos), 81, 1280)
    assert (a - b).abs().max().item() < 1e-3  # activations reach ~6; float32 rounding differs only
    with pytest.raises(ValueError, match="expected pixels of shape"):
        fast.encoder(torch.zeros(1, 3, 224, 224))


@pytest.mark.parametrize("beams", [1, 3])
def test_polycap_base_same_captions_on_both_runtimes(base_pair, beams):
    fast, slow = base_pair
    photos = [Image.open(p) for p in sorted(EXAMPLES.glob("*.jpg"))]
    for lang in ("en", "de"):
        o = fast.make_options(lang=lang, num_beams=beams)
        assert [c.text for c in fast.caption_batch(photos, o)] == [c.text for c in slow.caption_batch(photos, o)]


def test_trainer_fills_its_feature_cache_on_onnx(flickr8k, tmp_path):
    """``data.runtime`` (default auto) computes the missing features with onnxruntime; they equal the
    torch encoder's within float16 storage, under the same cache keys."""
    from polycap.data.features import FeatureCache
    from polycap.data.manifest import write_subset
    from polycap.train.config import load_config
    from polycap.train.trainer import Trainer

    manifest = write_subset(flickr8k / "captions.jsonl", tmp_path / "m.jsonl", {"train": 6, "val": 2})
    base = [f"data.manifests=[{manifest}]", 'model.encoder={"name": "tiny-conv", "dim": 16, "seed": 0}',
            "model.d_model=32", "model.n_layer=1", "model.n_head=2", "tokenizer.vocab_size=300",
            "tokenizer.min_frequency=1", "data.langs=[en]"]
    runs = {}
    for rt in ("auto", "torch"):
        t = Trainer(load_config(None, [*base, f"data.cache_dir={tmp_path / rt}", f"data.runtime={rt}"]),
                    tmp_path / f"run-{rt}", progress=False)
        runs[rt] = t
    assert isinstance(runs["auto"]._extraction_encoder(), ox.OnnxEncoder)
    assert runs["torch"]._extraction_encoder() is runs["torch"].encoder
    a, b = runs["auto"].train_split.features, runs["torch"].train_split.features
    assert a.shape == b.shape and (a.float() - b.float()).abs().max().item() <= 2e-3  # one float16 ulp near 1
    keys = sorted(p.name for p in (tmp_path / "auto").rglob("*") if p.is_file())
    assert keys == sorted(p.name for p in (tmp_path / "torch").rglob("*") if p.is_file())  # same cache keys
    cached = FeatureCache(tmp_path / "auto", runs["torch"].encoder)  # a torch reader finds them all
    assert cached.get([it.image for it in runs["auto"].train_split.items]).shape == a.shape
    with pytest.raises(PolycapError, match="unknown runtime 'gpu'"):
        Trainer(load_config(None, [*base, f"data.cache_dir={tmp_path / 'x'}", "data.runtime=gpu"]),
                tmp_path / "run-x", progress=False)


def test_an_older_format_is_replaced_and_a_failing_optimizer_is_survived(tmp_path, monkeypatch, caplog):
    from onnxruntime.transformers import optimizer

    monkeypatch.setenv("POLYCAP_ONNX_CACHE", str(tmp_path))
    stale = tmp_path / "gpt2-step-v0-0123.onnx"
    stale.write_bytes(b"old")

    def broken(*a, **k):
        raise RuntimeError("cannot fuse")

    monkeypatch.setattr(optimizer, "optimize_model", broken)
    with caplog.at_level(logging.WARNING):
        fast = polycap.load("polycap-tiny-random", runtime="onnx")
    slow = polycap.load("polycap-tiny-random", runtime="torch")
    assert "optimizer failed" in caplog.text and "cannot fuse" in caplog.text
    assert not stale.exists() and len(list(tmp_path.glob("gpt2-step-*.onnx"))) == 1
    o = GenerationOptions(lang=fast.default_lang, num_beams=2)
    assert [c.text for c in fast.caption_batch(_images(), o)] == [c.text for c in slow.caption_batch(_images(), o)]


def test_bench_runtime_script_runs_on_the_tiny_model(capsys):
    """bench/runtime.py (not part of the suite's timing) still runs and finds the same captions."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "runtime.py"
    spec = importlib.util.spec_from_file_location("bench_runtime", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--model", "polycap-tiny-random", "--rounds", "1"])
    assert out["same_captions"] is True
    assert set(out["ms"]) == {"torch", "onnx"} and "caption_b1_greedy" in out["speedup_onnx_vs_torch"]
    assert '"same_captions": true' in capsys.readouterr().out
