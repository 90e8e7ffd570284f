"""The contract, checked the same way over every registered model (as timm tests list_models())."""

from __future__ import annotations

import pytest
from PIL import Image

import polycap
from polycap import GenerationOptions, OptionError, UnsupportedLanguageError

MODELS = [m["name"] for m in polycap.list_models() if m["offline"]]


@pytest.fixture(scope="module", params=MODELS)
def captioner(request, load_registered):
    return load_registered(request.param)


def _langs(captioner) -> list[str]:
    return list(captioner.capabilities.languages or ["en"])


def test_mixed_batch_isolates_bad_items(captioner, photo_dir, bad_files):
    inputs = [
        photo_dir / "img0.png",
        bad_files["empty"],
        Image.new("RGB", (20, 30), (9, 9, 9)),
        bad_files["text"],
        bad_files["missing"],
        bad_files["truncated"],
        str(photo_dir / "img1.png"),
    ]
    caps = captioner.caption_many(inputs, batch_size=4)
    assert len(caps) == len(inputs)
    assert [c.ok for c in caps] == [True, False, True, False, False, False, True]
    for c in caps:
        assert c.model == captioner.name and c.lang == captioner.default_lang
        if c.ok:
            assert isinstance(c.text, str) and c.seconds is not None and c.seconds >= 0
        else:
            assert c.error and c.text == ""
    assert "empty" in caps[1].error and "nope.jpg" in caps[4].error
    assert caps[0].source.endswith("img0.png")


def test_batched_equals_one_by_one_greedy(captioner, photo_dir):
    paths = sorted(photo_dir.iterdir())
    batched = [c.text for c in captioner.caption_many(paths, batch_size=3)]
    single = [captioner.caption(p).text for p in paths]
    assert batched == single


def test_seeded_sampling_is_reproducible(captioner, photo_dir):
    if not captioner.capabilities.sampling:
        pytest.skip("backend does not sample")
    img = photo_dir / "img0.png"
    opts = GenerationOptions(lang=captioner.default_lang, do_sample=True, seed=123, top_k=50)
    a = captioner.caption(img, opts).text
    b = captioner.caption(img, opts).text
    assert a == b


def test_beams_and_alternatives(captioner, photo_dir):
    if not captioner.capabilities.beam_search:
        pytest.skip("backend has no beam search")
    c = captioner.caption(photo_dir / "img0.png", num_beams=3, num_return_sequences=3, max_new_tokens=8)
    assert c.ok and len(c.alternatives) == 3
    assert c.text == c.alternatives[0].text
    if captioner.capabilities.scores:
        scores = [a.score for a in c.alternatives]
        assert all(s is not None and s <= 0 for s in scores)


def test_every_supported_language_and_multilang(captioner, photo_dir):
    langs = _langs(captioner)
    caps = captioner.caption_many([photo_dir / "img0.png", photo_dir / "img1.png"], langs=langs)
    assert [c.lang for c in caps] == langs * 2
    assert all(c.ok for c in caps)


def test_unsupported_language_names_supported_ones(captioner):
    with pytest.raises(UnsupportedLanguageError) as e:
        captioner.caption(Image.new("RGB", (8, 8)), lang="xx")
    for lang in _langs(captioner):
        assert lang in str(e.value)


def test_invalid_options_fail_before_any_work(captioner):
    with pytest.raises(OptionError):
        captioner.caption_many([Image.new("RGB", (8, 8))], num_beams=0)
    with pytest.raises(OptionError, match="unknown generation option"):
        captioner.caption(Image.new("RGB", (8, 8)), beams=2)


def test_max_new_tokens_is_respected(captioner, photo_dir):
    c = captioner.caption(photo_dir / "img2.png", max_new_tokens=3)
    assert c.ok and len(c.text.split()) <= 3 * 4  # subword tokens: a token is at most a word here
