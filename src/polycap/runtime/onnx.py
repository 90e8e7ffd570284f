"""The onnx runtime of polycap's own models on CPU: the image encoder and one decoder step.

Both graphs are exported from the very torch modules they stand in for (``torch.onnx.export``, no
model code rewritten), cached on disk under a fingerprint of the weights and library versions, and
run by onnxruntime. Decoding is still driven by transformers' ``generate()``: ``OnnxGPT2Decoder`` is
a ``GPT2LMHeadModel`` whose ``forward`` runs the exported step whenever a call is the plain
one-new-token, KV-cached call that generation makes, and defers to the torch forward otherwise, so
greedy, beam search and sampling all keep working unchanged.

How much faster than torch it is, on which machine: ``python bench/runtime.py`` times both
runtimes interleaved in one process, ``bench/speed.py`` end to end against other captioners; their
measured numbers are in ``bench/README.md``.

Exported graphs are a snapshot: a captioner whose weights change afterwards (training) must use the
torch runtime; the trainer builds its captioners that way. Delete ``cache_dir()`` at any time; the
next load exports again (a few seconds).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import GPT2LMHeadModel
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import CausalLMOutputWithCrossAttentions

log = logging.getLogger(__name__)

FORMAT = 2  # part of every cache key: bump it whenever the exported graphs change
RUNTIMES = ("auto", "torch", "onnx")
# transformers 5 renamed ``past_key_values`` to ``cache`` in GPT-2's forward and outputs; 4.x has the old name
_OUTPUT_FIELDS = {f.name for f in fields(CausalLMOutputWithCrossAttentions)}
_OUT_CACHE_FIELD = "cache" if "cache" in _OUTPUT_FIELDS else "past_key_values"
_CACHE_ARG = "cache" if "cache" in inspect.signature(GPT2LMHeadModel.forward).parameters else "past_key_values"


def available() -> bool:
    """True when both the exporter's ``onnx`` and ``onnxruntime`` are installed (the ``[onnx]`` extra)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def requested_runtime(runtime: str | None) -> str:
    """The runtime asked for: ``runtime``, unless it is None or ``auto``, then ``$POLYCAP_RUNTIME``,
    then ``auto``; an unknown name is an error listing the known ones."""
    from polycap.errors import PolycapError

    if runtime in (None, "auto"):
        runtime = os.environ.get("POLYCAP_RUNTIME") or "auto"
    if runtime not in RUNTIMES:
        raise PolycapError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    return runtime


def resolve_runtime(runtime: str | None, device: str) -> str:
    """``torch`` or ``onnx``: ``auto`` means onnx on CPU when the extra is installed, else torch;
    ``onnx`` on another device, or without the extra, is an error."""
    from polycap.errors import MissingDependencyError, PolycapError

    runtime = requested_runtime(runtime)
    if runtime == "auto":
        return "onnx" if device == "cpu" and available() else "torch"
    if runtime == "onnx":
        if device != "cpu":
            raise PolycapError(f"runtime 'onnx' runs on the CPU only, not on {device!r}; use runtime 'torch'")
        if not available():
            raise MissingDependencyError("onnx and onnxruntime", "onnx", "the onnx runtime")
    return runtime


def cache_dir() -> Path:
    """Where exported graphs are kept: ``$POLYCAP_ONNX_CACHE`` or ``~/.cache/polycap/onnx``."""
    return Path(os.environ.get("POLYCAP_ONNX_CACHE") or "~/.cache/polycap/onnx").expanduser()


def fingerprint(module: nn.Module, *extra: Any) -> str:
    """A hash of every parameter and buffer (names, shapes, dtypes, values), the library versions
    that shape the exported graph, ``FORMAT`` and ``extra``."""
    import transformers

    h = hashlib.sha256(f"{FORMAT}|{torch.__version__}|{transformers.__version__}|{extra}".encode())
    for name, t in module.state_dict().items():
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        flat = t.detach().cpu().reshape(-1).contiguous()  # 1-D: any memory format, stride 1
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()[:20]


def make_session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session with as many intra-op threads as torch uses."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle pool threads would otherwise spin after each run, taking the cores torch needs between
    # the calls (the generate() loop, the other session): slower end to end (bench/README.md).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def export_cached(
    module: nn.Module, args: tuple, kind: str, key: str, fuse: dict[str, Any] | None = None, **export_kwargs: Any
) -> Path:
    """Export ``module`` once to ``cache_dir()/<kind>-v<FORMAT>-<key>.onnx`` (written atomically; older
    formats of the same kind are deleted) and return the path.

    ``fuse``: arguments of onnxruntime's transformer optimizer (``model_type``, ``num_heads``,
    ``hidden_size``), which fuses LayerNorm + residual and GELU into single nodes (a GPT-2 step has
    far fewer nodes and runs faster: bench/README.md); if it fails, the plain export is kept.
    """
    path = cache_dir() / f"{kind}-v{FORMAT}-{key}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(f"{kind}-*"):  # graphs of an older FORMAT are never read again
        if not old.name.startswith(f"{kind}-v{FORMAT}-"):
            old.unlink(missing_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's tracer and deprecation warnings
        torch.onnx.export(module.eval(), args, str(tmp), dynamo=False, opset_version=17, **export_kwargs)
    if fuse:
        try:
            from onnxruntime.transformers import optimizer

            optimizer.optimize_model(str(tmp), opt_level=1, **fuse).save_model_to_file(str(tmp))
        except Exception as e:  # an optimizer that cannot read this graph: keep it as exported
            log.warning("onnxruntime's optimizer failed on %s (%s: %s); using the plain export", kind,
                        type(e).__name__, e)
    os.replace(tmp, path)
    log.info("exported %s to %s", kind, path)
    return path


def check_once(path: Path, check: Callable[[], str | None]) -> str | None:
    """Run ``check`` (None when the graph at ``path`` reproduces torch, else what differs) unless it
    already passed under this onnxruntime version; a pass is recorded in a marker beside the graph,
    whose file name already pins the weights, torch and transformers."""
    import onnxruntime

    marker = path.with_suffix(".verified")
    if marker.is_file() and marker.read_text(encoding="utf-8").strip() == onnxruntime.__version__:
        return None
    problem = check()
    if problem is None:
        marker.write_text(onnxruntime.__version__ + "\n", encoding="utf-8")
    return problem


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy())


# ---- the image encoder -----------------------------------------------------------------------
class OnnxEncoder(nn.Module):
    """A grid encoder (pixels (B, 3, S, S) -> features (B, N, C)) run by onnxruntime, exported from
    the torch encoder's own ``forward``; everything else (``preprocess``, ``name``, ``pooled``, ...)
    is the wrapped torch encoder's."""

    def __init__(self, encoder: nn.Module, threads: int | None = None):
        super().__init__()
        self.encoder = encoder.eval()
        size = encoder.image_size
        path = export_cached(
            encoder, (torch.zeros(1, 3, size, size),), f"{encoder.name}-grid", fingerprint(encoder, size),
            input_names=["pixels"], output_names=["grid"],
            dynamic_axes={"pixels": {0: "batch"}, "grid": {0: "batch"}},
        )
        self.path = path
        self.session = make_session(path, threads)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("encoder"), name)

    def train(self, mode: bool = True) -> OnnxEncoder:
        return super().train(False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Spatial feature grid (B, N, C), as the torch encoder's ``forward``."""
        check = getattr(self.encoder, "_check", None)
        if check is not None:
            check(pixels)  # the same clear error for a wrong input size
        (grid,) = self.session.run(None, {"pixels": _np(pixels.float())})
        return torch.from_numpy(grid)

    @torch.no_grad()
    def check(self) -> str | None:
        """None when the exported encoder gives the torch encoder's grid for two random images
        (within 1e-4 of the largest activation, float32 rounding); else what differs."""
        size = self.encoder.image_size
        pixels = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
        ref, got = self.encoder(pixels), self(pixels)
        if ref.shape != got.shape:
            return f"gave a grid of shape {tuple(got.shape)}, torch {tuple(ref.shape)}"
        diff, scale = (ref - got).abs().max().item(), ref.abs().max().item()
        return None if diff <= 1e-4 * max(1.0, scale) else f"gave features {diff:.2g} away from torch's"


def fast_encoder(encoder: nn.Module, runtime: str | None = "auto") -> nn.Module:
    """``encoder`` on onnxruntime when ``runtime`` resolves to onnx on CPU and the export reproduces
    it (``OnnxEncoder.check``); else ``encoder`` itself, with a warning when the check failed.

    For the encoders that say they export (``exports_to_onnx``: EfficientNet-Lite2 and the tiny one
    of :mod:`polycap.backends.encoders`); others stay on torch, and asking for ``onnx`` with one of
    them is an error. The float16 features a feature cache stores this way equal torch's but for
    rare one-ulp differences; bench/README.md has the measured speed-up and share.
    """
    from polycap.errors import PolycapError

    requested = requested_runtime(runtime)
    if isinstance(encoder, OnnxEncoder):
        return encoder
    own = getattr(encoder, "exports_to_onnx", False) is True
    if not own:
        if requested == "onnx":
            raise PolycapError(f"encoder {getattr(encoder, 'name', encoder)!r} has no onnx runtime; use 'torch'")
        return encoder
    if resolve_runtime(requested, "cpu") != "onnx":
        return encoder
    fast = OnnxEncoder(encoder)
    problem = check_once(fast.path, fast.check)
    if problem is None:
        return fast
    if requested == "onnx":
        raise PolycapError(f"the onnx image encoder {problem}")
    log.warning("encoder %s stays on torch: the onnx export %s", encoder.name, problem)
    return encoder


# ---- one decoder step ------------------------------------------------------------------------
def _layer_kv(cache: DynamicCache, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    layer = cache.layers[i]
    return layer.keys, layer.values


class _StepExport(nn.Module):
    """What is exported: one new token per row, given every layer's self-attention keys/values so
    far (B, H, T, d) and its cross-attention keys/values (B, H, N, d), through the unchanged GPT-2
    forward; returns the logits (B, 1, V) and each layer's new keys/values (B, H, 1, d)."""

    def __init__(self, decoder: GPT2LMHeadModel):
        super().__init__()
        self.decoder = decoder
        self.n_layer = decoder.config.n_layer

    def forward(self, input_ids: torch.Tensor, *kv: torch.Tensor) -> tuple[torch.Tensor, ...]:
        L = self.n_layer
        own, cross = DynamicCache(), DynamicCache()
        for i in range(L):
            own.update(kv[2 * i], kv[2 * i + 1], i)
            cross.update(kv[2 * L + 2 * i], kv[2 * L + 2 * i + 1], i)
        cache = EncoderDecoderCache(own, cross)
        for i in range(L):
            cache.is_updated[i] = True  # cross-attention reads the given keys/values
        past = kv[0].shape[2]
        # encoder_hidden_states only switches cross-attention on; its values are never read
        dummy = input_ids.new_zeros((input_ids.shape[0], 1, self.decoder.config.n_embd), dtype=kv[0].dtype)
        out = self.decoder(input_ids=input_ids, use_cache=True, encoder_hidden_states=dummy, **{_CACHE_ARG: cache})
        new: list[torch.Tensor] = []
        for i in range(L):
            k, v = _layer_kv(own, i)
            new += [k[:, :, past:], v[:, :, past:]]
        return (out.logits, *new)


class OnnxGPT2Decoder(GPT2LMHeadModel):
    """polycap's GPT-2 decoder whose generation steps run in onnxruntime.

    Build it with ``from_decoder``: it shares the torch decoder's modules (so the torch fallback is
    the same model) and holds the exported step. ``forward`` takes the fast path only for what
    ``generate()`` sends after the prompt has no past: exactly one token per row, an
    ``EncoderDecoderCache``, no padding, no gradients; anything else runs the torch forward.
    """

    session: Any = None
    path: Path | None = None

    @classmethod
    def from_decoder(cls, decoder: GPT2LMHeadModel, threads: int | None = None) -> OnnxGPT2Decoder:
        with torch.device("meta"):  # no weights of its own: the modules below are the decoder's
            fast = cls(decoder.config)
        fast.transformer = decoder.transformer
        fast.lm_head = decoder.lm_head
        fast.generation_config = decoder.generation_config
        fast.eval()
        cfg = decoder.config
        L, H, N = cfg.n_layer, cfg.n_head, 3
        d = cfg.n_embd // H
        ids = torch.zeros(1, 1, dtype=torch.long)
        kv = [torch.zeros(1, H, 2, d) for _ in range(2 * L)] + [torch.zeros(1, H, N, d) for _ in range(2 * L)]
        names = [f"{s}_{kind}{i}" for s in ("past", "cross") for i in range(L) for kind in "kv"]
        outs = ["logits"] + [f"new_{kind}{i}" for i in range(L) for kind in "kv"]
        axes: dict[str, dict[int, str]] = {"input_ids": {0: "batch"}, "logits": {0: "batch"}}
        axes |= {n: {0: "batch", 2: "past"} for n in names if n.startswith("past")}
        axes |= {n: {0: "batch", 2: "positions"} for n in names if n.startswith("cross")}
        axes |= {n: {0: "batch"} for n in outs[1:]}
        path = export_cached(
            _StepExport(decoder), (ids, *kv), "gpt2-step", fingerprint(decoder),
            fuse={"model_type": "gpt2", "num_heads": H, "hidden_size": cfg.n_embd},
            input_names=["input_ids", *names], output_names=outs, dynamic_axes=axes,
        )
        fast.path = path
        fast.session = make_session(path, threads)
        fast._dims = (L, H, d, cfg.n_embd)
        fast._feed_names = [(f"past_k{i}", f"past_v{i}", f"cross_k{i}", f"cross_v{i}") for i in range(L)]
        return fast

    def _fast_ok(self, input_ids, cache, attention_mask, rest: dict[str, Any]) -> bool:
        if self.session is None or self.training or torch.is_grad_enabled():
            return False
        if input_ids is None or input_ids.shape[1] != 1 or not isinstance(cache, EncoderDecoderCache):
            return False
        unsupported = ("inputs_embeds", "labels", "token_type_ids", "encoder_attention_mask")
        if any(rest.get(k) is not None for k in unsupported):
            return False
        if rest.get("output_attentions") or rest.get("output_hidden_states"):
            return False
        if attention_mask is not None and not bool(attention_mask.all()):
            return False  # padded rows: the exported step attends to every past position
        pos = rest.get("position_ids")
        return pos is None or bool((pos == cache.get_seq_length()).all())

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        cache: Any = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Any = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithCrossAttentions:
        cache = cache if cache is not None else past_key_values
        if isinstance(cache, DynamicCache) and use_cache is not False and self.config.add_cross_attention:
            cache = EncoderDecoderCache(cache, DynamicCache())  # what GPT2Model does on the first step
        rest = dict(
            token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds,
            encoder_attention_mask=encoder_attention_mask, labels=labels, **kwargs,
        )
        if not self._fast_ok(input_ids, cache, attention_mask, rest) or encoder_hidden_states is None:
            return super().forward(
                input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=encoder_hidden_states,
                use_cache=use_cache, logits_to_keep=logits_to_keep, **rest, **{_CACHE_ARG: cache},
            )
        return self._fast_step(input_ids, cache, encoder_hidden_states)

    def _fast_step(self, input_ids: torch.Tensor, cache: EncoderDecoderCache, memory: torch.Tensor):
        L, H, d, width = self._dims  # plain ints: config attribute access is slow in a per-token loop
        own, cross = cache.self_attention_cache, cache.cross_attention_cache
        if not cache.is_updated.get(0):  # first step: the memory's keys/values, once, as GPT-2 does
            for i, block in enumerate(self.transformer.h):
                k, v = block.crossattention.c_attn(memory).split(width, dim=2)
                shape = (*k.shape[:-1], H, d)
                cross.update(k.view(shape).transpose(1, 2), v.view(shape).transpose(1, 2), i)
                cache.is_updated[i] = True
        has_past = own.get_seq_length() > 0
        empty = None if has_past else np.zeros((input_ids.shape[0], H, 0, d), dtype=np.float32)
        feed = {"input_ids": _np(input_ids)}
        for i, (pk, pv, ck, cv) in enumerate(self._feed_names):
            if has_past:
                k, v = _layer_kv(own, i)
                feed[pk], feed[pv] = _np(k), _np(v)
            else:
                feed[pk] = feed[pv] = empty
            k, v = _layer_kv(cross, i)
            feed[ck], feed[cv] = _np(k), _np(v)
        logits, *new = self.session.run(None, feed)
        for i in range(L):
            own.update(torch.from_numpy(new[2 * i]), torch.from_numpy(new[2 * i + 1]), i)
        return CausalLMOutputWithCrossAttentions(logits=torch.from_numpy(logits), **{_OUT_CACHE_FIELD: cache})
