import asyncio

import httpx2
import pytest

from finch.errors import UpstreamUnreachable
from finch.server.runner import free_port
from finch.upstream.client import UpstreamClient, _retry_after, _should_retry


def response(status, **headers):
    return httpx2.Response(status, headers=headers)


@pytest.mark.parametrize(
    ("status", "headers", "retry"),
    [
        (429, {}, True),
        (529, {}, True),
        (503, {}, True),
        (400, {}, False),
        (404, {}, False),
        (529, {"x-should-retry": "false"}, False),
        (409, {"x-should-retry": "true"}, True),
        (200, {}, False),
    ],
)
def test_should_retry(status, headers, retry):
    assert _should_retry(response(status, **headers)) is retry


def test_retry_after_forms():
    assert _retry_after(response(429, **{"retry-after": "3"})) == 3.0
    assert _retry_after(response(429, **{"retry-after-ms": "250"})) == 0.25
    assert _retry_after(response(429, **{"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert _retry_after(response(429, **{"retry-after": "soon"})) is None
    assert _retry_after(response(429)) is None


def test_connect_errors_are_retried_then_reported():
    sleeps = []

    async def fake_sleep(seconds):
        sleeps.append(seconds)

    async def go():
        client = UpstreamClient(f"http://127.0.0.1:{free_port()}", max_retries=2, sleep=fake_sleep)
        try:
            await client.send("POST", "/v1/messages", b"", [], b"{}")
        finally:
            await client.aclose()

    with pytest.raises(UpstreamUnreachable, match="3 attempt"):
        asyncio.run(go())
    assert len(sleeps) == 2 and 0.375 <= sleeps[0] <= 0.5 and 0.75 <= sleeps[1] <= 1.0
