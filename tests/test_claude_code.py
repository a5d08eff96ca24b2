"""Claude Code (the npm CLI) through finch to the teacher, end to end.

A tap between Claude Code and finch records what Claude Code sends (each body's SHA-256, the query
string, the beta header) and relays finch's answer as it streams; the teacher records what reaches
it. The two must match byte for byte, and no key may be left in FINCH_HOME.

The CLI is found at $FINCH_CLAUDE_CODE (which .ci/run sets after `npm install`) or as `claude` on
PATH; without it the test is skipped, except in CI.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from finch.teacher.corpus import Corpus
from finch.teacher.server import Teacher, build_teacher_app
from tests.conftest import flush

KEY = "fake-claude-code-e2e-key"  # not a real key: the teacher takes any
PROMPTS = ("What is the capital of France?", "Write a haiku about the sea.")


def _claude() -> str | None:
    return os.environ.get("FINCH_CLAUDE_CODE") or shutil.which("claude")


def tap(target: str, seen: list[dict]) -> Starlette:
    """Record each request, relay it to ``target``, and relay the answer chunk by chunk."""
    client = httpx.AsyncClient(timeout=60)

    async def relay(request: Request) -> StreamingResponse:
        body = await request.body()
        record = {
            "path": request.url.path,
            "query": request.url.query,
            "anthropic-beta": request.headers.get("anthropic-beta"),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "chunks": 0,
            "response": b"",
        }
        seen.append(record)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        upstream = await client.send(
            client.build_request(request.method, target + request.url.path, params=request.url.query, headers=headers,
                                 content=body),
            stream=True,
        )  # fmt: skip

        async def chunks():
            async for chunk in upstream.aiter_raw():
                record["chunks"] += 1
                record["response"] += chunk
                yield chunk
            await upstream.aclose()

        drop = ("content-length", "transfer-encoding", "connection")
        kept = {k: v for k, v in upstream.headers.items() if k.lower() not in drop}
        return StreamingResponse(chunks(), status_code=upstream.status_code, headers=kept)

    return Starlette(routes=[Route("/{path:path}", relay, methods=["GET", "POST", "HEAD"])])


def streamed_text(sse: bytes) -> str:
    text = []
    for line in sse.decode().splitlines():
        if line.startswith("data: "):
            event = json.loads(line[6:])
            if event.get("type") == "content_block_delta" and event["delta"].get("type") == "text_delta":
                text.append(event["delta"]["text"])
    return "".join(text)


def test_claude_code_through_finch(servers, home, tmp_path):
    claude = _claude()
    if claude is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Claude Code for this test (see .ci/run)")
        pytest.skip("Claude Code is not installed (npm install @anthropic-ai/claude-code)")
    from finch.config import load_settings
    from finch.server.app import build_app

    teacher = Teacher(Corpus([("What is the capital of France?", "The capital of France is Paris.")]))
    upstream = servers(build_teacher_app(teacher))
    finch = servers(build_app(load_settings({"home": str(home), "upstream_url": upstream.url, "preset": "tiny"}, {})))
    seen: list[dict] = []
    front = servers(tap(finch.url, seen))
    user_home = tmp_path / "user"
    user_home.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(user_home),  # Claude Code's own settings and history stay in the test's directory
        "ANTHROPIC_BASE_URL": front.url,
        "ANTHROPIC_API_KEY": KEY,
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    outputs = []
    for prompt in PROMPTS:
        done = subprocess.run(
            [claude, "-p", prompt], env=env, cwd=user_home, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.strip())
    flush(finch)

    messages = [r for r in seen if r["path"] == "/v1/messages"]
    assert len(messages) >= len(PROMPTS)
    received = [r for r in teacher.received if r["path"] == "/v1/messages"]
    # Byte for byte: every body Claude Code sent reached the teacher unchanged, query and betas kept.
    assert [r["body_sha256"] for r in messages] == [r["body_sha256"] for r in received]
    assert [r["query"] for r in messages] == [r["query"] for r in received] and "beta=true" in messages[0]["query"]
    assert [r["anthropic-beta"] for r in messages] == [r["anthropic-beta"] for r in received]
    assert "claude-code" in (messages[0]["anthropic-beta"] or "")
    # Streaming: the answer came as server-sent events, in more than one piece, and Claude Code printed it.
    answered = [streamed_text(r["response"]) for r in messages]
    assert all(r["chunks"] > 1 for r in messages)
    assert all(output in answered for output in outputs), (outputs, answered)

    # What finch could answer itself: nothing. Each prompt is one request with tools (only Claude can
    # use them) and one tool-free request for the session's title, whose system prompt alone is
    # longer than the local models read.
    logged = httpx.get(finch.url + "/finch/stats").json()["by_reason"]
    assert {row["reason"] for row in logged if row["route"] == "forward"} <= {"ineligible:tools", "ineligible:too_long"}
    assert sum(row["requests"] for row in logged if row["reason"] == "ineligible:tools") == len(PROMPTS)
    for path in Path(home).rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path  # no key at rest
