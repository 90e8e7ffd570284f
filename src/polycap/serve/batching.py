"""Micro-batching: captions for concurrent requests come out of shared model calls.

A model captions 16 images in one call in far less time than 16 calls of one image, so the server
queues each request as a :class:`Job` and one worker task takes jobs off the queue, waits up to
``batch_window_ms`` for more (until ``max_batch_size`` images), groups them by (model, options) and
runs each group through the model in the inference thread. While that thread works, new requests
pile up in the queue and make up the next batch, so batches grow with load by themselves.

* The queue is bounded (``max_queue`` jobs): a full queue refuses at once (:class:`QueueFull`, a 503
  for the client), so memory never grows with the backlog.
* Model calls run in one dedicated thread, off the event loop, one at a time: torch already uses
  every core for one call, and backends need not be thread-safe.
* With batching off every job runs alone, in arrival order (the baseline the benchmark compares).
* A job whose client has gone (504, disconnect) is cancelled: dropped from the queue if it is still
  waiting, and skipped between model calls if it is running, so it never keeps the model busy for
  the next request. Model calls are at most ``max_batch_size`` images in one language each, so the
  work left after a cancellation is at most one such call.
* ``close()`` stops accepting jobs, finishes everything already queued, then stops the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from polycap.backends.base import Captioner
from polycap.errors import ImageError
from polycap.images import load_image
from polycap.types import Caption, GenerationOptions

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The request queue is full; the client should retry later."""


class ShuttingDown(Exception):
    """The server is shutting down and takes no new work."""


@dataclass
class ImageItem:
    """One image of a request: encoded bytes, or the error that already ruled it out (a failed fetch)."""

    name: str
    data: bytes | None = None
    error: str | None = None


@dataclass
class Job:
    """One request's work for one model: its images, in several languages, with one set of options.

    ``options`` were validated against the model for every language in ``langs`` before queueing.
    """

    captioner: Captioner
    options: GenerationOptions
    langs: tuple[str, ...]
    items: list[ImageItem]
    future: asyncio.Future[list[Caption]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    cancelled: threading.Event = field(default_factory=threading.Event)  # read by the inference thread

    @property
    def n_images(self) -> int:
        return len(self.items)

    @property
    def live(self) -> bool:
        """Someone still waits for this job's captions."""
        return not (self.future.done() or self.cancelled.is_set())

    def cancel(self) -> None:
        """The client has gone: drop the job if it waits, stop it between model calls if it runs."""
        self.cancelled.set()
        self.future.cancel()

    def group_key(self) -> tuple[int, tuple[tuple[str, Any], ...]]:
        """Jobs with the same model and options (the language aside) share model calls."""
        opts = self.options.to_dict()
        opts.pop("lang")
        return id(self.captioner), tuple(sorted(opts.items()))


@dataclass
class BatcherStats:
    batches: int = 0  # model-call rounds (one per group)
    jobs: int = 0
    images: int = 0
    largest_batch: int = 0  # images in the largest round
    expired: int = 0  # jobs whose client gave up before their turn (dropped unrun)
    cancelled: int = 0  # jobs whose client gave up while they ran (stopped between model calls)


class MicroBatcher:
    """The request queue and the worker that turns it into batched model calls."""

    def __init__(
        self,
        *,
        max_queue: int = 64,
        max_batch_size: int = 16,
        batch_window_ms: float = 5.0,
        batching: bool = True,
        max_pixels: int | None = None,
    ):
        self.max_batch_size = max_batch_size
        self.window_s = batch_window_ms / 1000.0
        self.batching = batching
        self.max_pixels = max_pixels
        self.stats = BatcherStats()
        self._queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="polycap-infer")
        self._worker: asyncio.Task[None] | None = None
        self._accepting = False
        self.in_flight = 0

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker on the running event loop."""
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="polycap-batcher")
            self._accepting = True

    @property
    def running(self) -> bool:
        return self._accepting and self._worker is not None and not self._worker.done()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def close(self, timeout_s: float = 30.0) -> None:
        """Stop taking jobs, let queued and running ones finish (up to ``timeout_s``), then stop."""
        self._accepting = False
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except asyncio.TimeoutError:
            log.warning("shutdown: %d queued request(s) dropped after %.0f s", self._queue.qsize(), timeout_s)
            self._fail_queued(ShuttingDown("the server shut down before this request was served"))
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=True)

    # ---- submitting ------------------------------------------------------------------------
    def submit(self, job: Job) -> asyncio.Future[list[Caption]]:
        """Queue ``job`` and return the future of its captions; raises QueueFull or ShuttingDown at once."""
        if not self._accepting:
            raise ShuttingDown("the server is shutting down")
        if self._queue.full():
            self._drop_dead()
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull(f"the request queue is full ({self._queue.maxsize} waiting)") from None
        return job.future

    def _drop_dead(self) -> None:
        """Take the jobs nobody waits for any more out of the queue, keeping the others in order."""
        taken: list[Job] = []
        while not self._queue.empty():
            taken.append(self._queue.get_nowait())
        live = [job for job in taken if job.live]
        for job in live:
            self._queue.put_nowait(job)
        for _ in taken:  # after the re-puts, so the unfinished count never touches zero meanwhile
            self._queue.task_done()
        self.stats.expired += len(taken) - len(live)

    # ---- the worker ------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            batch = await self._collect()
            try:
                await self._run(batch)
            except BaseException as e:  # never let one bad batch kill the worker or strand its clients
                if not isinstance(e, asyncio.CancelledError):
                    log.exception("batch failed")
                error = e if isinstance(e, Exception) else ShuttingDown("the server stopped during this request")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
                if not isinstance(e, Exception):
                    raise
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _collect(self) -> list[Job]:
        """The next batch: one live job, plus (batching on) whatever arrives within the window."""
        batch = [await self._next_live()]
        if not self.batching:
            return batch
        n = batch[0].n_images
        deadline = time.monotonic() + self.window_s
        while n < self.max_batch_size:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                except asyncio.CancelledError:  # stopped mid-window: the jobs taken so far must not hang
                    for taken in batch:
                        if not taken.future.done():
                            taken.future.set_exception(ShuttingDown("the server stopped during this request"))
                        self._queue.task_done()
                    raise
            if not job.live:  # its client gave up while it waited: it takes no room in the batch
                self._expire(job)
                continue
            batch.append(job)
            n += job.n_images
        return batch

    async def _next_live(self) -> Job:
        while True:
            job = await self._queue.get()
            if job.live:
                return job
            self._expire(job)

    def _expire(self, job: Job) -> None:
        self.stats.expired += 1
        self._queue.task_done()

    async def _run(self, batch: list[Job]) -> None:
        live = [job for job in batch if job.live]
        self.stats.expired += len(batch) - len(live)
        groups: dict[Any, list[Job]] = {}
        for job in live:
            groups.setdefault(job.group_key(), []).append(job)
        loop = asyncio.get_running_loop()
        for jobs in groups.values():
            jobs = [job for job in jobs if job.live]  # an earlier group may have taken long
            if not jobs:
                continue
            n = sum(j.n_images for j in jobs)
            self.stats.batches += 1
            self.stats.jobs += len(jobs)
            self.stats.images += n
            self.stats.largest_batch = max(self.stats.largest_batch, n)
            self.in_flight += len(jobs)
            try:
                results = await loop.run_in_executor(
                    self._executor, caption_group, jobs, self.max_pixels, self.max_batch_size
                )
            finally:
                self.in_flight -= len(jobs)
            for job, caps in zip(jobs, results):
                if job.cancelled.is_set():
                    self.stats.cancelled += 1
                elif not job.future.done():
                    job.future.set_result(caps)

    def _fail_queued(self, error: Exception) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if not job.future.done():
                job.future.set_exception(error)
            self._queue.task_done()


# ---- the inference thread -------------------------------------------------------------------


def caption_group(jobs: Sequence[Job], max_pixels: int | None, batch_size: int) -> list[list[Caption]]:
    """Caption every job of one (model, options) group; runs in the inference thread.

    Each image is decoded once, then captioned once per language in model calls of at most
    ``batch_size`` images, shared by every job that wants that language (``caption_many`` isolates
    per-item failures). Before each call, jobs whose client has gone are left out, and a call with
    no live job left is not made. Returns, per job, its captions image-major (all languages of
    image 1, then image 2); a cancelled job's list is incomplete and nobody reads it.
    """
    captioner, base = jobs[0].captioner, jobs[0].options
    decoded = [[_decode(item, max_pixels) for item in job.items] if job.live else [] for job in jobs]
    table: dict[tuple[int, int, str], Caption] = {}
    for lang in dict.fromkeys(lang for job in jobs for lang in job.langs):
        wanted = [
            (j, i, img)
            for j, job in enumerate(jobs)
            if lang in job.langs
            for i, img in enumerate(decoded[j])
            if isinstance(img, Image.Image)
        ]
        opts = replace(base, lang=lang)
        for start in range(0, len(wanted), batch_size):
            chunk = [(j, i, img) for j, i, img in wanted[start : start + batch_size] if jobs[j].live]
            if not chunk:
                continue
            caps = captioner.caption_many([img for _, _, img in chunk], opts, batch_size=batch_size)
            for (j, i, _), cap in zip(chunk, caps):
                table[j, i, lang] = cap
    out: list[list[Caption]] = []
    for j, job in enumerate(jobs):
        caps = []
        for i, item in enumerate(job.items if job.live else ()):
            for lang in job.langs:
                cap = table.get((j, i, lang))
                if cap is None:  # the image never decoded: its error, once per language
                    cap = Caption.failed(str(decoded[j][i]), lang, captioner.name)
                cap.source = item.name
                caps.append(cap)
        out.append(caps)
    return out


def _decode(item: ImageItem, max_pixels: int | None) -> Image.Image | str:
    """The decoded image, or an error message that names the image by its client-given name."""
    if item.error is not None:
        return item.error
    data, item.data = item.data or b"", None  # the encoded bytes are not needed once decoded
    try:
        return load_image(data, max_pixels=max_pixels)
    except ImageError as e:
        message = str(e)
        prefix = f"{e.source}: " if e.source else ""
        return f"{item.name}: {message[len(prefix) :] if message.startswith(prefix) else message}"
