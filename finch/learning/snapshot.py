"""The serving snapshot: all that the request path reads, published by the trainer as one file.

    FINCH_HOME/models/serving.pt

The trainer (its own process, ``finch.learning.trainer``) writes it after it learns; the server
(``finch.server.learning``) picks it up between requests. It holds:

    generation    how many snapshots this home has published; the server loads only a newer one
    position      how far through the request log the models have learned
    models        router, validator and generator: each one's configuration and weights
    router_prior  the log-odds of the router's labels (its balanced replay leaves them out)
    stacker       the stacker's fit (finch.learning.stacker)
    memory        the retrieval memory's rows: question and answer embeddings, Claude's answers
    consistency   Claude's answers to repeated questions
    blocked       questions whose local answer a user or an audit found bad
    framing       the phrases the judge leaves out when it compares answers
    standing      the policy's state (finch.policy.decide.Standing)
    status        what ``finch stats`` and the dashboard show of learning

One dict of tensors, strings and numbers, read back with ``torch.load(weights_only=True)``, so that
loading runs no pickled code. It is written to a temporary file, fsynced, and renamed over the last
one: a reader opens the old snapshot or the new, never part of one, whatever is killed when.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from finch.learning.ensemble import Ensemble

log = logging.getLogger(__name__)

FORMAT = 1
FILE = "serving.pt"


def capture(ensemble: Ensemble, generation: int) -> dict[str, Any]:
    """The ensemble's serving state, as it stands. Write it before the ensemble learns again: the
    tensors are the ensemble's own, not copies."""
    router, validator, generator = ensemble.router, ensemble.validator, ensemble.generator
    return {
        "format": FORMAT,
        "generation": generation,
        "tokenizer": ensemble.tokenizer.hash,
        "position": dict(ensemble.position),
        "models": {
            learner.kind: {"config": learner.module.config.to_dict(), "weights": learner.module.state_dict()}
            for learner in (router, validator, generator)
        },
        "router_prior": router.prior_logit(),
        "stacker": ensemble.stacker.fit_state(),
        "memory": ensemble.memory.serving_state(),
        "consistency": ensemble.consistency.to_state(),
        "blocked": sorted(ensemble.blocked),
        "framing": sorted(ensemble.judge.framing.known),
        "standing": dataclasses.asdict(ensemble.standing),
        "status": ensemble.status(),
    }


def write(path: Path, snapshot: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        with tmp.open("wb") as f:
            torch.save(snapshot, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read(path: Path) -> dict[str, Any] | None:
    """The snapshot at ``path``; None when there is none, or it cannot be used (said in the log)."""
    try:
        # Mapped, not read: the tensors are the file's pages, shared with the page cache, so a
        # snapshot of tens of megabytes loads in milliseconds. A newer snapshot renamed over this
        # one leaves these pages in place for as long as they are used.
        snapshot = torch.load(path, weights_only=True, mmap=True, map_location="cpu")
    except FileNotFoundError:
        return None
    except Exception as exc:  # a snapshot from another version, or a damaged disk: serve without it
        log.warning("cannot read the serving snapshot %s: %s", path, exc)
        return None
    if not isinstance(snapshot, dict) or snapshot.get("format") != FORMAT:
        log.warning("ignoring the serving snapshot %s: not format %d", path, FORMAT)
        return None
    return snapshot
