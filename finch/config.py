"""Settings: defaults < FINCH_HOME/config.toml < environment < CLI flags, in one frozen dataclass.

Every field is a key of the same name in config.toml and an environment variable
(``FINCH_<NAME>``, upper case); the API key also reads ``ANTHROPIC_API_KEY``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finch.errors import ConfigError

DEFAULT_HOME = Path("~/.finch")
# The environment variable in which a server hands the trainer it starts its settings, whole.
TRAINER_SETTINGS_ENV = "FINCH_TRAINER_SETTINGS"


@dataclass(frozen=True)
class Settings:
    home: Path = DEFAULT_HOME
    host: str = "127.0.0.1"  # loopback: a proxy holding API keys should not face the network by default
    port: int = 8787
    upstream_url: str = "https://api.anthropic.com"
    # The team tier: the log in this PostgreSQL database (postgresql://user@host/db), shared by every
    # replica and trainer that names it; unset: SQLite in the home. Not logged (it may hold a password;
    # libpq's PGPASSWORD or ~/.pgpass keep it out of the URL).
    database_url: str | None = field(default=None, repr=False)
    # Whose learning a request joins (finch.server.principals). "credential": its principal's
    # namespace (a token from `finch keys create`, else the upstream key it sends); a request with
    # neither is forwarded and never answered locally. "none": everything in one namespace, for one
    # person's finch. "auto": "credential" in the team tier (database_url set), else "none".
    isolation: str = "auto"
    # Used only when a client sends no key of its own. Never logged, stored or shown.
    api_key: str | None = field(default=None, repr=False)
    # When set, every client must send it in the x-finch-token header.
    client_token: str | None = field(default=None, repr=False)
    # When set, a caller sending it as x-finch-token sees every namespace on /finch/stats and the
    # dashboard (others see their own).
    admin_token: str | None = field(default=None, repr=False)
    # Inside a namespace whose requests name their end users (x-finch-end-user, metadata.user_id):
    # an answer Claude gave one end user is served to another only after Claude gave it, in words
    # the judge finds equal, to this many distinct end users (finch.policy.privacy).
    share_after_users: int = 3
    max_body_bytes: int = 32 * 1024 * 1024  # the Messages API's own request limit
    max_retries: int = 2  # retried only before the first byte reaches the client
    connect_timeout: float = 5.0  # a dead upstream should fail fast
    read_timeout: float = 600.0  # long generations stream for minutes
    # -- the connection edge: what one slow or hostile client may hold (finch/server/edge.py) -----
    header_timeout: float = 10.0  # seconds for a request's headers to arrive, else 408
    body_timeout: float = 60.0  # seconds for the body to arrive once the headers are in, else 408
    keep_alive_timeout: float = 5.0  # an idle kept-alive connection closes after this
    max_connections: int = 512  # open connections past this are answered 503 and closed
    # Per-model prices in dollars per million tokens, merged over the built-in table:
    # {"claude-sonnet-4": {"input": 3.0, "output": 15.0}}
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    # -- learning -----------------------------------------------------------------------------
    learning: bool = True  # false: a plain recording proxy, nothing answered locally
    preset: str = "small"  # model sizes: tiny (tests), small (CPU), base (GPU)
    max_bad_local: float = 0.02  # the bound on the rate of bad local answers
    judge_threshold: float = 0.15  # divergence under which a local answer agrees with Claude's
    cold_start: int = 50  # examples learned before anything is answered locally
    conservative_until: int = 200  # until then, only operating points from conservative_threshold up
    conservative_threshold: float = 0.95  # the loosest P(good) threshold served in the conservative phase
    # Strategic sampling: "below:rate" pairs; a would-be-local request is forwarded anyway with that
    # probability while fewer than `below` examples are learned ("*" for the rest).
    sampling: str = "100:0.5,500:0.2,2000:0.1,*:0.05"
    # Audits at stake (finch.policy.watch): the n-th answer served since the first certificate or the
    # last bad audit is audited with chance at least audit_stake / (n + audit_stake); 0: sampling alone.
    audit_stake: float = 50.0
    local_budget_s: float = 2.0  # a local attempt slower than this is abandoned (forwarded)
    max_local_tokens: int = 256  # the longest local answer finch writes or serves, in its tokens
    # Retrieval: also offer the answer the nearest past questions vote for, and serve a written answer
    # in the words of the stored Claude answer it matches (measured better: BENCHMARKS.md).
    retrieval: bool = True
    # A replica keeps the namespaces it serves loaded within this many MB of snapshots (a tiny-preset
    # namespace's is about 13 MB), unloading the least recently asked; one asked again loads again.
    max_loaded_mb: int = 4096
    save_every: int = 50  # learning events between checkpoints
    # The trainer's process runs at this CPU niceness (0-19): above 0 requests take the CPU first.
    trainer_nice: int = 19
    # false: `finch serve` starts no trainer, and learning is left to a `finch train` run on its own
    # (under a process manager, in a cgroup of its own); serving goes on from its snapshots.
    start_trainer: bool = True
    seed: int = 0

    @property
    def isolation_mode(self) -> str:
        """``isolation`` with "auto" decided: "credential" or "none"."""
        if self.isolation == "auto":
            return "credential" if self.database_url else "none"
        return self.isolation

    @property
    def db_path(self) -> Path:
        return self.home / "finch.db"

    def to_json(self) -> str:
        """Every setting but the secrets, as JSON: how the server hands its settings to the trainer's
        process whole (``from_json``)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in SECRET_FIELDS}
        return json.dumps({**values, "home": str(self.home)})

    @classmethod
    def from_json(cls, text: str) -> Settings:
        return _build(json.loads(text))


_ENV_ALIASES = {"api_key": ("FINCH_API_KEY", "ANTHROPIC_API_KEY")}
SECRET_FIELDS = {"api_key", "client_token", "admin_token"}


def env_name(name: str) -> str:
    return f"FINCH_{name.upper()}"


def load_settings(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve settings from every layer. ``overrides`` holds CLI flags; None values are ignored."""
    environ = os.environ if environ is None else environ
    cli = {k: v for k, v in (overrides or {}).items() if v is not None}
    home_raw = cli.get("home") or environ.get(env_name("home")) or str(DEFAULT_HOME)
    home = Path(home_raw).expanduser()

    values: dict[str, Any] = {}
    values.update(_read_toml(home / "config.toml"))
    values.update(_read_env(environ))
    values.update(cli)
    values["home"] = home
    return _build(values)


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def _read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        if f.name in ("home", "prices"):
            continue
        for name in (env_name(f.name), *_ENV_ALIASES.get(f.name, ())):
            if environ.get(name):
                found[f.name] = environ[name]
                break
    return found


def _build(values: dict[str, Any]) -> Settings:
    known = {f.name: f for f in dataclasses.fields(Settings)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        default = known[name].default
        try:
            if isinstance(default, bool):
                kwargs[name] = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                kwargs[name] = int(value)
            elif isinstance(default, float):
                kwargs[name] = float(value)
            elif name == "prices":
                kwargs[name] = _parse_prices(value)
            elif name == "home":
                kwargs[name] = Path(value)
            else:
                kwargs[name] = None if value is None else str(value)
        except (TypeError, ValueError) as exc:
            shown = "<hidden>" if name in SECRET_FIELDS else repr(value)
            raise ConfigError(f"setting {name!r} has an invalid value {shown}") from exc
    settings = Settings(**kwargs)
    if settings.port < 0 or settings.port > 65535:
        raise ConfigError(f"port {settings.port} is out of range")
    if settings.preset not in ("tiny", "small", "base"):
        raise ConfigError(f"preset must be tiny, small or base, got {settings.preset!r}")
    parse_sampling(settings.sampling)
    positive = ("header_timeout", "body_timeout", "keep_alive_timeout", "max_connections", "max_local_tokens")
    for name in (*positive, "share_after_users", "max_loaded_mb"):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{name} must be positive, got {getattr(settings, name)}")
    if not 0 <= settings.trainer_nice <= 19:
        raise ConfigError(f"trainer_nice must be between 0 and 19, got {settings.trainer_nice}")
    if not 0 < settings.conservative_threshold <= 1:
        raise ConfigError(f"conservative_threshold must be in (0, 1], got {settings.conservative_threshold}")
    if settings.audit_stake < 0:
        raise ConfigError(f"audit_stake must be 0 or more, got {settings.audit_stake}")
    if not 0 < settings.max_bad_local < 1:
        raise ConfigError(f"max_bad_local must be between 0 and 1, got {settings.max_bad_local}")
    if settings.isolation not in ("auto", "credential", "none"):
        raise ConfigError(f"isolation must be auto, credential or none, got {settings.isolation!r}")
    if settings.database_url and not settings.database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("database_url must start with postgresql://")
    if not settings.upstream_url.startswith(("http://", "https://")):
        raise ConfigError(f"upstream_url must start with http:// or https://, got {settings.upstream_url!r}")
    return settings


def _parse_prices(value: Any) -> dict[str, dict[str, float]]:
    if not isinstance(value, Mapping):
        raise ValueError("prices must be a table of model -> {input, output}")
    return {str(model): {k: float(v) for k, v in dict(p).items()} for model, p in value.items()}


def parse_sampling(text: str) -> tuple[tuple[int, float], ...]:
    """ "100:0.5,500:0.2,*:0.05" -> ((100, 0.5), (500, 0.2), (2**62, 0.05))."""
    table = []
    try:
        for item in text.split(","):
            below, rate = item.strip().split(":")
            table.append((2**62 if below.strip() == "*" else int(below), float(rate)))
    except ValueError as exc:
        raise ConfigError(f"sampling must look like '100:0.5,500:0.2,*:0.05', got {text!r}") from exc
    if not table or any(not 0 <= r <= 1 for _, r in table):
        raise ConfigError(f"sampling rates must be between 0 and 1: {text!r}")
    return tuple(sorted(table))
