"""Recall benchmark: how the retrieval memory's neighbour vote should weigh its neighbours.

Over a Banking77 stream (with repeats, and paraphrases only), each request asks the earlier ones
for its 10 nearest questions (MiniLM cosine) and takes the intent they vote for. Reported for each
weighting: top-1 accuracy of the vote, and the share of requests whose winning answer holds at
least a given share of the vote with the accuracy there. This is the evidence the router sees
(nearest similarity, vote share) and the answer recall offers, without any learned model.

Usage: python benchmarks/recall.py [--requests 2000] [--temperatures 0.1 0.05 0.02]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from finch.learning.judge import Judge
from finch.learning.memory import vote_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streams import build_stream  # noqa: E402

K = 10
WARM_UP = 200  # requests before the memory is counted on
CUTS = (0.99, 0.95, 0.9, 0.8)


def vote(similarity: torch.Tensor, labels: list[str], temperature: float | None) -> tuple[str, float]:
    """The winning label and its share of the vote; ``temperature`` None weighs by similarity."""
    top = torch.topk(similarity, min(K, len(labels)))
    weights = top.values.clamp(min=0) if temperature is None else vote_weights(top.values, temperature)
    votes: dict[str, float] = {}
    for index, weight in zip(top.indices.tolist(), weights.tolist(), strict=True):
        votes[labels[index]] = votes.get(labels[index], 0.0) + weight
    winner = max(votes, key=votes.__getitem__)
    return winner, votes[winner] / sum(votes.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.1, 0.05, 0.02])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    judge = Judge()
    print(f"| stream | weighting | top-1 accuracy | {' | '.join(f'vote share ≥ {c}' for c in CUTS)} |")
    print("|---|---|---|" + "---|" * len(CUTS))
    for unique in (False, True):
        stream = build_stream("banking77", args.requests, args.seed, unique=unique)
        vectors = judge.embed([question for question, _ in stream])
        intents = [intent for _, intent in stream]
        for temperature in [None, *args.temperatures]:
            results = []  # (vote share, right)
            for k in range(WARM_UP, len(stream)):
                winner, share = vote(vectors[:k] @ vectors[k], intents[:k], temperature)
                results.append((share, winner == intents[k]))
            accuracy = sum(right for _, right in results) / len(results)
            cells = []
            for cut in CUTS:
                kept = [right for share, right in results if share >= cut]
                cells.append(f"{len(kept) / len(results):.0%} at {sum(kept) / max(1, len(kept)):.1%}")
            name = "paraphrases only" if unique else "with repeats"
            weighting = "similarity" if temperature is None else f"exp(Δ/{temperature})"
            print(f"| {name} | {weighting} | {accuracy:.1%} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
