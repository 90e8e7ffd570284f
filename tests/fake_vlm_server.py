"""A fake vision-language API on 127.0.0.1 that speaks the real wire formats of three providers.

The remote backends are tested through the official SDKs, pointed here with each SDK's base-URL
setting, so what is exercised is the real request building, response parsing and error mapping of
the SDK plus polycap's own retry, cache and cleanup logic. No request ever leaves the machine.

Routes (all POST):
* ``/v1/chat/completions``                   OpenAI chat completions (also any OpenAI-compatible server)
* ``/v1/messages``                           Anthropic messages
* ``/v1/models/<model>:generateContent``     Gemini generateContent (any API version prefix)

Tests script replies with :class:`Reply` (a queue consumed in order; when it is empty every
request gets the default success) and assert on :attr:`FakeVLMServer.requests`, which records
every request seen: provider, path, headers, parsed JSON body, and the time it arrived.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

DEFAULT_TEXT = "A brown dog runs across the green grass."


@dataclass
class Reply:
    """One scripted reply.

    ``kind``: ``ok`` (success with ``text``), ``status`` (HTTP ``status`` with a provider-style
    error body; ``echo_key`` puts the received API key into the error message, as some real
    servers do), ``malformed`` (200 with a body that is not JSON), ``empty`` (200, valid JSON, no
    caption), ``refusal`` (the provider's content-policy refusal), ``filtered`` (OpenAI
    ``content_filter`` / Gemini candidate ``SAFETY`` finish reason). ``delay`` is slept first.
    """

    kind: str = "ok"
    text: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    echo_key: bool = False


@dataclass
class SeenRequest:
    """A request as the server received it."""

    provider: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float

    @property
    def api_key(self) -> str | None:
        """The credential the client sent, wherever its provider puts it."""
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:]
        return self.headers.get("x-api-key") or self.headers.get("x-goog-api-key")

    def images(self) -> list[Image.Image]:
        """Decode every image in the body, whichever provider format carries it."""
        return [Image.open(io.BytesIO(_b64decode(data))) for data in _image_payloads(self.provider, self.body)]

    def text(self) -> str:
        """All text parts of the request joined, i.e. the prompt the model would read."""
        return "\n".join(_text_parts(self.provider, self.body))


class FakeVLMServer:
    """Threaded HTTP server; use as a context manager. Thread-safe request log and reply queue."""

    def __init__(self, text: str = DEFAULT_TEXT, respond: Callable[[SeenRequest], str] | None = None):
        self.default_text = text
        self.respond = respond  # dynamic success text, e.g. echo part of the prompt
        self.requests: list[SeenRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        # A short poll interval: shutdown() waits for the next poll, 0.5 s by default, per test.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    # ---- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> FakeVLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def base_url(self, provider: str) -> str:
        """The base URL to give each SDK (OpenAI's includes the ``/v1`` prefix, the others not)."""
        return self.url + "/v1" if provider in ("openai", "openai-compatible") else self.url

    # ---- scripting -------------------------------------------------------------------------
    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def next_reply(self) -> Reply:
        with self._lock:
            return self._queue.popleft() if self._queue else Reply()

    def record(self, req: SeenRequest) -> None:
        with self._lock:
            self.requests.append(req)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def done(self) -> None:
        with self._lock:
            self.in_flight -= 1


def _make_handler(server: FakeVLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass  # keep test output clean

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                body: Any = json.loads(raw or b"null")
            except json.JSONDecodeError:
                body = raw
            provider = _provider_of(self.path)
            seen = SeenRequest(provider, self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
            server.record(seen)
            try:
                reply = server.next_reply()
                if reply.delay:
                    time.sleep(reply.delay)
                status, headers, payload = _render(server, seen, reply)
                self._send(status, headers, payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)
            finally:
                server.done()

        def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def _provider_of(path: str) -> str:
    if path.split("?")[0].endswith("/chat/completions"):
        return "openai"
    if path.split("?")[0].endswith("/messages"):
        return "anthropic"
    if ":generateContent" in path:
        return "gemini"
    return "unknown"


def _render(server: FakeVLMServer, seen: SeenRequest, reply: Reply) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body bytes of ``reply`` in ``seen.provider``'s wire format."""
    if seen.provider == "unknown":
        return 404, {}, b'{"error": "no such route"}'
    if reply.kind == "malformed":
        return 200, reply.headers, b'{"choices": [ {"message": '
    if reply.kind == "status":
        message = f"simulated HTTP {reply.status}"
        if reply.echo_key:
            message += f": incorrect API key provided: {seen.api_key}"
        return reply.status, reply.headers, json.dumps(_error_body(seen.provider, reply.status, message)).encode()
    text = reply.text if reply.text is not None else (server.respond(seen) if server.respond else server.default_text)
    model = _model_of(seen)
    body = _BODIES[seen.provider](reply.kind, text, model)
    return 200, reply.headers, json.dumps(body).encode()


def _model_of(seen: SeenRequest) -> str:
    if seen.provider == "gemini":
        return seen.path.split("/models/")[1].split(":")[0]
    return seen.body.get("model", "") if isinstance(seen.body, dict) else ""


def _error_body(provider: str, status: int, message: str) -> dict[str, Any]:
    if provider == "anthropic":
        return {"type": "error", "error": {"type": "api_error", "message": message}}
    if provider == "gemini":
        return {"error": {"code": status, "message": message, "status": "UNAVAILABLE"}}
    return {"error": {"message": message, "type": "server_error", "code": None}}


_USAGE_IN, _USAGE_OUT = 11, 7


def _openai_body(kind: str, text: str, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    finish = "stop"
    if kind == "refusal":
        message = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    elif kind == "filtered":
        message, finish = {"role": "assistant", "content": None}, "content_filter"
    choices = [] if kind == "empty" else [{"index": 0, "message": message, "finish_reason": finish}]
    usage = {"prompt_tokens": _USAGE_IN, "completion_tokens": _USAGE_OUT, "total_tokens": _USAGE_IN + _USAGE_OUT}
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model, "choices": choices,
            "usage": usage}


def _anthropic_body(kind: str, text: str, model: str) -> dict[str, Any]:
    content = [] if kind in ("empty", "refusal") else [{"type": "text", "text": text}]
    stop = "refusal" if kind == "refusal" else "end_turn"
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": _USAGE_IN, "output_tokens": _USAGE_OUT}}


def _gemini_body(kind: str, text: str, model: str) -> dict[str, Any]:
    usage = {"promptTokenCount": _USAGE_IN, "candidatesTokenCount": _USAGE_OUT,
             "totalTokenCount": _USAGE_IN + _USAGE_OUT}
    if kind == "refusal":
        return {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage, "modelVersion": model}
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP",
                                 "index": 0}
    if kind == "filtered":
        candidate = {"finishReason": "SAFETY", "index": 0}
    candidates = [] if kind == "empty" else [candidate]
    return {"candidates": candidates, "usageMetadata": usage, "modelVersion": model}


_BODIES: dict[str, Callable[[str, str, str], dict[str, Any]]] = {
    "openai": _openai_body,
    "anthropic": _anthropic_body,
    "gemini": _gemini_body,
}


def _b64decode(data: str) -> bytes:
    """Standard or URL-safe base64 (the Gemini SDK sends the latter), padding optional."""
    data = data.replace("-", "+").replace("_", "/")
    return base64.b64decode(data + "=" * (-len(data) % 4))


def _image_payloads(provider: str, body: Any) -> list[str]:
    out: list[str] = []
    for part in _parts(provider, body):
        if not isinstance(part, dict):
            continue
        if provider == "openai" and part.get("type") == "image_url":
            out.append(part["image_url"]["url"].split(",", 1)[1])
        elif provider == "anthropic" and part.get("type") == "image":
            out.append(part["source"]["data"])
        elif provider == "gemini" and "inlineData" in part:
            out.append(part["inlineData"]["data"])
    return out


def _text_parts(provider: str, body: Any) -> list[str]:
    out = []
    for part in _parts(provider, body):
        if isinstance(part, str):
            out.append(part)
        elif part.get("type") == "text" or (provider == "gemini" and "text" in part):
            out.append(part["text"])
    return out


def _parts(provider: str, body: Any) -> list[Any]:
    """Content parts of every message, flattened (a string content counts as one text part)."""
    if not isinstance(body, dict):
        return []
    messages = body.get("contents" if provider == "gemini" else "messages", [])
    parts: list[Any] = []
    for m in messages:
        content = m.get("parts" if provider == "gemini" else "content", [])
        parts.extend([content] if isinstance(content, str) else content)
    if isinstance(body.get("system"), str):
        parts.append(body["system"])
    return parts


# --------------------------------------------------------------------------------------------
# Shared by the remote and style tests
# --------------------------------------------------------------------------------------------

FAKE_KEY = "sk-polycap-FAKE-7f3a9c1e5b2d4f60"  # distinctive, so a leak anywhere is easy to find
KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "POLYCAP_OPENAI_API_KEY")
# Variables the SDKs would read on their own; tests clear them so nothing points elsewhere.
SDK_ENV = ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "GOOGLE_GEMINI_BASE_URL", "POLYCAP_OPENAI_BASE_URL",
           "GOOGLE_GENAI_USE_VERTEXAI", "OPENAI_LOG", "ANTHROPIC_LOG")


def register_remote_plugins() -> None:
    """Make sure the remote and style backends are in the registry.

    A no-op once pyproject lists their entry points; before that (or in a stale editable
    install) it registers them the way an entry point would.
    """
    from polycap.backends import compose, remote
    from polycap.registry import get_registry

    registry = get_registry()
    if "openai" not in registry.backends:
        remote.register(registry)
    if "style" not in registry.backends:
        compose.register(registry)
