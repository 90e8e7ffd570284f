"""Tiny random Hugging Face captioners built locally (no downloads), shared by the hf/translate tests.

Each builder makes a model from its config class (hidden 32, one layer, 32x32 images), a
WordLevel ``tokenizers`` tokenizer over a few words wrapped in ``PreTrainedTokenizerFast``, and a
PIL ("slow") image processor, then ``save_pretrained``s all of it into ``folder``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

WORDS = [
    *("a", "the", "dog", "cat", "man", "woman", "red", "green", "blue", "photo", "photography", "of", "on", "in"),
    *("with", "ball", "grass", "sitting", "is", "what", "does", "image", "describe", "detail", "shown", "?"),
]
SMALL = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
VISION = {**SMALL, "image_size": 32, "patch_size": 8}


@contextlib.contextmanager
def offline_registry(*plugins: str) -> Iterator:
    """For a test module: HF_HUB_OFFLINE=1, one torch thread, and the registry with the ``hf`` plugin
    (plus ``plugins``, e.g. "translate") registered even when installed entry points predate them.
    Everything is restored afterwards, as other test modules expect."""
    import importlib

    import pytest
    import torch

    from polycap.registry import get_registry

    offline = pytest.MonkeyPatch()
    offline.setenv("HF_HUB_OFFLINE", "1")  # never touch the hub from these tests
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead on a shared CPU
    registry = get_registry()
    before = (dict(registry.backends), dict(registry.models))
    for name, module in [("hf", "polycap.backends.hf"), *((p, f"polycap.backends.{p}") for p in plugins)]:
        if name not in registry.backends:
            importlib.import_module(module).register(registry)
    try:
        yield registry
    finally:
        registry.backends, registry.models = before
        torch.set_num_threads(threads)
        offline.undo()


def word_tokenizer(specials: list[str], template: tuple[str, ...] = (), **special_kwargs):
    """A PreTrainedTokenizerFast over ``specials + WORDS``; ``template`` wraps single sequences."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([*specials, *WORDS])}
    unk = special_kwargs.get("unk_token", specials[0])
    tok = Tokenizer(WordLevel(vocab, unk_token=unk))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if template:
        single = " ".join([*(t for t in template if t != "$A")]) and " ".join(template)
        tok.post_processor = processors.TemplateProcessing(
            single=single, special_tokens=[(t, vocab[t]) for t in dict.fromkeys(template) if t != "$A"]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special_kwargs)


def _bert_tokenizer():
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[DEC]", "[MASK]"]
    return word_tokenizer(
        specials,
        ("[CLS]", "$A", "[SEP]"),
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        bos_token="[DEC]",
        mask_token="[MASK]",
    )


def build_blip(folder: Path) -> Path:
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil, BlipProcessor

    tok = _bert_tokenizer()
    torch.manual_seed(0)
    text = {
        **SMALL,
        "vocab_size": len(tok),
        "bos_token_id": 4,
        "pad_token_id": 0,
        "sep_token_id": 3,
        "eos_token_id": 3,
        "max_position_embeddings": 64,
    }
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=VISION))
    proc = BlipProcessor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tok)
    return _save(folder, model, proc)


def build_git(folder: Path) -> Path:
    import torch
    from transformers import CLIPImageProcessorPil, GitConfig, GitForCausalLM, GitProcessor

    tok = _bert_tokenizer()
    torch.manual_seed(0)
    cfg = GitConfig(
        vision_config=VISION,
        vocab_size=len(tok),
        max_position_embeddings=64,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
        **SMALL,
    )
    model = GitForCausalLM(cfg)
    image_proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return _save(folder, model, GitProcessor(image_proc, tok))


def build_vit_gpt2(folder: Path) -> Path:
    import torch
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessorPil,
    )

    tok = word_tokenizer(
        ["<|endoftext|>"], bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    torch.manual_seed(0)
    enc = ViTConfig(**VISION)
    dec = GPT2Config(
        vocab_size=len(tok),
        n_embd=32,
        n_layer=1,
        n_head=2,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
        add_cross_attention=True,
        is_decoder=True,
    )
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id = 0
    cfg.pad_token_id = 0
    cfg.eos_token_id = 0
    model = VisionEncoderDecoderModel(cfg)
    model.generation_config.decoder_start_token_id = 0
    model.generation_config.eos_token_id = 0
    model.generation_config.pad_token_id = 0
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def build_blip2(folder: Path) -> Path:
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessorPil

    specials = ["<unk>", "<pad>", "</s>", "<image>"]
    tok = word_tokenizer(
        specials, ("</s>", "$A"), unk_token="<unk>", pad_token="<pad>", bos_token="</s>", eos_token="</s>"
    )
    torch.manual_seed(0)
    text = {
        "model_type": "opt",
        "vocab_size": len(tok),
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "ffn_dim": 64,
        "num_attention_heads": 2,
        "word_embed_proj_dim": 32,
        "max_position_embeddings": 64,
        "bos_token_id": 2,
        "eos_token_id": 2,
        "pad_token_id": 1,
    }
    qformer = {**SMALL, "vocab_size": 32, "encoder_hidden_size": 32, "max_position_embeddings": 32}
    cfg = Blip2Config(
        vision_config=VISION, qformer_config=qformer, text_config=text, num_query_tokens=4, image_token_index=3
    )
    model = Blip2ForConditionalGeneration(cfg)
    proc = Blip2Processor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tok, num_query_tokens=4)
    return _save(folder, model, proc)


def _save(folder: Path, model, processor) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


BUILDERS = {"blip": build_blip, "git": build_git, "vit-gpt2": build_vit_gpt2, "blip2": build_blip2}


def build_florence2(folder: Path, image_seq_length: int = 17) -> Path:
    import torch
    from transformers import (
        CLIPImageProcessorPil,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<image>"]
    tok = word_tokenizer(
        specials,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    torch.manual_seed(0)
    vision = {
        "depths": (1, 1),
        "patch_size": (7, 3),
        "patch_stride": (4, 2),
        "patch_padding": (3, 1),
        "patch_prenorm": (False, True),
        "embed_dim": (16, 32),
        "num_heads": (2, 2),
        "num_groups": (2, 2),
        "window_size": 2,
        "projection_dim": 32,
        "max_position_embeddings": 16,
        "max_temporal_embeddings": 4,
    }
    text = {
        "model_type": "bart",
        "vocab_size": len(tok),
        "d_model": 32,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
        "max_position_embeddings": 64,
        "bos_token_id": 0,
        "pad_token_id": 1,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
        "forced_bos_token_id": None,
        "forced_eos_token_id": 2,
    }
    model = Florence2ForConditionalGeneration(Florence2Config(vision_config=vision, text_config=text, image_token_id=4))
    image_proc = CLIPImageProcessorPil(
        size={"height": 32, "width": 32},
        crop_size={"height": 32, "width": 32},
        do_center_crop=False,
        image_seq_length=image_seq_length,
    )
    return _save(folder, model, Florence2Processor(image_proc, tok))


BUILDERS["florence2"] = build_florence2


def build_marian(folder: Path) -> Path:
    """A tiny random MarianMTModel (en->de by its folder name) with a WordLevel tokenizer."""
    import torch
    from transformers import MarianConfig, MarianMTModel

    tok = word_tokenizer(["</s>", "<unk>", "<pad>"], ("$A", "</s>"), eos_token="</s>", unk_token="<unk>",
                         pad_token="<pad>")  # fmt: skip
    torch.manual_seed(0)
    cfg = MarianConfig(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                       decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                       eos_token_id=0, pad_token_id=2, decoder_start_token_id=2, forced_eos_token_id=0)  # fmt: skip
    return _save(folder, MarianMTModel(cfg), tok)


def build_m2m100(folder: Path) -> Path:
    """A tiny random M2M100 model whose vocabulary has ``__en__``/``__de__``/``__fr__`` language tokens."""
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    langs = ["__en__", "__de__", "__fr__"]
    tok = word_tokenizer(["<s>", "<pad>", "</s>", "<unk>", *langs], ("$A", "</s>"), bos_token="<s>",
                         eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                         extra_special_tokens=langs)  # fmt: skip
    torch.manual_seed(0)
    cfg = M2M100Config(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                       decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                       bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2)  # fmt: skip
    return _save(folder, M2M100ForConditionalGeneration(cfg), tok)


def build_clip_vision(folder: Path) -> Path:
    """A tiny random CLIPVisionModelWithProjection (32x32 images, projection 24) with its processor."""
    import torch
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**VISION, projection_dim=24))
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return _save(folder, model, proc)
