"""The ``native`` backend: polycap's own captioners (polycap-base and its tiny random twin)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from polycap.backends.base import Capabilities
from polycap.backends.feature_captioner import FeatureCaptioner
from polycap.backends.native.config import NativeConfig
from polycap.backends.native.model import CaptionModel, mean_token_logprob
from polycap.backends.native.tokenizer import CaptionTokenizer
from polycap.backends.torch_utils import generate_kwargs, resolve_device, seed_everything
from polycap.errors import PolycapError
from polycap.types import Alternative, Caption, GenerationOptions


def build_encoder(spec: dict[str, Any], inference: bool = False) -> torch.nn.Module:
    """Encoders by name; weights come from installed packages, never from a download.

    ``inference=True`` returns the faster BN-folded channels-last EfficientNet (same function).
    """
    name = spec.get("name")
    if name == "tiny-conv":
        from polycap.backends.native.tiny import TinyConvEncoder

        return TinyConvEncoder(spec.get("dim", 16), spec.get("seed", 0))
    if name == "efficientnet-lite2":
        from polycap.backends.native.encoder import EfficientNetLite2Encoder

        enc = EfficientNetLite2Encoder.from_pretrained()
        return enc.fuse_for_inference() if inference else enc
    raise PolycapError(f"unknown encoder {name!r}; known: efficientnet-lite2, tiny-conv")


class NativeCaptioner(FeatureCaptioner):
    def __init__(
        self,
        cfg: NativeConfig,
        model: CaptionModel,
        encoder: torch.nn.Module | None,
        tokenizer: CaptionTokenizer,
        device: str = "cpu",
    ):
        super().__init__(
            cfg.name,
            Capabilities(languages=tuple(cfg.languages), beam_search=True, sampling=True),
        )
        self.cfg = cfg
        self.device = device
        self.model = model.to(device).eval()
        self.encoder = encoder.to(device).eval() if encoder is not None else None
        self.tokenizer = tokenizer
        self.generation_defaults = dict(cfg.generation)  # e.g. {"no_repeat_ngram_size": 3}
        self.default_options()  # a bad ``generation`` entry fails at load, naming the option

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "auto") -> NativeCaptioner:
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg = NativeConfig.load(folder)
        tok = CaptionTokenizer.load(folder, cfg.languages)
        model = CaptionModel(cfg, tok.pad_id, tok.eos_id)
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise PolycapError(f"{folder} has no model.safetensors")
        state = {k: v.float() for k, v in load_file(str(weights)).items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        # lm_head is tied to the token embedding, so it is never stored.
        missing = [k for k in missing if k != "decoder.lm_head.weight"]
        if missing or unexpected:
            raise PolycapError(f"{weights}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        model.decoder.tie_weights()
        return cls(cfg, model, build_encoder(cfg.encoder, inference=True), tok, resolve_device(device))

    def save(self, folder: str | Path, half: bool = False) -> None:
        """Write config.json, model.safetensors (decoder + projection only) and tokenizer.json."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
            for k, v in self.model.state_dict().items()
            if k != "decoder.lm_head.weight"
        }
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        self.cfg.save(folder)
        self.tokenizer.save(folder)

    # ---- the contract ----------------------------------------------------------------------
    @torch.inference_mode()
    def caption_features(self, features: torch.Tensor, options: GenerationOptions) -> list[Caption]:
        """Caption precomputed encoder grids (B, N, C): evaluation and training reuse this."""
        self.check_options(options)
        features = features.to(self.device)
        n = features.shape[0]
        k = options.num_return_sequences
        lang_ids = torch.full((n,), self.tokenizer.lang_id(options.lang), device=self.device)
        kw = generate_kwargs(options)
        kw["max_new_tokens"] = min(kw["max_new_tokens"], self.cfg.max_length - 1)
        kw["min_new_tokens"] = min(kw["min_new_tokens"], kw["max_new_tokens"])
        seed_everything(options.seed)
        if options.num_beams == 1:
            # Greedy and sampling: score from generate's own raw logits, no second decoder pass.
            out = self.model.generate(features, lang_ids, return_dict_in_generate=True, output_logits=True, **kw)
            seqs = out.sequences  # (n*k, T)
            mask = self._mask(seqs)
            scores = mean_token_logprob(torch.stack(out.logits, 1), seqs, mask).tolist()  # logits (B, T-1, V)
        else:
            # Beam search reorders beams between steps, so re-score the finished sequences.
            seqs = self.model.generate(features, lang_ids, **kw)  # (n*k, T)
            mask = self._mask(seqs)
            memory = self.model.memory(features).repeat_interleave(k, dim=0)
            scores = self.model.token_logprobs(memory, seqs, mask).tolist()
        texts = [self.tokenizer.decode(s[1:][m[1:].bool()].tolist()) for s, m in zip(seqs, mask)]
        out = []
        for i in range(n):
            alts = [Alternative(texts[i * k + j], scores[i * k + j]) for j in range(k)]
            out.append(
                Caption(
                    text=alts[0].text,
                    lang=options.lang,
                    model=self.name,
                    score=alts[0].score,
                    alternatives=alts if k > 1 else [],
                )
            )
        return out

    def _mask(self, seqs: torch.Tensor) -> torch.Tensor:
        """1 up to and including the first </s>, 0 after (generate pads finished rows)."""
        is_eos = (seqs == self.tokenizer.eos_id).int()
        is_eos[:, 0] = 0  # position 0 is the language token
        after = (is_eos.cumsum(1) - is_eos) > 0  # strictly after the first </s>
        return (~after).long()


def load_native(ref: str, *, device: str = "auto", name: str | None = None, **kwargs: Any) -> NativeCaptioner:
    """Registry loader: ``tiny-random`` builds the toy model; anything else is a model folder."""
    if kwargs:
        raise PolycapError(f"unexpected arguments for a native model: {', '.join(sorted(kwargs))}")
    if ref == "tiny-random":
        from polycap.backends.native.tiny import build_tiny_random

        cfg, model, encoder, tok = build_tiny_random()
        cap = NativeCaptioner(cfg, model, encoder, tok, resolve_device(device))
    else:
        cap = NativeCaptioner.from_folder(ref, device=device)
    if name and not Path(name).is_dir():
        cap.name = name
    return cap
