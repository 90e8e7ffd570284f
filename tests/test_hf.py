"""The ``hf:`` backend over tiny random BLIP, BLIP-2, GIT, ViT-GPT2 and Florence-2 models built locally.

No downloads: every model is built from its config class (see hf_tiny.py), saved into a temp
folder and loaded through ``polycap.load("hf:<folder>")``. The shared contract checks of
test_contract.py run over each of them unchanged.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")


import hf_tiny  # noqa: E402
import polycap  # noqa: E402
from polycap import ModelNotFoundError, OptionError  # noqa: E402
from test_contract import (  # noqa: E402,F401 - re-run the shared contract checks over the tiny HF models
    test_batched_equals_one_by_one_greedy,
    test_beams_and_alternatives,
    test_every_supported_language_and_multilang,
    test_invalid_options_fail_before_any_work,
    test_max_new_tokens_is_respected,
    test_mixed_batch_isolates_bad_items,
    test_seeded_sampling_is_reproducible,
    test_unsupported_language_names_supported_ones,
)

FAMILIES = list(hf_tiny.BUILDERS)


@pytest.fixture(scope="module", autouse=True)
def hf_registered():
    with hf_tiny.offline_registry() as registry:
        yield registry


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory, hf_registered):
    root = tmp_path_factory.mktemp("hf-tiny")
    return {fam: build(root / fam) for fam, build in hf_tiny.BUILDERS.items()}


@pytest.fixture(scope="module", params=FAMILIES)
def captioner(request, tiny_folders):
    """Overrides test_contract's fixture: the contract checks run over each tiny HF family."""
    return polycap.load(f"hf:{tiny_folders[request.param]}", device="cpu")


def _photos(photo_dir):
    return sorted(photo_dir.iterdir())


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_one_by_one_with_real_words(family, tiny_folders, photo_dir):
    # the contract check above may compare empty captions (random models often stop at once); force words
    model = polycap.load(f"hf:{tiny_folders[family]}", device="cpu")
    opts = {"min_new_tokens": 3, "max_new_tokens": 5}
    batched = model.caption_many(_photos(photo_dir), batch_size=3, **opts)
    single = [model.caption(p, **opts) for p in _photos(photo_dir)]
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.text for c in batched)
    for b, s in zip(batched, single):
        assert b.score is not None and b.score <= 0 and b.score == pytest.approx(s.score, abs=1e-4)
        assert b.meta["family"] and b.lang == "en"


@pytest.mark.parametrize("family", ["blip", "git", "vit-gpt2", "blip2"])
def test_prompt_is_cut_from_the_caption(family, tiny_folders, photo_dir):
    model = polycap.load(f"hf:{tiny_folders[family]}", device="cpu", prompt="a photo of")
    plain = polycap.load(f"hf:{tiny_folders[family]}", device="cpu")
    opts = {"min_new_tokens": 3, "max_new_tokens": 3}
    conditioned = [model.caption(p, **opts).text for p in _photos(photo_dir)]
    # WordLevel tokenizer: one token is one word, so an echoed prompt would add three words
    assert all(0 < len(t.split()) <= 3 for t in conditioned)
    assert model.caption(_photos(photo_dir)[0], **opts).meta["prompt"] == "a photo of"
    assert conditioned != [plain.caption(p, **opts).text for p in _photos(photo_dir)] or family == "blip"


def test_florence_tasks(tiny_folders, photo_dir):
    folder = tiny_folders["florence2"]
    assert polycap.load(f"hf:{folder}", device="cpu").prompt == "<CAPTION>"
    detailed = polycap.load(f"hf:{folder}", device="cpu", task="detailed")
    assert detailed.prompt == "<DETAILED_CAPTION>"
    assert detailed.caption(_photos(photo_dir)[0], min_new_tokens=2, max_new_tokens=4).ok
    with pytest.raises(OptionError, match="more_detailed"):
        polycap.load(f"hf:{folder}", device="cpu", task="poem")
    with pytest.raises(OptionError, match="Florence-2 only"):
        polycap.load(f"hf:{tiny_folders['git']}", device="cpu", task="detailed")


def test_florence_remote_code_layout_is_refused_clearly(tmp_path):
    folder = tmp_path / "Florence-2-base"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "florence2", "text_config": {"model_type": "florence2_language"}})
    )
    with pytest.raises(ModelNotFoundError, match="florence-community/Florence-2-base"):
        polycap.load(f"hf:{folder}", device="cpu")


def test_dtype_selection(tiny_folders, photo_dir):
    import torch

    model = polycap.load(f"hf:{tiny_folders['git']}", device="cpu", dtype="bfloat16")
    assert next(model.model.parameters()).dtype == torch.bfloat16
    assert model.caption(_photos(photo_dir)[0], max_new_tokens=3).ok
    with pytest.raises(OptionError, match="float32"):
        polycap.load(f"hf:{tiny_folders['git']}", device="cpu", dtype="int3")


def test_architecture_comes_from_config_not_name(tmp_path):
    folder = tmp_path / "blip-image-captioning-base"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelNotFoundError, match="model_type 'bert'") as e:
        polycap.load(f"hf:{folder}", device="cpu")
    for fam in ("blip", "blip-2", "git", "vision-encoder-decoder", "florence2"):
        assert fam in str(e.value)


def test_offline_missing_model_gives_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as e:
        polycap.load("hf:nonexistent-org/nonexistent-model", device="cpu")
    msg = str(e.value)
    assert "nonexistent-org/nonexistent-model" in msg
    assert "HF_HUB_OFFLINE" in msg and "cache" in msg
    assert "hf download nonexistent-org/nonexistent-model --local-dir /models/nonexistent-model" in msg
    assert "hf:/models/nonexistent-model" in msg
    assert "Traceback" not in msg and len(msg.splitlines()) == 1
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_missing_local_folder_is_named(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        polycap.load(f"hf:{tmp_path}/does/not/exist", device="cpu")
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        polycap.load(f"hf:{tmp_path}", device="cpu")


def test_plugin_registers_the_scheme_and_says_english(hf_registered):
    spec = hf_registered.backends["hf"]
    assert spec.schemes == ("hf",) and "English" in spec.description


def test_known_models_are_listed_as_english_and_offline_only_when_cached(hf_registered, tmp_path, monkeypatch):
    spec = hf_registered.models["blip-base"]
    assert spec.backend == "hf" and spec.languages == ("en",) and "English" in spec.description
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert spec.info()["offline"] is False
    snap = tmp_path / "models--Salesforce--blip-image-captioning-base" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    assert spec.info()["offline"] is True
