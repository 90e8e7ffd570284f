"""The local batch engine: stream the inputs, decode ahead in threads, caption in batches, write.

``run_job(config)`` is the whole job. It reads every output's state first, so the same command run
again (after a finish, a crash or ``kill -9``) only captions what some output still lacks; images
whose every output is done are passed over without being opened. Decoding runs in ``workers``
threads (Pillow releases the GIL while decoding) at most ``prefetch`` images ahead of the model, so
decode and model compute overlap and memory stays bounded; JPEGs are decoded at reduced size
(``draft``) when the model's input is small. One bad image fails only its own records.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polycap.batch.inputs import InputSpec, Item, count_items, iter_items, kind_of
from polycap.batch.outputs import CocoOutput, JsonlOutput, Output, ParquetOutput
from polycap.batch.progress import Progress
from polycap.batch.sidecars import SidecarOutput, XmpOutput
from polycap.errors import ImageError, OptionError
from polycap.records import escape_text, record
from polycap.types import Caption


@dataclass
class SidecarSpec:
    """Text sidecar options (see :mod:`polycap.batch.sidecars`)."""

    ext: str = ".txt"
    prefix: str = ""
    suffix: str = ""
    existing: str = "skip"
    layout: str = "auto"
    root: Path | None = None
    separator: str = ", "


@dataclass
class JobConfig:
    """Everything a batch job needs; the CLI fills it from flags, Python callers directly."""

    inputs: list[str]
    model: str | None = None
    load_kwargs: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    langs: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # GenerationOptions fields except lang
    jsonl: Path | None = None
    parquet: Path | None = None
    coco: Path | None = None
    sidecar: SidecarSpec | None = None
    xmp: str | None = None  # "embed" | "sidecar"
    state_dir: Path | None = None
    retry_failed: bool = False
    batch_size: int = 8
    workers: int = 0  # 0: min(4, CPUs)
    prefetch: int = 0  # 0: 4 batches
    max_pixels: int | None = None
    allow_urls: bool = False
    draft: bool = True
    path_column: str | None = None
    id_column: str | None = None
    flush_rows: int = 1000
    progress: str = "auto"  # auto | bar | json | off
    progress_every: float = 30.0

    def input_spec(self) -> InputSpec:
        return InputSpec(list(self.inputs), self.path_column, self.id_column, self.allow_urls)


@dataclass
class JobSummary:
    """What a run did: images captioned now, passed over (done before, or existing captions), failed."""

    total: int = 0
    captioned: int = 0
    failed: int = 0
    already_done: int = 0
    existing: int = 0
    failed_before: int = 0
    seconds: float = 0.0
    reasons: Counter = field(default_factory=Counter)
    examples: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add_failure(self, item_id: str, reason: str, error: str) -> None:
        """Count one failed image: its reason (without the image's name) and, for the first 20, an example."""
        self.failed += 1
        self.reasons[reason] += 1
        if len(self.examples) < 20:
            self.examples.append((item_id, error))

    @property
    def images_per_s(self) -> float:
        return (self.captioned + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": "summary", "total": self.total, "captioned": self.captioned, "failed": self.failed,
            "skipped": {"done_before": self.already_done, "existing_caption": self.existing,
                        "failed_before": self.failed_before},
            "seconds": round(self.seconds, 3), "images_per_s": round(self.images_per_s, 2),
            "failure_reasons": dict(self.reasons.most_common(10)),
            "failed_examples": [{"id": i, "error": e} for i, e in self.examples], "notes": self.notes,
        }  # fmt: skip


def default_state_dir(cfg: JobConfig) -> Path:
    """Where journals of sidecar and metadata outputs live: in ``--sidecar-dir``, else in the first
    input folder (``.polycap-batch``, hidden so the folder walk passes over it), else beside the
    first input file."""
    if cfg.sidecar and cfg.sidecar.root:
        return cfg.sidecar.root / ".polycap-batch"
    first = os.path.expanduser(cfg.inputs[0])
    if os.path.isdir(first):
        return Path(first) / ".polycap-batch"
    return Path(os.path.dirname(first) or ".") / ".polycap-batch"


def build_outputs(cfg: JobConfig, langs: list[str]) -> list[Output]:
    state = cfg.state_dir or default_state_dir(cfg)
    outs: list[Output] = []
    if cfg.jsonl:
        outs.append(JsonlOutput(cfg.jsonl))
    if cfg.parquet:
        outs.append(ParquetOutput(cfg.parquet, cfg.flush_rows))
    if cfg.coco:
        outs.append(CocoOutput(cfg.coco, langs))
    if cfg.sidecar:
        s = cfg.sidecar
        outs.append(SidecarOutput(state, langs, s.ext, s.prefix, s.suffix, s.existing, s.layout, s.root, s.separator))
    if cfg.xmp:
        outs.append(XmpOutput(state, langs, cfg.xmp))
    if not outs:
        raise OptionError("give at least one output: --out FILE.jsonl, --parquet DIR, --coco FILE, --sidecar or --xmp")
    return outs


def load_captioner(cfg: JobConfig):
    """The model through the registry, exactly as ``polycap.load`` builds it."""
    from polycap.registry import get_registry

    registry = get_registry()
    name = cfg.model or registry.default_model()
    backend, ref, fixed = registry.resolve(name)
    return backend.loader(ref, device=cfg.device, name=name, **{**fixed, **cfg.load_kwargs})


def input_side(captioner: Any) -> int | None:
    """The square input size of the model's image encoder, if it has a fixed one (draft decoding)."""
    enc = getattr(captioner, "encoder", None)
    for obj in (captioner, enc, getattr(enc, "encoder", None)):
        side = getattr(obj, "image_size", None)
        if isinstance(side, int) and not isinstance(side, bool) and side > 0:
            return side
    return None


def make_record(item: Item, c: Caption, options: dict[str, Any]) -> dict[str, Any]:
    """The batch record: id and path first, then the keys every polycap record has, and options."""
    c.source = item.path or item.id
    rec = record(c)
    rec.pop("image", None)
    out = {"id": item.id, "path": escape_text(item.path)}
    out.update({k: rec.pop(k) for k in ("lang", "caption", "score", "model")})
    out.update(options=options, error=rec.pop("error"))
    out.update(rec)  # seconds, and image_bytes / alternatives / meta when present
    return out


def deliver(outputs: list[Output], item: Item, recs: list[dict[str, Any]]) -> list[str]:
    """Hand each output the records of ``item`` it still lacks; the errors of the outputs that could
    not take theirs (a sidecar in a read-only folder, a format that takes no XMP)."""
    errors: list[str] = []
    for out in outputs:
        mine = [r for r in recs if out.status(item, r["lang"]) is None]
        if mine:
            errors += (out.write(item, mine) or {}).values()
    return errors


class Job:
    """One run of a batch job; :func:`run_job` is the way in."""

    def __init__(self, cfg: JobConfig, captioner: Any = None):
        self.cfg = cfg
        self.captioner = captioner
        self.langs: list[str] = list(dict.fromkeys(cfg.langs or []))
        self.base: Any = None  # the GenerationOptions, once the model is there
        self.opts: dict[str, dict[str, Any]] = {}
        self.min_side: int | None = None
        if not self.langs and captioner is None:
            self.langs = registered_default_lang(cfg)
        if captioner is not None or not self.langs:  # the model's default language is needed now
            self._prepare()
        self.outputs = build_outputs(cfg, self.langs)
        self.summary = JobSummary()

    def _prepare(self) -> None:
        """Load the model (only once an image needs captioning, when the languages are given: a
        rerun of a finished job then only checks) and check every option before any image is opened."""
        if self.captioner is None:
            self.captioner = load_captioner(self.cfg)
        self.langs = self.langs or [self.captioner.default_lang]
        self.base = self.captioner.make_options(lang=self.langs[0], **self.cfg.options)
        self.opts = {lg: self.captioner.make_options(self.base, lang=lg).to_dict() for lg in self.langs}
        self.min_side = input_side(self.captioner) if self.cfg.draft else None

    # ---- planning: what each image still needs ---------------------------------------------
    def needs(self, item: Item) -> list[str]:
        """The languages some output still lacks for ``item``; counts it as skipped when none."""
        need, statuses = [], []
        for lang in self.langs:
            st = [o.status(item, lang) for o in self.outputs]
            statuses += st
            if any(s is None for s in st):
                need.append(lang)
        if not need:
            if "failed" in statuses:
                self.summary.failed_before += 1
            elif "existing" in statuses:
                self.summary.existing += 1
            else:
                self.summary.already_done += 1
        return need

    def decode(self, item: Item) -> Any:
        from polycap.images import load_image

        if item.error:
            raise ImageError(item.error, item.id)
        limit = self.cfg.max_pixels
        kwargs = {"max_pixels": limit} if limit else {}
        try:
            return load_image(item.source, allow_urls=self.cfg.allow_urls, min_side=self.min_side, **kwargs)
        except ImageError as e:
            if isinstance(item.source, (bytes, bytearray)):  # name the tar member, not "<bytes: N bytes>"
                reason = str(e).removeprefix(f"{e.source}: ") if e.source else str(e)
                raise ImageError(reason, item.id) from e
            raise

    # ---- running ---------------------------------------------------------------------------
    def run(self, items: Iterator[Item] | None = None) -> JobSummary:
        """Run over ``items`` (default: everything the inputs hold)."""
        start = time.monotonic()
        spec = self.cfg.input_spec()
        for o in self.outputs:
            o.start(self.cfg.retry_failed)
        total = None if self.cfg.progress == "off" else _safe_count(spec)
        mode = self.cfg.progress
        try:
            with Progress(total, mode, self.cfg.progress_every) as bar:
                self._loop(iter_items(spec) if items is None else items, bar)
        finally:
            for o in self.outputs:
                o.close()
            self.summary.seconds = time.monotonic() - start
            self.summary.notes = spec.notes
        return self.summary

    def _loop(self, items: Iterator[Item], bar: Progress) -> None:
        cfg = self.cfg
        workers = cfg.workers or min(4, os.cpu_count() or 1)
        window = cfg.prefetch or 4 * cfg.batch_size
        pending: deque[tuple[Item, list[str], Future]] = deque()
        batch: list[tuple[Item, list[str], Any]] = []
        with ThreadPoolExecutor(workers, thread_name_prefix="polycap-decode") as pool:
            try:
                for item in items:
                    self.summary.total += 1
                    skipped_before = self._skipped()
                    need = self.needs(item)
                    if not need:
                        bar.update(skipped=self._skipped() - skipped_before)
                        continue
                    if self.base is None:
                        self._prepare()
                    pending.append((item, need, pool.submit(self.decode, item)))
                    while len(pending) > window or (pending and pending[0][2].done() and len(pending) > cfg.batch_size):
                        batch.append(_result(pending.popleft()))
                        if len(batch) >= cfg.batch_size:
                            self._caption(batch, bar)
                            batch = []
                while pending:
                    batch.append(_result(pending.popleft()))
                    if len(batch) >= cfg.batch_size:
                        self._caption(batch, bar)
                        batch = []
                if batch:
                    self._caption(batch, bar)
            finally:
                for _, _, fut in pending:
                    fut.cancel()

    def _skipped(self) -> int:
        s = self.summary
        return s.already_done + s.existing + s.failed_before

    def _caption(self, batch: list[tuple[Item, list[str], Any]], bar: Progress) -> None:
        """Caption one batch (grouped by the languages needed) and hand the records to the outputs."""
        groups: dict[tuple[str, ...], list[int]] = {}
        for k, (_, need, _) in enumerate(batch):
            groups.setdefault(tuple(need), []).append(k)
        results: dict[int, list[Caption]] = {}
        name = self.captioner.name
        for need, ks in groups.items():
            good = [k for k in ks if not isinstance(batch[k][2], BaseException)]
            for k in ks:
                if k not in good:
                    results[k] = [Caption.failed(str(batch[k][2]), lg, name) for lg in need]
            if good:
                caps = self.captioner.caption_many(
                    [batch[k][2] for k in good], self.base, batch_size=len(good), langs=list(need)
                )
                for n, k in enumerate(good):
                    results[k] = caps[n * len(need) : (n + 1) * len(need)]
        for k, (item, _, _) in enumerate(batch):
            recs = [make_record(item, c, self.opts[c.lang]) for c in results[k]]
            errors = [r["error"] for r in recs if r.get("error")]
            self._count(item, errors + deliver(self.outputs, item, recs), bar)

    def _count(self, item: Item, errors: list[str], bar: Progress) -> None:
        if not errors:
            self.summary.captioned += 1
            bar.update(done=1)
            return
        self.summary.add_failure(item.id, failure_reason(item, errors[0]), errors[0])
        bar.update(failed=1)


def registered_default_lang(cfg: JobConfig) -> list[str]:
    """The default language of a registered model from its registry entry, without loading it
    (as ``Captioner.default_lang`` picks it); [] when the registry does not say."""
    from polycap.registry import get_registry

    registry = get_registry()
    spec = registry.models.get(cfg.model or registry.default_model())
    if spec is None or not spec.languages or cfg.load_kwargs:
        return []
    return ["en" if "en" in spec.languages else spec.languages[0]]


def _result(entry: tuple[Item, list[str], Future]) -> tuple[Item, list[str], Any]:
    item, need, fut = entry
    try:
        return item, need, fut.result()
    except Exception as e:  # noqa: BLE001 - an image that cannot be decoded fails alone
        return item, need, e if isinstance(e, ImageError) else ImageError(f"{type(e).__name__}: {e}", item.id)


def failure_reason(item: Item, error: str) -> str:
    """The error without the image's name, so that equal reasons count together."""
    for name in (item.path, item.id):
        if name and error.startswith(f"{name}: "):
            return error[len(name) + 2 :]
    return error


def _safe_count(spec: InputSpec) -> int | None:
    try:
        return count_items(spec)
    except Exception:  # noqa: BLE001 - the count only feeds the progress bar
        return None


def run_job(cfg: JobConfig, captioner: Any = None) -> JobSummary:
    """Run (or continue) a batch job; returns its summary. ``captioner`` skips loading ``cfg.model``."""
    for name in cfg.inputs:
        if kind_of(name) == "files" and not os.path.exists(os.path.expanduser(name)) and not set("*?[") & set(name):
            raise OptionError(f"input not found: {escape_text(name, controls=True)}")
    return Job(cfg, captioner).run()
