"""LoRA fine-tuning of ``hf:`` captioners on a caption manifest, with validation and early stopping.

    result = finetune(FinetuneConfig(model="hf:/models/blip", data="captions.jsonl", out="runs/blip-lora"))
    polycap.load("runs/blip-lora")          # base model + best adapter, merged at load time

The run folder holds ``config.json`` (``{"backend": "hf", "base_model": ..., "adapter": "adapter"}``,
so ``polycap.load(DIR)`` works), ``adapter/`` (the best epoch's LoRA weights), ``last.pt`` (the
resumable checkpoint: LoRA weights, optimizer, RNG, train state), ``log.jsonl`` (one line per epoch)
and, with ``merge=True``, ``merged/`` (a plain transformers model the config then points to).

The loop is the engine's (train/engine.py); this is the recipe. Per architecture, only what differs
is here: the default LoRA target modules and how a batch of (image, caption) pairs becomes model
inputs with ``labels`` (padding masked by the attention mask, never by a token id: GPT-2 pads with
its end-of-text token, which must still be learned).
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from polycap.errors import MissingDependencyError, OptionError, PolycapError
from polycap.train.checkpoint import FileCheckpoint
from polycap.train.engine import Phase, Run, TrainState, Validation, fit

log = logging.getLogger(__name__)

# model_type -> attention projections LoRA adapts by default (those present in the model are used)
TARGET_MODULES = {
    "blip": ("query", "value", "qkv"),
    "blip-2": ("q_proj", "v_proj", "q", "v"),  # OPT or Flan-T5 language model
    "git": ("query", "value"),
    "vision-encoder-decoder": ("c_attn", "query", "value", "q_proj", "v_proj"),  # GPT-2 / BERT / ViT
    "florence2": ("q_proj", "v_proj"),
}
METRICS = ("loss", "cider")


@dataclass
class FinetuneConfig:
    model: str
    data: str | Path
    out: str | Path
    lang: str = "en"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] | str = "auto"
    epochs: int = 3
    lr: float = 1e-4
    batch_size: int = 8
    early_stopping_patience: int = 2
    eval_metric: str = "loss"
    val_fraction: float = 0.1  # used only when the manifest has no "val" split
    max_val_items: int | None = None
    seed: int = 0
    merge: bool = False
    device: str = "auto"

    def __post_init__(self) -> None:
        self.eval_metric = self.eval_metric.lower()
        if self.eval_metric not in METRICS:
            raise OptionError(f"eval_metric must be one of {', '.join(METRICS)} (CIDEr), got {self.eval_metric!r}")
        for name in ("lora_r", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise OptionError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.early_stopping_patience < 0:
            raise OptionError("early_stopping_patience must be >= 0 (0 = never stop early)")


class LoraRecipe:
    """The recipe of ``hf:`` captioners: peft LoRA layers on the attention projections are what trains
    (and what a checkpoint keeps); a batch's loss is the model's own on (image, caption) pairs; the
    best epoch (lowest val loss, or highest val CIDEr) is kept as ``adapter/``."""

    def __init__(self, cfg: FinetuneConfig):
        torch, peft = _require()
        from polycap.backends.hf.backend import load_hf

        self.cfg, self.out = cfg, Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        self.base_ref = cfg.model.removeprefix("hf:")
        self.captioner = load_hf(self.base_ref, device=cfg.device)
        self.captioner.capabilities = replace(self.captioner.capabilities, languages=(cfg.lang,))  # it learns cfg.lang
        self.device_type = torch.device(self.captioner.device).type  # for autocast (off: LoRA trains in full precision)
        self.train, self.val = split_data(cfg)
        self.targets = resolve_targets(self.captioner.model, _model_type(self.captioner), cfg.target_modules)
        lora = peft.LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                               target_modules=self.targets, bias="none")  # fmt: skip
        self.model = peft.get_peft_model(self.captioner.model, lora)  # injects LoRA layers into captioner.model

    def phases(self) -> list[Phase]:
        return [LoraPhase(self)]

    def param_groups(self) -> list[dict[str, Any]]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return [{"params": params, "weight_decay": 0.01}]  # AdamW's default decay, on every LoRA weight

    def weights(self, model) -> dict[str, Any]:
        return {k: v.detach().cpu() for k, v in model.state_dict().items() if "lora_" in k}

    def load_weights(self, model, weights: dict[str, Any]) -> None:
        model.load_state_dict(weights, strict=False)

    def validate(self) -> Validation:
        record = {"val_loss": _val_loss(self.captioner, self.model, self.val, self.cfg.batch_size)}
        if self.cfg.eval_metric == "cider":
            record["val_cider"] = _val_cider(self.captioner, self.val, self.cfg)
            return Validation(record["val_cider"], record)
        return Validation(-record["val_loss"], record)

    def save_model(self, folder: Path) -> None:
        self.model.save_pretrained(folder)

    def epoch_line(self, entry: dict[str, Any], state: TrainState) -> str:
        values = " ".join(f"{k}={entry[k]:.4f}" for k in ("train_loss", "val_loss", "val_cider") if k in entry)
        verdict = "best so far" if entry["best"] else \
            f"no improvement ({state.bad_epochs}/{self.cfg.early_stopping_patience})"
        return f"epoch {entry['epoch']}/{self.cfg.epochs}: {values} -> {verdict}"


class LoraPhase(Phase):
    """Cross-entropy on the (image, caption) pairs, reshuffled each epoch, at a constant ``lr``."""

    loss_name = "train_loss"

    def __init__(self, recipe: LoraRecipe):
        cfg = recipe.cfg
        super().__init__(epochs=cfg.epochs, lr=cfg.lr, patience=cfg.early_stopping_patience)
        self.recipe = recipe

    def batches(self, epoch: int) -> list[list[tuple[Path, str]]]:
        cfg = self.recipe.cfg
        pairs = _shuffled(self.recipe.train, random.Random(cfg.seed * 1000 + epoch + 1))
        return [pairs[i : i + cfg.batch_size] for i in range(0, len(pairs), cfg.batch_size)]

    def loss(self, batch: list[tuple[Path, str]], step: int):
        paths, caps = zip(*batch)
        r = self.recipe
        return r.model(**train_inputs(r.captioner, _images(list(paths)), list(caps))).loss, {}

    def weight(self, batch: list[tuple[Path, str]]) -> float:
        return len(batch)


def finetune(
    cfg: FinetuneConfig, progress: bool = True, resume: bool = False, report: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Train LoRA adapters; keep the best epoch's adapter in ``cfg.out``. Returns a summary.

    ``report`` gets one line per epoch and one when early stopping ends the run (the CLI prints them).
    """
    recipe = LoraRecipe(cfg)
    out = recipe.out
    (out / "finetune.json").write_text(json.dumps({**asdict(cfg), "data": str(cfg.data), "out": str(out),
                                                   "target_modules": recipe.targets}, indent=2))  # fmt: skip
    run = Run(out, FileCheckpoint(out / "last.pt"), out / "adapter", progress=progress, report=report or log.info)
    state = fit(recipe, run, resume=resume and run.checkpoint.exists())
    history = [json.loads(x) for x in (out / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    _write_model_config(out, cfg, recipe.base_ref, recipe.captioner)
    if cfg.merge:
        _merge(out, recipe.base_ref, recipe.captioner)
    return {"out": str(out), "best_epoch": state.best_epoch, "epochs_run": state.epoch,
            "stopped_early": state.epoch < cfg.epochs, "metric": cfg.eval_metric, "history": history,
            "target_modules": recipe.targets, "merged": cfg.merge}  # fmt: skip


# ---- data ------------------------------------------------------------------------------------
def split_data(cfg: FinetuneConfig) -> tuple[list[tuple[Path, str]], list[tuple[Path, list[str]]]]:
    """(image, caption) training pairs and (image, references) validation items in ``cfg.lang``."""
    from polycap.data.manifest import read_manifest

    items = [it for it in read_manifest(cfg.data, langs=[cfg.lang]) if it.captions.get(cfg.lang)]
    if not items:
        raise PolycapError(f"{cfg.data} has no captions in {cfg.lang!r}")
    val_items = [it for it in items if it.split in ("val", "validation", "dev")]
    train_items = [it for it in items if it.split in (None, "train")]
    if not val_items:  # hold out a seeded fraction of the training images
        shuffled = _shuffled(train_items, random.Random(cfg.seed))
        n_val = max(1, round(len(shuffled) * cfg.val_fraction)) if len(shuffled) > 1 else 0
        val_items, train_items = shuffled[:n_val], shuffled[n_val:]
    if not train_items or not val_items:
        raise PolycapError(f"{cfg.data}: need training and validation images (split train/val), got "
                           f"{len(train_items)} train and {len(val_items)} val")  # fmt: skip
    if cfg.max_val_items:
        val_items = val_items[: cfg.max_val_items]
    train = [(it.image, c) for it in train_items for c in it.captions[cfg.lang]]
    return train, [(it.image, it.captions[cfg.lang]) for it in val_items]


def _shuffled(items: list, rng: random.Random) -> list:
    items = list(items)
    rng.shuffle(items)
    return items


def _images(paths: list[Path]) -> list:
    from polycap.images import load_image

    return [load_image(p) for p in paths]


# ---- per-architecture inputs -----------------------------------------------------------------
def _model_type(captioner) -> str:
    return str(captioner.model.config.model_type)


def resolve_targets(model, model_type: str, requested: list[str] | str) -> list[str]:
    """LoRA target module names: the architecture's defaults (``auto``) or the requested ones, if present."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    wanted = (
        TARGET_MODULES.get(model_type, ())
        if requested == "auto"
        else tuple([m.strip() for m in requested.split(",")] if isinstance(requested, str) else requested)
    )
    found = [m for m in wanted if m in names]
    if not found:
        raise OptionError(f"none of the LoRA target modules {list(wanted)} exist in this {model_type} model")
    return found


def train_inputs(captioner, images: list, captions: list[str]) -> dict[str, Any]:
    """Model inputs with ``labels`` for one batch; padding is masked (-100) by the attention mask."""
    import torch

    fam, tok = captioner.family.prompt_mode, captioner.tokenizer
    side, tok.padding_side = tok.padding_side, "right"
    cut = {"truncation": True, "max_length": max_text_tokens(captioner.model)}  # long real captions must fit
    try:
        if captioner.family.model_class.startswith("Blip2"):
            enc = captioner.processor(images=images, text=[c + (tok.eos_token or "") for c in captions],
                                      return_tensors="pt", padding=True)  # fmt: skip
            labels = enc["input_ids"].clone()
            labels[labels == captioner.model.config.image_token_id] = -100  # query-token placeholders
        elif fam == "processor" or fam == "bos_prefix":  # BLIP, GIT: [CLS] caption [SEP]
            enc = captioner.processor(images=images, text=captions, return_tensors="pt", padding=True, **cut)
            if fam == "processor":  # BLIP generates from [DEC] (bos), not [CLS]: train from what it generates from
                enc["input_ids"][:, 0] = captioner.model.config.text_config.bos_token_id
            labels = enc["input_ids"].clone()
        else:  # encoder-decoders: the labels are the caption; the model shifts them right itself
            if fam == "task":
                enc = captioner.processor(images=images, text=[captioner.prompt] * len(images), return_tensors="pt")
            else:
                enc = {"pixel_values": captioner.image_processor(images, return_tensors="pt")["pixel_values"]}
            ids = [_with_eos(tok(c, truncation=True, max_length=cut["max_length"] - 1)["input_ids"], tok.eos_token_id)
                   for c in captions]  # fmt: skip
            width = max(map(len, ids))
            labels = torch.tensor([i + [-100] * (width - len(i)) for i in ids])
            return _to(captioner, {**enc, "labels": labels})
        labels[enc["attention_mask"] == 0] = -100
        return _to(captioner, {**enc, "labels": labels})
    finally:
        tok.padding_side = side


def max_text_tokens(model) -> int:
    """The text positions the captioning decoder has (BLIP/Florence text_config, GIT, GPT-2 decoder); 512 if unknown."""
    cfg = model.config
    for sub in (getattr(cfg, "text_config", None), getattr(cfg, "decoder", None), cfg):
        value = getattr(sub, "max_position_embeddings", None) if sub is not None else None
        if isinstance(value, int) and value > 2:
            return value
    return 512


def _with_eos(ids: list[int], eos: int | None) -> list[int]:
    return ids + [eos] if eos is not None and (not ids or ids[-1] != eos) else ids


def _to(captioner, batch: dict[str, Any]) -> dict[str, Any]:
    dtype = next(captioner.model.parameters()).dtype
    return {k: v.to(captioner.device, dtype) if v.is_floating_point() else v.to(captioner.device)
            for k, v in dict(batch).items() if hasattr(v, "to")}  # fmt: skip


# ---- validation ------------------------------------------------------------------------------
def _val_loss(captioner, model, val, batch_size: int) -> float:
    import torch

    model.eval()
    pairs = [(p, c) for p, refs in val for c in refs]
    total, n = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(pairs), batch_size):
            paths, caps = zip(*pairs[i : i + batch_size])
            loss = model(**train_inputs(captioner, _images(list(paths)), list(caps))).loss
            total, n = total + float(loss) * len(caps), n + len(caps)
    return total / max(n, 1)


def _val_cider(captioner, val, cfg: FinetuneConfig) -> float:
    from polycap.eval.metrics.cider import cider_d

    captioner.model.eval()
    caps = captioner.caption_many([p for p, _ in val], batch_size=cfg.batch_size, lang=cfg.lang, max_new_tokens=30)
    hyps = [_norm(c.text) for c in caps]
    return float(cider_d(hyps, [[_norm(r) for r in refs] for _, refs in val])[0])


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


# ---- outputs ---------------------------------------------------------------------------------
def _write_model_config(out: Path, cfg: FinetuneConfig, base_ref: str, captioner) -> None:
    base = Path(base_ref).expanduser()
    config = {
        "backend": "hf",
        "base_model": str(base.resolve()) if base.is_dir() else base_ref,
        "adapter": "adapter",
        "languages": [cfg.lang],
        "prompt": captioner.prompt,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def _merge(out: Path, base_ref: str, captioner) -> None:
    """Save base + best adapter as one plain transformers model in ``out/merged`` and point config.json at it."""
    from polycap.backends.hf.backend import load_hf

    merged = load_hf(str(out), device="cpu")  # base + best adapter, merged at load
    merged.model.save_pretrained(out / "merged")
    (merged.processor or merged.tokenizer).save_pretrained(out / "merged")
    if merged.processor is None:
        merged.image_processor.save_pretrained(out / "merged")
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    config.update(base_model="merged", adapter=None)
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def _require() -> tuple[Any, Any]:
    from polycap.backends.torch_utils import require_torch

    torch = require_torch()
    try:
        import peft
    except ImportError as e:
        raise MissingDependencyError("peft", "hf", "LoRA fine-tuning") from e
    return torch, peft
