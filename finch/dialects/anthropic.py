"""Anthropic's Messages API: ``POST /v1/messages``.

Only what finch itself relies on is checked in a request; every other field (``thinking``,
``cache_control``, future ones) passes through untouched, because the body is forwarded as the
client sent it. Responses are read back (usage, the answer's text) off the request path, from the
bytes the relay kept.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from finch import errors
from finch.conversation import Conversation
from finch.dialects.common import ParsedRequest, check_messages, check_model, parse_json_object
from finch.errors import InvalidRequest
from finch.policy.eligibility import eligibility
from finch.sse import ResponseSummary, iter_sse, sse_event

PATH = "/v1/messages"
_PIECE = re.compile(r"\S+\s*|\s+")


def parse(raw: bytes) -> ParsedRequest:
    """Parse and check a request body; raise InvalidRequest with a clear message."""
    body = parse_json_object(raw)
    model = check_model(body.get("model"))
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise InvalidRequest("max_tokens: Field required (an integer)")
    if max_tokens < 1:
        raise InvalidRequest("max_tokens: must be at least 1")
    check_messages(body.get("messages"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream: must be a boolean")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise InvalidRequest("system: must be a string or a list of blocks")
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    end_user = user if isinstance(user, str) and user else None
    return ParsedRequest(model=model, max_tokens=max_tokens, stream=stream, body=body, end_user=end_user)


def conversation(body: dict[str, Any], max_chars: int | None = None) -> tuple[Conversation | None, str]:
    return eligibility(body, max_chars)


# -- responses -------------------------------------------------------------------------------------


def summarize(body: bytes, is_sse: bool) -> ResponseSummary:
    summary = ResponseSummary()
    if is_sse:
        _summarize_sse(body, summary)
    else:
        _summarize_json(body, summary)
    return summary


def local_body(request: ParsedRequest, answer: str, usage: tuple[int, int]) -> tuple[bytes, str]:
    """A local answer as the Messages API would send it: (body, media type)."""
    message = {
        "id": "msg_finch_" + secrets.token_hex(12),
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": [{"type": "text", "text": answer}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }
    if not request.stream:
        return json.dumps(message).encode(), "application/json"
    return b"".join(_events(message)), "text/event-stream; charset=utf-8"


def error_body(error_type: str, message: str) -> bytes:
    return errors.error_body(error_type, message)


def stream_error(error_type: str, message: str) -> bytes:
    """How a stream that fails midway ends: an SSE ``error`` event."""
    return errors.sse_error_event(error_type, message)


def _events(message: dict[str, Any]) -> list[bytes]:
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    text = message["content"][0]["text"]
    events = [
        sse_event("message_start", {"type": "message_start", "message": start}),
        sse_event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        sse_event("ping", {"type": "ping"}),
    ]
    for piece in _PIECE.findall(text):
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        events.append(sse_event("content_block_delta", delta))
    events += [
        sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        ),
        sse_event("message_stop", {"type": "message_stop"}),
    ]
    return events


def _summarize_json(body: bytes, summary: ResponseSummary) -> None:
    try:
        data = json.loads(body)
    except ValueError:
        return
    if not isinstance(data, dict):
        return
    if data.get("type") == "error":
        error = data.get("error")
        summary.error_type = error.get("type") if isinstance(error, dict) else "error"
        return
    summary.add_usage(data.get("usage"))
    summary.stop_reason = data.get("stop_reason")
    summary.text = _text_of_blocks(data.get("content"))


def _summarize_sse(body: bytes, summary: ResponseSummary) -> None:
    parts: list[str] = []
    plain_text = True
    for event, raw in iter_sse(body):
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        if event == "message_start":
            summary.add_usage((data.get("message") or {}).get("usage"))
        elif event == "message_delta":
            summary.add_usage(data.get("usage"))
            summary.stop_reason = (data.get("delta") or {}).get("stop_reason") or summary.stop_reason
        elif event == "content_block_start":
            plain_text = plain_text and (data.get("content_block") or {}).get("type") == "text"
        elif event == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                parts.append(delta.get("text", ""))
            else:
                plain_text = False
        elif event == "error":
            summary.error_type = (data.get("error") or {}).get("type", "error")
    complete = summary.stop_reason is not None and summary.error_type is None
    summary.text = "".join(parts) if plain_text and complete else None


def _text_of_blocks(content: Any) -> str | None:
    if not isinstance(content, list):
        return None
    parts = []
    for block in content:
        if not isinstance(block, dict) or block.get("type") != "text":
            return None
        parts.append(block.get("text", ""))
    return "".join(parts)
