"""The trained concept path: concept names in the decoder's memory, substitution augmentation, and
training with them (tiny encoder with a classifier head, real Flickr8k photos)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from polycap.backends.native.concepts import ConceptSettings, concept_input, name_pieces  # noqa: E402
from polycap.backends.native.model import CaptionModel  # noqa: E402
from polycap.backends.native.tiny import TinyConvEncoder, build_tiny_random  # noqa: E402
from polycap.data.concepts import load_concepts  # noqa: E402
from polycap.errors import PolycapError  # noqa: E402
from polycap.train.concepts import Swapped  # noqa: E402
from polycap.train.config import load_config  # noqa: E402
from polycap.train.trainer import Trainer  # noqa: E402
from test_train import TINY_MODEL, _log  # noqa: E402


def test_concept_input_packs_names_best_first_and_skips_the_unnamed():
    names = [(5, 6), (), (8, 9, 10, 11)]
    fed = concept_input([[(0, 0.9), (1, 0.8), (2, 0.6)], []], [names, names], slots=2, pieces=3)
    assert fed.ids[0].tolist() == [[5, 6, -1], [8, 9, 10]]  # concept 1 has no name: skipped; 2 cut at 3
    assert fed.probs[0].tolist() == pytest.approx([0.9, 0.6])
    assert (fed.ids[1] == -1).all() and (fed.probs[1] == 0).all()


def test_name_pieces_use_the_article_where_it_carries_gender():
    table = load_concepts()
    _, _, _, tok = build_tiny_random()
    cat = table.ids.index("cat")
    de = name_pieces(table, "de", tok.tok, 6)[cat]
    en = name_pieces(table, "en", tok.tok, 6)[cat]
    entry = table["cat"].names["de"]
    assert tok.decode(list(de)) == f"{entry.article} {entry.sg}".lower()
    assert tok.decode(list(en)) == table["cat"].names["en"].sg


def _slot_model():
    cfg, _, _, tok = build_tiny_random()
    cfg.concept_slots, cfg.concept_pieces = 2, 3
    torch.manual_seed(0)
    return CaptionModel(cfg, tok.pad_id, tok.eos_id).eval(), tok


def test_memory_holds_the_concepts_and_empty_slots_are_the_no_concept_memory():
    model, tok = _slot_model()
    feats = torch.randn(2, 16, 16)
    empty = concept_input([[], []], [[()]] * 2, 2, 3)
    one = concept_input([[(0, 0.9)], []], [[(5, 6)]] * 2, 2, 3)
    assert model.memory(feats).shape == (2, 16 + 6, 32)
    assert torch.equal(model.memory(feats), model.memory(feats, empty))
    with_concept = model.memory(feats, one)
    assert not torch.allclose(with_concept[0], model.memory(feats)[0])
    assert torch.equal(with_concept[1], model.memory(feats)[1])  # row 1 had none
    lang = torch.full((2,), tok.lang_id("en"))
    beams = model.generate(feats, lang, concepts=one, num_beams=2, num_return_sequences=2, max_new_tokens=4)
    assert beams.shape[0] == 4


def test_tokens_mode_needs_a_model_trained_with_concept_slots():
    with pytest.raises(PolycapError, match="concept_slots"):
        import polycap

        polycap.load("polycap-tiny-random", device="cpu", concepts="tokens")
    assert ConceptSettings.from_dict({"mode": "tokens+bias"}).biases
    with pytest.raises(PolycapError, match="concepts.mode"):
        ConceptSettings.from_dict({"mode": "copy"})


class _Body(nn.Module):
    """The tiny conv net plus an ImageNet-shaped classifier layer (``net._fc``) that puts most
    probability on the classes of one concept, so every photo has it confidently."""

    def __init__(self, seq: nn.Module, classes: list[int]):
        super().__init__()
        self.seq = seq
        self._fc = nn.Linear(16, 1000)
        with torch.no_grad():
            self._fc.weight.zero_()
            self._fc.bias.zero_()
            self._fc.bias[classes] = 12.0

    def forward(self, x):
        return self.seq(x)


def _encoder_seeing(concept: str) -> TinyConvEncoder:
    enc = TinyConvEncoder(16, 0)
    enc.net = _Body(enc.net, list(load_concepts()[concept].classes))
    return enc


@pytest.fixture(scope="module")
def manifest(flickr8k, tmp_path_factory) -> Path:
    from polycap.data.manifest import write_subset

    return write_subset(flickr8k / "captions.jsonl", tmp_path_factory.mktemp("data") / "m.jsonl",
                        {"train": 32, "val": 8})


CONCEPTS = ["model.concept_slots=2", "model.concept_pieces=4", 'model.concepts={"mode": "tokens"}']


def _cfg(manifest, cache, *extra):
    return load_config(None, [f"data.manifests=[{manifest}]", f"data.cache_dir={cache}", *TINY_MODEL,
                              *CONCEPTS, *extra])


def test_substitution_swaps_caption_and_fed_concept_together(manifest, tmp_path):
    trainer = Trainer(_cfg(manifest, tmp_path / "c", "train.substitute=1.0", "train.epochs=1"), tmp_path / "r",
                      progress=False, encoder=_encoder_seeing("cat"))
    assert all(row and trainer.concepts.table.ids[row[0][0]] == "cat" for row in trainer.row_concepts)
    assert trainer.concepts.swappable  # Flickr8k captions name dogs, shirts, balls...
    units = [u for batch in trainer.epoch_plan(0) for u in batch]
    swapped = [ids for u in units for ids in u.captions if isinstance(ids, Swapped)]
    assert len(swapped) > len(trainer.concepts.swappable) // 2
    ids = swapped[0]
    fed = trainer.concepts.batch_input([(ids, trainer.row_concepts[0])])
    lang = trainer.concepts.lang_of_id[ids[0]]
    assert fed.ids[0, 0, 0] == trainer.concepts.names[lang][ids.new][0]  # the new concept first
    assert set(trainer.tok.decode(ids).split()) != set()
    # deterministic per epoch seed (resume rebuilds the same batches), different across epochs
    again = [ids for batch in trainer.epoch_plan(0) for u in batch for ids in u.captions]
    assert again == [ids for u in units for ids in u.captions]
    other = [ids for batch in trainer.epoch_plan(1) for u in batch for ids in u.captions]
    assert other != again


def test_training_with_concepts_resumes_exactly_and_validates_with_them(manifest, tmp_path):
    cache = tmp_path / "cache"
    extra = ("train.substitute=0.5", "train.epochs=2", "train.hide_grid=0.5", "train.concept_weight=5",
             "train.concept_lr_mult=3")
    full, part = tmp_path / "full", tmp_path / "part"
    Trainer(_cfg(manifest, cache, *extra), full, progress=False, encoder=_encoder_seeing("dog")).run()
    Trainer(_cfg(manifest, cache, *extra, "train.max_steps=5"), part, progress=False,
            encoder=_encoder_seeing("dog")).run()
    trainer = Trainer(_cfg(manifest, cache, *extra), part, progress=False, encoder=_encoder_seeing("dog"))
    trainer.run(resume=True)
    a = (full / "checkpoint" / "model.safetensors").read_bytes()
    assert a == (part / "checkpoint" / "model.safetensors").read_bytes()
    assert [e["loss"] for e in _log(full)] == pytest.approx([e["loss"] for e in _log(part)], rel=1e-6)
    saved = json.loads((full / "best" / "config.json").read_text())
    assert saved["concept_slots"] == 2 and saved["concepts"]["mode"] == "tokens"
    cap = trainer.captioner().caption_features(trainer.val_split.features[:2].float(),
                                               __import__("polycap").GenerationOptions(lang="en"))
    assert cap[0].meta["concepts"][0]["concept"] == "dog"


def test_warm_start_loads_weights_and_tokenizer_and_only_concepts_are_new(manifest, tmp_path):
    cache = tmp_path / "cache"
    base = tmp_path / "base"
    Trainer(load_config(None, [f"data.manifests=[{manifest}]", f"data.cache_dir={cache}", *TINY_MODEL,
                               "train.epochs=1"]), base, progress=False).run()
    warm = Trainer(_cfg(manifest, cache, f"train.init={base / 'best'}", "train.epochs=1"), tmp_path / "warm",
                   progress=False, encoder=_encoder_seeing("dog"))
    assert (tmp_path / "warm" / "tokenizer.json").read_bytes() == (base / "tokenizer.json").read_bytes()
    from safetensors.torch import load_file

    old = load_file(str(base / "best" / "model.safetensors"))
    new = warm.model.state_dict()
    assert all(torch.equal(old[k].float(), new[k]) for k in old)
    with pytest.raises(PolycapError, match="train.init"):
        Trainer(_cfg(manifest, cache, f"train.init={tmp_path / 'nowhere'}"), tmp_path / "bad", progress=False,
                encoder=_encoder_seeing("dog"))


def test_swapped_name_positions_get_the_concept_weight(manifest, tmp_path):
    trainer = Trainer(_cfg(manifest, tmp_path / "c", "train.substitute=1.0", "train.concept_weight=4",
                           "train.hide_grid=1.0", "train.epochs=1"), tmp_path / "r", progress=False,
                      encoder=_encoder_seeing("cat"))
    batch = next(b for b in trainer.epoch_plan(0) if any(isinstance(c, Swapped) for u in b for c in u.captions))
    from polycap.train.data import collate

    _, _, ids, _ = collate(batch, trainer.pad_id, trainer.mirror_offset)
    weight = trainer.concept_token_weights(batch, ids)
    captions = [c for u in batch for c in u.captions]
    hidden = trainer.hidden_grids(batch, step=7)
    assert hidden.tolist() == [isinstance(c, Swapped) for c in captions]  # hide_grid=1: every swapped one
    for b, c in enumerate(captions):
        marked = [t for t in range(len(c)) if weight[b, t] == 4.0]
        if not isinstance(c, Swapped):
            assert not marked
            continue
        lang = trainer.concepts.lang_of_id[c[0]]
        assert marked
        forms = trainer.concepts.spellings(c.new, lang)
        assert any(tuple(c[marked[0] : marked[0] + len(f)]) == f for f in forms)
