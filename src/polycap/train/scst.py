"""Self-critical sequence training (Rennie et al. 2017): optimise CIDEr-D directly.

For each image the model produces K captions, either sampled (``mode: sample``,
``generate(do_sample=True)``) or the K beams of beam search (``mode: beam``, as in the M2 Transformer
recipe). Each caption's advantage, CIDEr-D(caption) - baseline, weights its log-probability. The
baseline is the greedy caption's reward (``baseline: greedy``, Rennie et al. 2017) or the mean
reward of the image's other K-1 captions (``baseline: mean``, Luo 2020: no extra decode, and the
advantages of an image sum to zero, so a label-smoothed model whose samples all score below its
greedy caption still gets a signal). Document frequencies come from the training references (fixed, as in the
usual recipe), and the n-gram vectors of every training reference are computed once.
"""

from __future__ import annotations

import math
import random
import shutil
from functools import cached_property
from typing import Any

import torch

from polycap.eval.metrics.cider import CiderD
from polycap.eval.metrics.tokenize import tokenize_batch
from polycap.train.engine import Phase, step_decay


class CiderReward:
    """CIDEr-D of candidates against one image's references, df fixed over a reference corpus."""

    def __init__(self, refs: dict[str, list[str]], lang: str):
        self.lang = lang
        keys = list(refs)
        flat = tokenize_batch([r for k in keys for r in refs[k]], lang)
        tokenised, i = [], 0
        for k in keys:
            tokenised.append(flat[i : i + len(refs[k])])
            i += len(refs[k])
        self.scorer = CiderD(tokenised)
        self.index = {k: i for i, k in enumerate(keys)}

    def __call__(self, hyps: list[str], keys: list[str]) -> list[float]:
        toks = tokenize_batch(hyps, self.lang)
        return [self.scorer.score_one(h, self.index[k]) for h, k in zip(toks, keys)]


def scst_batches(keys_by_lang: dict[str, list[int]], batch_size: int, seed: int) -> list[tuple[str, list[int]]]:
    """(lang, feature rows) batches: each image once per epoch, in one language drawn at random."""
    rng = random.Random(seed)
    choice: dict[int, list[str]] = {}
    for lang, rows in keys_by_lang.items():
        for r in rows:
            choice.setdefault(r, []).append(lang)
    by_lang: dict[str, list[int]] = {}
    for r in sorted(choice):
        by_lang.setdefault(rng.choice(sorted(choice[r])), []).append(r)
    batches = []
    for lang, rows in sorted(by_lang.items()):
        rng.shuffle(rows)
        batches += [(lang, rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    rng.shuffle(batches)
    return batches


def leave_one_out_baseline(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """(I*K,) rewards, K per image -> each one's baseline: the mean of its image's other K-1 rewards."""
    r = rewards.view(-1, k)
    return ((r.sum(1, keepdim=True) - r) / (k - 1)).reshape(-1)


class Scst(Phase):
    """The SCST phase of polycap's own models (``scst.*``), after cross-entropy: it starts from the best
    cross-entropy model (kept as ``best-xe/``), without the moving average, at ``scst.lr`` times
    ``scst.lr_decay`` after each epoch; each image once per epoch, in one of ``scst.langs``."""

    name = "scst"

    def __init__(self, recipe):  # a NativeRecipe
        s, t = recipe.cfg.scst, recipe.cfg.train
        super().__init__(epochs=s.epochs, lr=s.lr, grad_clip=t.grad_clip)
        self.recipe, self.s, self.seed = recipe, s, t.seed
        self.langs = [x for x in s.langs if x in recipe.langs]

    def begin(self) -> None:
        from safetensors.torch import load_file

        out = self.recipe.out
        self.recipe.load_weights(self.recipe.model, load_file(str(out / "best" / "model.safetensors")))
        shutil.rmtree(out / "best-xe", ignore_errors=True)
        shutil.copytree(out / "best", out / "best-xe")

    def batches(self, epoch: int) -> list[tuple[str, list[int]]]:
        items = self.recipe.train_split.items
        rows = {x: [i for i, it in enumerate(items) if it.captions.get(x)] for x in self.langs}
        return scst_batches(rows, self.s.batch_size, self.seed * 1000 + 777 + epoch)

    def lr_factor(self, steps_per_epoch: int):
        return step_decay(steps_per_epoch, self.s.lr_decay)

    @cached_property
    def rewards(self) -> dict[str, CiderReward]:
        from polycap.eval.evaluate import references_for

        return {x: CiderReward(references_for(self.recipe.train_split.items, x), x) for x in self.langs}

    def loss(self, batch: tuple[str, list[int]], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        lang, rows = batch
        return scst_loss(self.recipe, lang, rows, self.rewards[lang], self.s.samples, self.s.mode, self.s.baseline)

    def log_fields(self, state) -> dict[str, Any]:
        return {"phase": "scst", "scst_epoch": state.phase_epoch}


def scst_loss(recipe, lang: str, rows: list[int], reward: CiderReward, samples: int, mode: str = "sample",
              baseline: str = "greedy") -> tuple[torch.Tensor, dict[str, float]]:
    """The policy-gradient loss on the images ``rows`` in ``lang``, and the step's mean reward and baseline."""
    model, tok = recipe.model, recipe.tok
    items = recipe.train_split.items
    feats = recipe.train_split.features[rows].float()
    keys = [items[r].key for r in rows]
    max_new = recipe.ncfg.max_length - 1
    lang_ids = torch.full((len(rows),), tok.lang_id(lang))
    concepts = recipe.row_concept_input(rows, lang)
    model.eval()  # no dropout: the sampled policy and the trained one are the same
    cap = recipe.captioner()

    def texts(seqs: torch.Tensor, mask: torch.Tensor) -> list[str]:
        return [tok.decode(s[1:][m[1:].bool()].tolist()) for s, m in zip(seqs, mask)]

    with torch.no_grad():
        if mode == "beam":
            sampled = model.generate(feats, lang_ids, concepts=concepts, max_new_tokens=max_new, num_beams=samples,
                                     num_return_sequences=samples, do_sample=False)
        else:
            sampled = model.generate(feats, lang_ids, concepts=concepts, max_new_tokens=max_new, do_sample=True,
                                     top_k=0, num_return_sequences=samples)
        s_mask = cap.sequence_mask(sampled)
        r = torch.tensor(reward(texts(sampled, s_mask), [k for k in keys for _ in range(samples)]))
        if baseline == "mean":
            base = leave_one_out_baseline(r, samples)
        else:
            greedy = model.generate(feats, lang_ids, concepts=concepts, max_new_tokens=max_new, num_beams=1,
                                    do_sample=False)
            base = torch.tensor(reward(texts(greedy, cap.sequence_mask(greedy)), keys)).repeat_interleave(samples)
    adv = r - base  # (I*K,)
    memory = model.memory(feats, concepts).repeat_interleave(samples, dim=0)
    logits = model.decoder(input_ids=sampled, attention_mask=s_mask, encoder_hidden_states=memory).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, sampled[:, 1:, None]).squeeze(-1)
    m = s_mask[:, 1:].float()
    loss = -((adv[:, None] * logp * m).sum() / m.sum())
    return loss, {"reward": r.mean().item(), "baseline": base.mean().item()}


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
