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
        mask = cap._mask(seqs)
        memory = cap.model.memory(feats).repeat_interleave(k, dim=0)
        expected = cap.model.token_logprobs(memory, seqs, mask).tolist()
    got = [a.score for c in caps for a in (c.alternatives or [c])]
    assert got == pytest.approx(expected, abs=1e-4)
    assert all(s < 0 for s in got)
