"""finch's HTTP server: the Messages API in front, the upstream behind, the request log beside.

Routes:
    POST /v1/messages     validated, then forwarded (later: answered locally when it can be)
    *    /v1/{anything}   passed through unchanged (count_tokens, models, batches, files, ...)
    GET  /healthz         liveness
    GET  /metrics         Prometheus
    GET  /finch/stats     request log totals, as JSON
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from finch.config import Settings
from finch.errors import ApiError, RequestTooLarge, Unauthorized, error_body
from finch.metrics import Metrics
from finch.policy.eligibility import eligibility
from finch.pricing import PriceTable
from finch.server.relay import HOP_BY_HOP, RelayResponse
from finch.server.schema import parse_messages_request
from finch.store import queries
from finch.store.db import RequestRecord, Store
from finch.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

_JSON = "application/json"
# Request headers finch consumes itself or that httpx must compute: never forwarded.
_DROP_REQUEST_HEADERS = HOP_BY_HOP | {b"host", b"content-length", b"x-finch-token"}


class Proxy:
    """The state one server needs; its methods are the routes."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.store = Store(settings.db_path, PriceTable(settings.prices))
        self.store.add_listener(self.metrics.observe)
        self.upstream = UpstreamClient(
            settings.upstream_url,
            max_retries=settings.max_retries,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            transport=transport,
        )

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.store.start()
        try:
            yield
        finally:
            await self.upstream.aclose()
            self.store.close()

    # -- finch's own routes ----------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=_JSON)

    async def metrics_route(self, request: Request) -> Response:
        self.metrics.log_dropped.set(self.store.dropped)
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")

    async def stats(self, request: Request) -> Response:
        db = self.settings.db_path
        body = await run_in_threadpool(
            lambda: {
                "totals": queries.totals(db),
                "by_reason": queries.by_reason(db),
                "examples": queries.example_count(db),
                "log_dropped": self.store.dropped,
            }
        )
        return Response(json.dumps(body), media_type=_JSON)

    # -- the proxy -------------------------------------------------------------------------------

    async def forward(self, request: Request) -> Response | RelayResponse:
        started = time.perf_counter()
        record = RequestRecord(
            id="req_finch_" + secrets.token_hex(12),
            ts=time.time(),
            method=request.method,
            path=request.url.path,
            route="forward",
            reason="passthrough",
            status=0,
        )
        try:
            self._check_client_token(request)
            body = await self._read_body(request)
            if record.path == "/v1/messages" and request.method == "POST":
                parsed = parse_messages_request(body)
                record.model, record.stream = parsed.model, parsed.stream
                record.conversation, record.reason = eligibility(parsed.body)
                if record.conversation is not None:
                    record.reason = "cold_start"  # no local model yet: every eligible request teaches
            headers = self._upstream_headers(request)
            upstream = await self.upstream.send(
                request.method, record.path, request.scope["query_string"], headers, body
            )
        except ApiError as exc:
            return self._reject(record, exc, started)
        extra = [(b"x-finch-request-id", record.id.encode()), (b"x-finch-source", b"upstream")]
        return RelayResponse(upstream, record, self.store, started, extra, keep_body=record.path == "/v1/messages")

    def _reject(self, record: RequestRecord, exc: ApiError, started: float) -> Response:
        record.route = "reject" if exc.status < 500 else "forward"
        record.reason = exc.error_type
        record.status = exc.status
        record.error_type = exc.error_type
        record.latency_ms = (time.perf_counter() - started) * 1000
        self.store.submit(record)
        return Response(exc.body(), status_code=exc.status, media_type=_JSON, headers={"x-finch-request-id": record.id})

    def _check_client_token(self, request: Request) -> None:
        expected = self.settings.client_token
        if expected is None:
            return
        given = request.headers.get("x-finch-token", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized("missing or wrong x-finch-token header")

    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestTooLarge(f"request body is larger than the {limit}-byte limit")
        parts, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestTooLarge(f"request body is larger than the {limit}-byte limit")
            parts.append(chunk)
        return b"".join(parts)

    def _upstream_headers(self, request: Request) -> list[tuple[bytes, bytes]]:
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in _DROP_REQUEST_HEADERS]
        has_auth = any(k.lower() in (b"x-api-key", b"authorization") for k, _ in headers)
        if not has_auth and self.settings.api_key:
            headers.append((b"x-api-key", self.settings.api_key.encode()))
        return headers


async def _not_found(request: Request, exc: Exception) -> Response:
    return Response(error_body("not_found_error", f"no route for {request.url.path}"), 404, media_type=_JSON)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(error_body("api_error", "internal error in finch"), 500, media_type=_JSON)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return Response(
        error_body("not_found_error", f"{request.method} is not supported on {request.url.path}"),
        405,
        media_type=_JSON,
    )


class FinchApp:
    """The ASGI entry point. ``/v1/`` traffic goes straight to the proxy, skipping Starlette's
    router and middleware (a measurable share of the forward path); the rest is a Starlette app."""

    def __init__(self, proxy: Proxy, admin: Starlette) -> None:
        self.proxy = proxy
        self.admin = admin
        self.state = admin.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.admin(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await self.proxy.forward(request)
        except Exception as exc:
            response = await _internal_error(request, exc)
        await response(scope, receive, send)


def build_app(settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> FinchApp:
    proxy = Proxy(settings, transport)
    admin = Starlette(
        routes=[
            Route("/healthz", proxy.healthz, methods=["GET"]),
            Route("/metrics", proxy.metrics_route, methods=["GET"]),
            Route("/finch/stats", proxy.stats, methods=["GET"]),
        ],
        exception_handlers={404: _not_found, 405: _method_not_allowed, Exception: _internal_error},
        lifespan=proxy.lifespan,
    )
    admin.state.proxy = proxy
    return FinchApp(proxy, admin)
