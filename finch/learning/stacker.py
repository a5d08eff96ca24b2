"""The score the operating point is compared with: P(this local answer is good).

A logistic regression over the router's and validator's scores (as logits) and the memory's
evidence for the candidate answer (``Memory.features``: support, conflict, the neighbours' vote).
It has a dozen weights, so a few dozen verdicts fit it, while the two encoders it reads take
hundreds of examples to become confident: the retrieval evidence is useful from the first answers,
and the stacker learns how far to trust each input as the models mature. Its output is a calibrated
probability, so "score >= 0.98" means about what it says, and the bound's regions
(``finch.policy.bound``) are regions of that probability.

It is refit from the last ``capacity`` verdicts every ``refit_every`` of them (Newton's method
with a ridge, on standardised inputs): milliseconds, on the trainer's thread. The request path reads
one published tuple of weights.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

_MIN_VERDICTS = 30  # before this many, every answer scores 0: nothing is known yet
_RIDGE = 1.0
_CLIP = 1e-4  # model scores enter as logits, clipped away from 0 and 1
# A score stays under 1 - 1e-6: 1.0 is Claude's own answer repeated, with its own region of the bound.
_MAX_LOGIT = 13.8


def stack_inputs(p_router: float, p_validator: float, evidence: Sequence[float]) -> list[float]:
    return [_logit(p_router), _logit(p_validator), *evidence]


class Stacker:
    def __init__(self, capacity: int = 5000, refit_every: int = 10) -> None:
        self.refit_every = refit_every
        self._seen: deque[tuple[list[float], bool]] = deque(maxlen=capacity)
        self._since_fit = 0
        # (mean, scale, weights, bias): replaced whole, so a reader never sees half a fit.
        self._fit: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None

    def __len__(self) -> int:
        return len(self._seen)

    def p_good(self, inputs: Sequence[float]) -> float:
        fit = self._fit
        if fit is None:
            return 0.0
        mean, scale, weights, bias = fit
        z = float(((np.asarray(inputs) - mean) / scale) @ weights + bias)
        return 1 / (1 + math.exp(-max(min(z, _MAX_LOGIT), -40.0)))

    def observe(self, inputs: Sequence[float], good: bool) -> None:
        self._seen.append((list(inputs), good))
        self._since_fit += 1
        if len(self._seen) >= _MIN_VERDICTS and (self._fit is None or self._since_fit >= self.refit_every):
            self._refit()

    def _refit(self) -> None:
        x = np.array([inputs for inputs, _ in self._seen])
        y = np.array([float(good) for _, good in self._seen])
        self._fit = fit_standardised(x, y)
        self._since_fit = 0

    def to_state(self) -> dict[str, Any]:
        seen = [[inputs, good] for inputs, good in self._seen]
        return {"seen": seen, "since_fit": self._since_fit, "fit": self.fit_state()}

    def fit_state(self) -> list[Any] | None:
        """The fit alone: all that scoring reads (the serving snapshot carries no verdicts)."""
        fit = self._fit
        return None if fit is None else [fit[0].tolist(), fit[1].tolist(), fit[2].tolist(), fit[3]]

    @classmethod
    def from_fit(cls, fit: list[Any] | None) -> Stacker:
        return cls.from_state({"seen": [], "since_fit": 0, "fit": fit})

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> Stacker:
        """The saved stacker, its fit as it was: a restart scores every answer as before."""
        stacker = cls()
        if not state:
            return stacker
        for inputs, good in state["seen"]:
            stacker._seen.append((list(inputs), bool(good)))
        stacker._since_fit = state["since_fit"]
        if state["fit"] is not None:
            mean, scale, weights, bias = state["fit"]
            stacker._fit = (np.array(mean), np.array(scale), np.array(weights), float(bias))
        return stacker


def fit_standardised(
    x: np.ndarray, y: np.ndarray, ridge: float = _RIDGE
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean, scale, weights, bias): a ridge logistic regression of y (0/1) on x standardised, its
    bias not shrunk."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    penalty = np.full(z.shape[1], ridge)
    penalty[-1] = 0.0
    w = fit_logistic(z, y, penalty)
    return mean, scale, w[:-1], float(w[-1])


def fit_logistic(z: np.ndarray, y: np.ndarray, ridge: np.ndarray) -> np.ndarray:
    """Weights maximising the ridge-penalised log-likelihood of y (0/1) given z, from zero by Newton's
    method, each step halved until it improves the objective: a separable or saturated fit cannot run
    away. ``ridge`` is one penalty per column (0 leaves that weight free)."""

    def objective(w: np.ndarray) -> float:
        eta = z @ w
        return float(y @ eta - np.logaddexp(0, eta).sum() - 0.5 * (ridge * w) @ w)

    w = np.zeros(z.shape[1])
    value = objective(w)
    for _ in range(30):
        p = 1 / (1 + np.exp(-np.clip(z @ w, -40, 40)))
        grad = z.T @ (y - p) - ridge * w
        hess = (z.T * (p * (1 - p))) @ z + np.diag(ridge) + 1e-6 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        for _ in range(30):  # backtrack
            if (new_value := objective(w + step)) >= value:
                break
            step /= 2
        else:
            break
        w, gain, value = w + step, new_value - value, new_value
        if gain < 1e-8:
            break
    return w


def _logit(p: float) -> float:
    p = min(max(p, _CLIP), 1 - _CLIP)
    return math.log(p / (1 - p))
