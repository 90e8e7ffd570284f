"""``polycap batch``: a resumable captioning job over folders, manifests or WebDataset shards.

Thin: the flags become a :class:`polycap.batch.JobConfig` and the library runs the job. Run the
same command again to continue after a stop; see docs/batch.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from polycap.cli import gen_flags as F
from polycap.cli.common import EXIT_SOME_FAILED, err, split_langs, usage_error
from polycap.errors import OptionError, PolycapError


@F.generation_flags(F.CAPTION_DEFAULTS)
def batch_cmd(
    inputs: list[str] = typer.Argument(
        ..., help="Folders (recursive), globs, images, manifests (.jsonl/.csv/.parquet) or WebDataset .tar shards."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="JSON Lines records (a .parquet name: --parquet)."),
    parquet: Path | None = typer.Option(None, "--parquet", help="Parquet records: a folder of part files."),
    coco: Path | None = typer.Option(
        None, "--coco", help="COCO results JSON: a list of {image_id, caption}, a file per language."
    ),
    sidecar: bool = typer.Option(False, "--sidecar", help="Write a caption text file next to each image."),
    ext: str = typer.Option(".txt", "--ext", help="Sidecar extension (.txt, .caption, ...)."),
    prefix: str = typer.Option("", "--prefix", help="Text put before each sidecar caption (a trigger word)."),
    suffix: str = typer.Option("", "--suffix", help="Text put after each sidecar caption."),
    existing: str = typer.Option("skip", "--existing", help="Sidecar already there: skip, overwrite, append, prepend."),
    separator: str = typer.Option(", ", "--separator", help="Between old and new text (append, prepend)."),
    lang_layout: str = typer.Option("auto", "--lang-layout", help="Sidecars per language: auto, suffix, folder."),
    sidecar_dir: Path | None = typer.Option(None, "--sidecar-dir", help="Put sidecars here instead of beside images."),
    xmp: str | None = typer.Option(None, "--xmp", help="IPTC alt text + dc:description: embed or sidecar (.xmp)."),
    state: Path | None = typer.Option(None, "--state", help="Folder of the sidecar/metadata journals."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Caption again the items that failed before."),
    path_column: str | None = typer.Option(None, "--path-column", help="Manifest column with the image path or URL."),
    id_column: str | None = typer.Option(None, "--id-column", help="Manifest column with the image id."),
    allow_urls: bool = typer.Option(False, "--allow-urls", help="Fetch http(s) images named in manifests."),
    workers: int = typer.Option(0, "--workers", min=0, help="Decode threads (0: up to 4)."),
    prefetch: int = typer.Option(0, "--prefetch", min=0, help="Images decoded ahead (0: 4 batches)."),
    no_draft: bool = typer.Option(False, "--no-draft", help="Always decode JPEGs at full size."),
    flush_every: int = typer.Option(1000, "--flush-every", min=1, help="Rows per Parquet part file."),
    engine: str = typer.Option("local", "--engine", help="local, or ray (Ray Data: pip install polycap\\[ray])."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster (default: RAY_ADDRESS or local)."),
    actors: int = typer.Option(2, "--actors", min=1, help="Ray: model actors (each loads the model once)."),
    num_cpus: float = typer.Option(1.0, "--num-cpus", help="Ray: CPUs per actor."),
    num_gpus: float = typer.Option(0.0, "--num-gpus", help="Ray: GPUs per actor."),
    shard_size: int = typer.Option(1000, "--shard-size", min=1, help="Ray: images per shard of a folder input."),
    progress: str = typer.Option("auto", "--progress", help="auto (bar on a terminal, else JSON), bar, json, off."),
    progress_every: float = typer.Option(30.0, "--progress-every", help="Seconds between JSON progress lines."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress, no notices; only the JSON summary."),
    model: str | None = F.MODEL,
    lang: str | None = F.LANG,
    generation: dict[str, Any] | None = None,
    rewriter: str | None = F.REWRITER,
    prompt: str | None = F.PROMPT,
    prompt_file: Path | None = F.PROMPT_FILE,
    translator: str | None = F.TRANSLATOR,
    base_url: str | None = F.BASE_URL,
    no_cache: bool = F.NO_CACHE,
    max_side: int | None = F.MAX_SIDE,
    dtype: str | None = F.DTYPE,
    concepts: str | None = F.CONCEPTS,
    batch_size: int = F.BATCH_SIZE,
    max_pixels: int | None = F.MAX_PIXELS,
    device: str = F.DEVICE,
) -> None:
    """Caption a dataset as a job: run it again to continue. Exit 1 if any item failed."""
    from polycap.batch import JobConfig, SidecarSpec, run_job

    if out is not None and out.suffix == ".parquet" and parquet is None:
        out, parquet = None, out
    try:
        langs = split_langs(lang)
        name, extra = F.model_load_kwargs(
            model, langs, prompt=prompt, prompt_file=prompt_file, base_url=base_url, no_cache=no_cache,
            max_side=max_side, rewriter=rewriter, translator=translator, dtype=dtype,
            concepts=concepts,
        )  # fmt: skip
        options = dict(generation or {})
        wants_sidecar = sidecar or sidecar_dir is not None
        spec = SidecarSpec(ext, prefix, suffix, existing, lang_layout, sidecar_dir, separator)
        side = spec if wants_sidecar else None
        cfg = JobConfig(
            inputs=list(inputs), model=name, load_kwargs=extra, device=device, langs=langs, options=options,
            jsonl=out, parquet=parquet, coco=coco, sidecar=side, xmp=xmp, state_dir=state,
            retry_failed=retry_failed, batch_size=batch_size, workers=workers, prefetch=prefetch,
            max_pixels=max_pixels, allow_urls=allow_urls, draft=not no_draft, path_column=path_column,
            id_column=id_column, flush_rows=flush_every, progress="off" if quiet else progress,
            progress_every=progress_every,
        )  # fmt: skip
        if engine == "ray":
            from polycap.batch.ray_engine import run_ray_job

            summary = run_ray_job(cfg, address=ray_address or os.environ.get("RAY_ADDRESS"), actors=actors,
                                  num_cpus=num_cpus, num_gpus=num_gpus, shard_size=shard_size)  # fmt: skip
        elif engine == "local":
            summary = run_job(cfg)
        else:
            raise OptionError(f"--engine must be local or ray, got {engine!r}")
    except (OptionError, PolycapError) as e:
        raise usage_error(str(e)) from e
    if not quiet:
        _print_summary(summary)
    typer.echo(json.dumps(summary.to_dict(), ensure_ascii=False))
    if summary.failed or summary.failed_before:
        raise typer.Exit(EXIT_SOME_FAILED)


def _print_summary(summary) -> None:
    """A few human lines on stderr; the JSON summary goes to stdout."""
    s = summary
    skipped = s.already_done + s.existing + s.failed_before
    err.print(
        f"done: {s.captioned} captioned, {skipped} skipped ({s.already_done} done before, {s.existing} with a "
        f"caption already, {s.failed_before} failed before), {s.failed} failed; {s.images_per_s:.1f} images/s"
    )
    for reason, n in s.reasons.most_common(5):
        err.print(f"  failed x{n}: {reason}")
    if s.failed_before:
        err.print("  rerun with --retry-failed to caption the failed items again")
    for note in s.notes[:5]:
        err.print(f"note: {note}")
