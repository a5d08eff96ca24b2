"""Would another form of the stacker rank answers better? Replayed on a kept run's verdicts.

The stacker (``finch.learning.stacker``) is a ridge logistic regression over a dozen inputs: the
router's and validator's scores and the memory's evidence. This replays the verdicts a run's
stacker saw (``models/state.json`` of a home kept with ``benchmarks/learning.py --keep``), in their
order, scoring each with a fit on the verdicts before it (refit every 25), for several forms. The
second half's answers are then ordered by each form's score; reported is the largest share of them
whose top has a bad share of at most 0.5%, 1% and 2% (a region the bound could certify, from the
strictest down). Candidate answers finch wrote and never served are in the verdicts too, so the
shares are of scored answers, not of requests.

Usage: python benchmarks/stacker_forms.py HOME [HOME ...]   (HOME: the kept home's bound-0.02 folder)
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from finch.learning.stacker import fit_standardised

Scorer = Callable[[np.ndarray], np.ndarray]
REFIT_EVERY = 25
RATES = (0.005, 0.01, 0.02)


def logistic(x: np.ndarray, y: np.ndarray, ridge: float = 1.0) -> Scorer:
    mean, scale, weights, bias = fit_standardised(x, y, ridge)
    return lambda q: 1 / (1 + np.exp(-np.clip(((q - mean) / scale) @ weights + bias, -40, 40)))


def with_pairs(x: np.ndarray) -> np.ndarray:
    """The inputs and every product of two of them."""
    i, j = np.triu_indices(x.shape[1])
    return np.hstack([x, x[:, i] * x[:, j]])


def forms() -> dict[str, Callable[[np.ndarray, np.ndarray], Scorer]]:
    found: dict[str, Callable[[np.ndarray, np.ndarray], Scorer]] = {
        "logistic (finch)": logistic,
        "logistic, products of pairs, ridge 1": lambda x, y: (lambda f: lambda q: f(with_pairs(q)))(
            logistic(with_pairs(x), y, 1.0)
        ),
        "logistic, products of pairs, ridge 5": lambda x, y: (lambda f: lambda q: f(with_pairs(q)))(
            logistic(with_pairs(x), y, 5.0)
        ),
    }
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ImportError:
        print("scikit-learn is not installed: the boosted trees are skipped", file=sys.stderr)
        return found

    def boosted(x: np.ndarray, y: np.ndarray) -> Scorer:
        model = HistGradientBoostingClassifier(max_iter=100, max_leaf_nodes=15, min_samples_leaf=20).fit(x, y)
        return lambda q: model.predict_proba(q)[:, 1]

    found["gradient-boosted trees"] = boosted
    return found


def prequential(x: np.ndarray, y: np.ndarray, fit: Callable[[np.ndarray, np.ndarray], Scorer]) -> np.ndarray:
    """Each verdict's score from a fit on the verdicts before it (0 until both kinds were seen)."""
    scores, scorer = np.zeros(len(y)), None
    for i in range(len(y)):
        if i >= 30 and (scorer is None or i % REFIT_EVERY == 0) and 0 < y[:i].sum() < i:
            scorer = fit(x[:i], y[:i])
        scores[i] = scorer(x[i : i + 1])[0] if scorer else 0.0
    return scores


def share_at(scores: np.ndarray, good: np.ndarray, rate: float) -> float:
    """The largest share of answers, taken best score first, with at most ``rate`` of them bad."""
    order = np.argsort(-scores, kind="stable")
    bad_share = np.cumsum(1 - good[order]) / np.arange(1, len(good) + 1)
    within = np.flatnonzero(bad_share <= rate)
    return (within[-1] + 1) / len(good) if len(within) else 0.0


def main() -> None:
    warnings.filterwarnings("ignore")
    for home in sys.argv[1:]:
        seen = json.loads((Path(home) / "models" / "state.json").read_text())["stacker"]["seen"]
        x = np.array([inputs for inputs, _ in seen], float)
        y = np.array([good for _, good in seen], float)
        half = len(y) // 2
        print(f"{home}: {len(y)} verdicts, second half {1 - y[half:].mean():.0%} bad")
        for name, fit in forms().items():
            scores = prequential(x, y, fit)
            shares = " / ".join(f"{share_at(scores[half:], y[half:], rate):.0%}" for rate in RATES)
            print(f"  {name:40s} top share at 0.5% / 1% / 2% bad: {shares}", flush=True)


if __name__ == "__main__":
    main()
