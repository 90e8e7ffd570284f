"""The recipe of polycap's own captioners (``model.arch`` transformer or lstm): a tokenizer trained on the
training captions (with language tokens), the decoder of ``model:`` (a NativeConfig completed from the
data), an optional warm start (``train.init``), the concept path (``model.concept_slots``: recognised
concepts fed with each caption, substitution augmentation; train/concepts.py) and, after
cross-entropy, self-critical sequence training (``scst.epochs``; train/scst.py).

The concept path's training options (``train.*``): ``substitute`` (and ``substitute_within``) swap a
caption's concept word and the fed concept together; ``hide_grid`` trains a share of the swapped
captions without the image grid; ``concept_weight`` weighs the swapped-in name's tokens in the loss;
``concept_lr_mult`` scales the learning rate of the concept path and the cross-attention reading it.
"""

from __future__ import annotations

import copy
import logging
import random
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from polycap.backends.native.backend import NativeCaptioner, build_encoder
from polycap.backends.native.config import NativeConfig
from polycap.backends.native.model import CaptionModel
from polycap.backends.native.tokenizer import CaptionTokenizer
from polycap.errors import PolycapError
from polycap.train.checkpoint import model_weights, tied_keys
from polycap.train.concepts import Swapped
from polycap.train.data import Unit, caption_entries, caption_pool
from polycap.train.engine import Phase, decay_groups
from polycap.train.feature_recipe import CaptionCrossEntropy, FeatureRecipe

log = logging.getLogger(__name__)


class NativeRecipe(FeatureRecipe):
    tok: CaptionTokenizer
    ncfg: NativeConfig  # the config.json of the model being trained

    def __init__(self, cfg, out, progress: bool = True, encoder: Any = None):
        super().__init__(cfg, out, progress, encoder)
        self._setup_concepts()

    def build_encoder(self) -> Any:
        return build_encoder(self.cfg.model.encoder)

    def build_model(self) -> None:
        self.tok = self._tokenizer()
        n, c = self.train_split.features.shape[1:]
        self.ncfg = replace(copy.deepcopy(self.cfg.model), languages=list(self.langs), encoder_dim=int(c),
                            grid_positions=int(n), vocab_size=self.tok.vocab_size)
        self.model = CaptionModel(self.ncfg, self.tok.pad_id, self.tok.eos_id)
        self.pad_id = self.tok.pad_id
        self.pool = caption_pool(
            self.train_split.items, list(range(len(self.train_split.items))), self.langs, self.tok, self.ncfg.max_length
        )
        self._init_weights()

    def _tokenizer(self) -> CaptionTokenizer:
        path = self.out / "tokenizer.json"
        init = self.cfg.train.init
        if init and not path.is_file():  # a warm start keeps the ids its weights were trained with
            source = Path(init).expanduser() / "tokenizer.json"
            if not source.is_file():
                raise PolycapError(f"train.init: {source} not found")
            shutil.copyfile(source, path)
        if path.is_file():  # resuming: the ids must not change
            return CaptionTokenizer.load(self.out, self.langs)
        texts = (c for it in self.train_split.items for lang in self.langs for c in it.captions.get(lang, []))
        tok = CaptionTokenizer.train(texts, self.langs, self.cfg.tokenizer.vocab_size, self.cfg.tokenizer.min_frequency)
        tok.save(self.out)
        return tok

    def _init_weights(self) -> None:
        """``train.init``: start from a model folder's weights; only the concept path may be new."""
        init = self.cfg.train.init
        if not init:
            return
        from safetensors.torch import load_file

        path = Path(init).expanduser() / "model.safetensors"
        if not path.is_file():
            raise PolycapError(f"train.init: {path} not found")
        try:
            self.load_weights(self.model, {k: v.float() for k, v in load_file(str(path)).items()}, new="concept_")
        except PolycapError as e:
            raise PolycapError(f"train.init {path}: {e}") from e
        log.warning("weights from %s", path)

    def encode_caption(self, text: str, lang: str) -> list[int]:
        return self.tok.encode(text, lang, self.ncfg.max_length)

    # ---- what a checkpoint keeps: every weight, the output layer tied to the token embedding once --
    def weights(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return model_weights(model)

    def load_weights(self, model: torch.nn.Module, weights: dict[str, torch.Tensor], new: str | None = None) -> None:
        """``new``: the prefix of weights ``weights`` may lack (they keep their fresh values)."""
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [k for k in missing if k not in tied_keys(model) and not (new and k.startswith(new))]
        if missing or unexpected:
            raise PolycapError(f"weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        model.decoder.tie_weights()

    # ---- the concept path --------------------------------------------------------------------------
    def _setup_concepts(self) -> None:
        """``model.concept_slots``: recognise every cached row's concepts once, with the encoder's
        own classifier; find the captions that substitution may swap (train/concepts.py)."""
        self.concepts = self.concept_head = None
        if not self.ncfg.concept_slots:
            return
        from polycap.backends.native.concepts import ConceptHead, ConceptSettings
        from polycap.data.concepts import load_concepts
        from polycap.train.concepts import TrainConcepts

        table = load_concepts()
        self.concept_head = ConceptHead.from_encoder(self.encoder, table.class_concept_indices(), len(table))
        settings = ConceptSettings.from_dict(self.ncfg.concepts)
        self.concepts = TrainConcepts(self.concept_head, table, self.tok, list(self.langs), self.ncfg.concept_slots,
                                      self.ncfg.concept_pieces, settings.min_prob)
        self.row_concepts = self.concepts.recognise(self.train_features)
        if self.cfg.train.substitute > 0:
            texts = [(lang, text) for _, lang, text in caption_entries(self.train_split.items, self.langs)]
            self.concepts.find_swappable(texts, self.cfg.train.substitute_within)
            log.warning("concepts: %d of %d training captions name a concept (substitution %.2f)",
                        len(self.concepts.swappable), len(texts), self.cfg.train.substitute)

    def epoch_pool(self, seed: int) -> list[tuple[int, list[int]]]:
        if self.concepts is None:
            return self.pool
        return self.concepts.epoch_pool(self.pool, self.cfg.train.substitute, seed + 2, self.encode_caption)

    def batch_inputs(self, units: list[Unit], ids: torch.Tensor, step: int) -> dict[str, Any]:
        """The concepts fed with a batch's captions (in collate's order), the captions trained without
        the grid and the loss weights of their tokens; nothing without the path."""
        if self.concepts is None:
            return {}
        extra = {"concepts": self.concepts.batch_input([
            (caption, self.row_concepts[u.row + (self.mirror_offset if u.mirrored else 0)])
            for u in units for caption in u.captions
        ])}
        hide, weight = self.hidden_grids(units, step), self.concept_token_weights(units, ids)
        if hide is not None:
            extra["hide_grid"] = hide
        if weight is not None:
            extra["token_weight"] = weight
        return extra

    def hidden_grids(self, units: list[Unit], step: int) -> torch.Tensor | None:
        """(B,) bool: the substituted captions of this batch trained without the image
        (``train.hide_grid`` of them, drawn from the step number, so a resumed run draws the same)."""
        share = self.cfg.train.hide_grid
        if self.concepts is None or share <= 0:
            return None
        rng = random.Random(self.cfg.train.seed * 1_000_003 + step)
        return torch.tensor([isinstance(ids, Swapped) and rng.random() < share
                             for u in units for ids in u.captions])

    def concept_token_weights(self, units: list[Unit], ids: torch.Tensor) -> torch.Tensor | None:
        """(B, T) loss weights: ``train.concept_weight`` on the tokens of a substituted caption that
        spell its new concept's name, 1 elsewhere; None when all would be 1."""
        w = self.cfg.train.concept_weight
        if self.concepts is None or w == 1.0:
            return None
        weight = torch.ones(ids.shape, dtype=torch.float32)
        captions = [c for u in units for c in u.captions]
        for b, c in enumerate(captions):
            if isinstance(c, Swapped):
                for t in self.concepts.name_positions(c):
                    weight[b, t] = w
        return weight

    def row_concept_input(self, rows: list[int], lang: str) -> Any:
        """The true concepts of plain training rows in ``lang`` (SCST), or None without the path."""
        if self.concepts is None:
            return None
        lang_id = self.tok.lang_id(lang)
        return self.concepts.batch_input([([lang_id], self.row_concepts[r]) for r in rows])

    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW groups; with ``train.concept_lr_mult`` the concept path and the cross-attention that
        reads it get their own, at that multiple of the learning rate."""
        fast = self.cfg.train.concept_lr_mult
        if fast == 1.0:
            return super().param_groups()
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        wd = self.cfg.train.weight_decay
        groups = (decay_groups([p for n, p in named if not _reads_concepts(n)], wd, 1.0)
                  + decay_groups([p for n, p in named if _reads_concepts(n)], wd, fast))
        return [g for g in groups if g["params"]]

    # ---- validation, phases --------------------------------------------------------------------------
    def val_max_tokens(self) -> int:
        return self.ncfg.max_length - 1

    def captioner(self) -> NativeCaptioner:
        return NativeCaptioner(self.ncfg, self.model, None, self.tok, "cpu", concept_head=self.concept_head)

    def phases(self) -> list[Phase]:
        from polycap.train.scst import Scst

        return [CaptionCrossEntropy(self), Scst(self)]


def _reads_concepts(name: str) -> bool:
    """The concept path's own parameters and the cross-attention that reads the memory."""
    return name.startswith("concept_") or ".crossattention." in name or ".ln_cross_attn." in name
