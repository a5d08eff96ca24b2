"""finch's own routes, for people and tools, beside the proxied API:

    GET  /healthz         liveness
    GET  /metrics         Prometheus
    GET  /finch/stats     request log totals and the learning loop's state, as JSON
    POST /finch/feedback  {"request_id": ..., "good": bool}: a user's verdict on an answer
    GET  /finch/          the dashboard (a static page), and /finch/dashboard.json, what it shows

With a client token set, every route that reads or changes finch's state asks for it
(``x-finch-token``); /healthz, /metrics and the dashboard's empty page do not. /finch/stats and the
dashboard show the caller's namespace (``finch.server.principals``): every namespace to the admin
token, or to anyone when everything is one namespace.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from starlette import routing
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from finch.conversation import Conversation
from finch.dialects.common import parse_json_object
from finch.errors import ApiError, InvalidRequest, NotFound, error_body
from finch.server import dashboard
from finch.vocabulary import DEFAULT_NAMESPACE

if TYPE_CHECKING:
    from finch.server.app import Proxy

log = logging.getLogger(__name__)

JSON = "application/json"


class Admin:
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def _scope(self, request: Request) -> str | None | Response:
        """The namespace the caller may see (None: every one), or the 401 that refuses it."""
        try:
            return self.proxy.principals.scope(request)
        except ApiError as exc:
            return Response(exc.body(), status_code=exc.status, media_type=JSON)

    async def healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    async def metrics(self, request: Request) -> Response:
        proxy = self.proxy
        proxy.metrics.log_dropped.set(proxy.store.dropped)
        if proxy.learning is not None:
            proxy.learning.update_metrics()
        return Response(proxy.metrics.render(), media_type="text/plain; version=0.0.4")

    async def dashboard_page(self, request: Request) -> Response:
        """The page holds no data (it asks /finch/dashboard.json, with the client token), so it needs none."""
        return Response(dashboard.page(), media_type="text/html; charset=utf-8")

    async def dashboard_data(self, request: Request) -> Response:
        if isinstance(scope := self._scope(request), Response):
            return scope
        loop, log = self.proxy.learning, self.proxy.store
        status = (lambda: loop.status(scope or DEFAULT_NAMESPACE)) if loop is not None else (lambda: None)
        body = await run_in_threadpool(lambda: dashboard.report(log, status(), scope))
        return Response(json.dumps(body), media_type=JSON, headers={"cache-control": "no-store"})

    async def stats(self, request: Request) -> Response:
        if isinstance(scope := self._scope(request), Response):
            return scope
        proxy, log = self.proxy, self.proxy.store
        body = await run_in_threadpool(
            lambda: {
                "namespace": scope,  # null: every namespace's
                "totals": log.totals(scope),
                "by_reason": log.by_reason(scope),
                "examples": log.example_count(scope),
                "namespaces": log.first_local(scope),
                "log_dropped": proxy.store.dropped,
                "learning": proxy.learning.status(scope or DEFAULT_NAMESPACE) if proxy.learning is not None else None,
            }
        )
        return Response(json.dumps(body), media_type=JSON)

    async def forget(self, request: Request) -> Response:
        """POST {"question": "..."} or {"everything": true}: forget it in the caller's namespace (the
        admin token names one: "namespace"). Its stored conversations go at once, every replica
        stops serving it within a moment, and the trainer forgets what it learned."""
        if isinstance(scope := self._scope(request), Response):
            return scope
        try:
            named, conversation = await _forget_body(request)
            if scope is not None and named not in (None, scope):
                raise NotFound(f"no namespace {named!r} for this caller")
            namespace = scope or named or (DEFAULT_NAMESPACE if self.proxy.principals.isolation == "none" else None)
            if namespace is None:
                raise InvalidRequest('the admin token names the namespace to forget in: "namespace"')
            learning, log = self.proxy.learning, self.proxy.store
            forget = learning.forget if learning is not None else log.forget_question
            deleted = await run_in_threadpool(forget, namespace, conversation)
        except ApiError as exc:
            return Response(exc.body(), status_code=exc.status, media_type=JSON)
        body = {"namespace": namespace, "forgot": "question" if conversation is not None else "everything"}
        return Response(json.dumps({**body, "stored_conversations_deleted": deleted}), media_type=JSON)

    async def feedback(self, request: Request) -> Response:
        """POST {"request_id": "req_finch_...", "good": false}: a verdict on an answer."""
        learning = self.proxy.learning
        try:
            namespace = self.proxy.principals.namespace(request)  # a verdict counts only in its own namespace
            body = parse_json_object(await request.body())
            request_id, good = body.get("request_id"), body.get("good")
            if not isinstance(request_id, str) or not isinstance(good, bool):
                raise InvalidRequest('expected {"request_id": "<x-finch-request-id>", "good": true|false}')
            if learning is None:
                raise InvalidRequest("learning is switched off (learning = false)")
            result = await run_in_threadpool(learning.feedback, request_id, good, namespace)
            if result is None:
                raise NotFound(f"no request {request_id!r} in the log")
        except ApiError as exc:
            return Response(exc.body(), status_code=exc.status, media_type=JSON)
        return Response(json.dumps(result), media_type=JSON)


async def _forget_body(request: Request) -> tuple[str | None, Conversation | None]:
    """(the namespace named, the question's conversation or None for everything) from a body
    {"question": "..."} or {"everything": true}, with "namespace" for the admin token."""
    body = parse_json_object(await request.body())
    question, everything, named = body.get("question"), body.get("everything"), body.get("namespace")
    if (question is None) == (everything is not True) or (question is not None and not isinstance(question, str)):
        raise InvalidRequest('expected {"question": "<the question>"} or {"everything": true}')
    if named is not None and not isinstance(named, str):
        raise InvalidRequest("namespace: must be a string")
    return named, (Conversation("", (("user", question),)) if question is not None else None)


async def _not_found(request: Request, exc: Exception) -> Response:
    return Response(error_body("not_found_error", f"no route for {request.url.path}"), 404, media_type=JSON)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(error_body("api_error", "internal error in finch"), 500, media_type=JSON)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return Response(
        error_body("not_found_error", f"{request.method} is not supported on {request.url.path}"),
        405,
        media_type=JSON,
    )


def build_admin(proxy: Proxy) -> Starlette:
    admin = Admin(proxy)
    return Starlette(
        routes=[
            routing.Route("/healthz", admin.healthz, methods=["GET"]),
            routing.Route("/metrics", admin.metrics, methods=["GET"]),
            routing.Route("/finch/stats", admin.stats, methods=["GET"]),
            routing.Route("/finch/feedback", admin.feedback, methods=["POST"]),
            routing.Route("/finch/forget", admin.forget, methods=["POST"]),
            routing.Route("/finch/", admin.dashboard_page, methods=["GET"]),
            routing.Route("/finch/dashboard.json", admin.dashboard_data, methods=["GET"]),
        ],
        exception_handlers={404: _not_found, 405: _method_not_allowed, Exception: internal_error},
        lifespan=proxy.lifespan,
    )
