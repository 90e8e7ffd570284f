"""The ``clipcap`` backend: a frozen image encoder, one prefix adapter per language, any causal LM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from polycap.backends.base import Capabilities
from polycap.backends.clipcap.config import ClipCapConfig, read_output_vocab
from polycap.backends.clipcap.encoders import build_encoder
from polycap.backends.clipcap.lm import load_lm
from polycap.backends.clipcap.model import ClipCapModel
from polycap.backends.feature_captioner import FeatureCaptioner
from polycap.backends.torch_utils import generate_kwargs, resolve_device, seed_everything
from polycap.errors import PolycapError
from polycap.types import Alternative, Caption, GenerationOptions


class ClipCapCaptioner(FeatureCaptioner):
    def __init__(self, model: ClipCapModel, encoder: torch.nn.Module | None, device: str = "cpu"):
        cfg = model.cfg
        super().__init__(cfg.name, Capabilities(languages=tuple(cfg.languages), beam_search=True, sampling=True))
        self.cfg, self.device = cfg, device
        self.model = model.to(device).eval()
        self.encoder = encoder.to(device).eval() if encoder is not None else None

    # ---- construction / persistence ----------------------------------------------------------
    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "auto", encoder: Any = None) -> ClipCapCaptioner:
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg = ClipCapConfig.load(folder)
        lm, tok = load_lm(cfg.lm, base=folder)
        if cfg.mode == "lora":
            from peft import PeftModel

            lm = PeftModel.from_pretrained(lm, str(folder / "lora"))
        model = ClipCapModel(cfg, lm, tok)
        if cfg.output_vocab == "captions":
            model.set_output_vocab(read_output_vocab(folder, cfg.languages))
        for lang in cfg.languages:
            path = folder / "adapters" / f"{lang}.safetensors"
            if not path.is_file():
                raise PolycapError(f"{folder} has no adapter for {lang!r} ({path.name} missing in adapters/)")
            model.adapters[lang].load_state_dict(load_file(str(path)))
        enc = encoder if encoder is not None else build_encoder(cfg.encoder, inference=True)
        return cls(model, enc, resolve_device(device))

    def save(self, folder: str | Path, half: bool = False) -> None:
        """config.json, adapters/<lang>.safetensors, and lora/ or lm/ when the LM was trained."""
        from safetensors.torch import save_file

        folder = Path(folder)
        (folder / "adapters").mkdir(parents=True, exist_ok=True)
        for lang, mapper in self.model.adapters.items():
            state = {k: (v.half() if half else v).detach().cpu().contiguous() for k, v in mapper.state_dict().items()}
            save_file(state, str(folder / "adapters" / f"{lang}.safetensors"), metadata={"lang": lang})
        cfg = self.cfg
        if self.model.output_vocab is not None:
            (folder / "output_vocab.json").write_text(json.dumps(self.model.vocab_by_lang), encoding="utf-8")
        if cfg.mode == "lora":
            self.model.lm.save_pretrained(str(folder / "lora"))
        elif cfg.mode == "full":
            self.model.lm.save_pretrained(str(folder / "lm"))
            self.model.tok.save_pretrained(str(folder / "lm"))
            from dataclasses import replace

            cfg = replace(cfg, lm=replace(cfg.lm, path="lm", gguf_file=None))
        cfg.save(folder)

    # ---- the contract ------------------------------------------------------------------------
    @torch.inference_mode()
    def caption_features(self, features: torch.Tensor, options: GenerationOptions) -> list[Caption]:
        """Caption precomputed features (B, N, C) in ``options.lang``; evaluation and training use it."""
        self.check_options(options)
        m = self.model
        features = features.to(self.device).float()
        n, k = features.shape[0], options.num_return_sequences
        kw = generate_kwargs(options)
        kw["max_new_tokens"] = min(kw["max_new_tokens"], self.cfg.max_length)
        kw["min_new_tokens"] = min(kw["min_new_tokens"], kw["max_new_tokens"])
        seed_everything(options.seed)
        seqs = m.generate(features, options.lang, **kw)  # (n*k, T) new tokens only
        mask = m.sequence_mask(seqs)
        embeds, attn = m.context(features, options.lang)
        scores = m.token_logprobs(
            embeds.repeat_interleave(k, dim=0), attn.repeat_interleave(k, dim=0), seqs, mask, options.lang
        ).tolist()
        texts = [self._text(s[mk.bool()].tolist()) for s, mk in zip(seqs, mask)]
        out = []
        for i in range(n):
            alts = [Alternative(texts[i * k + j], scores[i * k + j]) for j in range(k)]
            out.append(Caption(text=alts[0].text, lang=options.lang, model=self.name, score=alts[0].score,
                               alternatives=alts if k > 1 else []))
        return out

    def _text(self, ids: list[int]) -> str:
        text = self.model.tok.decode(ids, skip_special_tokens=True)
        return text.split("\n", 1)[0].strip()


def load_clipcap(ref: str, *, device: str = "auto", name: str | None = None, **kwargs: Any) -> ClipCapCaptioner:
    """Registry loader: ``tiny-random`` builds the toy model in memory; anything else is a model folder."""
    if kwargs:
        raise PolycapError(f"unexpected arguments for a clipcap model: {', '.join(sorted(kwargs))}")
    if ref == "tiny-random":
        from polycap.backends.clipcap.tiny import build_tiny_random

        model, encoder = build_tiny_random()
        cap = ClipCapCaptioner(model, encoder, resolve_device(device))
    else:
        if not Path(ref).expanduser().is_dir():
            raise PolycapError(f"clipcap:{ref}: no such model folder")
        cap = ClipCapCaptioner.from_folder(Path(ref).expanduser(), device=device)
    if name and not Path(name).is_dir():
        cap.name = name
    return cap
