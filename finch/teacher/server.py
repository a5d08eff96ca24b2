"""The teacher simulator: a real Messages API server that answers from a question/answer corpus
(and Chat Completions too: ``finch.teacher.openai``).

It stands in for Claude in tests, demos and benchmarks. Beyond the API it offers:

    x-teacher-body-sha256   response header: SHA-256 of the request body exactly as received
    GET  /_teacher/stats    counters: requests, by path, faults served, the last request's metadata
    POST /_teacher/faults   {"queue": ["429", "529", "500", "hang", "drop", ...]}: the next requests
                            to /v1/messages fail that way, in order (deterministic fault injection)
    POST /_teacher/reset    zero the counters and the fault queue

Random faults at configured rates, time to first token and per-token delay are settings.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import random
import secrets
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from finch.conversation import text_of
from finch.errors import error_body
from finch.pricing import estimate_tokens as count_tokens
from finch.teacher.corpus import Corpus, reword
from finch.teacher.openai import chat_completions
from finch.teacher.wire import PIECE, TruncatedResponse, message_events

MODELS = ("claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-5")
_FAULT_STATUS = {
    "400": (400, "invalid_request_error"),
    "401": (401, "authentication_error"),
    "429": (429, "rate_limit_error"),
    "500": (500, "api_error"),
    "503": (503, "api_error"),
    "529": (529, "overloaded_error"),
}


@dataclass
class TeacherConfig:
    first_token_delay: float = 0.0  # seconds before the first token (also delays JSON answers)
    token_delay: float = 0.0  # seconds between streamed tokens
    reword: bool = False  # vary the wording of answers, keeping their meaning
    require_auth: bool = True  # like Claude: 401 without x-api-key or Authorization
    retry_after: float = 1.0  # seconds advertised on injected 429s
    hang_seconds: float = 30.0  # how long an injected hang lasts before the answer comes anyway
    rates: dict[str, float] = field(default_factory=dict)  # random faults: {"429": 0.01, "drop": 0.01}
    # End each answer with who asked, "[for <the API key's last 8 characters>]": a marker the
    # isolation tests look for in answers served to anyone else.
    mark_caller: bool = False
    # Questions whose answers are personal: each ends "[for end user <metadata.user_id>]", as "What
    # is my balance?" would; the privacy tests look for the marker in answers served to anyone else.
    personal: frozenset[str] = frozenset()
    seed: int = 0


class Teacher:
    def __init__(self, corpus: Corpus, config: TeacherConfig | None = None) -> None:
        self.corpus = corpus
        self.config = config or TeacherConfig()
        self.rng = random.Random(self.config.seed)
        self.faults: deque[str] = deque()
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.by_path: Counter[str] = Counter()
        self.faults_served: Counter[str] = Counter()
        self.last_request: dict[str, Any] = {}
        self.received: deque[dict[str, Any]] = deque(maxlen=1000)  # each request's metadata, newest last
        self.faults.clear()

    # -- routes -------------------------------------------------------------------------------

    async def messages(self, request: Request) -> Response:
        body, auth_error = await self._receive(request)
        digest = {"x-teacher-body-sha256": hashlib.sha256(body).hexdigest()}
        if auth_error:
            return auth_error
        try:
            payload = json.loads(body)
            question, model = _question_of(payload), str(payload["model"])
            max_tokens = int(payload["max_tokens"])
        except (ValueError, KeyError, TypeError, RecursionError):
            return _error(400, "invalid_request_error", "malformed Messages request", digest)
        fault = self._next_fault()
        if fault in _FAULT_STATUS:
            status, kind = _FAULT_STATUS[fault]
            extra = {"retry-after": f"{self.config.retry_after:g}"} if status == 429 else {}
            return _error(status, kind, f"injected {fault}", {**digest, **extra})
        if fault == "hang":
            await asyncio.sleep(self.config.hang_seconds)
        answer = self.corpus.answer(question)
        if self.config.reword:
            answer = reword(answer, self.rng)
        if self.config.mark_caller:
            caller = request.headers.get("x-api-key") or request.headers.get("authorization", "").partition(" ")[2]
            answer = f"{answer} [for {caller[-8:]}]"
        if question in self.config.personal:
            user = (payload.get("metadata") or {}).get("user_id", "")
            answer = f"{answer} [for end user {user}]"
        pieces = PIECE.findall(answer)[:max_tokens]
        stop_reason = "end_turn" if len(pieces) == len(PIECE.findall(answer)) else "max_tokens"
        input_tokens = count_tokens(json.dumps(payload.get("messages", "")) + str(payload.get("system", "")))
        headers = {**digest, "request-id": "req_teacher_" + secrets.token_hex(8), **_RATELIMIT_HEADERS}
        message_id = "msg_teacher_" + secrets.token_hex(10)
        if payload.get("stream"):
            events = message_events(
                message_id, model, pieces, input_tokens, stop_reason, self.config, drop=fault == "drop"
            )
            return StreamingResponse(events, media_type="text/event-stream; charset=utf-8", headers=headers)
        if self.config.first_token_delay:
            await asyncio.sleep(self.config.first_token_delay)
        if fault == "drop":
            return TruncatedResponse(b'{"id": "' + message_id.encode(), headers)
        message = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "".join(pieces)}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": len(pieces)},
        }
        return Response(json.dumps(message), media_type="application/json", headers=headers)

    async def count_tokens(self, request: Request) -> Response:
        body, auth_error = await self._receive(request)
        if auth_error:
            return auth_error
        try:
            payload = json.loads(body)
            text = json.dumps(payload["messages"]) + str(payload.get("system", ""))
        except (ValueError, KeyError, TypeError, RecursionError):
            return _error(400, "invalid_request_error", "malformed count_tokens request", {})
        return Response(json.dumps({"input_tokens": count_tokens(text)}), media_type="application/json")

    async def models(self, request: Request) -> Response:
        _, auth_error = await self._receive(request)
        if auth_error:
            return auth_error
        data = [_model_info(m) for m in MODELS]
        page = {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        return Response(json.dumps(page), media_type="application/json")

    async def model(self, request: Request) -> Response:
        _, auth_error = await self._receive(request)
        if auth_error:
            return auth_error
        model_id = request.path_params["model_id"]
        if model_id not in MODELS:
            return _error(404, "not_found_error", f"model: {model_id}", {})
        return Response(json.dumps(_model_info(model_id)), media_type="application/json")

    async def stats(self, request: Request) -> Response:
        body = {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "faults_served": dict(self.faults_served),
            "faults_queued": len(self.faults),
            "last_request": self.last_request,
        }
        return Response(json.dumps(body), media_type="application/json")

    async def queue_faults(self, request: Request) -> Response:
        faults = (await request.json()).get("queue", [])
        self.faults.extend(str(f) for f in faults)
        return Response(json.dumps({"faults_queued": len(self.faults)}), media_type="application/json")

    async def reset_route(self, request: Request) -> Response:
        self.reset()
        return Response(b"{}", media_type="application/json")

    # -- helpers ------------------------------------------------------------------------------

    async def _receive(self, request: Request) -> tuple[bytes, Response | None]:
        body = await request.body()
        self.requests += 1
        self.by_path[request.url.path] += 1
        headers = request.headers
        auth = "x-api-key" if "x-api-key" in headers else "bearer" if "authorization" in headers else None
        self.last_request = {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "auth": auth,
            "anthropic-version": headers.get("anthropic-version"),
            "anthropic-beta": headers.get("anthropic-beta"),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "finch_headers": sorted(name for name in headers if name.startswith("x-finch-")),  # none should come
        }
        self.received.append(self.last_request)
        if self.config.require_auth and auth is None:
            return body, _error(401, "authentication_error", "x-api-key header is required", {})
        return body, None

    def _next_fault(self) -> str | None:
        fault = self.faults.popleft() if self.faults else None
        if fault is None:
            for name, rate in self.config.rates.items():
                if self.rng.random() < rate:
                    fault = name
                    break
        if fault is not None:
            self.faults_served[fault] += 1
        return fault


_RATELIMIT_HEADERS = {
    "anthropic-ratelimit-requests-limit": "4000",
    "anthropic-ratelimit-requests-remaining": "3999",
}


def _question_of(payload: dict[str, Any]) -> str:
    for message in reversed(payload["messages"]):
        if message.get("role") == "user":
            return text_of(message.get("content")) or ""
    return ""


def _model_info(model_id: str) -> dict[str, Any]:
    return {"type": "model", "id": model_id, "display_name": model_id, "created_at": "2025-09-29T00:00:00Z"}


def _error(status: int, kind: str, message: str, headers: dict[str, str]) -> Response:
    return Response(error_body(kind, message), status_code=status, media_type="application/json", headers=headers)


def build_teacher_app(teacher: Teacher) -> Starlette:
    app = Starlette(
        routes=[
            Route("/v1/messages", teacher.messages, methods=["POST"]),
            Route("/v1/chat/completions", functools.partial(chat_completions, teacher), methods=["POST"]),
            Route("/v1/messages/count_tokens", teacher.count_tokens, methods=["POST"]),
            Route("/v1/models", teacher.models, methods=["GET"]),
            Route("/v1/models/{model_id}", teacher.model, methods=["GET"]),
            Route("/_teacher/stats", teacher.stats, methods=["GET"]),
            Route("/_teacher/faults", teacher.queue_faults, methods=["POST"]),
            Route("/_teacher/reset", teacher.reset_route, methods=["POST"]),
        ]
    )
    app.state.teacher = teacher
    return app
