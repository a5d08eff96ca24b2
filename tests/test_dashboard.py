"""The dashboard: its data against /finch/stats, the client token, and the page in a real browser
(headless Chromium from the system's packages, driven by Playwright)."""

from __future__ import annotations

import os
import shutil
import threading

import anthropic
import httpx
import pytest

from finch.server.runner import ServerThread
from finch.teacher.corpus import Corpus
from finch.teacher.server import Teacher, build_teacher_app
from tests.conftest import flush
from tests.test_learning_e2e import KEY, MODEL, TRAIN, Finch, train_until_local

TOKEN = "dashboard-token"


def test_the_dashboard_data_matches_stats_and_asks_for_the_token(start_finch, teacher):
    finch = start_finch(teacher.url, client_token=TOKEN)
    empty = httpx.get(finch.url + "/finch/dashboard.json", headers={"x-finch-token": TOKEN}).json()
    assert empty["totals"]["requests"] == 0 and empty["series"] == [] and empty["recent"] == []
    sdk = anthropic.Anthropic(base_url=finch.url, api_key=KEY, default_headers={"x-finch-token": TOKEN})
    for question in ("What is the capital of France?", "How do I reset my password?"):
        sdk.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": question}])
    flush(finch)

    page = httpx.get(finch.url + "/finch/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "dashboard.json" in page.text and "capital of France" not in page.text  # the page holds no data
    for path in ("/finch/dashboard.json", "/finch/stats"):
        refused = httpx.get(finch.url + path)
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    refused = httpx.post(finch.url + "/finch/feedback", json={"request_id": "req_finch_x", "good": False})
    assert refused.status_code == 401

    headers = {"x-finch-token": TOKEN}
    data = httpx.get(finch.url + "/finch/dashboard.json", headers=headers).json()
    stats = httpx.get(finch.url + "/finch/stats", headers=headers).json()
    assert data["totals"] == stats["totals"] and data["totals"]["requests"] == 2
    assert sum(point["requests"] for point in data["series"]) == 2
    assert [row["route"] for row in data["recent"]] == ["forward", "forward"]
    assert data["recent"][0]["why"] and data["recent"][0]["question"] is None  # forwarded: no text shown
    assert data["learning"]["phase"] == "cold_start" and data["learning"]["threshold"] is None
    assert data["namespaces"] == [{"namespace": "default", "requests": 2, "until_first_local": None}]
    assert TOKEN not in str(data) and KEY not in str(data)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def trained_with_token(tmp_path_factory):
    """A finch that answers TRAIN locally, with a client token set."""
    teacher = ServerThread(build_teacher_app(Teacher(Corpus(TRAIN)))).start()
    home = tmp_path_factory.mktemp("dashboard-home")
    finch = Finch(home, teacher.url, client_token=TOKEN)
    train_until_local(lambda question: finch.ask(question)[0], [q for q, _ in TRAIN])
    yield finch
    finch.server.stop()
    teacher.stop()


@pytest.mark.slow
def test_the_dashboard_in_a_real_browser(trained_with_token, tmp_path):
    """While questions stream through finch, the page shows what /finch/stats says; its "bad answer"
    button reaches finch's feedback, and the question is sent to Claude from then on."""
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium for the browser test (see .ci/run)")
        pytest.skip("no system chromium: apt-get install chromium")
    from playwright.sync_api import expect, sync_playwright

    finch = trained_with_token
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            for question, _ in TRAIN:
                finch.ask(question)

    streaming = threading.Thread(target=stream, daemon=True)
    streaming.start()
    headers = {"x-finch-token": TOKEN}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(f"{finch.url}/finch/#token={TOKEN}")  # a fragment: never sent to the server
            expect(page.locator("#recent tr[data-route=local]").first).to_be_visible(timeout=20_000)
            stop.set()
            streaming.join(timeout=60)
            flush(finch)
            stats = httpx.get(finch.url + "/finch/stats", headers=headers).json()
            totals, learning = stats["totals"], stats["learning"]
            # The next poll shows the figures as they now stand.
            expect(page.locator("#requests")).to_have_text(f"{totals['requests']:,}", timeout=10_000)
            share = 100 * totals["local"] / (totals["local"] + totals["forwarded"])
            expect(page.locator("#local-share")).to_have_text(f"{share:.1f}%")
            expect(page.locator("#threshold")).to_have_text(f"{learning['threshold']:.2f}")
            expect(page.locator("#learned")).to_have_text(f"{learning['learned']:,}")
            expect(page.locator("#phase")).to_have_text(learning["phase"].replace("_", " "))
            (namespace,) = stats["namespaces"]  # one person's finch: its first local answer, after how many
            expect(page.locator("#first-local")).to_have_text(f"{namespace['until_first_local']:,}")
            assert page.locator("#chart-local svg path").count() >= 1
            page.screenshot(path=os.environ.get("FINCH_DASHBOARD_SCREENSHOT", str(tmp_path / "dashboard.png")))

            row = page.locator("#recent tr[data-route=local]").first
            request_id = row.get_attribute("data-id")
            question = row.locator("td.qa b").inner_text()
            row.locator("button.bad-answer").click()
            expect(page.locator(f'#recent tr[data-id="{request_id}"] button.bad-answer')).to_have_text("marked bad")
        finally:
            browser.close()
    flush(finch)
    assert finch.ask(question)[0] == "upstream"  # the mark reached finch: that question goes to Claude now
