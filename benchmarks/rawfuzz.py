"""Raw HTTP fuzzing: malformed request lines, paths, headers, framing and bodies, each sent over its
own socket as an attacker would (an HTTP client would normalise or refuse most of them).

The rules checked: nothing a client sends gets a 5xx that finch made itself (a 5xx relayed from the
upstream carries ``x-finch-source: upstream``), finch logs no error of its own (a lost log record
would show as one), and finch is healthy afterwards. Every answer finch
writes is counted by status; a connection closed without an answer is counted as "closed".

Usage:
  python benchmarks/rawfuzz.py --cases 10000 [--seed 0] [--concurrency 32] [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httptools

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MESSAGE = b'{"model":"claude-haiku-4-5","max_tokens":20,"messages":[{"role":"user","content":"What is two plus two?"}]}'
METHODS = [
    b"GET",
    b"POST",
    b"PUT",
    b"DELETE",
    b"PATCH",
    b"HEAD",
    b"OPTIONS",
    b"TRACE",
    b"CONNECT",
    b"PRI",
    b"BREW",
    b"post",
    b"G\x00T",
    b"",
    b"GET GET",
    b"\xff\xfe",
    b"X" * 300,
]
PATHS = [
    b"/v1/messages",
    b"/v1/models",
    b"/v1/messages/count_tokens",
    b"/healthz",
    b"/metrics",
    b"/finch/stats",
    b"/finch/feedback",
    b"/v1/complete",
    b"/",
    b"/v1/",
]
VERSIONS = [
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"HTTP/0.9",
    b"HTTP/9.9",
    b"HTTP/1.1 extra",
    b"http/1.1",
    b"",
    b"HTTP/",
]
ESCAPES = [
    b"%00",
    b"%0a",
    b"%0d",
    b"%1f",
    b"%7f",
    b"%ff",
    b"%c0%af",
    b"%e0%80%af",
    b"%zz",
    b"%",
    b"%2",
    b"%%",
    b"%2e%2e",
    b"%2f",
    b"%5c",
    b"%u0000",
    b"%25",
    b"%20",
]
RAW_BYTES = [bytes([b]) for b in (*range(0, 32), 127, 128, 255)] + [b" ", b"#", b"?", b"\\", b"\xc3\xa9"]
DOTS = [
    b"/v1/../../../etc/passwd",
    b"/v1/./messages",
    b"/v1/messages/..",
    b"/%2e%2e/%2e%2e/etc/passwd",
    b"/v1//messages",
    b"//v1/messages",
    b"/v1/messages/../models",
    b"/..",
]
TARGETS = [
    b"http://169.254.169.254/latest/meta-data/",
    b"http://evil.example/v1/messages",
    b"https://x:1/v1/models",
    b"evil.example:443",
    b"*",
    b"",
    b"?",
    b"#frag",
    b"/v1/messages?" + b"a=" * 2000,
    b"/v1/messages?%00=%ff",
]
HEADER_NAMES = [
    b"x-api-key",
    b"content-type",
    b"anthropic-version",
    b"anthropic-beta",
    b"x-finch-token",
    b"host",
    b"accept-encoding",
    b"connection",
    b"upgrade",
    b"expect",
    b"authorization",
    b"x-forwarded-for",
    b"bad name",
    b"bad:name",
    b"",
    b"\x00",
    b"x" * 5000,
    b"content-length",
    b"transfer-encoding",
]
HEADER_VALUES = [
    b"",
    b" ",
    b"application/json",
    b"text/plain",
    b"\x00",
    b"a\rb",
    b"a\nb",
    b"\x7f",
    b"\xff\xfe",
    b"2023-06-01",
    b"close",
    b"keep-alive, Upgrade",
    b"websocket",
    b"h2c",
    b"100-continue",
    b"Bearer " + b"k" * 300,
    b"x" * 20000,
    b"chunked",
    b"gzip",
    b"-1",
    b"99999999999999999999",
]


def request(method: bytes, target: bytes, version: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return method + b" " + target + b" " + version + b"\r\n" + head + b"\r\n" + body


def plain(body: bytes = b"", extra: list[tuple[bytes, bytes]] | None = None) -> list[tuple[bytes, bytes]]:
    return [
        (b"host", b"127.0.0.1"),
        (b"x-api-key", b"fuzz-key"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]


def path_case(rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    base = rng.choice(PATHS)
    if kind == 0:  # a percent-escape or a raw byte somewhere in the path
        cut = rng.randrange(len(base) + 1)
        target = base[:cut] + rng.choice(ESCAPES + RAW_BYTES) + base[cut:]
    elif kind == 1:
        target = rng.choice(DOTS)
    elif kind == 2:
        target = rng.choice(TARGETS)
    elif kind == 3:  # very long
        target = base + b"/" + b"a" * rng.choice([1000, 8000, 70000])
    else:
        target = b"".join(
            rng.choice(ESCAPES + RAW_BYTES + [b"/", b"v1", b"messages"]) for _ in range(rng.randrange(1, 12))
        )
    body = MESSAGE if rng.random() < 0.5 else b""
    return request(rng.choice([b"GET", b"POST"]), target, b"HTTP/1.1", plain(body), body)


def line_case(rng: random.Random) -> bytes:
    body = MESSAGE if rng.random() < 0.5 else b""
    return request(rng.choice(METHODS), rng.choice(PATHS + TARGETS), rng.choice(VERSIONS), plain(body), body)


def header_case(rng: random.Random) -> bytes:
    headers = plain(MESSAGE)
    for _ in range(rng.randrange(1, 4)):
        headers.insert(rng.randrange(len(headers) + 1), (rng.choice(HEADER_NAMES), rng.choice(HEADER_VALUES)))
    if rng.random() < 0.1:
        headers += [(b"x-many-%d" % k, b"v") for k in range(rng.choice([100, 1000]))]
    if rng.random() < 0.1:
        headers.append((b" folded", b"continuation"))  # obsolete line folding
    if rng.random() < 0.1:
        headers = [h for h in headers if h[0] != b"host"]
    return request(b"POST", b"/v1/messages", b"HTTP/1.1", headers, MESSAGE)


def chunked(body: bytes, rng: random.Random) -> bytes:
    out, rest = b"", body
    while rest:
        n = rng.randrange(1, 40)
        size = b"%x" % min(n, len(rest))
        kind = rng.random()
        if kind < 0.05:
            size = rng.choice([b"zz", b"-1", b"ffffffffffffffffffff", b"", b"1;ext=1", b"0x10"])
        out += size + b"\r\n" + rest[:n] + b"\r\n"
        rest = rest[n:]
    end = b"0\r\n\r\n" if rng.random() < 0.8 else rng.choice([b"", b"0\r\n", b"0\r\nx-trailer: 1\r\n\r\n", b"1\r\n"])
    return out + end


def framing_case(rng: random.Random) -> bytes:
    body = MESSAGE
    base = [(b"host", b"127.0.0.1"), (b"x-api-key", b"fuzz-key"), (b"content-type", b"application/json")]
    length = str(len(body)).encode()
    choice = rng.randrange(9)
    if choice == 0:  # truncated: announces more than it sends (the edge's body timeout ends it)
        return request(
            b"POST", b"/v1/messages", b"HTTP/1.1", [*base, (b"content-length", b"%d" % (len(body) + 50))], body
        )
    if choice == 1:  # oversized: more than announced (the rest is read as a next request)
        return request(b"POST", b"/v1/messages", b"HTTP/1.1", [*base, (b"content-length", b"10")], body)
    if choice == 2:
        lengths = [
            (b"content-length", rng.choice([length, b"0", b"-5", b"abc", b"1e3", b" 12", b"99999999999999999999"]))
            for _ in range(rng.randrange(1, 3))
        ]
        return request(b"POST", b"/v1/messages", b"HTTP/1.1", base + lengths, body)
    encodings = [
        b"chunked",
        b"gzip, chunked",
        b"chunked, gzip",
        b"identity",
        b"Chunked",
        b" chunked",
        b"chunked\x00",
        b"chunked, chunked",
        b"x",
    ]
    te = [(b"transfer-encoding", rng.choice(encodings)) for _ in range(rng.randrange(1, 3))]
    cl = [(b"content-length", length)] if choice in (3, 4) else []
    return request(b"POST", b"/v1/messages", b"HTTP/1.1", base + cl + te, chunked(body, rng))


def body_case(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
    elif kind == 1:
        depth = rng.choice([100, 1000, 100000])
        body = b"[" * depth + b"]" * depth
    elif kind == 2:  # a valid request with one field mangled
        value = rng.choice([b"null", b"-1", b"1e309", b'"x"', b"[]", b"{}", b'"\\ud800"', b"true", b"0"])
        field = rng.choice([b"model", b"max_tokens", b"messages", b"stream", b"system", b"temperature"])
        body = (
            b'{"model":"claude-haiku-4-5","max_tokens":20,"messages":[{"role":"user","content":"hi"}],"'
            + field
            + b'":'
            + value
            + b"}"
        )
    elif kind == 3:
        body = MESSAGE[: rng.randrange(len(MESSAGE))]
    elif kind == 4:
        body = MESSAGE.replace(b"What is two plus two?", "\u202e\u0000\ufffd".encode() * rng.randrange(1, 1000))
    else:
        body = (
            b'{"model":"claude-haiku-4-5","max_tokens":20,"messages":[{"role":"user","content":"'
            + b"a" * rng.choice([10, 100000, 300000])
            + b'"}]}'
        )
    return request(
        b"POST",
        rng.choice([b"/v1/messages", b"/v1/messages/count_tokens", b"/finch/feedback"]),
        b"HTTP/1.1",
        plain(body),
        body,
    )


KINDS = {
    "path": path_case,
    "request line": line_case,
    "headers": header_case,
    "framing": framing_case,
    "body": body_case,
}


def cases(count: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """``count`` cases, drawn evenly across the kinds; the same seed gives the same cases."""
    rng = random.Random(seed)
    names = list(KINDS)
    for k in range(count):
        name = names[k % len(names)]
        yield name, KINDS[name](rng)


class Reply:
    """The first response on a connection, parsed with httptools (the parser uvicorn uses)."""

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.complete = False
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_message_complete(self) -> None:
        self.complete = True


async def send(host: str, port: int, payload: bytes, timeout: float) -> tuple[int | None, bool]:
    """(status or None when closed unanswered, whether finch wrote it rather than relaying the upstream)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return None, True
    reply = Reply()
    try:
        writer.write(payload)
        await writer.drain()
        deadline = time.monotonic() + timeout
        while not reply.complete:
            data = await asyncio.wait_for(reader.read(65536), max(0.01, deadline - time.monotonic()))
            if not data:
                break
            try:
                reply.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                break
            if reply.complete and reply.parser.get_status_code() == 100:
                reply.complete = False  # "100 Continue" is interim: read on to the final answer
    except (OSError, TimeoutError, httptools.HttpParserError):
        pass
    finally:
        writer.close()
    try:
        status = reply.parser.get_status_code()
    except Exception:  # no status line arrived
        return None, True
    return status, reply.headers.get(b"x-finch-source") != b"upstream"


async def fuzz(host: str, port: int, count: int, seed: int, concurrency: int, timeout: float) -> dict:
    statuses: collections.Counter[str] = collections.Counter()
    finch_5xx: list[tuple[str, int, bytes]] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(kind: str, payload: bytes) -> None:
        async with gate:
            status, by_finch = await send(host, port, payload, timeout)
        statuses["closed" if status is None else str(status)] += 1
        if status is not None and status >= 500 and by_finch:
            finch_5xx.append((kind, status, payload[:200]))

    started = time.monotonic()
    await asyncio.gather(*(one(kind, payload) for kind, payload in cases(count, seed)))
    return {
        "cases": count,
        "seconds": round(time.monotonic() - started, 1),
        "statuses": dict(sorted(statuses.items())),
        "finch_5xx": len(finch_5xx),
        "finch_5xx_examples": [f"{kind}: {status} <- {payload!r}" for kind, status, payload in finch_5xx[:10]],
    }


class ErrorCount(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(
            f"{record.name}: {record.getMessage()} {record.exc_info[1]!r}"[:300]
            if record.exc_info
            else f"{record.name}: {record.getMessage()}"[:300]
        )


def main() -> None:
    import httpx

    from finch.config import load_settings
    from finch.server.app import build_app
    from finch.server.runner import ServerThread
    from finch.teacher.corpus import Corpus
    from finch.teacher.server import Teacher, TeacherConfig, build_teacher_app

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = parser.parse_args()

    qa = [("What is two plus two?", "Two plus two is four.")]
    teacher = ServerThread(build_teacher_app(Teacher(Corpus(qa), TeacherConfig(require_auth=False)))).start()
    with tempfile.TemporaryDirectory(prefix="finch-rawfuzz-") as home:
        # Short deadlines, so that the truncated cases end in seconds; the rest are finch's defaults.
        overrides = {
            "home": home,
            "upstream_url": teacher.url,
            "preset": "tiny",
            "header_timeout": 2,
            "body_timeout": 2,
        }
        settings = load_settings(overrides, environ={})
        finch = ServerThread(build_app(settings), settings=settings).start()
        errors = ErrorCount()
        logging.getLogger("finch").addHandler(errors)
        try:
            report = asyncio.run(fuzz(finch.host, finch.port, args.cases, args.seed, args.concurrency, timeout=10))
            with httpx.Client(base_url=finch.url, timeout=30, headers={"x-api-key": "fuzz-key"}) as client:
                ask = {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 20,
                    "messages": [{"role": "user", "content": qa[0][0]}],
                }
                report["healthy_after"] = (
                    client.get("/healthz").status_code == 200
                    and client.post("/v1/messages", json=ask).json()["content"][0]["text"] == qa[0][1]
                )
            report["finch_errors_logged"] = len(errors.messages)
            report["finch_errors_examples"] = errors.messages[:10]
        finally:
            finch.stop()
            teacher.stop()
    report["command"] = "python " + " ".join(sys.argv)
    report["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rawfuzz.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
