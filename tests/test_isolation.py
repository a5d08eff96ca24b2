"""Nothing leaks between users: a fuzzed multi-tenant stream through two replicas of finch.

Eight principals send the same questions through replicas A and B at random, on one PostgreSQL log
and one shared home, with trainers learning every namespace. The teacher ends each answer with a
marker of the API key that asked ("[for <its last 8 characters>]"). Six principals learn alone (one
of them through a token finch issued); two share a namespace an administrator placed both keys in,
and their keys end alike, so their answers are the same words. The test passes only if no answer
ever carries the marker of a principal outside the asker's namespace, and if the two that share do
get, locally, answers one of them taught."""

from __future__ import annotations

import random
import re

import anthropic
import pytest

from finch.config import load_settings
from finch.keys import Keys
from finch.server.app import build_app
from finch.server.runner import ServerThread
from finch.teacher.corpus import Corpus
from finch.teacher.server import Teacher, TeacherConfig, build_teacher_app
from tests.test_learning_e2e import SETTINGS, TRAIN

pytestmark = pytest.mark.slow

MODEL = "claude-haiku-4-5"
ALONE = [f"fake-key-{i}-tenant{i:02d}x" for i in range(1, 6)]  # five keys, each its own namespace
TOKEN_KEY = "fake-key-6-tenant06x"  # the sixth principal: a finch token, with a key of its own upstream
SHARED = ["fake-key-7-teamSHARE", "fake-key-8-teamSHARE"]  # placed in one namespace; same marker
MARKER = re.compile(r"\[for ([^\]]*)\]")


class Principal:
    def __init__(self, api_key: str, namespace: str, token: str | None = None) -> None:
        self.api_key, self.namespace, self.token = api_key, namespace, token
        self.marker = api_key[-8:]

    def client(self, url: str) -> anthropic.Anthropic:
        headers = {"x-finch-token": self.token} if self.token else None
        return anthropic.Anthropic(base_url=url, api_key=self.api_key, max_retries=0, default_headers=headers)


@pytest.fixture
def tenants(database_url, tmp_path):
    teacher = Teacher(Corpus(TRAIN), TeacherConfig(mark_caller=True))
    upstream = ServerThread(build_teacher_app(teacher)).start()
    home = tmp_path / "shared-home"
    keys = Keys(home)
    _, token = keys.create_token("token-ns")
    for key in SHARED:
        keys.add_upstream("team-shared", key)
    principals = [Principal(key, keys.namespace_of_upstream(key)) for key in ALONE]
    principals.append(Principal(TOKEN_KEY, "token-ns", token))
    principals += [Principal(key, "team-shared") for key in SHARED]
    settings = {"home": str(home), "upstream_url": upstream.url, "database_url": database_url, **SETTINGS}
    apps = [build_app(load_settings(settings, environ={})) for _ in range(2)]
    servers = [ServerThread(app).start() for app in apps]
    yield principals, list(zip(servers, apps, strict=True))
    for server in (*servers, upstream):
        server.stop()


def test_a_fuzzed_stream_of_eight_principals_crosses_nothing_and_shares_what_was_shared(tenants):
    principals, replicas = tenants
    assert len({p.namespace for p in principals}) == 7  # eight principals, two sharing one namespace
    rng = random.Random(0)
    teacher_of_share, learner_of_share = principals[6], principals[7]
    teaching = [principals[0], teacher_of_share]

    def ask(principal: Principal, question: str) -> tuple[str, str]:
        server, _ = rng.choice(replicas)
        raw = principal.client(server.url).messages.with_raw_response.create(
            model=MODEL, max_tokens=100, messages=[{"role": "user", "content": question}]
        )
        text = raw.parse().content[0].text
        markers = set(MARKER.findall(text))
        allowed = {p.marker for p in principals if p.namespace == principal.namespace}
        assert markers and markers <= allowed, f"{principal.namespace} was answered {text!r}"
        return raw.headers["x-finch-source"], text

    # Two namespaces learn until they answer locally: one alone, and the shared one, from one of its two.
    questions = [q for q, _ in TRAIN]
    for _ in range(40):
        routes = [ask(p, q)[0] for p in teaching for q in rng.sample(questions, len(questions))]
        for _, app in replicas:
            for p in teaching:
                assert app.state.proxy.learning.drain(120, p.namespace)
        if all(route == "local" for route in routes):
            break
    else:
        pytest.fail("the teaching namespaces never answered locally")
    # Then everyone, at random, through either replica, the trainers learning as they go.
    asked_before: set[tuple[str, str]] = set()
    shared_on_first_ask = 0
    for _ in range(160):
        principal, question = rng.choice(principals), rng.choice(questions)
        source, _ = ask(principal, question)
        if principal is learner_of_share and (principal.api_key, question) not in asked_before and source == "local":
            shared_on_first_ask += 1  # it never asked this: the other key of its namespace taught it
        asked_before.add((principal.api_key, question))
    assert shared_on_first_ask > 0, "the two principals placed in one namespace never shared an answer"
