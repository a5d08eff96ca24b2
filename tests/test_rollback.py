"""Audits that find the models serving bad answers beyond the bound roll them back."""

from finch.config import Settings
from finch.conversation import Conversation
from finch.learning.ensemble import Ensemble
from finch.models.checkpoint import latest
from finch.policy.decide import Attempt, Candidate, Decision


def ask(text):
    return Conversation("", (("user", text),))


# A sampled forward whose withheld local answer disagrees with Claude's: audited bad.
BAD_AUDIT = Decision(
    "forward", "sampled", Attempt((Candidate("Bananas.", "recalled", 0.99),), chosen=0, audit_chance=0.1)
)


def test_audited_bad_answers_beyond_the_bound_roll_the_models_back(tmp_path):
    ensemble = Ensemble(Settings(home=tmp_path, preset="tiny"))
    for i in range(3):
        ensemble.learn_from_claude(ask(f"question {i}"), f"answer {i}")
    ensemble.save()
    good_step = ensemble.models.generator.step
    for i in range(3):
        ensemble.learn_from_claude(ask(f"other {i}"), f"reply {i}")
    ensemble.save()  # the checkpoint whose models the audits will judge
    assert ensemble.models.generator.step > good_step

    for i in range(25):
        ensemble.learn_from_claude(ask(f"audit {i}"), "Paris is the capital of France.", BAD_AUDIT)
        if ensemble.rollbacks:
            break
    assert ensemble.rollbacks == 1
    assert ensemble.models.generator.step == good_step
    assert ensemble.status()["rollbacks"] == 1
    # The audited-bad checkpoint is gone: a restart cannot load it.
    assert latest(tmp_path / "models" / "generator", "generator", ensemble.tokenizer.hash).meta["step"] == good_step


def test_a_few_bad_audits_are_not_enough(tmp_path):
    ensemble = Ensemble(Settings(home=tmp_path, preset="tiny"))
    ensemble.learn_from_claude(ask("q"), "a")
    ensemble.save()
    ensemble.learn_from_claude(ask("q2"), "a2")
    ensemble.save()
    for i in range(5):
        ensemble.learn_from_claude(ask(f"audit {i}"), "Paris.", BAD_AUDIT)
    assert ensemble.rollbacks == 0  # 5 audits cannot show anything with 95% confidence
