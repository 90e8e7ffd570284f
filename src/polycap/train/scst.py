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

import torch

from polycap.eval.metrics.cider import CiderD
from polycap.eval.metrics.tokenize import tokenize_batch


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


def scst_step(trainer, lang: str, rows: list[int], reward: CiderReward, samples: int, opt,
              mode: str = "sample", baseline: str = "greedy") -> dict[str, float]:
    """One policy-gradient step on the images ``rows`` in ``lang``; returns reward statistics."""
    model, tok = trainer.model, trainer.tok
    items = trainer.train_split.items
    feats = trainer.train_split.features[rows].float()
    keys = [items[r].key for r in rows]
    max_new = trainer.ncfg.max_length - 1
    lang_ids = torch.full((len(rows),), tok.lang_id(lang))
    concepts = trainer.row_concept_input(rows, lang) if hasattr(trainer, "row_concept_input") else None
    model.eval()  # no dropout: the sampled policy and the trained one are the same
    cap = trainer.captioner()

    def texts(seqs: torch.Tensor, mask: torch.Tensor) -> list[str]:
        return [tok.decode(s[1:][m[1:].bool()].tolist()) for s, m in zip(seqs, mask)]

    with torch.no_grad():
        if mode == "beam":
            sampled = model.generate(feats, lang_ids, concepts=concepts, max_new_tokens=max_new, num_beams=samples,
                                     num_return_sequences=samples, do_sample=False)
        else:
            sampled = model.generate(feats, lang_ids, concepts=concepts, max_new_tokens=max_new, do_sample=True,
                                     top_k=0, num_return_sequences=samples)
        s_mask = cap._mask(sampled)
        r = torch.tensor(reward(texts(sampled, s_mask), [k for k in keys for _ in range(samples)]))
        if baseline == "mean":
            base = leave_one_out_baseline(r, samples)
        else:
            greedy = model.generate(feats, lang_ids, concepts=concepts, max_new_tokens=max_new, num_beams=1,
                                    do_sample=False)
            base = torch.tensor(reward(texts(greedy, cap._mask(greedy)), keys)).repeat_interleave(samples)
    adv = r - base  # (I*K,)
    memory = model.memory(feats, concepts).repeat_interleave(samples, dim=0)
    logits = model.decoder(input_ids=sampled, attention_mask=s_mask, encoder_hidden_states=memory).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, sampled[:, 1:, None]).squeeze(-1)
    m = s_mask[:, 1:].float()
    loss = -((adv[:, None] * logp * m).sum() / m.sum())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), trainer.cfg.train.grad_clip)
    opt.step()
    return {"reward": r.mean().item(), "baseline": base.mean().item(), "loss": loss.item()}


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
