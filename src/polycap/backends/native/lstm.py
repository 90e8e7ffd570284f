"""The CNN + LSTM baseline decoder (Show and Tell): the pooled image initialises an LSTM.

It is a transformers ``PreTrainedModel`` with ``GenerationMixin`` so that ``generate()`` decodes it
(greedy, beam, sampling) exactly like the transformer decoder. It keeps no KV cache: each step
re-reads the prefix, which costs O(T^2) LSTM steps, negligible at caption lengths; the output layer
(d x vocab, the expensive part) runs on the last position only while generating.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput


class LSTMDecoderConfig(PretrainedConfig):
    model_type = "polycap_lstm"

    def __init__(self, vocab_size: int = 8000, d_model: int = 512, n_layer: int = 1, dropout: float = 0.1, **kwargs):
        kwargs.setdefault("use_cache", False)
        super().__init__(**kwargs)
        self.vocab_size, self.d_model, self.n_layer, self.dropout = vocab_size, d_model, n_layer, dropout


class LSTMDecoder(PreTrainedModel, GenerationMixin):
    config_class = LSTMDecoderConfig
    main_input_name = "input_ids"

    def __init__(self, config: LSTMDecoderConfig):
        super().__init__(config)
        d, n = config.d_model, config.n_layer
        self.embed = nn.Embedding(config.vocab_size, d)
        self.init_state = nn.Linear(d, 2 * n * d)  # pooled image -> (h0, c0) of every layer
        self.lstm = nn.LSTM(d, d, n, batch_first=True, dropout=config.dropout if n > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(d, config.vocab_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        last_only: bool = False,
        **kwargs,
    ) -> CausalLMOutput:
        b, n, d = input_ids.shape[0], self.config.n_layer, self.config.d_model
        pooled = encoder_hidden_states.mean(1)  # (B, D): Show and Tell sees the image once
        state = torch.tanh(self.init_state(pooled)).view(b, 2, n, d).permute(1, 2, 0, 3).contiguous()
        out, _ = self.lstm(self.drop(self.embed(input_ids)), (state[0], state[1]))  # (B, T, D)
        if last_only:  # generate() reads the last position's logits only
            out = out[:, -1:]
        return CausalLMOutput(logits=self.head(self.drop(out)))

    def prepare_inputs_for_generation(self, input_ids, encoder_hidden_states=None, attention_mask=None, **kwargs):
        return {
            "input_ids": input_ids,  # no cache: the whole prefix every step
            "encoder_hidden_states": encoder_hidden_states,
            "attention_mask": attention_mask,
            "last_only": True,
        }
