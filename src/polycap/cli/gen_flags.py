"""The model and generation flags ``polycap caption`` and ``polycap batch`` share, declared once.

Each constant is the Typer option of one flag; a command uses it as a parameter default
(``beams: int = BEAMS``), so both commands take the same flags with the same help and limits.
:func:`option_kwargs` turns their values into ``captioner.make_options`` keyword arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

MODEL = typer.Option(None, "--model", "-m", help="Model name, scheme:ref or folder.")
LANG = typer.Option(None, "--lang", "-l", help="Language code(s), comma-separated: en,de.")
BEAMS = typer.Option(1, "--beams", help="Beam width (1 = greedy).")
MAX_TOKENS = typer.Option(30, "--max-tokens", help="Maximum new tokens per caption.")
SAMPLE = typer.Option(False, "--sample", help="Sample instead of greedy/beam decoding.")
TEMPERATURE = typer.Option(1.0, "--temperature", help="Sampling temperature.")
TOP_P = typer.Option(1.0, "--top-p", help="Nucleus sampling threshold.")
TOP_K = typer.Option(None, "--top-k", help="Top-k sampling.")
NUM_RETURN = typer.Option(1, "--num-return", help="Captions returned per image (alternatives).")
NO_REPEAT = typer.Option(
    None, "--no-repeat-ngram-size", min=0,
    help="Never repeat an n-gram of this many tokens (0: off; default: the model's, else off).",
)  # fmt: skip
LENGTH_PENALTY = typer.Option(
    None, "--length-penalty", help="Beam search: > 1 favours longer captions, < 1 shorter (default 1)."
)
SEED = typer.Option(None, "--seed", help="Random seed (sampling).")
STYLE = typer.Option(None, "--style", help="social, alt-text, detailed, hashtags or an instruction.")
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
BATCH_SIZE = typer.Option(8, "--batch-size", min=1, help="Images per model call.")
MAX_PIXELS = typer.Option(
    None, "--max-pixels", min=1, help="Largest image (width x height) decoded (default 64,000,000)."
)
DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps.")


def option_kwargs(
    *,
    max_tokens: int,
    beams: int,
    sample: bool,
    temperature: float,
    top_p: float,
    top_k: int | None,
    num_return: int,
    no_repeat: int | None,
    length_penalty: float | None,
    seed: int | None,
    style: str | None,
) -> dict[str, Any]:
    """``make_options`` kwargs (all but ``lang``); beam controls only when set, so the others keep
    the model's defaults (its ``generation`` field)."""
    given = {"no_repeat_ngram_size": no_repeat, "length_penalty": length_penalty}
    return {
        "max_new_tokens": max_tokens, "num_beams": beams, "do_sample": sample, "temperature": temperature,
        "top_p": top_p, "top_k": top_k, "num_return_sequences": num_return,
        **{k: v for k, v in given.items() if v is not None}, "seed": seed, "style": style,
    }  # fmt: skip


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
) -> tuple[str | None, dict[str, Any]]:
    """The model name to load and the ``polycap.load`` kwargs from the model flags."""
    from polycap.cli.remote_opts import load_kwargs

    model, extra = load_kwargs(
        model, prompt=prompt, prompt_file=prompt_file, base_url=base_url, no_cache=no_cache, max_side=max_side,
        rewriter=rewriter, translator=translator, langs=langs,
    )  # fmt: skip
    if dtype:
        extra["dtype"] = dtype
    return model, extra
