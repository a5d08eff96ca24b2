"""What each guard against bad local answers changes: each switched off in turn, on a learning stream
and in the bound's simulation.

The guards, besides the bound's certificate itself:

    alarm         a certified region whose rate turns bad loses its certificate (policy/betting.py)
    conservative  until `conservative_until` answers, only thresholds >= `conservative_threshold`
                  serve (policy/schedule.py)
    over_bound    in the conservative phase, more than the bound bad among the last 100 audits audits
                  every would-be-local answer (policy/audits.py, policy/decide.py)
    rollback      audits since the last checkpoint over the bound restore the checkpoint before it
                  (learning/ensemble.py)

(A user's "bad answer" mark, the fifth, blocks a question a person reported: no stream here has
people in it, so it is not measured.)

The streams are replayed in process, as the server and the trainer would run them, without HTTP:
each request is decided by the request path (``Serving``) from the trainer's last snapshot, the
audit coin drawn as the server draws it; Claude's answer (the benchmark's teacher, reworded) comes
back for every forward; every ``--batch`` requests the trainer learns what was logged, in one batch,
and publishes a snapshot. Each guard's run counts how often the guard acted. The bound's part runs
``benchmarks/bound.py``'s rise and steady streams with the alarm on and off.

Usage: python benchmarks/guards.py [--stream banking77] [--unique] [--requests 2000] [--seed 0]
       [--guards none alarm conservative over_bound rollback] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

from finch.config import Settings
from finch.conversation import Conversation
from finch.learning import snapshot
from finch.learning.ensemble import Ensemble
from finch.learning.serving import Serving
from finch.policy.audits import Audits
from finch.policy.betting import BettingTest
from finch.policy.decide import AUDITED_REASONS
from finch.teacher.corpus import Corpus, reword
from finch.vocabulary import Route

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bound as bound_sim  # noqa: E402
from learning import Truth  # noqa: E402
from streams import build_stream, reference_answers, teacher_pairs  # noqa: E402

GUARDS = ("none", "alarm", "conservative", "over_bound", "rollback")


def switched_off(guard: str, settings: Settings) -> tuple[Settings, list]:
    """The settings and patches that turn ``guard`` off."""
    if guard == "conservative":
        return dataclasses.replace(settings, conservative_until=settings.cold_start), []
    if guard == "alarm":
        return settings, [mock.patch.object(BettingTest, "alarm_bet", lambda self, p: 0.0)]
    if guard == "over_bound":
        return settings, [mock.patch.object(Audits, "over_bound", lambda self, bound: False)]
    if guard == "rollback":
        return settings, [mock.patch.object(Ensemble, "roll_back_if_worse", lambda self: False)]
    return settings, []


def replay(name: str, unique: bool, n: int, seed: int, batch: int, guard: str) -> dict:
    stream = build_stream(name, n, seed, unique=unique)
    truth = Truth(reference_answers(name))
    corpus, rng, coin = Corpus(teacher_pairs(name)), random.Random(seed), random.Random(seed)
    fired = {"over_bound": 0, "alarm": 0, "conservative": 0, "rollback": 0}
    served, wrong = [], []
    with tempfile.TemporaryDirectory(prefix="finch-guards-") as home, ExitStack() as patches:
        settings, to_patch = switched_off(guard, Settings(home=Path(home), preset="tiny", seed=seed))
        for patch in to_patch:
            patches.enter_context(patch)
        ensemble = Ensemble(settings)  # a fresh home: the tokenizer is built as a new server builds it
        judge, path = ensemble.judge, Path(home) / "serving.safetensors"

        def publish(generation: int) -> Serving:
            snapshot.write(path, snapshot.capture(ensemble, generation))
            found = snapshot.read(path)
            assert found is not None
            return Serving(found, settings, ensemble.tokenizer, lambda t: judge.embed([t])[0], judge.embed_answers)

        serving, logged, started = publish(0), [], time.perf_counter()
        for k, (question, intent) in enumerate(stream):
            conversation = Conversation("", (("user", question),))
            decision = serving.decide(conversation, 200, coin.random)
            fired["over_bound"] += decision.reason == "over_bound"
            if decision.route == Route.LOCAL:
                served.append(True)
                wrong.append(truth.wrong(intent, decision.answer or ""))
            else:
                served.append(False)
                wrong.append(False)
            answer = None if decision.route == Route.LOCAL else reword(corpus.answer(question), rng)
            logged.append((conversation, answer, decision))
            if (k + 1) % batch == 0 or k + 1 == len(stream):
                rollbacks, epochs = ensemble.rollbacks, sum(t.epoch for t in ensemble.certifier.tests)
                ensemble.begin_batch([c for c, a, _ in logged if a is not None])
                for conv, answer, d in logged:
                    if answer is None:
                        ensemble.count_served(d)
                    else:
                        audit = d if d.reason in AUDITED_REASONS else None
                        ensemble.learn_from_claude(conv, answer, audit, 200)
                ensemble.end_batch()
                fired["rollback"] += ensemble.rollbacks - rollbacks
                fired["alarm"] += sum(t.epoch for t in ensemble.certifier.tests) - epochs
                if ensemble.phase == "conservative" and ensemble.certifier.certified() not in (
                    None,
                    ensemble.threshold,
                ):
                    fired["conservative"] += 1  # the phase held the operating point above the certified one
                logged, serving = [], publish(k + 2)
            if (k + 1) % 500 == 0:
                print(f"  {guard} {k + 1}/{n}: {sum(served) / len(served):.1%} served", file=sys.stderr, flush=True)
    quarter = n // 4
    last = slice(n - quarter, n)
    n_served = sum(served)
    return {
        "guard_off": guard,
        "served": n_served / n,
        "by_quarter": [sum(served[i * quarter : (i + 1) * quarter]) / quarter for i in range(4)],
        "last_quarter": sum(served[last]) / quarter,
        "wrong": sum(wrong),
        "wrong_rate": sum(wrong) / n_served if n_served else None,
        "guards_acted": fired,
        "seconds": time.perf_counter() - started,
    }


def bound_part(runs: int, seed: int) -> dict:
    """The rise (0.2% to 5% halfway) and a steady 0.5% stream, with the alarm on and off."""
    out = {}
    for label in ("alarm on", "alarm off"):
        with ExitStack() as stack:
            if label == "alarm off":
                stack.enter_context(mock.patch.object(BettingTest, "alarm_bet", lambda self, p: 0.0))
            out[label] = {
                "rise": bound_sim.after_a_rise(runs, 3000, 0.002, 0.05, seed),
                "steady": bound_sim.after_a_rise(runs, 3000, 0.005, 0.005, seed),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", default="banking77", choices=["banking77", "clinc150", "chat"])
    parser.add_argument("--unique", action="store_true")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=20, help="requests between the trainer's batches")
    parser.add_argument("--guards", nargs="+", default=list(GUARDS), choices=GUARDS)
    parser.add_argument("--bound-runs", type=int, default=100, help="0: skip the bound's part")
    parser.add_argument("--json")
    args = parser.parse_args()
    result: dict = {"command": " ".join(sys.argv), "streams": []}
    for guard in args.guards:
        row = replay(args.stream, args.unique, args.requests, args.seed, args.batch, guard)
        print(json.dumps(row), flush=True)
        result["streams"].append(row)
    if args.bound_runs:
        result["bound"] = bound_part(args.bound_runs, args.seed)
        print(json.dumps(result["bound"], indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
