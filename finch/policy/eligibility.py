"""Which requests a local model could ever answer: plain-text conversations only.

``eligibility`` returns the conversation, or the reason it is not eligible. The reasons are the
words used in the request log and in metrics (``ineligible:tools``, ...).
"""

from __future__ import annotations

from typing import Any

from finch.conversation import Conversation, text_of
from finch.policy.safety import sensitive_topic

_ROLES = ("user", "assistant", "system")


def eligibility(body: dict[str, Any], max_chars: int | None = None) -> tuple[Conversation | None, str]:
    """(conversation, "eligible") for a plain-text request, else (None, "ineligible:<why>").

    ``max_chars`` bounds the conversation's length (the local models' context, in characters).
    """
    if body.get("tools") or body.get("tool_choice"):
        return None, "ineligible:tools"
    system = body.get("system", "")
    system_text = text_of(system) if system else ""
    if system_text is None:
        return None, "ineligible:system_blocks"
    turns = []
    for message in body.get("messages", []):
        role = message.get("role")
        if role not in _ROLES:
            return None, "ineligible:role"
        text = text_of(message.get("content"))
        if text is None:
            return None, f"ineligible:{_first_non_text_kind(message.get('content'))}"
        turns.append((role, text))
    if not turns or turns[-1][0] != "user":
        return None, "ineligible:prefill"
    conversation = Conversation(system=system_text, turns=tuple(turns))
    text = system_text + "".join(t for _, t in turns)
    if max_chars is not None and len(text) > max_chars:
        return None, "ineligible:too_long"
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate: JSON's escapes allow one, UTF-8 (and the log) do not
        return None, "ineligible:not_unicode"
    topic = sensitive_topic(text)
    if topic is not None:
        return None, f"ineligible:safety:{topic}"
    return conversation, "eligible"


def _first_non_text_kind(content: Any) -> str:
    if isinstance(content, list):
        for block in content:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind != "text":
                return {
                    "image": "image",
                    "document": "document",
                    "tool_use": "tools",
                    "tool_result": "tools",
                }.get(kind, "content")
    return "content"
