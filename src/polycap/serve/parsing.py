"""Turn a ``POST /v1/captions`` body (multipart upload or JSON with base64) into one typed request.

Both body kinds carry the same fields, so both end in :class:`CaptionRequest` and everything
after parsing is shared. Errors are :class:`BadRequest` with the HTTP status and a message that
names the field and what is allowed; option values are checked by ``GenerationOptions`` itself,
so the server accepts exactly what the library accepts (minus the server's own limits).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ctypes
import ctypes.util
import functools
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from polycap.images import is_url
from polycap.net import redact_url
from polycap.serve.settings import ServeSettings
from polycap.types import GenerationOptions, option_specs

# Generation options a request may set, with their types ("int", "int | None", ...): every
# GenerationOptions field but lang, from the same list the CLI flags are made from.
OPTION_SPECS = {spec.name: spec for spec in option_specs()}
OPTION_TYPES: dict[str, str] = {n: s.type.__name__ + (" | None" if s.optional else "") for n, s in OPTION_SPECS.items()}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # lone surrogates: valid JSON escapes, not encodable text
_DATA_URL = re.compile(r"^data:[\w.+/-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


class BadRequest(Exception):
    """A request the server refuses as sent; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


LARGE_BODY_BYTES = 1024 * 1024  # bodies above this (or of unknown length) need a BodyGate slot


class BodyGate:
    """At most ``limit`` large request bodies are read and parsed at once; the others wait.

    A JSON body costs about twice its size while it is parsed, and 32 clients posting 19 MB each
    would otherwise be read and parsed all at once. A waiting body stays in its socket (uvicorn
    stops reading a connection until the app asks for more), so waiting costs no memory. Once the
    server is idle after large bodies, :meth:`after_idle` hands free heap memory back to the OS:
    glibc keeps it otherwise, and an idle server would stay at its peak size.
    """

    def __init__(self, limit: int | None):
        self._slots = asyncio.Semaphore(limit) if limit else None
        self._dirty = False  # large bodies were handled since memory was last given back

    @contextlib.asynccontextmanager
    async def slot(self, request: Any, timeout_s: float) -> Any:
        """Hold a slot while the body of ``request`` is read and parsed (small bodies need none)."""
        length = request.headers.get("content-length", "")
        if self._slots is None or (length.isdigit() and int(length) <= LARGE_BODY_BYTES):
            yield
            return
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout_s)
        except TimeoutError:
            raise BadRequest(503, "too many large uploads in progress; retry shortly", {"Retry-After": "1"}) from None
        self._dirty = True
        try:
            yield
        finally:
            self._slots.release()

    def after_idle(self) -> None:
        """Called when no request is in progress: give memory back (in a thread) if large bodies came."""
        if self._dirty:
            self._dirty = False
            asyncio.get_running_loop().run_in_executor(None, release_free_memory)


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None (another C library, or not Linux)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Return freed heap memory to the OS where the C library allows it (glibc: ``malloc_trim``)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@dataclass
class RequestImage:
    """One image of a request: uploaded bytes or (when the server allows it) a URL to fetch."""

    name: str
    data: bytes | None = None
    url: str | None = None


@dataclass
class CaptionRequest:
    model: str | None = None
    langs: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # GenerationOptions fields except lang
    images: list[RequestImage] = field(default_factory=list)


async def read_caption_request(request: Any, settings: ServeSettings, gate: BodyGate | None = None) -> CaptionRequest:
    """Parse and check the body of a caption request (a Starlette ``Request``).

    A large body waits for a slot of ``gate`` before it is read; JSON is decoded and parsed in a
    worker thread, so a 20 MB body never holds up the event loop (and /healthz with it).
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("multipart/form-data", "application/json"):
        raise BadRequest(
            415, f"unsupported content type {ctype or 'none'!r}; send multipart/form-data or application/json"
        )
    async with (gate or BodyGate(None)).slot(request, settings.request_timeout_s):
        if ctype == "multipart/form-data":
            req = await _from_form(request, settings)
        else:
            box = [await _read_body(request)]
            req = await asyncio.to_thread(_parse_json_body, box, settings)
    check_limits(req, settings)
    return req


async def _read_body(request: Any) -> bytearray:
    """The whole body, without Starlette's cached copy (``request.body()`` keeps one for the request's life)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
    return body


def _parse_json_body(box: list[bytearray], settings: ServeSettings) -> CaptionRequest:
    """Decode, parse and check a JSON body (in a worker thread). ``box`` holds the only reference
    to the raw bytes, so each stage's input is freed as soon as the next stage has it: the peak is
    about twice the body, not three or four times."""
    raw = box.pop()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(400, f"the body is not valid JSON: not UTF-8 ({e.reason} at byte {e.start})") from None
    del raw
    try:
        body = json.loads(text)
    except RecursionError:
        raise BadRequest(400, "the body is not valid JSON for this API: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, or an integer with more digits than Python converts
        raise BadRequest(400, f"the body is not valid JSON: {e}") from None
    del text
    try:
        _reject_surrogates(body, "body")
    except RecursionError:
        raise BadRequest(400, "the body is not valid JSON for this API: nested too deeply") from None
    return _from_json(body, settings)


def _reject_surrogates(value: Any, where: str) -> None:
    """Refuse strings with lone surrogates: ``"a\\udcff.jpg"`` is valid JSON syntax but not Unicode
    text, cannot be encoded as UTF-8, and so could never be echoed back or logged."""
    if isinstance(value, str):
        found = None if value.isascii() else _SURROGATE.search(value)
        if found:
            code = f"\\u{ord(found[0]):04x}"
            raise BadRequest(400, f"{where}: a lone surrogate ({code}) is not text; JSON strings must be valid Unicode")
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_surrogates(key, f"{where}: a field name")
            _reject_surrogates(item, key if where == "body" else f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _reject_surrogates(item, f"{where}[{i}]")


async def _from_form(request: Any, settings: ServeSettings) -> CaptionRequest:
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException

    try:
        form = await request.form(max_files=settings.max_images, max_fields=200, max_part_size=64 * 1024)
    except (MultiPartException, HTTPException) as e:  # Starlette wraps the former in a 400 HTTPException
        message = str(getattr(e, "message", None) or getattr(e, "detail", None) or e)
        if message.startswith("Too many files"):
            raise BadRequest(413, too_many_images(f"more than {settings.max_images}", settings)) from None
        raise BadRequest(400, f"invalid multipart body: {message}") from None
    try:
        return await _form_request(form, settings, UploadFile)
    finally:
        await form.close()  # spooled files over 1 MiB live on disk until closed


async def _form_request(form: Any, settings: ServeSettings, upload_type: type) -> CaptionRequest:
    req = CaptionRequest()
    raw: dict[str, Any] = {}
    langs: list[str] = []
    for key, value in form.multi_items():
        if isinstance(value, upload_type):
            req.images.append(RequestImage(_safe_name(value.filename, len(req.images)), data=await value.read()))
        elif key in ("url", "urls"):
            req.images.append(_url_image(value, len(req.images), settings))
        elif key in ("lang", "langs"):
            langs.extend(_split_langs(value))
        elif key == "model":
            req.model = value.strip() or None
        else:
            raw[key] = value
    req.langs = list(dict.fromkeys(langs)) or None
    req.options = parse_options(raw, from_text=True)
    return req


def too_many_images(count: int | str, settings: ServeSettings) -> str:
    """The one message for a request over ``max_images`` (413), whichever body kind it came in."""
    return f"too many images: {count} (this server takes at most {settings.max_images})"


def _from_json(body: Any, settings: ServeSettings) -> CaptionRequest:
    if not isinstance(body, dict):
        raise BadRequest(422, "the JSON body must be an object with an 'images' list")
    body = dict(body)
    images = body.pop("images", None)
    if not isinstance(images, list):
        raise BadRequest(422, "'images' must be a list of base64 strings, {'data': ..., 'name': ...} or {'url': ...}")
    req = CaptionRequest(model=_opt_str(body.pop("model", None), "model"))
    if len(images) > settings.max_images:
        raise BadRequest(413, too_many_images(len(images), settings))
    for i in range(len(images)):  # drop each base64 string once decoded: the body is not kept twice
        item, images[i] = images[i], None
        req.images.append(_json_image(item, i, settings))
    lang = body.pop("lang", body.pop("langs", None))
    if isinstance(lang, str):
        req.langs = _split_langs(lang)
    elif isinstance(lang, list) and all(isinstance(x, str) for x in lang):
        req.langs = list(dict.fromkeys(x.strip() for x in lang if x.strip())) or None
    elif lang is not None:
        raise BadRequest(422, f"'lang' must be a language code or a list of them, got {lang!r}")
    req.options = parse_options(body, from_text=False)
    return req


def _json_image(item: Any, index: int, settings: ServeSettings) -> RequestImage:
    if isinstance(item, str):
        item = {"url": item} if is_url(item) else {"data": item}
    if not isinstance(item, dict) or set(item) - {"data", "url", "name"} or ("data" in item) == ("url" in item):
        raise BadRequest(
            422, f"images[{index}] must be a base64 string or an object with 'data' or 'url' (and optional 'name')"
        )
    name = _safe_name(item.get("name"), index)
    if "url" in item:
        return _url_image(item["url"], index, settings, item.get("name"))
    data = item["data"]
    if not isinstance(data, str):
        raise BadRequest(422, f"images[{index}].data must be a base64 string")
    try:
        raw = _b64decode(_DATA_URL.sub("", data.strip(), count=1))
    except (binascii.Error, ValueError) as e:
        raise BadRequest(400, f"images[{index}] ({name}): not valid base64 ({e})") from e
    return RequestImage(name, data=raw)


def _b64decode(text: str, piece: int = 1 << 20) -> bytes:
    """Strict base64, decoded in 1 MiB pieces: one call on 19 MB holds the GIL for ~45 ms, and the
    event loop (/healthz included) with it; between pieces other threads get their turn."""
    if len(text) <= piece:
        return base64.b64decode(text, validate=True)
    if len(text) % 4:
        raise binascii.Error(f"the length ({len(text):,} characters) is not a multiple of 4")
    out = bytearray()
    for start in range(0, len(text), piece):  # piece is a multiple of 4: each one decodes alone
        out += base64.b64decode(text[start : start + piece], validate=True)
    return bytes(out)


def _url_image(url: Any, index: int, settings: ServeSettings, name: Any = None) -> RequestImage:
    if not isinstance(url, str) or not url.strip():
        raise BadRequest(422, f"images[{index}]: 'url' must be a non-empty string")
    if not settings.allow_urls:
        raise BadRequest(
            422,
            "image URLs are refused by this server; upload the image instead "
            "(a server accepts URLs only when started with --allow-urls)",
        )
    if not is_url(url):
        raise BadRequest(422, f"images[{index}]: only http:// and https:// URLs are accepted")
    label = _safe_name(name, index) if name else _CONTROL.sub("", redact_url(url))[:500]
    return RequestImage(label, url=url.strip())


def parse_options(raw: dict[str, Any], from_text: bool) -> dict[str, Any]:
    """Generation options from request fields; form fields (text) are converted to their types."""
    unknown = sorted(set(raw) - set(OPTION_TYPES))
    if unknown:
        raise BadRequest(
            422,
            f"unknown field(s): {', '.join(unknown)}; known: images, model, lang, {', '.join(sorted(OPTION_TYPES))}",
        )
    if not from_text:
        for name, value in raw.items():
            _check_json_type(name, OPTION_TYPES[name], value)
        return dict(raw)
    return {name: _convert(name, OPTION_TYPES[name], value) for name, value in raw.items()}


def _check_json_type(name: str, type_name: str, value: Any) -> None:
    """JSON values must already have the option's type (no silent "3" -> 3 or "no" -> True)."""
    if value is None and "None" in type_name:
        return
    base = type_name.replace("| None", "").strip()
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }.get(base, True)
    if not ok:
        kind = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}[base]
        raise BadRequest(422, f"{name} must be {kind}, got {value!r}")


def _convert(name: str, type_name: str, text: str) -> Any:
    text = text.strip()
    optional = "None" in type_name
    if optional and text.lower() in ("", "none", "null"):
        return None
    base = type_name.replace("| None", "").strip()
    try:
        if base == "int":
            return int(text)
        if base == "float":
            return float(text)
    except ValueError:
        kind = "an integer" if base == "int" else "a number"
        raise BadRequest(422, f"{name} must be {kind}, got {_shorten(text)!r}") from None
    if base == "bool":
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off", ""):
            return False
        raise BadRequest(422, f"{name} must be true or false, got {_shorten(text)!r}")
    return text


def check_limits(req: CaptionRequest, settings: ServeSettings) -> None:
    """The server's own limits, on top of what GenerationOptions validates."""
    if not req.images:
        raise BadRequest(422, "no images: upload one or more files (multipart) or send 'images' (JSON)")
    if len(req.images) > settings.max_images:
        raise BadRequest(413, too_many_images(len(req.images), settings))
    if req.langs and len(req.langs) > settings.max_langs:
        raise BadRequest(422, f"too many languages: {len(req.langs)} (at most {settings.max_langs})")
    caps = {
        "num_beams": settings.max_beams,
        "num_return_sequences": settings.max_beams,
        "max_new_tokens": settings.max_new_tokens,
        "min_new_tokens": settings.max_new_tokens,
    }
    for name, limit in caps.items():
        value = req.options.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            raise BadRequest(422, f"{name} must be <= {limit} on this server, got {value}")


def check_work(n_images: int, langs: Sequence[str], options: GenerationOptions, settings: ServeSettings) -> None:
    """Refuse (422) a request whose total decoding work is over the server's budget, before any work.

    Each limit alone (images, languages, beams, tokens) still allows a product of them that keeps
    the model busy for many seconds; the budget bounds the product. Work is counted in decoded
    tokens: images x languages x num_beams x num_return_sequences x max_new_tokens (an upper bound).
    """
    parts = (n_images, len(langs), options.num_beams, options.num_return_sequences, options.max_new_tokens)
    work = math.prod(parts)
    if work > settings.max_work:
        shown = "{} image(s) x {} language(s) x {} beam(s) x {} return(s) x {} tokens".format(*parts)
        raise BadRequest(
            422,
            f"too much work for one request: {shown} = {work:,}; this server's work budget (max_work) is "
            f"{settings.max_work:,} per request: ask for fewer images, languages, beams, returns or tokens",
        )


def _shorten(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _split_langs(value: str) -> list[str]:
    return list(dict.fromkeys(x.strip() for x in value.split(",") if x.strip()))


def _opt_str(value: Any, name: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise BadRequest(422, f"'{name}' must be a string, got {value!r}")
    return value.strip()


def _safe_name(name: Any, index: int) -> str:
    """A client-given file name fit to echo back: no folders, no control characters, not too long."""
    if isinstance(name, str):
        base = os.path.basename(name.replace("\\", "/"))
        base = _CONTROL.sub("", base).strip()[:200]
        if base:
            return base
    return f"image-{index + 1}"


def openapi_request_body() -> dict[str, Any]:
    """The request body of POST /v1/captions for the OpenAPI document (both content types)."""
    py_to_json = {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}
    options = {}
    for name, type_name in OPTION_TYPES.items():
        base = type_name.replace("| None", "").strip()
        options[name] = {"type": py_to_json.get(base, "string"), "nullable": "None" in type_name,
                         "description": OPTION_SPECS[name].help}  # fmt: skip
    lang = {"description": "Language code(s): 'en', 'en,de' or (JSON) ['en', 'de']. Default: the model's."}
    model = {"type": "string", "description": "A served model (GET /v1/models). Default: the server's default."}
    image_json = {
        "oneOf": [
            {"type": "string", "description": "base64 image data (a data: URL works), or an http(s) URL"},
            {
                "type": "object",
                "properties": {"data": {"type": "string"}, "url": {"type": "string"}, "name": {"type": "string"}},
            },
        ]
    }
    form = {
        "type": "object",
        "properties": {
            "image": {"type": "array", "items": {"type": "string", "format": "binary"}},
            "url": {"type": "array", "items": {"type": "string"}, "description": "Only if the server allows URLs."},
            "model": model,
            "lang": {"type": "string", **lang},
            **options,
        },
        "required": ["image"],
    }
    body = {
        "type": "object",
        "properties": {"images": {"type": "array", "items": image_json}, "model": model, "lang": lang, **options},
        "required": ["images"],
    }
    return {
        "required": True,
        "content": {"multipart/form-data": {"schema": form}, "application/json": {"schema": body}},
    }
