"""Everything ``polycap serve`` can be told, in one dataclass, with safe defaults.

Defaults are chosen for a service that is reachable by strangers: small limits, URLs off, CORS off,
loopback only (the CLI's default host). Every limit exists to keep memory and CPU bounded whatever
clients send: ``max_active_requests`` x ``max_upload_bytes`` bounds request bodies held at once
(``max_large_bodies`` of them parsed at once), ``max_queue`` bounds work waiting for the model,
``max_work`` the model time of one request, ``max_batch_size`` x ``max_pixels`` pixels decoded at
once, ``max_fetches`` and ``fetch_timeout_s`` what slow image hosts can hold.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

API_KEY_ENV = "POLYCAP_API_KEY"
SETTINGS_ENV = "POLYCAP_SERVE_SETTINGS"  # JSON, how `--workers N` hands settings to each worker process


@dataclass(frozen=True)
class ServeSettings:
    """Configuration of one server process. ``models[0]`` is the default model (empty: polycap's default)."""

    models: tuple[str, ...] = ()
    device: str = "auto"
    torch_threads: int | None = None  # torch's intra-op threads (None: torch's default, one per core)
    preload: bool = True  # load the default model at startup (readyz is 503 until it is loaded)

    # Micro-batching: requests that arrive within the window are captioned in one model call.
    batching: bool = True
    batch_window_ms: float = 5.0
    max_batch_size: int = 16  # images per model call (a single request may exceed it; it is chunked)
    max_queue: int = 64  # requests waiting for the model; beyond it: 503 + Retry-After
    max_active_requests: int = 128  # requests being read or served at once; beyond it: 503

    # Request limits.
    max_upload_bytes: int = 20 * 1024 * 1024  # whole request body; 413 beyond it
    max_images: int = 16  # per request; 413 beyond it
    max_pixels: int = 25_000_000  # per image (width * height), checked from the header; 413 beyond it
    max_langs: int = 8
    max_beams: int = 8
    max_new_tokens: int = 100
    # The total decoding work of one request, in decoded tokens: images x languages x num_beams x
    # num_return_sequences x max_new_tokens; 422 beyond it. 16 images x 2 languages x 3 beams x
    # 1 x 100 tokens = 9,600 fits, the product of the maxima above (819,200) does not.
    max_work: int = 50_000
    max_large_bodies: int = 4  # bodies over 1 MiB read and parsed at once; the others wait in their sockets
    request_timeout_s: float = 30.0  # URL fetches + queue + inference, after the body is read; 504 beyond it
    drain_timeout_s: float = 30.0  # at shutdown, how long queued work may still take

    # Image URLs (off by default: fetching on behalf of clients is a server-side request forgery risk).
    allow_urls: bool = False
    fetch_timeout_s: float = 10.0  # one deadline per URL: name lookup, connects, every read, every redirect
    max_fetches: int = 8  # URL downloads in progress at once (whole server); more wait, within their deadline
    max_redirects: int = 3

    cors_origins: tuple[str, ...] = ()  # empty: no CORS headers at all
    api_key: str | None = field(default=None, repr=False)  # from POLYCAP_API_KEY; never logged

    def __post_init__(self) -> None:
        positive = (
            "max_batch_size",
            "max_queue",
            "max_active_requests",
            "max_upload_bytes",
            "max_images",
            "max_pixels",
            "max_langs",
            "max_beams",
            "max_new_tokens",
            "max_work",
            "max_large_bodies",
            "request_timeout_s",
            "fetch_timeout_s",
            "max_fetches",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.torch_threads is not None and (isinstance(self.torch_threads, bool) or self.torch_threads < 1):
            raise ValueError(f"torch_threads must be a positive integer, got {self.torch_threads!r}")
        for name in ("batch_window_ms", "drain_timeout_s", "max_redirects"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        object.__setattr__(self, "models", tuple(dict.fromkeys(self.models)))
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))
        if self.api_key is not None and not self.api_key.strip():
            object.__setattr__(self, "api_key", None)

    @classmethod
    def from_env(cls, **overrides: Any) -> ServeSettings:
        """Settings from ``POLYCAP_SERVE_SETTINGS`` (JSON) and ``POLYCAP_API_KEY``, then ``overrides``."""
        values: dict[str, Any] = {}
        raw = os.environ.get(SETTINGS_ENV)
        if raw:
            values.update(json.loads(raw))
        key = os.environ.get(API_KEY_ENV)
        if key:
            values["api_key"] = key
        values.update(overrides)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown serve setting(s): {', '.join(unknown)}")
        return cls(**values)

    def to_env_json(self) -> str:
        """JSON for ``POLYCAP_SERVE_SETTINGS``; the API key is left out (it travels as POLYCAP_API_KEY)."""
        data = asdict(self)
        data.pop("api_key")
        return json.dumps(data)

    def public(self) -> dict[str, Any]:
        """The limits a client may want to know (shown by /v1/models); nothing secret."""
        return {
            "max_upload_bytes": self.max_upload_bytes,
            "max_images": self.max_images,
            "max_pixels": self.max_pixels,
            "max_langs": self.max_langs,
            "max_beams": self.max_beams,
            "max_new_tokens": self.max_new_tokens,
            "max_work": self.max_work,
            "allow_urls": self.allow_urls,
            "auth": self.api_key is not None,
        }
