"""Recall benchmark: how the retrieval memory's neighbour vote should weigh its neighbours.

Over a Banking77 stream (with repeats, and paraphrases only), each request asks the earlier ones
for its 10 nearest questions (MiniLM cosine) and takes the intent they vote for. Reported for each
weighting: top-1 accuracy of the vote, and the share of requests whose winning answer holds at
least a given share of the vote with the accuracy there. This is the evidence the router sees
(nearest similarity, vote share) and the answer recall offers, without any learned model.

``--learned`` adds the same vote in a learned space: a linear map of the MiniLM embeddings that
starts as the identity and is refit, every ``REFIT_EVERY`` requests, on the earlier requests alone
(questions with the same answer drawn together, a softmax over all earlier questions, pulled back
toward the identity). It is what a metric head learned online from one user's traffic would give
the memory's neighbourhoods.

Usage: python benchmarks/recall.py [--requests 2000] [--temperatures 0.1 0.05 0.02] [--learned]
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


REFIT_EVERY = 100
_BATCH, _TAU = 128, 0.05


def learned_metric(
    vectors: torch.Tensor,
    labels: list[str],
    upto: int,
    weight: torch.Tensor,
    pull: float = 1.0,
    steps: int = 60,
    lr: float = 0.01,
) -> torch.Tensor:
    """The map refit on requests before ``upto``, from ``weight``: for each anchor, a softmax over every
    other earlier question, whose targets are the questions with the anchor's answer."""
    ids = {label: i for i, label in enumerate(dict.fromkeys(labels[:upto]))}
    y = torch.tensor([ids[label] for label in labels[:upto]])
    x = vectors[:upto]
    weight = weight.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([weight], lr=lr)
    eye = torch.eye(weight.shape[0])
    generator = torch.Generator().manual_seed(upto)
    for _ in range(steps):
        anchors = torch.randint(0, upto, (min(_BATCH, upto),), generator=generator)
        z = torch.nn.functional.normalize(x @ weight.T, dim=1)
        logits = z[anchors] @ z.T / _TAU
        logits[torch.arange(len(anchors)), anchors] = -1e9  # not itself
        same = (y[anchors][:, None] == y[None, :]).float()
        same[torch.arange(len(anchors)), anchors] = 0.0
        has = same.sum(1) > 0
        if not bool(has.any()):
            break
        log_p = torch.log_softmax(logits, dim=1)
        loss = -((log_p * same).sum(1)[has] / same.sum(1)[has]).mean() + pull * ((weight - eye) ** 2).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return weight.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.1, 0.05, 0.02])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learned", action="store_true", help="also vote in an online-learned metric")
    parser.add_argument("--pull", type=float, default=1.0, help="the learned map's pull toward the identity")
    parser.add_argument("--steps", type=int, default=60, help="Adam steps per refit")
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()
    judge = Judge()
    print(f"| stream | weighting | top-1 accuracy | {' | '.join(f'vote share ≥ {c}' for c in CUTS)} |")
    print("|---|---|---|" + "---|" * len(CUTS))
    for unique in (False, True):
        stream = build_stream("banking77", args.requests, args.seed, unique=unique)
        vectors = judge.embed([question for question, _ in stream])
        intents = [intent for _, intent in stream]
        spaces = [(temperature, None) for temperature in [None, *args.temperatures]]
        if args.learned:
            spaces += [(temperature, "learned") for temperature in args.temperatures]
        for temperature, space in spaces:
            results = []  # (vote share, right)
            weight, projected = torch.eye(vectors.shape[1]), vectors
            for k in range(WARM_UP, len(stream)):
                if space == "learned" and k % REFIT_EVERY == 0:
                    weight = learned_metric(vectors, intents, k, weight, args.pull, args.steps, args.lr)
                    projected = torch.nn.functional.normalize(vectors @ weight.T, dim=1)
                winner, share = vote(projected[:k] @ projected[k], intents[:k], temperature)
                results.append((share, winner == intents[k]))
            accuracy = sum(right for _, right in results) / len(results)
            cells = []
            for cut in CUTS:
                kept = [right for share, right in results if share >= cut]
                cells.append(f"{len(kept) / len(results):.0%} at {sum(kept) / max(1, len(kept)):.1%}")
            name = "paraphrases only" if unique else "with repeats"
            weighting = "similarity" if temperature is None else f"exp(Δ/{temperature})"
            weighting += ", learned metric" if space == "learned" else ""
            print(f"| {name} | {weighting} | {accuracy:.1%} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
