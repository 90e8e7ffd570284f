"""Caption, then translate: ``translate:<captioner>`` over tiny random GIT + Marian / M2M100 models built locally."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

import hf_tiny  # noqa: E402
import polycap  # noqa: E402
from polycap import OptionError  # noqa: E402
from polycap.backends.translate import HFTranslator, TranslatedCaptioner  # noqa: E402
from test_contract import (  # noqa: E402,F401 - re-run the shared contract checks over the pipeline
    test_batched_equals_one_by_one_greedy,
    test_beams_and_alternatives,
    test_every_supported_language_and_multilang,
    test_invalid_options_fail_before_any_work,
    test_max_new_tokens_is_respected,
    test_mixed_batch_isolates_bad_items,
    test_seeded_sampling_is_reproducible,
    test_unsupported_language_names_supported_ones,
)

GREEDY = {"min_new_tokens": 3, "max_new_tokens": 5}


class Shout:
    """A Translator that upper-cases: makes the pipeline's bookkeeping easy to check."""

    name = "shout"

    def __init__(self):
        self.calls: list[tuple[list[str], str]] = []

    def translate(self, texts, target):
        self.calls.append((list(texts), target))
        return [f"{target}:{t.upper()}" for t in texts]


@pytest.fixture(scope="module", autouse=True)
def registered():
    with hf_tiny.offline_registry("translate") as registry:
        yield registry


@pytest.fixture(scope="module")
def folders(tmp_path_factory, registered):
    root = tmp_path_factory.mktemp("translate-tiny")
    return {
        "git": hf_tiny.build_git(root / "git"),
        "marian": hf_tiny.build_marian(root / "opus-mt-en-de"),
        "m2m": hf_tiny.build_m2m100(root / "m2m100"),
    }


@pytest.fixture(scope="module")
def captioner(folders):
    """Overrides test_contract's fixture: the contract checks run over GIT -> Marian en-de."""
    return polycap.load(f"translate:hf:{folders['git']}", device="cpu", translator=f"hf:{folders['marian']}")


def test_marian_pair_target_comes_from_its_name(captioner, photo_dir):
    assert captioner.capabilities.languages == ("de", "en")
    cap = captioner.caption(photo_dir / "img0.png", lang="de", **GREEDY)
    src = captioner.captioner.caption(photo_dir / "img0.png", **GREEDY)
    assert cap.ok and cap.lang == "de" and cap.text
    assert cap.meta["source_caption"] == src.text and cap.meta["source_lang"] == "en"
    assert cap.meta["translator"].endswith("opus-mt-en-de")
    english = captioner.caption(photo_dir / "img0.png", lang="en", **GREEDY)
    assert english.text == src.text and "source_caption" not in english.meta  # the source language is not translated


def test_options_pass_through_and_alternatives_are_translated(folders, photo_dir):
    shout = Shout()
    model = polycap.load(f"translate:hf:{folders['git']}", device="cpu", translator=shout, target_langs=["de"])
    cap = model.caption(photo_dir / "img0.png", lang="de", num_beams=3, num_return_sequences=2, max_new_tokens=4)
    source = model.captioner.caption(photo_dir / "img0.png", num_beams=3, num_return_sequences=2, max_new_tokens=4)
    assert [a.text for a in cap.alternatives] == [f"de:{a.text.upper()}" for a in source.alternatives]
    assert cap.meta["source_alternatives"] == [a.text for a in source.alternatives]
    assert len(shout.calls) == 1 and shout.calls[0][1] == "de"  # one translate() call per batch


def test_failed_items_are_not_translated(folders, photo_dir, bad_files):
    shout = Shout()
    model = polycap.load(f"translate:hf:{folders['git']}", device="cpu", translator={"fr": shout})
    caps = model.caption_many([photo_dir / "img0.png", bad_files["empty"]], lang="fr", **GREEDY)
    assert caps[0].ok and caps[0].text.startswith("fr:") and not caps[1].ok
    assert sum(len(texts) for texts, _ in shout.calls) == 1


def test_around_polycaps_own_english_output(photo_dir):
    model = polycap.load("translate:polycap-tiny-random", device="cpu", translator=Shout(), target_langs=["it"])
    assert isinstance(model, TranslatedCaptioner) and "it" in model.capabilities.languages
    cap = model.caption(photo_dir / "img0.png", lang="it", max_new_tokens=4)
    assert cap.ok and cap.text == f"it:{cap.meta['source_caption'].upper()}"


def test_m2m100_forces_the_target_language_token(folders, monkeypatch):
    tr = HFTranslator(str(folders["m2m"]), device="cpu")
    assert tr.multilingual and tr.fixed_target() is None and tr.tokenizer.src_lang == "en"
    seen = {}
    original = tr.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(tr.model, "generate", spy)
    out = tr.translate(["a dog on grass", "cat"], "fr")
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    assert seen["forced_bos_token_id"] == tr.tokenizer.convert_tokens_to_ids("__fr__")
    with pytest.raises(OptionError, match="no language token for 'xx'"):
        tr.translate(["cat"], "xx")


def test_multilingual_translator_needs_target_langs(folders):
    with pytest.raises(OptionError, match="target_langs"):
        polycap.load(f"translate:hf:{folders['git']}", device="cpu", translator=str(folders["m2m"]))
    model = polycap.load(
        f"translate:hf:{folders['git']}", device="cpu", translator=str(folders["m2m"]), target_langs=["de", "fr"]
    )
    caps = model.caption_many([Image.new("RGB", (32, 32), (5, 90, 200))], langs=["de", "fr", "en"], **GREEDY)
    assert [c.lang for c in caps] == ["de", "fr", "en"] and all(c.ok for c in caps)


def test_missing_translator_is_a_clear_error(folders):
    with pytest.raises(OptionError, match="needs translator=.*en-de"):
        polycap.load(f"translate:hf:{folders['git']}", device="cpu")


def test_the_captioners_decoding_defaults_apply_through_the_pipeline(folders, photo_dir):
    inner = polycap.load(f"hf:{folders['git']}", device="cpu")
    inner.generation_defaults = {"no_repeat_ngram_size": 2}
    model = TranslatedCaptioner(inner, {"de": Shout()})
    assert model.default_options().no_repeat_ngram_size == 2
    assert model.make_options(lang="de").no_repeat_ngram_size == 2
    assert model.make_options(lang="de", no_repeat_ngram_size=0).no_repeat_ngram_size == 0
