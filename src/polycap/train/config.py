"""Training configs are files (YAML/JSON) plus ``--set key=value`` overrides; typed here.

The resolved config is saved next to every run, so a run is reproducible from its folder alone.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from polycap.backends.clipcap.config import ClipCapConfig
from polycap.backends.model_config import typed
from polycap.backends.native.config import NativeConfig
from polycap.errors import PolycapError, check_keys


@dataclass
class DataConfig:
    manifests: list[str] = field(default_factory=list)
    langs: list[str] | None = None  # None: every language in the manifests
    train_split: str = "train"
    val_split: str = "val"
    val_limit: int | None = 500
    flip: bool = False
    cache_dir: str = "~/.cache/polycap/features"
    # what computes missing features: auto (onnxruntime when installed; bench/README.md), torch or onnx
    runtime: str = "auto"


@dataclass
class TokenizerConfig:
    vocab_size: int = 8000
    min_frequency: int = 2


@dataclass
class OptimConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 500
    label_smoothing: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    patience: int = 3
    checkpoint_every: int = 200
    val_beams: int = 1
    # > 0: batches of about equal caption length (each run of this many batches is sorted by length,
    # then the batches are shuffled): less padding per step. 0: random batches.
    bucket_window: int = 0
    max_steps: int | None = None  # stop after this many steps in total (smoke tests)
    bf16: bool = False  # bf16 autocast for the forward pass (pays off only with native bf16: bench/README.md)
    # > 0: keep an exponential moving average of the weights (this decay per step) during cross-entropy
    # training; validation, best/ and SCST's start use the averaged weights. 0: off.
    ema: float = 0.0
    # A model folder whose weights (and tokenizer) start training; weights it lacks (a new concept
    # path) start fresh. None: from scratch.
    init: str | None = None
    # With concept slots: the probability that a caption naming a concept is shown with that word
    # and the fed concept both swapped for another concept (polycap.data.substitute), per epoch.
    substitute: float = 0.0
    # > 0: only captions that name the concept within their first this many words are substituted
    # (the caption's subject: "a dog runs", not "a man in a red shirt"). 0: any mention.
    substitute_within: int = 0
    # Of the substituted captions, the share trained without the image grid (only the concepts
    # tell what the photo holds), so the decoder learns to read the concept path.
    hide_grid: float = 0.0
    # Learning-rate multiplier for the concept path and the cross-attention that reads it.
    concept_lr_mult: float = 1.0
    # Loss weight of the swapped-in concept's word in a substituted caption: it is 1 token in about
    # 50 of a batch, so at weight 1 the signal to read the concept path is faint.
    concept_weight: float = 1.0


@dataclass
class ScstConfig:
    epochs: int = 0
    lr: float = 2e-5
    samples: int = 5
    batch_size: int = 32
    langs: list[str] = field(default_factory=lambda: ["en", "de", "ar"])
    # "sample": K captions sampled from the model; "beam": the K beams of beam search (as in M2 Transformer).
    mode: str = "sample"
    # "greedy": the greedy caption's reward (Rennie et al. 2017); "mean": the mean reward of the other
    # K-1 captions of the same image (Luo 2020), which needs no extra decode.
    baseline: str = "greedy"
    lr_decay: float = 1.0  # the learning rate is multiplied by this after each SCST epoch


# The model sections are the model folder's own config (one config feeds model creation and training):
# ``model:`` is polycap's own models' NativeConfig, ``clipcap:`` the ClipCapConfig of prefix adapters
# (``model.arch: clipcap``, which takes name, encoder and max_length from ``model:``). A run fills in
# what it learns from its data, so those fields are not set in a training config.
FROM_DATA = {
    "model": ("backend", "languages", "encoder_dim", "grid_positions", "vocab_size"),
    "clipcap": ("backend", "name", "languages", "encoder", "feature_dim", "lm_width", "max_length", "model_card"),
}


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: NativeConfig = field(default_factory=NativeConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    scst: ScstConfig = field(default_factory=ScstConfig)
    clipcap: ClipCapConfig = field(default_factory=ClipCapConfig)

    def to_dict(self) -> dict[str, Any]:
        """The sections as a training config file holds them (the model sections without FROM_DATA)."""
        out = asdict(self)
        for name, derived in FROM_DATA.items():
            out[name] = {k: v for k, v in out[name].items() if k not in derived}
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")


_SECTIONS: dict[str, type] = {f.name: f.default_factory for f in fields(TrainConfig)}  # type: ignore[misc]


def section_keys(name: str) -> list[str]:
    """The keys a training config may set in section ``name``."""
    return [f.name for f in fields(_SECTIONS[name]) if f.name not in FROM_DATA.get(name, ())]


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b=value`` in place; the value is parsed as YAML (numbers, lists, booleans)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise PolycapError(f"--set needs key=value, got {assignment!r}")
    parts = key.strip().split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise PolycapError(f"--set {key}: {p!r} is not a section")
    node[parts[-1]] = _number_or_value(yaml.safe_load(raw))


def _number_or_value(value: Any) -> Any:
    """YAML 1.1 reads ``5e-5`` (no dot) as a string; users mean a number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def build_config(data: dict[str, Any]) -> TrainConfig:
    """Typed config from a plain dict; unknown sections or keys are errors that name them."""
    check_keys(data, _SECTIONS, "config section(s)")
    cfg = TrainConfig(**{name: typed(cls, data.get(name) or {}, f"key(s) in {name}", section_keys(name))
                         for name, cls in _SECTIONS.items()})
    for key, value, choices in (("scst.mode", cfg.scst.mode, ("sample", "beam")),
                                ("scst.baseline", cfg.scst.baseline, ("greedy", "mean"))):
        if value not in choices:
            raise PolycapError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
    if not 0.0 <= cfg.train.substitute <= 1.0:
        raise PolycapError(f"train.substitute is a probability in [0, 1]; got {cfg.train.substitute}")
    if not 0.0 <= cfg.train.ema < 1.0:
        raise PolycapError(f"train.ema is a decay per step in [0, 1) (0: off); got {cfg.train.ema}")
    if cfg.scst.baseline == "mean" and cfg.scst.samples < 2:
        raise PolycapError(f"scst.baseline=mean needs scst.samples >= 2; got {cfg.scst.samples}")
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML/JSON config, apply overrides, resolve manifest paths against the config file."""
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise PolycapError(f"cannot read config {path}: {e}") from e
        data = (json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)) or {}
        base = path.resolve().parent
    data = copy.deepcopy(data)
    for o in overrides or []:
        apply_override(data, o)
    cfg = build_config(data)
    cfg.data.manifests = [str((base / m).resolve()) if not Path(m).is_absolute() else m for m in cfg.data.manifests]
    if cfg.train.init and not Path(cfg.train.init).expanduser().is_absolute():
        cfg.train.init = str((base / cfg.train.init).resolve())
    lm_path = cfg.clipcap.lm.path
    if lm_path and not Path(lm_path).is_absolute() and (base / lm_path).is_dir():
        cfg.clipcap.lm.path = str((base / lm_path).resolve())  # a local LM folder beside the config
    return cfg
