"""`finch demo`: a teacher and finch on free loopback ports. First a history of past exchanges with
the teacher, as a gateway would have logged them, is imported (``finch import``); then a stream of
live questions is replayed through finch, and a summary says what happened. Needs no API key and
no network."""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from finch import history
from finch.config import Settings, load_settings
from finch.learning.trainer import learn_waiting
from finch.server.app import build_app
from finch.server.runner import running
from finch.teacher.corpus import Corpus, load_default
from finch.teacher.server import Teacher, build_teacher_app

DEMO_MODEL = "claude-haiku-4-5"


def question_stream(corpus: Corpus, n: int, seed: int = 0) -> list[str]:
    """Questions with a Zipf-like popularity, so some come back often, as in real traffic."""
    rng = random.Random(seed)
    pool = list(corpus.questions)
    rng.shuffle(pool)
    pool = pool[: max(10, min(len(pool), n // 3))]
    weights = [1 / (rank + 1) for rank in range(len(pool))]
    return rng.choices(pool, weights=weights, k=n)


@dataclass
class DemoResult:
    requests: int  # live ones
    imported: int  # past exchanges imported before them
    by_quarter: list[dict[str, float]]  # of the live requests
    local: int  # live requests answered locally
    first_local: int | None  # the live request first answered locally (1 is the first), None if none
    totals: dict[str, Any]  # the request log's, imported history included
    teacher_requests: int  # live requests the teacher answered
    home: Path
    learning: dict[str, Any]  # the learning loop's own view: phase, threshold, audited bad-local rate
    local_wrong: int  # local answers the judge finds disagreeing with the teacher's answer


def run_demo(
    n: int = 400,
    seed: int = 0,
    home: Path | None = None,
    progress: Callable[[Iterator[str]], Iterator[str]] | None = None,
    preset: str = "tiny",
    imported: int = 600,
    say: Callable[[str], None] = lambda line: None,
) -> DemoResult:
    """Import ``imported`` past exchanges, then replay ``n`` live questions drawn as they were. After
    each live answer the demo waits for the trainer to learn from it, as if requests came a few
    seconds apart, so the run shows what finch learns rather than how fast a two-core machine can
    train."""
    with tempfile.TemporaryDirectory(prefix="finch-demo-") as scratch:
        home = home or Path(scratch)
        corpus = load_default()
        teacher = Teacher(corpus)
        questions = question_stream(corpus, imported + n, seed)
        past, live = questions[:imported], questions[imported:]
        with running(build_teacher_app(teacher)) as upstream:
            overrides = {"home": str(home), "upstream_url": upstream.url, "api_key": "demo-key", "preset": preset}
            settings = load_settings(overrides, environ={})
            if past:
                say(f"importing {len(past)} past exchanges with the teacher, and learning from them")
                import_history(settings, upstream.url, past)
            teacher.reset()
            app = build_app(settings)
            with running(app) as proxy, httpx2.Client(base_url=proxy.url, timeout=60) as client:
                loop = app.state.proxy.learning
                routes, wrong = [], 0
                for question in progress(iter(live)) if progress else live:
                    body = {"model": DEMO_MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": question}]}
                    response = client.post("/v1/messages", json=body, headers=_HEADERS)
                    route = response.headers.get("x-finch-source", "error")
                    routes.append(route)
                    if route == "local":
                        answer = response.json()["content"][0]["text"]
                        wrong += not loop.judge.agrees(answer, corpus.answer(question))[0]
                    app.state.proxy.store.flush()
                    loop.drain()
                totals = app.state.proxy.store.totals()
                learning = loop.status()
        return DemoResult(
            requests=n,
            imported=len(past),
            by_quarter=_by_quarter(routes),
            local=routes.count("local"),
            first_local=next((k + 1 for k, route in enumerate(routes) if route == "local"), None),
            totals=totals,
            teacher_requests=teacher.requests,
            home=home,
            learning=learning,
            local_wrong=wrong,
        )


_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "demo-key"}


def import_history(settings: Settings, teacher_url: str, questions: list[str]) -> None:
    """Ask the teacher ``questions`` directly, a minute apart and ending now, log the exchanges as a
    gateway would (JSON Lines in the home), and import that file as ``finch import`` does."""
    path = settings.home / "history.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.time() - 60 * len(questions)
    with httpx2.Client(base_url=teacher_url, timeout=60, headers=_HEADERS) as client, path.open("w") as out:
        for k, question in enumerate(questions):
            body = {"model": DEMO_MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": question}]}
            response = client.post("/v1/messages", json=body).json()
            out.write(json.dumps({"request": body, "response": response, "timestamp": start + 60 * k}) + "\n")
    report = history.import_files(settings, [path])
    if report.errors:
        raise RuntimeError(f"the demo's own history did not import: {report.errors[0]}")
    learn_waiting(settings)


def _by_quarter(routes: list[str]) -> list[dict[str, float]]:
    quarters = []
    size = max(1, len(routes) // 4)
    for q in range(4):
        part = routes[q * size : (q + 1) * size if q < 3 else len(routes)]
        if part:
            local = sum(r == "local" for r in part) / len(part)
            quarters.append({"quarter": q + 1, "requests": len(part), "forward_rate": 1 - local, "local_share": local})
    return quarters
