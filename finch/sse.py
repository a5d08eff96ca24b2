"""Server-sent events on the wire, and what a relayed response said and cost (``ResponseSummary``).

Reading a response happens off the request path: the relay only keeps the bytes, and the store's
writer thread has the request's dialect (``finch.dialects``) summarise them after the client has
its answer.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


def sse_event(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def iter_sse(raw: bytes) -> Iterator[tuple[str, str]]:
    """(event, data) pairs from a complete SSE byte stream."""
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    for block in text.split("\n\n"):
        event, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        if data:
            yield event, "\n".join(data)


@dataclass
class ResponseSummary:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    text: str | None = None  # the answer's text when it is plain text, else None
    stop_reason: str | None = None
    error_type: str | None = None

    def add_usage(self, usage: dict[str, Any] | None) -> None:
        """Take the fields present; in SSE, message_delta carries running totals, so later wins."""
        if not isinstance(usage, dict):
            return
        for name in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ):
            value = usage.get(name)
            if isinstance(value, int):
                setattr(self, name, value)


def decode_body(chunks: Iterable[bytes], content_encoding: str | None) -> bytes:
    """Undo gzip/deflate, which the relay passes through untouched."""
    raw = b"".join(chunks)
    encoding = (content_encoding or "").lower().strip()
    try:
        if encoding == "gzip":
            return zlib.decompress(raw, 16 + zlib.MAX_WBITS)
        if encoding == "deflate":
            return zlib.decompress(raw)
    except zlib.error:
        return b""
    return raw if encoding in ("", "identity") else b""
