"""One namespace as a server serves it: the snapshot its trainer publishes, the tokenizer and the
judge's framing it learned, and the questions its users marked bad since. Nothing of one tenant is
consulted for another (``finch.server.learning`` keeps one per namespace)."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable

import torch

from finch.config import Settings
from finch.conversation import Conversation
from finch.learning import snapshot
from finch.learning.judge import Judge
from finch.learning.serving import Serving
from finch.learning.trainer import snapshot_path
from finch.models.tokenizer import FinchTokenizer, load_or_build


class Tenant:
    def __init__(self, namespace: str, settings: Settings, tokenizer: FinchTokenizer | None = None) -> None:
        self.namespace = namespace
        self.settings = settings  # the namespace's own (its home)
        self.path = snapshot_path(settings)
        self.tokenizer = tokenizer  # else loaded with the first snapshot (the namespace's trainer builds it)
        self.judge = Judge(settings.judge_threshold)  # the framing it learned; the embedding model is shared
        self.serving: Serving | None = None
        self.size = 0  # bytes of the snapshot loaded
        self.loaded: tuple[int, int, int] | None = None  # (inode, mtime, size) of the snapshot file loaded
        self.blocked_since: set[str] = set()  # questions users reported since the snapshot being served
        # The namespace asked to forget everything at this seq of the forgets stream: a snapshot
        # whose learning is not past it is never served again.
        self.forgotten_at = 0
        self.recent: OrderedDict[str, tuple[Conversation, str]] = OrderedDict()  # local answers, for feedback

    def load_new_snapshot(self, question_vec: Callable[[str], torch.Tensor]) -> bool:
        """Swap in the snapshot file when it has changed since the last load. True when it did."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        if identity == self.loaded:
            return False
        found = snapshot.read(self.path)
        self.loaded = identity
        if found is None or found["position"].get("forgets", 0) < self.forgotten_at:
            return False
        if self.tokenizer is None or self.tokenizer.hash != found["tokenizer"]:  # new, or built again
            self.tokenizer = load_or_build(self.settings.home / "tokenizer.json")
        serving = Serving(found, self.settings, self.tokenizer, question_vec, self.judge.embed_answers)
        self.size = st.st_size  # about what it holds in memory: its tensors, and its texts
        self.judge.framing.known = serving.framing  # one reference each: a request sees old or new
        self.serving = serving
        self.blocked_since -= serving.blocked  # the trainer has learned those verdicts
        return True

    def withdraw(self, seq: int) -> None:
        """The namespace asked to forget everything (at ``seq`` of the forgets stream): nothing is
        served until a snapshot learned past it, the one its trainer publishes on starting again."""
        self.forgotten_at = max(self.forgotten_at, seq)
        if self.serving is not None and self.serving.position.get("forgets", 0) < seq:
            self.serving = None
            self.loaded = None  # read the file again: it may be that snapshot already
