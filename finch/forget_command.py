"""`finch forget`: delete stored conversations, or forget one question or everything a namespace
taught, and what was learned of it (``finch.store.log.Log.forget_question``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from finch.config import env_name, load_settings
from finch.errors import ConfigError
from finch.vocabulary import DEFAULT_NAMESPACE


@click.command()
@click.option(
    "--home", "home", type=click.Path(path_type=Path), envvar=env_name("home"), show_envvar=True, default=None,
    help="finch's data directory. Default ~/.finch.",
)  # fmt: skip
@click.option("--before", type=click.DateTime(formats=["%Y-%m-%d"]), help="Only conversations older than this day.")
@click.option("--namespace", help="Only this namespace's (with --question or --everything: required in the team tier).")
@click.option("--question", help="Forget this one question (a one-turn conversation) and what was learned of it.")
@click.option("--everything", is_flag=True, help="Forget everything the namespace taught: it starts cold again.")
@click.confirmation_option(prompt="Forget?")
def forget(home: Path | None, before: Any, namespace: str | None, question: str | None, everything: bool) -> None:
    """Delete stored conversations and answers (all, or older than --before, or one namespace's).
    Totals stay.

    With --question or --everything, also what was learned: the question's stored answers leave
    the memory and it is never answered locally again, or the namespace's models, memory and bound
    start again from nothing. A running finch stops serving it at once; otherwise it is done now."""
    from finch.conversation import Conversation
    from finch.learning.trainer import learn_waiting
    from finch.store.log import open_log

    try:
        settings = load_settings({"home": home})
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if question is None and not everything:
        log = open_log(settings, writer=False)
        deleted = log.forget(before.timestamp() if before is not None else None, namespace)
        click.echo(f"deleted {deleted} stored conversations")
        return
    if question is not None and everything:
        raise click.UsageError("--question or --everything, not both")
    if namespace is None and settings.isolation_mode != "none":
        raise click.UsageError("name the namespace to forget in (--namespace)")
    namespace = namespace or DEFAULT_NAMESPACE
    log = open_log(settings)
    log.start()
    try:
        conversation = Conversation("", (("user", question),)) if question is not None else None
        deleted = log.forget_question(namespace, conversation)
        log.flush()
    finally:
        log.close()
    learn_waiting(settings)  # no trainer running: forget what was learned now (else the running one does)
    what = f"the question, and {deleted} stored conversations of it" if question is not None else "everything"
    click.echo(f"forgot {what} in namespace {namespace}")
