"""The Ray Data engine (``polycap batch --engine ray``): the same job spread over a cluster's actors.

The inputs are cut into **shards** (a WebDataset tar or a manifest is one shard; folders and globs
are cut into runs of ``shard_size`` images, in the local engine's order). The pipeline is
``ray.data.from_items(shards)`` -> ``map_batches(ShardWorker, concurrency=actors, num_cpus=...,
num_gpus=...)``: each actor loads the model once in its constructor and captions whole shards
with the local engine (decode threads, draft decoding, per-item errors), writing
``shard-NNNNN.jsonl`` and/or ``shard-NNNNN.parquet`` atomically and then ``shard-NNNNN.done``.

Resume is img2dataset's: a rerun skips every shard with a ``.done`` marker, and a shard an
interrupted run left half done continues from its own journal (``.shard-NNNNN.partial.jsonl``,
the local engine's exact resume). Ray Data's ``write_parquet`` is not used for the records because
its file names follow Ray's blocks, not our shards, and a killed write leaves files no marker
vouches for; Ray Data offers no checkpointing of a ``map_batches`` pipeline in the versions we
support. The records are the local engine's (:func:`polycap.batch.engine.make_record`), so a Ray
run and a local run of the same job hold the same records, order aside.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from polycap.batch.engine import Job, JobConfig, JobSummary
from polycap.batch.inputs import kind_of
from polycap.batch.outputs import ParquetOutput, read_records
from polycap.batch.state import read_jsonl, write_atomic
from polycap.errors import OptionError


def plan_shards(cfg: JobConfig, shard_size: int = 1000) -> list[dict[str, Any]]:
    """The job's shards, numbered in input order: {"name", "inputs", "count"}."""
    from polycap.images import scan_image_files

    shards: list[dict[str, Any]] = []

    def add(inputs: list[str], count: int | None) -> None:
        shards.append({"name": f"shard-{len(shards):05d}", "inputs": inputs, "count": count})

    for name in cfg.inputs:
        if kind_of(name) != "files":
            add([name], None)
            continue
        paths = [os.fspath(p) for p in scan_image_files([name]).paths]
        for i in range(0, len(paths), shard_size):
            add(paths[i : i + shard_size], len(paths[i : i + shard_size]))
    return shards


def _out_dirs(cfg: JobConfig) -> list[Path]:
    if cfg.sidecar or cfg.xmp or cfg.coco:
        raise OptionError("--engine ray writes --out and --parquet records; run sidecars, --xmp and --coco locally")
    dirs = [d for d in (cfg.jsonl, cfg.parquet) if d is not None]
    if not dirs:
        raise OptionError("--engine ray needs --out DIR (JSON Lines shards) and/or --parquet DIR")
    return dirs


def _marker(folder: Path, shard: str) -> Path:
    return folder / f"{shard}.done"


class ShardWorker:
    """A Ray actor: loads the model once, then captions whole shards handed to it by Ray Data."""

    def __init__(self, cfg: dict[str, Any]):
        from polycap.batch.engine import load_captioner

        self.cfg = _config(cfg)
        self.captioner = load_captioner(self.cfg)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        names, summaries = [], []
        for name, inputs in zip(batch["name"], batch["inputs"]):
            summary = caption_shard(self.cfg, str(name), list(json.loads(str(inputs))), self.captioner)
            names.append(str(name))
            summaries.append(json.dumps(summary))
        return {"name": names, "summary": summaries}


def caption_shard(cfg: JobConfig, name: str, inputs: list[str], captioner: Any) -> dict[str, Any]:
    """Caption one shard exactly (resuming its journal), publish its files, then its marker."""
    dirs = _out_dirs(cfg)
    journal = dirs[0] / f".{name}.partial.jsonl"
    shard_cfg = replace(cfg, inputs=inputs, jsonl=journal, parquet=None, progress="off")
    summary = Job(shard_cfg, captioner).run()
    recs = list(read_jsonl(journal, repair=False))
    if cfg.jsonl:
        text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in recs)
        write_atomic(cfg.jsonl / f"{name}.jsonl", text.encode("utf-8", "backslashreplace"))
    if cfg.parquet:
        from polycap.batch.outputs import parquet_row

        ParquetOutput._write_table(cfg.parquet / f"{name}.parquet", [parquet_row(r) for r in recs])
    result = {"records": len(recs), "failed": sum(1 for r in recs if r.get("error")), **_counts(summary)}
    for folder in dirs:
        write_atomic(_marker(folder, name), (json.dumps(result) + "\n").encode())
    journal.unlink()
    return result


def _counts(s: JobSummary) -> dict[str, Any]:
    return {"captioned": s.captioned, "failed_now": s.failed, "already_done": s.already_done,
            "seconds": s.seconds, "reasons": dict(s.reasons)}  # fmt: skip


def _config(d: dict[str, Any]) -> JobConfig:
    paths = ("jsonl", "parquet", "coco", "state_dir")
    return JobConfig(**{k: (Path(v) if k in paths and v is not None else v) for k, v in d.items()})


def run_ray_job(
    cfg: JobConfig,
    address: str | None = None,
    actors: int = 2,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    shard_size: int = 1000,
) -> JobSummary:
    """Run (or continue) the job on Ray; returns the summary over all shards."""
    import time

    try:
        import ray
    except ImportError as e:
        raise OptionError("--engine ray needs Ray Data: pip install 'polycap[ray]'") from e
    if cfg.retry_failed:
        raise OptionError("--retry-failed is not supported with --engine ray yet; rerun those images locally")
    start = time.monotonic()
    dirs = _out_dirs(cfg)
    for d in dirs:
        if d.exists() and not d.is_dir():
            raise OptionError(f"--engine ray writes shard files into a folder; {d} is a file")
        d.mkdir(parents=True, exist_ok=True)
    shards = plan_shards(cfg, shard_size)
    todo = [s for s in shards if not all(_marker(d, s["name"]).exists() for d in dirs)]
    summary = JobSummary()
    for s in shards:
        if s not in todo:
            done = json.loads(_marker(dirs[0], s["name"]).read_text())
            summary.already_done += done["records"] // max(1, len(cfg.langs or [None]))
    if todo:
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        rows = [{"name": s["name"], "inputs": json.dumps(s["inputs"])} for s in todo]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            ShardWorker, fn_constructor_args=(_plain(cfg),), batch_size=1, concurrency=actors,
            num_cpus=num_cpus, num_gpus=num_gpus or None,
        )  # fmt: skip
        for row in ds.take_all():
            done = json.loads(row["summary"])
            summary.captioned += done["captioned"]
            summary.failed += done["failed_now"]
            summary.already_done += done["already_done"]
            summary.reasons.update(done["reasons"])
    summary.total = summary.captioned + summary.failed + summary.already_done
    summary.seconds = time.monotonic() - start
    return summary


def _plain(cfg: JobConfig) -> dict[str, Any]:
    d = asdict(cfg)
    return {k: (os.fspath(v) if isinstance(v, Path) else v) for k, v in d.items()}


def read_ray_records(folder: Path) -> list[dict[str, Any]]:
    """Every record of a Ray job's output folder (finished shards only)."""
    files = sorted(p for p in folder.iterdir() if p.suffix in (".jsonl", ".parquet") and not p.name.startswith("."))
    return [r for f in files for r in read_records(f)]

