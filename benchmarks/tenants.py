"""What one loaded namespace costs a replica: resident memory per tenant, against its snapshot's size.

One ensemble learns ``--rows`` Claude answers (each adds a memory row), and its serving snapshot is
copied into ``--namespaces`` namespace homes. A server's learning loop (the real one, no trainer)
then loads them one by one, as requests for each arrive; the process's resident memory is read
after each load. The embedding model is loaded first, once, as a server does at start.

Usage: python benchmarks/tenants.py [--preset tiny] [--rows 1000] [--namespaces 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from finch.config import Settings
from finch.learning import snapshot
from finch.learning.ensemble import Ensemble
from finch.learning.home import namespace_settings
from finch.learning.trainer import snapshot_path
from finch.metrics import Metrics
from finch.server.learning import LearningLoop
from finch.store.sqlite import SqliteLog


def rss_mb() -> float:
    """This process's resident memory now (Linux)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=8)
    parser.add_argument("--json")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="finch-tenants-"))
    try:
        settings = Settings(home=home, preset=args.preset, start_trainer=False)
        source = namespace_settings(settings, "source")
        ensemble = Ensemble(source)
        for i in range(args.rows):  # one memory row and one repeated answer each, all distinct
            question, answer = f"What is the status of order {i}?", f"Order {i} ships tomorrow."
            ensemble.memory.add(ensemble.question_vec(question), ensemble.judge.embed_answers([answer])[0], answer)
            ensemble.consistency.observe(question, answer, lambda a, b: a == b)
        snapshot.write(snapshot_path(source), snapshot.capture(ensemble, 1))
        size_mb = snapshot_path(source).stat().st_size / 2**20
        names = [f"team-{i}" for i in range(args.namespaces)]
        for name in names:
            target = namespace_settings(settings, name)
            snapshot_path(target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(snapshot_path(source), snapshot_path(target))
            shutil.copy(source.home / "tokenizer.json", target.home / "tokenizer.json")
        del ensemble
        log = SqliteLog(home / "finch.db")
        log.start()
        loop = LearningLoop(settings, log, Metrics())
        loop.judge.embed(["warm up"])
        before = rss_mb()
        after = []
        for name in names:
            assert loop.load_new_snapshot(loop.tenant(name))
            after.append(rss_mb())
        per_tenant = [b - a for a, b in zip([before, *after[:-1]], after, strict=True)]
        report = {
            "preset": args.preset,
            "memory_rows": args.rows,
            "snapshot_mb": round(size_mb, 2),
            "rss_before_mb": round(before, 1),
            "rss_after_each_mb": [round(x, 1) for x in after],
            "rss_per_tenant_mb_median": round(sorted(per_tenant)[len(per_tenant) // 2], 1),
            "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}",
        }
        print(json.dumps(report, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
        log.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
