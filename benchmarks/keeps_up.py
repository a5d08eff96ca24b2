"""Does learning keep up with a user's traffic? A client asks a question every ``--interval`` seconds
without waiting for the trainer, optionally while ``--burn`` CPU-burning processes run beside finch.

The stream is a small set of Banking77 questions, each in a few wordings (``--intents`` Zipf-popular
intents, ``--wordings`` utterances each, and a tenth out-of-scope queries), answered by the teacher
with reworded reference answers. ``--long`` pads every answer to real length
(500-1,000 characters, as Claude's answers to such questions run). Reported:

    eligible forwarded   forwarded requests finch could learn from (its audits included)
    learned by the end   how many of them the trainer had learned when the last answer came back
    learned after        how many after waiting up to ``--grace`` seconds more
    forward rate         in the first and the second half of the stream
    events per second    per second of the trainer's own time, and of wall time from the first request
                         to the last event learned

Each run is its own FINCH_HOME, started cold.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from streams import build_stream, teacher_pairs  # noqa: E402

from finch.config import load_settings  # noqa: E402
from finch.server.app import build_app  # noqa: E402
from finch.server.runner import running  # noqa: E402
from finch.store.db import read_rows  # noqa: E402
from finch.teacher.corpus import Corpus  # noqa: E402
from finch.teacher.server import Teacher, TeacherConfig, build_teacher_app  # noqa: E402

_BURN = "while True: pass"
_FILLER = (
    " For more detail, open the app's help centre, where each step is shown with pictures; if anything"
    " looks different on your device, update the app first, since older versions place these options"
    " elsewhere. Our support team is available around the clock by chat and phone should you need it."
)


def long_answer(answer: str) -> str:
    """The answer padded to 500-1,000 characters, as a real one runs."""
    text = answer
    while len(text) < 500 + len(answer) % 400:
        text += _FILLER
    return text[:1000]


def run(args: argparse.Namespace) -> dict:
    stream = build_stream("banking77", args.requests, args.seed, max_intents=args.intents)
    rng = random.Random(args.seed)
    wordings: dict[str, list[str]] = defaultdict(list)
    for question, intent in stream:
        if question not in wordings[intent] and len(wordings[intent]) < args.wordings:
            wordings[intent].append(question)
    stream = [(q if q in wordings[i] else rng.choice(wordings[i]), i) for q, i in stream]
    pairs = teacher_pairs("banking77")
    if args.long:
        pairs = [(q, long_answer(a)) for q, a in pairs]
    teacher = Teacher(Corpus(pairs), TeacherConfig(reword=True, seed=args.seed))
    # Other work is other programs: each burner in a session of its own, as a program started from
    # another terminal or the desktop is. (With autogroup scheduling, niceness ranks processes
    # within a session; sessions share the CPU fairly.) --burn-session shared makes them finch's.
    own = args.burn_session == "own"
    burners = [subprocess.Popen([sys.executable, "-c", _BURN], start_new_session=own) for _ in range(args.burn)]
    try:
        with tempfile.TemporaryDirectory(prefix="finch-keeps-up-") as home, running(build_teacher_app(teacher)) as up:
            settings = {"home": home, "upstream_url": up.url, "preset": args.preset, "api_key": "bench-key"}
            settings["max_bad_local"] = args.max_bad_local
            if args.nice is not None:
                settings["trainer_nice"] = args.nice
            app = build_app(load_settings(settings, environ={}))
            with running(app) as proxy, httpx.Client(base_url=proxy.url, timeout=120) as client:
                loop = app.state.proxy.learning
                routes: list[str] = []
                started, first_sent = time.monotonic(), time.time()
                for k, (question, _) in enumerate(stream):
                    body = {
                        "model": "claude-haiku-4-5",
                        "max_tokens": 300,
                        "messages": [{"role": "user", "content": question}],
                    }
                    response = client.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
                    routes.append(response.headers.get("x-finch-source", "error"))
                    time.sleep(max(0.0, started + (k + 1) * args.interval - time.monotonic()))
                sent_s = time.monotonic() - started
                db = Path(home) / "finch.db"
                app.state.proxy.store.flush()
                eligible = read_rows(
                    db,
                    "SELECT COUNT(*) AS n FROM requests r JOIN examples e ON e.request_id = r.id"
                    " WHERE r.route = 'forward'",
                )[0]["n"]
                learned_end = read_rows(db, "SELECT COUNT(*) AS n FROM learning WHERE kind = 'claude'")[0]["n"]
                caught_up = loop.drain(args.grace)
                learned_after = read_rows(db, "SELECT COUNT(*) AS n FROM learning WHERE kind = 'claude'")[0]["n"]
                status = loop.status()
                timing = read_rows(
                    db,
                    "SELECT SUM(seconds) AS busy, MAX(ts) AS last FROM learning WHERE kind = 'claude'",
                )[0]
    finally:
        for burner in burners:
            burner.kill()
    half = len(routes) // 2
    forward = [r != "local" for r in routes]
    wall = (timing["last"] or 0) - first_sent  # from the first request to the last event learned
    return {
        "requests": len(routes),
        "interval_s": args.interval,
        "distinct_questions": len(set(q for q, _ in stream)),
        "burners": args.burn,
        "burner_sessions": args.burn_session,
        "long_answers": args.long,
        "trainer_nice": args.nice,
        "errors": sum(r == "error" for r in routes),
        "sent_in_s": round(sent_s, 1),
        "eligible_forwarded": eligible,
        "learned_by_end": learned_end,
        "learned_by_end_share": learned_end / eligible if eligible else None,
        "learned_after_grace": learned_after,
        "caught_up_within_grace": caught_up,
        "forward_rate_first_half": sum(forward[:half]) / half,
        "forward_rate_second_half": sum(forward[half:]) / (len(forward) - half),
        "trainer_seconds_per_event": (timing["busy"] or 0) / learned_after if learned_after else None,
        "events_per_wall_second": learned_after / wall if wall > 0 else None,
        "max_bad_local": args.max_bad_local,
        "at_the_end": {k: status[k] for k in ("learned", "phase", "threshold", "audits", "audits_bad")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--intents", type=int, default=10)
    parser.add_argument("--wordings", type=int, default=4, help="utterances kept per intent")
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--burn", type=int, default=0, help="CPU-burning processes beside finch")
    parser.add_argument("--burn-session", choices=["own", "shared"], default="own")
    parser.add_argument("--long", action="store_true", help="answers of 500-1,000 characters")
    parser.add_argument("--nice", type=int, help="the trainer's niceness (default: finch's)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--max-bad-local", type=float, default=0.02)
    parser.add_argument("--grace", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = {"command": "python " + " ".join(sys.argv), "cores": os.cpu_count(), **run(args)}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
