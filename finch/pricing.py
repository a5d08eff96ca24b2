"""Estimated cost of a request from its token counts, with a per-model price table.

Prices are dollars per million tokens, from Anthropic's published model pages (checked 2026-11-30).
A model id matches its row with any date suffix taken off (``claude-sonnet-4-5-20250929`` takes
``claude-sonnet-4-5``). A model the table does not know yet takes the nearest row of its family at or
below its version, so a newer model is priced like the newest one listed, never like the oldest:
``claude-opus-4-9`` takes ``claude-opus-4-8``'s $5/$25, not ``claude-opus-4``'s $15/$75. A model of
no known family is priced at the fallback and logged once. Cache writes cost 1.25x input unless a
row says otherwise; cache reads 0.1x input unless a row gives ``cache_read``. Settings may add or
replace rows.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

log = logging.getLogger(__name__)

DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "claude-fable-5-1": {"input": 10.0, "output": 50.0, "cache_read": 0.25},
    "claude-fable-5": {"input": 10.0, "output": 50.0},
    "claude-mythos-5-1": {"input": 10.0, "output": 50.0, "cache_read": 0.25},
    "claude-mythos-5": {"input": 10.0, "output": 50.0},
    "claude-opus-5-5": {"input": 4.0, "output": 20.0},
    "claude-opus-5": {"input": 5.0, "output": 25.0},
    "claude-opus-4-8": {"input": 5.0, "output": 25.0},
    "claude-opus-4-7": {"input": 5.0, "output": 25.0},
    "claude-opus-4-6": {"input": 5.0, "output": 25.0},
    "claude-opus-4-5": {"input": 5.0, "output": 25.0},
    "claude-opus-4-1": {"input": 15.0, "output": 75.0},
    "claude-opus-4": {"input": 15.0, "output": 75.0},
    "claude-sonnet-5-5": {"input": 2.0, "output": 10.0},
    "claude-sonnet-5": {"input": 2.0, "output": 10.0},
    "claude-sonnet-4-6": {"input": 3.0, "output": 15.0},
    "claude-sonnet-4-5": {"input": 3.0, "output": 15.0},
    "claude-sonnet-4": {"input": 3.0, "output": 15.0},
    "claude-3-7-sonnet": {"input": 3.0, "output": 15.0},
    "claude-haiku-4-5": {"input": 1.0, "output": 5.0},
    "claude-3-5-haiku": {"input": 0.8, "output": 4.0},
    "claude-3-haiku": {"input": 0.25, "output": 1.25},
}
# A model of no known family is priced like the mid-range family rather than as free.
FALLBACK_PRICE = {"input": 3.0, "output": 15.0}

_MAX_LOGGED = 1000  # distinct unknown models logged; a client sending endless names cannot grow this
_DATE = re.compile(r"-(\d{8}|latest)$")
_NEW_STYLE = re.compile(r"^claude-([a-z]+)-(\d+)(?:-(\d{1,2}))?$")  # claude-opus-4-5
_OLD_STYLE = re.compile(r"^claude-(\d+)(?:-(\d{1,2}))?-([a-z]+)$")  # claude-3-5-haiku


def family_version(model: str) -> tuple[str, tuple[int, int]] | None:
    """("opus", (4, 5)) for claude-opus-4-5 and its dated ids; None for anything else."""
    model = _DATE.sub("", model)
    if found := _NEW_STYLE.match(model):
        family, major, minor = found.groups()
    elif found := _OLD_STYLE.match(model):
        major, minor, family = found.groups()
    else:
        return None
    return family, (int(major), int(minor or 0))


class PriceTable:
    def __init__(self, overrides: Mapping[str, Mapping[str, float]] | None = None) -> None:
        self.rows = {k: dict(v) for k, v in DEFAULT_PRICES.items()}
        for model, row in (overrides or {}).items():
            self.rows[model] = {**FALLBACK_PRICE, **row}
        self._keys = sorted(self.rows, key=len, reverse=True)  # for ids outside Claude's naming
        self._by_family: dict[str, list[tuple[tuple[int, int], str]]] = {}
        for key in self.rows:
            if (known := family_version(key)) is not None:
                self._by_family.setdefault(known[0], []).append((known[1], key))
        for versions in self._by_family.values():
            versions.sort()
        self._guessed: dict[str, str] = {}  # model -> the row it took, logged once each

    def price(self, model: str) -> dict[str, float]:
        return self.rows.get(self.row_for(model), FALLBACK_PRICE)

    def row_for(self, model: str) -> str:
        """The table key a model is priced by ("fallback" when none fits)."""
        bare = _DATE.sub("", model)
        if bare in self.rows:
            return bare
        if (known := family_version(bare)) is not None and known[0] in self._by_family:
            versions = self._by_family[known[0]]
            at_or_below = [key for version, key in versions if version <= known[1]]
            key = at_or_below[-1] if at_or_below else versions[0][1]
        else:
            key = next((k for k in self._keys if model.startswith(k)), "fallback")
        if model not in self._guessed and len(self._guessed) < _MAX_LOGGED:
            self._guessed[model] = key
            shown = self.rows.get(key, FALLBACK_PRICE)
            log.warning(
                "model %r is not in the price table: priced as %s ($%g in, $%g out per million tokens)",
                model[:100],
                key,
                shown["input"],
                shown["output"],
            )
        return key

    def cost(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cache_creation_input_tokens: int = 0,
        cache_read_input_tokens: int = 0,
    ) -> float:
        row = self.price(model)
        cache_write = row.get("cache_write", 1.25 * row["input"])
        cache_read = row.get("cache_read", 0.1 * row["input"])
        spent = (
            input_tokens * row["input"]
            + cache_creation_input_tokens * cache_write
            + cache_read_input_tokens * cache_read
            + output_tokens * row["output"]
        )
        return spent / 1_000_000


def estimate_tokens(text: str) -> int:
    """Roughly four characters a token, as Claude's tokenizer averages on English."""
    return max(1, round(len(text) / 4))
