"""Tiny random ClipCap parts, built locally from a seed (no downloads): a GPT-2 with a byte-level
BPE tokenizer (as GPT-2's, "!" is id 0), the shared tiny conv encoder, and the ``clipcap-tiny-random``
registry model. Its captions are random words: it measures plumbing, not quality.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from polycap.backends.native.tiny import TINY_WORDS

EOS = "<|endoftext|>"


def tiny_tokenizer(extra_text: str = "") -> Any:
    """A byte-level BPE over the tiny words (+ ``extra_text``); like GPT-2's, id 0 is "!" and the
    only special token, ``<|endoftext|>``, is the last id. No pad token: padding is masked."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [*TINY_WORDS.values(), "a dog ! a cat , a man .\n", extra_text]
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_special_tokens([EOS])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS)


def build_tiny_gpt2(folder: Path | None = None, seed: int = 0, n_embd: int = 32, n_layer: int = 2,
                    extra_text: str = "") -> tuple[Any, Any]:
    """(GPT2LMHeadModel, tokenizer) at toy size; saved with ``save_pretrained`` when ``folder`` is given."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tiny_tokenizer(extra_text)
    eos = tok.eos_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=n_embd, n_layer=n_layer,
                                        n_head=2, bos_token_id=eos, eos_token_id=eos))
    lm.generation_config.pad_token_id = eos
    if folder is not None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        lm.save_pretrained(folder)
        tok.save_pretrained(folder)
    return lm.eval(), tok


def build_tiny_random(languages: tuple[str, ...] = ("en", "de", "fr"), seed: int = 0):
    """Return (ClipCapModel, encoder) of the tiny random captioner, deterministically."""
    from polycap.backends.clipcap.config import ClipCapConfig, MapperConfig
    from polycap.backends.clipcap.model import ClipCapModel
    from polycap.backends.encoders.tiny import TinyConvEncoder

    lm, tok = build_tiny_gpt2(seed=seed)
    cfg = ClipCapConfig(
        name="clipcap-tiny-random", languages=list(languages), encoder={"name": "tiny-conv", "dim": 16, "seed": seed},
        features="grid", feature_dim=16, mapper=MapperConfig(type="transformer", prefix_length=4, width=16,
                                                             num_layers=1, num_heads=2),
        prompt={"de": "Deutsch:"}, max_length=24,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClipCapModel(cfg, lm, tok)
    return model.eval(), TinyConvEncoder(16, seed)
