"""How the teacher speaks on the wire: the Messages API's streamed events, and the cuts it injects
mid-response, as a failing upstream would."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from finch.sse import sse_event

if TYPE_CHECKING:
    from finch.teacher.server import TeacherConfig

PIECE = re.compile(r"\S+\s*|\s+")  # an answer's tokens: a word and the space after it


class InjectedDrop(Exception):
    """Raised inside a response to cut the connection, as a failing upstream would."""


async def message_events(
    message_id: str,
    model: str,
    pieces: list[str],
    input_tokens: int,
    stop_reason: str,
    config: TeacherConfig,
    drop: bool = False,
) -> AsyncIterator[bytes]:
    """A Messages API stream of ``pieces``, at ``config``'s pace; cut halfway with ``drop``."""
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    yield sse_event("message_start", {"type": "message_start", "message": message})
    if config.first_token_delay:
        await asyncio.sleep(config.first_token_delay)
    yield sse_event(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    yield sse_event("ping", {"type": "ping"})
    for i, piece in enumerate(pieces):
        if drop and i >= len(pieces) // 2:
            raise InjectedDrop("connection dropped mid-stream (injected)")
        if i and config.token_delay:
            await asyncio.sleep(config.token_delay)
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": piece},
        }
        yield sse_event("content_block_delta", delta)
    if drop:
        raise InjectedDrop("connection dropped mid-stream (injected)")
    yield sse_event("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield sse_event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": len(pieces)},
        },
    )
    yield sse_event("message_stop", {"type": "message_stop"})


class TruncatedResponse:
    """Promises a longer body than it sends, then cuts the connection."""

    def __init__(self, partial: bytes, headers: dict[str, str]) -> None:
        self.partial = partial
        self.headers = [(k.encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [*self.headers, (b"content-type", b"application/json"), (b"content-length", b"4096")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self.partial, "more_body": True})
        raise InjectedDrop("connection dropped mid-body (injected)")
