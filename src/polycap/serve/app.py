"""The FastAPI application: REST API under ``/v1``, probes, OpenAPI, and the web page at ``/``.

``create_app(settings)`` builds everything; tests pass ready captioner instances (or a loader) so
they can serve fakes. A caption request goes: auth -> admission (``max_active_requests``) ->
a body slot if the body is large (``max_large_bodies``) -> parse, off the event loop, and limits
(400/413/415/422) -> model -> options and work budget (422) -> pixel check (413) -> then, within
``request_timeout_s`` (504 beyond it) and while the client stays connected: URL fetches
(``max_fetches`` at once, each within ``fetch_timeout_s``; per-item errors) -> the micro-batcher
queue (503 when full) -> one record per image per language, with per-item errors. A request that
times out or whose client disconnects is cancelled, so it stops using the model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import io
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from polycap._version import __version__
from polycap.backends.base import Captioner
from polycap.errors import ImageError, OptionError
from polycap.records import record
from polycap.registry import get_registry
from polycap.serve.batching import ImageItem, Job, MicroBatcher, QueueFull, ShuttingDown
from polycap.serve.middleware import ServeMiddleware
from polycap.serve.models import ModelPool, ModelUnavailable, UnknownModel
from polycap.serve.parsing import (
    BadRequest,
    BodyGate,
    RequestImage,
    check_work,
    openapi_request_body,
    read_caption_request,
)
from polycap.serve.settings import ServeSettings
from polycap.types import GenerationOptions

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"
RETRY_AFTER_S = "1"
Fetcher = Callable[[str], Awaitable[bytes]]
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")  # in PIL's DecompressionBombError message


class ClientGone(Exception):
    """The client closed the connection before its captions were ready."""


class SafeJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: an error message that quotes client input
    (even text that is not valid Unicode) can always be sent."""

    def render(self, content: Any) -> bytes:
        import json

        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


# ---- response shapes (for the OpenAPI document; responses are built from cli.output.record) ----
class CaptionRecord(BaseModel):
    image: str | None
    lang: str
    caption: str
    score: float | None = None
    model: str
    seconds: float | None = None
    error: str | None = None


class CaptionsResponse(BaseModel):
    request_id: str
    model: str
    n_images: int
    n_failed: int
    results: list[CaptionRecord]


class ErrorResponse(BaseModel):
    detail: str


def create_app(
    settings: ServeSettings | None = None,
    *,
    captioners: Sequence[Captioner] | None = None,
    loader: Callable[[str], Captioner] | None = None,
    fetcher: Fetcher | None = None,
) -> FastAPI:
    """Build the app. ``captioners``: serve these ready instances (the first is the default) instead
    of loading ``settings.models``; ``loader``: how a served name becomes a captioner (default: the
    registry's ``load(name, device=settings.device)``, what ``polycap.load`` does); ``fetcher``: an
    async function turning an allowed image URL into bytes (default :func:`polycap.net.fetch_image`
    with the settings' limits; tests pass one with a looser address policy). Whatever the fetcher,
    the server runs at most ``max_fetches`` at once and cuts each off after ``fetch_timeout_s``."""
    settings = settings or ServeSettings.from_env()
    if captioners:
        pool = ModelPool.from_captioners(captioners)
    else:
        registry = get_registry()
        names = list(settings.models) or [registry.default_model()]
        pool = ModelPool(names, loader or (lambda name: registry.load(name, device=settings.device)))

    app = FastAPI(
        title="polycap",
        version=__version__,
        description="Multilingual image captions over HTTP. The web page is at /, these docs at /docs.",
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings, app.state.pool = settings, pool
    app.state.fetcher = fetcher or _default_fetcher(settings, app)
    app.state.active, app.state.shutting_down, app.state.batcher = 0, False, None
    app.state.body_gate, app.state.fetch_slots, app.state.dns_pool = BodyGate(None), None, None  # set at startup
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(_api_router(settings))
    app.include_router(_probe_router())
    _add_pages(app)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(ServeMiddleware, max_body_bytes=settings.max_upload_bytes)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the batcher and preload the default model; at shutdown, drain the queue first."""
    settings: ServeSettings = app.state.settings
    if settings.torch_threads is not None:
        import torch

        torch.set_num_threads(settings.torch_threads)
    batcher = MicroBatcher(
        max_queue=settings.max_queue,
        max_batch_size=settings.max_batch_size,
        batch_window_ms=settings.batch_window_ms,
        batching=settings.batching,
        max_pixels=settings.max_pixels,
    )
    batcher.start()
    # Made here, on the serving loop, so that an app served twice (tests) gets fresh ones.
    app.state.dns_pool = ThreadPoolExecutor(settings.max_fetches, thread_name_prefix="polycap-dns")
    app.state.fetch_slots = asyncio.Semaphore(settings.max_fetches)
    app.state.body_gate = BodyGate(settings.max_large_bodies)
    app.state.batcher, app.state.shutting_down = batcher, False
    preload = None
    if settings.preload:
        preload = asyncio.get_running_loop().create_task(_preload(app.state.pool))
    try:
        yield
    finally:
        app.state.shutting_down = True
        log.info("shutting down: finishing %d queued request(s)", batcher.queued)
        await batcher.close(settings.drain_timeout_s)
        if preload is not None and not preload.done():
            preload.cancel()
        app.state.dns_pool.shutdown(wait=False, cancel_futures=True)


async def _preload(pool: ModelPool) -> None:
    try:
        await pool.get(pool.default)
        log.info("model %r loaded; ready", pool.default)
    except ModelUnavailable:
        pass  # logged by the pool; /readyz stays 503 and says why


# ---- routes ---------------------------------------------------------------------------------
def _api_router(settings: ServeSettings) -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Depends(_require_key)], tags=["captions"])
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 415, 422, 503, 504)
    }
    router.add_api_route(
        "/captions",
        _captions,
        methods=["POST"],
        summary="Caption one or more images in one or more languages",
        response_model=CaptionsResponse,
        responses=errors,
        openapi_extra={"requestBody": openapi_request_body()},
    )
    router.add_api_route("/models", _models, methods=["GET"], summary="Served models, their languages and limits")
    return router


def _probe_router() -> APIRouter:
    router = APIRouter(tags=["probes"])
    router.add_api_route("/healthz", _healthz, methods=["GET"], summary="Liveness: the process answers")
    router.add_api_route(
        "/readyz", _readyz, methods=["GET"], summary="Readiness: the default model is loaded and work is accepted"
    )
    return router


def _add_pages(app: FastAPI) -> None:
    """The web page and the docs: local static files only (no CDN), so both work offline."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/ui", include_in_schema=False)
    async def ui() -> RedirectResponse:
        return RedirectResponse("/")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs.html")


async def _require_key(request: Request) -> None:
    """With an API key configured, /v1 needs ``Authorization: Bearer <key>`` (compared in constant time)."""
    key = request.app.state.settings.api_key
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise HTTPException(
            401, "missing or invalid API key: send 'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"}
        )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Every HTTP error as ``{"detail": ...}``, sendable whatever client text the message quotes."""
    assert isinstance(exc, StarletteHTTPException)
    return SafeJSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug: a JSON 500 naming the request id (the traceback goes to the server log, not the client)."""
    request_id = getattr(request.state, "request_id", "?")
    return SafeJSONResponse({"detail": f"internal error (request id {request_id})"}, status_code=500)


async def _healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _readyz(request: Request) -> JSONResponse:
    state = request.app.state
    pool: ModelPool = state.pool
    batcher: MicroBatcher | None = state.batcher
    body: dict[str, Any] = {"default_model": pool.default, "queued": batcher.queued if batcher else 0}
    if batcher is not None:
        body["in_flight"] = batcher.in_flight
        body["batches"] = dataclasses.asdict(batcher.stats)  # how well micro-batching is working
    if state.shutting_down:
        body["status"] = "shutting down"
    elif batcher is None or not batcher.running:
        body["status"] = "not started"
    elif not pool.is_loaded(pool.default):
        body["status"] = "error" if pool.default in pool.errors else "loading"
        if pool.default in pool.errors:
            body["error"] = pool.errors[pool.default]
    else:
        body["status"] = "ready"
    return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)


async def _models(request: Request) -> dict[str, Any]:
    pool: ModelPool = request.app.state.pool
    registry = {m["name"]: m for m in get_registry().list_models()}
    return {"default": pool.default, "models": pool.info(registry), "limits": request.app.state.settings.public()}


async def _captions(request: Request) -> JSONResponse:
    state = request.app.state
    if state.active >= state.settings.max_active_requests:
        raise HTTPException(503, "too many requests in progress; retry shortly", {"Retry-After": RETRY_AFTER_S})
    state.active += 1
    try:
        return await _caption_request(request)
    except BadRequest as e:
        raise HTTPException(e.status, e.message, e.headers) from None
    finally:
        state.active -= 1
        if state.active == 0:
            state.body_gate.after_idle()


async def _caption_request(request: Request) -> JSONResponse:
    settings: ServeSettings = request.app.state.settings
    req = await read_caption_request(request, settings, request.app.state.body_gate)
    request.state.n_images = len(req.images)
    captioner, name = await _captioner(request.app.state.pool, req.model)
    request.state.model = name
    langs = tuple(req.langs or [captioner.default_lang])
    options = _validated_options(captioner, req.options, langs)
    check_work(len(req.images), langs, options, settings)
    await asyncio.to_thread(_check_pixels, req.images, settings.max_pixels)
    timeout_s = settings.request_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            caps = await _while_connected(request, _fetch_and_caption(request, captioner, options, langs, req.images))
    except TimeoutError:
        raise HTTPException(504, f"captioning did not finish within {timeout_s:g} s; try fewer images") from None
    except ClientGone:
        log.info("request %s: the client disconnected; its work was cancelled", request.state.request_id)
        raise HTTPException(499, "client closed the connection") from None
    records = [record(c) for c in caps]
    body = {
        "request_id": request.state.request_id,
        "model": name,
        "n_images": len(req.images),
        "n_failed": sum(1 for r in records if r["error"]),
        "results": records,
    }
    return JSONResponse(body)


async def _fetch_and_caption(
    request: Request,
    captioner: Captioner,
    options: GenerationOptions,
    langs: tuple[str, ...],
    images: Sequence[RequestImage],
) -> list[Any]:
    state = request.app.state
    items = await _materialise(images, state.fetcher, state.fetch_slots, state.settings.fetch_timeout_s)
    return await _run_job(request, Job(captioner, options, langs, items))


async def _while_connected(request: Request, work: Coroutine[Any, Any, Any]) -> Any:
    """Run ``work`` until it finishes or the client disconnects (then ClientGone); cancelled either
    way if this is (a timeout), so nothing keeps running for a client that is not there."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise ClientGone()
    finally:
        for t in (task, gone):
            t.cancel()
        await asyncio.gather(task, gone, return_exceptions=True)


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body is read, so the only message left is that one)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _captioner(pool: ModelPool, requested: str | None) -> tuple[Captioner, str]:
    try:
        name = pool.resolve_name(requested)
        return await pool.get(name), name
    except UnknownModel as e:
        raise HTTPException(404, str(e)) from None
    except ModelUnavailable as e:
        raise HTTPException(503, str(e), {"Retry-After": "10"}) from None


def _validated_options(captioner: Captioner, raw: dict[str, Any], langs: Sequence[str]) -> GenerationOptions:
    """Options checked against the model for every requested language, before any work is queued."""
    try:
        base = captioner.make_options(lang=langs[0], **raw)
        for lang in langs[1:]:
            captioner.make_options(base, lang=lang)
    except OptionError as e:
        raise HTTPException(422, str(e)) from None
    return base


def _check_pixels(images: Sequence[RequestImage], max_pixels: int) -> None:
    """Refuse (413) uploads whose header declares more pixels than allowed, before decoding any.

    Images that cannot even be opened are left alone here: they fail later as per-item errors.
    """
    from PIL import Image

    for img in images:
        if img.data is None:
            continue
        try:
            with Image.open(io.BytesIO(img.data)) as im:
                width, height = im.size
            pixels, what = width * height, f"{width}x{height} = {width * height:,} pixels"
        except Image.DecompressionBombError as e:  # PIL's own limit tripped: its message has the count
            found = _BOMB_PIXELS.search(str(e))
            pixels = int(found[1]) if found else max_pixels + 1
            what = f"{pixels:,} pixels" if found else "more pixels than PIL opens without a warning"
        except Exception:  # noqa: BLE001 - not an image: a per-item error later
            continue
        if pixels > max_pixels:
            raise BadRequest(
                413,
                f"{img.name}: image too large: {what}; this server accepts at most {max_pixels:,} pixels per image",
            )


def _default_fetcher(settings: ServeSettings, app: FastAPI) -> Fetcher:
    """:func:`polycap.net.fetch_image` with the settings' limits; name lookups run in the
    app's own bounded pool (``max_fetches`` threads), never in the default executor."""
    from polycap.net import fetch_image

    async def fetch(url: str) -> bytes:
        return await fetch_image(
            url,
            max_bytes=settings.max_upload_bytes,
            timeout_s=settings.fetch_timeout_s,
            max_redirects=settings.max_redirects,
            executor=app.state.dns_pool,
        )

    return fetch


async def _materialise(
    images: Sequence[RequestImage], fetcher: Fetcher, slots: asyncio.Semaphore, timeout_s: float
) -> list[ImageItem]:
    """Uploaded bytes as they are; URLs fetched concurrently, at most ``slots`` at once in the whole
    server, each within ``timeout_s`` (waiting for a slot included). Each failure is that item's error."""
    from polycap.net import redact_url

    async def one(img: RequestImage) -> ImageItem:
        if img.url is None:
            data, img.data = img.data, None  # one owner of the bytes: they go once decoded
            return ImageItem(img.name, data=data)
        try:
            async with asyncio.timeout(timeout_s), slots:
                data = await fetcher(img.url)
        except TimeoutError:
            return ImageItem(img.name, error=f"{redact_url(img.url)}: timed out after {timeout_s:g} s")
        except ImageError as e:
            return ImageItem(img.name, error=str(e))
        return ImageItem(img.name, data=data)

    return list(await asyncio.gather(*(one(img) for img in images)))


async def _run_job(request: Request, job: Job) -> list[Any]:
    """Queue ``job`` and wait for its captions; if this wait is cancelled (timeout, disconnect),
    the job is cancelled too."""
    batcher: MicroBatcher | None = request.app.state.batcher
    if batcher is None or request.app.state.shutting_down:
        raise HTTPException(503, "the server is not accepting work (starting or shutting down)", {"Retry-After": "5"})
    try:
        future = batcher.submit(job)
    except QueueFull as e:
        raise HTTPException(503, f"{e}; retry shortly", {"Retry-After": RETRY_AFTER_S}) from None
    except ShuttingDown as e:
        raise HTTPException(503, str(e), {"Retry-After": "5"}) from None
    try:
        return await asyncio.shield(future)
    except ShuttingDown as e:
        raise HTTPException(503, str(e), {"Retry-After": "5"}) from None
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001 - a bug, not the client's fault: say so without details
        log.error("request %s failed: %s: %s", request.state.request_id, type(e).__name__, e)
        raise HTTPException(500, f"internal error (request id {request.state.request_id})") from None
    finally:
        if not future.done():
            job.cancel()
