"""What the learning loop keeps under ``FINCH_HOME/models`` (a namespace's: under its own home, see
``namespace_settings``), and how it is read back.

    router/, validator/, generator/   checkpoints of each model (``finch.models.checkpoint``)
    memory.safetensors                the retrieval memory: questions, Claude's answers, embeddings
    consistency.json                  Claude's answers to repeated questions
    state.json                        counts, audits, the bound's evidence, the stacker's verdicts

Every file is written whole and renamed into place, so a kill at any moment leaves the last good
version of each. Rolling back restores each model's checkpoint before its newest and deletes the
newer ones, which audits found serving bad answers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from finch.config import Settings
from finch.keys import check_namespace
from finch.learning.consistency import Consistency
from finch.learning.memory import N_FEATURES, N_ROUTER_FEATURES, Memory
from finch.models import checkpoint
from finch.models.encoder import encoder_config
from finch.models.generator import generator_config
from finch.models.learners import Generator, Router, Validator, load_learner
from finch.models.tokenizer import FinchTokenizer, atomic_write_text
from finch.vocabulary import DEFAULT_NAMESPACE

log = logging.getLogger(__name__)

Learner = Router | Validator | Generator


def wipe(home: Path) -> None:
    """Delete what was learned in ``home``: the models, memory, bound and snapshot, and the
    tokenizer built from its texts (``finch reset``; a namespace that asked to forget everything)."""
    shutil.rmtree(home / "models", ignore_errors=True)
    (home / "tokenizer.json").unlink(missing_ok=True)


def namespace_settings(settings: Settings, namespace: str) -> Settings:
    """The settings a namespace learns and serves under: the same, in its own home. The default
    namespace's home is finch's own (``FINCH_HOME/models``, as before namespaces); another's is
    ``FINCH_HOME/namespaces/NAME``, so nothing learned in one is ever read for another."""
    if namespace == DEFAULT_NAMESPACE:
        return settings
    return dataclasses.replace(settings, home=settings.home / "namespaces" / check_namespace(namespace))


class ModelHome:
    def __init__(self, root: Path) -> None:
        self.root = root

    def learner(self, kind: str, tokenizer: FinchTokenizer, preset: str, seed: int) -> Learner:
        """The newest good checkpoint of ``kind`` (router, validator or generator), or a new model."""
        loaded = load_learner(self.root / kind, kind, tokenizer)
        if loaded is not None:
            return loaded  # type: ignore[return-value]
        vocab = tokenizer.vocab_size
        if kind == "generator":
            return Generator(generator_config(preset, vocab), tokenizer, seed=seed)
        features = N_FEATURES if kind == "validator" else N_ROUTER_FEATURES
        config = encoder_config(preset, vocab, pad_id=tokenizer.pad_id, sep_id=tokenizer.sep_id, n_features=features)
        return (Router if kind == "router" else Validator)(config, tokenizer, seed=seed)

    def load_memory(self, memory: Memory) -> None:
        if (self.root / "memory.safetensors").exists():
            memory.load(self.root / "memory.safetensors")

    def consistency(self, share_after_users: int) -> Consistency:
        return Consistency.from_state(_read_json(self.root / "consistency.json"), share_after_users=share_after_users)

    def state(self) -> dict[str, Any]:
        return _read_json(self.root / "state.json") or {}

    def save(
        self,
        learners: tuple[Learner, ...],
        tokenizer: FinchTokenizer,
        memory: Memory,
        consistency: Consistency,
        state: dict[str, Any],
    ) -> None:
        for learner in learners:
            checkpoint.save(self.root / learner.kind, learner, tokenizer.hash)
        memory.save(self.root / "memory.safetensors")
        atomic_write_text(self.root / "consistency.json", json.dumps(consistency.to_state()))
        atomic_write_text(self.root / "state.json", json.dumps(state))

    def roll_back(self, learners: tuple[Learner, ...]) -> Path | None:
        """Restore each model's checkpoint before its newest and delete the newer ones (never to be
        loaded again). Returns the generator's restored checkpoint, or None when some model has no
        earlier checkpoint (then nothing changes)."""
        restored = {learner.kind: _previous_checkpoint(self.root / learner.kind) for learner in learners}
        if any(path is None for path in restored.values()):
            return None
        for learner in learners:
            found = restored[learner.kind]
            assert found is not None
            checkpoint.restore(checkpoint.Checkpoint(found, checkpoint.verify(found)), learner)
            for newer in sorted(found.parent.glob("ckpt-*")):
                if newer.name > found.name:
                    checkpoint.discard(newer)
        return restored.get("generator")


def _read_json(path: Path) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        log.warning("ignoring unreadable %s", path)
        return None


def _previous_checkpoint(root: Path) -> Path | None:
    """The second newest good checkpoint: the one before the models now being audited."""
    good = checkpoint.verified(root)
    return good[1].path if len(good) > 1 else None
