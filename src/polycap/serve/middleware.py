"""What every request gets, whatever the route: an id, a body-size cap, safe headers, one log line.

A plain ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``: it must see the request
body as it streams (to stop an oversized upload at the limit instead of after buffering it) and
it adds no task or buffering of its own to every request.

The access log is one JSON object per line: method, path (no query string, which may carry
secrets), status, latency, image count and request id. Never bodies, never headers, so neither
images nor API keys reach the logs.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime, timezone
from typing import Any

access_log = logging.getLogger("polycap.serve.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# The web page and docs load only what this server serves; the browser enforces it.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class BodyTooLarge(Exception):
    """Raised from ``receive`` once a streamed body passes the limit."""


class ServeMiddleware:
    """Request id, body-size limit, security headers and the access log, for every HTTP request."""

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        request_id = _request_id(scope)
        state["request_id"] = request_id
        status = {"code": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.extend(SECURITY_HEADERS)
                message["headers"] = headers
            await send(message)

        try:
            length = _content_length(scope)
            if length is not None and length > self.max_body_bytes:
                await _too_large(send_wrapper, self.max_body_bytes)
            else:
                await self.app(scope, self._limited(receive), send_wrapper)
        except BodyTooLarge:
            if status["started"]:
                raise
            await _too_large(send_wrapper, self.max_body_bytes)
        finally:
            _log_request(scope, status["code"], start, request_id)

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise BodyTooLarge()
            return message

        return limited_receive


def _request_id(scope: Scope) -> str:
    """The client's X-Request-ID if it is a sane token (to trace a request across services), else a new one."""
    for key, value in scope.get("headers", []):
        if key == b"x-request-id":
            text = value.decode("latin-1")
            if _REQUEST_ID.match(text):
                return text
    return uuid.uuid4().hex[:16]


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"detail": f"request body too large: the limit is {limit:,} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _log_request(scope: Scope, status: int, start: float, request_id: str) -> None:
    state = scope.get("state", {})
    entry = {
        "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "event": "request",
        "request_id": request_id,
        "method": scope.get("method"),
        "path": scope.get("path"),
        "status": status,
        "latency_ms": round((time.perf_counter() - start) * 1000, 2),
        "n_images": state.get("n_images"),
    }
    if state.get("model"):
        entry["model"] = state["model"]
    access_log.info(json.dumps(entry, ensure_ascii=False))
