"""``polycap caption`` options for remote models and style pipelines, turned into ``polycap.load`` kwargs.

Kept apart from the command so the command stays a thin parser: it passes the raw option values
here and gets back the model name to load and the keyword arguments to load it with.

* ``--prompt`` / ``--prompt-file``: a template for the vision prompt of a remote model, or for the
  rewrite prompt when ``--rewriter`` is given;
* ``--base-url``, ``--no-cache``: the server and response cache of the remote model (of the
  rewriter, with ``--rewriter``);
* ``--max-side``: the longest image side uploaded to a remote model;
* ``--rewriter NAME``: styled captions from any model: ``--model`` becomes the describer of a
  ``style:`` pipeline and ``NAME`` (a remote model or a local causal-LM folder) rewrites.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polycap.errors import OptionError

REMOTE_SCHEMES = ("openai", "openai-compatible", "anthropic", "gemini")


def is_remote(model: str | None) -> bool:
    return bool(model) and model.partition(":")[0] in REMOTE_SCHEMES


def load_kwargs(
    model: str | None,
    *,
    prompt: str | None = None,
    prompt_file: Path | str | None = None,
    base_url: str | None = None,
    no_cache: bool = False,
    max_side: int | None = None,
    rewriter: str | None = None,
) -> tuple[str | None, dict[str, Any]]:
    """(model name to load, kwargs for ``polycap.load``); refuses options the model cannot use."""
    template = {k: v for k, v in {"prompt": prompt, "prompt_file": prompt_file}.items() if v is not None}
    service: dict[str, Any] = {"base_url": base_url} if base_url else {}
    if no_cache:
        service["cache"] = False
    if rewriter:
        return _styled(model, rewriter, template, service, max_side)
    given = {**template, **service, **({"max_side": max_side} if max_side is not None else {})}
    if given and not is_remote(model):
        flags = ", ".join(_flag(k) for k in given)
        raise OptionError(
            f"{flags} apply to remote models ({', '.join(s + ':' for s in REMOTE_SCHEMES)}) or with --rewriter; "
            f"model {model or '(default)'!r} is not one"
        )
    return model, given


def _styled(
    model: str | None, rewriter: str, template: dict[str, Any], service: dict[str, Any], max_side: int | None
) -> tuple[str, dict[str, Any]]:
    """A ``style:<describer>`` pipeline: template and service options go to the rewriter."""
    import polycap

    describer = model or polycap.default_model()
    if describer.startswith("style:"):
        describer = describer[len("style:") :]
    kwargs: dict[str, Any] = {"rewriter": rewriter, **template}
    if service:
        if not is_remote(rewriter):
            raise OptionError(f"--base-url and --no-cache apply to a remote rewriter; {rewriter!r} is not one")
        kwargs["rewriter_options"] = service
    if max_side is not None:
        if not is_remote(describer):
            raise OptionError(f"--max-side applies to remote models; the describer {describer!r} is not one")
        kwargs["describer_options"] = {"max_side": max_side}
    return f"style:{describer}", kwargs


def _flag(key: str) -> str:
    return {"cache": "--no-cache"}.get(key, "--" + key.replace("_", "-"))
