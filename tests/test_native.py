"""polycap's own backend: scores reported with captions are the model's mean token log-probability."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import polycap  # noqa: E402
from polycap.types import GenerationOptions  # noqa: E402


@pytest.mark.parametrize(
    "options",
    [
        GenerationOptions(lang="en", max_new_tokens=12),
        GenerationOptions(lang="de", max_new_tokens=12, do_sample=True, temperature=1.5, seed=3,
                          num_return_sequences=2),
        GenerationOptions(lang="en", max_new_tokens=12, min_new_tokens=12),
    ],
    ids=["greedy", "sampling", "forced-length"],
)
def test_scores_from_generate_equal_teacher_forced_scores(options):
    """Greedy/sampling scores come from generate's logits; they must equal a fresh teacher-forced pass."""
    cap = polycap.load("polycap-tiny-random", device="cpu")
    feats = torch.randn(3, cap.cfg.grid_positions, cap.cfg.encoder_dim, generator=torch.Generator().manual_seed(0))
    caps = cap.caption_features(feats, options)
    k = options.num_return_sequences
    with torch.inference_mode():
        torch.manual_seed(options.seed or 0)
        kw = dict(max_new_tokens=options.max_new_tokens, min_new_tokens=options.min_new_tokens,
                  do_sample=options.do_sample, num_return_sequences=k)
        if options.do_sample:
            kw.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k or 0)
        lang = torch.full((3,), cap.tokenizer.lang_id(options.lang))
        seqs = cap.model.generate(feats, lang, **kw)
        mask = cap.sequence_mask(seqs)
        memory = cap.model.memory(feats).repeat_interleave(k, dim=0)
        expected = cap.model.token_logprobs(memory, seqs, mask).tolist()
    got = [a.score for c in caps for a in (c.alternatives or [c])]
    assert got == pytest.approx(expected, abs=1e-4)
    assert all(s < 0 for s in got)


def test_model_folder_generation_defaults_apply_unless_the_caller_sets_them(tmp_path, capsys):
    """config.json's ``generation`` gives the model's default options: the Python API, the CLI and
    explicit options override them; a bad entry fails at load, naming it."""
    import json

    from PIL import Image

    from polycap.cli import main
    from polycap.errors import OptionError

    tiny = polycap.load("polycap-tiny-random", device="cpu")
    tiny.save(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["generation"] = {"no_repeat_ngram_size": 1, "max_new_tokens": 12}
    cfg_path.write_text(json.dumps(cfg))
    model = polycap.load(str(tmp_path / "m"), device="cpu")
    assert model.make_options().no_repeat_ngram_size == 1
    assert model.make_options(lang="de").no_repeat_ngram_size == 1  # kwargs keep the other defaults
    assert model.make_options(no_repeat_ngram_size=0).no_repeat_ngram_size == 0
    assert model.make_options(GenerationOptions(lang="en")).no_repeat_ngram_size == 0  # explicit options win
    img = Image.new("RGB", (40, 30), (120, 50, 200))
    # the random model repeats one token; the default forbids any repeat, an explicit 0 allows it again
    assert model.caption(img).text == tiny.caption(img, no_repeat_ngram_size=1, max_new_tokens=12).text
    assert model.caption(img, no_repeat_ngram_size=0).text == tiny.caption(img, max_new_tokens=12).text
    assert model.caption(img).text != model.caption(img, no_repeat_ngram_size=0).text
    img.save(tmp_path / "p.png")
    argv = ["caption", str(tmp_path / "p.png"), "-m", str(tmp_path / "m"), "-f", "jsonl", "--max-tokens", "12"]
    texts = []
    for extra in ([], ["--no-repeat-ngram-size", "0"]):
        assert main([*argv, *extra]) == 0
        texts.append(json.loads(capsys.readouterr().out)["caption"])
    assert texts == [model.caption(img).text, model.caption(img, no_repeat_ngram_size=0).text]
    cfg["generation"] = {"no_repeat": 3}
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(OptionError, match="no_repeat"):
        polycap.load(str(tmp_path / "m"), device="cpu")
