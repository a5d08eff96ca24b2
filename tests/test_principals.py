"""Whose request it is: namespaces from credentials, through a real finch and the anthropic SDK."""

from __future__ import annotations

import os
import stat

import anthropic
import httpx
import pytest
from click.testing import CliRunner

from finch.cli import main
from finch.keys import Keys
from finch.store.db import read_rows
from finch.vocabulary import DEFAULT_NAMESPACE
from tests.conftest import flush

MESSAGE = {"model": "claude-haiku-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "Hello there"}]}


def namespaces_logged(home) -> list[tuple[str, str]]:
    return [(r["namespace"], r["reason"]) for r in read_rows(home / "finch.db", "SELECT * FROM requests ORDER BY ts")]


def test_each_upstream_key_is_its_own_namespace_and_a_placed_key_joins_one(start_finch, teacher, home):
    keys = Keys(home)
    keys.add_upstream("team", "fake-key-carol-3")
    finch = start_finch(teacher.url, isolation="credential", api_key="fake-server-key-1")
    for api_key in ("fake-key-alice-1", "fake-key-bob-2", "fake-key-alice-1", "fake-key-carol-3"):
        anthropic.Anthropic(base_url=finch.url, api_key=api_key, max_retries=0).messages.create(**MESSAGE)
    bearer = httpx.post(finch.url + "/v1/messages", json=MESSAGE, headers={"authorization": "Bearer fake-key-bob-2"})
    assert bearer.status_code == 200
    nobody = httpx.post(finch.url + "/v1/messages", json=MESSAGE)  # forwarded with the server's key
    assert nobody.status_code == 200 and nobody.headers["x-finch-source"] == "upstream"
    flush(finch)
    logged = namespaces_logged(home)
    alice, bob, alice_again, carol, bob_bearer, unresolved = (ns for ns, _ in logged)
    assert alice == alice_again and bob == bob_bearer and len({alice, bob, carol}) == 3
    assert alice.startswith("key-") and carol == "team"
    assert unresolved == "" and logged[-1][1] == "unresolved_principal"
    stored = b"".join(path.read_bytes() for path in home.rglob("*") if path.is_file())
    assert b"fake-key-alice-1" not in stored and b"fake-key-carol-3" not in stored  # only their HMACs
    assert stat.S_IMODE(os.stat(home / "secret.key").st_mode) == 0o600


def test_a_finch_token_names_its_namespace_and_a_revoked_one_is_refused(start_finch, teacher, home):
    runner = CliRunner()
    made = runner.invoke(main, ["keys", "create", "--home", str(home), "--namespace", "support"])
    assert made.exit_code == 0, made.output
    token = made.output.strip().splitlines()[-1]
    assert token.startswith("fk_") and token not in (home / "keys.json").read_text()
    finch = start_finch(teacher.url, isolation="none")  # a token names its namespace whatever the isolation
    client = anthropic.Anthropic(
        base_url=finch.url, api_key="fake-key-dave-4", max_retries=0, default_headers={"x-finch-token": token}
    )
    client.messages.create(**MESSAGE)
    anthropic.Anthropic(base_url=finch.url, api_key="fake-key-dave-4", max_retries=0).messages.create(**MESSAGE)
    flush(finch)
    assert [ns for ns, _ in namespaces_logged(home)] == ["support", DEFAULT_NAMESPACE]
    key_id = runner.invoke(main, ["keys", "list", "--home", str(home)]).output.split()[0]
    assert runner.invoke(main, ["keys", "revoke", "--home", str(home), key_id]).exit_code == 0
    with pytest.raises(anthropic.AuthenticationError) as refused:
        client.messages.create(**MESSAGE)
    assert "revoked" in str(refused.value)
    forged = httpx.post(finch.url + "/v1/messages", json=MESSAGE, headers={"x-finch-token": "fk_forged"})
    assert forged.status_code == 401 and forged.json()["error"]["type"] == "authentication_error"


def test_a_verdict_counts_only_in_the_namespace_of_who_gives_it(start_finch, teacher, home):
    finch = start_finch(teacher.url, isolation="credential")
    raw = anthropic.Anthropic(base_url=finch.url, api_key="fake-key-erin-5", max_retries=0)
    request_id = raw.messages.with_raw_response.create(**MESSAGE).headers["x-finch-request-id"]
    flush(finch)
    verdict = {"request_id": request_id, "good": False}
    other = httpx.post(finch.url + "/finch/feedback", json=verdict, headers={"x-api-key": "fake-key-frank-6"})
    assert other.status_code == 404  # another namespace's request does not exist for it
    own = httpx.post(finch.url + "/finch/feedback", json=verdict, headers={"x-api-key": "fake-key-erin-5"})
    assert own.status_code == 200


def test_isolation_is_credential_in_the_team_tier_and_none_embedded():
    from finch.config import load_settings

    assert load_settings({}, {}).isolation_mode == "none"
    assert load_settings({"database_url": "postgresql://db/finch"}, {}).isolation_mode == "credential"
    assert load_settings({"database_url": "postgresql://db/finch", "isolation": "none"}, {}).isolation_mode == "none"


def test_stats_and_the_dashboard_show_the_callers_namespace_and_the_admin_token_all(start_finch, teacher, home):
    finch = start_finch(teacher.url, isolation="credential", admin_token="fake-admin-token-7")
    for api_key, times in (("fake-key-gina-7", 2), ("fake-key-hank-8", 3)):
        client = anthropic.Anthropic(base_url=finch.url, api_key=api_key, max_retries=0)
        for _ in range(times):
            client.messages.create(**MESSAGE)
    flush(finch)

    def seen(headers: dict[str, str]) -> tuple[int, int]:
        stats = httpx.get(finch.url + "/finch/stats", headers=headers)
        board = httpx.get(finch.url + "/finch/dashboard.json", headers=headers)
        assert stats.status_code == board.status_code == 200, stats.text
        return stats.json()["totals"]["requests"], len(board.json()["recent"])

    assert seen({"x-api-key": "fake-key-gina-7"}) == (2, 2)
    assert seen({"authorization": "Bearer fake-key-hank-8"}) == (3, 3)
    assert seen({"x-finch-token": "fake-admin-token-7"}) == (5, 5)
    everyone = httpx.get(finch.url + "/finch/stats", headers={"x-finch-token": "fake-admin-token-7"}).json()
    assert sorted(n["requests"] for n in everyone["namespaces"]) == [2, 3]  # each namespace's own count
    metrics = httpx.get(finch.url + "/metrics").text
    counted = [line for line in metrics.splitlines() if line.startswith("finch_requests_total{")]
    assert len(counted) == 2 and {line.split()[-1] for line in counted} == {"2.0", "3.0"}  # by namespace
    assert httpx.get(finch.url + "/finch/stats").status_code == 401  # nobody's


def test_a_replica_keeps_its_loaded_namespaces_within_the_memory_cap(start_finch, teacher):
    finch = start_finch(teacher.url, isolation="credential", max_loaded_mb=1)
    loop = finch.app.state.proxy.learning

    def load(name: str) -> None:  # as if its snapshot of 0.4 MB had loaded, and it was asked again
        loop.tenant(name).size = 400_000
        loop.tenant(name)

    for name in ("team-a", "team-b", "team-c"):
        load(name)
    assert list(loop._tenants) == [DEFAULT_NAMESPACE, "team-b", "team-c"]  # 1 MB: the oldest went
    loop.tenant("team-b")  # asked again: now the most recent
    load("team-d")
    assert list(loop._tenants) == [DEFAULT_NAMESPACE, "team-b", "team-d"]


def test_administrators_changing_the_keys_at_once_lose_none_of_them(home):
    """Six processes each issue ten tokens at the same moment: all sixty are kept."""
    import subprocess
    import sys

    script = "import sys; from pathlib import Path; from finch.keys import Keys\n" \
        "keys = Keys(Path(sys.argv[1]))\nfor _ in range(10): keys.create_token(sys.argv[2])"  # fmt: skip
    procs = [subprocess.Popen([sys.executable, "-c", script, str(home), f"team-{i}"]) for i in range(6)]
    assert all(proc.wait(60) == 0 for proc in procs)
    assert len(Keys(home).entries()) == 60
