"""Calibrating the judge's threshold τ on real query sets.

For each intent of Banking77 and CLINC150, pairs of texts that mean the same (two utterances of the
intent) and near-miss pairs (an utterance of the intent and one of the intent whose centroid is
nearest: similar words, different answer). Reports how well d = 1 − cos separates them (AUROC) and,
for each τ, the share of same-meaning pairs judged good and of near-miss pairs wrongly judged good.

Usage: python benchmarks/judge_threshold.py [--pairs 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

import torch

from finch.learning.judge import Judge

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def banking77() -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    with (SHARED / "banking77" / "test.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out[row["category"]].append(row["text"])
    return dict(out)


def clinc150() -> dict[str, list[str]]:
    data = json.loads((SHARED / "clinc150" / "data_full.json").read_text())
    out: dict[str, list[str]] = defaultdict(list)
    for text, intent in data["test"]:
        out[intent].append(text)
    return dict(out)


def embed_in_batches(judge: Judge, texts: list[str], batch: int = 256) -> torch.Tensor:
    """Many texts' embeddings, a batch at a time (one batch pads every text to the longest)."""
    return torch.cat([judge.embed(texts[k : k + batch]) for k in range(0, len(texts), batch)])


def nearest_other(vectors: torch.Tensor) -> torch.Tensor:
    """For each unit vector, the index of the nearest other one."""
    similarity = vectors @ vectors.T
    similarity.fill_diagonal_(-2.0)
    return similarity.argmax(1)


def pairs_for(judge: Judge, by_intent: dict[str, list[str]], n: int, rng: random.Random) -> dict[str, list[float]]:
    intents = sorted(by_intent)
    texts = [t for i in intents for t in by_intent[i]]
    owner = [i for i in intents for _ in by_intent[i]]
    vectors = embed_in_batches(judge, texts)
    index: dict[str, list[int]] = defaultdict(list)
    for k, intent in enumerate(owner):
        index[intent].append(k)
    centroids = torch.nn.functional.normalize(torch.stack([vectors[index[i]].mean(0) for i in intents]), dim=-1)
    near_miss = {intents[a]: intents[int(b)] for a, b in enumerate(nearest_other(centroids))}
    same, miss = [], []
    for _ in range(n):
        intent = rng.choice(intents)
        a, b = rng.sample(index[intent], 2)
        same.append(1 - float(vectors[a] @ vectors[b]))
        c = rng.choice(index[near_miss[intent]])
        miss.append(1 - float(vectors[a] @ vectors[c]))
    return {"same": same, "near_miss": miss}


def chatterbot_answers() -> list[str]:
    from finch.teacher.corpus import load_default

    return sorted({a for a in load_default().answers if len(a) > 20})


def banking77_answers() -> list[str]:
    """The learning benchmark's reference answers, one per Banking77 intent."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from streams import reference_answers

    return sorted(reference_answers("banking77").values())


def with_framing_learned(answers: list[str], rng: random.Random, n: int = 3000) -> Judge:
    """A judge that has seen ``n`` of these answers, reworded, as finch sees Claude's answers."""
    from finch.teacher.corpus import reword

    judge = Judge()
    for _ in range(n):
        judge.framing.observe(reword(rng.choice(answers), rng))
    return judge


def rewordings(judge: Judge, answers: list[str], n: int, rng: random.Random) -> dict[str, list[float]]:
    """The teacher simulator's answers: the same answer in two wordings, versus the most similar
    other answer (reworded too: rewording is all framing, and near misses share it)."""
    from finch.teacher.corpus import reword

    near = nearest_other(embed_in_batches(judge, answers))
    same, miss = [], []
    for _ in range(n):
        k = rng.randrange(len(answers))
        same.append(judge.divergence(reword(answers[k], rng), reword(answers[k], rng)))
        miss.append(judge.divergence(reword(answers[k], rng), reword(answers[int(near[k])], rng)))
    return {"same": same, "near_miss": miss}


def auroc(good: list[float], bad: list[float]) -> float:
    """P(d_good < d_bad)."""
    ranked = sorted([(d, 1) for d in good] + [(d, 0) for d in bad])
    wins, bads_seen = 0.0, 0
    for _, is_good in reversed(ranked):
        if is_good:
            wins += bads_seen
        else:
            bads_seen += 1
    return wins / (len(good) * len(bad))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    judge, rng = Judge(), random.Random(0)
    report: dict = {"command": "python " + " ".join(sys.argv), "datasets": {}}
    answer_sets = {"teacher_rewording": chatterbot_answers(), "banking77_answers": banking77_answers()}
    for name in (
        "banking77",
        "clinc150",
        "teacher_rewording",
        "teacher_rewording, framing learned",
        "banking77_answers",
        "banking77_answers, framing learned",
    ):
        if name.endswith(", framing learned"):
            answers = answer_sets[name.split(",")[0]]
            d = rewordings(with_framing_learned(answers, rng), answers, args.pairs // 4, rng)
        elif name in answer_sets:
            d = rewordings(judge, answer_sets[name], args.pairs // 4, rng)
        else:
            d = pairs_for(judge, {"banking77": banking77, "clinc150": clinc150}[name](), args.pairs, rng)
        rows = []
        for tau in (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5):
            rows.append({
                "tau": tau,
                "same_judged_good": sum(x < tau for x in d["same"]) / len(d["same"]),
                "near_miss_judged_good": sum(x < tau for x in d["near_miss"]) / len(d["near_miss"]),
            })  # fmt: skip
        report["datasets"][name] = {"auroc": auroc(d["same"], d["near_miss"]), "by_tau": rows}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
