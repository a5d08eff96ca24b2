"""finch's tokenizer: byte-level BPE built by finch itself, then frozen.

Built once (from the bundled chatterbot corpus plus the user's first examples) and saved to
``FINCH_HOME/tokenizer.json``; every checkpoint records its hash, so weights are never paired with
a tokenizer they were not trained on. Byte-level means any text encodes, however unusual.

A conversation renders to one sequence:

    <bos> [<system> text] <user> text <assistant> text <user> text ... <assistant>

and is truncated from the left when too long (the latest turns matter most), keeping <bos>.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from finch.bundled import chatterbot_pairs
from finch.conversation import Conversation

PAD, BOS, EOS, SEP = "<pad>", "<bos>", "<eos>", "<sep>"
ROLE_TOKENS = {"system": "<system>", "user": "<user>", "assistant": "<assistant>"}
SPECIAL_TOKENS = [PAD, BOS, EOS, SEP, *ROLE_TOKENS.values()]  # PAD first: id 0


class TokenizerMismatch(Exception):
    """A checkpoint was trained with another tokenizer."""


class FinchTokenizer:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        ids = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
        if any(i is None for i in ids):
            raise ValueError("tokenizer lacks finch's special tokens")
        self.pad_id, self.bos_id, self.eos_id, self.sep_id = ids[:4]
        self.role_ids = {role: tokenizer.token_to_id(tok) for role, tok in ROLE_TOKENS.items()}
        self.special_ids = frozenset(ids)
        self.hash = hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16]

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([i for i in ids if i not in self.special_ids], skip_special_tokens=True)

    def render(self, conversation: Conversation, max_len: int, cue_answer: bool = True) -> list[int]:
        """The conversation as ids; ends with <assistant> when ``cue_answer`` (a generator prompt)."""
        ids: list[int] = []
        if conversation.system:
            ids += [self.role_ids["system"], *self.encode(conversation.system)]
        for role, text in conversation.turns:
            ids += [self.role_ids.get(role, self.role_ids["user"]), *self.encode(text)]
        if cue_answer:
            ids.append(self.role_ids["assistant"])
        return [self.bos_id, *ids[-(max_len - 1) :]] if max_len > 1 else [self.bos_id]

    def render_pair(self, conversation: Conversation, answer: str, max_len: int) -> list[int]:
        """Conversation <sep> answer, for the validator. The answer keeps at most half the room."""
        answer_ids = self.encode(answer)[: max_len // 2]
        prompt = self.render(conversation, max_len - len(answer_ids) - 1, cue_answer=False)
        return [*prompt, self.sep_id, *answer_ids]

    def save(self, path: Path) -> None:
        atomic_write_text(path, self._tok.to_str())

    @classmethod
    def load(cls, path: Path) -> FinchTokenizer:
        return cls(Tokenizer.from_file(str(path)))


def build_tokenizer(texts: Iterable[str], vocab_size: int = 8192) -> FinchTokenizer:
    """Train byte-level BPE on ``texts``; the vocabulary stops growing when the texts run out of merges."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return FinchTokenizer(tok)


def bundled_texts() -> list[str]:
    """English text that ships with finch's dependencies: the chatterbot corpus, questions and answers."""
    return [text for pair in chatterbot_pairs() for text in pair]


def load_or_build(path: Path, texts: Iterable[str] = (), vocab_size: int = 8192) -> FinchTokenizer:
    """The frozen tokenizer at ``path``; built from the bundled corpus plus ``texts`` if absent."""
    if path.exists():
        return FinchTokenizer.load(path)
    tokenizer = build_tokenizer([*bundled_texts(), *texts], vocab_size)
    tokenizer.save(path)
    return tokenizer


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename: readers see the old file or the new, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
