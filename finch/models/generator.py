"""The generator: a GPT-style causal decoder that learns to write Claude's answers.

Pre-norm blocks, learned positions up to ``max_len``, input and output embeddings tied. Trained on
``prompt + answer + <eos>`` with the loss on the answer tokens only. Generation uses a key/value
cache and yields token ids as they are produced, so a local answer can be streamed.

Presets: ``tiny`` (tests, CI), ``small`` (the CPU default: a ~100-token answer well under 0.5 s on
two cores), ``base`` (~100M, for a GPU). Billion-parameter decoders are configurations a user with
a large GPU could choose, never defaults.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from finch.models.layers import Block, KVCache, init_weights

IGNORE = -100  # target id for positions that carry no loss (the prompt, padding)


@dataclass(frozen=True)
class GeneratorConfig:
    vocab_size: int = 8192  # set from the tokenizer
    max_len: int = 384  # prompt + answer; answers to chat questions are mostly under 200 tokens
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0  # the generator should memorise answers exactly; dropout fights that

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


GENERATOR_PRESETS = {
    "tiny": GeneratorConfig(n_layer=2, n_head=4, n_embd=128, max_len=256),  # ~1.5M: tests and CI
    "small": GeneratorConfig(n_layer=4, n_head=4, n_embd=256, max_len=384),  # ~5M: CPU default
    "base": GeneratorConfig(n_layer=12, n_head=12, n_embd=768, max_len=1024),  # ~100M: a GPU
}


def generator_config(preset: str, vocab_size: int, **overrides: Any) -> GeneratorConfig:
    return replace(GENERATOR_PRESETS[preset], vocab_size=vocab_size, **overrides)


class Decoder(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.max_len, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config.n_embd, config.n_head, config.dropout) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.apply(init_weights)
        self.lm_head.weight = self.tok_emb.weight  # tied: fewer parameters, faster early learning

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self._logits(idx)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=IGNORE)
        return logits, loss

    def _logits(self, idx: torch.Tensor, caches: list[KVCache] | None = None, pos: int = 0) -> torch.Tensor:
        T = idx.size(1)
        positions = torch.arange(pos, pos + T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(positions))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, causal=True, cache=caches[i] if caches is not None else None, pos=pos)
        return self.lm_head(self.ln_f(x))  # (B, T, V)

    @torch.no_grad()
    def generate(
        self,
        prompt: list[int],
        max_new_tokens: int,
        eos_id: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        rng: torch.Generator | None = None,
    ) -> Iterator[int]:
        """Yield new token ids until <eos>, ``max_new_tokens`` or the context is full. 0 °C is greedy."""
        cfg = self.config
        prompt = prompt[-(cfg.max_len - 1) :]
        device = self.tok_emb.weight.device
        head_dim = cfg.n_embd // cfg.n_head
        shape = (1, cfg.n_head, cfg.max_len, head_dim)
        caches = [(torch.zeros(shape, device=device), torch.zeros(shape, device=device)) for _ in self.blocks]
        logits = self._logits(torch.tensor([prompt], device=device), caches, pos=0)[0, -1]  # (V,)
        pos = len(prompt)
        for _ in range(max_new_tokens):
            next_id = _sample(logits, temperature, top_p, rng)
            if next_id == eos_id:
                return
            yield next_id
            if pos >= cfg.max_len:
                return
            logits = self._logits(torch.tensor([[next_id]], device=device), caches, pos=pos)[0, -1]
            pos += 1

    @torch.no_grad()
    def generate_greedy(self, prompts: list[list[int]], max_new_tokens: int, eos_id: int) -> list[list[int]]:
        """``generate`` at 0 °C for many prompts at once: what each would give alone (up to float
        rounding in the attention's sums), for about the cost of one. The trainer writes its
        attempts at a batch's answers this way: token by token, one prompt at a time, a long answer
        costs hundreds of small steps each."""
        cfg = self.config
        if not prompts:
            return []
        prompts = [p[-(cfg.max_len - 1) :] for p in prompts]
        device = self.tok_emb.weight.device
        B, head_dim = len(prompts), cfg.n_embd // cfg.n_head
        shape = (B, cfg.n_head, cfg.max_len, head_dim)
        caches = [(torch.zeros(shape, device=device), torch.zeros(shape, device=device)) for _ in self.blocks]
        # Each prompt fills its own row of the cache, unpadded, as it would alone.
        rows = [[(k[b : b + 1], v[b : b + 1]) for k, v in caches] for b in range(B)]
        logits = torch.stack(
            [self._logits(torch.tensor([p], device=device), rows[b], pos=0)[0, -1] for b, p in enumerate(prompts)]
        )  # (B, V)
        pos = torch.tensor([len(p) for p in prompts], device=device)
        out: list[list[int]] = [[] for _ in prompts]
        live = [True] * B
        keys = torch.arange(cfg.max_len, device=device)
        for _ in range(max_new_tokens):
            next_ids = torch.argmax(logits, dim=-1)  # (B,)
            for b, token in enumerate(next_ids.tolist()):
                if not live[b]:
                    continue
                if token == eos_id:
                    live[b] = False
                    continue
                out[b].append(token)
                live[b] = int(pos[b]) < cfg.max_len
            if not any(live):
                break
            step_pos = pos.clamp(max=cfg.max_len - 1)  # finished rows run on harmlessly
            x = self.tok_emb(next_ids)[:, None] + self.pos_emb(step_pos)[:, None]  # (B, 1, C)
            key_mask = keys[None, :] <= step_pos[:, None]  # (B, max_len): each row's own past
            for i, block in enumerate(self.blocks):
                x = block(x, causal=True, key_mask=key_mask, cache=caches[i], pos=step_pos)
            logits = self.lm_head(self.ln_f(x))[:, 0]  # (B, V)
            pos = pos + 1
        return out


def _sample(logits: torch.Tensor, temperature: float, top_p: float, rng: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = F.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < top_p  # always keeps the top token
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=rng))
