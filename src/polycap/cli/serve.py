"""``polycap serve``: the REST API and web page, with uvicorn, from one process (or ``--workers`` N)."""

from __future__ import annotations

import copy
import ipaddress
import os
from typing import Any

import typer

from polycap.cli.common import err, usage_error
from polycap.errors import MissingDependencyError
from polycap.serve.settings import SETTINGS_ENV, ServeSettings  # light: no fastapi/uvicorn import

_LOOPBACK_NAMES = ("localhost", "ip6-localhost")


def serve_cmd(
    model: list[str] | None = typer.Option(
        None, "--model", "-m", help="Model to serve; repeat for several (the first is the default)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on."),
    workers: int = typer.Option(1, "--workers", min=1, help="Server processes; each loads its own models."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps."),
    torch_threads: int | None = typer.Option(
        None, "--torch-threads", min=1, help="CPU threads per model call (default: torch's, one per core)."
    ),
    batching: bool = typer.Option(True, "--batching/--no-batching", help="Micro-batch concurrent requests."),
    batch_window_ms: float = typer.Option(5.0, "--batch-window-ms", min=0, help="How long a batch waits to fill."),
    max_batch_size: int = typer.Option(16, "--max-batch-size", min=1, help="Images per model call."),
    max_queue: int = typer.Option(64, "--max-queue", min=1, help="Requests waiting; beyond it: 503."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", min=0.001, help="Largest request body, in MiB."),
    max_images: int = typer.Option(16, "--max-images", min=1, help="Images per request."),
    max_pixels: int = typer.Option(25_000_000, "--max-pixels", min=1, help="Largest image (width x height)."),
    max_work: int = typer.Option(
        50_000, "--max-work", min=1, help="Work budget per request: images x langs x beams x returns x tokens."
    ),
    timeout: float = typer.Option(
        30.0, "--timeout", min=0.001, help="Seconds a request may take after its body is read (fetches, queue, model)."
    ),
    allow_urls: bool = typer.Option(False, "--allow-urls", help="Let clients send image URLs (public hosts only)."),
    cors_origin: list[str] | None = typer.Option(
        None, "--cors-origin", help="Allow browser calls from this origin (repeatable). Default: no CORS."
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Serve captions over HTTP: POST /v1/captions, GET /v1/models, /healthz, /readyz, /docs and a web page at /.

    Set POLYCAP_API_KEY to require 'Authorization: Bearer <key>' on /v1.
    """
    try:
        import fastapi  # noqa: F401 - fail early, naming the extra to install
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(getattr(e, "name", None) or "fastapi", "serve", "polycap serve") from e
    try:
        settings = ServeSettings.from_env(
            models=tuple(model or ()),
            device=device,
            torch_threads=torch_threads,
            batching=batching,
            batch_window_ms=batch_window_ms,
            max_batch_size=max_batch_size,
            max_queue=max_queue,
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            max_images=max_images,
            max_pixels=max_pixels,
            max_work=max_work,
            request_timeout_s=timeout,
            allow_urls=allow_urls,
            cors_origins=tuple(cors_origin or ()),
        )
    except ValueError as e:
        raise usage_error(str(e)) from e
    run_server(settings, host, port, workers, log_level)


def run_server(settings: ServeSettings, host: str, port: int, workers: int, log_level: str) -> None:
    """Run uvicorn until SIGINT/SIGTERM; in-flight and queued requests finish before it returns."""
    import uvicorn

    from polycap.serve.app import create_app

    logging_config = log_config(log_level)
    _warn_if_exposed(host, settings.api_key is not None)
    err.print(f"polycap: web page at http://{_url_host(host)}:{port}/ , API docs at /docs", markup=False)
    common = {
        "host": host,
        "port": port,
        "log_level": log_level.lower(),
        "log_config": logging_config,
        "access_log": False,  # polycap logs one JSON line per request instead
        "timeout_graceful_shutdown": int(settings.request_timeout_s + settings.drain_timeout_s),
    }
    if workers == 1:
        uvicorn.run(create_app(settings), **common)
    else:  # each worker process builds its own app from the environment
        os.environ[SETTINGS_ENV] = settings.to_env_json()
        uvicorn.run("polycap.serve.app:create_app", factory=True, workers=workers, **common)


def log_config(level_name: str) -> dict[str, Any]:
    """uvicorn's logging config plus polycap's: access lines as bare JSON, one object per line, on stderr.

    Handed to uvicorn (not applied here) because uvicorn applies it in every worker process.
    """
    from uvicorn.config import LOGGING_CONFIG

    level = level_name.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise usage_error(f"--log-level must be debug, info, warning or error, got {level_name!r}")
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["polycap_json"] = {"format": "%(message)s"}
    config["handlers"]["polycap_access"] = {
        "class": "logging.StreamHandler",
        "formatter": "polycap_json",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["polycap.serve.access"] = {"handlers": ["polycap_access"], "level": level, "propagate": False}
    config["loggers"]["polycap.serve"] = {"handlers": ["default"], "level": level, "propagate": False}
    return config


def _warn_if_exposed(host: str, has_key: bool) -> None:
    if has_key or host in _LOOPBACK_NAMES:
        return
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return
    except ValueError:
        pass
    err.print(
        f"warning: listening on {host} without an API key: anyone who can reach this port can use it. "
        "Set POLYCAP_API_KEY to require 'Authorization: Bearer <key>'.",
        markup=False,
    )


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
