"""OpenAI's Chat Completions, as Claude's API accepts it: ``POST /v1/chat/completions``.

Tools that speak only this dialect (the ``openai`` SDK, LangChain, aider, ...) work through finch
as through Claude's own endpoint: the body is forwarded as sent. A plain-text conversation is read
into the same ``Conversation`` as a Messages request (system and developer messages become the
system prompt), so what finch learns in one dialect it can answer in the other, each in its own
shape: a ``chat.completion`` object, or ``chat.completion.chunk`` events ending in ``[DONE]``.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

from finch.conversation import Conversation, text_of
from finch.dialects.common import ParsedRequest, check_messages, check_model, parse_json_object
from finch.errors import InvalidRequest
from finch.policy.eligibility import eligibility
from finch.sse import ResponseSummary, iter_sse

PATH = "/v1/chat/completions"
# With no max_tokens the client takes whatever the model writes; finch's own limit
# (max_local_tokens) still bounds a local answer.
_UNBOUNDED = 1 << 30
_PIECE = re.compile(r"\S+\s*|\s+")
_PARTS = {"text": "text", "image_url": "image", "input_audio": "audio", "file": "document"}


def parse(raw: bytes) -> ParsedRequest:
    """Parse and check a request body; raise InvalidRequest with a clear message."""
    body = parse_json_object(raw)
    model = check_model(body.get("model"))
    check_messages(body.get("messages"), content_may_be_null=True)
    key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    limit = body.get(key)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidRequest(f"{key}: must be a positive integer")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream: must be a boolean")
    for key in ("response_format", "stream_options"):
        if body.get(key) is not None and not isinstance(body[key], dict):
            raise InvalidRequest(f"{key}: must be an object")
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise InvalidRequest("n: must be a positive integer")
    user = body.get("user")
    end_user = user if isinstance(user, str) and user else None
    return ParsedRequest(model=model, max_tokens=limit or _UNBOUNDED, stream=stream, body=body, end_user=end_user)


def conversation(body: dict[str, Any], max_chars: int | None = None) -> tuple[Conversation | None, str]:
    """The plain-text conversation, or why there is none (the reasons of ``finch.policy.eligibility``)."""
    if any(body.get(key) for key in ("tools", "functions", "tool_choice", "function_call")):
        return None, "ineligible:tools"
    if (body.get("n") or 1) != 1:
        return None, "ineligible:choices"  # several answers asked for: finch gives one
    if (body.get("response_format") or {}).get("type", "text") != "text":
        return None, "ineligible:format"
    system, messages = [], []
    for message in body["messages"]:
        content = message.get("content")
        blocks = content if isinstance(content, str) else [_block(part) for part in content or []]
        if message["role"] in ("system", "developer"):
            text = text_of(blocks)
            if text is None:
                return None, "ineligible:system_blocks"
            system.append(text)
        else:
            messages.append({"role": message["role"], "content": blocks})
    return eligibility({"system": "\n\n".join(system), "messages": messages}, max_chars)


# -- responses -------------------------------------------------------------------------------------


def summarize(body: bytes, is_sse: bool) -> ResponseSummary:
    summary = ResponseSummary()
    if not is_sse:
        try:
            data = json.loads(body)
        except ValueError:
            return summary
        if isinstance(data, dict):
            _read_completion(data, summary)
        return summary
    parts: list[str] = []
    plain_text = True
    for _, raw in iter_sse(body):
        if raw.strip() == "[DONE]":
            continue
        try:
            chunk = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(chunk, dict):
            continue
        if "error" in chunk:
            summary.error_type = _error_type(chunk)
            continue
        _add_usage(chunk.get("usage"), summary)
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("tool_calls") or delta.get("function_call"):
                plain_text = False
            if isinstance(delta.get("content"), str):
                parts.append(delta["content"])
            summary.stop_reason = choice.get("finish_reason") or summary.stop_reason
    complete = summary.stop_reason is not None and summary.error_type is None
    summary.text = "".join(parts) if plain_text and complete else None
    return summary


def local_body(request: ParsedRequest, answer: str, usage: tuple[int, int]) -> tuple[bytes, str]:
    """A local answer as Chat Completions would send it: (body, media type)."""
    head = {"id": "chatcmpl-finch-" + secrets.token_hex(12), "created": int(time.time()), "model": request.model}
    counts = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
    if not request.stream:
        message = {"role": "assistant", "content": answer, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        completion = {**head, "object": "chat.completion", "choices": [choice], "usage": counts}
        return json.dumps(completion).encode(), "application/json"
    head = {**head, "object": "chat.completion.chunk"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _data({**head, "choices": [choice]})

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": piece}) for piece in _PIECE.findall(answer)]
    chunks.append(chunk({}, "stop"))
    if (request.body.get("stream_options") or {}).get("include_usage"):
        chunks.append(_data({**head, "choices": [], "usage": counts}))
    return b"".join(chunks) + b"data: [DONE]\n\n", "text/event-stream; charset=utf-8"


def error_body(error_type: str, message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": error_type, "param": None, "code": None}}).encode()


def stream_error(error_type: str, message: str) -> bytes:
    """How a stream that fails midway ends: an error object as the last data line."""
    return b"data: " + error_body(error_type, message) + b"\n\n"


def _block(part: Any) -> dict[str, Any]:
    """A content part as the Messages API's block of the same kind (text stays text)."""
    if not isinstance(part, dict):
        return {"type": "content"}
    kind = _PARTS.get(part.get("type"), "content")
    return {"type": "text", "text": part.get("text", "")} if kind == "text" else {"type": kind}


def _read_completion(data: dict[str, Any], summary: ResponseSummary) -> None:
    if "error" in data:
        summary.error_type = _error_type(data)
        return
    _add_usage(data.get("usage"), summary)
    choices = data.get("choices") or []
    if len(choices) != 1 or not isinstance(choices[0], dict):
        return
    message = choices[0].get("message") or {}
    summary.stop_reason = choices[0].get("finish_reason")
    if not message.get("tool_calls") and isinstance(message.get("content"), str):
        summary.text = message["content"]


def _add_usage(usage: Any, summary: ResponseSummary) -> None:
    """Chat Completions counts cached prompt tokens inside prompt_tokens; the log counts them apart."""
    if not isinstance(usage, dict):
        return
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    if isinstance(usage.get("prompt_tokens"), int):
        summary.input_tokens = usage["prompt_tokens"] - cached
        summary.cache_read_input_tokens = cached
    if isinstance(usage.get("completion_tokens"), int):
        summary.output_tokens = usage["completion_tokens"]


def _error_type(data: dict[str, Any]) -> str:
    error = data.get("error")
    return str(error.get("type") or "error") if isinstance(error, dict) else "error"


def _data(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
