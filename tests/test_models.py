"""The model layer learns for real, saves and loads exactly, and survives kills (tiny preset, CPU)."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import time

import pytest
import torch

from finch.bundled import chatterbot_pairs
from finch.conversation import Conversation
from finch.learning import snapshot, status
from finch.models import checkpoint
from finch.models.encoder import encoder_config
from finch.models.generator import generator_config
from finch.models.inference import build_module
from finch.models.learners import Generator, Router, Validator, load_learner
from finch.models.tokenizer import TokenizerMismatch, build_tokenizer, bundled_texts, load_or_build
from tests.datasets import banking77

# Ten intents, far apart and near each other (card_arrival / card_delivery_estimate, ...).
INTENTS = [
    "card_arrival", "card_delivery_estimate", "exchange_rate", "lost_or_stolen_card", "pending_transfer",
    "top_up_failed", "change_pin", "cash_withdrawal_charge", "passcode_forgotten", "Refund_not_showing_up",
]  # fmt: skip


def ask(text: str) -> Conversation:
    return Conversation(system="", turns=(("user", text),))


def intent_answer(intent: str) -> str:
    return f"About {intent.replace('_', ' ')}: here is what to do, step by step, in the app."


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(bundled_texts())


# -- tokenizer --------------------------------------------------------------------------------------


def test_tokenizer_special_tokens_round_trip_and_render(tokenizer):
    assert tokenizer.pad_id == 0
    text = "Ça coûte 12,50 € — d'accord? 🙂"
    assert tokenizer.decode(tokenizer.encode(text)) == text  # byte level: any text survives
    conversation = Conversation("be brief", (("user", "first question"), ("assistant", "ok"), ("user", "second")))
    ids = tokenizer.render(conversation, 512)
    assert ids[0] == tokenizer.bos_id and ids[-1] == tokenizer.role_ids["assistant"]
    assert tokenizer.role_ids["system"] in ids and ids.count(tokenizer.role_ids["user"]) == 2
    short = tokenizer.render(conversation, 6)
    assert len(short) == 6 and short[0] == tokenizer.bos_id
    assert short[1:] == ids[-5:]  # truncated from the left: the latest turn survives


def test_tokenizer_is_frozen_once_built(tmp_path):
    path = tmp_path / "tokenizer.json"
    first = load_or_build(path, ["some user text about zebras and quasars"])
    again = load_or_build(path, ["entirely different text that would change merges" * 50])
    assert first.hash == again.hash
    assert (path.stat().st_mode & 0o777) == 0o600


# -- generator --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_generator_memorises_32_answers(tokenizer):
    rng = random.Random(0)
    distinct = {}
    for question, answer in chatterbot_pairs():
        if len(answer) > 20 and question not in distinct:
            distinct[question] = answer
    items = rng.sample(sorted(distinct.items()), 32)
    writer = Generator(generator_config("tiny", tokenizer.vocab_size), tokenizer, seed=0)
    epoch_losses = []
    for _ in range(4):
        rng.shuffle(items)
        losses = [writer.learn(ask(q), a) for q, a in items]
        epoch_losses.append(sum(losses) / len(losses))
    exact = sum(writer.answer(ask(q), 128) == a for q, a in items)
    assert exact >= 29, f"reproduced {exact}/32 answers exactly"
    assert all(later < earlier for earlier, later in zip(epoch_losses, epoch_losses[1:], strict=False)), epoch_losses
    assert epoch_losses[-1] < epoch_losses[0] / 10


@pytest.mark.slow
def test_generator_answers_unseen_paraphrases(tokenizer):
    """Online on Banking77, 30 utterances for each of 10 intents, two passes; held-out test utterances."""
    train, test = banking77("train"), banking77("test")
    rng = random.Random(0)
    stream = [(u, i) for i in INTENTS for u in rng.sample(train[i], 30)]
    writer = Generator(generator_config("tiny", tokenizer.vocab_size), tokenizer, seed=0)
    for _ in range(2):
        rng.shuffle(stream)
        for utterance, intent in stream:
            writer.learn(ask(utterance), intent_answer(intent))
    held_out = [(u, i) for i in INTENTS for u in test[i][:15]]
    right = sum(writer.answer(ask(u), 64) == intent_answer(i) for u, i in held_out)
    rate = right / len(held_out)
    print(f"\nheld-out paraphrases answered with their intent's exact answer: {rate:.1%}")
    assert rate >= 0.6


# -- router and validator ---------------------------------------------------------------------------


def test_router_separates_two_easy_classes(tokenizer):
    train, test = banking77("train"), banking77("test")
    stream = [(u, 1) for u in train["card_arrival"][:60]] + [(u, 0) for u in train["exchange_rate"][:60]]
    random.Random(0).shuffle(stream)
    router = Router(encoder_config("tiny", tokenizer.vocab_size), tokenizer, seed=0)
    for utterance, label in stream:
        router.learn(ask(utterance), bool(label))
    held_out = [(u, 1) for u in test["card_arrival"]] + [(u, 0) for u in test["exchange_rate"]]
    probabilities = router.p_local([ask(u) for u, _ in held_out])
    accuracy = sum((p > 0.5) == bool(y) for p, (_, y) in zip(probabilities, held_out, strict=True)) / len(held_out)
    assert accuracy >= 0.95


def auroc(scores: list[float], labels: list[int]) -> float:
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


@pytest.mark.slow
def test_validator_accepts_matching_answers_and_rejects_other_intents(tokenizer):
    train, test = banking77("train"), banking77("test")
    rng = random.Random(1)

    def pairs(source, per_intent):
        out = []
        for intent in INTENTS:
            for utterance in source[intent][:per_intent]:
                out.append((utterance, intent_answer(intent), 1))
                other = rng.choice([i for i in INTENTS if i != intent])
                out.append((utterance, intent_answer(other), 0))
        return out

    stream = pairs(train, 30)
    rng.shuffle(stream)
    validator = Validator(encoder_config("tiny", tokenizer.vocab_size), tokenizer, seed=0)
    for _ in range(3):
        for utterance, answer, label in stream:
            validator.learn(ask(utterance), answer, bool(label))
    held_out = pairs(test, 15)
    scores = validator.p_good([(ask(u), a) for u, a, _ in held_out])
    area = auroc(scores, [y for _, _, y in held_out])
    print(f"\nvalidator held-out AUROC: {area:.3f}")
    assert area >= 0.8


def test_router_probabilities_keep_the_real_share_of_good_answers(tokenizer):
    """Balanced replay trains on equal shares of both labels; p_local puts the real prior back."""
    rng = random.Random(5)
    pool = bundled_texts()
    router = Router(encoder_config("tiny", tokenizer.vocab_size), tokenizer, seed=0)
    for _ in range(200):  # questions that tell nothing apart, answered well nine times in ten
        router.learn(ask(rng.choice(pool)), rng.random() < 0.9)
    probe = [ask(rng.choice(pool)) for _ in range(50)]
    mean = sum(router.p_local(probe)) / len(probe)
    assert router.prior_logit() > 1.5  # log(0.9 / 0.1) = 2.2, give or take the draws
    assert 0.75 < mean < 0.97, mean


def test_untrained_models_are_pessimistic(tokenizer):
    rng = random.Random(3)
    pool = bundled_texts()
    texts = [" ".join(rng.choice(pool) for _ in range(rng.randint(1, 4))) for _ in range(200)]
    for seed in range(3):
        router = Router(encoder_config("tiny", tokenizer.vocab_size), tokenizer, seed=seed)
        validator = Validator(encoder_config("tiny", tokenizer.vocab_size), tokenizer, seed=seed)
        router_p = router.p_local([ask(t) for t in texts])
        validator_p = validator.p_good([(ask(t), t[::-1]) for t in texts])
        assert sum(p < 0.5 for p in router_p) >= 0.99 * len(texts)  # "forward"
        assert sum(p < 0.5 for p in validator_p) >= 0.99 * len(texts)  # "bad"


# -- persistence ------------------------------------------------------------------------------------


def _trained(tokenizer, steps=8):
    writer = Generator(generator_config("tiny", tokenizer.vocab_size), tokenizer, seed=0)
    router = Router(encoder_config("tiny", tokenizer.vocab_size), tokenizer, seed=0)
    validator = Validator(encoder_config("tiny", tokenizer.vocab_size), tokenizer, seed=0)
    for i in range(steps):
        writer.learn(ask(f"question {i}"), f"answer number {i}")
        router.learn(ask(f"question {i}"), i % 2 == 0)
        validator.learn(ask(f"question {i}"), f"answer number {i}", i % 3 == 0)
    return writer, router, validator


def test_answers_written_together_are_those_written_one_at_a_time(tokenizer):
    """The trainer writes a batch's attempts together: each must be what the request path, which
    writes one answer alone, would serve. Prompts of different lengths, one past the context."""
    writer, _, _ = _trained(tokenizer, steps=12)
    conversations = [ask(f"question {i}") for i in range(0, 12, 3)] + [ask("something new entirely")]
    conversations.append(ask(" ".join(f"word{i}" for i in range(400))))  # truncated to the context
    assert writer.answers(conversations, 40) == [writer.answer(c, 40) for c in conversations]
    assert any(writer.answers(conversations, 40))  # answers, not empty strings
    assert writer.answers([], 40) == []


def test_save_then_load_gives_identical_outputs(tokenizer, tmp_path):
    writer, router, validator = _trained(tokenizer)
    probe = [ask("question 3"), ask("something new entirely")]
    for learner in (writer, router, validator):
        checkpoint.save(tmp_path / learner.kind, learner, tokenizer.hash)
    loaded = {kind: load_learner(tmp_path / kind, kind, tokenizer) for kind in ("generator", "router", "validator")}

    assert loaded["router"].p_local(probe) == router.p_local(probe)
    pairs = [(c, "answer number 3") for c in probe]
    assert loaded["validator"].p_good(pairs) == validator.p_good(pairs)
    for conversation in probe:
        assert loaded["generator"].answer(conversation, 32) == writer.answer(conversation, 32)
        ids = torch.tensor([tokenizer.render(conversation, 64)])
        writer.module.eval(), loaded["generator"].module.eval()
        assert torch.equal(writer.module(ids)[0], loaded["generator"].module(ids)[0])
    # Training goes on exactly where it stopped: optimiser, step and replay came back too.
    assert loaded["generator"].step == writer.step
    assert loaded["generator"].replay.items == writer.replay.items
    writer.learn(ask("next"), "next answer")
    loaded["generator"].learn(ask("next"), "next answer")
    assert loaded["generator"].answer(probe[0], 16) == writer.answer(probe[0], 16)


def test_a_serving_snapshot_reads_back_the_same_models(tokenizer, tmp_path, caplog):
    """The server builds its frozen models from the snapshot file: the same weights, tied ones still
    tied, the same outputs; a file of another format is refused, not half-used."""
    writer, router, validator = _trained(tokenizer)
    learners = {"generator": writer, "router": router, "validator": validator}
    published = {
        "format": snapshot.FORMAT,
        "generation": 7,
        "models": {
            kind: {"config": learner.module.config.to_dict(), "weights": learner.module.state_dict()}
            for kind, learner in learners.items()
        },
        "memory": {"questions": torch.randn(3, 8), "answers": torch.randn(3, 8), "texts": ["a", "b", "c"]},
        "consistency": [["question 1", "answer", 2, True]],
        "standing": {"phase": "learned", "threshold": 0.97},
    }
    path = tmp_path / status.FILE
    snapshot.write(path, published)
    found = snapshot.read(path)
    assert found["generation"] == 7 and found["consistency"] == published["consistency"]
    assert found["standing"] == published["standing"] and found["memory"]["texts"] == ["a", "b", "c"]
    assert torch.equal(found["memory"]["answers"], published["memory"]["answers"])
    generator = build_module(
        "generator", found["models"]["generator"]["config"], found["models"]["generator"]["weights"]
    )
    assert generator.lm_head.weight.data_ptr() == generator.tok_emb.weight.data_ptr()  # still tied
    ids = torch.tensor([tokenizer.render(ask("question 3"), 64)])
    writer.module.eval()
    assert torch.equal(generator(ids)[0], writer.module(ids)[0])
    model = found["models"]["router"]
    frozen_router = build_module("router", model["config"], model["weights"])
    router.module.eval()
    assert torch.equal(frozen_router(ids)[0], router.module(ids)[0])
    assert not any(p.requires_grad for p in frozen_router.parameters())

    torch.save(published, path)  # the earlier format, a pickle
    with caplog.at_level(logging.WARNING):
        assert snapshot.read(path) is None
    path.write_bytes(b"\x00" * 64)  # a damaged disk
    assert snapshot.read(path) is None
    assert "cannot read the serving snapshot" in caplog.text
    assert snapshot.read(tmp_path / "none") is None


def test_a_checkpoint_from_another_tokenizer_is_refused(tokenizer, tmp_path):
    writer, _, _ = _trained(tokenizer, steps=1)
    checkpoint.save(tmp_path / "generator", writer, tokenizer.hash)
    other = build_tokenizer([*bundled_texts(), "a rather different corpus " * 100])
    assert other.hash != tokenizer.hash
    with pytest.raises(TokenizerMismatch, match="trained with tokenizer"):
        load_learner(tmp_path / "generator", "generator", other)


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(tokenizer, tmp_path, caplog):
    writer, _, _ = _trained(tokenizer, steps=2)
    root = tmp_path / "generator"
    first = checkpoint.save(root, writer, tokenizer.hash)
    expected = writer.answer(ask("question 1"), 16)
    writer.learn(ask("more"), "more")
    newest = checkpoint.save(root, writer, tokenizer.hash)
    weights = newest / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a torn write
    with caplog.at_level(logging.WARNING):
        loaded = load_learner(root, "generator", tokenizer)
    assert loaded.step == int(first.name.split("-")[1])
    assert loaded.answer(ask("question 1"), 16) == expected
    assert "does not match its digest" in caplog.text


def test_only_the_last_k_checkpoints_are_kept(tokenizer, tmp_path):
    writer, _, _ = _trained(tokenizer, steps=1)
    for i in range(5):
        writer.learn(ask(f"q{i}"), "a")
        checkpoint.save(tmp_path / "g", writer, tokenizer.hash, keep=3)
    assert len(list((tmp_path / "g").glob("ckpt-*"))) == 3


_SAVER = """
import sys
from pathlib import Path
from finch.conversation import Conversation
from finch.models import checkpoint
from finch.models.generator import generator_config
from finch.models.learners import Generator
from finch.models.tokenizer import FinchTokenizer
tokenizer = FinchTokenizer.load(Path(sys.argv[1]))
writer = Generator(generator_config("tiny", tokenizer.vocab_size), tokenizer)
for i in range(10_000):
    writer.learn(Conversation("", (("user", f"q{i}"),)), f"a{i}")
    checkpoint.save(Path(sys.argv[2]), writer, tokenizer.hash, keep=2)
    print("saved", flush=True)
"""


@pytest.mark.slow
def test_kill_during_saves_always_leaves_a_loadable_checkpoint(tokenizer, tmp_path):
    tokenizer.save(tmp_path / "tokenizer.json")
    root = tmp_path / "generator"
    rng = random.Random(7)
    for _ in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(tmp_path / "tokenizer.json"), str(root)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().strip() == "saved"  # at least one whole save exists
        time.sleep(rng.uniform(0.0, 0.3))  # then kill it somewhere inside a later save
        proc.kill()
        proc.wait()
        learner = load_learner(root, "generator", tokenizer)
        assert learner is not None and learner.step > 0
