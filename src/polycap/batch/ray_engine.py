"""The Ray Data engine (``polycap batch --engine ray``): the same job spread over a cluster's actors.

The inputs are cut into **shards** (a WebDataset tar or a manifest is one shard; folders and globs
are cut into runs of ``shard_size`` images, in the local engine's order). The pipeline is
``ray.data.from_items(shards)`` -> ``map_batches(ShardWorker, concurrency=actors, num_cpus=...,
num_gpus=...)``: each actor loads the model once in its constructor and captions whole shards
with the local engine (decode threads, draft decoding, per-item errors), writing
``shard-NNNNN.jsonl`` and/or ``shard-NNNNN.parquet`` atomically and then ``shard-NNNNN.done``.
Without ``--out``/``--parquet`` the shard records go to ``ray-records/`` in the state folder.

The outputs that live beside the images or in one file (sidecar text files, XMP metadata, COCO
results) are written on the driver, by the local engine's own output classes, from the records of
each finished shard as it arrives: one writer per file, with the local engine's journals, so they
resume, retry and stay exact the same way, and actors on other machines need no access to the
images' folders.

Resume is img2dataset's: a rerun skips every shard with a ``.done`` marker (that names the same
images), and a shard an interrupted run left half done continues from its own journal
(``.shard-NNNNN.partial.jsonl``, the local engine's exact resume); the driver's outputs catch up
from the finished shards' records. ``--retry-failed`` turns a finished shard with failed records
back into a journal and drops its marker, so the actors caption exactly those items again. Ray
Data's ``write_parquet`` is not used for the records because its file names follow Ray's blocks,
not our shards, and a killed write leaves files no marker vouches for; Ray Data's own (beta, recent
versions only) checkpointing covers pipelines that end in a Ray write, not the driver's outputs;
docs/batch.md has the details. The records are the local engine's
(:func:`polycap.batch.engine.make_record`), so a Ray run and a local run of the same job hold the
same records, order aside.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Collection
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from polycap.batch.engine import (
    Job,
    JobConfig,
    JobSummary,
    build_outputs,
    default_state_dir,
    deliver,
    failure_reason,
    registered_default_lang,
)
from polycap.batch.inputs import Item, expand_inputs, iter_items, kind_of
from polycap.batch.outputs import Output, ParquetOutput, parquet_row, read_records
from polycap.batch.state import TMP_MARK, read_jsonl, write_atomic
from polycap.errors import OptionError


def plan_shards(cfg: JobConfig, shard_size: int = 1000) -> list[dict[str, Any]]:
    """The job's shards, numbered in input order: {"name", "kind", "inputs", "count"}."""
    from polycap.images import scan_image_files

    shards: list[dict[str, Any]] = []

    def add(kind: str, inputs: list[str], count: int | None) -> None:
        shards.append({"name": f"shard-{len(shards):05d}", "kind": kind, "inputs": inputs, "count": count})

    for name in expand_inputs(cfg.inputs):
        kind = kind_of(name)
        if kind != "files":
            add(kind, [name], None)
            continue
        paths = [os.fspath(p) for p in scan_image_files([name]).paths]
        for i in range(0, len(paths), shard_size):
            add(kind, paths[i : i + shard_size], len(paths[i : i + shard_size]))
    return shards


def records_config(cfg: JobConfig, langs: list[str]) -> JobConfig:
    """What the actors run: the shard records only (``--out``/``--parquet`` folders, else
    ``ray-records/`` in the state folder), in the job's languages; the rest is the driver's."""
    jsonl = cfg.jsonl
    if jsonl is None and cfg.parquet is None:
        jsonl = (cfg.state_dir or default_state_dir(cfg)) / "ray-records"
    return replace(cfg, jsonl=jsonl, coco=None, sidecar=None, xmp=None, langs=langs or cfg.langs)


def _out_dirs(cfg: JobConfig) -> list[Path]:
    dirs = [d for d in (cfg.jsonl, cfg.parquet) if d is not None]
    if not dirs:
        raise OptionError("--engine ray needs an output: --out DIR, --parquet DIR, --coco, --sidecar or --xmp")
    return dirs


def _marker(folder: Path, shard: str) -> Path:
    return folder / f"{shard}.done"


def _journal(dirs: list[Path], shard: str) -> Path:
    return dirs[0] / f".{shard}.partial.jsonl"


def _inputs_sha(inputs: list[str]) -> str:
    """Names the images of a shard, so that a marker of a folder that changed since is not trusted."""
    return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:16]


def _finished(dirs: list[Path], shard: dict[str, Any]) -> dict[str, Any] | None:
    """The marker of a shard every records folder has finished for these images, else None."""
    marker = None
    for d in dirs:
        try:
            marker = json.loads(_marker(d, shard["name"]).read_text())
        except (OSError, ValueError):
            return None
        if marker.get("inputs_sha", _inputs_sha(shard["inputs"])) != _inputs_sha(shard["inputs"]):
            return None
    return marker


class ShardWorker:
    """A Ray actor: loads the model once, then captions whole shards handed to it by Ray Data."""

    def __init__(self, cfg: dict[str, Any]):
        from polycap.batch.engine import load_captioner

        self.cfg = _config(cfg)
        self.captioner = load_captioner(self.cfg)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        names, summaries = [], []
        for name, inputs, skip in zip(batch["name"], batch["inputs"], batch["skip"]):
            shard_inputs, skip_ids = list(json.loads(str(inputs))), set(json.loads(str(skip)))
            summary = caption_shard(self.cfg, str(name), shard_inputs, self.captioner, skip_ids)
            names.append(str(name))
            summaries.append(json.dumps(summary))
        return {"name": names, "summary": summaries}


def caption_shard(
    cfg: JobConfig, name: str, inputs: list[str], captioner: Any, skip: Collection[str] = ()
) -> dict[str, Any]:
    """Caption one shard exactly (resuming its journal), publish its files, then its marker.

    ``skip``: ids of the shard's images that no output still needs (the driver's, when the records
    are only its transport); they are not captioned. The result is the marker's content plus
    ``states``: {id: "already_done" | "failed_before" | "failed"} for the images handled here but not
    captioned now (the driver keeps its summary exact with it; the marker does not hold it). With
    ``captioner=None`` and the languages in ``cfg.langs``, the model is loaded only if an image
    needs captioning (the driver finishes a shard with nothing to caption without one).
    """
    dirs = _out_dirs(cfg)
    journal = _journal(dirs, name)
    shard_cfg = replace(cfg, inputs=inputs, jsonl=journal, parquet=None, coco=None, sidecar=None, xmp=None,
                        progress="off")  # fmt: skip
    before = {(str(r.get("id")), r.get("lang")): bool(r.get("error")) for r in read_jsonl(journal, repair=False)}
    skip = set(skip)
    items = (it for it in iter_items(shard_cfg.input_spec()) if it.id not in skip) if skip else None
    summary = Job(shard_cfg, captioner).run(items)
    recs = list(read_jsonl(journal, repair=False))
    if cfg.jsonl:
        text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in recs)
        write_atomic(cfg.jsonl / f"{name}.jsonl", text.encode("utf-8", "backslashreplace"))
    if cfg.parquet:
        ParquetOutput._write_table(cfg.parquet / f"{name}.parquet", [parquet_row(r) for r in recs])
    ids = {r["id"] for r in recs}
    failed_ids = {r["id"] for r in recs if r.get("error")}
    result = {"records": len(recs), "failed": sum(1 for r in recs if r.get("error")), "items": len(ids),
              "failed_items": len(failed_ids), "inputs_sha": _inputs_sha(inputs), **_counts(summary)}  # fmt: skip
    for folder in dirs:
        write_atomic(_marker(folder, name), (json.dumps(result) + "\n").encode())
    journal.unlink(missing_ok=True)  # a shard with nothing to caption has none
    states = _states(recs, before, cfg.retry_failed)
    return {**result, "states": {i: st for i, st in states.items() if i not in skip}}


def _states(recs: list[dict[str, Any]], before: dict[tuple[str, Any], bool], retried: bool) -> dict[str, str]:
    """How the local engine counted each image of a shard run that was not captioned now: records
    already in the journal (``before``: key -> had an error) and not retried are done or failed
    before; an image with a new record that failed is failed; the rest were captioned."""
    new: dict[str, bool] = {}
    old: dict[str, bool] = {}
    for r in recs:
        rid, error = str(r["id"]), bool(r.get("error"))
        key = (rid, r["lang"])
        side = new if key not in before or (retried and before[key]) else old
        side[rid] = side.get(rid, False) or error
    states = {rid: "failed" for rid, error in new.items() if error}
    states.update({rid: "failed_before" if e else "already_done" for rid, e in old.items() if rid not in new})
    return states


def _record_states(recs: list[dict[str, Any]]) -> dict[str, str]:
    """The counts of a finished shard's images on a rerun: failed before (a record has an error), else done."""
    states: dict[str, str] = {}
    for r in recs:
        rid = str(r["id"])
        if r.get("error") or rid not in states:
            states[rid] = "failed_before" if r.get("error") else "already_done"
    return states


def _counts(s: JobSummary) -> dict[str, Any]:
    return {"captioned": s.captioned, "failed_now": s.failed, "already_done": s.already_done,
            "failed_before": s.failed_before, "seconds": s.seconds, "reasons": dict(s.reasons),
            "examples": s.examples}  # fmt: skip


def _config(d: dict[str, Any]) -> JobConfig:
    paths = ("jsonl", "parquet", "coco", "state_dir")
    return JobConfig(**{k: (Path(v) if k in paths and v is not None else v) for k, v in d.items()})


def _plain(cfg: JobConfig) -> dict[str, Any]:
    d = asdict(replace(cfg, coco=None, sidecar=None, xmp=None))
    return {k: (os.fspath(v) if isinstance(v, Path) else v) for k, v in d.items()}


def _prepare_dirs(dirs: list[Path]) -> None:
    for d in dirs:
        if d.exists() and not d.is_dir():
            raise OptionError(f"--engine ray writes shard files into a folder; {d} is a file")
        d.mkdir(parents=True, exist_ok=True)
        for stale in d.glob(f".shard-*{TMP_MARK}"):  # a shard file a killed actor did not finish
            stale.unlink(missing_ok=True)


def _reopen_failed(dirs: list[Path], shard: dict[str, Any]) -> bool:
    """``--retry-failed`` on a finished shard with failed records: its records become its journal
    again and its markers go, so the actors (retrying) caption exactly the failed items. True if so."""
    recs = read_records(_shard_file(dirs[0], shard["name"]))
    if not any(r.get("error") for r in recs):
        return False
    _reopen(dirs, shard, recs)
    return True


def _reopen(dirs: list[Path], shard: dict[str, Any], recs: list[dict[str, Any]]) -> None:
    """Turn a finished shard back into a half-done one: its records are its journal again, its
    markers go; the next shard run captions only what the journal lacks (the local engine's resume)."""
    text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in recs)
    write_atomic(_journal(dirs, shard["name"]), text.encode("utf-8", "backslashreplace"))
    for d in dirs:
        _marker(d, shard["name"]).unlink(missing_ok=True)


def _shard_file(folder: Path, shard: str) -> Path:
    jsonl = folder / f"{shard}.jsonl"
    return jsonl if jsonl.exists() else folder / f"{shard}.parquet"


def record_item(kind: str, rec: dict[str, Any]) -> Item:
    """The item a record was made from, as far as the outputs need it: its id and where its file is
    (a tar member or a manifest row without a path has none), as the local engine's inputs make it."""
    path = str(rec.get("path") or "")
    if rec.get("image_bytes"):  # a name that is not UTF-8: the record's path is escaped, these are its bytes
        path = os.fsdecode(base64.b64decode(rec["image_bytes"]))
    source = path if path and kind != "tar" else None
    return Item(id=str(rec["id"]), path=path, source=source)


def _replay(
    outputs: list[Output], kind: str, recs: list[dict[str, Any]], summary: JobSummary,
    states: dict[str, str], ignore: Collection[str] = (),
) -> None:
    """Write a finished shard's records to the driver's outputs (each takes only what it lacks).

    The summary stays exact, as the local engine counts: an image an output fails now moves from
    the count it had (``states``: already_done, failed_before or failed; else captioned) to failed;
    one done before whose record an output had failed in an earlier run moves to failed before.
    ``ignore``: ids the driver counted itself (images no output needed, not run by the shard).
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in recs:
        if str(rec["id"]) not in ignore:
            groups.setdefault(str(rec["id"]), []).append(rec)
    for rid, group in groups.items():
        item = record_item(kind, group[0])
        state = states.get(rid, "captioned")
        before = [o.status(item, r["lang"]) for o in outputs for r in group]
        errors = deliver(outputs, item, group)
        if errors and state != "failed":
            setattr(summary, state, getattr(summary, state) - 1)
            summary.add_failure(item.id, failure_reason(item, errors[0]), errors[0])
        elif not errors and state == "already_done" and "failed" in before:
            summary.already_done -= 1
            summary.failed_before += 1


def _not_needed(outputs: list[Output], langs: list[str], cfg: JobConfig, shard: dict[str, Any]):
    """The ids of a shard's images, and {id: its count} for those no driver output still needs in
    any language (the local engine's rule, :meth:`Job.needs`): failed_before, existing or already_done."""
    ids: list[str] = []
    skip: dict[str, str] = {}
    for item in iter_items(replace(cfg, inputs=shard["inputs"]).input_spec(), read_data=False):
        ids.append(item.id)
        st = [o.status(item, lang) for o in outputs for lang in langs]
        if None not in st:
            skip[item.id] = "failed_before" if "failed" in st else "existing" if "existing" in st else "already_done"
    return ids, skip


def _count(summary: JobSummary, states: Collection[str]) -> None:
    for state in states:
        setattr(summary, state, getattr(summary, state) + 1)


def _finished_shards(dirs: list[Path], shards: list[dict[str, Any]], retry_failed: bool) -> dict[str, dict[str, Any]]:
    """{name: marker} of the shards a rerun skips; with ``retry_failed``, not those with failures."""
    finished = {s["name"]: m for s in shards if (m := _finished(dirs, s)) is not None}
    if retry_failed:
        for s in shards:
            if s["name"] in finished and finished[s["name"]].get("failed", 1) and _reopen_failed(dirs, s):
                del finished[s["name"]]
    for name in finished:
        _journal(dirs, name).unlink(missing_ok=True)  # left by a --retry-failed a kill cut short
    return finished


def _add_shard(summary: JobSummary, result: dict[str, Any]) -> None:
    summary.captioned += result["captioned"]
    summary.failed += result["failed_now"]
    summary.already_done += result["already_done"]
    summary.failed_before += result.get("failed_before", 0)
    summary.reasons.update(result["reasons"])
    room = 20 - len(summary.examples)
    summary.examples += [tuple(x) for x in result.get("examples", [])[: max(0, room)]]


def run_ray_job(
    cfg: JobConfig,
    address: str | None = None,
    actors: int = 2,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    shard_size: int = 1000,
) -> JobSummary:
    """Run (or continue) the job on Ray; returns the summary over all shards."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise OptionError("--engine ray needs Ray Data: pip install 'polycap[ray]'") from e
    start = time.monotonic()
    langs = list(dict.fromkeys(cfg.langs or [])) or registered_default_lang(cfg)
    local_wanted = bool(cfg.coco or cfg.sidecar or cfg.xmp)
    if local_wanted and not langs:
        raise OptionError("--engine ray with --sidecar, --xmp or --coco needs --lang: this model's default "
                          "language is not in the registry")  # fmt: skip
    rcfg = records_config(cfg, langs)
    dirs = _out_dirs(rcfg)
    local = build_outputs(replace(cfg, jsonl=None, parquet=None), langs) if local_wanted else []
    # Without --out/--parquet the shard records only carry captions to the driver's outputs: an
    # image none of them needs (--existing skip keeps a caption there) is not captioned, as locally.
    filtering = bool(local) and cfg.jsonl is None and cfg.parquet is None
    _prepare_dirs(dirs)
    shards = plan_shards(cfg, shard_size)
    finished = _finished_shards(dirs, shards, cfg.retry_failed)
    summary = JobSummary()
    for o in local:
        o.start(cfg.retry_failed)
    try:
        todo = _settle(local, langs, rcfg, dirs, shards, finished, summary, filtering)
        for shard in [sh for sh in todo if sh["idle"]]:  # nothing to caption: no actor, no model
            result = caption_shard(rcfg, shard["name"], shard["inputs"], None, set(shard["skip"]))
            _finished_now(local, dirs, shard, summary, result)
        by_name = {shard["name"]: shard for shard in todo if not shard["idle"]}
        if by_name:
            if not ray.is_initialized():
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            rows = [{"name": n, "inputs": json.dumps(sh["inputs"]), "skip": json.dumps(sorted(sh["skip"]))}
                    for n, sh in by_name.items()]  # fmt: skip
            ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                ShardWorker, fn_constructor_args=(_plain(rcfg),), batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=num_cpus, num_gpus=num_gpus or None,
            )  # fmt: skip
            for row in ds.iter_rows():  # shards as they finish: the driver's outputs follow along
                _finished_now(local, dirs, by_name[str(row["name"])], summary, json.loads(row["summary"]))
    finally:
        for o in local:
            o.close()
    summary.total = sum((summary.captioned, summary.failed, summary.already_done, summary.failed_before,
                         summary.existing))  # fmt: skip
    summary.seconds = time.monotonic() - start
    return summary


def _finished_now(
    local: list[Output], dirs: list[Path], shard: dict[str, Any], summary: JobSummary, result: dict[str, Any]
) -> None:
    """A shard this run finished: add its counts, write its records to the driver's outputs."""
    _add_shard(summary, result)
    if local:
        recs = read_records(_shard_file(dirs[0], shard["name"]))
        _replay(local, shard["kind"], recs, summary, result["states"], shard["skip"])


def _settle(
    local: list[Output], langs: list[str], cfg: JobConfig, dirs: list[Path], shards: list[dict[str, Any]],
    finished: dict[str, dict[str, Any]], summary: JobSummary, filtering: bool,
) -> list[dict[str, Any]]:
    """Count the finished shards and write their records to the driver's outputs; the shards to run,
    each with ``"skip"`` (the ids no output needs, counted here) and ``"idle"`` (nothing to caption).

    With ``filtering``, a finished shard whose records lack an image an output needs now (a user's
    caption removed, an output added) is reopened and runs again for those images only.
    """
    todo: list[dict[str, Any]] = []
    for shard in shards:
        ids, skip = _not_needed(local, langs, cfg, shard) if filtering else ([], {})
        marker = finished.get(shard["name"])
        recs = read_records(_shard_file(dirs[0], shard["name"])) if marker is not None and local else []
        have = {str(r["id"]) for r in recs}
        if marker is not None and any(i not in skip and i not in have for i in ids):
            _reopen(dirs, shard, recs)
            marker = None
        if marker is None:
            _count(summary, skip.values())
            todo.append({**shard, "skip": skip, "idle": filtering and all(i in skip for i in ids)})
            continue
        failed = marker.get("failed_items", 0)
        summary.already_done += marker.get("items", marker["records"] // max(1, len(langs))) - failed
        summary.failed_before += failed
        if local:
            _count(summary, [st for i, st in skip.items() if i not in have])
            _replay(local, shard["kind"], recs, summary, _record_states(recs))
    return todo


def read_ray_records(folder: Path) -> list[dict[str, Any]]:
    """Every record of a Ray job's output folder (finished shards only: those with their marker)."""
    files = sorted(
        p
        for p in folder.iterdir()
        if p.suffix in (".jsonl", ".parquet") and not p.name.startswith(".") and _marker(folder, p.stem).exists()
    )
    return [r for f in files for r in read_records(f)]
