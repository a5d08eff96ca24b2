"""`finch demo`: a teacher and finch on free loopback ports, a stream of questions replayed through
finch, and a summary of what happened. Needs no API key and no network."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from finch.config import load_settings
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
    requests: int
    by_quarter: list[dict[str, float]]
    totals: dict[str, Any]
    teacher_requests: int
    home: Path
    learning: dict[str, Any]  # the learning loop's own view: phase, threshold, audited bad-local rate
    local_wrong: int  # local answers the judge finds disagreeing with the teacher's answer


def run_demo(
    n: int = 400,
    seed: int = 0,
    home: Path | None = None,
    progress: Callable[[Iterator[str]], Iterator[str]] | None = None,
    preset: str = "tiny",
) -> DemoResult:
    """Replay ``n`` questions. After each answer the demo waits for the trainer to learn from it, as
    if requests came a few seconds apart, so the run shows what finch learns rather than how fast
    a two-core machine can train."""
    with tempfile.TemporaryDirectory(prefix="finch-demo-") as scratch:
        home = home or Path(scratch)
        corpus = load_default()
        teacher = Teacher(corpus)
        with running(build_teacher_app(teacher)) as upstream:
            overrides = {"home": str(home), "upstream_url": upstream.url, "api_key": "demo-key", "preset": preset}
            app = build_app(load_settings(overrides, environ={}))
            with running(app) as proxy, httpx2.Client(base_url=proxy.url, timeout=60) as client:
                loop = app.state.proxy.learning
                routes, wrong = [], 0
                questions = question_stream(corpus, n, seed)
                for question in progress(iter(questions)) if progress else questions:
                    body = {"model": DEMO_MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": question}]}
                    response = client.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
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
            by_quarter=_by_quarter(routes),
            totals=totals,
            teacher_requests=teacher.requests,
            home=home,
            learning=learning,
            local_wrong=wrong,
        )


def _by_quarter(routes: list[str]) -> list[dict[str, float]]:
    quarters = []
    size = max(1, len(routes) // 4)
    for q in range(4):
        part = routes[q * size : (q + 1) * size if q < 3 else len(routes)]
        if part:
            local = sum(r == "local" for r in part) / len(part)
            quarters.append({"quarter": q + 1, "requests": len(part), "forward_rate": 1 - local, "local_share": local})
    return quarters
