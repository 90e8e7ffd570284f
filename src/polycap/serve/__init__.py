"""polycap over HTTP: a REST API with micro-batching, and a web page, from one process.

    >>> from polycap.serve import ServeSettings, create_app
    >>> app = create_app(ServeSettings(models=("polycap-tiny-random",)))   # an ASGI app for uvicorn

``polycap serve`` runs it with uvicorn. FastAPI and uvicorn are the ``serve`` extra; importing this
package imports neither until ``create_app`` is used.
"""

from __future__ import annotations

from typing import Any

from polycap.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from polycap.serve.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
