"""ClipCap prefix captioners: tiny random GPT-2 and CLIP vision models built locally (no downloads).

Covers the contract over a folder model (CLIP encoder + GPT-2 from folders), training through the
shared trainer on real Flickr8k photos, the id-0 padding bug class ("!" is id 0, as in GPT-2),
beam search vs greedy under the model's own score, save/load round trips and the offline error.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import hf_tiny  # noqa: E402
import polycap  # noqa: E402
from polycap import ModelNotFoundError, UnsupportedLanguageError  # noqa: E402
from polycap.backends.clipcap.backend import ClipCapCaptioner  # noqa: E402
from polycap.backends.clipcap.config import ClipCapConfig, LMConfig, MapperConfig  # noqa: E402
from polycap.backends.clipcap.encoders import CLIPEncoder  # noqa: E402
from polycap.backends.clipcap.model import ClipCapModel  # noqa: E402
from polycap.backends.clipcap.tiny import build_tiny_gpt2  # noqa: E402
from polycap.backends.encoders.tiny import TinyConvEncoder  # noqa: E402
from polycap.errors import MissingDependencyError  # noqa: E402
from polycap.train.config import load_config  # noqa: E402
from polycap.train.data import collate  # noqa: E402
from polycap.train.trainer import make_trainer  # noqa: E402
from test_contract import (  # noqa: E402,F401 - the shared contract checks, over the folder model below
    test_batched_equals_one_by_one_greedy,
    test_beams_and_alternatives,
    test_every_supported_language_and_multilang,
    test_invalid_options_fail_before_any_work,
    test_max_new_tokens_is_respected,
    test_mixed_batch_isolates_bad_items,
    test_seeded_sampling_is_reproducible,
    test_unsupported_language_names_supported_ones,
)


@pytest.fixture(scope="module", autouse=True)
def quiet_and_offline():
    offline = pytest.MonkeyPatch()
    offline.setenv("HF_HUB_OFFLINE", "1")  # never touch the hub from these tests
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead on a shared CPU
    yield
    torch.set_num_threads(threads)
    offline.undo()


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clipcap-parts")
    build_tiny_gpt2(root / "gpt2")
    hf_tiny.build_clip_vision(root / "clip")
    return {"gpt2": root / "gpt2", "clip": root / "clip"}


def _config(parts, **kw) -> ClipCapConfig:
    base = dict(
        name="clipcap-test", languages=["en", "de"], encoder={"name": "clip", "path": str(parts["clip"])},
        features="pooled", feature_dim=24, mapper=MapperConfig(type="mlp", prefix_length=3, hidden=32),
        lm=LMConfig(path=str(parts["gpt2"])), prompt={"de": "Deutsch:"}, max_length=16,
    )
    return ClipCapConfig(**{**base, **kw})


def _captioner(parts, seed: int = 0, **kw) -> ClipCapCaptioner:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = _config(parts, **kw)
    lm = AutoModelForCausalLM.from_pretrained(parts["gpt2"])
    torch.manual_seed(seed)
    model = ClipCapModel(cfg, lm, AutoTokenizer.from_pretrained(parts["gpt2"]))
    return ClipCapCaptioner(model, CLIPEncoder.from_pretrained(str(parts["clip"])), "cpu")


@pytest.fixture(scope="module")
def folder(parts, tmp_path_factory) -> Path:
    """A saved clipcap model folder: CLIP encoder, mlp adapters for en and de, GPT-2 by path."""
    out = tmp_path_factory.mktemp("clipcap-model")
    _captioner(parts).save(out)
    return out


@pytest.fixture(scope="module")
def captioner(folder):
    """Overrides test_contract's fixture: the contract checks run over the folder model."""
    return polycap.load(str(folder), device="cpu")


def test_folder_layout_and_registry(folder):
    assert sorted(p.name for p in (folder / "adapters").iterdir()) == ["de.safetensors", "en.safetensors"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["backend"] == "clipcap" and cfg["lm_width"] == 32
    assert not (folder / "lm").exists()  # a frozen LM is referenced, never copied
    assert polycap.load(f"clipcap:{folder}", device="cpu").model.cfg.name == "clipcap-test"
    assert "clipcap-tiny-random" in [m["name"] for m in polycap.list_models()]


def test_unsupported_language_lists_supported(captioner):
    with pytest.raises(UnsupportedLanguageError, match="supported: de, en"):
        captioner.caption_features(torch.zeros(1, 1, 24), polycap.GenerationOptions(lang="fr"))


def test_stops_at_newline_and_never_returns_the_prompt(captioner):
    m = captioner.model
    tok = m.tok
    nl = tok.encode("\n")
    assert set(nl) <= set(m.stop_ids)
    seqs = torch.tensor([tok.encode("a dog") + nl + tok.encode(" cat")])
    mask = m.sequence_mask(seqs)
    assert mask.tolist() == [[1] * (len(seqs[0]) - len(tok.encode(" cat"))) + [0] * len(tok.encode(" cat"))]
    assert captioner._text(seqs[0][mask[0].bool()].tolist()) == "a dog"
    # the German prompt is in the context the LM continues, not in what generate() returns
    embeds, _ = m.context(torch.zeros(2, 1, 24), "de")
    assert embeds.shape[1] == 3 + len(m.prompt_ids["de"]) and m.prompt_ids["de"]
    seqs = m.generate(torch.zeros(1, 1, 24), "de", max_new_tokens=4)
    assert seqs.shape[1] <= 4


def test_beam_search_scores_at_least_greedy(captioner, photo_dir):
    for img in sorted(photo_dir.iterdir()):
        for lang in ("en", "de"):
            greedy = captioner.caption(img, lang=lang, max_new_tokens=6)
            beam = captioner.caption(img, lang=lang, max_new_tokens=6, num_beams=4)
            assert beam.score >= greedy.score - 1e-4, (img.name, lang, greedy, beam)


def test_loss_masks_padding_only(parts):
    """Labels come from the attention mask: "!" is id 0 (GPT-2's), and it is learned, padding is not."""
    cap = _captioner(parts)
    m = cap.model
    assert m.tok.convert_ids_to_tokens(0) == "!"
    short, long_ = m.encode_caption("a dog!", "en"), m.encode_caption("a cat, a man!", "en")
    assert 0 in short[1:]
    from polycap.train.data import Unit

    rows, owner, ids, mask = collate([Unit(0, [short, long_])], m.pad_id)
    feats = torch.randn(1, 1, 24)
    loss = m(feats, ids, mask, owner=owner)
    # the same loss from the two captions one by one (no padding at all), weighted by token counts
    n1, n2 = len(short) - 1, len(long_) - 1
    one = [m(feats, *collate([Unit(0, [c])], m.pad_id)[2:]) for c in (short, long_)]
    assert loss.item() == pytest.approx((one[0].item() * n1 + one[1].item() * n2) / (n1 + n2), rel=1e-4)
    # the output layer on caption positions only (logits_to_keep) gives the loss of the full logits
    assert m._keeps_logits
    m.__dict__["_keeps_logits"] = False
    try:
        full = m(feats, ids, mask, owner=owner, label_smoothing=0.1)
    finally:
        del m.__dict__["_keeps_logits"]
    assert m(feats, ids, mask, owner=owner, label_smoothing=0.1).item() == pytest.approx(full.item(), rel=1e-5)


def test_caption_with_bang_and_comma_is_learned(parts, photo_dir):
    """The id-0 padding bug class: captions ending in "!" (id 0) and holding "," must be learned exactly."""
    cap = _captioner(parts, mode="full", prompt={"en": "Caption:"}, languages=["en"])
    m = cap.model
    imgs = [photo_dir / "img0.png", photo_dir / "img2.png"]
    targets = ["a dog!", "a cat, a man!"]
    feats = cap.encode([polycap.images.load_image(p) for p in imgs])
    from polycap.train.data import Unit

    units = [Unit(i, [m.encode_caption(t, "en")]) for i, t in enumerate(targets)]
    rows, owner, ids, mask = collate(units, m.pad_id)  # the short caption is padded
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    m.train()
    torch.manual_seed(0)
    for _ in range(200):
        loss = m(feats[rows], ids, mask, owner=owner)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    assert loss.item() < 0.1
    got = [c.text for c in cap.caption_many(imgs)]
    assert got == targets  # "!" learned, "," learned, nothing after eos, no "Caption:" prompt


def test_save_load_round_trip_with_lora(parts, tmp_path, photo_dir):
    pytest.importorskip("peft")
    cap = _captioner(parts, mode="lora", languages=["en"])
    cap.model.add_lora()
    with torch.no_grad():  # LoRA B starts at zero: make it matter
        for n, p in cap.model.lm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    before = cap.caption(photo_dir / "img0.png", max_new_tokens=6, num_beams=2)
    cap.save(tmp_path / "m")
    assert (tmp_path / "m" / "lora" / "adapter_config.json").is_file()
    again = polycap.load(str(tmp_path / "m"), device="cpu")
    after = again.caption(photo_dir / "img0.png", max_new_tokens=6, num_beams=2)
    assert (after.text, after.score) == (before.text, pytest.approx(before.score, abs=1e-5))
    plain = _captioner(parts, languages=["en"])  # the same adapters without the LoRA differ
    plain.model.adapters.load_state_dict(cap.model.adapters.state_dict())
    assert plain.caption(photo_dir / "img0.png", max_new_tokens=6, num_beams=2).score != pytest.approx(before.score)


def test_missing_hub_lm_gives_the_offline_error(folder, tmp_path):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["lm"]["path"] = "no-such-org/no-such-lm"
    (tmp_path / "adapters").mkdir()
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelNotFoundError, match="no-such-org/no-such-lm.*not available.*HF_HUB_OFFLINE"):
        polycap.load(str(tmp_path), device="cpu")


# ---- training through `polycap train` ------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest(flickr8k, tmp_path_factory) -> Path:
    """32 train + 4 val real photos (absolute paths)."""
    from polycap.data.manifest import write_subset

    return write_subset(flickr8k / "captions.jsonl", tmp_path_factory.mktemp("data") / "m.jsonl",
                        {"train": 32, "val": 4})


def _train_args(manifest, parts, tmp_path, *extra):
    return [
        f"data.manifests=[{manifest}]", f"data.cache_dir={tmp_path / 'cache'}", "data.langs=[en,de]",
        "data.val_limit=4", "model.arch=clipcap", f'model.encoder={{"name": "clip", "path": "{parts["clip"]}"}}',
        "model.max_length=16", f"clipcap.lm.path={parts['gpt2']}", "clipcap.mapper.type=transformer",
        "clipcap.mapper.width=16", "clipcap.mapper.num_layers=1", "clipcap.mapper.num_heads=2",
        "clipcap.mapper.prefix_length=3", "train.batch_size=16", "train.lr=0.003", "train.warmup_steps=1",
        "train.label_smoothing=0", "train.checkpoint_every=4", *extra,
    ]


def test_training_lowers_loss(manifest, parts, tmp_path):
    run = tmp_path / "run"
    cfg = load_config(None, _train_args(manifest, parts, tmp_path, "clipcap.mode=full", "train.epochs=3"))
    make_trainer(cfg, run, progress=False).run()
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"] * 0.9, [e["loss"] for e in log]
    assert set(log[0]["val"]) == {"en", "de"} and all("CIDEr" in v for v in log[0]["val"].values())
    best = polycap.load(str(run / "best"), device="cpu")  # the fine-tuned LM is saved in best/lm
    assert (run / "best" / "lm" / "config.json").is_file()
    first = json.loads(manifest.read_text().splitlines()[0])["image"]
    assert best.caption(first, lang="de").ok


def test_lora_run_checkpoints_trained_weights_only_and_resumes(manifest, parts, tmp_path):
    pytest.importorskip("peft")
    run = tmp_path / "run"
    args = _train_args(manifest, parts, tmp_path, "clipcap.mode=lora")
    make_trainer(load_config(None, [*args, "train.epochs=1"]), run, progress=False).run()
    from safetensors.torch import load_file

    saved = load_file(str(run / "checkpoint" / "model.safetensors"))
    assert any("lora_" in k for k in saved) and any(k.startswith("adapters.de.") for k in saved)
    assert all(k.startswith("adapters.") or "lora_" in k for k in saved)  # never the frozen LM
    summary = make_trainer(load_config(None, [*args, "train.epochs=2"]), run, progress=False).run(resume=True)
    assert summary["epochs"] == 2 and len((run / "log.jsonl").read_text().splitlines()) == 2
    best = polycap.load(str(run / "best"), device="cpu")
    assert (run / "best" / "lora").is_dir() and best.model.mode == "lora"


def test_tiny_conv_grid_encoder_builds():
    enc = TinyConvEncoder(16, 0)
    from polycap.backends.clipcap.encoders import build_encoder

    assert type(build_encoder({"name": "tiny-conv", "dim": 16, "seed": 0})) is type(enc)
    with pytest.raises(polycap.PolycapError, match="clip"):
        build_encoder({"name": "nope"})


def test_gguf_lm_sources_fail_clearly(monkeypatch, tmp_path):
    from polycap.backends.clipcap import lm as lm_mod

    monkeypatch.setitem(lm_mod.GGUF_PACKAGES, "no-such-gguf", ("no_such_gguf_module", "gemma"))
    with pytest.raises(MissingDependencyError, match=r"polycap\[gemma\]"):
        lm_mod.resolve_lm(LMConfig(gguf_file="pypi:no-such-gguf"))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        lm_mod.resolve_lm(LMConfig(gguf_file=str(tmp_path / "missing.gguf")))
    with pytest.raises(ModelNotFoundError, match="not in"):
        lm_mod.resolve_lm(LMConfig(path=str(tmp_path), gguf_file="model.gguf"))
    (tmp_path / "model.gguf").write_bytes(b"")
    spec = LMConfig(path=str(tmp_path), gguf_file="model.gguf")
    assert lm_mod.resolve_lm(spec) == (str(tmp_path), "model.gguf", None)


def test_random_init_lm_keeps_architecture_and_tokenizer(parts):
    from polycap.backends.clipcap.lm import load_lm

    pre, tok = load_lm(LMConfig(path=str(parts["gpt2"])))
    rnd, tok2 = load_lm(LMConfig(path=str(parts["gpt2"]), random_init=True, seed=1))
    again, _ = load_lm(LMConfig(path=str(parts["gpt2"]), random_init=True, seed=1))
    assert len(tok) == len(tok2) and type(rnd) is type(pre)
    a, b, c = (m.get_input_embeddings().weight for m in (pre, rnd, again))
    assert a.shape == b.shape and not torch.equal(a, b) and torch.equal(b, c)


# ---- the output vocabulary (softmax over the training captions' tokens only) ---------------------

CAPTIONS = ["a dog runs", "a cat, a man!", "a man and a dog"]
GERMAN = ["ein hund", "ein mann"]


def _vocab_captioner(parts, **kw) -> ClipCapCaptioner:
    cap = _captioner(parts, output_vocab="captions", **kw)
    m = cap.model
    m.set_output_vocab({"en": {i for t in CAPTIONS for i in m.encode_caption(t, "en")[1:]},
                        "de": {i for t in GERMAN for i in m.encode_caption(t, "de")[1:]}})
    return cap


def test_output_vocab_loss_is_the_restricted_softmax_and_the_score_agrees(parts):
    from polycap.train.data import Unit

    cap = _vocab_captioner(parts)
    m = cap.model
    allowed = set(m.vocab_by_lang["en"])
    assert set(m.stop_ids) <= allowed and len(allowed) < len(m.tok) // 2
    assert set(m.output_vocab.tolist()) == allowed | set(m.vocab_by_lang["de"]) != allowed
    feats = torch.randn(2, 1, 24)
    caps = [m.encode_caption(t, "en") for t in CAPTIONS[:2]]
    rows, owner, ids, mask = collate([Unit(0, [caps[0]]), Unit(1, [caps[1]])], m.pad_id)
    loss = m(feats, ids, mask, owner=owner, label_smoothing=0.1)
    # by hand: the LM's full logits, cut to the ids English allows, then the cross-entropy there
    vocab = torch.tensor(m.vocab_by_lang["en"])
    total, n = 0.0, 0
    for i, c in enumerate(caps):
        embeds, attn = m.context(feats[i : i + 1], "en")
        seq = torch.tensor([c[1:]])
        logits = m.lm(inputs_embeds=torch.cat([embeds, m.embed(seq)], 1)).logits[0, embeds.shape[1] - 1 : -1]
        target = torch.tensor([vocab.tolist().index(t) for t in c[1:]])
        total += torch.nn.functional.cross_entropy(logits[:, vocab], target, label_smoothing=0.1,
                                                   reduction="sum").item()
        n += len(c) - 1
    assert loss.item() == pytest.approx(total / n, rel=1e-4)
    # teacher-forced score of one caption = minus its loss (no smoothing)
    one = collate([Unit(0, [caps[0]])], m.pad_id)
    embeds, attn = m.context(feats[:1], "en")
    seq = torch.tensor([caps[0][1:]])
    score = m.token_logprobs(embeds, attn, seq, torch.ones_like(seq), "en")
    assert score.item() == pytest.approx(-m(feats[:1], *one[2:], owner=one[1]).item(), rel=1e-4)
    for text, lang in (("zebra zebra", "en"), ("a cat runs", "de")):  # unknown anywhere; English, not German
        bad = collate([Unit(0, [m.encode_caption(text, lang)])], m.pad_id)
        with pytest.raises(polycap.PolycapError, match="outside the output vocabulary of their language"):
            m(feats[:1], *bad[2:], owner=bad[1])
    with pytest.raises(polycap.PolycapError, match="exactly the model's languages"):
        m.set_output_vocab({"en": [1]})


def test_output_vocab_decoding_stays_inside_it_and_beam_beats_greedy(parts, photo_dir, tmp_path):
    cap = _vocab_captioner(parts)
    m = cap.model
    imgs = sorted(photo_dir.iterdir())
    from polycap.images import load_image

    feats = cap.encode([load_image(p) for p in imgs])
    for lang in ("en", "de"):
        allowed = set(m.vocab_by_lang[lang])
        for kw in ({}, {"num_beams": 3}, {"do_sample": True, "top_k": 0, "temperature": 1.5}):
            seqs = m.generate(feats, lang, max_new_tokens=8, **kw)
            used = set(seqs[m.sequence_mask(seqs).bool()].tolist())
            assert used <= allowed, (lang, kw, used - allowed)
        for img in imgs:
            greedy = cap.caption(img, lang=lang, max_new_tokens=6)
            beam = cap.caption(img, lang=lang, max_new_tokens=6, num_beams=4)
            assert beam.score >= greedy.score - 1e-4, (img.name, greedy, beam)
    before = [c.text for c in cap.caption_many(imgs, num_beams=2, max_new_tokens=6)]
    cap.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "output_vocab.json").read_text()) == m.vocab_by_lang
    again = polycap.load(str(tmp_path / "m"), device="cpu")
    assert [c.text for c in again.caption_many(imgs, num_beams=2, max_new_tokens=6)] == before
    shared = sorted(set(m.vocab_by_lang["en"]) | set(m.vocab_by_lang["de"]))
    (tmp_path / "m" / "output_vocab.json").write_text(json.dumps(shared))  # one list: every language's
    assert polycap.load(str(tmp_path / "m"), device="cpu").model.vocab_by_lang == {"en": shared, "de": shared}
    (tmp_path / "m" / "output_vocab.json").unlink()
    with pytest.raises(polycap.PolycapError, match="output_vocab.json is missing"):
        polycap.load(str(tmp_path / "m"), device="cpu")


def test_output_vocab_follows_final_soft_capping_and_refuses_other_heads(parts):
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    tok = AutoTokenizer.from_pretrained(parts["gpt2"])
    torch.manual_seed(0)
    gemma = Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, final_logit_softcapping=2.0, max_position_embeddings=64,
        sliding_window=16, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)).eval()
    with torch.no_grad():
        gemma.lm_head.weight.mul_(50)  # logits well past the cap, so capping matters
    m = ClipCapModel(_config(parts, languages=["en"]), gemma, tok)
    m.set_output_vocab([1, 2, 3])  # checked against the LM's own capped logits: passes
    h = m._hidden(torch.randn(1, 2, 32), torch.ones(1, 2, dtype=torch.long))
    assert float(m.vocab_logits(h).abs().max()) <= 2.0

    from transformers import AutoModelForCausalLM

    gpt2 = AutoModelForCausalLM.from_pretrained(parts["gpt2"]).eval()
    gpt2.lm_head.register_forward_hook(lambda mod, args, out: out * 2)  # not a plain linear head any more
    m2 = ClipCapModel(_config(parts, languages=["en"]), gpt2, tok)
    with pytest.raises(polycap.PolycapError, match="not a plain linear head"):
        m2.set_output_vocab([1, 2, 3])
    assert m2.output_vocab is None


def test_training_with_output_vocab_lowers_loss_and_saves_it(manifest, parts, tmp_path):
    run = tmp_path / "run"
    cfg = load_config(None, _train_args(manifest, parts, tmp_path, "clipcap.output_vocab=captions", "clipcap.mode=full",
                                        "train.epochs=3"))
    trainer = make_trainer(cfg, run, progress=False)
    m = trainer.model
    want = {lang: sorted({i for _, ids in trainer.pool if ids[0] == m.lang_index(lang) for i in ids[1:]}
                         | set(m.stop_ids)) for lang in ("en", "de")}
    assert m.vocab_by_lang == want and want["en"] != want["de"]
    trainer.run()
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"] * 0.9, [e["loss"] for e in log]
    assert json.loads((run / "best" / "output_vocab.json").read_text()) == want
    assert json.loads((run / "best" / "config.json").read_text())["output_vocab"] == "captions"
    first = json.loads(manifest.read_text().splitlines()[0])["image"]
    assert polycap.load(str(run / "best"), device="cpu").caption(first, lang="de").ok


def test_merge_adapters_from_separate_runs(parts, photo_dir, tmp_path):
    from polycap.cli import main

    en = _captioner(parts, languages=["en"], output_vocab="captions", prompt=None, seed=1)
    en.model.set_output_vocab({"en": {i for t in CAPTIONS for i in en.model.encode_caption(t, "en")[1:]}})
    de = _captioner(parts, languages=["de"], output_vocab="captions", seed=2)
    de.model.set_output_vocab({i for t in GERMAN for i in de.model.encode_caption(t, "de")[1:]})  # one list
    en.save(tmp_path / "en")
    de.save(tmp_path / "de")
    imgs = sorted(photo_dir.iterdir())
    want = {lang: [c.text for c in cap.caption_many(imgs, lang=lang, num_beams=2, max_new_tokens=6)]
            for lang, cap in (("en", en), ("de", de))}
    assert main(["merge-adapters", str(tmp_path / "en"), str(tmp_path / "de"), "--out", str(tmp_path / "both"),
                 "--name", "clipcap-both"]) == 0
    both = polycap.load(str(tmp_path / "both"), device="cpu")
    assert both.model.languages == ["en", "de"] and both.name == "clipcap-both"
    assert both.model.vocab_by_lang == {"en": en.model.vocab_by_lang["en"], "de": de.model.vocab_by_lang["de"]}
    assert both.model.prompt_ids["de"] == de.model.prompt_ids["de"]  # "Deutsch:" came along
    for lang in ("en", "de"):
        assert [c.text for c in both.caption_many(imgs, lang=lang, num_beams=2, max_new_tokens=6)] == want[lang]
    # what cannot be merged is refused with the reason
    assert main(["merge-adapters", str(tmp_path / "en"), str(tmp_path / "en"), "--out", str(tmp_path / "x")]) == 2
    other = _captioner(parts, languages=["fr"], mapper=MapperConfig(type="mlp", prefix_length=2, hidden=32))
    other.save(tmp_path / "fr")
    from polycap.backends.clipcap.merge import merge_folders

    with pytest.raises(polycap.PolycapError, match="differs .* in 'mapper'"):
        merge_folders([tmp_path / "en", tmp_path / "fr"], tmp_path / "y")
    with pytest.raises(polycap.PolycapError, match="more than one folder"):
        merge_folders([tmp_path / "en", tmp_path / "en"], tmp_path / "z")
