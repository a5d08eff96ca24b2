"""The Messages API on the wire: encoding server-sent events, and reading usage and answer text
back from a relayed response (JSON or SSE).

Reading happens off the request path: the relay only keeps the bytes, and the store's writer thread
calls ``summarize_response`` after the client has its answer.
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


def summarize_response(body: bytes, is_sse: bool) -> ResponseSummary:
    summary = ResponseSummary()
    if is_sse:
        _summarize_sse(body, summary)
    else:
        _summarize_json(body, summary)
    return summary


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
