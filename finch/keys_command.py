"""`finch keys`: the client tokens finch issues, and the upstream keys an administrator places in a
namespace (``finch.keys``)."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import click

from finch.config import env_name, load_settings
from finch.errors import ConfigError
from finch.keys import Key, Keys

_HOME = click.option(
    "--home", "home", type=click.Path(path_type=Path), envvar=env_name("home"), show_envvar=True, default=None,
    help="finch's data directory (the team tier's shared one). Default ~/.finch.",
)  # fmt: skip


def _keys(home: Path | None) -> Keys:
    try:
        return Keys(load_settings({"home": home}).home)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


_END_USERS = click.option(
    "--end-users", is_flag=True,
    help="Its requests carry many end users' questions: one that does not name its end user "
    "(x-finch-end-user, or the body's metadata.user_id / user) is never answered locally, and an "
    "answer reaches another end user only once share_after_users of them were given it.",
)  # fmt: skip
_OPT_OUT = click.option(
    "--opt-out", type=click.Choice(["local", "learning"]), multiple=True,
    help="Forward every request of it (local), and keep nothing of them either (learning).",
)  # fmt: skip


@click.group()
def keys() -> None:
    """Who shares what finch learns: each namespace learns alone, and a token or key joins one."""


@keys.command()
@_HOME
@click.option("--namespace", required=True, help="The namespace the token's requests learn and are answered in.")
@_END_USERS
@_OPT_OUT
def create(home: Path | None, namespace: str, end_users: bool, opt_out: tuple[str, ...]) -> None:
    """Issue a client token for a namespace. It is printed once; clients send it as x-finch-token."""
    try:
        key, token = _keys(home).create_token(namespace, end_users, opt_out)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"token {key.id} for namespace {key.namespace} (shown this once; finch keeps only its hash):")
    click.echo(token)


@keys.command("add-upstream")
@_HOME
@click.option("--namespace", required=True, help="The namespace this upstream key's requests join.")
@_END_USERS
@_OPT_OUT
def add_upstream(home: Path | None, namespace: str, end_users: bool, opt_out: tuple[str, ...]) -> None:
    """Place an upstream API key (read from standard input, never echoed or stored) in a namespace,
    beside other keys of the same team or a key it replaces."""
    prompt = sys.stdin.isatty()
    api_key = (click.prompt("upstream API key", hide_input=True) if prompt else sys.stdin.readline()).strip()
    if not api_key:
        raise click.ClickException("no API key on standard input")
    try:
        key = _keys(home).add_upstream(namespace, api_key, end_users, opt_out)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"upstream key {key.id} placed in namespace {key.namespace}")


@keys.command("list")
@_HOME
def list_keys(home: Path | None) -> None:
    """Every token and placed key: id, namespace, kind, made, revoked. Never the keys themselves."""
    entries = _keys(home).entries()
    if not entries:
        click.echo("no keys: with isolation 'credential' each upstream key is its own namespace")
        return
    for key in entries:
        click.echo(_line(key))


@keys.command()
@_HOME
@click.argument("key_id")
def revoke(home: Path | None, key_id: str) -> None:
    """Revoke a token (its requests are refused from then on) or a placed key (it learns alone again)."""
    try:
        key = _keys(home).revoke(key_id)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"revoked: {_line(key)}")


def _line(key: Key) -> str:
    made = datetime.datetime.fromtimestamp(key.created, datetime.UTC).strftime("%Y-%m-%d %H:%M")
    revoked = (
        f"  revoked {datetime.datetime.fromtimestamp(key.revoked, datetime.UTC):%Y-%m-%d %H:%M}" if key.revoked else ""
    )
    opted = f"  opted out of {'+'.join(key.opt_out)}" if key.opt_out else ""
    marks = ("  end users" if key.end_users else "") + opted
    return f"{key.id}  {key.namespace:<24} {key.kind:<9} made {made}{revoked}{marks}"
