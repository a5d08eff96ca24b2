"""Validation of a Messages API request body, done by finch before anything reaches the upstream.

Only what finch itself relies on is checked; every other field (``thinking``, ``cache_control``,
future ones) passes through untouched, because the body is forwarded as the client sent it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from finch.errors import InvalidRequest


@dataclass(frozen=True)
class MessagesRequest:
    model: str
    max_tokens: int
    stream: bool
    body: dict[str, Any]


def parse_messages_request(raw: bytes) -> MessagesRequest:
    """Parse and check a ``POST /v1/messages`` body; raise InvalidRequest with a clear message."""
    body = parse_json_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: Field required (a non-empty string)")
    if not model.isascii():  # model names are ASCII; this also refuses JSON's lone-surrogate escapes
        raise InvalidRequest(f"model: {model.encode('unicode_escape').decode()!r} is not a model name")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise InvalidRequest("max_tokens: Field required (an integer)")
    if max_tokens < 1:
        raise InvalidRequest("max_tokens: must be at least 1")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: Field required (a non-empty list)")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(f"messages.{i}: must be an object")
        if not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages.{i}.role: Field required (a string)")
        if not isinstance(message.get("content"), str | list):
            raise InvalidRequest(f"messages.{i}.content: Field required (a string or a list of blocks)")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream: must be a boolean")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise InvalidRequest("system: must be a string or a list of blocks")
    return MessagesRequest(model=model, max_tokens=max_tokens, stream=stream, body=body)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        body = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise InvalidRequest("request body is not valid UTF-8") from exc
    except ValueError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidRequest("request body is nested too deeply") from exc
    if not isinstance(body, dict):
        raise InvalidRequest(f"request body must be a JSON object, not {type(body).__name__}")
    return body
