"""finch's HTTP server: the Messages API in front, the upstream behind, the request log beside.

Routes:
    POST /v1/messages     validated; answered locally when the policy allows, else forwarded
    *    /v1/{anything}   passed through unchanged (count_tokens, models, batches, files, ...)
    the rest              finch's own (finch.server.admin): health, metrics, stats, feedback, dashboard

With a client token set, the proxied routes ask for it too (``x-finch-token``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from types import ModuleType

import httpx2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from finch import dialects
from finch.config import Settings
from finch.dialects import anthropic
from finch.dialects.common import ParsedRequest
from finch.errors import ApiError, ClientGone, RequestTooLarge
from finch.metrics import Metrics
from finch.policy.decide import AUDITED_REASONS
from finch.pricing import PriceTable, estimate_tokens
from finch.server.admin import JSON, build_admin, internal_error
from finch.server.learning import LearningLoop
from finch.server.local import local_response
from finch.server.pressure import Pressure
from finch.server.principals import Principals
from finch.server.relay import HOP_BY_HOP, RelayResponse
from finch.store.log import open_log
from finch.store.writer import RequestRecord
from finch.upstream.client import UpstreamClient
from finch.vocabulary import UNRESOLVED, Reason, Route

log = logging.getLogger(__name__)

# Request headers finch consumes itself or that the HTTP client must compute: never forwarded.
# finch's own headers (x-finch-token, x-finch-end-user, x-finch-opt-out) are not Claude's business.
_DROP_REQUEST_HEADERS = HOP_BY_HOP | {b"host", b"content-length"}


class Proxy:
    """The state one server needs; its methods are the routes."""

    def __init__(self, settings: Settings, transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.learning: LearningLoop | None = None  # built at start-up: loading models takes seconds
        self.metrics = Metrics()
        self.pressure = Pressure()
        self.principals = Principals(settings)
        self.store = open_log(settings, PriceTable(settings.prices))
        self.store.add_listener(self.metrics.observe)
        self.store.add_listener(_log_request)
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
        watcher = asyncio.create_task(self.pressure.watch())
        if self.settings.learning:
            self.learning = await run_in_threadpool(
                LearningLoop, self.settings, self.store, self.metrics, self.pressure
            )
            self.learning.start()
        try:
            yield
        finally:
            watcher.cancel()
            await self.upstream.aclose()
            if self.learning is not None:
                await run_in_threadpool(self.learning.stop)
            self.store.close()

    # -- the proxy -------------------------------------------------------------------------------

    async def forward(self, request: Request) -> Response | RelayResponse:
        started = time.perf_counter()
        dialect = dialects.for_path(request.url.path) if request.method == "POST" else None
        record = RequestRecord(
            id="req_finch_" + secrets.token_hex(12),
            ts=time.time(),
            method=request.method,
            path=request.url.path,
            route=Route.FORWARD,
            reason=Reason.PASSTHROUGH,
            status=0,
        )
        try:
            principal = self.principals.resolve(request)  # before anything is looked up
            record.namespace = principal.namespace
            body = await self._read_body(request)
            if dialect is not None:
                parsed = dialect.parse(body)
                record.model, record.stream = parsed.model, parsed.stream
                max_chars = self.learning.max_chars if self.learning is not None else None
                record.conversation, record.reason = dialect.conversation(parsed.body, max_chars)
                record.max_tokens = parsed.max_tokens
                # The body's user field names an end user only for a key marked as serving them:
                # Claude Code, for one, puts its session in metadata.user_id.
                named = request.headers.get("x-finch-end-user") or (parsed.end_user if principal.end_users else None)
                record.end_user = self.principals.end_user(record.namespace, named)
                opted_out = _opted_out(request) | principal.opt_out
                if record.conversation is not None and opted_out:  # forwarded; kept and learned unless said
                    record.reason = Reason.OPTED_OUT
                    record.conversation = None if "learning" in opted_out else record.conversation
                elif record.conversation is not None and principal.end_users and not record.end_user:
                    record.reason = Reason.END_USER_MISSING  # whose answer it may see is unknown
                elif record.conversation is not None:
                    local = await self._try_local(record, dialect, parsed, started)
                    if local is not None:
                        return local
            headers = self._upstream_headers(request)
            upstream = await self.upstream.send(
                request.method, record.path, request.scope["query_string"], headers, body
            )
        except ApiError as exc:
            return self._reject(record, exc, started, dialect or anthropic)
        extra = [(b"x-finch-request-id", record.id.encode()), (b"x-finch-source", b"upstream")]
        return RelayResponse(upstream, record, self.store, started, extra, dialect)

    async def _try_local(
        self, record: RequestRecord, dialect: ModuleType, parsed: ParsedRequest, started: float
    ) -> Response | None:
        """Answer locally when the policy says so; otherwise note why not and return None."""
        if self.learning is None:
            record.reason = Reason.LEARNING_OFF
            return None
        if record.namespace == UNRESOLVED:  # nobody's: nothing of anyone's may answer it
            record.reason = Reason.UNRESOLVED_PRINCIPAL
            return None
        if not self.store.available:  # an answer the log cannot count must not be served
            record.reason = Reason.LOG_UNAVAILABLE
            return None
        assert record.conversation is not None
        decision = await self.learning.decide(record.conversation, parsed.max_tokens, record.namespace, record.end_user)
        record.reason, record.attempt = decision.reason, decision.attempt
        if decision.route != Route.LOCAL:
            record.local_answer = decision.answer if decision.reason in AUDITED_REASONS else None
            return None
        assert decision.answer is not None
        conversation_text = record.conversation.system + "".join(t for _, t in record.conversation.turns)
        usage = (estimate_tokens(conversation_text), estimate_tokens(decision.answer))
        response = local_response(dialect, parsed, decision.answer, usage, record.id)
        record.route, record.status, record.local_answer, record.local_usage = Route.LOCAL, 200, decision.answer, usage
        record.latency_ms = record.ttfb_ms = (time.perf_counter() - started) * 1000
        self.learning.served(record.id, record.conversation, decision.answer, record.namespace)
        self.store.submit(record)
        return response

    def _reject(self, record: RequestRecord, exc: ApiError, started: float, dialect: ModuleType) -> Response:
        """finch's own error, in the words of the request's dialect."""
        record.route = Route.REJECT if exc.status < 500 else Route.FORWARD
        record.reason = exc.error_type
        record.status = exc.status
        record.error_type = exc.error_type
        record.latency_ms = (time.perf_counter() - started) * 1000
        self.store.submit(record)
        body = dialect.error_body(exc.error_type, exc.message)
        return Response(body, status_code=exc.status, media_type=JSON, headers={"x-finch-request-id": record.id})

    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestTooLarge(f"request body is larger than the {limit}-byte limit")
        parts, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestTooLarge(f"request body is larger than the {limit}-byte limit")
                parts.append(chunk)
        except ClientDisconnect as exc:  # gone, or cut off by the edge's body timeout
            raise ClientGone("the client went away before its request body arrived") from exc
        return b"".join(parts)

    def _upstream_headers(self, request: Request) -> list[tuple[bytes, bytes]]:
        headers = [
            (k, v)
            for k, v in request.headers.raw
            if k.lower() not in _DROP_REQUEST_HEADERS and not k.lower().startswith(b"x-finch-")
        ]
        has_auth = any(k.lower() in (b"x-api-key", b"authorization") for k, _ in headers)
        if not has_auth and self.settings.api_key:
            headers.append((b"x-api-key", self.settings.api_key.encode()))
        return headers


def _opted_out(request: Request) -> set[str]:
    """``x-finch-opt-out: local`` (never answered locally) or ``local, learning`` (nor kept or
    learned from): a client's choice for one request."""
    said = {word.strip().lower() for word in request.headers.get("x-finch-opt-out", "").split(",")} - {""}
    return {"local"} | (said & {"learning"}) if said else set()


def _log_request(record: RequestRecord, summary: object, cost: float) -> None:
    """Store listener: one line per request, written by the log's thread, off the request path."""
    if log.isEnabledFor(logging.INFO):
        ms = f"{record.latency_ms:.0f} ms" if record.latency_ms is not None else "-"
        log.info("%s %s %s %s %d %s", record.method, record.path, record.route, record.reason, record.status, ms)


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
        pressure = self.proxy.pressure
        pressure.in_flight += 1
        try:
            try:
                response = await self.proxy.forward(request)
            except Exception as exc:
                response = await internal_error(request, exc)
            await response(scope, receive, send)
        finally:
            pressure.in_flight -= 1


def build_app(settings: Settings, transport: httpx2.AsyncBaseTransport | None = None) -> FinchApp:
    proxy = Proxy(settings, transport)
    admin = build_admin(proxy)
    admin.state.proxy = proxy
    return FinchApp(proxy, admin)
