"""A local answer, dressed exactly as the Messages API would send it: JSON or an SSE event stream."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from starlette.responses import Response

from finch.sse import sse_event

_PIECE = re.compile(r"\S+\s*|\s+")


def local_message(model: str, answer: str, input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "id": "msg_finch_" + secrets.token_hex(12),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": answer}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def local_response(message: dict[str, Any], stream: bool, request_id: str) -> Response:
    headers = {"x-finch-source": "local", "x-finch-request-id": request_id, "request-id": request_id}
    if not stream:
        return Response(json.dumps(message), media_type="application/json", headers=headers)
    return Response(b"".join(_events(message)), media_type="text/event-stream; charset=utf-8", headers=headers)


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
