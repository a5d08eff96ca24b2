"""What every dialect shares: the request finch relies on, and the checks of a JSON body."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from finch.errors import InvalidRequest


@dataclass(frozen=True)
class ParsedRequest:
    """What finch relies on in a request, whatever its dialect."""

    model: str
    max_tokens: int  # the longest answer the client will take: a local answer must fit
    stream: bool
    body: dict[str, Any]
    end_user: str | None = None  # whom the request is for, as the body names them (finch.policy.privacy)


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


def check_messages(messages: Any, content_may_be_null: bool = False) -> None:
    """A non-empty list of objects, each with a string role and text content (a string or a list).
    Chat Completions lets an assistant message's content be null (its tool calls say it all)."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: Field required (a non-empty list)")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(f"messages.{i}: must be an object")
        if not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages.{i}.role: Field required (a string)")
        content = message.get("content")
        if not isinstance(content, str | list) and not (content is None and content_may_be_null):
            raise InvalidRequest(f"messages.{i}.content: Field required (a string or a list of blocks)")


def check_model(model: Any) -> str:
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: Field required (a non-empty string)")
    if not model.isascii():  # model names are ASCII; this also refuses JSON's lone-surrogate escapes
        raise InvalidRequest(f"model: {model.encode('unicode_escape').decode()!r} is not a model name")
    return model
