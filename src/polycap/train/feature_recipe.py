"""What the recipes of captioners trained on cached encoder features share (polycap's own models,
train/native.py; ClipCap prefix adapters, train/clipcap.py): the train and val splits with their
features (computed once, then cached), mirrored views (``data.flip``), each epoch's batches of
captions grouped by image (train/data.py), the cross-entropy phase, validation by BLEU-4 and CIDEr
per language, and the run folder ``polycap train`` writes:

    config.yaml     the resolved config          checkpoint/  written every checkpoint_every steps
    tokenizer.json  (polycap's own models)        log.jsonl    one line per epoch (engine.py)
    best/           the epoch with the best mean val CIDEr: a model folder polycap.load reads
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from polycap.data.features import FeatureCache
from polycap.data.manifest import ManifestItem, read_manifest
from polycap.errors import PolycapError
from polycap.train.checkpoint import FolderCheckpoint
from polycap.train.config import TrainConfig
from polycap.train.data import SIDE_WORDS, Unit, collate, epoch_batches, epoch_units, mirror_safe, mirror_units
from polycap.train.engine import Phase, Run, TrainState, Validation, decay_groups, fit, trainable, warmup_cosine
from polycap.types import GenerationOptions

log = logging.getLogger(__name__)
PER_IMAGE = 4  # captions per image in a batch unit


@dataclass
class Split:
    items: list[ManifestItem]
    features: torch.Tensor  # (n, N, C) float16, row i = items[i]
    mirrored: torch.Tensor | None = None  # the same images mirrored left to right (``data.flip``)


def load_split(cfg: TrainConfig, cache: FeatureCache, split: str, progress: bool, mirrored: bool = False) -> Split:
    """Items of ``split`` from every manifest, with features (computed once, then cached);
    ``mirrored`` also loads (and caches) each image's mirrored view."""
    items = [it for m in cfg.data.manifests for it in read_manifest(m, split=split, langs=cfg.data.langs)]
    items = [it for it in items if any(it.captions.values())]
    if not items:
        raise PolycapError(f"no {split!r} images with captions in {cfg.data.manifests}")
    cache.ensure([it.image for it in items], flip=mirrored, progress=progress)
    ok = [it for it in items
          if cache.key_for(it.image) in cache and (not mirrored or cache.key_for(it.image, flip=True) in cache)]
    if len(ok) < len(items):
        log.warning("%d %s images could not be encoded and are skipped", len(items) - len(ok), split)
    paths = [it.image for it in ok]
    return Split(ok, cache.get(paths), cache.get(paths, flip=True) if mirrored else None)


class CaptionCrossEntropy(Phase):
    """Teacher-forced cross-entropy on the training captions (``train.*``): warm-up, then cosine."""

    def __init__(self, recipe: FeatureRecipe):
        t = recipe.cfg.train
        super().__init__(epochs=t.epochs, lr=t.lr, grad_clip=t.grad_clip, ema=t.ema, bf16=t.bf16,
                         patience=t.patience)
        self.recipe, self.t = recipe, t

    def batches(self, epoch: int) -> list[list[Unit]]:
        return self.recipe.epoch_plan(self.t.seed * 1000 + epoch)

    def lr_factor(self, steps_per_epoch: int):
        return warmup_cosine(self.t.warmup_steps, max(1, self.t.epochs * steps_per_epoch))

    def loss(self, units: list[Unit], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        r = self.recipe
        rows, owner, ids, mask = collate(units, r.pad_id, r.mirror_offset)
        extra = r.batch_inputs(units, ids, step)
        feats = r.train_features[rows].float()  # (I, N, C): one row per image; owner maps captions to them
        return r.model(feats, ids, mask, owner=owner, label_smoothing=self.t.label_smoothing, **extra), {}


class FeatureRecipe:
    """The shared part; a subclass builds the encoder and the model, encodes captions, makes the
    captioner that validation decodes with, and says what a checkpoint keeps of the model."""

    device_type = "cpu"

    def __init__(self, cfg: TrainConfig, out: str | Path, progress: bool = True, encoder: Any = None):
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.train.seed)
        self.encoder = encoder if encoder is not None else self.build_encoder()
        cache = FeatureCache(Path(cfg.data.cache_dir).expanduser(), self._extraction_encoder())
        self.train_split = load_split(cfg, cache, cfg.data.train_split, progress, mirrored=cfg.data.flip)
        self.val_split = load_split(cfg, cache, cfg.data.val_split, progress)
        self.langs = cfg.data.langs or sorted({k for it in self.train_split.items for k in it.captions})
        self.build_model()
        self._setup_mirroring()

    # ---- what a model family gives ---------------------------------------------------------------
    model: torch.nn.Module
    pad_id: int  # the id padding positions hold (they are masked; never a label)
    pool: list[tuple[int, list[int]]]  # every (feature row, token ids) training pair

    def build_encoder(self) -> Any:
        raise NotImplementedError

    def build_model(self) -> None:
        """Set ``model``, ``pad_id`` and ``pool``."""
        raise NotImplementedError

    def encode_caption(self, text: str, lang: str) -> list[int]:
        """A caption's training token ids, as in ``pool``."""
        raise NotImplementedError

    def captioner(self) -> Any:
        """A captioner over the model being trained (``caption_features``, ``save``)."""
        raise NotImplementedError

    def val_max_tokens(self) -> int:
        raise NotImplementedError

    def weights(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_weights(self, model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def epoch_pool(self, seed: int) -> list[tuple[int, list[int]]]:
        """The training pairs of one epoch (polycap's own models substitute concepts here)."""
        return self.pool

    def batch_inputs(self, units: list[Unit], ids: torch.Tensor, step: int) -> dict[str, Any]:
        """What a batch feeds the model besides its features and captions (``ids``, collated):
        keyword arguments of the model's forward (polycap's concept path)."""
        return {}

    def phases(self) -> list[Phase]:
        return [CaptionCrossEntropy(self)]

    # ---- data ------------------------------------------------------------------------------------
    def _extraction_encoder(self) -> Any:
        """What computes the features the cache lacks: the encoder, on onnxruntime when
        ``data.runtime`` allows (same cache keys; see ``polycap.runtime.onnx.fast_encoder``)."""
        from polycap.runtime.onnx import fast_encoder

        return fast_encoder(self.encoder, self.cfg.data.runtime)

    def _setup_mirroring(self) -> None:
        """``data.flip``: training rows hold the plain views, then the mirrored ones (one tensor, so a
        batch is one gather), and ``mirror_unsafe_ids`` the captions that must not be shown mirrored
        (the few that name a side, and every caption of a language without a word list)."""
        split = self.train_split
        self.train_features, self.mirror_offset, self.mirror_unsafe_ids = split.features, 0, set()
        if split.mirrored is None:
            return
        n = len(split.items)
        self.train_features = torch.cat([split.features, split.mirrored])
        split.features, split.mirrored, self.mirror_offset = self.train_features[:n], None, n
        unlisted = sorted(set(self.langs) - set(SIDE_WORDS))
        if unlisted:
            log.warning("data.flip: no left/right words known for %s; their captions are never mirrored",
                        ", ".join(unlisted))
        self.mirror_unsafe_ids = {
            tuple(self.encode_caption(text, lang))
            for it in split.items for lang in self.langs for text in it.captions.get(lang, [])
            if text.strip() and not mirror_safe(text, lang)
        }

    def epoch_plan(self, seed: int, window: int | None = None) -> list[list[Unit]]:
        """One epoch's batches of units, drawn as training draws them (deterministic in ``seed``).

        ``window`` overrides ``train.bucket_window`` (the step benchmarks compare both).
        """
        t = self.cfg.train
        w = t.bucket_window if window is None else window
        units = epoch_units(self.epoch_pool(seed), PER_IMAGE, seed, by_length=w > 0)
        if self.mirror_offset:
            units = mirror_units(units, self.mirror_unsafe_ids, seed + 1)
        return epoch_batches(units, max(1, t.batch_size // PER_IMAGE), w, seed)

    def steps_per_epoch(self) -> int:
        return len(self.epoch_plan(0))

    # ---- what the engine asks ----------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        return decay_groups(trainable(self.model), self.cfg.train.weight_decay)

    def validate(self) -> Validation:
        """Greedy (or val_beams) captions of the first val_limit val images, scored per language;
        the score is the mean CIDEr over the languages."""
        from polycap.eval.evaluate import references_for
        from polycap.eval.metrics import score

        self.model.eval()
        cap = self.captioner()
        items = self.val_split.items[: self.cfg.data.val_limit or None]
        results = {}
        for lang in self.langs:
            refs = references_for(items, lang)
            rows = [i for i, it in enumerate(items) if it.key in refs]
            if not rows:
                continue
            opts = GenerationOptions(lang=lang, num_beams=self.cfg.train.val_beams,
                                     max_new_tokens=self.val_max_tokens())
            preds = {}
            for s in range(0, len(rows), 100):
                chunk = rows[s : s + 100]
                caps = cap.caption_features(self.val_split.features[chunk].float(), opts)
                preds.update({items[r].key: c.text for r, c in zip(chunk, caps)})
            m = score(refs, preds, metrics=["BLEU", "CIDEr"], lang=lang)
            results[lang] = {"BLEU-4": m["BLEU-4"], "CIDEr": m["CIDEr"], "n": len(rows)}
        self.model.train()
        cider = sum(m["CIDEr"] for m in results.values()) / max(1, len(results))
        return Validation(cider, {"val": results, "mean_cider": cider})

    def save_model(self, folder: Path, half: bool = False) -> None:
        self.captioner().save(folder, half=half)

    def epoch_line(self, entry: dict[str, Any], state: TrainState) -> str:
        per_lang = " ".join(f"{k}:{v['CIDEr']:.3f}" for k, v in entry["val"].items())
        return f"epoch {entry['epoch']}: loss {entry['loss']:.3f} val CIDEr {per_lang} ({entry['seconds']:.0f}s)"

    # ---- polycap train -------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict[str, Any]:
        """Train (or continue, ``resume``) in the run folder; returns the summary ``polycap train`` prints."""
        t = self.cfg.train
        self.cfg.save(self.out / "config.yaml")
        run = Run(self.out, FolderCheckpoint(self.out / "checkpoint"), self.out / "best", t.checkpoint_every,
                  t.max_steps, self.progress, (lambda line: print(line, flush=True)) if self.progress else None)
        state = fit(self, run, resume)
        return {"epochs": state.epoch, "scst_epochs": state.phase_epoch if state.phase == "scst" else 0,
                "steps": state.global_step, "best_mean_cider": state.best, "best_epoch": state.best_epoch,
                "out": str(self.out)}
