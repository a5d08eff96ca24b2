"""The connection edge: bounds on what a slow, broken or hostile client can hold open.

uvicorn's HTTP protocol times out only idle keep-alive connections. A client that connects and never
finishes its headers, or announces a body and never sends it, would keep its socket (a file
descriptor) forever, and enough of them take finch down for everyone. ``guarded_protocol`` adds:

- headers must arrive within ``header_timeout`` seconds of the connection, or of the request's
  first byte on a kept-alive connection;
- the body must arrive within ``body_timeout`` seconds of the headers;
- past ``max_connections`` open connections, a new one is answered 503 and closed at once.

A client that misses a deadline gets a 408 and its connection is closed. Every error the edge writes
itself (these, and the parser's 400 for a malformed request) is in the Messages API's error shape.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from finch.config import Settings
from finch.errors import error_body

log = logging.getLogger(__name__)


class _QuietClientMistakes(logging.Filter):
    """uvicorn warns once per malformed request or unsupported upgrade; a flood of them would flood the
    log too. The client gets its answer (a 400, or plain HTTP) either way."""

    QUIET = frozenset({"Invalid HTTP request received.", "Unsupported upgrade request."})

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.QUIET


logging.getLogger("uvicorn.error").addFilter(_QuietClientMistakes())


def guarded_protocol(settings: Settings) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the settings' edge limits enforced (uvicorn takes a
    protocol class). The idle keep-alive timeout is uvicorn's own (runner.py passes it)."""
    refusals = {"logged_at": float("-inf")}

    class GuardedProtocol(HttpToolsProtocol):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > settings.max_connections:
                now = self.loop.time()
                if now - refusals["logged_at"] >= 60:  # a flood of refusals logs a line a minute
                    refusals["logged_at"] = now
                    log.warning(
                        "refusing connections: the cap of %d open connections is reached", settings.max_connections
                    )
                self._reply_and_close(
                    503, "overloaded_error", f"finch has {settings.max_connections} connections open; try again shortly"
                )
                return
            self._arm(settings.header_timeout, "headers")

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:  # a kept-alive connection's next request
                self._arm(settings.header_timeout, "headers")

        def on_headers_complete(self) -> None:
            self._arm(settings.body_timeout, "body")
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def send_400_response(self, msg: str) -> None:
            self._reply_and_close(400, "invalid_request_error", f"malformed HTTP request: {msg}")

        def _arm(self, seconds: float, waiting_for: str) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expire, seconds, waiting_for)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self, seconds: float, waiting_for: str) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and self.cycle.response_started:
                self.transport.close()  # too late for a status; the app sees a disconnect
                return
            self._reply_and_close(
                408, "timeout_error", f"the request's {waiting_for} did not arrive within {seconds:g} s"
            )

        def _reply_and_close(self, status: int, error_type: str, message: str) -> None:
            self._disarm()
            body = error_body(error_type, message)
            head = (
                b"content-type: application/json\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n"
                b"connection: close\r\n\r\n"
            )
            if self.cycle is not None and not self.cycle.response_complete:
                # The app, if it is still reading the body, sees a disconnect, and what it sends is dropped.
                self.cycle.disconnected = True
                self.cycle.message_event.set()
            self.transport.write(STATUS_LINE[status] + head + body)
            self.transport.close()

    return GuardedProtocol
