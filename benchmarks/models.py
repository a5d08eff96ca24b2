"""Model benchmark: size, update cost, generation speed and peak memory per model and preset, and
how many sightings the generator needs before it reproduces an answer exactly.

Each (preset, model) is measured in a fresh process so its peak memory is its own.

Usage: python benchmarks/models.py [--presets tiny small] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from finch.bundled import chatterbot_pairs
from finch.conversation import Conversation
from finch.models.encoder import encoder_config
from finch.models.generator import generator_config
from finch.models.learners import Generator, Router, Validator
from finch.models.tokenizer import build_tokenizer, bundled_texts


def ask(text: str) -> Conversation:
    return Conversation("", (("user", text),))


def qa_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    distinct = {}
    for question, answer in chatterbot_pairs():
        if len(answer) > 30 and question not in distinct:
            distinct[question] = answer
    return random.Random(seed).sample(sorted(distinct.items()), n)


def measure(preset: str, kind: str, queue: mp.Queue) -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = build_tokenizer(bundled_texts())
    pairs = qa_pairs(64)
    if kind == "generator":
        learner = Generator(generator_config(preset, tokenizer.vocab_size), tokenizer)
        update = lambda i: learner.learn(ask(pairs[i % 64][0]), pairs[i % 64][1])  # noqa: E731
    elif kind == "router":
        learner = Router(encoder_config(preset, tokenizer.vocab_size), tokenizer)
        update = lambda i: learner.learn(ask(pairs[i % 64][0]), i % 2 == 0)  # noqa: E731
    else:
        learner = Validator(encoder_config(preset, tokenizer.vocab_size), tokenizer)
        update = lambda i: learner.learn(ask(pairs[i % 64][0]), pairs[(i * 7) % 64][1], i % 2 == 0)  # noqa: E731
    for i in range(20):  # warm up: replay fills, allocator settles
        update(i)
    times = []
    for i in range(20, 60):
        t0 = time.perf_counter()
        update(i)
        times.append(time.perf_counter() - t0)
    result = {
        "preset": preset,
        "model": kind,
        "parameters_m": sum(p.numel() for p in learner.module.parameters()) / 1e6,
        "update_ms_p50": statistics.median(times) * 1000,
    }
    if kind == "generator":
        prompt = tokenizer.render(ask(pairs[0][0]), 64)
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            produced = sum(1 for _ in learner.module.generate(prompt, 100, eos_id=-1))  # never stops early
            runs.append(time.perf_counter() - t0)
        result["answer_100_tokens_s"] = statistics.median(runs)
        result["tokens_per_s"] = produced / statistics.median(runs)
    else:
        batch = [ask(q) for q, _ in pairs[:1]]
        runs = []
        for _ in range(20):
            t0 = time.perf_counter()
            learner.p_local(batch) if kind == "router" else learner.p_good([(batch[0], pairs[1][1])])
            runs.append(time.perf_counter() - t0)
        result["score_ms_p50"] = statistics.median(runs) * 1000
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(result)


def sightings_to_reproduce(preset: str, queue: mp.Queue) -> None:
    """A stream cycling through 20 answers: how many times each is seen before greedy decoding
    reproduces it exactly."""
    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = build_tokenizer(bundled_texts())
    pairs = qa_pairs(20, seed=1)
    writer = Generator(generator_config(preset, tokenizer.vocab_size), tokenizer)
    first_exact: dict[int, int] = {}
    for sighting in range(1, 13):
        for question, answer in pairs:
            writer.learn(ask(question), answer)
        for i, (question, answer) in enumerate(pairs):
            if i not in first_exact and writer.answer(ask(question), 128) == answer:
                first_exact[i] = sighting
    counts = sorted(first_exact.values())
    queue.put({
        "preset": preset,
        "reproduced": f"{len(counts)}/20 within 12 sightings",
        "median_sightings": statistics.median(counts) if counts else None,
        "max_sightings": max(counts) if counts else None,
    })  # fmt: skip


def in_process(target, *args) -> dict:  # noqa: ANN001
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get(timeout=1800)
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = [
        in_process(measure, preset, kind) for preset in args.presets for kind in ("router", "validator", "generator")
    ]
    learning = [in_process(sightings_to_reproduce, preset) for preset in args.presets]
    report = {
        "models": rows,
        "generator_sightings": learning,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        + ("CUDA " + torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"),
        "command": "python " + " ".join(sys.argv),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
