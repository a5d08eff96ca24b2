"""Online learning: one optimiser step per new example, mixed with replayed earlier examples.

Each step: the new example plus a replay sample (so the model does not forget), AdamW with weight
decay 1e-4, gradient clipping at 1.0, and a learning rate that warms up, then follows cosine warm
restarts (each restart lets the model move again when the traffic shifts). The replay buffer is a
reservoir: a uniform sample of everything seen, of bounded size, persisted with the checkpoint.
"""

from __future__ import annotations

import abc
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    lr: float  # peak learning rate
    weight_decay: float = 1e-4
    warmup_steps: int = 10  # few: online models must be useful after tens of examples
    restart_period: int = 1000  # steps per cosine cycle
    min_lr_ratio: float = 0.1  # the cosine floor, as a share of the peak
    grad_clip: float = 1.0
    replay_capacity: int = 4096  # examples kept for replay
    replay_per_step: int = 7  # batch = the new example + this many replayed ones
    steps_per_example: int = 1  # optimiser steps per new example (each with a fresh replay sample)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = ((step - cfg.warmup_steps) % cfg.restart_period) / cfg.restart_period
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * t))


class Reservoir:
    """A uniform random sample of at most ``capacity`` items from everything added."""

    def __init__(self, capacity: int, rng: random.Random) -> None:
        self.capacity = capacity
        self.items: list[Any] = []
        self.seen = 0
        self.rng = rng

    def add(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
            return
        j = self.rng.randrange(self.seen)
        if j < self.capacity:
            self.items[j] = item

    def sample(self, k: int) -> list[Any]:
        return self.rng.sample(self.items, min(k, len(self.items)))

    def __len__(self) -> int:
        return len(self.items)

    def state(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "seen": self.seen, "items": self.items}

    def load_state(self, state: dict[str, Any]) -> None:
        self.seen = int(state["seen"])
        self.items = list(state["items"])[: self.capacity]


class OnlineLearner(abc.ABC):
    """A module, its optimiser and its step count; subclasses say what a batch is."""

    kind = "model"

    def __init__(self, module: nn.Module, train: TrainConfig, seed: int = 0, device: str | None = None) -> None:
        self.module = module.to(device or default_device())
        self.train = train
        self.step = 0
        self.rng = random.Random(seed)
        self.optimizer = torch.optim.AdamW(self.param_groups(), lr=train.lr, weight_decay=train.weight_decay)
        # Between begin_batch and end_batch, new examples wait here and are learned in one batch.
        self.pending: list[Any] | None = None

    def begin_batch(self) -> None:
        """Learn what comes next in one batch, at ``end_batch``: a trainer with a backlog takes
        ``steps_per_example`` steps for all of it, each on the new examples and one replay sample,
        instead of that many steps for every example (each with a replay sample of its own)."""
        self.pending = []

    def end_batch(self) -> float | None:
        """Learn the batch; its mean loss, or None when nothing came."""
        pending, self.pending = self.pending, None
        if not pending:
            return None
        losses = [self._optimise(lambda: self._pending_loss(pending)) for _ in range(self.train.steps_per_example)]
        return sum(losses) / len(losses)

    @abc.abstractmethod
    def _pending_loss(self, pending: list[Any]) -> torch.Tensor:
        """The loss on ``pending`` new examples and one replay sample."""

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser groups; a group's ``lr_scale`` multiplies the scheduled learning rate."""
        return [{"params": list(self.module.parameters()), "lr_scale": 1.0}]

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def _optimise(self, compute_loss: Callable[[], torch.Tensor]) -> float:
        self.module.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, self.train) * group.get("lr_scale", 1.0)
        loss = compute_loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.module.parameters(), self.train.grad_clip)
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    # -- what a checkpoint holds besides weights and optimiser state ------------------------------

    def config_dict(self) -> dict[str, Any]:
        return {"model": self.module.config.to_dict(), "train": self.train.to_dict()}  # type: ignore[operator]

    @abc.abstractmethod
    def replay_state(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def load_replay_state(self, state: dict[str, Any]) -> None: ...


def default_device() -> str:
    """CUDA when present, else the CPU (the default everywhere finch is meant to run)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def pad_batch(sequences: list[list[int]], pad_id: int, device: torch.device) -> torch.Tensor:
    """Right-pad to the longest sequence: (B, T)."""
    width = max(len(s) for s in sequences)
    rows = [s + [pad_id] * (width - len(s)) for s in sequences]
    return torch.tensor(rows, dtype=torch.long, device=device)
