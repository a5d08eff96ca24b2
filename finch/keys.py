"""Who may share what finch learns: the keys an administrator issues or places in namespaces.

    FINCH_HOME/keys.json     one entry per key: its id, namespace, kind, digest, when made and revoked
    FINCH_HOME/secret.key    the server secret under which upstream keys are identified (HMAC)

Two kinds of entry:

- ``token``: a client token finch issued (``finch keys create --namespace NAME``). The client sends
  it as ``x-finch-token``; finch keeps only its SHA-256 (a token is 32 random bytes: a plain hash of
  it cannot be guessed back).
- ``upstream``: an upstream API key placed in a namespace (``finch keys add-upstream``), so that
  two keys, or a key and its rotation, share what they teach. Kept as its HMAC under the secret,
  the same digest that names a key's own namespace when nobody placed it.

An entry may also say how its requests are treated: ``end_users`` (a product's backend that sends
many end users' questions: a request that does not name its end user is never answered locally,
``finch.policy.privacy``) and ``opt_out`` ("local", or "local" and "learning": every request of the
key is forwarded, and with "learning" nothing of it is kept).

No key is ever stored or shown whole, except a new token, printed once when it is made. In the team
tier every replica reads the same home, so the file and the secret are shared; a replica rereads
the file when it changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from finch.errors import ConfigError

TOKEN_PREFIX = "fk_"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class Key:
    id: str
    namespace: str
    kind: str  # token | upstream
    digest: str
    created: float
    revoked: float | None = None
    end_users: bool = False  # its requests must name their end user to be answered locally
    opt_out: tuple[str, ...] = ()  # "local", "learning": what an administrator opted it out of

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Key:
        return cls(**{**entry, "opt_out": tuple(entry.get("opt_out", ()))})


def check_namespace(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"a namespace is 1-63 of a-z, 0-9, '_', '.', '-' (starting with a letter or digit): {name!r}")
    return name


def check_opt_out(words: tuple[str, ...]) -> tuple[str, ...]:
    """Opting out of learning keeps nothing of a request, so it opts out of local answers too."""
    unknown = set(words) - {"local", "learning"}
    if unknown:
        raise ConfigError(f"opt-out is 'local' or 'learning', not {sorted(unknown)}")
    return ("local", "learning") if "learning" in words else ("local",) if words else ()


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Keys:
    def __init__(self, home: Path) -> None:
        self.path = home / "keys.json"
        self.secret_path = home / "secret.key"
        self._secret: bytes | None = None
        self._loaded: tuple[int, int] | None = None
        self._entries: list[Key] = []

    # -- reading -------------------------------------------------------------------------------------

    def entries(self) -> list[Key]:
        """Every key, revoked ones too; reread when the file has changed."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._entries, self._loaded = [], None
            return []
        if (st.st_mtime_ns, st.st_size) != self._loaded:
            self._entries = [Key.from_json(entry) for entry in json.loads(self.path.read_text())]
            self._loaded = (st.st_mtime_ns, st.st_size)
        return self._entries

    def token(self, token: str) -> Key | None:
        """The entry of a live token finch issued; None for any other string."""
        digest = token_digest(token)
        found = next((k for k in self.entries() if k.kind == "token" and hmac.compare_digest(k.digest, digest)), None)
        return found if found is not None and found.revoked is None else None

    def namespace_of_token(self, token: str) -> str | None:
        found = self.token(token)
        return found.namespace if found is not None else None

    def upstream(self, api_key: str) -> Key:
        """The live entry that placed this upstream key in a namespace, else an unsaved one naming the
        key's own namespace."""
        digest = self.upstream_digest(api_key)
        placed = next(
            (k for k in self.entries() if k.kind == "upstream" and k.digest == digest and not k.revoked), None
        )
        return placed or Key("", "key-" + digest[:20], "upstream", digest, 0.0)

    def namespace_of_upstream(self, api_key: str) -> str:
        """The namespace an administrator placed this upstream key in, else the key's own."""
        return self.upstream(api_key).namespace

    def upstream_digest(self, api_key: str) -> str:
        return hmac.new(self.secret(), api_key.encode(), hashlib.sha256).hexdigest()

    def end_user_digest(self, namespace: str, end_user: str) -> str:
        """How an end user is kept: their id's HMAC under the secret, within their namespace."""
        return hmac.new(self.secret(), f"{namespace}\0{end_user}".encode(), hashlib.sha256).hexdigest()[:32]

    def secret(self) -> bytes:
        """The server secret, made once (by whichever process asks first) and then only read."""
        if self._secret is None:
            self.secret_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.secret_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_hex(32))
                    f.flush()
                    os.fsync(f.fileno())
            except FileExistsError:
                pass
            for _ in range(50):  # another process may be writing it this moment
                text = self.secret_path.read_text().strip()
                if len(text) == 64:
                    break
                time.sleep(0.01)
            self._secret = bytes.fromhex(text)
        return self._secret

    # -- what an administrator does ------------------------------------------------------------------

    def create_token(self, namespace: str, end_users: bool = False, opt_out: tuple[str, ...] = ()) -> tuple[Key, str]:
        """A new client token for ``namespace``: its entry, and the token itself (shown once)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        key = self._new(namespace, "token", token_digest(token), end_users, opt_out)
        with self._changing() as entries:
            entries.append(key)
        return key, token

    def add_upstream(self, namespace: str, api_key: str, end_users: bool = False, opt_out: tuple[str, ...] = ()) -> Key:
        key = self._new(namespace, "upstream", self.upstream_digest(api_key), end_users, opt_out)
        with self._changing() as entries:
            entries.append(key)
        return key

    @staticmethod
    def _new(namespace: str, kind: str, digest: str, end_users: bool, opt_out: tuple[str, ...]) -> Key:
        namespace, opt_out = check_namespace(namespace), check_opt_out(opt_out)
        return Key(secrets.token_hex(4), namespace, kind, digest, time.time(), None, end_users, opt_out)

    def revoke(self, key_id: str) -> Key:
        with self._changing() as entries:
            at = next((i for i, k in enumerate(entries) if k.id == key_id), None)
            if at is None:
                raise ConfigError(f"no key with id {key_id!r} (finch keys list shows them)")
            entries[at] = replace(entries[at], revoked=entries[at].revoked or time.time())
            return entries[at]

    @contextlib.contextmanager
    def _changing(self) -> Iterator[list[Key]]:
        """The entries, read under a lock that other writers of the file wait on, and written back
        whole when the block ends without an error: two administrators' changes never lose one."""
        from finch.models.tokenizer import atomic_write_text

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._loaded = None  # read what the last writer left, not what this process saw
            entries = list(self.entries())
            yield entries
            atomic_write_text(self.path, json.dumps([asdict(k) for k in entries], indent=1))
            self._loaded = None
