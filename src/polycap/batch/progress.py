"""Progress of a batch job: a bar with rate and ETA on a terminal, a JSON line every N seconds in logs."""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any


class Progress:
    """Counts images as they finish and shows it: ``mode`` is ``bar``, ``json``, ``off`` or ``auto``
    (a bar when ``stream`` is a terminal, JSON lines otherwise)."""

    def __init__(self, total: int | None, mode: str = "auto", every: float = 30.0, stream: IO[str] | None = None):
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "json"
        self.mode, self.total, self.every = mode, total, every
        self.done = self.failed = self.skipped = 0
        self.start = self.last = time.monotonic()
        self._bar: Any = None

    def __enter__(self) -> Progress:
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            console = Console(file=self.stream, markup=False, highlight=False)
            self._bar = Bar(
                TextColumn("captioning"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(), console=console, transient=True,
            )  # fmt: skip
            self._bar.__enter__()
            self._task = self._bar.add_task("batch", total=self.total, rate="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    @property
    def rate(self) -> float:
        """Images captioned per second in this run (skipped ones do not count)."""
        elapsed = time.monotonic() - self.start
        return (self.done + self.failed) / elapsed if elapsed > 0 else 0.0

    def update(self, done: int = 0, failed: int = 0, skipped: int = 0) -> None:
        self.done += done
        self.failed += failed
        self.skipped += skipped
        if self._bar is not None:
            self._bar.update(self._task, advance=done + failed + skipped, rate=f"{self.rate:.1f} img/s")
        elif self.mode == "json" and time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            self.stream.write(json.dumps(self.snapshot()) + "\n")
            self.stream.flush()

    def snapshot(self) -> dict[str, Any]:
        seen = self.done + self.failed + self.skipped
        left = None if self.total is None else max(0, self.total - seen)
        rate = self.rate
        eta = round(left / rate, 1) if left is not None and rate > 0 else None
        return {
            "event": "progress", "done": self.done, "failed": self.failed, "skipped": self.skipped,
            "total": self.total, "images_per_s": round(rate, 2), "eta_s": eta,
        }  # fmt: skip
