"""The tiny random variant of polycap's own captioner: the real architecture at toy size.

``polycap-tiny-random`` is a registry entry (as timm and open_clip do it), built from a fixed
seed with no download, so the contract tests, CLI tests and evaluation tests exercise the real
code path in milliseconds. Its captions are random words: it measures plumbing, not quality.
"""

from __future__ import annotations

import torch

from polycap.backends.encoders.tiny import TinyConvEncoder

TINY_WORDS = {
    "en": "a the dog cat man woman child runs sits on in with grass water street red blue ball .",
    "de": "ein eine der die das hund katze mann frau kind läuft sitzt auf im mit gras wasser .",
    "ar": "كلب قطة رجل امرأة طفل يركض يجلس على في مع العشب الماء الشارع أحمر أزرق كرة",
    "fr": "un une le la chien chat homme femme enfant court assis sur dans avec herbe eau rue .",
    "cs": "pes kočka muž žena dítě běží sedí na v s trávě vodě ulici červený modrý míč .",
}


def build_tiny_random(languages: tuple[str, ...] = tuple(TINY_WORDS), seed: int = 0):
    """Return (config, model, encoder, tokenizer) of the tiny random captioner, deterministically."""
    from polycap.backends.native.config import NativeConfig
    from polycap.backends.native.model import CaptionModel
    from polycap.backends.native.tokenizer import CaptionTokenizer

    corpus = [TINY_WORDS.get(lang, "") for lang in languages]
    tok = CaptionTokenizer.train(corpus, languages, vocab_size=300, min_frequency=1)
    cfg = NativeConfig(
        name="polycap-tiny-random",
        languages=list(languages),
        encoder={"name": "tiny-conv", "dim": 16, "seed": seed},
        encoder_dim=16,
        grid_positions=16,
        d_model=32,
        n_layer=2,
        n_head=2,
        dropout=0.0,
        max_length=40,
        vocab_size=tok.vocab_size,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = TinyConvEncoder(cfg.encoder_dim, seed)
        model = CaptionModel(cfg, tok.pad_id, tok.eos_id)
    return cfg, model.eval(), encoder, tok
