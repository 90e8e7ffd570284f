"""ClipCap: per-language mapping networks turn image features into a prefix a causal LM continues.

The LM sees, per caption::

    [<bos>]  prefix_1 .. prefix_k  prompt tokens  caption tokens  <eos>
     (if the tokenizer adds one)   (optional)     (labels)        (label)

Only caption tokens and ``<eos>`` are labels; everything else, and padding, is -100. Padding is
found from the attention mask, never by comparing token ids (the reference code pads with id 0,
which is GPT-2's "!", and masks the loss by id, so real "!" tokens are never learned).

The LM's own ``generate(inputs_embeds=...)`` decodes (greedy, beam, sampling): it returns only new
tokens, so the prompt is never part of a caption. Decoding stops at ``<eos>`` or a newline.

An optional **output vocabulary** (``set_output_vocab``: the token ids of the training captions plus
the stop tokens) restricts the softmax to those ids in training, scoring and decoding alike. Most of
a big multilingual LM's vocabulary never occurs in captions (Gemma-3: 262,144 entries), and its output
layer is then about half of a training step; restricted, it costs a few percent.

Shapes: B captions/images, k prefix length, P context length (bos + k + prompt), T tokens, D LM width.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from polycap.backends.clipcap.config import ClipCapConfig
from polycap.backends.clipcap.mapper import build_mapper
from polycap.errors import PolycapError, UnsupportedLanguageError


def newline_token_ids(tok: Any) -> set[int]:
    """Ids of the tokens a model writes for a line break (\\n, \\n\\n, ...): decoding stops on them."""
    ids: set[int] = set()
    for text in ("\n", "\n\n", "a\n", ".\n", "a.\n\n"):
        for i in tok.encode(text, add_special_tokens=False):
            if "\n" in tok.decode([i]):
                ids.add(int(i))
    return ids


class ClipCapModel(nn.Module):
    def __init__(self, cfg: ClipCapConfig, lm: nn.Module, tokenizer: Any):
        super().__init__()
        self.cfg, self.lm, self.tok = cfg, lm, tokenizer
        width = lm.get_input_embeddings().weight.shape[1]
        if cfg.lm_width and cfg.lm_width != width:
            raise PolycapError(f"the adapters were trained for an LM of width {cfg.lm_width}; this LM has {width}")
        cfg.lm_width = width
        self.languages = list(cfg.languages)
        self.adapters = nn.ModuleDict(
            {lang: build_mapper(cfg.mapper, cfg.feature_dim, width, cfg.features) for lang in self.languages}
        )
        if tokenizer.eos_token_id is None:
            raise PolycapError("the LM's tokenizer has no eos token, so captions could not end")
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id)
        probe = tokenizer("a").input_ids  # does this tokenizer start sequences with <bos>?
        bos = tokenizer.bos_token_id
        self.bos_id = int(bos) if bos is not None and probe and probe[0] == bos else None
        gen_eos = getattr(getattr(lm, "generation_config", None), "eos_token_id", None)
        gen_eos = gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else []
        self.stop_ids = sorted({self.eos_id, *map(int, gen_eos), *newline_token_ids(tokenizer)})
        self.prompt_ids = {lang: self._encode(cfg.prompt_for(lang)) for lang in self.languages}
        # the output vocabulary (set_output_vocab); None: the LM's whole vocabulary
        self.output_vocab: torch.Tensor | None = None  # (V',) sorted ids allowed in any language
        self._vocab_index: torch.Tensor | None = None  # (V,) id -> its index in output_vocab, -1 outside
        self._lang_mask: torch.Tensor | None = None  # (languages, V') 0 where the language allows the id, -inf not
        self.vocab_by_lang: dict[str, list[int]] | None = None
        self.set_mode(cfg.mode)

    # ---- the output vocabulary ---------------------------------------------------------------
    def _hf_lm(self) -> nn.Module:
        """The transformers model under any peft wrapper (LoRA layers stay injected in it)."""
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    def set_output_vocab(self, ids: Any) -> None:
        """Restrict the softmax to allowed ids: one collection for every language, or ``{lang: ids}``
        (each language's own; every language of the model needs one). The stop tokens are always
        allowed; None lifts the restriction.

        Checked once on a random input: the restricted logits must equal the LM's own logits at
        those ids (an LM whose output layer is more than a linear head and final soft-capping is
        refused)."""
        if ids is None:
            self.output_vocab = self._vocab_index = self._lang_mask = self.vocab_by_lang = None
            return
        if isinstance(ids, dict):
            missing, extra = set(self.languages) - set(ids), set(ids) - set(self.languages)
            if missing or extra:
                raise PolycapError(f"the output vocabulary must name exactly the model's languages "
                                   f"({', '.join(self.languages)}); missing {sorted(missing)}, "
                                   f"unexpected {sorted(extra)}")
            by_lang = {lang: sorted({*map(int, ids[lang]), *self.stop_ids}) for lang in self.languages}
        else:
            shared = sorted({*map(int, ids), *self.stop_ids})
            by_lang = {lang: shared for lang in self.languages}
        size = self._hf_lm().get_output_embeddings().weight.shape[0]
        allowed = sorted(set().union(*by_lang.values()))
        if allowed[0] < 0 or allowed[-1] >= size:
            raise PolycapError(f"output vocabulary ids must lie in [0, {size}); got {allowed[0]}..{allowed[-1]}")
        vocab = torch.tensor(allowed, dtype=torch.long)
        index = torch.full((size,), -1, dtype=torch.long)
        index[vocab] = torch.arange(len(allowed))
        lang_mask = torch.full((len(self.languages), len(allowed)), float("-inf"))
        for i, lang in enumerate(self.languages):
            lang_mask[i, index[torch.tensor(by_lang[lang])]] = 0.0
        self.output_vocab, self._vocab_index, self._lang_mask, self.vocab_by_lang = vocab, index, lang_mask, by_lang
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            e = torch.randn(1, 3, self.cfg.lm_width) * 0.02
            dev = self._hf_lm().get_output_embeddings().weight.device
            e = e.to(dev, self.embed(torch.zeros(1, dtype=torch.long, device=dev)).dtype)
            full = self.lm(inputs_embeds=e).logits[0][:, vocab.to(dev)].float()
            mine = self.vocab_logits(self._hidden(e, torch.ones(1, 3, dtype=torch.long, device=dev))[0]).float()
        if not torch.allclose(full, mine, rtol=1e-3, atol=1e-3 * (1 + float(full.abs().max()))):
            self.set_output_vocab(None)
            raise PolycapError("this LM's output layer is not a plain linear head (with optional final "
                               "soft-capping), so an output vocabulary cannot be used with it")

    def _hidden(self, embeds: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """The LM body's last hidden states (B, L, D): what its output layer reads."""
        return self._hf_lm().base_model(inputs_embeds=embeds, attention_mask=attn).last_hidden_state

    def vocab_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., D) hidden states -> (..., V') logits over the output vocabulary only."""
        hf = self._hf_lm()
        head = hf.get_output_embeddings()
        vocab = self.output_vocab.to(head.weight.device)
        logits = hidden @ head.weight[vocab].T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[vocab]
        cap = getattr(hf.config.get_text_config(), "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def vocab_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids -> their indices in the output vocabulary (-1 outside it)."""
        return self._vocab_index.to(ids.device)[ids]

    def lang_vocab_mask(self, lang_idx: torch.Tensor) -> torch.Tensor:
        """(...,) language indices -> (..., V') additive masks: 0 where that language allows the id."""
        return self._lang_mask.to(lang_idx.device)[lang_idx]

    # ---- tokens ------------------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False)) if text else []

    def lang_index(self, lang: str) -> int:
        if lang not in self.adapters:
            raise UnsupportedLanguageError(lang, self.languages, self.cfg.name)
        return self.languages.index(lang)

    def encode_caption(self, text: str, lang: str) -> list[int]:
        """``[lang index, caption ids..., eos]``: the lang index rides in front, like the native
        models' language token, so the shared batching code can carry it; :meth:`forward` strips it."""
        prompt, text = self.cfg.prompt_for(lang), text.strip()
        if prompt and not prompt[-1].isspace():
            text = " " + text  # "Caption: a dog", as the LM would write it after a prompt
        ids = self._encode(text)[: self.cfg.max_length - 1]
        return [self.lang_index(lang), *ids, self.eos_id]

    # ---- modes -------------------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        """Which weights train: "mapper" (LM frozen), "lora" (adapters + LoRA), "full"."""
        self.mode = mode
        self.lm.requires_grad_(mode == "full")
        if mode == "lora":
            for n, p in self.lm.named_parameters():
                p.requires_grad_("lora_" in n)
        self.adapters.requires_grad_(True)

    def train(self, mode: bool = True) -> ClipCapModel:
        super().train(mode)
        if self.mode == "mapper":
            self.lm.eval()  # a frozen LM keeps dropout off
        return self

    def add_lora(self) -> None:
        """Wrap the LM with fresh peft LoRA layers (``cfg.lora``) and train them with the adapters."""
        from peft import LoraConfig, get_peft_model

        c = self.cfg.lora
        target = c.target_modules
        if target is None:
            from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as known

            target = None if self.lm.config.model_type in known else "all-linear"
        lcfg = LoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=target,
                          task_type="CAUSAL_LM")
        self.lm = get_peft_model(self.lm, lcfg)
        self.set_mode("lora")
        self.train(self.training)  # new LoRA layers start in training mode (dropout on); keep ours

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: the trained weights only (never a frozen LM)."""
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        want = set(self.trainable_state_dict())
        if set(state) != want:
            raise PolycapError(f"checkpoint does not match the model: missing {sorted(want - set(state))[:5]}, "
                               f"unexpected {sorted(set(state) - want)[:5]}")
        self.load_state_dict(state, strict=False)

    # ---- the sequence the LM sees ------------------------------------------------------------
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(ids)

    def prefix(self, features: torch.Tensor, lang_idx: torch.Tensor) -> torch.Tensor:
        """(B, N, C) features, (B,) language indices -> (B, k, D) prefixes, each by its language's mapper."""
        dtype = self.embed(torch.zeros(1, dtype=torch.long, device=features.device)).dtype
        out = None
        for i in lang_idx.unique().tolist():
            sel = (lang_idx == i).nonzero(as_tuple=True)[0]
            p = self.adapters[self.languages[i]](features[sel].float()).to(dtype)  # (b, k, D)
            if out is None:
                out = p.new_zeros(features.shape[0], *p.shape[1:])
            out = out.index_copy(0, sel, p)
        return out

    def _head(self, batch: int, device: torch.device) -> torch.Tensor:
        """The (B, 0 or 1, D) <bos> embedding placed before the prefix."""
        if self.bos_id is None:
            return self.embed(torch.zeros(batch, 0, dtype=torch.long, device=device))
        return self.embed(torch.full((batch, 1), self.bos_id, dtype=torch.long, device=device))

    def forward(
        self,
        features: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        owner: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        """Mean cross-entropy of the captions. ``input_ids`` (B, 1 + T): language index, then
        caption ids + eos, right-padded; ``attention_mask`` marks the real ones. ``features``
        (I, N, C) may hold fewer images than captions: ``owner`` (B,) maps captions to images."""
        if owner is not None:
            features = features[owner]
        lang_idx, ids, mask = input_ids[:, 0], input_ids[:, 1:], attention_mask[:, 1:]
        b, dev = ids.shape[0], ids.device
        # prompt + caption per row: prompts differ in length between languages
        rows, row_labels = [], []
        for i in range(b):
            cap = ids[i][mask[i].bool()].tolist()
            prompt = self.prompt_ids[self.languages[int(lang_idx[i])]]
            rows.append(prompt + cap)
            row_labels.append([-100] * len(prompt) + cap)
        width = max(len(r) for r in rows)
        tok = torch.full((b, width), self.pad_id, dtype=torch.long, device=dev)
        tmask = torch.zeros((b, width), dtype=torch.long, device=dev)
        labels = torch.full((b, width), -100, dtype=torch.long, device=dev)
        for i, (r, lab) in enumerate(zip(rows, row_labels)):
            tok[i, : len(r)] = torch.tensor(r)
            tmask[i, : len(r)] = 1
            labels[i, : len(lab)] = torch.tensor(lab)
        head = torch.cat([self._head(b, dev), self.prefix(features, lang_idx)], dim=1)  # (B, P0, D)
        embeds = torch.cat([head, self.embed(tok)], dim=1)  # (B, P0 + W, D)
        attn = torch.cat([torch.ones(b, head.shape[1], dtype=torch.long, device=dev), tmask], dim=1)
        labels = torch.cat([torch.full((b, head.shape[1]), -100, dtype=torch.long, device=dev), labels], dim=1)
        targets = labels[:, 1:]  # position t predicts token t + 1
        if self.output_vocab is not None:  # the output layer runs on the allowed ids only
            keep = targets != -100
            mask_k = self.lang_vocab_mask(lang_idx[:, None].expand_as(targets)[keep])  # (K, V'), each row's language
            tgt = self.vocab_positions(targets[keep])
            outside = (tgt < 0) | torch.isinf(mask_k.gather(1, tgt.clamp(min=0)[:, None]).squeeze(1))
            if bool(outside.any()):
                bad = sorted(set(targets[keep][outside].tolist()))[:5]
                raise PolycapError(f"caption token ids {bad} are outside the output vocabulary of their language")
            logits = self.vocab_logits(self._hidden(embeds, attn)[:, :-1][keep]).float() + mask_k  # (K, V')
            logp = torch.log_softmax(logits, dim=-1)
            loss = -logp.gather(1, tgt[:, None]).squeeze(1)
            if label_smoothing:  # spread over the ids the row's language allows (cross_entropy's rule there)
                allowed = torch.isfinite(mask_k)
                uniform = -logp.masked_fill(~allowed, 0.0).sum(1) / allowed.sum(1)
                loss = (1 - label_smoothing) * loss + label_smoothing * uniform
            return loss.mean()
        if self._keeps_logits:  # the output layer runs only where a caption token is predicted
            keep = torch.cat([targets != -100, torch.zeros(b, 1, dtype=torch.bool, device=dev)], dim=1)
            logits = self.lm(inputs_embeds=embeds, attention_mask=attn, logits_to_keep=keep).logits  # (K, V)
            return nn.functional.cross_entropy(logits.float(), targets[targets != -100],
                                               label_smoothing=label_smoothing)
        logits = self.lm(inputs_embeds=embeds, attention_mask=attn).logits  # (B, L, V)
        return nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
            targets.reshape(-1),
            ignore_index=-100,
            label_smoothing=label_smoothing,
        )

    @functools.cached_property
    def _keeps_logits(self) -> bool:
        """Whether the LM's forward takes ``logits_to_keep``: transformers' causal LMs do, and since
        transformers 5 they accept the boolean (B, L) mask form used here."""
        base = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        return "logits_to_keep" in inspect.signature(base.forward).parameters

    def context(self, features: torch.Tensor, lang: str) -> tuple[torch.Tensor, torch.Tensor]:
        """What generation starts from, for one language: (B, P, D) embeddings and (B, P) mask."""
        b, dev = features.shape[0], features.device
        idx = torch.full((b,), self.lang_index(lang), dtype=torch.long, device=dev)
        prompt = torch.tensor([self.prompt_ids[lang]], dtype=torch.long, device=dev).expand(b, -1)
        embeds = torch.cat([self._head(b, dev), self.prefix(features, idx), self.embed(prompt)], dim=1)
        return embeds, torch.ones(embeds.shape[:2], dtype=torch.long, device=dev)

    def generate(self, features: torch.Tensor, lang: str, **generate_kwargs: Any) -> torch.Tensor:
        """(B * num_return_sequences, T) new token ids; finished rows are padded with pad_id."""
        embeds, attn = self.context(features, lang)
        gen = GenerationConfig(eos_token_id=self.stop_ids, pad_token_id=self.pad_id, **generate_kwargs)
        extra = {}
        if self.output_vocab is not None:
            allowed = torch.tensor(self.vocab_by_lang[lang], dtype=torch.long)
            extra["logits_processor"] = LogitsProcessorList([OutputVocabProcessor(allowed, self._vocab_index.shape[0])])
        return self.lm.generate(inputs_embeds=embeds, attention_mask=attn, generation_config=gen, **extra)

    def sequence_mask(self, seqs: torch.Tensor) -> torch.Tensor:
        """1 up to and including the first stop token (eos or newline), 0 after."""
        stop = torch.isin(seqs, torch.tensor(self.stop_ids, device=seqs.device)).int()
        after = (stop.cumsum(1) - stop) > 0
        return (~after).long()

    def token_logprobs(
        self, embeds: torch.Tensor, attn: torch.Tensor, seqs: torch.Tensor, mask: torch.Tensor, lang: str | None = None
    ) -> torch.Tensor:
        """Mean log-probability of each sequence's tokens (where ``mask``) after its context; with an
        output vocabulary, under ``lang``'s restricted softmax."""
        full = torch.cat([embeds, self.embed(seqs)], dim=1)
        full_mask = torch.cat([attn, mask], dim=1)
        p = embeds.shape[1]
        if self.output_vocab is not None:
            if lang is None:
                raise PolycapError("token_logprobs needs the language when the model has an output vocabulary")
            logits = self.vocab_logits(self._hidden(full, full_mask)[:, p - 1 : -1])  # (B, T, V')
            logits = logits.float() + self._lang_mask[self.lang_index(lang)].to(logits.device)
            seqs = self.vocab_positions(seqs).clamp(min=0)  # only padding (masked below) lies outside
        else:
            logits = self.lm(inputs_embeds=full, attention_mask=full_mask).logits[:, p - 1 : -1]
        logp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V): predicts seqs
        tok = logp.gather(-1, seqs[:, :, None]).squeeze(-1)
        m = mask.to(tok.dtype)
        return (tok * m).sum(1) / m.sum(1).clamp(min=1)


class OutputVocabProcessor(LogitsProcessor):
    """A transformers logits processor: log-softmax over the ``allowed`` ids only (-inf elsewhere).

    Renormalising (not only masking) makes beam search maximise the same restricted
    log-probabilities that training optimises and ``token_logprobs`` reports; greedy and sampling
    choose as they would from the masked logits."""

    def __init__(self, allowed: torch.Tensor, size: int) -> None:
        self.mask = torch.full((size,), float("-inf"))
        self.mask[allowed] = 0.0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(scores.float() + self.mask.to(scores.device), dim=-1).to(scores.dtype)
