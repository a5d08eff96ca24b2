"""Does the bound hold as finch checks it? Synthetic audit streams at known true bad rates.

Each run is a stream of judged answers whose true bad rate is ``rate`` in every region (the worst
case for a region sitting at the bound). After every answer the bound is checked; a run "certifies"
if it ever declares a region under the bound. At a true rate at or above the bound that is a false
certification, and it must happen in at most 5% of runs; below the bound it is the power, and the
answers it took are reported.

Methods:
* ``clopper-pearson, re-checked``: the exact one-sided 95% upper bound, recomputed after each answer
  (finch's bound before this version); one region.
* ``betting, one region``: ``finch.policy.betting.BettingTest``, every answer judged.
* ``betting, sequence``: ``finch.policy.bound.Certifier`` as finch runs it: answers carry scores
  spread over its regions, and once a region is certified its answers are served and only a sample
  (10%, then 5%) is judged, each audit weighted by 1/p. A fifth of the answers are Claude's own
  repeated (score 1.0, the first region). Run twice: with the fallback procedure finch uses, and
  with fixed-sequence testing (all delta on the first region) for comparison.

``--one-region`` runs the betting test alone, and beside it the least any valid test needs on average
before it can certify a region truly at ``rate``, log(1/delta) / KL(rate || bound) judged answers (Wald;
the mean of the answers it takes is at least about that): what a bound costs in evidence.

``--rise BEFORE AFTER`` runs finch's sequence alone on streams whose rate rises halfway: what a
worse model costs before the bound stops serving. ``--drift START END``: the rate moves step by step
over the whole stream instead. Both run with finch's audits at stake (``finch.policy.watch``);
``--stake 0`` runs them without.

``--replicas K LAG`` runs finch's sequence as K replicas decide it, each on a snapshot up to LAG
answers old (the operating point and audit chance it serves at), beside one replica.

``--no-repeats`` runs finch's sequence on streams where no answer is Claude's repeated (score 1.0),
so the repeats' region stays empty, with its handover (``finch.policy.bound``) and without.

``--weighted-estimate`` runs the sequences with the bets' estimate of the rate as it was before:
every answer in it, an audit weighted by 1/p as in the wealth (``WeightedEstimate``).

Usage: python benchmarks/bound.py [--runs 300] [--answers 3000] [--json out.json]
       python benchmarks/bound.py --one-region --rates 0.005 0.01 0.015 --answers 40000 [--runs 100]
       python benchmarks/bound.py --rise 0.002 0.05 [--stake 0] [--boost 0.5 100] [--runs 100] [--json out.json]
       python benchmarks/bound.py --drift 0.005 0.04 --answers 5000 [--stake 0] [--runs 100]
       python benchmarks/bound.py --no-repeats [--runs 300] [--json out.json]
       python benchmarks/bound.py --replicas 3 100 --rates 0.01 0.02 0.03 [--runs 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
from scipy.stats import beta

from finch.policy.betting import _FORGET, BettingTest
from finch.policy.bound import HANDOVER_AT, THRESHOLDS, WEIGHTS, Certifier
from finch.policy.watch import STAKE, Watch

ALPHA, DELTA = 0.02, 0.05


class WeightedEstimate(BettingTest):
    """finch's test before: the bets' estimate of the rate read every answer, an audit weighted by 1/p
    (one bad audit at p = 0.1 counts as ten bad answers) and a served answer as a good one."""

    def _learn_rate(self, bad: bool | None, y: float) -> None:
        self._est_bad = _FORGET * self._est_bad + y
        self._est_n = _FORGET * self._est_n + 1


def certifier(weights: tuple[float, ...], weighted: bool, handover: bool = True) -> Certifier:
    tests = [WeightedEstimate(ALPHA, DELTA) for _ in THRESHOLDS] if weighted else []
    return Certifier(ALPHA, DELTA, weights=weights, tests=tests, handover_at=HANDOVER_AT if handover else None)


def clopper_pearson_rechecked(bad: np.ndarray) -> int | None:
    """The first answer after which the exact 95% upper bound is under the bound, or None."""
    n = np.arange(1, len(bad) + 1)
    k = np.cumsum(bad)
    upper = np.where(k >= n, 1.0, beta.ppf(1 - DELTA, k + 1, n - k))
    hits = np.flatnonzero(upper <= ALPHA)
    return int(hits[0]) + 1 if len(hits) else None


def betting_one_region(bad: np.ndarray) -> int | None:
    test = BettingTest(ALPHA, DELTA)
    for i, b in enumerate(bad):
        test.observe(bool(b))
        if test.certified:
            return i + 1
    return None


def betting_sequence(
    bad: np.ndarray,
    rng: np.random.Generator,
    weights: tuple[float, ...] = WEIGHTS,
    weighted: bool = False,
    repeats: float = 0.2,
    handover: bool = True,
    stake: float | None = None,
    **replicas: int,
) -> int | None:
    """The certifier with finch's sampling: uncertified regions are all judged (forwarded), answers in
    the certified region are served and audited with probability 10% (5% after 1,000 answers), or
    more while the certificate is new (``stake``)."""
    return serve(bad, rng, weights, weighted=weighted, repeats=repeats, handover=handover, stake=stake, **replicas)[1]


def serve(
    bad: np.ndarray,
    rng: np.random.Generator,
    weights: tuple[float, ...] = WEIGHTS,
    boost: tuple[float, int] | None = None,
    weighted: bool = False,
    repeats: float = 0.2,
    handover: bool = True,
    stake: float | None = None,
    replicas: int = 1,
    lag: int = 0,
) -> tuple[np.ndarray, int | None]:
    """Which answers finch serves (not audited) over a stream, as ``betting_sequence`` runs it, and
    the answer after which it first certified. ``boost`` (rate, answers): after a bad audit, the
    next ``answers`` would-be-served answers are audited at ``rate`` at least (a variant, not finch's
    rule; the rate is chosen before each answer is seen, so the weights keep the test valid).
    ``repeats``: the share of answers that are Claude's own repeated (score 1.0). ``replicas``,
    ``lag``: each answer is decided by one of several replicas at random, on the operating point and
    audit chance of the snapshot it last loaded, which it reloads every ``lag`` answers (staggered);
    the trainer counts every decision in the log's order at the chance that replica used."""
    bound = certifier(weights, weighted, handover)
    scores = 1 - 0.3 * rng.random(len(bad)) ** 2  # dense near 1, as a learned P(good) is: a quarter >= 0.99
    scores[rng.random(len(bad)) < repeats] = 1.0  # Claude's own answers repeated
    served = np.zeros(len(bad), dtype=bool)
    first = None
    boosted = 0  # answers left at the boosted rate
    watch = Watch(stake) if stake is not None else None
    views: list[tuple[float | None, float]] = [(None, 1.0)] * replicas  # (point, audit chance) as loaded
    loaded_at = [-lag * j // replicas - lag for j in range(replicas)]
    for i, (b, score) in enumerate(zip(bad, scores, strict=True)):
        j = int(rng.integers(replicas)) if replicas > 1 else 0
        if i - loaded_at[j] >= lag:  # this replica loads the newest snapshot
            base = 0.1 if i < 1000 else 0.05
            views[j], loaded_at[j] = (bound.certified(), watch.audit_chance(base) if watch else base), i
        point, p = views[j]
        if point is not None and score >= point:
            if boost is not None and boosted > 0:
                p, boosted = max(p, boost[0]), boosted - 1
            judged = rng.random() < p
            served[i] = not judged
            bound.observe(float(score), bool(b) if judged else None, p)
            if boost is not None and judged and b:
                boosted = boost[1]
            if watch is not None:
                watch.observe(bool(b) if judged else None)
        else:
            bound.observe(float(score), bool(b))
        if first is None and bound.certified() is not None:
            first = i + 1
    return served, first


def after_a_rise(
    runs: int,
    answers: int,
    before: float,
    after: float,
    seed: int,
    boost: tuple[float, int] | None = None,
    weighted: bool = False,
    stake: float | None = None,
    drift: bool = False,
) -> dict:
    """Streams whose bad rate rises from ``before`` to ``after`` halfway, or with ``drift`` step by
    step over the whole stream (all regions alike, as a worse model would make them): how much finch
    served before the change (with a drift, before the rate crosses the bound), how many answers it
    serves after it, how many of them bad, and whether it still serves in the stream's last tenth.
    ``stake``: the audits at stake (``finch.policy.watch``); None, without them."""
    rng = np.random.default_rng(seed)
    rates = np.linspace(before, after, answers) if drift else np.where(np.arange(answers) < answers // 2, before, after)
    half = int(np.argmax(rates > ALPHA)) if drift else answers // 2
    served_before, served_after, bad_after, at_end, whole, shares = [], [], [], [], [], []
    for _ in range(runs):
        bad = rng.random(answers) < rates
        served, _ = serve(bad, rng, boost=boost, weighted=weighted, stake=stake)
        shares.append(served.mean())
        served_before.append(served[:half].mean())
        served_after.append(served[half:].sum())
        bad_after.append((served[half:] & bad[half:]).sum())
        at_end.append(served[-answers // 10 :].any())
        whole.append((served & bad).sum() / max(1, served.sum()))  # the served answers' bad rate, whole run
    return {
        "before": before,
        "after": after,
        "drift": drift,
        "change_at": half,
        "boost": boost,
        "stake": stake,
        "weighted_estimate": weighted,
        "runs": runs,
        "answers": answers,
        "served_share_whole_run": float(np.mean(shares)),
        "served_share_before_rise": float(np.mean(served_before)),
        "served_share_after_rise": float(np.mean(served_after)) / (answers - half),
        "served_after_rise_median": float(np.median(served_after)),
        "served_after_rise_p95": float(np.percentile(served_after, 95)),
        "bad_served_after_rise_median": float(np.median(bad_after)),
        "bad_served_after_rise_p95": float(np.percentile(bad_after, 95)),
        "serving_in_the_last_tenth": float(np.mean(at_end)),
        "served_bad_rate_whole_run_median": float(np.median(whole)),
        "runs_over_the_bound_whole_run": float(np.mean(np.array(whole) > ALPHA)),
    }


def least_evidence(rate: float, alpha: float = ALPHA, delta: float = DELTA) -> float:
    """log(1/delta) / KL(rate || alpha): about the fewest judged answers, on average, that any test
    valid at level delta needs to certify "under alpha" for a region truly at ``rate`` (Wald)."""
    kl = (rate * math.log(rate / alpha) if rate > 0 else 0.0) + (1 - rate) * math.log((1 - rate) / (1 - alpha))
    return math.log(1 / delta) / kl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--answers", type=int, default=3000)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.005, 0.01, 0.02, 0.03])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the table here")
    parser.add_argument("--rise", type=float, nargs=2, metavar=("BEFORE", "AFTER"), help="rates rising halfway")
    parser.add_argument("--drift", type=float, nargs=2, metavar=("START", "END"), help="rates drifting step by step")
    parser.add_argument("--stake", type=float, help="audits at stake (finch.policy.watch); 0: without them")
    parser.add_argument("--boost", type=float, nargs=2, metavar=("RATE", "ANSWERS"), help="audits after a bad one")
    parser.add_argument("--one-region", action="store_true", help="the betting test alone, beside the least evidence")
    parser.add_argument("--finch-only", action="store_true", help="finch's sequence alone (with its audits at stake)")
    parser.add_argument("--weighted-estimate", action="store_true", help="the bets' estimate as before (see above)")
    parser.add_argument("--no-repeats", action="store_true", help="no answer scores 1.0: the handover (see above)")
    parser.add_argument("--replicas", type=int, nargs=2, metavar=("K", "LAG"), help="K replicas, snapshots LAG old")
    args = parser.parse_args()
    if args.rise or args.drift:
        boost = (args.boost[0], int(args.boost[1])) if args.boost else None
        stake = STAKE if args.stake is None else (args.stake or None)
        rates = args.rise or args.drift
        row = after_a_rise(
            args.runs, args.answers, *rates, args.seed, boost, args.weighted_estimate, stake, args.drift is not None
        )
        print(json.dumps(row, indent=1))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(row, f, indent=1)
        return
    methods = {
        "clopper-pearson, re-checked": lambda bad, rng: clopper_pearson_rechecked(bad),
        "betting, one region": lambda bad, rng: betting_one_region(bad),
        "betting, fixed sequence": lambda bad, rng: betting_sequence(bad, rng, (1.0,), args.weighted_estimate),
        "betting, fallback (finch)": lambda bad, rng: betting_sequence(
            bad, rng, WEIGHTS, args.weighted_estimate, stake=STAKE
        ),
    }
    if args.one_region:
        methods = {"betting, one region": methods["betting, one region"]}
    if args.finch_only:
        methods = {"betting, fallback (finch)": methods["betting, fallback (finch)"]}
    if args.replicas:
        k, lag = args.replicas
        methods = {
            "finch, one replica": methods["betting, fallback (finch)"],
            f"finch, {k} replicas, lag {lag}": lambda bad, rng: betting_sequence(
                bad, rng, WEIGHTS, stake=STAKE, replicas=k, lag=lag
            ),
        }
    if args.no_repeats:
        methods = {
            "fallback, handover (finch)": lambda bad, rng: betting_sequence(bad, rng, repeats=0.0),
            "fallback, no handover": lambda bad, rng: betting_sequence(bad, rng, repeats=0.0, handover=False),
        }
    rows = []
    started = time.perf_counter()
    for rate in args.rates:
        for name, method in methods.items():
            rng = np.random.default_rng(args.seed)
            hits = []
            for _ in range(args.runs):
                bad = rng.random(args.answers) < rate
                hits.append(method(bad, rng))
            certified = [h for h in hits if h is not None]
            row = {
                "true_rate": rate,
                "method": name,
                "runs": args.runs,
                "certified_share": len(certified) / args.runs,
                "median_answers_to_certify": float(np.median(certified)) if certified else None,
                "least_mean_answers_any_valid_test": least_evidence(rate) if rate < ALPHA else None,
            }
            rows.append(row)
            verdict = "false" if rate >= ALPHA else "true"
            median = row["median_answers_to_certify"]
            print(
                f"rate {rate:.4f}  {name:30s}  certified in {row['certified_share']:6.1%} of runs ({verdict})"
                f"  median answers {'-' if median is None else f'{median:.0f}'}"
                + (f"  (any valid test: about {least_evidence(rate):.0f} on average)" if rate < ALPHA else ""),
                file=sys.stderr,
                flush=True,
            )
    print(f"{time.perf_counter() - started:.0f}s", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"bound": ALPHA, "delta": DELTA, "answers": args.answers, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
