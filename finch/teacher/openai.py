"""The teacher's Chat Completions endpoint, as Claude's API offers it: ``POST /v1/chat/completions``.

Written apart from finch's own dialect module (``finch.dialects.openai``), so that a test comparing
the two compares two readings of the format, not one with itself. It answers from the same corpus
as the Messages endpoint, in OpenAI's shapes: a ``chat.completion`` object, or
``chat.completion.chunk`` events (usage last when ``stream_options.include_usage``) and ``[DONE]``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from finch.conversation import text_of
from finch.pricing import estimate_tokens as count_tokens
from finch.teacher.corpus import reword
from finch.teacher.wire import PIECE

if TYPE_CHECKING:
    from finch.teacher.server import Teacher


async def chat_completions(teacher: Teacher, request: Request) -> Response:
    body, auth_error = await teacher._receive(request)
    digest = {"x-teacher-body-sha256": hashlib.sha256(body).hexdigest()}
    if auth_error:
        return auth_error
    try:
        payload = json.loads(body)
        model = str(payload["model"])
        question = next(text_of(m["content"]) or "" for m in reversed(payload["messages"]) if m["role"] == "user")
        limit = int(payload.get("max_completion_tokens") or payload.get("max_tokens") or 1 << 30)
    except (ValueError, KeyError, TypeError, StopIteration, RecursionError):
        return _error(400, "malformed Chat Completions request", digest)
    answer = teacher.corpus.answer(question)
    if teacher.config.reword:
        answer = reword(answer, teacher.rng)
    words = PIECE.findall(answer)
    pieces = words[:limit]
    finish = "stop" if len(pieces) == len(words) else "length"
    prompt = count_tokens(json.dumps(payload["messages"]))
    usage = {"prompt_tokens": prompt, "completion_tokens": len(pieces), "total_tokens": prompt + len(pieces)}
    head = {"id": "chatcmpl-teacher-" + secrets.token_hex(8), "created": int(time.time()), "model": model}
    headers = {**digest, "request-id": "req_teacher_" + secrets.token_hex(8)}
    if not payload.get("stream"):
        message = {"role": "assistant", "content": "".join(pieces)}
        choice = {"index": 0, "message": message, "finish_reason": finish}
        completion = {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
        return Response(json.dumps(completion), media_type="application/json", headers=headers)
    with_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
    chunks = _chunks({**head, "object": "chat.completion.chunk"}, pieces, finish, usage if with_usage else None)
    return StreamingResponse(chunks, media_type="text/event-stream", headers=headers)


async def _chunks(
    head: dict[str, Any], pieces: list[str], finish: str, usage: dict[str, int] | None
) -> AsyncIterator[bytes]:
    def data(payload: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(payload)}\n\n".encode()

    yield data({**head, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
    for piece in pieces:
        yield data({**head, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
    yield data({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if usage is not None:
        yield data({**head, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


def _error(status: int, message: str, headers: dict[str, str]) -> Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return Response(json.dumps(body), status_code=status, media_type="application/json", headers=headers)
