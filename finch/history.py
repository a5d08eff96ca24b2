"""Past request and response pairs, as a gateway or an app logged them, read into the request log.

``finch import FILE...`` reads JSON Lines, one exchange a line::

    {"request": {...}, "response": {...}, "timestamp": "2026-11-30T09:12:00Z"}

- ``request``: the body sent, an Anthropic Messages or a Chat Completions request.
- ``response``: Claude's answer, as a JSON body, or streamed: the event stream as one string, or
  its events as a list of objects.
- ``timestamp`` (or ``ts``, ``created_at``), optional: unix seconds or ISO 8601. Without one, a
  Chat Completions response's ``created`` is used, or else the time of the import, in file order.
- ``path``, optional: ``/v1/messages`` or ``/v1/chat/completions`` when the bodies do not say.

Each exchange is written as the request log writes a forwarded request (reason ``imported``), in
time order across the files, so the trainer learns from it as from live traffic: memory, Claude's
consistency, the three models and the bound. An exchange is identified by its content and
timestamp, so importing a file twice adds nothing. A line that cannot be read is reported with its
file and line number, and every other line is imported; one finch would not answer locally anyway
(tools, images, an error response) is skipped and counted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from finch import dialects
from finch.config import Settings
from finch.dialects import anthropic, openai
from finch.errors import InvalidRequest
from finch.models.generator import generator_config
from finch.pricing import PriceTable
from finch.store.log import Log, open_log
from finch.store.writer import RequestRecord
from finch.vocabulary import DEFAULT_NAMESPACE, Reason, Route

_TIME_KEYS = ("timestamp", "ts", "created_at")
_FLUSH_EVERY = 500  # records submitted between waits for the writer (its queue drops when full)


class BadLine(ValueError):
    """A line that cannot be imported; the message says why."""


@dataclass(frozen=True)
class Exchange:
    """One past request and Claude's response, ready to be logged."""

    record: RequestRecord
    where: str  # file:line, for messages


@dataclass
class ImportReport:
    """What an import did; ``str()`` says it in a sentence."""

    read: int = 0  # lines holding an exchange
    imported: int = 0  # new exchanges written to the log
    already: int = 0  # exchanges the log already had
    older: int = 0  # left out by --since
    skipped: Counter[str] = field(default_factory=Counter)  # why finch would not learn from them
    errors: list[str] = field(default_factory=list)  # "file:line: message"
    since: bool = False  # was --since given

    def __str__(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        return (
            f"{self.imported} exchanges imported, {self.already} already there"
            + (f", {self.older} before --since" if self.since else "")
            + (f", skipped: {skipped}" if skipped else "")
            + (f", {len(self.errors)} lines with errors" if self.errors else "")
        )


def import_files(
    settings: Settings, paths: Iterable[Path], since: float | None = None, namespace: str = DEFAULT_NAMESPACE
) -> ImportReport:
    """Read the files and log every exchange not logged yet, in ``namespace`` (``finch import``;
    learning is the trainer's, ``finch.learning.trainer.learn_waiting``)."""
    report = ImportReport()
    max_chars = generator_config(settings.preset, 1).max_len * 3  # as the server reads conversations
    exchanges = read_exchanges(paths, max_chars, report)
    log = open_log(settings, PriceTable(settings.prices))
    log.start()
    try:
        write(log, exchanges, report, since, namespace)
    finally:
        log.close()
    return report


def read_exchanges(paths: Iterable[Path], max_chars: int, report: ImportReport) -> list[Exchange]:
    """Every exchange in the files, in time order (file order among equal times)."""
    exchanges: list[tuple[float, int, Exchange]] = []
    now = time.time()
    for path in paths:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                report.read += 1
                try:
                    exchange = _exchange(line, where, max_chars, now)
                except BadLine as exc:
                    report.errors.append(f"{where}: {exc}")
                    continue
                if isinstance(exchange, str):
                    report.skipped[exchange] += 1
                    continue
                exchanges.append((exchange.record.ts, len(exchanges), exchange))
    return [exchange for _, _, exchange in sorted(exchanges, key=lambda e: e[:2])]


def write(
    log: Log,
    exchanges: Iterable[Exchange],
    report: ImportReport,
    since: float | None = None,
    namespace: str = DEFAULT_NAMESPACE,
) -> None:
    """Log the exchanges not already logged in ``namespace``; wait until they are committed."""
    report.since = since is not None
    pending = 0
    for exchange in exchanges:
        record = exchange.record
        if namespace != DEFAULT_NAMESPACE:  # the same history imported in two namespaces is two rows
            record = dataclasses.replace(record, id=f"{record.id}.{namespace}", namespace=namespace)
        if since is not None and record.ts < since:
            report.older += 1
            continue
        if log.request_is_logged(record.id, namespace):
            report.already += 1
            continue
        log.submit(record)
        report.imported += 1
        pending += 1
        if pending >= _FLUSH_EVERY:
            log.flush(timeout=120)
            pending = 0
    log.flush(timeout=120)


def _exchange(line: str, where: str, max_chars: int, now: float) -> Exchange | str:
    """The line's exchange, or the reason finch would not learn from it."""
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadLine(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(item, dict):
        raise BadLine("expected a JSON object with request and response")
    request, response = item.get("request"), item.get("response")
    if not isinstance(request, dict):
        raise BadLine("request: expected the request body, a JSON object")
    if not isinstance(response, dict | str | list):
        raise BadLine("response: expected the response body, an event stream string, or a list of events")
    dialect = _dialect(item, request, response)
    raw = json.dumps(request, ensure_ascii=False).encode()
    try:
        parsed = dialect.parse(raw)
    except InvalidRequest as exc:
        raise BadLine(f"request: {exc}") from None
    body, is_sse = _response_bytes(dialect, response)
    summary = dialect.summarize(body, is_sse)
    if summary.error_type or not summary.text:
        return "error_response" if summary.error_type else "no_text"
    conversation, reason = dialect.conversation(parsed.body, max_chars)
    if conversation is None:
        return reason
    ts = _timestamp(item, response, now)
    identity = hashlib.sha256(b"\0".join([dialect.PATH.encode(), raw, body, repr(ts).encode()])).hexdigest()
    record = RequestRecord(
        id="req_import_" + identity[:24],
        ts=ts,
        method="POST",
        path=dialect.PATH,
        route=Route.FORWARD,
        reason=Reason.IMPORTED,
        status=200,
        model=parsed.model,
        stream=parsed.stream,
        is_sse=is_sse,
        chunks=[body],
        conversation=conversation,
        max_tokens=parsed.max_tokens,
    )
    return Exchange(record, where)


def _dialect(item: dict[str, Any], request: dict[str, Any], response: Any) -> ModuleType:
    path = item.get("path")
    if path is not None:
        dialect = dialects.for_path(path) if isinstance(path, str) else None
        if dialect is None:
            raise BadLine(f"path: expected {anthropic.PATH} or {openai.PATH}, got {path!r}")
        return dialect
    if isinstance(response, dict):
        if "choices" in response or response.get("object") == "chat.completion":
            return openai
        if response.get("type") == "message" or "content" in response:
            return anthropic
    text = response if isinstance(response, str) else json.dumps(response)
    if "chat.completion" in text or '"choices"' in text:
        return openai
    if "message_start" in text or "content_block" in text:
        return anthropic
    # Nothing in the response says: a system message is Chat Completions' way, max_tokens required is Messages'.
    messages = request.get("messages")
    if isinstance(messages, list) and any(isinstance(m, dict) and m.get("role") == "system" for m in messages):
        return openai
    return anthropic if "max_tokens" in request else openai


def _response_bytes(dialect: ModuleType, response: Any) -> tuple[bytes, bool]:
    """The response as the relay would have kept it, and whether it was streamed."""
    if isinstance(response, dict):
        return json.dumps(response, ensure_ascii=False).encode(), False
    if isinstance(response, str):
        return response.encode(), True
    return b"".join(_sse(dialect, event) for event in response), True


def _sse(dialect: ModuleType, event: Any) -> bytes:
    if isinstance(event, str):  # already a line of the stream
        return event.encode() + (b"" if event.endswith("\n\n") else b"\n\n")
    if not isinstance(event, dict):
        raise BadLine("response: each streamed event must be an object or a string")
    data = json.dumps(event, ensure_ascii=False)
    if dialect is anthropic:
        return f"event: {event.get('type', 'message')}\ndata: {data}\n\n".encode()
    return f"data: {data}\n\n".encode()


def _timestamp(item: dict[str, Any], response: Any, now: float) -> float:
    for key in _TIME_KEYS:
        if item.get(key) is not None:
            return _seconds(item[key], key)
    if isinstance(response, dict) and isinstance(response.get("created"), int | float):
        return float(response["created"])
    return now


def _seconds(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise BadLine(f"{key}: expected unix seconds or an ISO 8601 time")
    if isinstance(value, int | float):
        return float(value) / 1000 if value > 1e11 else float(value)  # milliseconds, as many logs keep
    if isinstance(value, str):
        try:
            return parse_time(value)
        except ValueError:
            pass
    raise BadLine(f"{key}: expected unix seconds or an ISO 8601 time, got {value!r}")


def parse_time(text: str) -> float:
    """Unix seconds from an ISO 8601 time or date (UTC when no zone is given)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
