"""Relaying an upstream response to the client as it arrives, byte for byte.

``RelayResponse`` is an ASGI response: it sends the upstream's status and headers, then every raw
body chunk the moment it is read (SSE events are never held back), keeps a copy for the request
log when the path is one finch learns from, and hands the record to the store once done. If the
client goes away, the upstream stream is closed; if the upstream goes away midway through an SSE
stream, the client gets a proper ``error`` event to end it.
"""

from __future__ import annotations

import asyncio
import time
from types import ModuleType

import anyio
import httpx2
from starlette.types import Receive, Scope, Send

from finch.dialects import anthropic
from finch.store.log import Log
from finch.store.writer import RequestRecord
from finch.upstream.client import UpstreamResponse

# Not forwarded in either direction: they describe one hop, not the message.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_KEEP_MAX = 8 * 1024 * 1024  # beyond this a response is relayed but not kept for the log


class RelayResponse:
    def __init__(
        self,
        upstream: UpstreamResponse,
        record: RequestRecord,
        store: Log,
        started: float,
        extra_headers: list[tuple[bytes, bytes]],
        dialect: ModuleType | None,
    ) -> None:
        """``dialect``: the request's (``finch.dialects``), when finch learns from it; None to pass through."""
        self.upstream = upstream
        self.record = record
        self.store = store
        self.started = started
        self.dialect = dialect
        response = upstream.response
        self.headers = [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP] + extra_headers
        content_type = response.headers.get("content-type", "")
        record.is_sse = content_type.startswith("text/event-stream")
        record.content_encoding = response.headers.get("content-encoding")
        record.upstream_request_id = response.headers.get("request-id")
        record.status = response.status_code
        record.attempts = upstream.attempts
        self._done = False
        self._client_gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Relay in this task; a watcher cancels it if the client hangs up, which closes the
        # upstream stream so an abandoned generation stops costing tokens.
        relay_task = asyncio.current_task()
        assert relay_task is not None
        watcher = asyncio.create_task(self._watch_disconnect(receive, relay_task))
        try:
            await self._relay(send)
        except asyncio.CancelledError:
            if not self._client_gone:
                raise
            relay_task.uncancel()
        finally:
            watcher.cancel()

    async def _watch_disconnect(self, receive: Receive, relay_task: asyncio.Task) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self._done:
            self._client_gone = True
            self.record.error_type = self.record.error_type or "client_disconnected"
            relay_task.cancel()

    async def _relay(self, send: Send) -> None:
        response = self.upstream.response
        record = self.record
        kept = 0
        try:
            await send({"type": "http.response.start", "status": response.status_code, "headers": self.headers})
            async for chunk in response.aiter_raw():
                if record.ttfb_ms is None:
                    record.ttfb_ms = (time.perf_counter() - self.started) * 1000
                if self.dialect is not None and kept < _KEEP_MAX:
                    record.chunks.append(chunk)
                    kept += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            self._done = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (httpx2.TransportError, httpx2.StreamError) as exc:
            record.error_type = "upstream_disconnected"
            if record.is_sse:
                # The status line is long gone; an error in the stream is how the API reports this.
                message = f"upstream connection lost mid-stream ({type(exc).__name__})"
                self._done = True
                ending = (self.dialect or anthropic).stream_error("api_error", message)
                await send({"type": "http.response.body", "body": ending, "more_body": False})
            # A JSON body cut short is left unfinished: the server closes the connection and the
            # client sees the failure, as it would have talking to the upstream directly.
        finally:
            record.latency_ms = (time.perf_counter() - self.started) * 1000
            self.store.submit(record)  # before the upstream connection's clean-up: the client is done
            with anyio.CancelScope(shield=True):
                await response.aclose()
