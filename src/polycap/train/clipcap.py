"""``polycap train`` with ``model.arch: clipcap``: the same loop, feature cache and checkpoints as
polycap's own models; only the model differs. One prefix adapter is trained per language of
``data.langs`` (each caption goes through its own language's mapper, in mixed batches); the LM is
frozen (``clipcap.mode: mapper``), gets peft LoRA layers (``lora``) or is fine-tuned (``full``).
Checkpoints hold only what trains, never a frozen LM.
"""

from __future__ import annotations

import logging
from typing import Any

from polycap.backends.clipcap.backend import ClipCapCaptioner
from polycap.backends.clipcap.config import ClipCapConfig, LMConfig, LoraConfig, MapperConfig, _typed
from polycap.backends.clipcap.encoders import build_encoder, feature_dim
from polycap.backends.clipcap.lm import load_lm
from polycap.backends.clipcap.model import ClipCapModel
from polycap.errors import PolycapError
from polycap.train.trainer import Trainer

log = logging.getLogger(__name__)


class ClipCapTrainer(Trainer):
    def _build_encoder(self) -> Any:
        return build_encoder(self.cfg.model.encoder)

    def _build_model(self) -> None:
        c, m = self.cfg.clipcap, self.cfg.model
        if self.cfg.scst.epochs:
            raise PolycapError("SCST is not implemented for clipcap models; set scst.epochs=0")
        lm_cfg = _typed(LMConfig, dict(c.lm), "clipcap.lm")
        lm, tok = load_lm(lm_cfg)
        self.ccfg = ClipCapConfig(
            name=m.name, languages=list(self.langs), encoder=dict(m.encoder), features=c.features,
            feature_dim=int(self.train_split.features.shape[2]), mapper=_typed(MapperConfig, dict(c.mapper), "mapper"),
            lm=lm_cfg, prompt=c.prompt, mode=c.mode, lora=_typed(LoraConfig, dict(c.lora), "clipcap.lora"),
            max_length=m.max_length, output_vocab=c.output_vocab,
        )
        self.ccfg.check()
        if getattr(self.encoder, "feature_dim", self.ccfg.feature_dim) != self.ccfg.feature_dim:
            raise PolycapError(f"cached features have {self.ccfg.feature_dim} channels, the encoder "
                               f"{feature_dim(self.encoder)}")
        self.model = ClipCapModel(self.ccfg, lm, tok)
        if c.mode == "lora":
            self.model.add_lora()
        self.pad_id = self.model.pad_id  # positions are masked; the id is never a label
        items = self.train_split.items
        self.pool = [
            (row, self._encode_caption(text, lang))
            for row, it in enumerate(items) for lang in self.langs
            for text in it.captions.get(lang, []) if text.strip()
        ]
        if c.output_vocab == "captions":  # each language: every token of its training captions
            by_lang: dict[str, set[int]] = {lang: set() for lang in self.langs}
            for _, ids in self.pool:
                by_lang[self.model.languages[ids[0]]].update(ids[1:])
            self.model.set_output_vocab(by_lang)
            log.info("clipcap: output vocabulary of %s ids",
                     ", ".join(f"{k} {len(v)}" for k, v in self.model.vocab_by_lang.items()))
        n = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        log.info("clipcap: %d trainable parameters (%s mode), %d captions", n, c.mode, len(self.pool))

    def _encode_caption(self, text: str, lang: str) -> list[int]:
        return self.model.encode_caption(text, lang)

    def val_max_tokens(self) -> int:
        return self.ccfg.max_length

    def captioner(self) -> ClipCapCaptioner:
        return ClipCapCaptioner(self.model, None, "cpu")

    def _load_weights(self, folder) -> None:  # pragma: no cover - SCST is refused above
        raise PolycapError("SCST is not implemented for clipcap models")

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def step_seconds(trainer: ClipCapTrainer, steps: int = 5, warmup: int = 1) -> float:
    """Mean wall time of one optimisation step on batches drawn as the epoch draws them (for sizing runs)."""
    import time

    from polycap.train.data import collate

    batches = trainer.epoch_plan(0)
    opt, _ = trainer._optimizer()
    trainer.model.train()
    times = []
    for i in range(warmup + steps):
        rows, owner, ids, mask = collate(batches[i % len(batches)], trainer.pad_id, trainer.mirror_offset)
        start = time.perf_counter()
        loss = trainer.model(trainer.train_features[rows].float(), ids, mask, owner=owner)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times)
