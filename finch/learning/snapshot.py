"""The serving snapshot: all that the request path reads, published by the trainer as one file.

    FINCH_HOME/models/serving.safetensors

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

One safetensors file: the tensors (the models' weights, the memory's embeddings), and in its header
everything else as JSON, so that loading runs no pickled code. The server loads every snapshot the
trainer publishes, on its own process's interpreter, so loading must be cheap: this reads in 2 ms
where ``torch.load(weights_only=True)``, whose unpickler is written in Python, took 16 ms, for a
snapshot of 1,400 memory rows (``benchmarks/snapshot.py``). It is written to a temporary
file, fsynced, and renamed over the last one: a reader opens the old snapshot or the new, never part
of one, whatever is killed when.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from finch.learning.status import FORMAT, HEADER_KEY

if TYPE_CHECKING:
    from finch.learning.ensemble import Ensemble

log = logging.getLogger(__name__)


def capture(ensemble: Ensemble, generation: int) -> dict[str, Any]:
    """The ensemble's serving state, as it stands. Write it before the ensemble learns again: the
    tensors are the ensemble's own, not copies."""
    router, validator, generator = ensemble.models.all()
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
    tensors, rest = _split(snapshot)
    data = save(tensors, metadata={HEADER_KEY: json.dumps(rest)})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read(path: Path) -> dict[str, Any] | None:
    """The snapshot at ``path``; None when there is none, or it cannot be used (said in the log)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = (f.metadata() or {}).get(HEADER_KEY)
            # Copied into memory of torch's own: a tensor read in place may sit off the alignment its
            # kernels assume, and they then sum in another order, so the request path's scores would
            # differ from the trainer's in the last bits (tests/test_pipeline.py compares them).
            tensors = {name: f.get_tensor(name).clone() for name in f.keys()}  # noqa: SIM118 (not a dict)
        rest = json.loads(header) if header is not None else None
    except FileNotFoundError:
        return None
    except (SafetensorError, OSError, ValueError) as exc:  # another version's file, or a damaged disk
        log.warning("cannot read the serving snapshot %s: %s", path, exc)
        return None
    if not isinstance(rest, dict) or rest.get("format") != FORMAT:
        log.warning("ignoring the serving snapshot %s: not format %d", path, FORMAT)
        return None
    return _join(rest, tensors)


def _split(snapshot: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The snapshot's tensors, each stored once (a tied weight is named as the other's alias), and
    the rest of it, which is JSON."""
    tensors: dict[str, torch.Tensor] = {}
    models: dict[str, Any] = {}
    for kind, model in snapshot["models"].items():
        stored: dict[tuple[Any, ...], str] = {}  # where a tensor's data is -> the name it is stored under
        aliases: dict[str, str] = {}
        for name, tensor in model["weights"].items():
            key = f"models.{kind}.{name}"
            place = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()))
            if place in stored:
                aliases[name] = stored[place]
            else:
                stored[place] = key
                tensors[key] = tensor.detach().contiguous()
        models[kind] = {"config": model["config"], "weights": list(model["weights"]), "aliases": aliases}
    memory = snapshot["memory"]
    tensors["memory.questions"] = memory["questions"].contiguous()
    tensors["memory.answers"] = memory["answers"].contiguous()
    rest = {**snapshot, "models": models, "memory": {"texts": memory["texts"], "users": memory.get("users", [])}}
    return tensors, rest


def _join(rest: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    models = {}
    for kind, model in rest["models"].items():
        weights = {}
        for name in model["weights"]:
            key = model["aliases"].get(name, f"models.{kind}.{name}")
            weights[name] = tensors[key]  # a tied weight is the same tensor, as when it was saved
        models[kind] = {"config": model["config"], "weights": weights}
    memory = {"questions": tensors["memory.questions"], "answers": tensors["memory.answers"], **rest["memory"]}
    return {**rest, "models": models, "memory": memory}
