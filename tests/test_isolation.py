"""Nothing leaks between users: a fuzzed multi-tenant stream through two replicas of finch.

Eight principals send the same questions through replicas A and B at random, on one PostgreSQL log
and one shared home, with trainers learning every namespace. The teacher ends each answer with a
marker of the API key that asked ("[for <its last 8 characters>]"). Six principals learn alone (one
of them through a token finch issued); two share a namespace an administrator placed both keys in,
and their keys end alike, so their answers are the same words. The test passes only if no answer
ever carries the marker of a principal outside the asker's namespace, and if the two that share do
get, locally, answers one of them taught.

Then the same inside one shared key: a product's backend asks for eight end users, naming each
(metadata.user_id). The teacher marks the answers to three questions with the end user they were for
("[for end user <id>]"), as "What is my balance?" would be. No end user may ever see another's
marker, and an answer that at least share_after_users end users were given alike does reach an end
user who never asked it."""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import psycopg
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


@contextlib.contextmanager
def two_replicas(teacher: Teacher, home, database_url: str) -> Iterator[list[tuple[ServerThread, Any]]]:
    """The teacher, and two replicas of finch on one log and one home: [(server, app), ...]."""
    upstream = ServerThread(build_teacher_app(teacher)).start()
    settings = {"home": str(home), "upstream_url": upstream.url, "database_url": database_url, **SETTINGS}
    apps = [build_app(load_settings(settings, environ={})) for _ in range(2)]
    servers = [ServerThread(app).start() for app in apps]
    try:
        yield list(zip(servers, apps, strict=True))
    finally:
        for server in (*servers, upstream):
            server.stop()


def teach_until_local(ask_a_round: Callable[[], list[str]], replicas, namespaces: set[str]) -> None:
    """Ask rounds of questions (each returns its routes), every replica's trainers learning each
    round, until a whole round is answered locally."""
    for _ in range(40):
        routes = ask_a_round()
        for _, app in replicas:
            for namespace in namespaces:
                assert app.state.proxy.learning.drain(120, namespace)
        if all(route == "local" for route in routes):
            return
    pytest.fail(f"{sorted(namespaces)} never answered locally")


@pytest.fixture
def tenants(database_url, tmp_path):
    home = tmp_path / "shared-home"
    keys = Keys(home)
    _, token = keys.create_token("token-ns")
    for key in SHARED:
        keys.add_upstream("team-shared", key)
    principals = [Principal(key, keys.namespace_of_upstream(key)) for key in ALONE]
    principals.append(Principal(TOKEN_KEY, "token-ns", token))
    principals += [Principal(key, "team-shared") for key in SHARED]
    with two_replicas(Teacher(Corpus(TRAIN), TeacherConfig(mark_caller=True)), home, database_url) as replicas:
        yield principals, replicas


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
    teach_until_local(
        lambda: [ask(p, q)[0] for p in teaching for q in rng.sample(questions, len(questions))],
        replicas,
        {p.namespace for p in teaching},
    )
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


PERSONAL = frozenset(q for q, _ in TRAIN[4:])  # three questions whose answers are each end user's own
END_USERS = [f"user-{i}" for i in range(8)]
END_USER_MARKER = re.compile(r"\[for end user ([^\]]*)\]")


@pytest.fixture
def shop(database_url, tmp_path):
    """Two replicas; one upstream key, marked as serving many end users."""
    home = tmp_path / "shared-home"
    Keys(home).add_upstream("shop", "fake-key-shop-backend", end_users=True)
    with two_replicas(Teacher(Corpus(TRAIN), TeacherConfig(personal=PERSONAL)), home, database_url) as replicas:
        yield replicas


def test_end_users_inside_one_key_see_no_answer_fewer_than_k_of_them_were_given(shop, database_url):
    replicas = shop
    rng = random.Random(1)

    def ask(user: str, question: str) -> str:
        server, _ = rng.choice(replicas)
        client = anthropic.Anthropic(base_url=server.url, api_key="fake-key-shop-backend", max_retries=0)
        raw = client.messages.with_raw_response.create(
            model=MODEL, max_tokens=100, messages=[{"role": "user", "content": question}], metadata={"user_id": user}
        )
        text = raw.parse().content[0].text
        assert set(END_USER_MARKER.findall(text)) <= {user}, f"{user} was answered {text!r}"
        return raw.headers["x-finch-source"]

    # Three end users learn the common questions, and the first of them the personal ones too, until
    # the common ones are answered locally.
    common = [q for q, _ in TRAIN if q not in PERSONAL]

    def a_round() -> list[str]:
        routes = [ask(user, q) for user in END_USERS[:3] for q in rng.sample(common, len(common))]
        return routes + [ask(END_USERS[0], q) for q in PERSONAL]

    teach_until_local(a_round, replicas, {"shop"})
    # Then every end user, at random, through either replica.
    asked_before: set[tuple[str, str]] = set()
    shared_on_first_ask = 0
    questions = [q for q, _ in TRAIN]
    for _ in range(120):
        user, question = rng.choice(END_USERS), rng.choice(questions)
        source = ask(user, question)
        if question not in PERSONAL and (user, question) not in asked_before and source == "local":
            shared_on_first_ask += 1  # three other end users were given it alike
        asked_before.add((user, question))
    assert shared_on_first_ask > 0, "no end user was ever answered what the others were given alike"
    with psycopg.connect(database_url) as db:
        db.execute("SELECT set_config('finch.namespace', 'shop', false)")  # row-level security: its rows
        withheld = db.execute("SELECT COUNT(*) FROM requests WHERE reason = 'not_shared'").fetchone()[0]
    assert withheld > 0, "an end user's own answer was never even offered to another: the test shows nothing"
