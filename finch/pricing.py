"""Estimated cost of a request from its token counts, with a per-model price table.

Prices are dollars per million tokens. A model matches the longest table key it starts with, so
``claude-sonnet-4-5-20250929`` takes the ``claude-sonnet-4-5`` row. Cache writes cost 1.25x input,
cache reads 0.1x input, as the API bills them. Settings may add or replace rows.
"""

from __future__ import annotations

from collections.abc import Mapping

DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "claude-opus-4-5": {"input": 5.0, "output": 25.0},
    "claude-opus-4-1": {"input": 15.0, "output": 75.0},
    "claude-opus-4": {"input": 15.0, "output": 75.0},
    "claude-sonnet-4-5": {"input": 3.0, "output": 15.0},
    "claude-sonnet-4": {"input": 3.0, "output": 15.0},
    "claude-3-7-sonnet": {"input": 3.0, "output": 15.0},
    "claude-haiku-4-5": {"input": 1.0, "output": 5.0},
    "claude-3-5-haiku": {"input": 0.8, "output": 4.0},
    "claude-3-haiku": {"input": 0.25, "output": 1.25},
}
# An unknown model is priced like the mid-range family rather than as free.
FALLBACK_PRICE = {"input": 3.0, "output": 15.0}


class PriceTable:
    def __init__(self, overrides: Mapping[str, Mapping[str, float]] | None = None) -> None:
        self._rows = {k: dict(v) for k, v in DEFAULT_PRICES.items()}
        for model, row in (overrides or {}).items():
            self._rows[model] = {**FALLBACK_PRICE, **row}
        self._keys = sorted(self._rows, key=len, reverse=True)

    def price(self, model: str) -> dict[str, float]:
        for key in self._keys:
            if model.startswith(key):
                return self._rows[key]
        return FALLBACK_PRICE

    def cost(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cache_creation_input_tokens: int = 0,
        cache_read_input_tokens: int = 0,
    ) -> float:
        row = self.price(model)
        fresh_input = input_tokens + 1.25 * cache_creation_input_tokens + 0.1 * cache_read_input_tokens
        return (fresh_input * row["input"] + output_tokens * row["output"]) / 1_000_000


def estimate_tokens(text: str) -> int:
    """Roughly four characters a token, as Claude's tokenizer averages on English."""
    return max(1, round(len(text) / 4))
