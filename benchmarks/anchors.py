"""The caches finch must beat, beyond a fixed cosine threshold.

* ``vcache``: vCache ("vCache: Verified Semantic Prompt Caching", Schroeder et al., 2025),
  re-implemented from the paper's description, not from its code (whose licence forbids
  derivatives). Each cached prompt learns its own threshold online: a sigmoid fit of
  P(cached answer correct | similarity) to what was observed when later prompts had it as their
  nearest neighbour. A request explores (forwards, then checks the cached answer against the fresh
  one) with the probability that keeps its chance of a wrong answer at most delta:
  P(serve) * P(wrong | serve) <= delta. P(wrong) allows for the fit's uncertainty: with
  probability 1 - eps the true curve lies above the fit's one-sided lower confidence bound at level
  eps, so P(wrong) <= 1 - (1 - eps) * lower_eps(s), and the eps that gives the smallest bound is
  used. So vCache's delta is a rate over all requests, not over served answers. Its verifier here
  is the benchmark's truth (a perfect judge), which flatters it.

  The paper leaves the fit's regularisation open, and two readings behave very differently, so
  both run. *Ridge* (``vcache``): a weak ridge (0.1) on both weights, and the fit's uncertainty from
  the penalised Fisher information; a prompt whose observations are all correct keeps a wide
  bound, so it serves little. *Near-plain* (``vcache(..., plain=True)``, the stronger): the
  sigmoid read as a threshold t and a slope, fitted by maximum likelihood with a ridge of 1e-4;
  where the observations separate perfectly (all correct, or every wrong one less similar than
  every right one) the likelihood has no maximum, so t is the boundary the data show (the least
  similar right one, or halfway to the most similar wrong one), the curve a step there, and t's
  standard deviation 0.25 / sqrt(n). The bound is then the curve at t moved up by z of them.
* ``best_static``: the fixed cosine threshold chosen in hindsight, the highest share at or under the
  bound by the benchmark's truth. No user can pick it in advance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from finch.learning.stacker import fit_logistic

# (eps, its one-sided normal quantile): the confidence levels tried for the fit's lower bound.
_LEVELS = ((0.01, 2.326), (0.05, 1.645), (0.1, 1.282), (0.2, 0.842), (0.3, 0.524), (0.4, 0.253))
_PRIOR = 0.1  # a weak ridge: a prompt whose observations are all correct (separable) keeps a finite fit


_PLAIN_PRIOR = 1e-4  # the near-plain reading: about maximum likelihood


def _fit(sims: np.ndarray, correct: np.ndarray, prior: float = _PRIOR) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression of correct on (1, similarity), with a ridge so that a prompt whose
    observations are all correct (separable) has a finite fit. Returns the weights and their
    covariance (the inverse of the penalised Fisher information)."""
    x = np.stack([np.ones_like(sims), (sims - 0.9) * 20], axis=1)  # centred and scaled
    w = fit_logistic(x, correct, np.full(2, prior))
    p = 1 / (1 + np.exp(-(x @ w)))
    hess = (x.T * (p * (1 - p))) @ x + prior * np.eye(2)
    return w, np.linalg.inv(hess)


def _boundary(sims: np.ndarray, correct: np.ndarray) -> float | None:
    """Where observations that separate perfectly (all alike, or every wrong one less similar than
    every right one) put the step: the least similar right one, or halfway to the most similar
    wrong one; above 1 when none is right. None when they do not separate."""
    right, wrong = sims[correct > 0.5], sims[correct <= 0.5]
    if len(right) == 0:
        return math.inf
    if len(wrong) == 0:
        return float(right.min())
    return (float(right.min()) + float(wrong.max())) / 2 if float(wrong.max()) < float(right.min()) else None


def _wrong_upper_bound(sim: float, observations: list[tuple[float, bool]], plain: bool = False) -> float:
    sims = np.array([s for s, _ in observations])
    correct = np.array([float(c) for _, c in observations])
    t = _boundary(sims, correct) if plain else None
    if t is not None:
        sd_t = 0.25 / math.sqrt(len(sims))
        return min(1 - (1 - eps) * float(sim > t + z * sd_t) for eps, z in _LEVELS)
    w, cov = _fit(sims, correct, _PLAIN_PRIOR if plain else _PRIOR)
    x = np.array([1.0, (sim - 0.9) * 20])
    eta, sd = float(x @ w), math.sqrt(max(float(x @ cov @ x), 0.0))
    eta = max(-50.0, min(50.0, eta))
    return min(1 - (1 - eps) / (1 + math.exp(-(eta - z * sd))) for eps, z in _LEVELS)


class NearestStore:
    """Unit vectors appended over a run, and the nearest stored one to a query. The store is one
    preallocated matrix, so a lookup is one matrix-vector product over a view, not a gather."""

    def __init__(self, vectors: torch.Tensor) -> None:
        self.vectors = vectors
        self.matrix = torch.empty_like(vectors)
        self.ids: list[int] = []

    def add(self, i: int) -> None:
        self.matrix[len(self.ids)] = self.vectors[i]
        self.ids.append(i)

    def nearest(self, i: int) -> tuple[int, float] | None:
        """(the stored request nearest to request i, its cosine), or None while the store is empty."""
        if not self.ids:
            return None
        sims = self.matrix[: len(self.ids)] @ self.vectors[i]
        k = int(sims.argmax())
        return self.ids[k], float(sims[k])


def vcache(
    vectors: torch.Tensor,
    intents: Sequence[str],
    delta: float,
    rng: np.random.Generator,
    same=None,
    plain: bool = False,
) -> list[int | None]:
    """For each request, the index of the request whose cached answer vCache served, or None.

    ``same(i, j)``: would request j's answer be right for request i (default: same intent).
    ``plain``: the near-plain reading of the fit (above)."""
    same = same or (lambda i, j: intents[i] == intents[j])
    entries = NearestStore(vectors)  # requests whose answers are cached
    observations: dict[int, list[tuple[float, bool]]] = {}
    served: list[int | None] = []
    for i in range(len(intents)):
        found = entries.nearest(i)
        if found is None:
            entries.add(i)
            observations[i] = []
            served.append(None)
            continue
        nearest, sim = found
        seen = observations[nearest]
        explore = 1.0
        if seen:
            p_wrong = _wrong_upper_bound(sim, seen, plain)
            explore = 0.0 if p_wrong <= delta else 1 - delta / p_wrong
        if rng.random() >= explore:
            served.append(nearest)
            continue
        served.append(None)  # forwarded: the fresh answer checks the cached one
        correct = same(i, nearest)
        seen.append((sim, correct))
        if not correct:
            entries.add(i)
            observations[i] = []
    return served


def best_static(summaries: Sequence[dict], bound: float) -> dict | None:
    """The semantic-cache row with the highest share whose bad-local rate is at or under the bound."""
    fits = [s for s in summaries if s["system"].startswith("semantic cache") and s["bad_local_rate"] <= bound]
    return max(fits, key=lambda s: s["share"], default=None)
