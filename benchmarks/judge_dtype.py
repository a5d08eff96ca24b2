"""The judge's embedding model in bfloat16 against float32: its speed, and the verdicts it changes.

On a CPU with native bfloat16 arithmetic the judge runs MiniLM in bfloat16 (``Judge.dtype``). Its
vectors are embedded here both ways, on every text the judge meets in the benchmarks: the
teacher's answers to Banking77, CLINC150 and the chat corpus, each in its five wordings, and the
Banking77 and CLINC150 test questions. Reported:

* each text's vector in bfloat16 against its float32 vector (cosine);
* for each text against its nearest other text and against another wording of its own answer,
  d = 1 − cos both ways, and how many verdicts d < τ flip: the pairs nearest τ are the ones at risk;
* how often a question's nearest other question (the memory's neighbourhood) changes;
* one question's embedding time on one thread, the two kinds alternated.

Usage: python benchmarks/judge_dtype.py [--questions 3000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from finch.learning.judge import Judge, native_bfloat16
from finch.teacher.corpus import _REWORDINGS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge_threshold import banking77, clinc150, embed_in_batches, nearest_other  # noqa: E402
from streams import reference_answers  # noqa: E402


def compare(full: Judge, half: Judge, texts: list[str], pairs: list[tuple[int, int]]) -> dict[str, float | int]:
    a, b = embed_in_batches(full, texts, 128), embed_in_batches(half, texts, 128)
    cosine = (a * b).sum(1)
    d_full = torch.tensor([1 - float(a[i] @ a[k]) for i, k in pairs])
    d_half = torch.tensor([1 - float(b[i] @ b[k]) for i, k in pairs])
    tau = full.threshold
    return {
        "texts": len(texts),
        "pairs": len(pairs),
        "cosine_min": round(float(cosine.min()), 6),
        "cosine_median": round(float(cosine.median()), 6),
        "d_change_max": round(float((d_full - d_half).abs().max()), 6),
        "d_change_median": round(float((d_full - d_half).abs().median()), 6),
        "verdicts_flipped": int(((d_full < tau) != (d_half < tau)).sum()),
        "pairs_within_0.001_of_tau": int(((d_full - tau).abs() < 0.001).sum()),
        "nearest_changed": round(float((nearest_other(a) != nearest_other(b)).float().mean()), 6),
    }


def answer_set(name: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Each answer in its five wordings; pairs: a wording against the next of the same answer, and
    each answer's plain wording against its nearest other answer's (found at compare time)."""
    answers = sorted(set(reference_answers(name).values()))
    texts = [wording.format(answer=answer) for answer in answers for wording in _REWORDINGS]
    n = len(_REWORDINGS)
    pairs = [(i * n + w, i * n + w + 1) for i in range(len(answers)) for w in range(n - 1)]
    return texts, pairs


def timing(full: Judge, half: Judge, questions: list[str], rounds: int = 3) -> dict[str, float]:
    torch.set_num_threads(1)  # the request path's setting
    times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for judge in (full, half):
        for question in questions[:20]:
            judge.embed([question])
    for _ in range(rounds):
        for name, judge in (("float32", full), ("bfloat16", half)):
            for question in questions:
                started = time.perf_counter()
                judge.embed([question])
                times[name].append((time.perf_counter() - started) * 1000)
    return {f"{name} p50 ms": round(statistics.median(ms), 2) for name, ms in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=3000, help="test questions per query set")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    full, half = Judge(dtype=torch.float32), Judge(dtype=torch.bfloat16)
    rng = random.Random(0)
    report: dict = {"command": "python " + " ".join(sys.argv), "native_bfloat16": native_bfloat16(), "sets": {}}
    for name in ("banking77", "clinc150", "chat"):
        texts, pairs = answer_set(name)
        plain = list(range(0, len(texts), len(_REWORDINGS)))
        near = nearest_other(embed_in_batches(full, [texts[i] for i in plain], 128))
        pairs += [(plain[i], plain[int(k)]) for i, k in enumerate(near)]
        report["sets"][f"{name} answers"] = compare(full, half, texts, pairs)
        print(name, "answers", report["sets"][f"{name} answers"], flush=True)
    for name, by_intent in (("banking77", banking77()), ("clinc150", clinc150())):
        questions = [q for qs in by_intent.values() for q in qs]
        questions = rng.sample(questions, min(args.questions, len(questions)))
        near = nearest_other(embed_in_batches(full, questions, 128))
        pairs = [(i, int(k)) for i, k in enumerate(near)]
        report["sets"][f"{name} questions"] = compare(full, half, questions, pairs)
        print(name, "questions", report["sets"][f"{name} questions"], flush=True)
    questions = rng.sample([q for qs in banking77().values() for q in qs], 300)
    report["timing, one question, one thread"] = timing(full, half, questions)
    print(report["timing, one question, one thread"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
