"""The recipe of ClipCap prefix adapters (``model.arch: clipcap``): the same feature cache, batches,
cross-entropy phase and run folder as polycap's own models (train/feature_recipe.py); only the model
differs. One prefix adapter is trained per language of ``data.langs`` (each caption goes through its
own language's mapper, in mixed batches); the LM is frozen (``clipcap.mode: mapper``), gets peft LoRA
layers (``lora``) or is fine-tuned (``full``). Checkpoints hold only what trains, never a frozen LM.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from typing import Any

import torch

from polycap.backends.clipcap.backend import ClipCapCaptioner
from polycap.backends.clipcap.config import ClipCapConfig
from polycap.backends.clipcap.encoders import build_encoder, feature_dim
from polycap.backends.clipcap.lm import load_lm
from polycap.backends.clipcap.model import ClipCapModel
from polycap.errors import PolycapError
from polycap.train.checkpoint import detached
from polycap.train.feature_recipe import FeatureRecipe

log = logging.getLogger(__name__)


class ClipCapRecipe(FeatureRecipe):
    ccfg: ClipCapConfig  # the config.json of the model being trained
    model: ClipCapModel

    def build_encoder(self) -> Any:
        return build_encoder(self.cfg.model.encoder)

    def build_model(self) -> None:
        cfg, m = self.cfg, self.cfg.model
        for key, on in (("scst.epochs", cfg.scst.epochs), ("train.ema", cfg.train.ema), ("train.init", cfg.train.init)):
            if on:
                raise PolycapError(f"{key} is for polycap's own models; clipcap prefix adapters do not support it")
        self.ccfg = replace(copy.deepcopy(cfg.clipcap), name=m.name, languages=list(self.langs),
                            encoder=dict(m.encoder), feature_dim=int(self.train_split.features.shape[2]),
                            max_length=m.max_length)
        self.ccfg.check()
        if getattr(self.encoder, "feature_dim", self.ccfg.feature_dim) != self.ccfg.feature_dim:
            raise PolycapError(f"cached features have {self.ccfg.feature_dim} channels, the encoder "
                               f"{feature_dim(self.encoder)}")
        lm, tok = load_lm(self.ccfg.lm)
        self.model = ClipCapModel(self.ccfg, lm, tok)
        if self.ccfg.mode == "lora":
            self.model.add_lora()
        self.pad_id = self.model.pad_id  # positions are masked; the id is never a label
        items = self.train_split.items
        self.pool = [
            (row, self.encode_caption(text, lang))
            for row, it in enumerate(items) for lang in self.langs
            for text in it.captions.get(lang, []) if text.strip()
        ]
        if self.ccfg.output_vocab == "captions":  # each language: every token of its training captions
            by_lang: dict[str, set[int]] = {lang: set() for lang in self.langs}
            for _, ids in self.pool:
                by_lang[self.model.languages[ids[0]]].update(ids[1:])
            self.model.set_output_vocab(by_lang)
            log.info("clipcap: output vocabulary of %s ids",
                     ", ".join(f"{k} {len(v)}" for k, v in self.model.vocab_by_lang.items()))
        n = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        log.info("clipcap: %d trainable parameters (%s mode), %d captions", n, self.ccfg.mode, len(self.pool))

    def encode_caption(self, text: str, lang: str) -> list[int]:
        return self.model.encode_caption(text, lang)

    # ---- what a checkpoint keeps: the adapters (+ LoRA, or the fine-tuned LM), never a frozen LM -------
    def weights(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return detached(model.trainable_state_dict())

    def load_weights(self, model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
        model.load_trainable_state_dict(weights)

    def val_max_tokens(self) -> int:
        return self.ccfg.max_length

    def captioner(self) -> ClipCapCaptioner:
        return ClipCapCaptioner(self.model, None, "cpu")
