"""Whose request it is: the namespace of its principal, resolved before anything is looked up.

- A token finch issued (``x-finch-token: fk_...``, ``finch keys create``) names its namespace.
  An unknown or revoked one is refused (401), whatever else the request carries.
- Otherwise the shared client token, when one is set, must be there (``client_token``).
- With isolation "none", everything else is the default namespace: one person's finch.
- With isolation "credential", the upstream key the client sends (``x-api-key``, or a bearer
  token) names its namespace: the one an administrator placed it in, else its own, by its HMAC under
  the server's secret (``finch.keys``). A request with no key of its own resolves to nobody: it is
  forwarded (with the server's key, if one is set) and never answered locally.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

from finch.config import Settings
from finch.errors import Unauthorized
from finch.keys import TOKEN_PREFIX, Keys
from finch.vocabulary import DEFAULT_NAMESPACE, UNRESOLVED


class Principals:
    def __init__(self, settings: Settings) -> None:
        self.isolation = settings.isolation_mode
        self.client_token = settings.client_token
        self.admin_token = settings.admin_token
        self.keys = Keys(settings.home)

    def namespace(self, request: Request) -> str:
        """The request's namespace; ``UNRESOLVED`` for nobody's. Raises Unauthorized for a wrong token."""
        token = request.headers.get("x-finch-token", "")
        if token.startswith(TOKEN_PREFIX):
            found = self.keys.namespace_of_token(token)
            if found is None:
                raise Unauthorized("unknown or revoked finch token in the x-finch-token header")
            return found
        if self.client_token is not None and not hmac.compare_digest(token.encode(), self.client_token.encode()):
            raise Unauthorized("missing or wrong x-finch-token header")
        if self.isolation == "none":
            return DEFAULT_NAMESPACE
        api_key = request.headers.get("x-api-key") or _bearer(request.headers.get("authorization", ""))
        return self.keys.namespace_of_upstream(api_key) if api_key else UNRESOLVED

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
