"""The ``native`` backend: polycap's own captioners (polycap-base and its tiny random twin)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from polycap.backends.base import Capabilities
from polycap.backends.encoders import build_encoder
from polycap.backends.feature_captioner import FeatureCaptioner
from polycap.backends.native.concepts import (
    ConceptBias,
    ConceptHead,
    ConceptInput,
    ConceptSettings,
    Target,
    concept_input,
    concept_phrases,
    confident,
    inner_tokens,
    name_pieces,
)
from polycap.backends.native.config import NativeConfig
from polycap.backends.native.model import CaptionModel, mean_token_logprob
from polycap.backends.native.tokenizer import CaptionTokenizer
from polycap.backends.torch_utils import generate_kwargs, resolve_device, seed_everything
from polycap.errors import PolycapError
from polycap.types import Alternative, Caption, GenerationOptions

log = logging.getLogger(__name__)


class NativeCaptioner(FeatureCaptioner):
    def __init__(
        self,
        cfg: NativeConfig,
        model: CaptionModel,
        encoder: torch.nn.Module | None,
        tokenizer: CaptionTokenizer,
        device: str = "cpu",
        concept_head: ConceptHead | None = None,
    ):
        """``concept_head``: what recognises concepts in a feature grid when there is no ``encoder``
        to take it from (training validates on cached features)."""
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
        self.runtime = "torch"
        self._generator: torch.nn.Module | None = None  # the decoder generate() runs; None: self.model's
        self._concept_head: ConceptHead | None = concept_head
        self._inner: torch.Tensor | None = None
        self._phrases: dict[str, list] = {}  # lang -> per concept (steered, also named) phrases
        self._names: dict[str, list] = {}  # lang -> per concept the token ids fed as its name
        self.set_concepts(cfg.concepts)

    def set_concepts(self, settings: dict[str, Any] | str | None) -> NativeCaptioner:
        """How the encoder's recognised concepts reach the caption: a ``ConceptSettings`` dict, or
        just its mode (``"off"``, ``"tokens"``, ``"bias"``, ``"tokens+bias"``). Any mode but ``off``
        needs an encoder with an ImageNet classifier; ``tokens`` a model trained with concept slots."""
        if isinstance(settings, str):
            settings = {**self.cfg.concepts, "mode": settings}
        concepts = ConceptSettings.from_dict(settings)
        if concepts.feeds and not self.cfg.concept_slots:
            raise PolycapError(
                f"{self.name} was trained without concept tokens: concepts mode {concepts.mode!r} needs a model "
                "with concept_slots (use 'bias' or 'off')"
            )
        self.concepts = concepts
        if concepts.mode != "off" and self._concept_head is None and self.encoder is not None:
            table = self._concept_table
            self._concept_head = ConceptHead.from_encoder(
                self.encoder, table.class_concept_indices(), len(table)
            ).to(self.device)
        return self

    @property
    def _concept_table(self):
        """The concept table (``load_concepts`` loads it once and caches it)."""
        from polycap.data.concepts import load_concepts

        return load_concepts()

    def concept_names(self, lang: str) -> list[tuple[int, ...]]:
        """Per concept, the token ids this model is fed as its name in ``lang`` (cached)."""
        if lang not in self._names:
            self._names[lang] = name_pieces(self._concept_table, lang, self.tokenizer.tok, self.cfg.concept_pieces)
        return self._names[lang]

    def _concept_processor(
        self, features: torch.Tensor, lang: str
    ) -> tuple[ConceptBias | None, ConceptInput | None, list[list]]:
        """For these images in ``lang``: the bias (or None), the concepts fed to the decoder (or
        None), and each image's (concept id, probability) pairs."""
        n = features.shape[0]
        if self.concepts.mode == "off" or self._concept_head is None:
            return None, None, [[] for _ in range(n)]
        s = self.concepts
        chosen = confident(self._concept_head(features), s.min_prob, s.max_concepts)
        ids = self._concept_table.ids
        named = [[(ids[i], round(p, 4)) for i, p in row] for row in chosen]
        fed = None
        if s.feeds:
            names = self.concept_names(lang)
            fed = concept_input(chosen, [names] * n, self.cfg.concept_slots, self.cfg.concept_pieces).to(self.device)
        if not s.biases:
            return None, fed, named
        if lang not in self._phrases:
            self._phrases[lang] = concept_phrases(self._concept_table, lang, self.tokenizer.tok)
        phrases = self._phrases[lang]
        targets = [[Target(phrases[i][0], s.bias * p, phrases[i][1]) for i, p in row if phrases[i][0]]
                   for row in chosen]
        if self._inner is None:
            self._inner = inner_tokens(self.tokenizer.tok).to(self.device)
        return ConceptBias(targets, s.continue_bias, self._inner), fed, named

    @property
    def generator(self) -> torch.nn.Module | None:
        """The decoder ``generate()`` runs on: the onnx runtime's, or None for the torch model's own."""
        return self._generator

    def use_runtime(self, runtime: str | None = "auto") -> NativeCaptioner:
        """Run the encoder and the generation steps with ``torch`` or ``onnx`` (onnxruntime, CPU only);
        ``auto`` (also ``$POLYCAP_RUNTIME``) picks onnx on CPU when the ``[onnx]`` extra is installed.

        The onnx graphs are exported from this model's current weights (once, cached on disk, see
        ``polycap.runtime.onnx``); change the weights afterwards and call this again. A model whose
        exported step does not reproduce the torch decoder (``_check_generator``), or whose exported
        encoder does not reproduce the torch one (``OnnxEncoder.check``), stays on torch; each export
        is checked once per onnxruntime version.
        """
        from polycap.runtime import onnx as ox

        requested = ox.requested_runtime(runtime)
        chosen = ox.resolve_runtime(requested, self.device)
        torch_encoder = getattr(self.encoder, "encoder", self.encoder) if self.runtime == "onnx" else self.encoder
        self.encoder, self._generator, self.runtime = torch_encoder, None, "torch"
        if chosen == "torch" or self.cfg.arch != "transformer":
            return self
        # Each export is checked against torch once per onnxruntime version (a marker beside it).
        generator = ox.OnnxGPT2Decoder.from_decoder(self.model.decoder)
        problem = ox.check_once(generator.path, lambda: self._check_generator(generator))
        problem = problem and f"decoder step {problem}"
        encoder = None
        if not problem and torch_encoder is not None:
            encoder = ox.OnnxEncoder(torch_encoder)
            encoder_problem = ox.check_once(encoder.path, encoder.check)
            problem = encoder_problem and f"image encoder {encoder_problem}"
        if problem:
            if requested == "onnx":
                raise PolycapError(f"{self.name}: the onnx {problem}")
            log.warning("%s: staying on torch, the onnx %s", self.name, problem)
            return self
        self.encoder = encoder or torch_encoder
        self._generator, self.runtime = generator, "onnx"
        return self

    @torch.inference_mode()
    def _check_generator(self, generator: torch.nn.Module) -> str | None:
        """None when ``generator`` decodes 6 greedy tokens, and 3 with beam search, as the torch
        decoder does from a random memory (same ids, logits within 1e-3); else what differs."""
        g = torch.Generator().manual_seed(0)
        features = torch.randn(2, self.cfg.grid_positions, self.cfg.encoder_dim, generator=g)
        lang_ids = torch.full((2,), self.tokenizer.lang_id(self.cfg.languages[0]))
        for kw in ({"num_beams": 1}, {"num_beams": 2, "max_new_tokens": 3, "min_new_tokens": 3}):
            kw = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False, **kw}
            runs = [
                self.model.generate(
                    features, lang_ids, decoder=d, return_dict_in_generate=True, output_logits=True, **kw
                )
                for d in (None, generator)
            ]
            if not torch.equal(runs[0].sequences, runs[1].sequences):
                return f"wrote other tokens than torch with {kw}"
            diff = max((a - b).abs().max().item() for a, b in zip(runs[0].logits, runs[1].logits))
            if diff > 1e-3:
                return f"gave logits {diff:.2g} away from torch's with {kw}"
        return None

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "auto", runtime: str | None = "auto") -> NativeCaptioner:
        """Load a saved model; ``runtime`` as in ``use_runtime`` (None keeps torch, as built)."""
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
        cap = cls(cfg, model, build_encoder(cfg.encoder, inference=True), tok, resolve_device(device))
        return cap.use_runtime(runtime) if runtime else cap

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
        bias, fed, named = self._concept_processor(features, options.lang)
        if bias is not None:
            from transformers import LogitsProcessorList

            kw["logits_processor"] = LogitsProcessorList([bias])
        seed_everything(options.seed)
        if options.num_beams == 1:
            # Greedy and sampling: score from generate's own raw logits, no second decoder pass.
            out = self.model.generate(
                features, lang_ids, decoder=self._generator, concepts=fed, return_dict_in_generate=True,
                output_logits=True, **kw
            )
            seqs = out.sequences  # (n*k, T)
            mask = self.sequence_mask(seqs)
            scores = mean_token_logprob(torch.stack(out.logits, 1), seqs, mask).tolist()  # logits (B, T-1, V)
        else:
            # Beam search reorders beams between steps, so re-score the finished sequences.
            seqs = self.model.generate(features, lang_ids, decoder=self._generator, concepts=fed, **kw)  # (n*k, T)
            mask = self.sequence_mask(seqs)
            memory = self.model.memory(features, fed).repeat_interleave(k, dim=0)
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
                    meta={"concepts": [{"concept": c, "p": p} for c, p in named[i]]} if named[i] else {},
                )
            )
        return out

    def sequence_mask(self, seqs: torch.Tensor) -> torch.Tensor:
        """1 up to and including the first </s>, 0 after (generate pads finished rows)."""
        is_eos = (seqs == self.tokenizer.eos_id).int()
        is_eos[:, 0] = 0  # position 0 is the language token
        after = (is_eos.cumsum(1) - is_eos) > 0  # strictly after the first </s>
        return (~after).long()


def load_native(
    ref: str, *, device: str = "auto", name: str | None = None, runtime: str | None = "auto",
    concepts: dict[str, Any] | str | None = None, **kwargs: Any,
) -> NativeCaptioner:
    """Registry loader: ``tiny-random`` builds the toy model; anything else is a model folder.

    ``runtime``: ``auto`` (onnxruntime on CPU when installed), ``torch`` or ``onnx``; see ``use_runtime``.
    ``concepts``: override the model's concept settings (``"off"``, ``"bias"`` or a dict; see ``set_concepts``).
    """
    if kwargs:
        raise PolycapError(f"unexpected arguments for a native model: {', '.join(sorted(kwargs))}")
    if ref == "tiny-random":
        from polycap.backends.native.tiny import build_tiny_random

        cfg, model, encoder, tok = build_tiny_random()
        cap = NativeCaptioner(cfg, model, encoder, tok, resolve_device(device)).use_runtime(runtime)
    else:
        cap = NativeCaptioner.from_folder(ref, device=device, runtime=runtime)
    if concepts is not None:
        cap.set_concepts(concepts)
    if name and not Path(name).is_dir():
        cap.name = name
    return cap
