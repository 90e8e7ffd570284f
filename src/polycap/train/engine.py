"""One training loop for every model family: ``fit(recipe, run)``.

A recipe (train/native.py, train/clipcap.py, train/finetune.py) says what trains: the model and its
parameter groups, the phases of a run (each with its batches, the loss of a batch and its learning-rate
schedule), what a checkpoint keeps of the model, how the model is validated and saved. ``fit`` does
the rest, the same way for all of them::

    for each phase (cross-entropy; then SCST for polycap's own models):
        AdamW + the phase's schedule (from the checkpoint when resuming)
        until the phase's epochs are done or validation stopped improving (patience):
            for each batch of the epoch (a resumed epoch skips those done):
                train_step: forward under autocast, backward, clip, step, schedule, moving average
                every checkpoint_every steps: checkpoint
            validate (on the averaged weights); the best epoch's model -> run.best;
            a line in log.jsonl; checkpoint

Between two steps, everything ``fit`` knows is in the TrainState, which every checkpoint holds: a
killed run continues with the batch after its last checkpoint, mid-epoch included, and reproduces
the uninterrupted run (batches are deterministic in the epoch; the RNG is restored).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from polycap.backends.model_config import typed
from polycap.errors import PolycapError
from polycap.train.checkpoint import Checkpoint, FileCheckpoint, FolderCheckpoint, replace_folder

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    phase: str = "xe"  # the phase under way (Phase.name)
    epoch: int = 0  # epochs done in the first phase: what its `epochs` and early stopping count, the log's "epoch"
    phase_epoch: int = 0  # epochs done in the phase under way (in the first phase: epoch)
    step_in_epoch: int = 0  # batches done in the epoch under way
    global_step: int = 0
    best: float | None = None  # the best Validation.score so far
    best_epoch: int | None = None
    bad_epochs: int = 0  # validations since the best one
    # the epoch under way: weighted loss sum, total weight, and sums of the phase's per-step statistics
    epoch_loss_sum: float = 0.0
    epoch_loss_n: float = 0
    epoch_stats: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        """A checkpoint's state.json (those written before phases counted their own epochs too)."""
        data = dict(data)
        scst_epoch = data.pop("scst_epoch", None)
        data.setdefault("phase", "xe")
        data.setdefault("phase_epoch", scst_epoch if data["phase"] == "scst" else data.get("epoch", 0))
        return typed(cls, data, "key(s) in the train state")

    def mean_loss(self) -> float:
        return self.epoch_loss_sum / max(1, self.epoch_loss_n)

    def add_step(self, loss: float, weight: float, stats: dict[str, float]) -> None:
        self.epoch_loss_sum, self.epoch_loss_n = self.epoch_loss_sum + loss * weight, self.epoch_loss_n + weight
        for k, v in stats.items():
            self.epoch_stats[k] = self.epoch_stats.get(k, 0.0) + v
        self.step_in_epoch, self.global_step = self.step_in_epoch + 1, self.global_step + 1


@dataclass
class Validation:
    score: float  # higher is better: picks the best epoch and drives early stopping
    log: dict[str, Any]  # what log.jsonl records of it


class Phase:
    """One stage of training. A subclass gives the batches of an epoch, the loss of a batch and the
    learning-rate schedule; the constructor's settings say how ``train_step`` treats it."""

    name = "xe"  # saved in the train state
    loss_name = "loss"  # the key of the epoch's mean loss in log.jsonl

    def __init__(self, *, epochs: int, lr: float, grad_clip: float | None = None, ema: float = 0.0,
                 bf16: bool = False, patience: int = 0):
        self.epochs, self.lr, self.grad_clip = epochs, lr, grad_clip
        self.ema = ema  # > 0: a moving average of the weights (this decay per step) is validated and saved
        self.bf16 = bf16  # bf16 autocast for the loss
        self.patience = patience  # stop after this many epochs without a better validation (0: never)

    def batches(self, epoch: int) -> Sequence[Any]:
        """The batches of the phase's ``epoch`` (from 0), the same every time they are asked for."""
        raise NotImplementedError

    def loss(self, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss to minimise, and statistics of the step that the log averages over the epoch.
        ``step``: the run's global step (for random draws that a resumed run must repeat)."""
        raise NotImplementedError

    def weight(self, batch: Any) -> float:
        """How much the batch's loss counts in the epoch's mean loss."""
        return 1

    def lr_factor(self, steps_per_epoch: int) -> Callable[[int], float]:
        """The learning rate of step ``i`` of the phase is ``lr * lr_factor(steps_per_epoch)(i)``."""
        return constant

    def begin(self) -> None:
        """Called once when a run enters the phase (not when it resumes inside it)."""

    def log_fields(self, state: TrainState) -> dict[str, Any]:
        """What the phase adds to each of its log.jsonl lines."""
        return {}

    def running(self, state: TrainState) -> bool:
        stopped = self.patience and state.bad_epochs >= self.patience
        return state.phase_epoch < self.epochs and not stopped


class Recipe(Protocol):
    """What a model family tells ``fit``."""

    model: torch.nn.Module  # what trains
    device_type: str  # for autocast: "cpu", "cuda", ...

    def phases(self) -> list[Phase]: ...

    def param_groups(self) -> list[dict[str, Any]]: ...  # AdamW groups of the trainable parameters

    def weights(self, model: torch.nn.Module) -> dict[str, torch.Tensor]: ...  # what a checkpoint keeps

    def load_weights(self, model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None: ...

    def validate(self) -> Validation: ...

    def save_model(self, folder: Path) -> None: ...  # the best epoch's model (a folder polycap.load reads)

    def epoch_line(self, entry: dict[str, Any], state: TrainState) -> str: ...  # one log entry, for people


@dataclass
class Run:
    """Where ``fit`` writes and when it stops: the run folder, its checkpoint and best model."""

    out: Path  # log.jsonl is written here
    checkpoint: FolderCheckpoint | FileCheckpoint
    best: Path  # the best epoch's model folder
    checkpoint_every: int | None = None  # steps between checkpoints inside an epoch (None: epoch ends only)
    max_steps: int | None = None  # stop (with a checkpoint) after this many steps in total
    progress: bool = True
    report: Callable[[str], None] | None = None  # gets one line per epoch, and one when training stops early


# ---- the loop -------------------------------------------------------------------------------------
def fit(recipe: Recipe, run: Run, resume: bool = False) -> TrainState:
    """Train ``recipe`` through its phases; returns the final state. ``resume`` continues from
    ``run.checkpoint``; otherwise training starts afresh (and so does log.jsonl)."""
    phases = recipe.phases()
    names = [p.name for p in phases]
    if resume:
        if not run.checkpoint.exists():
            raise PolycapError(f"--resume: no checkpoint in {run.checkpoint.path}")
        state = TrainState.from_dict(run.checkpoint.read_state())
        if state.phase not in names:
            raise PolycapError(f"{run.checkpoint.path} is in phase {state.phase!r}; this run has {', '.join(names)}")
    else:
        state = TrainState(phase=names[0])
        (run.out / "log.jsonl").unlink(missing_ok=True)
    for phase in phases[names.index(state.phase):]:
        if phase.name != state.phase:
            if phase.epochs <= 0:
                continue
            phase.begin()
            state = TrainState(phase=phase.name, epoch=state.epoch, global_step=state.global_step, best=state.best,
                               best_epoch=state.best_epoch, bad_epochs=state.bad_epochs)
        opt, sched = make_optimizer(recipe, phase)
        ema = make_ema(recipe.model, phase.ema)
        if resume:  # the optimiser, schedule, averaged weights and RNG of the phase the checkpoint is in
            restore(run.checkpoint.load(ema is not None), recipe, opt, sched, ema)
            log.warning("resuming at epoch %d step %d", state.epoch, state.step_in_epoch)
            resume = False
        ran = False
        while phase.running(state):
            start = time.time()
            if not run_epoch(recipe, phase, state, run, opt, sched, ema):
                return state  # max_steps
            end_epoch(recipe, phase, phase is phases[0], state, run, opt, sched, ema, time.time() - start)
            ran = True
        if ran and state.phase_epoch < phase.epochs and run.report:
            run.report(f"early stopping: no improvement in {phase.patience} epoch(s); keeping epoch "
                       f"{state.best_epoch} ({run.best})")
    return state


def run_epoch(recipe: Recipe, phase: Phase, state: TrainState, run: Run, opt, sched, ema) -> bool:
    """The rest of the epoch under way; False when ``run.max_steps`` stopped it."""
    from rich.progress import Progress

    batches = phase.batches(state.phase_epoch)
    label = f"{phase.name} epoch {state.phase_epoch + 1}/{phase.epochs}"
    recipe.model.train()
    with Progress(disable=not run.progress, transient=True) as bar:
        task = bar.add_task(label, total=len(batches), completed=state.step_in_epoch)
        for i in range(state.step_in_epoch, len(batches)):
            if run.max_steps is not None and state.global_step >= run.max_steps:
                save_checkpoint(run, recipe, opt, sched, state, ema)
                return False
            loss, stats = train_step(recipe.model, phase, batches[i], opt, sched, ema, recipe.device_type,
                                     state.global_step)
            state.add_step(loss, phase.weight(batches[i]), stats)
            bar.update(task, advance=1, description=f"{label} loss {state.mean_loss():.3f}")
            if run.checkpoint_every and state.global_step % run.checkpoint_every == 0:
                save_checkpoint(run, recipe, opt, sched, state, ema)
    return True


def train_step(model: torch.nn.Module, phase: Phase, batch: Any, opt: torch.optim.Optimizer, sched: Any,
               ema: torch.nn.Module | None = None, device_type: str = "cpu", step: int = 0
               ) -> tuple[float, dict[str, float]]:
    """The optimisation step of every recipe and phase (and of the step benchmarks): the phase's loss
    under autocast, backward, gradient clipping, AdamW, the schedule, the moving average."""
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=phase.bf16):
        loss, stats = phase.loss(batch, step)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if phase.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), phase.grad_clip)
    opt.step()
    sched.step()
    if ema is not None:
        ema.update_parameters(model)
    return loss.item(), stats


def end_epoch(recipe: Recipe, phase: Phase, first: bool, state: TrainState, run: Run, opt, sched, ema,
              seconds: float) -> None:
    """Validate, keep the best model, write the epoch's log line and a checkpoint."""
    loss, n = state.mean_loss(), max(1, state.step_in_epoch)
    stats = {k: v / n for k, v in state.epoch_stats.items()}
    state.phase_epoch += 1
    if first:
        state.epoch = state.phase_epoch
    state.step_in_epoch, state.epoch_loss_sum, state.epoch_loss_n, state.epoch_stats = 0, 0.0, 0, {}
    with averaged(recipe.model, ema):
        val = recipe.validate()
        improved = state.best is None or val.score > state.best
        if improved:
            state.best, state.best_epoch, state.bad_epochs = val.score, state.epoch, 0
            replace_folder(run.best, recipe.save_model)
    if not improved:
        state.bad_epochs += 1
    entry = {"epoch": state.epoch, phase.loss_name: loss, **val.log, "best": improved, "seconds": round(seconds, 1),
             "lr": sched.get_last_lr()[0], **phase.log_fields(state), **stats}
    with (run.out / "log.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    save_checkpoint(run, recipe, opt, sched, state, ema)
    if run.report:
        run.report(recipe.epoch_line(entry, state))


# ---- the pieces (public: the step benchmarks build the very step fit() runs) -----------------------
def make_optimizer(recipe: Recipe, phase: Phase, steps_per_epoch: int | None = None):
    """AdamW over the recipe's parameter groups at the phase's learning rate (times a group's
    ``lr_scale``), and the phase's schedule."""
    steps = len(phase.batches(0)) if steps_per_epoch is None else steps_per_epoch
    groups = [{**{k: v for k, v in g.items() if k != "lr_scale"}, "lr": phase.lr * g["lr_scale"]}
              if "lr_scale" in g else g for g in recipe.param_groups()]
    opt = torch.optim.AdamW(groups, lr=phase.lr)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, phase.lr_factor(steps))


def decay_groups(params: list[torch.nn.Parameter], weight_decay: float, lr_scale: float | None = None
                 ) -> list[dict[str, Any]]:
    """AdamW groups of ``params``: matrices decay, biases and norms do not; ``lr_scale`` multiplies
    the phase's learning rate for them."""
    scale = {} if lr_scale is None else {"lr_scale": lr_scale}
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay, **scale},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, **scale}]


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """What trains: a frozen LM is not optimised."""
    return [p for p in model.parameters() if p.requires_grad]


def constant(step: int) -> float:
    return 1.0


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then cosine down to 10% at step ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        frac = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    return factor


def step_decay(per_epoch: int, decay: float) -> Callable[[int], float]:
    """Times ``decay`` after each epoch of ``per_epoch`` steps."""
    return lambda step: decay ** (step // per_epoch)


def make_ema(model: torch.nn.Module, decay: float) -> torch.nn.Module | None:
    """The moving average of ``model``'s weights (torch's own AveragedModel), or None for decay 0."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))


@contextmanager
def averaged(model: torch.nn.Module, ema: torch.nn.Module | None) -> Iterator[None]:
    """Inside: ``model`` holds the averaged weights (a no-op without an average)."""
    if ema is None:
        yield
        return
    live = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(ema.module.state_dict())
    try:
        yield
    finally:
        model.load_state_dict(live)


def save_checkpoint(run: Run, recipe: Recipe, opt, sched, state: TrainState, ema) -> None:
    averaged_weights = None if ema is None else {**recipe.weights(ema.module), "n_averaged": ema.n_averaged.cpu()}
    run.checkpoint.save(Checkpoint(recipe.weights(recipe.model), opt.state_dict(), sched.state_dict(),
                                   torch.get_rng_state(), asdict(state), averaged_weights))


def restore(ck: Checkpoint, recipe: Recipe, opt, sched, ema) -> None:
    recipe.load_weights(recipe.model, ck.weights)
    if ema is not None and ck.ema is not None:
        weights = dict(ck.ema)
        ema.n_averaged.copy_(weights.pop("n_averaged"))
        recipe.load_weights(ema.module, weights)
    opt.load_state_dict(ck.optimizer)
    sched.load_state_dict(ck.scheduler)
    torch.set_rng_state(ck.rng)
