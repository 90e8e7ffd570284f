"""``polycap caption``: caption files, folders and globs in one or more languages."""

from __future__ import annotations

import io
import itertools
import os
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from polycap.cli import gen_flags as F
from polycap.cli.common import EXIT_SOME_FAILED, err, load_model, split_langs, usage_error
from polycap.cli.output import FORMATS, RecordWriter, error_line, escape_text
from polycap.errors import OptionError, PolycapError
from polycap.types import Caption

if TYPE_CHECKING:
    from polycap.images import FileScan


@F.generation_flags(F.CAPTION_DEFAULTS)
def caption_cmd(
    inputs: list[str] = typer.Argument(..., help="Image files, folders (recursive) or glob patterns."),
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
    fmt: str = typer.Option("text", "--format", "-f", help=f"Output format: {', '.join(FORMATS)}."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write records here instead of stdout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an --out file that is not empty."),
    device: str = F.DEVICE,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or notices."),
) -> None:
    """Caption images; one record per image per language. Exit 1 if any item failed."""
    _never_raise_on_output()
    if fmt not in FORMATS:
        raise usage_error(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if out is not None:
        check_out_path(out, overwrite)
    try:
        langs = split_langs(lang)
        scan = find_inputs(inputs, quiet)
        paths = scan.paths
        model, extra = F.model_load_kwargs(
            model, langs, prompt=prompt, prompt_file=prompt_file, base_url=base_url, no_cache=no_cache,
            max_side=max_side, rewriter=rewriter, translator=translator, dtype=dtype,
            concepts=concepts,
        )  # fmt: skip
        captioner = load_model(model, device, quiet, **extra)
        options = captioner.make_options(lang=(langs or [captioner.default_lang])[0], **(generation or {}))
        results = captioner.iter_captions(
            [str(p) for p in paths], options, batch_size=batch_size, max_pixels=max_pixels, langs=langs
        )
        unlisted = [
            Caption.failed(f"cannot list the folder: {reason}", lg, captioner.name, str(folder))
            for folder, reason in scan.unreadable
            for lg in langs or [options.lang]
        ]
        total = len(paths) * len(langs or [None]) + len(unlisted)
        n_failed = _write_all(itertools.chain(unlisted, results), total, fmt, out, quiet)
    except OptionError as e:
        raise usage_error(str(e)) from e
    except PolycapError as e:
        raise usage_error(str(e)) from e
    if n_failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def find_inputs(inputs: list[str], quiet: bool) -> FileScan:
    """Expand the inputs; say what the walk left out, and fail (exit 2) when nothing is left."""
    from polycap.images import scan_image_files

    scan = scan_image_files(inputs)
    if not scan.paths and not scan.unreadable:
        skipped = f" ({_skipped_summary(scan.skipped)})" if scan.skipped else ""
        raise usage_error(f"no images found in: {_shown(' '.join(inputs))}{skipped}")
    if scan.skipped and not quiet:
        note = f"note: {_skipped_summary(scan.skipped)}; name a file explicitly to caption it anyway"
        err.print(note, markup=False, emoji=False)
    return scan


def check_out_path(out: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that cannot be written, or would lose earlier results, before the
    model loads (seconds) rather than after."""
    shown = _shown(str(out))
    if out.is_dir():
        raise usage_error(f"--out {shown} is a folder; give a file name, e.g. {_shown(str(out / 'captions.jsonl'))}")
    parent = out.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise usage_error(f"--out {shown}: the folder {_shown(str(parent))} {what}")
    if out.is_file() and out.stat().st_size > 0 and not overwrite:
        raise usage_error(
            f"--out {shown} already exists and is not empty ({out.stat().st_size:,} bytes); pass --overwrite "
            "to replace it, or write to a new file (`polycap batch` runs resumable jobs: run it again to continue)"
        )
    if not os.access(out if out.exists() else parent, os.W_OK):
        raise usage_error(f"--out {shown}: permission denied")


def _write_all(results: Iterable[Caption], total: int, fmt: str, out: Path | None, quiet: bool) -> int:
    """Write records as they come; per-item errors also go to stderr. Returns the failure count."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    show = not quiet and total > 3 and sys.stderr.isatty()
    try:
        # backslashreplace: a text the escaping missed costs a character, never the job
        stream = out.open("w", encoding="utf-8", errors="backslashreplace", newline="") if out else sys.stdout
    except OSError as e:
        raise usage_error(f"cannot write --out {_shown(str(out))}: {e.strerror or e}") from e
    writer = RecordWriter(stream, fmt)
    failed = 0
    progress = Progress(
        TextColumn("captioning"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not show,
        transient=True,
    )
    try:
        with progress:
            task = progress.add_task("caption", total=total)
            for c in results:
                if not c.ok:
                    failed += 1
                    err.print(error_line(c), markup=False, emoji=False)
                writer.write(c)
                progress.advance(task)
        writer.close()
    finally:
        if out:
            stream.close()
    return failed


def _never_raise_on_output() -> None:
    """Let stdout/stderr escape what their encoding cannot carry (an ASCII or Latin-1 terminal,
    a stray surrogate) instead of raising UnicodeEncodeError halfway through a job."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")


def _shown(text: str) -> str:
    """A name or path as one printable line (undecodable bytes as \\xNN, tabs as \\t, ...)."""
    return escape_text(text, controls=True)


def _skipped_summary(skipped: list[Path]) -> str:
    """What a folder walk left out, e.g. "skipped 3 files that are hidden or have no image suffix
    (.txt: 2, hidden: 1)"."""
    kinds = Counter("hidden" if p.name.startswith(".") else (p.suffix.lower() or "no suffix") for p in skipped)
    parts = [f"{_shown(k)}: {n}" for k, n in kinds.most_common(6)]
    if len(kinds) > 6:
        parts.append("...")
    n = len(skipped)
    what = "1 file that is hidden or has" if n == 1 else f"{n} files that are hidden or have"
    return f"skipped {what} no image suffix ({', '.join(parts)})"
