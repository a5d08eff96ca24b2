"""The wire formats finch speaks, one module each, behind one seam.

A dialect knows one API's requests and responses: how to read a request (``parse``), which plain
text conversation it holds if any (``conversation``), what a response said and cost (``summarize``),
how to dress a local answer (``local_body``), and how that API words an error (``error_body``,
``stream_error``). The server, the store and the learning loop work on what they return, and never
on a format's fields: a question learned in one dialect is answered in any.

    POST /v1/messages          Anthropic's Messages API (``anthropic``)
    POST /v1/chat/completions  OpenAI's Chat Completions, as Claude's API accepts it (``openai``)
"""

from __future__ import annotations

from types import ModuleType

from finch.dialects import anthropic, openai

# Each module has PATH, parse, conversation, summarize, local_body, error_body and stream_error.
DIALECTS: dict[str, ModuleType] = {anthropic.PATH: anthropic, openai.PATH: openai}


def for_path(path: str) -> ModuleType | None:
    """The dialect spoken at ``path`` (POST), or None for a path finch only passes through."""
    return DIALECTS.get(path)
