"""Whose request it is: the namespace of its principal, resolved before anything is looked up.

- A token finch issued (``x-finch-token: fk_...``, ``finch keys create``) names its namespace.
  An unknown or revoked one is refused (401), whatever else the request carries.
- Otherwise the shared client token, when one is set, must be there (``client_token``).
- With isolation "none", everything else is the default namespace: one person's finch.
- With isolation "credential", the upstream key the client sends (``x-api-key``, or a bearer
  token) names its namespace: the one an administrator placed it in, else its own, by its HMAC under
  the server's secret (``finch.keys``). A request with no key of its own resolves to nobody: it is
  forwarded (with the server's key, if one is set) and never answered locally.

The entry that resolved it may say more (``finch.keys``): its requests must name their end user,
or it is opted out of local answers or of learning. The end user a request names is kept as a
digest: ``x-finch-end-user``, or for a key marked as serving end users, the body's
``metadata.user_id`` (Messages) or ``user`` (Chat Completions).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.requests import Request

from finch.config import Settings
from finch.errors import Unauthorized
from finch.keys import TOKEN_PREFIX, Key, Keys
from finch.vocabulary import DEFAULT_NAMESPACE, UNRESOLVED


@dataclass(frozen=True)
class Principal:
    """Whose request it is, and what an administrator said of it."""

    namespace: str  # UNRESOLVED: nobody's
    end_users: bool = False  # its requests must name their end user to be answered locally
    opt_out: frozenset[str] = frozenset()  # "local", "learning"

    @classmethod
    def of(cls, key: Key) -> Principal:
        return cls(key.namespace, key.end_users, frozenset(key.opt_out))


class Principals:
    def __init__(self, settings: Settings) -> None:
        self.isolation = settings.isolation_mode
        self.client_token = settings.client_token
        self.admin_token = settings.admin_token
        self.keys = Keys(settings.home)

    def resolve(self, request: Request) -> Principal:
        """The request's principal; of namespace ``UNRESOLVED`` for nobody's. Raises Unauthorized for
        a wrong token."""
        token = request.headers.get("x-finch-token", "")
        if token.startswith(TOKEN_PREFIX):
            found = self.keys.token(token)
            if found is None:
                raise Unauthorized("unknown or revoked finch token in the x-finch-token header")
            return Principal.of(found)
        if self.client_token is not None and not hmac.compare_digest(token.encode(), self.client_token.encode()):
            raise Unauthorized("missing or wrong x-finch-token header")
        if self.isolation == "none":
            return Principal(DEFAULT_NAMESPACE)
        api_key = request.headers.get("x-api-key") or _bearer(request.headers.get("authorization", ""))
        return Principal.of(self.keys.upstream(api_key)) if api_key else Principal(UNRESOLVED)

    def namespace(self, request: Request) -> str:
        return self.resolve(request).namespace

    def end_user(self, namespace: str, named: str | None) -> str:
        """The digest an end user is kept as; "" when the request named none."""
        return self.keys.end_user_digest(namespace, named) if named else ""

    def scope(self, request: Request) -> str | None:
        """What a caller of finch's own pages (/finch/stats, the dashboard) may see: every namespace
        (None) for the admin token, or for anyone when everything is one namespace; else its own.
        Raises Unauthorized for a wrong token, or for nobody's request when principals are told apart."""
        token = request.headers.get("x-finch-token", "")
        if self.admin_token is not None and hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return None
        namespace = self.namespace(request)
        if self.isolation == "none" and not token.startswith(TOKEN_PREFIX):
            return None
        if namespace == UNRESOLVED:
            raise Unauthorized("send your API key or a finch token to see your namespace (the admin token sees all)")
        return namespace


def _bearer(value: str) -> str:
    scheme, _, credential = value.partition(" ")
    return credential.strip() if scheme.lower() == "bearer" else ""
