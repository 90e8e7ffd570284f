"""``polycap train``: cross-entropy training of polycap's own captioners on cached encoder features.

One run folder holds everything: the resolved config, tokenizer.json, ``checkpoint/`` (written every
``checkpoint_every`` steps and at each epoch end; ``resume`` continues from it, mid-epoch included),
``log.jsonl`` (one line per epoch: loss, val BLEU-4 and CIDEr per language, time) and ``best/``, a
complete model folder (the epoch with the best mean val CIDEr) that ``polycap.load`` reads.
``model.arch: clipcap`` runs the same loop over prefix adapters (``make_trainer``; train/clipcap.py).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from polycap.backends.native.backend import NativeCaptioner, build_encoder
from polycap.backends.native.config import NativeConfig
from polycap.backends.native.model import CaptionModel
from polycap.backends.native.tokenizer import CaptionTokenizer
from polycap.data.features import FeatureCache
from polycap.data.manifest import ManifestItem, read_manifest
from polycap.errors import PolycapError
from polycap.train.checkpoint import load_checkpoint, load_weights, save_checkpoint
from polycap.train.concepts import Swapped
from polycap.train.config import TrainConfig
from polycap.train.data import (
    SIDE_WORDS,
    caption_entries,
    caption_pool,
    collate,
    epoch_batches,
    epoch_units,
    mirror_safe,
    mirror_units,
)
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


class Trainer:
    def __init__(self, cfg: TrainConfig, out: str | Path, progress: bool = True, encoder: Any = None):
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.device_type = "cpu"
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.train.seed)
        self.encoder = encoder if encoder is not None else self._build_encoder()
        cache = FeatureCache(Path(cfg.data.cache_dir).expanduser(), self._extraction_encoder())
        self.train_split = load_split(cfg, cache, cfg.data.train_split, progress, mirrored=cfg.data.flip)
        self.val_split = load_split(cfg, cache, cfg.data.val_split, progress)
        self.langs = cfg.data.langs or sorted({k for it in self.train_split.items for k in it.captions})
        self._build_model()
        self._init_weights()
        self.ema = self._make_ema()
        self._setup_mirroring()
        self._setup_concepts()

    # ---- what differs between architectures (ClipCapTrainer overrides these) -------------------
    def _build_encoder(self) -> Any:
        return build_encoder(self.cfg.model.encoder)

    def _extraction_encoder(self) -> Any:
        """What computes the features the cache lacks: the encoder, on onnxruntime when
        ``data.runtime`` allows (same cache keys; see ``polycap.export.onnx.fast_encoder``)."""
        from polycap.runtime.onnx import fast_encoder

        return fast_encoder(self.encoder, self.cfg.data.runtime)

    def _build_model(self) -> None:
        """Set tok, ncfg, model, pad_id and pool: every (feature row, token ids) training pair."""
        self.tok = self._tokenizer()
        self.ncfg = self._native_config()
        self.model = CaptionModel(self.ncfg, self.tok.pad_id, self.tok.eos_id)
        self.pad_id = self.tok.pad_id
        self.pool = caption_pool(
            self.train_split.items, list(range(len(self.train_split.items))), self.langs, self.tok, self.ncfg.max_length
        )

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

    def _native_config(self) -> NativeConfig:
        m = self.cfg.model
        n, c = self.train_split.features.shape[1:]
        return NativeConfig(
            name=m.name, arch=m.arch, languages=list(self.langs), encoder=dict(m.encoder), encoder_dim=int(c),
            grid_positions=int(n), d_model=m.d_model, n_layer=m.n_layer, n_head=m.n_head, dropout=m.dropout,
            max_length=m.max_length, vocab_size=self.tok.vocab_size, concept_slots=m.concept_slots,
            concept_pieces=m.concept_pieces, concepts=dict(m.concepts),
        )

    def _init_weights(self) -> None:
        """``train.init``: start from a model folder's weights; only the concept path may be new."""
        init = self.cfg.train.init
        if not init:
            return
        from safetensors.torch import load_file

        path = Path(init).expanduser() / "model.safetensors"
        if not path.is_file():
            raise PolycapError(f"train.init: {path} not found")
        state = {k: v.float() for k, v in load_file(str(path)).items()}
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        missing = [k for k in missing if k != "decoder.lm_head.weight" and not k.startswith("concept_")]
        if missing or unexpected:
            raise PolycapError(f"train.init {path}: does not fit model: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
        self.model.decoder.tie_weights()
        log.warning("weights from %s", path)

    def _setup_concepts(self) -> None:
        """``model.concept_slots``: recognise every cached row's concepts once, with the encoder's
        own classifier; find the captions that substitution may swap (train/concepts.py)."""
        self.concepts = self.concept_head = None
        if not getattr(getattr(self, "ncfg", None), "concept_slots", 0):
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
            self.concepts.find_swappable(texts, getattr(self.cfg.train, "substitute_within", 0))
            log.warning("concepts: %d of %d training captions name a concept (substitution %.2f)",
                        len(self.concepts.swappable), len(texts), self.cfg.train.substitute)

    def _encode_caption(self, text: str, lang: str) -> list[int]:
        """A caption's training token ids, as in ``self.pool``."""
        return self.tok.encode(text, lang, self.ncfg.max_length)

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
            tuple(self._encode_caption(text, lang))
            for it in split.items for lang in self.langs for text in it.captions.get(lang, [])
            if text.strip() and not mirror_safe(text, lang)
        }

    def _make_ema(self) -> Any:
        """The moving average of the weights (``train.ema`` > 0), with torch's own AveragedModel."""
        if not self.cfg.train.ema:
            return None
        if hasattr(self.model, "trainable_state_dict"):
            raise PolycapError("train.ema is for polycap's own models; prefix adapters (clipcap) do not support it")
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        return AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(self.cfg.train.ema))

    @contextmanager
    def ema_weights(self):
        """Inside: the model holds the averaged weights (a no-op without ``train.ema``)."""
        if self.ema is None:
            yield
            return
        live = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.ema.module.state_dict())
        try:
            yield
        finally:
            self.model.load_state_dict(live)

    # ---- the loop ------------------------------------------------------------------------------
    def epoch_plan(self, seed: int, window: int | None = None) -> list:
        """One epoch's batches of units, drawn as training draws them (deterministic in ``seed``).

        ``window`` overrides ``train.bucket_window`` (the step benchmarks compare both).
        """
        t = self.cfg.train
        w = t.bucket_window if window is None else window
        pool = self.pool
        if self.concepts is not None:
            pool = self.concepts.epoch_pool(pool, t.substitute, seed + 2, self._encode_caption)
        units = epoch_units(pool, PER_IMAGE, seed, by_length=w > 0)
        if self.mirror_offset:
            units = mirror_units(units, self.mirror_unsafe_ids, seed + 1)
        return epoch_batches(units, max(1, t.batch_size // PER_IMAGE), w, seed)

    def steps_per_epoch(self) -> int:
        return len(self.epoch_plan(0))

    def _optimizer(self, scst: bool = False):
        """AdamW and its schedule: cross-entropy (warm-up + cosine) or SCST (``scst.lr``, times
        ``scst.lr_decay`` after each SCST epoch)."""
        t = self.cfg.train
        base_lr = self.cfg.scst.lr if scst else t.lr
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]  # a frozen LM is not optimised
        fast = getattr(t, "concept_lr_mult", 1.0)
        groups = []
        for is_fast in (False, True):
            chosen = [(n, p) for n, p in named if (fast != 1.0 and _reads_concepts(n)) == is_fast]
            lr = base_lr * (fast if is_fast else 1.0)
            groups += [{"params": [p for _, p in chosen if p.ndim >= 2], "weight_decay": t.weight_decay, "lr": lr},
                       {"params": [p for _, p in chosen if p.ndim < 2], "weight_decay": 0.0, "lr": lr}]
        opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=base_lr)
        if scst:
            per_epoch, factor = len(self._scst_batches(0)), self.cfg.scst.lr_decay
            return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: factor ** (step // per_epoch))
        total = max(1, t.epochs * self.steps_per_epoch())

        def lr_at(step: int) -> float:  # linear warm-up, then cosine down to 10%
            if step < t.warmup_steps:
                return (step + 1) / t.warmup_steps
            frac = min(1.0, (step - t.warmup_steps) / max(1, total - t.warmup_steps))
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_at)

    def run(self, resume: bool = False) -> dict[str, Any]:
        t = self.cfg.train
        self.cfg.save(self.out / "config.yaml")
        state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best": None, "bad_epochs": 0}
        ckpt = self.out / "checkpoint"
        if resume and not (ckpt / "state.json").is_file():
            raise PolycapError(f"--resume: no checkpoint in {ckpt}")
        in_scst = resume and json.loads((ckpt / "state.json").read_text()).get("phase") == "scst"
        opt, sched = self._optimizer(scst=in_scst)  # the schedule the checkpoint was written with
        if in_scst:
            self.ema = None  # SCST trains without the average (it starts from the averaged best/)
        if resume:
            state = load_checkpoint(ckpt, self.model, opt, sched, self.ema)
            log.warning("resuming at epoch %d step %d", state["epoch"], state["step_in_epoch"])
        while state["epoch"] < t.epochs and state["bad_epochs"] < t.patience and state.get("phase") != "scst":
            start = time.time()
            batches = self.epoch_plan(t.seed * 1000 + state["epoch"])
            loss = self._train_epoch(batches, opt, sched, state, ckpt)
            if loss is None:  # max_steps reached mid-epoch
                break
            with self.ema_weights():
                metrics = self.validate()
            self._end_epoch(state, loss, metrics, time.time() - start, opt, sched, ckpt)
        else:
            if state.get("scst_epoch", 0) < self.cfg.scst.epochs:
                self._run_scst(state, ckpt, opt, sched)
        return self._summary(state)

    # ---- self-critical sequence training ------------------------------------------------------
    def _run_scst(self, state, ckpt, opt, sched) -> None:
        from rich.progress import Progress

        from polycap.eval.evaluate import references_for
        from polycap.train.scst import CiderReward, mean, scst_step

        s = self.cfg.scst
        if state.get("phase") != "scst":  # start from the best cross-entropy epoch
            self._load_weights(self.out / "best")
            self.ema = None
            shutil.rmtree(self.out / "best-xe", ignore_errors=True)
            shutil.copytree(self.out / "best", self.out / "best-xe")
            opt, sched = self._optimizer(scst=True)
            state.update(phase="scst", scst_epoch=0, step_in_epoch=0)
        items = self.train_split.items
        rewards = {x: CiderReward(references_for(items, x), x) for x in self._scst_langs()}
        while state["scst_epoch"] < s.epochs:
            start = time.time()
            batches = self._scst_batches(state["scst_epoch"])
            stats = []
            with Progress(disable=not self.progress, transient=True) as bar:
                task = bar.add_task(f"scst epoch {state['scst_epoch'] + 1}", total=len(batches),
                                    completed=state["step_in_epoch"])
                for i in range(state["step_in_epoch"], len(batches)):
                    lang, chunk = batches[i]
                    stats.append(scst_step(self, lang, chunk, rewards[lang], s.samples, opt, s.mode, s.baseline))
                    sched.step()
                    state.update(step_in_epoch=i + 1, global_step=state["global_step"] + 1)
                    bar.update(task, advance=1, description=f"scst epoch {state['scst_epoch'] + 1} "
                               f"reward {mean([x['reward'] for x in stats[-50:]]):.3f}")
                    if state["global_step"] % self.cfg.train.checkpoint_every == 0:
                        save_checkpoint(ckpt, self.model, opt, sched, state, self.ema)
            metrics = self.validate()
            state["scst_epoch"] += 1
            extra = {"phase": "scst", "scst_epoch": state["scst_epoch"],
                     "reward": mean([x["reward"] for x in stats]), "baseline": mean([x["baseline"] for x in stats])}
            state["epoch"] -= 1  # _end_epoch counts epochs; SCST epochs are counted separately
            self._end_epoch(state, mean([x["loss"] for x in stats]), metrics, time.time() - start, opt, sched,
                            ckpt, extra)

    def _scst_langs(self) -> list[str]:
        return [x for x in self.cfg.scst.langs if x in self.langs]

    def _scst_batches(self, epoch: int) -> list[tuple[str, list[int]]]:
        from polycap.train.scst import scst_batches

        items = self.train_split.items
        rows = {x: [i for i, it in enumerate(items) if it.captions.get(x)] for x in self._scst_langs()}
        return scst_batches(rows, self.cfg.scst.batch_size, self.cfg.train.seed * 1000 + 777 + epoch)

    def _load_weights(self, folder: Path) -> None:
        load_weights(folder / "model.safetensors", self.model)

    def _train_epoch(self, batches, opt, sched, state, ckpt) -> float | None:
        from rich.progress import Progress

        t = self.cfg.train
        self.model.train()
        total, count = state.get("epoch_loss_sum", 0.0), state.get("epoch_loss_n", 0)
        with Progress(disable=not self.progress, transient=True) as bar:
            task = bar.add_task(f"epoch {state['epoch'] + 1}", total=len(batches), completed=state["step_in_epoch"])
            for i in range(state["step_in_epoch"], len(batches)):
                if t.max_steps is not None and state["global_step"] >= t.max_steps:
                    save_checkpoint(ckpt, self.model, opt, sched, state, self.ema)
                    return None
                rows, owner, ids, mask = collate(batches[i], self.pad_id, self.mirror_offset)
                feats = self.train_features[rows].float()
                concepts = self.batch_concepts(batches[i])
                with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=t.bf16):
                    extra = {"concepts": concepts} if concepts is not None else {}
                    hide = self.hidden_grids(batches[i], state["global_step"])
                    if hide is not None:
                        extra["hide_grid"] = hide
                    weight = self.concept_token_weights(batches[i], ids)
                    if weight is not None:
                        extra["token_weight"] = weight
                    loss = self.model(feats, ids, mask, owner=owner, label_smoothing=t.label_smoothing, **extra)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
                opt.step()
                sched.step()
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
                total, count = total + loss.item(), count + 1
                state.update(step_in_epoch=i + 1, global_step=state["global_step"] + 1,
                             epoch_loss_sum=total, epoch_loss_n=count)
                bar.advance(task)
                if state["global_step"] % t.checkpoint_every == 0:
                    save_checkpoint(ckpt, self.model, opt, sched, state, self.ema)
        return total / max(1, count)

    def batch_concepts(self, units) -> Any:
        """The concepts fed with a batch's captions (in collate's order), or None without the path."""
        if self.concepts is None:
            return None
        return self.concepts.batch_input([
            (ids, self.row_concepts[u.row + (self.mirror_offset if u.mirrored else 0)])
            for u in units for ids in u.captions
        ])

    def hidden_grids(self, units, step: int) -> Any:
        """(B,) bool: the substituted captions of this batch trained without the image
        (``train.hide_grid`` of them, drawn from the step number, so a resumed run draws the same)."""
        share = getattr(self.cfg.train, "hide_grid", 0.0)
        if self.concepts is None or share <= 0:
            return None
        import random

        rng = random.Random(self.cfg.train.seed * 1_000_003 + step)
        return torch.tensor([isinstance(ids, Swapped) and rng.random() < share
                             for u in units for ids in u.captions])

    def concept_token_weights(self, units, ids: torch.Tensor) -> Any:
        """(B, T) loss weights: ``train.concept_weight`` on the tokens of a substituted caption that
        spell its new concept's name, 1 elsewhere; None when all would be 1."""
        w = getattr(self.cfg.train, "concept_weight", 1.0)
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

    def val_max_tokens(self) -> int:
        return self.ncfg.max_length - 1

    def captioner(self) -> NativeCaptioner:
        return NativeCaptioner(self.ncfg, self.model, None, self.tok, "cpu",
                               concept_head=getattr(self, "concept_head", None))

    def validate(self) -> dict[str, dict[str, float]]:
        """Greedy (or val_beams) captions of the first val_limit val images, scored per language."""
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
            opts = GenerationOptions(
                lang=lang, num_beams=self.cfg.train.val_beams, max_new_tokens=self.val_max_tokens()
            )
            preds = {}
            for s in range(0, len(rows), 100):
                chunk = rows[s : s + 100]
                caps = cap.caption_features(self.val_split.features[chunk].float(), opts)
                preds.update({items[r].key: c.text for r, c in zip(chunk, caps)})
            m = score(refs, preds, metrics=["BLEU", "CIDEr"], lang=lang)
            results[lang] = {"BLEU-4": m["BLEU-4"], "CIDEr": m["CIDEr"], "n": len(rows)}
        self.model.train()
        return results

    def _end_epoch(self, state, loss, metrics, seconds, opt, sched, ckpt, extra: dict | None = None) -> None:
        cider = sum(m["CIDEr"] for m in metrics.values()) / max(1, len(metrics))
        improved = state["best"] is None or cider > state["best"]
        state["epoch"] += 1
        state.update(step_in_epoch=0, epoch_loss_sum=0.0, epoch_loss_n=0)
        if improved:
            state.update(best=cider, bad_epochs=0, best_epoch=state["epoch"])
            with self.ema_weights():
                self.save_model(self.out / "best")
        else:
            state["bad_epochs"] += 1
        entry = {"epoch": state["epoch"], "loss": loss, "val": metrics, "mean_cider": cider,
                 "best": improved, "seconds": round(seconds, 1), "lr": sched.get_last_lr()[0], **(extra or {})}
        with (self.out / "log.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        save_checkpoint(ckpt, self.model, opt, sched, state, self.ema)
        if self.progress:
            per_lang = " ".join(f"{k}:{v['CIDEr']:.3f}" for k, v in metrics.items())
            print(f"epoch {state['epoch']}: loss {loss:.3f} val CIDEr {per_lang} ({seconds:.0f}s)", flush=True)

    def save_model(self, folder: Path, half: bool = False) -> None:
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.captioner().save(tmp, half=half)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)

    def _summary(self, state) -> dict[str, Any]:
        return {"epochs": state["epoch"], "scst_epochs": state.get("scst_epoch", 0), "steps": state["global_step"],
                "best_mean_cider": state["best"],
                "best_epoch": state.get("best_epoch"), "out": str(self.out)}


def _reads_concepts(name: str) -> bool:
    """The concept path's own parameters and the cross-attention that reads the memory."""
    return name.startswith("concept_") or ".crossattention." in name or ".ln_cross_attn." in name


def make_trainer(cfg: TrainConfig, out: str | Path, progress: bool = True, encoder: Any = None) -> Trainer:
    """The trainer for ``cfg.model.arch``: polycap's own models, or ``clipcap`` prefix adapters."""
    if cfg.model.arch == "clipcap":
        from polycap.train.clipcap import ClipCapTrainer

        return ClipCapTrainer(cfg, out, progress=progress, encoder=encoder)
    return Trainer(cfg, out, progress=progress, encoder=encoder)
