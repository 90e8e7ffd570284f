"""Turn a ``POST /v1/captions`` body (multipart upload or JSON with base64) into one typed request.

Both body kinds carry the same fields, so both end in :class:`CaptionRequest` and everything
after parsing is shared. Errors are :class:`BadRequest` with the HTTP status and a message that
names the field and what is allowed; option values are checked by ``GenerationOptions`` itself,
so the server accepts exactly what the library accepts (minus the server's own limits).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

from polycap.images import is_url
from polycap.serve.settings import ServeSettings
from polycap.types import GenerationOptions

# Generation options a request may set, with their declared types ("int", "int | None", ...).
OPTION_TYPES: dict[str, str] = {f.name: str(f.type) for f in fields(GenerationOptions) if f.name != "lang"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DATA_URL = re.compile(r"^data:[\w.+/-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


class BadRequest(Exception):
    """A request the server refuses as sent; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


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


async def read_caption_request(request: Any, settings: ServeSettings) -> CaptionRequest:
    """Parse and check the body of a caption request (a Starlette ``Request``)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        req = await _from_form(request, settings)
    elif ctype == "application/json":
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadRequest(400, f"the body is not valid JSON: {e}") from e
        req = _from_json(body, settings)
    else:
        raise BadRequest(
            415, f"unsupported content type {ctype or 'none'!r}; send multipart/form-data or application/json"
        )
    check_limits(req, settings)
    return req


async def _from_form(request: Any, settings: ServeSettings) -> CaptionRequest:
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException

    try:
        form = await request.form(max_files=settings.max_images * 2, max_fields=200, max_part_size=64 * 1024)
    except MultiPartException as e:
        status = 413 if "Too many files" in str(e) else 400
        raise BadRequest(status, f"invalid multipart body: {e}") from e
    req = CaptionRequest()
    raw: dict[str, Any] = {}
    langs: list[str] = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
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


def _from_json(body: Any, settings: ServeSettings) -> CaptionRequest:
    if not isinstance(body, dict):
        raise BadRequest(422, "the JSON body must be an object with an 'images' list")
    body = dict(body)
    images = body.pop("images", None)
    if not isinstance(images, list):
        raise BadRequest(422, "'images' must be a list of base64 strings, {'data': ..., 'name': ...} or {'url': ...}")
    req = CaptionRequest(model=_opt_str(body.pop("model", None), "model"))
    if len(images) > settings.max_images:
        raise BadRequest(413, f"too many images: {len(images)} (this server takes at most {settings.max_images})")
    req.images = [_json_image(item, i, settings) for i, item in enumerate(images)]
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
        raw = base64.b64decode(_DATA_URL.sub("", data.strip(), count=1), validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadRequest(400, f"images[{index}] ({name}): not valid base64 ({e})") from e
    return RequestImage(name, data=raw)


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
    label = _safe_name(name, index) if name else _CONTROL.sub("", url.strip())[:500]
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
        raise BadRequest(422, f"{name} must be {'an integer' if base == 'int' else 'a number'}, got {text!r}") from None
    if base == "bool":
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off", ""):
            return False
        raise BadRequest(422, f"{name} must be true or false, got {text!r}")
    return text


def check_limits(req: CaptionRequest, settings: ServeSettings) -> None:
    """The server's own limits, on top of what GenerationOptions validates."""
    if not req.images:
        raise BadRequest(422, "no images: upload one or more files (multipart) or send 'images' (JSON)")
    if len(req.images) > settings.max_images:
        raise BadRequest(413, f"too many images: {len(req.images)} (this server takes at most {settings.max_images})")
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
        options[name] = {"type": py_to_json.get(base, "string"), "nullable": "None" in type_name}
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
