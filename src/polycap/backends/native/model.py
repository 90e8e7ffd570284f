"""polycap's own captioner: a frozen image encoder's feature grid, projected, attended to by a
small GPT-2-style decoder with cross-attention. transformers' ``generate()`` does the decoding
(greedy, beam search, sampling, KV cache), so no search code lives here.

A model with ``concept_slots`` also reads concepts: up to S recognised concepts' names, P tokens
each, embedded with the decoder's own (output-tied) token embedding plus a position-in-name, a
slot and a probability vector, appended to the memory (B, N + S*P, D). Empty slots hold a learned
"nothing here" vector, so the memory has one length for every image and runtime.

Shapes: B images, N grid positions, C encoder channels, D model width, T tokens, S concept slots,
P tokens per concept name.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

from polycap.backends.native.concepts import ConceptInput
from polycap.backends.native.config import NativeConfig


class CaptionModel(nn.Module):
    def __init__(self, cfg: NativeConfig, pad_id: int, eos_id: int):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        # The encoder grid (B, N, C) becomes the decoder's memory (B, N, D).
        self.proj = nn.Sequential(nn.Linear(cfg.encoder_dim, d), nn.LayerNorm(d))
        self.pos = nn.Parameter(torch.randn(1, cfg.grid_positions, d) * 0.02)
        self.mem_drop = nn.Dropout(cfg.dropout)
        if cfg.concept_slots:
            s, p = cfg.concept_slots, cfg.concept_pieces
            self.concept_piece = nn.Parameter(torch.zeros(p, d))  # position inside a concept's name
            self.concept_slot = nn.Parameter(torch.zeros(s, d))  # which concept (best first)
            self.concept_prob = nn.Parameter(torch.zeros(d))  # times the concept's probability
            self.concept_empty = nn.Parameter(torch.randn(d) * 0.02)
            self.concept_norm = nn.LayerNorm(d)
        self.decoder = _build_decoder(cfg, pad_id, eos_id)
        self.decoder.generation_config = GenerationConfig(
            eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=eos_id, use_cache=cfg.arch != "lstm"
        )

    def memory(self, features: torch.Tensor, concepts: ConceptInput | None = None) -> torch.Tensor:
        """(B, N, C) encoder grid (+ concepts) -> (B, N [+ S*P], D) cross-attention memory.

        A model with concept slots given no ``concepts`` reads every slot as empty."""
        grid = self.proj(features.to(self.pos.dtype)) + self.pos
        if self.cfg.concept_slots:
            grid = torch.cat([grid, self.concept_memory(concepts, grid.shape[0])], dim=1)
        return self.mem_drop(grid)

    def concept_memory(self, concepts: ConceptInput | None, batch: int) -> torch.Tensor:
        """(B, S*P, D): each concept name token's embedding, placed and weighted; empty where -1."""
        s, p, d = self.cfg.concept_slots, self.cfg.concept_pieces, self.cfg.d_model
        if concepts is None:
            return self.concept_empty.expand(batch, s * p, d)
        ids = concepts.ids.to(self.concept_empty.device)  # (B, S, P)
        wte = self.decoder.get_input_embeddings()
        emb = wte(ids.clamp(min=0)) + self.concept_piece + self.concept_slot[:, None]  # (B, S, P, D)
        emb = emb + concepts.probs.to(emb)[..., None, None] * self.concept_prob
        emb = torch.where((ids >= 0)[..., None], self.concept_norm(emb), self.concept_empty)
        return emb.reshape(ids.shape[0], s * p, d)

    def forward(
        self,
        features: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        owner: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        concepts: ConceptInput | None = None,
        hide_grid: torch.Tensor | None = None,
        token_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean cross-entropy of ``input_ids`` (B, T) given the images; padding masked by -100.

        ``features`` (I, N, C) may hold fewer images than captions: ``owner`` (B,) says which
        image each caption belongs to, so each image is projected once. ``concepts`` are per
        caption (B rows): a caption's language names them. ``hide_grid`` (B,) bool: those captions
        see only the grid's position embeddings, no image (training the concept path to be read).
        ``token_weight`` (B, T): each target token's weight in the loss (default 1; the mean is over
        the real tokens either way).
        """
        memory = self.proj(features.to(self.pos.dtype))  # (I, N, D)
        if owner is not None:
            memory = memory[owner]  # (B, N, D)
        if hide_grid is not None:
            memory = memory * (~hide_grid).to(memory.dtype)[:, None, None]
        memory = self.mem_drop(memory + self.pos)
        if self.cfg.concept_slots:
            memory = torch.cat([memory, self.mem_drop(self.concept_memory(concepts, memory.shape[0]))], dim=1)
        logits = self.decoder(
            input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=memory
        ).logits  # (B, T, V)
        labels = input_ids.masked_fill(attention_mask == 0, -100)[:, 1:]  # predict token t+1 from <= t
        if token_weight is None:
            return nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels.reshape(-1),
                ignore_index=-100,
                label_smoothing=label_smoothing,
            )
        per_token = nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100,
            label_smoothing=label_smoothing, reduction="none",
        )  # (B*(T-1),), 0 where ignored
        real = (labels.reshape(-1) != -100).float()
        return (per_token * token_weight[:, 1:].reshape(-1).float()).sum() / real.sum().clamp(min=1)

    def token_logprobs(self, memory: torch.Tensor, sequences: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-sequence mean log-probability of tokens 1..T under the model (teacher forcing).

        ``sequences`` (B, T) start with the language token; ``mask`` (B, T) marks real tokens.
        """
        logits = self.decoder(
            input_ids=sequences, attention_mask=mask, encoder_hidden_states=memory
        ).logits  # (B, T, V)
        return mean_token_logprob(logits[:, :-1], sequences, mask)

    def generate(
        self, features: torch.Tensor, lang_ids: torch.Tensor, decoder: nn.Module | None = None,
        concepts: ConceptInput | None = None, **generate_kwargs
    ) -> torch.Tensor:
        """Decode captions; returns (B * num_return_sequences, T) ids starting with the lang token.

        ``decoder``: another module with this decoder's weights to run ``generate()`` on (the onnx
        runtime's ``OnnxGPT2Decoder``); default ``self.decoder``.
        """
        memory = self.memory(features, concepts)
        input_ids = lang_ids[:, None]  # (B, 1)
        return (decoder or self.decoder).generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            encoder_hidden_states=memory,
            **generate_kwargs,
        )


def mean_token_logprob(logits: torch.Tensor, sequences: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean log-probability of tokens 1..T of ``sequences`` (B, T) given ``logits`` (B, T-1, V) that
    predict them; ``mask`` (B, T) marks real tokens."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    tok = logp.gather(-1, sequences[:, 1:, None]).squeeze(-1)  # (B, T-1)
    m = mask[:, 1:].to(tok.dtype)
    return (tok * m).sum(1) / m.sum(1).clamp(min=1)


def _build_decoder(cfg: NativeConfig, pad_id: int, eos_id: int) -> nn.Module:
    """``transformer``: GPT-2 blocks with cross-attention; ``lstm``: the Show-and-Tell baseline."""
    if cfg.arch == "lstm":
        from polycap.backends.native.lstm import LSTMDecoder, LSTMDecoderConfig

        return LSTMDecoder(LSTMDecoderConfig(
            vocab_size=cfg.vocab_size, d_model=cfg.d_model, n_layer=cfg.n_layer, dropout=cfg.dropout,
            pad_token_id=pad_id, eos_token_id=eos_id,
        ))
    if cfg.arch != "transformer":
        raise ValueError(f"unknown decoder arch {cfg.arch!r}; known: transformer, lstm")
    return GPT2LMHeadModel(GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.max_length,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        add_cross_attention=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    ))
