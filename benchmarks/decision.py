"""A decision's time on the request path, in process, on a kept home's last snapshot.

A decision (``finch.learning.serving.Serving.decide``: the question's embedding, the memory, the
router, the recalled answer's P(good), the generator when recall is not enough, the policy) is
timed on Banking77 questions: with the embedding model in float32 and in bfloat16 (``Judge.dtype``),
with the models on one thread (the request path's setting) or two, and with a pause between
decisions or none. Requests reach a proxy with gaps between them, and after a gap a second thread
may have to be woken at every matrix product; back to back it never sleeps. The rounds alternate,
so a drift in the machine's speed reaches every setting alike.

Usage: python benchmarks/decision.py --home KEPT_HOME/bound-0.02 [--questions 300] [--gaps 0 0.3]
       [--threads 1 2] [--dtypes float32 bfloat16]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from finch.config import load_settings
from finch.conversation import Conversation
from finch.learning import snapshot
from finch.learning.judge import Judge
from finch.learning.serving import Serving
from finch.learning.trainer import snapshot_path
from finch.models.tokenizer import load_or_build

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streams import build_stream  # noqa: E402


def serving_from(home: Path, dtype: torch.dtype | None = None) -> Serving:
    settings = load_settings({"home": str(home)})
    found = snapshot.read(snapshot_path(settings))
    if found is None:
        raise SystemExit(f"no serving snapshot under {home}")
    judge = Judge(settings.judge_threshold, dtype=dtype)
    tokenizer = load_or_build(settings.home / "tokenizer.json", iter([]))
    config = settings
    return Serving(found, config, tokenizer, lambda text: judge.embed([text])[0], judge.embed_answers)


def one_round(serving: Serving, questions: list[str], gap: float) -> dict[str, list[float]]:
    """Milliseconds by the decision's reason; "models" collects every decision that ran them."""
    times: dict[str, list[float]] = defaultdict(list)
    draw = random.Random(0).random
    for question in questions:
        if gap:
            time.sleep(gap)
        conversation = Conversation("", (("user", question),))
        started = time.perf_counter()
        decision = serving.decide(conversation, 1024, draw)
        ms = (time.perf_counter() - started) * 1000
        times[decision.reason].append(ms)
        if decision.p_router is not None:
            times["models"].append(ms)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="a kept home's bound folder, with a snapshot")
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--gaps", type=float, nargs="+", default=[0.0, 0.3], help="seconds between decisions")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=5, help="the questions' stream (not the run's own)")
    args = parser.parse_args()
    servings = {dtype: serving_from(args.home, getattr(torch, dtype)) for dtype in args.dtypes}
    questions = [q for q, _ in build_stream("banking77", args.questions, seed=args.seed)]
    for serving in servings.values():
        one_round(serving, questions[:20], 0.0)  # warm
    results: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for _ in range(args.rounds):
        for threads in args.threads:
            torch.set_num_threads(threads)
            for gap in args.gaps:
                for dtype, serving in servings.items():
                    for reason, ms in one_round(serving, questions, gap).items():
                        results[f"{dtype}, {threads} thread(s), gap {gap:g} s"][reason] += ms
    table = {
        setting: {
            reason: {"n": len(ms), **{f"p{q}": round(float(np.percentile(ms, q)), 2) for q in (25, 50, 75, 95)}}
            for reason, ms in sorted(by_reason.items())
            if reason in ("models", "local", "router_forward", "validator_reject")
        }
        for setting, by_reason in results.items()
    }
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
