"""The upstream client: one pooled async httpx2 client, streaming responses, safe retries.

A request is retried only before any byte has gone back to the client, which is always the case
here: ``send`` returns a response whose headers have arrived and whose body is still unread, and
retries happen inside ``send``. What the client finally sees is the last attempt, untouched.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx2

from finch.errors import InvalidRequest, UpstreamTimeout, UpstreamUnreachable

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504, 529})
_MAX_WAIT = 30.0  # a retry-after longer than this is the client's to honour, not finch's
_BACKOFF_BASE = 0.5
_BACKOFF_CAP = 8.0


@dataclass
class UpstreamResponse:
    response: httpx2.Response  # headers read, body not yet
    attempts: int


class UpstreamClient:
    def __init__(
        self,
        base_url: str,
        *,
        max_retries: int = 2,
        connect_timeout: float = 5.0,
        read_timeout: float = 600.0,
        transport: httpx2.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._client = httpx2.AsyncClient(
            timeout=httpx2.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout),
            limits=httpx2.Limits(max_connections=None, max_keepalive_connections=64, keepalive_expiry=30),
            transport=transport,
            follow_redirects=False,
            trust_env=False,
        )

    async def send(
        self, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamResponse:
        url = self.base_url + path + ("?" + query.decode("latin-1") if query else "")
        attempt = 0
        while True:
            attempt += 1
            try:
                request = self._client.build_request(method, url, headers=headers, content=body)
            except httpx2.InvalidURL as exc:  # a NUL or another control character in the path or query
                raise InvalidRequest(f"request path cannot be forwarded: {exc}") from exc
            try:
                response = await self._client.send(request, stream=True)
            except (
                httpx2.ConnectError,
                httpx2.ConnectTimeout,
                httpx2.RemoteProtocolError,
                httpx2.ReadError,
            ) as exc:
                # Nothing came back, so nothing reached the client: safe to try again.
                if attempt <= self.max_retries:
                    await self._sleep(self._backoff(attempt))
                    continue
                raise UpstreamUnreachable(
                    f"upstream unreachable after {attempt} attempt(s): {type(exc).__name__}"
                ) from exc
            except httpx2.TimeoutException as exc:
                raise UpstreamTimeout("upstream did not answer within the read timeout") from exc
            except httpx2.LocalProtocolError as exc:  # the client's headers cannot be sent on as HTTP/1.1
                raise InvalidRequest(f"request cannot be forwarded: {exc}") from exc
            if attempt <= self.max_retries and _should_retry(response):
                delay = _retry_after(response)
                if delay is None or delay <= _MAX_WAIT:
                    await response.aclose()
                    await self._sleep(self._backoff(attempt) if delay is None else delay)
                    continue
            return UpstreamResponse(response=response, attempts=attempt)

    def _backoff(self, attempt: int) -> float:
        delay = min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (attempt - 1))
        return delay * (1 - 0.25 * self._rng.random())  # jitter spreads retries from many clients

    async def aclose(self) -> None:
        await self._client.aclose()


def _should_retry(response: httpx2.Response) -> bool:
    verdict = response.headers.get("x-should-retry")
    if verdict == "true":
        return True
    if verdict == "false":
        return False
    return response.status_code in RETRYABLE_STATUS


def _retry_after(response: httpx2.Response) -> float | None:
    """Seconds the upstream asked us to wait, from retry-after-ms or retry-after (seconds or a date)."""
    ms = response.headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
