"""What the image encoder recognises, handed to the decoder as concepts it may name.

EfficientNet-Lite2's own ImageNet-1k classifier (mean-pooled grid + its 1280->1000 layer) reads the
very features the decoder attends to, so recognising costs one small matmul. Its 1,000 class
probabilities are summed into basic-level concepts (every cat breed -> "cat"; the concept table in
``polycap.data.concepts``), and the confident ones are offered to ``generate()``.

Two designs, which a model's ``concepts`` settings choose between (``mode``):

- ``tokens`` (trained): each confident concept's name in the caption's language, as the decoder's
  own token embeddings, joins the image grid in the decoder's memory (as OSCAR/VinVL feed object
  tags); the decoder learned to copy them (``ConceptInput``; the training side substitutes caption
  words and concepts together so that it trusts the concept, ``polycap.data.substitute``).
- ``bias`` (decode-time, no training): a ``LogitsProcessor`` that raises the logits of a confident
  concept's words until the caption names it, and pushes a word the caption has begun to its end.

Decoding stays transformers' ``generate()`` in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from polycap.backends.model_config import typed
from polycap.errors import PolycapError


@dataclass(frozen=True)
class ConceptSettings:
    """How concepts steer decoding (the ``concepts`` field of a model's config.json)."""

    mode: str = "off"  # "off", "tokens" (the trained concept memory), "bias" (ConceptBias) or "tokens+bias"
    min_prob: float = 0.5  # a concept below this is never offered: say less when unsure
    max_concepts: int = 2  # per image, the most probable first
    bias: float = 6.0  # logit bonus at probability 1 (scaled by the probability)
    continue_bias: float = 10.0  # bonus for the next piece of a concept word already begun

    @classmethod
    def from_dict(cls, data: dict | None) -> ConceptSettings:
        settings = typed(cls, dict(data or {}), "concepts settings")
        if settings.mode not in MODES:
            raise PolycapError(f"concepts.mode must be one of {', '.join(MODES)}; got {settings.mode!r}")
        if not 0 < settings.min_prob <= 1:
            raise PolycapError(f"concepts.min_prob must be in (0, 1], got {settings.min_prob!r}")
        return settings

    @property
    def feeds(self) -> bool:
        """Whether concept tokens join the decoder's memory."""
        return self.mode in ("tokens", "tokens+bias")

    @property
    def biases(self) -> bool:
        """Whether ``ConceptBias`` steers decoding."""
        return self.mode in ("bias", "tokens+bias")


MODES = ("off", "tokens", "bias", "tokens+bias")


class ConceptHead(torch.nn.Module):
    """(B, N, C) feature grid -> (B, K) concept probabilities (class probabilities summed per concept)."""

    def __init__(self, fc: torch.nn.Linear, class_to_concept: list[int], n_concepts: int):
        super().__init__()
        self.register_buffer("weight", fc.weight.detach().float().clone())  # (1000, C)
        self.register_buffer("bias", fc.bias.detach().float().clone())  # (1000,)
        self.register_buffer("index", torch.tensor(class_to_concept, dtype=torch.long))  # (1000,)
        self.n_concepts = n_concepts

    @classmethod
    def from_encoder(cls, encoder: torch.nn.Module, class_to_concept: list[int], n_concepts: int) -> ConceptHead:
        """The classifier layer of an EfficientNet-Lite2 encoder (torch, or onnx wrapping torch)."""
        torch_encoder = getattr(encoder, "encoder", encoder)
        fc = getattr(getattr(torch_encoder, "net", None), "_fc", None)
        if not isinstance(fc, torch.nn.Linear) or fc.out_features != len(class_to_concept):
            raise PolycapError(f"encoder {getattr(encoder, 'name', encoder)!r} has no ImageNet classifier for concepts")
        return cls(fc, class_to_concept, n_concepts)

    @torch.no_grad()
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.float().mean(dim=1)  # (B, C): the classifier's own global pooling
        probs = torch.softmax(pooled @ self.weight.T + self.bias, dim=-1)  # (B, 1000)
        out = torch.zeros(probs.shape[0], self.n_concepts, dtype=probs.dtype, device=probs.device)
        return out.index_add_(1, self.index, probs)  # (B, K)


def confident(probs: torch.Tensor, min_prob: float, max_concepts: int) -> list[list[tuple[int, float]]]:
    """Per image, the (concept index, probability) pairs with probability >= ``min_prob``, best first."""
    k = min(max_concepts, probs.shape[-1])
    values, indices = probs.topk(k, dim=-1)
    return [
        [(i, p) for i, p in zip(row_i.tolist(), row_v.tolist(), strict=True) if p >= min_prob]
        for row_i, row_v in zip(indices, values, strict=True)
    ]


@dataclass(frozen=True)
class ConceptInput:
    """The concepts fed to the decoder for a batch: ``ids`` (B, S, P) token ids of each slot's name
    (-1 = empty: no concept in that slot, or past the end of the name), ``probs`` (B, S)."""

    ids: torch.Tensor
    probs: torch.Tensor

    def __getitem__(self, index) -> ConceptInput:
        return ConceptInput(self.ids[index], self.probs[index])

    def repeat_interleave(self, k: int) -> ConceptInput:
        return ConceptInput(self.ids.repeat_interleave(k, dim=0), self.probs.repeat_interleave(k, dim=0))

    def to(self, device) -> ConceptInput:
        return ConceptInput(self.ids.to(device), self.probs.to(device))


def name_pieces(table, lang: str, tokenizer, pieces: int) -> list[tuple[int, ...]]:
    """Per concept of ``table``, the token ids of its name fed to the decoder in ``lang`` (at most
    ``pieces``): the singular, after its indefinite article where the article carries gender
    (de ``eine katze``, fr ``un chat``), lower-cased as captions are; () without a name in ``lang``."""
    out = []
    for concept in table:
        entry = concept.names.get(lang)
        if entry is None:
            out.append(())
            continue
        text = _with_article(entry, lang) or entry.sg
        out.append(tuple(tokenizer.encode(text.lower(), add_special_tokens=False).ids[:pieces]))
    return out


def concept_input(
    chosen: list[list[tuple[int, float]]], names: list[list[tuple[int, ...]]], slots: int, pieces: int
) -> ConceptInput:
    """Row i feeds ``chosen[i]`` ((concept index, probability) pairs, best first) named with
    ``names[i]`` (``name_pieces`` of row i's language); a concept without a name there is skipped,
    and at most ``slots`` are fed."""
    ids = torch.full((len(chosen), slots, pieces), -1, dtype=torch.long)
    probs = torch.zeros(len(chosen), slots)
    for i, (row, row_names) in enumerate(zip(chosen, names, strict=True)):
        s = 0
        for index, p in row:
            name = row_names[index][:pieces]
            if not name or s == slots:
                continue
            ids[i, s, : len(name)] = torch.tensor(name)
            probs[i, s] = p
            s += 1
    return ConceptInput(ids, probs)


Phrase = tuple[int, ...]  # token ids of one way to say a concept ("eine katze", "katze", "katzen")


@dataclass(frozen=True)
class Target:
    """One concept to steer toward in one image: its phrases and the bonus for starting one."""

    phrases: tuple[Phrase, ...]  # steered to: the first token of each is raised
    bias: float
    named: tuple[Phrase, ...] = ()  # further forms that also count as named (plurals)


class ConceptBias(LogitsProcessor):
    """Raise the logits of each image's concept words until its caption contains one of them.

    ``targets[i]`` are image i's concepts; generate()'s rows are images repeated (beams, returns),
    ``rows // len(targets)`` per image, in order. At each step, for every concept not yet named in a
    row, the first token of each phrase gets ``target.bias``; when the row already ends with the
    beginning of a phrase, the next token of that phrase gets ``continue_bias`` instead, so a word once
    begun is finished (``ko`` -> ``č`` -> ``ka``).
    """

    def __init__(self, targets: list[list[Target]], continue_bias: float, inner: torch.Tensor | None = None):
        """``inner``: a (V,) bool mask of the tokens that continue a word (no leading ``▁``); right after
        a concept word is complete they are forbidden, so it is not bent into another word."""
        self.targets = targets
        self.continue_bias = continue_bias
        self.inner = inner

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        per = max(1, input_ids.shape[0] // max(1, len(self.targets)))
        rows = input_ids.tolist()
        for r, seq in enumerate(rows):
            bonus: dict[int, float] = {}
            for target in self.targets[min(r // per, len(self.targets) - 1)]:
                if any(_contains(seq, p) for p in target.phrases + target.named):
                    if self.inner is not None and any(_ends_with(seq, p) for p in target.phrases):
                        scores[r, self.inner] = -float("inf")  # the word is whole: no suffix on it
                    continue  # named already: no more pushing, no repeats
                for p in target.phrases:
                    j = _begun(seq, p)
                    value = self.continue_bias if j else target.bias
                    bonus[p[j]] = max(bonus.get(p[j], 0.0), value)
            for token, value in bonus.items():
                scores[r, token] += value
        return scores


def _contains(seq: list[int], phrase: Phrase) -> bool:
    n = len(phrase)
    return any(tuple(seq[i : i + n]) == phrase for i in range(len(seq) - n + 1))


def _ends_with(seq: list[int], phrase: Phrase) -> bool:
    return len(seq) >= len(phrase) and tuple(seq[-len(phrase) :]) == phrase


def _begun(seq: list[int], phrase: Phrase) -> int:
    """How many leading tokens of ``phrase`` the row ends with (0 .. len-1)."""
    for j in range(len(phrase) - 1, 0, -1):
        if tuple(seq[-j:]) == phrase[:j]:
            return j
    return 0


def concept_phrases(table, lang: str, tokenizer) -> list[tuple[tuple[Phrase, ...], tuple[Phrase, ...]]]:
    """Per concept of ``table`` (``polycap.data.concepts.ConceptTable``), (steered, also named) token
    ids for ``lang``: steered are the singular, and with its indefinite article where the article
    carries gender (de ``eine katze``, fr ``un chat``) so the article fits; the plural only counts
    as named (steering to it gave "a cats"). A concept without a name in ``lang`` gets neither."""

    def ids(texts: list[str]) -> tuple[Phrase, ...]:
        found = {tuple(tokenizer.encode(t.lower(), add_special_tokens=False).ids) for t in texts if t}
        return tuple(sorted(p for p in found if p))

    out = []
    for concept in table:
        entry = concept.names.get(lang)
        if entry is None:
            out.append(((), ()))
            continue
        steered = [entry.sg, _with_article(entry, lang)]
        out.append((ids(steered), ids([entry.pl])))
    return out


def _with_article(entry, lang: str) -> str:
    """"eine Katze", "un chat": the singular after its article where the article carries gender; else ""."""
    return f"{entry.article} {entry.sg}" if lang in ("de", "fr") and entry.article else ""


def inner_tokens(tokenizer) -> torch.Tensor:
    """(V,) bool: the tokens of a Metaspace tokenizer that continue a word (no leading ``▁``)."""
    vocab = tokenizer.get_vocab()
    mask = torch.zeros(tokenizer.get_vocab_size(), dtype=torch.bool)
    for token, i in vocab.items():
        mask[i] = not token.startswith("▁") and token[:1].isalnum()
    return mask
