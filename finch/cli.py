"""The `finch` command: thin verbs that parse options, call into the package and print."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from finch.config import TRAINER_SETTINGS_ENV, Settings, env_name, load_settings
from finch.errors import ConfigError
from finch.forget_command import forget
from finch.keys_command import keys
from finch.report import describe_demo, describe_learning, format_table, stats_report
from finch.teacher.command import teacher


def _option(name: str, **kwargs: Any) -> Any:
    """A --name option that also reads FINCH_NAME; None when unset, so config.toml can fill it."""
    flag = "--" + name.replace("_", "-")
    return click.option(flag, name, envvar=env_name(name), show_envvar=True, default=None, **kwargs)


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
@click.version_option(package_name="finch")
def main() -> None:
    """finch: a local proxy in front of the Claude API that learns to answer part of its traffic.

    Point any Anthropic client at it: ANTHROPIC_BASE_URL=http://127.0.0.1:8787
    """


@main.command()
@_option("host", help="Address to bind. Default 127.0.0.1 (loopback only).")
@_option("port", type=int, help="Port to listen on. Default 8787.")
@_option("upstream_url", help="Where forwarded requests go. Default https://api.anthropic.com.")
@_option("home", type=click.Path(path_type=Path), help="finch's data directory. Default ~/.finch.")
@click.option(
    "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
)
def serve(host: str | None, port: int | None, upstream_url: str | None, home: Path | None, log_level: str) -> None:
    """Run the proxy."""
    from finch.server.app import build_app
    from finch.server.runner import serve_forever

    settings = _settings(host=host, port=port, upstream_url=upstream_url, home=home)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_level != "debug":  # finch logs one line per request itself; the HTTP client's would double it
        logging.getLogger("httpx2").setLevel(logging.WARNING)
    if not _is_loopback(settings.host):
        click.secho(
            f"WARNING: finch is listening on {settings.host}, reachable from other machines. Anyone who can reach"
            " it can spend your API key. Set FINCH_CLIENT_TOKEN to require a token.",
            fg="red",
            bold=True,
            err=True,
        )
    click.echo(f"finch on http://{settings.host}:{settings.port} -> {settings.upstream_url} (home {settings.home})")
    click.echo(f"  export ANTHROPIC_BASE_URL=http://{settings.host}:{settings.port}")
    serve_forever(build_app(settings), settings.host, settings.port, log_level, settings)


@main.command()
@_option("home", type=click.Path(path_type=Path), help="finch's data directory. Default ~/.finch.")
@click.option(
    "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
)
@click.option("--parent", type=int, hidden=True, help="Stop when this process (the server) is gone.")
def train(home: Path | None, log_level: str, parent: int | None) -> None:
    """Run the trainer alone: learn from the request log and publish what the server serves from.

    `finch serve` starts and supervises it by itself; run it alone to learn from a log with no
    server running. It runs at the CPU niceness trainer_nice and stops on SIGTERM or Ctrl-C,
    saving what it learned."""
    from finch.learning.cores import lower_priority

    handed = os.environ.get(TRAINER_SETTINGS_ENV) if parent is not None else None
    settings = Settings.from_json(handed) if handed else _settings(home=home)  # a server's, whole
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lower_priority(settings.trainer_nice)  # before torch starts its threads, which inherit it
    from finch.learning.trainer import run_until_signalled

    if parent is None:
        click.echo(f"finch trainer learning from {settings.db_path} (nice {os.nice(0)})")
    run_until_signalled(settings, parent)


@main.command()
@_option("home", type=click.Path(path_type=Path), help="finch's data directory. Default ~/.finch.")
@click.option("--days", default=14, show_default=True, help="How many days to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
def stats(home: Path | None, days: int, as_json: bool) -> None:
    """Show requests, routes, tokens and dollars, in total and by day."""
    report = stats_report(_settings(home=home), days)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    columns = [
        "day",
        "requests",
        "forwarded",
        "local",
        "errors",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "saved_usd",
    ]
    rows = [*report["by_day"], {"day": "total", **report["totals"]}]
    click.echo(format_table(rows, columns))
    if report["by_reason"]:
        click.echo()
        click.echo(format_table(report["by_reason"], ["route", "reason", "requests", "why"]))
    if len(report["namespaces"]) > 1:  # the team tier: how soon each namespace began to save
        click.echo()
        click.echo(format_table(report["namespaces"], ["namespace", "requests", "until_first_local"]))
    click.echo()
    click.echo(describe_learning(report["learning"]))


@main.command()
@_option("home", type=click.Path(path_type=Path), help="finch's data directory. Default ~/.finch.")
def prices(home: Path | None) -> None:
    """Print the price table in use: the built-in rows and any from config.toml."""
    from finch.pricing import PriceTable

    table = PriceTable(_settings(home=home).prices)
    rows = [
        {
            "model": model,
            "input": row["input"],
            "output": row["output"],
            "cache_write": row.get("cache_write", 1.25 * row["input"]),
            "cache_read": row.get("cache_read", 0.1 * row["input"]),
        }
        for model, row in table.rows.items()
    ]
    click.echo("dollars per million tokens; a newer model of a family takes its newest row")
    click.echo(format_table(rows, ["model", "input", "output", "cache_write", "cache_read"]))


@main.command()
@_option("home", type=click.Path(path_type=Path), help="finch's data directory. Default ~/.finch.")
@click.option("--all", "everything", is_flag=True, help="Also delete the request log.")
@click.confirmation_option(prompt="Delete finch's learned models?")
def reset(home: Path | None, everything: bool) -> None:
    """Wipe the learned models and the tokenizer (and with --all, the request log). Stop finch first."""
    from finch.learning.home import wipe

    settings = _settings(home=home)
    wipe(settings.home)
    if everything:
        for suffix in ("", "-wal", "-shm"):
            Path(str(settings.db_path) + suffix).unlink(missing_ok=True)
    click.echo("models reset" + (" and request log deleted" if everything else ""))


@main.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_option("home", type=click.Path(path_type=Path), help="finch's data directory. Default ~/.finch.")
@click.option("--since", help="Only exchanges at or after this time (ISO 8601, e.g. 2026-11-01).")
@click.option("--no-learn", is_flag=True, help="Only write the log; the trainer learns it when finch next runs.")
@click.option("--namespace", default="default", show_default=True, help="The namespace the history teaches.")
def import_history(
    files: tuple[Path, ...], home: Path | None, since: str | None, no_learn: bool, namespace: str
) -> None:
    """Learn from past requests and Claude's answers (JSON Lines: request, response, timestamp).

    Each exchange is logged as a forwarded request and learned as live traffic is. A line that
    cannot be read is reported with its line number; the rest are imported. Importing a file twice
    adds nothing."""
    from finch import history
    from finch.keys import check_namespace
    from finch.learning.trainer import learn_waiting

    settings = _settings(home=home)
    try:
        cutoff = history.parse_time(since) if since else None
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO 8601 time: {since!r}", param_hint="--since") from exc
    report = history.import_files(settings, files, cutoff, check_namespace(namespace))
    for error in report.errors:
        click.echo(f"error: {error}", err=True)
    click.echo(str(report))
    if report.imported and not no_learn:
        with click.progressbar(length=report.imported, label="learning", file=sys.stderr) as bar:
            learned = learn_waiting(settings, lambda left: bar.update(max(0, report.imported - left) - bar.pos))
        if not learned:
            click.echo("a running finch is learning in this home: its trainer learns them")
    if report.errors:
        sys.exit(1)


@main.command()
@click.option(
    "--url", default="http://127.0.0.1:8787", show_default=True, envvar="ANTHROPIC_BASE_URL", show_envvar=True
)
@click.option("--model", default="claude-haiku-4-5", show_default=True, envvar="FINCH_CHAT_MODEL", show_envvar=True)
@click.option("--max-tokens", default=1024, show_default=True)
def chat(url: str, model: str, max_tokens: int) -> None:
    """Talk through finch; each answer shows where it came from and how long it took."""
    from finch.chat import ChatSession

    ChatSession(url, model, max_tokens).loop(input_fn=lambda: click.prompt("you", prompt_suffix="> "), echo=click.echo)


@main.command()
@click.option("--requests", "n", default=400, show_default=True, help="How many live questions to replay.")
@click.option("--history", "imported", default=600, show_default=True, help="Past exchanges imported first.")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep finch's data here (default: a temp dir).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
def demo(n: int, imported: int, seed: int, home: Path | None, as_json: bool) -> None:
    """Start a teacher and finch on free ports, import a history of past exchanges, replay live
    questions through finch, summarise."""
    from finch.demo import run_demo

    started = time.perf_counter()
    with click.progressbar(length=n, label="replaying", file=sys.stderr) as bar:

        def progress(items):  # noqa: ANN001, ANN202
            for item in items:
                yield item
                bar.update(1)

        say = (lambda line: click.echo("\n" + line, err=True)) if not as_json else (lambda line: None)
        result = run_demo(n=n, seed=seed, home=home, progress=progress, imported=imported, say=say)
    elapsed = time.perf_counter() - started
    if as_json:
        report = {
            "imported": result.imported,
            "first_local": result.first_local,
            "by_quarter": result.by_quarter,
            "totals": result.totals,
            "learning": result.learning,
            "local_wrong": result.local_wrong,
            "seconds": elapsed,
        }
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(describe_demo(result, elapsed))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


main.add_command(teacher)
main.add_command(keys)
main.add_command(forget)
