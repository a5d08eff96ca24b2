"""Transformer building blocks shared by the encoder and the generator (pre-norm, GELU MLP)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KVCache = tuple[torch.Tensor, torch.Tensor]  # (B, H, max_len, D) each, filled up to the current position


class SelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        assert n_embd % n_head == 0, "n_embd must divide into heads"
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.dropout = dropout

    def forward(
        self,
        x: torch.Tensor,
        causal: bool,
        key_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        pos: int | torch.Tensor = 0,
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if cache is not None and isinstance(pos, torch.Tensor):  # one token a row, each at its own position
            cache_k, cache_v = cache
            rows = torch.arange(B, device=x.device)
            cache_k[rows, :, pos] = k[:, :, 0]
            cache_v[rows, :, pos] = v[:, :, 0]
            k, v = cache_k, cache_v  # (B, H, max_len, D): key_mask keeps each row to its own past
        elif cache is not None:
            cache_k, cache_v = cache
            cache_k[:, :, pos : pos + T] = k
            cache_v[:, :, pos : pos + T] = v
            k, v = cache_k[:, :, : pos + T], cache_v[:, :, : pos + T]  # (B, H, pos+T, D)
        # With a cache, one new token attends to everything before it: no mask needed.
        is_causal = causal and T > 1
        mask = key_mask[:, None, None, :] if key_mask is not None else None  # (B, 1, 1, T) True = attend
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.proj = nn.Linear(4 * n_embd, n_embd)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = SelfAttention(n_embd, n_head, dropout)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd, dropout)

    def forward(
        self,
        x: torch.Tensor,
        causal: bool,
        key_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        pos: int | torch.Tensor = 0,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), causal, key_mask, cache, pos)
        return x + self.mlp(self.ln2(x))


def init_weights(module: nn.Module) -> None:
    """GPT-2 style: small normal weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
