"""The real query sets in ../shared/data, read in place (never copied into the repository)."""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path

import pytest


def data_dir() -> Path | None:
    candidates = [
        os.environ.get("FINCH_SHARED_DATA"),
        Path(__file__).resolve().parents[2] / "shared" / "data",  # ../shared/data beside the repository
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "banking77" / "train.csv").exists():
            return Path(candidate)
    return None


def banking77(split: str) -> dict[str, list[str]]:
    """intent -> utterances, in file order."""
    root = data_dir()
    if root is None:
        pytest.skip("Banking77 not found: set FINCH_SHARED_DATA to the shared data directory")
    by_intent: dict[str, list[str]] = defaultdict(list)
    with (root / "banking77" / f"{split}.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_intent[row["category"]].append(row["text"])
    return dict(by_intent)
