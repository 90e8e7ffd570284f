"""The flags ``polycap caption``, ``eval`` and ``batch`` share, declared once.

Generation flags are not written out here at all: :func:`generation_flags` gives a command one flag
per :class:`polycap.GenerationOptions` field (:func:`polycap.types.option_specs`, which the REST
parser reads too), so a new decoding option appears in every command and the server at once.
Model flags are Typer options used as parameter defaults (``model: str | None = MODEL``);
:func:`model_load_kwargs` turns them into ``polycap.load`` keyword arguments.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import typer

from polycap.types import OptionSpec, option_specs

Command = TypeVar("Command", bound=Callable[..., Any])

# Flags whose name is not ``--<field-name>``: short, and what the CLI has always called them.
FLAG_NAMES = {
    "max_new_tokens": "--max-tokens",
    "min_new_tokens": "--min-tokens",
    "num_beams": "--beams",
    "do_sample": "--sample",
    "num_return_sequences": "--num-return",
}
# What ``caption`` and ``batch`` pass when a flag is not given. Any other option not given is left
# out, so it keeps the model's default (its ``generation`` field, e.g. polycap-base's trigram block).
CAPTION_DEFAULTS: dict[str, Any] = {
    "max_new_tokens": 30, "num_beams": 1, "do_sample": False, "temperature": 1.0, "top_p": 1.0,
    "num_return_sequences": 1,
}  # fmt: skip
# ``eval`` decodes with beam search unless told otherwise.
EVAL_DEFAULTS: dict[str, Any] = {
    "max_new_tokens": 30, "num_beams": 3, "do_sample": False, "temperature": 1.0, "top_p": 1.0,
}  # fmt: skip

MODEL = typer.Option(None, "--model", "-m", help="Model name, scheme:ref or folder.")
LANG = typer.Option(None, "--lang", "-l", help="Language code(s), comma-separated: en,de.")
REWRITER = typer.Option(None, "--rewriter", help="Rewrite --model's description with this text model.")
PROMPT = typer.Option(
    None, "--prompt", help="Prompt template (remote model, --rewriter), or caption prefix (hf: models)."
)
PROMPT_FILE: Any = typer.Option(None, "--prompt-file", help="Read the prompt template from a file.")
TRANSLATOR = typer.Option(
    None, "--translator", help="Caption, then translate with this model (hf:<folder>, en-de, nllb, de=..,fr=..)."
)
BASE_URL = typer.Option(None, "--base-url", help="openai-compatible server URL (vLLM, Ollama, ...).")
NO_CACHE = typer.Option(False, "--no-cache", help="Bypass the remote response cache.")
MAX_SIDE = typer.Option(None, "--max-side", min=32, help="Longest image side sent to remote APIs.")
DTYPE = typer.Option(None, "--dtype", help="hf: models: float32, bfloat16 or float16.")
CONCEPTS = typer.Option(
    None, "--concepts",
    help="polycap's own models: what the encoder recognises reaches the caption as trained concept "
    "tokens ('tokens', polycap-base's default), a decode-time bias ('bias'), both ('tokens+bias') or "
    "not at all ('off').",
)
BATCH_SIZE = typer.Option(8, "--batch-size", min=1, help="Images per model call.")
MAX_PIXELS = typer.Option(
    None, "--max-pixels", min=1, help="Largest image (width x height) decoded (default 64,000,000)."
)
DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps.")


def flag_name(option: str) -> str:
    """The command-line flag of a GenerationOptions field."""
    return FLAG_NAMES.get(option, "--" + option.replace("_", "-"))


def generation_flags(defaults: Mapping[str, Any]) -> Callable[[Command], Command]:
    """Decorate a command so that it takes one flag per generation option and receives them as one
    keyword argument, ``generation``: ``make_options`` kwargs (every option but ``lang``).

    ``generation`` holds the flags given, plus ``defaults`` for those not given; any other option
    is left out, so the model's own default applies. The flags come right after the command's
    ``lang`` parameter (or last), in GenerationOptions' order. Their values are checked by
    GenerationOptions itself when the command builds its options (a usage error, exit 2).
    """
    specs = option_specs()
    unknown = sorted(set(defaults) - {spec.name for spec in specs})
    if unknown:
        raise TypeError(f"defaults for unknown generation option(s): {', '.join(unknown)}")

    def decorate(command: Command) -> Command:
        sig = inspect.signature(command)
        if "generation" not in sig.parameters:
            raise TypeError(f"{command.__name__} must take a 'generation' parameter")
        clash = sorted({spec.name for spec in specs} & set(sig.parameters))
        if clash:
            raise TypeError(f"{command.__name__} declares generation option(s) itself: {', '.join(clash)}")
        hints = typing.get_type_hints(command)
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
               for p in sig.parameters.values() if p.name != "generation"]  # fmt: skip
        flags = [_flag_parameter(spec, defaults) for spec in specs]
        at = next((i + 1 for i, p in enumerate(own) if p.name == "lang"), len(own))
        params = [*own[:at], *flags, *own[at:]]

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            given = {spec.name: kwargs.pop(spec.name) for spec in specs}
            # `is`, not `in (None, False)`: 0 == False, and --no-repeat-ngram-size 0 is a given value
            generation = {k: v for k, v in given.items() if k in defaults or (v is not None and v is not False)}
            return command(**kwargs, generation=generation)

        run.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run  # type: ignore[return-value]

    return decorate


def _flag_parameter(spec: OptionSpec, defaults: Mapping[str, Any]) -> inspect.Parameter:
    """The Typer option of one generation option: its flag, help, type and this command's default."""
    if spec.name in defaults:
        default, annotation, note = defaults[spec.name], spec.type, ""
    elif spec.type is bool:  # the flag can only turn it on; not given: the model's default
        default, annotation, note = False, bool, ""
    else:
        default, annotation, note = None, spec.type | None, " Default: the model's."
    option = typer.Option(default, flag_name(spec.name), help=spec.help + note)
    return inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def model_load_kwargs(
    model: str | None,
    langs: list[str] | None,
    *,
    prompt: str | None,
    prompt_file: Path | None,
    base_url: str | None,
    no_cache: bool,
    max_side: int | None,
    rewriter: str | None,
    translator: str | None,
    dtype: str | None,
    concepts: str | None = None,
) -> tuple[str | None, dict[str, Any]]:
    """The model name to load and the ``polycap.load`` kwargs from the model flags."""
    from polycap.cli.remote_opts import load_kwargs

    model, extra = load_kwargs(
        model, prompt=prompt, prompt_file=prompt_file, base_url=base_url, no_cache=no_cache, max_side=max_side,
        rewriter=rewriter, translator=translator, langs=langs,
    )  # fmt: skip
    if dtype:
        extra["dtype"] = dtype
    if concepts:
        extra["concepts"] = concepts
    return model, extra
