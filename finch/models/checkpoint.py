"""Checkpoints that survive a kill at any moment, and describe themselves.

Layout, per model (``FINCH_HOME/models/<kind>/``):

    ckpt-000001200/
        weights.safetensors   the module's parameters (safetensors: no pickle)
        optimizer.pt          AdamW state, loaded with ``weights_only=True`` (no arbitrary objects)
        replay.json           the replay buffer (token ids and labels)
        meta.json             format version, kind, configs, step, tokenizer hash, time, file digests

A save writes everything into a hidden temporary directory, fsyncs each file and the directory,
then renames the directory into place: a reader sees a whole checkpoint or none. The newest
``keep`` checkpoints are kept. Loading takes the newest that verifies (meta parses, digests match)
and says which ones it skipped and why; a checkpoint made with another tokenizer is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from finch.models.online import OnlineLearner
from finch.models.tokenizer import TokenizerMismatch

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_FILES = ("weights.safetensors", "optimizer.pt", "replay.json")


class CheckpointError(Exception):
    """No usable checkpoint, or one that cannot be used here."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    meta: dict[str, Any]


def save(root: Path, learner: OnlineLearner, tokenizer_hash: str, keep: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir(mode=0o700)
    try:
        save_model(learner.module, str(tmp / "weights.safetensors"))
        torch.save(learner.optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "replay.json").write_text(json.dumps(learner.replay_state()))
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": learner.kind,
            "config": learner.config_dict(),
            "step": learner.step,
            "tokenizer_hash": tokenizer_hash,
            "saved_at": time.time(),
            "sha256": {name: _digest(tmp / name) for name in _FILES},
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        for name in (*_FILES, "meta.json"):
            os.chmod(tmp / name, 0o600)
            _fsync_file(tmp / name)
        _fsync_dir(tmp)
        final = root / f"ckpt-{learner.step:09d}"
        if final.exists():  # the same step saved twice (after a rollback): the newer save wins
            discard(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(root, keep)
    return final


def latest(root: Path, kind: str, tokenizer_hash: str) -> Checkpoint | None:
    """The newest checkpoint that verifies, or None when there is none at all."""
    for found in verified(root):
        path, meta = found.path, found.meta
        if meta["kind"] != kind:
            raise CheckpointError(f"{path} holds a {meta['kind']} model, not a {kind}")
        if meta["tokenizer_hash"] != tokenizer_hash:
            raise TokenizerMismatch(
                f"{path} was trained with tokenizer {meta['tokenizer_hash']}, but FINCH_HOME's tokenizer is"
                f" {tokenizer_hash}. Restore the matching tokenizer.json or reset the models (finch reset)."
            )
        return found
    return None


def verified(root: Path) -> list[Checkpoint]:
    """Every checkpoint under ``root`` that verifies, newest first; the others are reported."""
    good = []
    for path in sorted(root.glob("ckpt-*"), reverse=True) if root.exists() else []:
        try:
            good.append(Checkpoint(path, verify(path)))
        except CheckpointError as exc:
            log.warning("skipping checkpoint %s: %s", path, exc)
    return good


def verify(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"unreadable meta.json ({exc})") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"format version {meta.get('format_version')} is not {FORMAT_VERSION}")
    for name, expected in meta.get("sha256", {}).items():
        try:
            if _digest(path / name) != expected:
                raise CheckpointError(f"{name} does not match its digest (corrupt or partial)")
        except OSError as exc:
            raise CheckpointError(f"{name} is missing ({exc})") from exc
    return meta


def restore(checkpoint: Checkpoint, learner: OnlineLearner) -> None:
    """Load weights, optimiser state, replay and step into a learner built from ``checkpoint.meta``."""
    load_model(learner.module, str(checkpoint.path / "weights.safetensors"), device=str(learner.device))
    state = torch.load(checkpoint.path / "optimizer.pt", weights_only=True, map_location=learner.device)
    learner.optimizer.load_state_dict(state)
    learner.load_replay_state(json.loads((checkpoint.path / "replay.json").read_text()))
    learner.step = int(checkpoint.meta["step"])


def discard(path: Path) -> None:
    """Remove a checkpoint directory. It is renamed out of ``ckpt-*`` first, in one step, so a kill
    midway through the deletion never leaves a half-deleted checkpoint under a checkpoint's name,
    and a kill between the rename and a save's own rename still leaves every other checkpoint whole."""
    trash = path.parent / f".tmp-{uuid.uuid4().hex}"
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _prune(root: Path, keep: int) -> None:
    for old in sorted(root.glob("ckpt-*"), reverse=True)[keep:]:
        discard(old)
    for stale in root.glob(".tmp-*"):  # left by a save that was killed
        if time.time() - stale.stat().st_mtime > 60:
            shutil.rmtree(stale, ignore_errors=True)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
