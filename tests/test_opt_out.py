"""A client's opt-out for one request (x-finch-opt-out): Claude answers it, and with "learning" it is
neither kept nor learned from."""

from __future__ import annotations

import httpx

from finch.store.db import read_rows
from tests.conftest import TEST_KEY, flush

MESSAGE = {"model": "claude-haiku-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "Hello there"}]}


def test_an_opted_out_request_is_forwarded_and_kept_only_when_learning_is_not_refused(finch, home):
    sent = {}
    for opt_out in ("", "local", "local, learning"):
        headers = {"x-api-key": TEST_KEY, **({"x-finch-opt-out": opt_out} if opt_out else {})}
        response = httpx.post(finch.url + "/v1/messages", json=MESSAGE, headers=headers)
        assert response.status_code == 200 and response.headers["x-finch-source"] == "upstream"
        sent[opt_out] = response.headers["x-finch-request-id"]
    flush(finch)
    reasons = {r["id"]: r["reason"] for r in read_rows(home / "finch.db", "SELECT id, reason FROM requests")}
    kept = {r["request_id"] for r in read_rows(home / "finch.db", "SELECT request_id FROM examples")}
    assert reasons[sent["local"]] == reasons[sent["local, learning"]] == "opted_out"
    assert reasons[sent[""]] != "opted_out"
    assert sent[""] in kept and sent["local"] in kept and sent["local, learning"] not in kept
