"""The encoder classifier behind the router and the validator: a small pre-norm transformer
encoder with one logit. The conversation and the candidate answer (after <sep>) are mean-pooled
separately and the head compares them.

Router input: the conversation. Validator input: the conversation, <sep>, a candidate answer.
A fresh model is pessimistic (output bias -2, p ≈ 0.12): an untrained router says "forward" and an
untrained validator says "bad", so nothing is served locally before the models have learned.

Presets: ``tiny`` for tests and CI, ``small`` the CPU default, ``base`` for a GPU. Much larger
encoders (hundreds of millions of parameters) are configurations a user with a large GPU may
choose; they are never defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from finch.models.layers import Block, init_weights


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 8192  # set from the tokenizer
    max_len: int = 256  # a question plus a short answer; longer inputs keep their latest tokens
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.1  # online data is small and repetitive: regularise a little
    init_bias: float = -2.0  # pessimistic start: p = sigmoid(-2) ≈ 0.12
    pad_id: int = 0
    sep_id: int = 3  # tokens after the first <sep> are the candidate answer (validator input)
    n_features: int = 0  # extra numeric inputs to the head (the validator's retrieval evidence)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ENCODER_PRESETS = {
    "tiny": EncoderConfig(n_layer=2, n_head=4, n_embd=128, max_len=192),  # ~1.5M: tests and CI
    "small": EncoderConfig(n_layer=4, n_head=4, n_embd=256, max_len=256),  # ~5M: CPU default
    "base": EncoderConfig(n_layer=12, n_head=12, n_embd=768, max_len=512),  # ~100M: a GPU
}


def encoder_config(preset: str, vocab_size: int, **overrides: Any) -> EncoderConfig:
    return replace(ENCODER_PRESETS[preset], vocab_size=vocab_size, **overrides)


class EncoderClassifier(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.max_len, config.n_embd)
        self.seg_emb = nn.Embedding(2, config.n_embd)  # 0: conversation, 1: candidate answer
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config.n_embd, config.n_head, config.dropout) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        # The head sees the conversation's pooled vector u, the answer's v and their product: matching
        # a question with an answer is then close to linear, which a few hundred examples can teach.
        self.head = nn.Sequential(nn.Linear(3 * config.n_embd, config.n_embd), nn.GELU(), nn.Linear(config.n_embd, 1))
        # Numeric evidence enters as its own linear term, starting at zero weight so a fresh model
        # stays pessimistic; it is a small convex problem and learns at a much higher rate.
        self.evidence = nn.Linear(config.n_features, 1, bias=False) if config.n_features else None
        self.apply(init_weights)
        nn.init.constant_(self.head[-1].bias, config.init_bias)
        if self.evidence is not None:
            nn.init.zeros_(self.evidence.weight)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T = idx.shape
        mask = idx != self.config.pad_id  # (B, T)
        segment = (torch.cumsum((idx == self.config.sep_id).long(), dim=1) > 0).long()  # (B, T) 1 after <sep>
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos) + self.seg_emb(segment))  # (B, T, C)
        for block in self.blocks:
            x = block(x, causal=False, key_mask=mask)
        x = self.ln_f(x)
        u = _masked_mean(x, mask & (segment == 0))  # (B, C) the conversation
        v = _masked_mean(x, mask & (segment == 1))  # (B, C) the answer; zeros for the router
        logits = self.head(torch.cat([u, v, u * v], dim=-1)).squeeze(-1)  # (B,)
        if self.evidence is not None and features is not None:
            logits = logits + self.evidence(features).squeeze(-1)  # features: (B, F)
        loss = None
        if targets is not None:
            loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), weight=weights)
        return logits, loss


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, C)
