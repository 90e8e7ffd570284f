"""``polycap caption`` options for remote models and style pipelines, turned into ``polycap.load`` kwargs.

Kept apart from the command so the command stays a thin parser: it passes the raw option values
here and gets back the model name to load and the keyword arguments to load it with.

* ``--prompt`` / ``--prompt-file``: a template for the vision prompt of a remote model, the rewrite
  prompt when ``--rewriter`` is given, or the conditional-captioning prefix of a Hugging Face model
  (``hf:...``, a fine-tuned ``hf`` folder, or the captioner inside ``translate:hf:...``), e.g.
  BLIP's "a photography of", which the caption then continues;
* ``--base-url``, ``--no-cache``: the server and response cache of the remote model (of the
  rewriter, with ``--rewriter``);
* ``--max-side``: the longest image side uploaded to a remote model;
* ``--translator NAME``: ``--model`` becomes the captioner of a ``translate:`` pipeline; ``NAME`` is a
  translation model (``hf:<folder or hub id>``, a pair such as ``en-de``, ``nllb``) or a per-language
  list ``de=hf:/models/opus-mt-en-de,fr=hf:/models/opus-mt-en-fr``; the targets are the ``--lang``
  codes other than the captioner's English;
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
    translator: str | None = None,
    langs: list[str] | None = None,
) -> tuple[str | None, dict[str, Any]]:
    """(model name to load, kwargs for ``polycap.load``); refuses options the model cannot use."""
    if translator:
        if rewriter:
            raise OptionError("--translator and --rewriter cannot be combined; use one pipeline at a time")
        model, extra = _translated(model, translator, langs)
        return model, {**extra, **load_kwargs(model, prompt=prompt, prompt_file=prompt_file, base_url=base_url,
                                              no_cache=no_cache, max_side=max_side)[1]}  # fmt: skip
    template = {k: v for k, v in {"prompt": prompt, "prompt_file": prompt_file}.items() if v is not None}
    service: dict[str, Any] = {"base_url": base_url} if base_url else {}
    if no_cache:
        service["cache"] = False
    if rewriter:
        return _styled(model, rewriter, template, service, max_side)
    given = {**template, **service, **({"max_side": max_side} if max_side is not None else {})}
    if template and not service and max_side is None and takes_prefix(model):
        return model, {"prompt": _read_prompt(prompt, prompt_file)}
    if given and not is_remote(model):
        flags = ", ".join(_flag(k) for k in given)
        raise OptionError(
            f"{flags} apply to remote models ({', '.join(s + ':' for s in REMOTE_SCHEMES)}), with --rewriter, "
            "or (--prompt, --prompt-file only) to hf: models; "
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


def takes_prefix(model: str | None) -> bool:
    """Whether ``model`` is a Hugging Face captioner (maybe inside ``translate:``), which takes a text prefix."""
    from polycap.registry import get_registry

    if not model:
        return False
    try:
        backend, ref, _ = get_registry().resolve(model)
    except Exception:  # noqa: BLE001 - an unknown name is reported by polycap.load, with its own message
        return False
    if backend.name == "translate":
        return takes_prefix(ref)
    return backend.name == "hf"


def _read_prompt(prompt: str | None, prompt_file: Path | str | None) -> str:
    if prompt is not None and prompt_file is not None:
        raise OptionError("give --prompt or --prompt-file, not both")
    if prompt_file is not None:
        try:
            return Path(prompt_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise OptionError(f"cannot read --prompt-file {prompt_file}: {e}") from None
    return str(prompt)


def _translated(model: str | None, translator: str, langs: list[str] | None) -> tuple[str, dict[str, Any]]:
    """A ``translate:<model>`` pipeline: one translator, or ``lang=name`` pairs, into the ``--lang`` targets."""
    import polycap

    captioner = model or polycap.default_model()
    name = captioner if captioner.startswith("translate:") else f"translate:{captioner}"
    parts = [p.strip() for p in translator.split(",") if p.strip()]
    if parts and all("=" in p for p in parts):
        mapping = {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in parts)}
        if not all(mapping) or not all(mapping.values()):
            raise OptionError(f"--translator expects NAME or LANG=NAME,LANG=NAME; got {translator!r}")
        return name, {"translator": mapping}
    if len(parts) != 1 or "=" in parts[0]:
        raise OptionError(f"--translator expects NAME or LANG=NAME,LANG=NAME; got {translator!r}")
    targets = [lang for lang in langs or [] if lang != "en"]
    return name, {"translator": parts[0], **({"target_langs": targets} if targets else {})}


def _flag(key: str) -> str:
    return {"cache": "--no-cache"}.get(key, "--" + key.replace("_", "-"))
