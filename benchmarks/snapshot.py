"""Snapshot load time: what the server's interpreter spends on each snapshot the trainer publishes.

The server loads every snapshot (``finch.learning.snapshot``) on a thread of its own process, so
every millisecond of it is a millisecond the event loop waits for the interpreter. This times, on
one snapshot, the file format finch uses (safetensors, the rest as JSON in its header) against the
same dict through ``torch.save`` and ``torch.load(weights_only=True)``, and the whole swap (read,
then build the models and the memory: ``finch.learning.serving.Serving``).

Usage: python benchmarks/snapshot.py --home FINCH_HOME [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from finch.config import load_settings
from finch.learning import snapshot
from finch.learning.serving import Serving
from finch.learning.trainer import snapshot_path
from finch.models.tokenizer import load_or_build


def median_ms(fn, repeat: int) -> float:
    fn()  # warm: the first call loads code and fills caches
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="a FINCH_HOME whose trainer has published")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    settings = load_settings({"home": str(args.home)})
    path = snapshot_path(settings)
    found = snapshot.read(path)
    if found is None:
        raise SystemExit(f"no snapshot at {path}")
    tokenizer = load_or_build(settings.home / "tokenizer.json", iter([]))
    config = settings
    width = found["memory"]["questions"].shape[1]

    def question_vec(_: str) -> torch.Tensor:
        return torch.zeros(width)

    def embed_answers(texts: list[str]) -> torch.Tensor:
        return torch.zeros(len(texts), width)

    def swap() -> None:
        Serving(snapshot.read(path), config, tokenizer, question_vec, embed_answers)

    with tempfile.TemporaryDirectory() as tmp:
        pickled = Path(tmp) / "serving.pt"
        torch.save(found, pickled)
        result = {
            "memory_rows": found["memory"]["questions"].shape[0],
            "file_mb": round(path.stat().st_size / 1e6, 1),
            "read_ms": median_ms(lambda: snapshot.read(path), args.repeat),
            "read_torch_load_ms": median_ms(
                lambda: torch.load(pickled, weights_only=True, mmap=True, map_location="cpu"), args.repeat
            ),
            "swap_ms": median_ms(swap, args.repeat),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
