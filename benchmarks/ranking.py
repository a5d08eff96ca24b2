"""Ranking benchmark: do finch's scores order a stream's requests better than a cache's similarity?

Reads the home a learning run kept (``benchmarks/learning.py --keep DIR``). For every request in
the second half of the stream it takes the scores finch decided with (router, validator, and the
stacker's P(good), the score finch's operating point is compared with; where no local attempt was
made at decision time, the trainer's prequential P(good) for it) and the
cosine a semantic cache would have used (the nearest earlier question finch forwarded, MiniLM),
and whether finch's answer was good: for answers served locally the benchmark's truth (its
intent's answer), for forwarded ones the judge's verdict on the local attempt when Claude's answer
arrived. Served in order of each score, the top x% of requests would be wrong at the rate shown.
A score that ranks better serves more at the same rate, whatever threshold or certification then
picks the operating point.

Usage: python benchmarks/ranking.py --home DIR/home/bound-0.02 --stream banking77 --requests 2000
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streams import OOS, build_stream, oos_intent, reference_answers  # noqa: E402

from finch.learning.judge import Judge  # noqa: E402

SHARES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def labelled_rows(home: Path, stream: list[tuple[str, str]], answers: dict[str, str]) -> list[dict]:
    db = sqlite3.connect(home / "finch.db")
    requests = db.execute(
        "SELECT id, route, p_router, p_validator, p_good FROM requests WHERE path = '/v1/messages' ORDER BY ts"
    ).fetchall()
    if len(requests) != len(stream):
        raise SystemExit(f"{home} holds {len(requests)} requests, the stream {len(stream)}: same --requests?")
    verdicts = dict(db.execute("SELECT request_id, good FROM learning WHERE good IS NOT NULL"))
    trainer_scores = dict(db.execute("SELECT request_id, p_good FROM learning WHERE p_good IS NOT NULL"))
    served = dict(db.execute("SELECT request_id, answer FROM local_answers"))
    vectors = Judge().embed([question for question, _ in stream])
    forwarded: list[int] = []
    rows = []
    for i, ((question, intent), (request_id, route, p_router, p_validator, p_good)) in enumerate(
        zip(stream, requests, strict=True)
    ):
        if i >= len(stream) // 2:
            if route == "local":
                good = answers[oos_intent(question) if intent == OOS else intent] in served[request_id]
            else:
                good = None if request_id not in verdicts else bool(verdicts[request_id])
            nearest = float((vectors[forwarded] @ vectors[i]).max()) if forwarded else 0.0
            if good is not None:
                rows.append(
                    {
                        "good": good,
                        "nearest": nearest,
                        "router": p_router or 0.0,
                        "validator": p_validator or 0.0,
                        "p_good": p_good if p_good is not None else trainer_scores.get(request_id, 0.0),
                    }
                )
        if route != "local":
            forwarded.append(i)
    return rows


def curve(rows: list[dict], score: Callable[[dict], float]) -> list[float]:
    """Bad rate among the top share of rows by ``score``, at each of ``SHARES``."""
    ranked = sorted(rows, key=score, reverse=True)
    rates = []
    for share in SHARES:
        top = ranked[: max(1, int(share * len(ranked)))]
        rates.append(sum(not r["good"] for r in top) / len(top))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--stream", default="banking77", choices=["banking77", "clinc150"])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--unique", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    stream = build_stream(args.stream, args.requests, args.seed, unique=args.unique)
    rows = labelled_rows(args.home, stream, reference_answers(args.stream))
    scores = {
        "cache: nearest similarity": lambda r: r["nearest"],
        "finch: P(good) (its operating score)": lambda r: r["p_good"],
        "finch: min(router, validator)": lambda r: min(r["router"], r["validator"]),
        "finch: router": lambda r: r["router"],
    }
    print(f"{len(rows)} labelled requests of the second half; bad rate among the top share by each score\n")
    print(f"| score | {' | '.join(f'top {s:.0%}' for s in SHARES)} |")
    print("|---|" + "---|" * len(SHARES))
    for name, score in scores.items():
        print(f"| {name} | {' | '.join(f'{rate:.2%}' for rate in curve(rows, score))} |")


if __name__ == "__main__":
    main()
