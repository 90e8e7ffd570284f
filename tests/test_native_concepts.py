"""Concepts from the encoder's ImageNet classifier reaching polycap's own decoder: the decode-time bias,
and the shipped model's trained concept tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import polycap  # noqa: E402
from polycap.backends.native.concepts import (  # noqa: E402
    ConceptBias,
    ConceptHead,
    ConceptSettings,
    Target,
    confident,
)
from polycap.errors import PolycapError  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_bias_raises_first_token_then_finishes_the_word_then_stops():
    bias = ConceptBias([[Target(phrases=((5, 6),), bias=3.0, named=((7,),))]], continue_bias=10.0)
    scores = torch.zeros(1, 10)
    out = bias(torch.tensor([[1, 2]]), scores.clone())
    assert out[0, 5] == 3.0 and out[0].sum() == 3.0  # only the phrase's first token
    out = bias(torch.tensor([[1, 5]]), scores.clone())
    assert out[0, 6] == 10.0  # begun: the next piece gets the continuation bonus
    out = bias(torch.tensor([[1, 5, 6, 2]]), scores.clone())
    assert out.abs().sum() == 0  # named: no more pushing
    out = bias(torch.tensor([[1, 7]]), scores.clone())
    assert out.abs().sum() == 0  # a form that also counts as named (the plural)


def test_bias_rows_map_to_images_and_whole_words_stay_whole():
    inner = torch.zeros(10, dtype=torch.bool)
    inner[8] = True  # token 8 continues a word
    targets = [[Target(((4,),), 2.0)], [Target(((5,),), 1.0)]]
    bias = ConceptBias(targets, continue_bias=10.0, inner=inner)
    ids = torch.tensor([[0], [0], [0], [0]])  # 2 images x 2 beams, in order
    out = bias(ids, torch.zeros(4, 10))
    assert out[:2, 4].tolist() == [2.0, 2.0] and out[2:, 5].tolist() == [1.0, 1.0]
    assert out[:2, 5].abs().sum() == 0
    out = bias(torch.tensor([[0, 4], [0, 1], [0, 5], [0, 5]]), torch.zeros(4, 10))
    assert out[0, 8] == -float("inf") and out[1, 8] == 0  # just completed: no suffix glued on


def test_head_sums_class_probabilities_into_concepts():
    fc = torch.nn.Linear(4, 3)
    with torch.no_grad():
        fc.weight.copy_(torch.eye(3, 4) * 10)
        fc.bias.zero_()
    head = ConceptHead(fc, class_to_concept=[0, 0, 1], n_concepts=2)
    feats = torch.zeros(2, 5, 4)
    feats[0, :, 0] = 1.0  # class 0
    feats[1, :, 2] = 1.0  # class 2
    probs = head(feats)
    assert probs.shape == (2, 2)
    assert torch.allclose(probs.sum(1), torch.ones(2))
    assert probs[0, 0] > 0.99 and probs[1, 1] > 0.99
    chosen = confident(probs, min_prob=0.5, max_concepts=2)
    assert [[i for i, _ in row] for row in chosen] == [[0], [1]]
    assert confident(torch.tensor([[0.4, 0.35, 0.25]]), 0.5, 2) == [[]]  # unsure: nothing offered


def test_settings_are_checked():
    assert ConceptSettings.from_dict({}).mode == "off"
    with pytest.raises(PolycapError, match="unknown concepts settings: colour"):
        ConceptSettings.from_dict({"colour": 1})
    with pytest.raises(PolycapError, match=r"one of off, tokens, bias, tokens\+bias"):
        ConceptSettings.from_dict({"mode": "guess"})
    with pytest.raises(PolycapError, match="min_prob"):
        ConceptSettings.from_dict({"mode": "bias", "min_prob": 0})


def test_an_encoder_without_a_classifier_is_refused_clearly():
    with pytest.raises(PolycapError, match="no ImageNet classifier"):
        polycap.load("polycap-tiny-random", device="cpu", concepts="bias")


@pytest.fixture(scope="module")
def base_models():
    """The shipped model as it loads (concept tokens), and with concepts off."""
    try:
        shipped = polycap.load("polycap-base", device="cpu", runtime="torch")
    except PolycapError as e:  # pragma: no cover - the package ships it
        pytest.skip(f"polycap-base not loadable: {e}")
    off = polycap.load("polycap-base", device="cpu", runtime="torch", concepts="off")
    return shipped, off


@pytest.mark.parametrize(("lang", "word"), [("en", "cat"), ("de", "katze")])
def test_shipped_model_names_the_cat_from_its_concepts_and_not_without(base_models, lang, word):
    shipped, off = base_models
    assert shipped.concepts.feeds  # the shipped default reads the concept tokens
    before = off.caption_many([str(EXAMPLES / "cat.jpg")], lang=lang)[0]
    after = shipped.caption_many([str(EXAMPLES / "cat.jpg")], lang=lang)[0]
    assert word not in before.text.split()
    assert word in after.text.replace(".", " ").split()
    assert after.meta["concepts"][0]["concept"] == "cat" and after.meta["concepts"][0]["p"] > 0.5
    assert "concepts" not in before.meta


def test_decode_time_bias_still_steers_without_the_tokens(base_models):
    shipped, _ = base_models
    shipped.set_concepts("bias")  # empty concept memory, ConceptBias under generate()
    try:
        text = shipped.caption_many([str(EXAMPLES / "cat.jpg")], lang="fr")[0].text
    finally:
        shipped.set_concepts(shipped.cfg.concepts)
    assert "chat" in text.replace(".", " ").split()


def test_concepts_off_is_the_empty_concept_memory(base_models):
    shipped, off = base_models
    shipped.set_concepts("off")
    try:
        a = off.caption_many([str(EXAMPLES / "coffee.jpg")], lang="en", num_beams=3)[0]
        b = shipped.caption_many([str(EXAMPLES / "coffee.jpg")], lang="en", num_beams=3)[0]
    finally:
        shipped.set_concepts(shipped.cfg.concepts)
    assert a.text == b.text and a.score == pytest.approx(b.score)


def test_cli_concepts_flag_reaches_the_model_and_bad_modes_are_usage_errors(tmp_path):
    from typer.testing import CliRunner

    from polycap.cli.app import app

    photo = EXAMPLES / "cat.jpg"
    runner = CliRunner()
    bad = runner.invoke(app, ["caption", str(photo), "--model", "polycap-tiny-random", "--concepts", "copy"])
    assert bad.exit_code == 2 and "concepts.mode" in bad.output
    # the tiny model's encoder has no ImageNet classifier: a clear error, not silence
    none = runner.invoke(app, ["caption", str(photo), "--model", "polycap-tiny-random", "--concepts", "bias"])
    assert none.exit_code != 0 and "no ImageNet classifier" in none.output
    for command in (["eval", "--help"], ["batch", "--help"], ["caption", "--help"]):
        assert "--concepts" in runner.invoke(app, command).output
