"""`finch chat`: an interactive conversation sent turn by turn through a running finch."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx2

HELP = """commands:
  /help    this text
  /stats   finch's totals
  /new     start a new conversation
  /bad     mark the last answer bad (finch learns from it; that question goes to Claude next time)
  /good    mark the last answer good
  /quit    leave"""


class ChatSession:
    def __init__(self, url: str, model: str, max_tokens: int, client: httpx2.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.max_tokens = max_tokens
        self.client = client or httpx2.Client(base_url=self.url, timeout=600)
        self.messages: list[dict[str, str]] = []
        self.last_request_id: str | None = None

    def send(self, text: str) -> tuple[str, str, float]:
        """(answer or error text, route, seconds)."""
        self.messages.append({"role": "user", "content": text})
        body = {"model": self.model, "max_tokens": self.max_tokens, "messages": self.messages}
        started = time.perf_counter()
        response = self.client.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
        elapsed = time.perf_counter() - started
        route = response.headers.get("x-finch-source", "?")
        self.last_request_id = response.headers.get("x-finch-request-id")
        data = response.json()
        if response.status_code != 200:
            self.messages.pop()
            return (
                f"error {response.status_code}: {data.get('error', {}).get('message', data)}",
                route,
                elapsed,
            )
        answer = "".join(b.get("text", "") for b in data.get("content", []) if b.get("type") == "text")
        self.messages.append({"role": "assistant", "content": answer})
        return answer, route, elapsed

    def loop(self, input_fn: Callable[[], str], echo: Callable[[str], None]) -> None:
        if not self._alive():
            echo(f"finch is not answering at {self.url}; start it with `finch serve`.")
            return
        echo(f"talking to {self.model} through {self.url}; /help for commands")
        while True:
            try:
                line = input_fn().strip()
            except (EOFError, KeyboardInterrupt):
                return
            if line in ("/quit", "/exit"):
                return
            if line == "/help":
                echo(HELP)
            elif line == "/stats":
                echo(json.dumps(self.client.get("/finch/stats").json().get("totals"), indent=2))
            elif line in ("/bad", "/good"):
                echo(self.mark(line == "/good"))
            elif line == "/new":
                self.messages.clear()
                echo("(new conversation)")
            elif line:
                try:
                    answer, route, elapsed = self.send(line)
                except httpx2.HTTPError as exc:
                    self.messages.pop()
                    echo(f"could not reach finch: {exc}")
                    continue
                echo(answer)
                echo(f"  [{route}, {elapsed * 1000:.0f} ms]")

    def mark(self, good: bool) -> str:
        if self.last_request_id is None:
            return "nothing to mark yet"
        response = self.client.post("/finch/feedback", json={"request_id": self.last_request_id, "good": good})
        if response.status_code != 200:
            return f"could not record that: {response.json().get('error', {}).get('message', response.text)}"
        return "noted" + (" and learned from" if response.json().get("learned") else "")

    def _alive(self) -> bool:
        try:
            return self.client.get("/healthz", timeout=2).status_code == 200
        except httpx2.HTTPError:
            return False
