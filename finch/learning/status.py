"""What finch shows of learning, built in one place for `finch stats`, ``/finch/stats`` and the
dashboard: the status the trainer published with its last serving snapshot (``Ensemble.status``),
or, before it has published any, that of a home that has learned nothing; and the trainer's backlog
in the log.

The snapshot's header is read here without its tensors, and without torch: `finch stats` stays a
quick command.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from finch.policy.bound import BOUND_OVER, audit_interval

FILE = "serving.safetensors"  # under FINCH_HOME/models
FORMAT = 2
HEADER_KEY = "finch"  # the safetensors metadata key that holds everything but the tensors


def learning_status(published: dict[str, Any] | None, max_bad_local: float, backlog: int) -> dict[str, Any]:
    """``published``: a snapshot's header (``read_published``), or None before the first."""
    status = dict(published["status"]) if published is not None else _nothing_learned(max_bad_local)
    status["trainer_backlog"] = backlog
    status["snapshot_generation"] = published["generation"] if published is not None else None
    return status


def read_published(home: Path) -> dict[str, Any] | None:
    """The header of the snapshot last published in ``home`` (generation, position, status, ...);
    None when there is none or it cannot be read."""
    try:
        with (home / "models" / FILE).open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))  # safetensors: a little-endian length, then JSON
            header = json.loads(f.read(size))
        rest = json.loads(header["__metadata__"][HEADER_KEY])
    except (OSError, ValueError, KeyError, struct.error):
        return None
    return rest if isinstance(rest, dict) and rest.get("format") == FORMAT else None


def _nothing_learned(max_bad_local: float) -> dict[str, Any]:
    low, high = audit_interval(0, 0)
    return {
        "learned": 0,
        "phase": "cold_start",
        "sample_rate": None,  # the trainer's schedule says, once it has published
        "threshold": None,
        "max_bad_local": max_bad_local,
        "certified": False,
        "bound": {
            "over": BOUND_OVER,
            "confidence": None,
            "evidence": None,
            "evidence_needed": None,
            "answers": None,
            "nearest": None,
            "handed_over": False,
        },
        "audits": 0,
        "audits_bad": 0,
        "bad_local_estimate": None,
        "bad_local_interval": [low, high],
        "rollbacks": 0,
    }
