"""Does the judge tell the teacher's answers apart, and see a rewording as the same answer?

For each set of answers the benchmarks' teacher gives (``streams.reference_answers``: Banking77,
CLINC150 with an answer of its own for each out-of-scope query, the chat corpus), and for the same
template over the 64 intent names of a home-assistant query set whose utterances finch has never
seen (HWU64's names, no utterances), two error rates, each by the embedding alone (1 − cos under τ)
and by the judge as it rules (``Judge.agrees``, which also calls a swapped word a difference):

* *same answer judged different*: every pair of the teacher's five wordings of each answer, with
  the framing learned first as the trainer learns it: a false "bad" (costs evidence);
* *nearest other answer judged the same*: each answer against the other answer nearest to it: a
  false "good" (a wrong answer the bound would not see).

Usage: python benchmarks/judge_answers.py [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from pathlib import Path

from finch.teacher.corpus import _REWORDINGS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge_threshold import nearest_other, with_framing_learned  # noqa: E402
from streams import reference_answer, reference_answers  # noqa: E402

HOME_ASSISTANT_INTENTS = [
    "alarm_query",
    "alarm_remove",
    "alarm_set",
    "audio_volume_down",
    "audio_volume_mute",
    "audio_volume_up",
    "calendar_query",
    "calendar_remove",
    "calendar_set",
    "cooking_recipe",
    "datetime_convert",
    "datetime_query",
    "email_addcontact",
    "email_query",
    "email_querycontact",
    "email_sendemail",
    "general_affirm",
    "general_commandstop",
    "general_confirm",
    "general_dontcare",
    "general_explain",
    "general_joke",
    "general_negate",
    "general_praise",
    "general_quirky",
    "general_repeat",
    "iot_cleaning",
    "iot_coffee",
    "iot_hue_lightchange",
    "iot_hue_lightdim",
    "iot_hue_lightoff",
    "iot_hue_lighton",
    "iot_hue_lightup",
    "iot_wemo_off",
    "iot_wemo_on",
    "lists_createoradd",
    "lists_query",
    "lists_remove",
    "music_likeness",
    "music_query",
    "music_settings",
    "news_query",
    "play_audiobook",
    "play_game",
    "play_music",
    "play_podcasts",
    "play_radio",
    "qa_currency",
    "qa_definition",
    "qa_factoid",
    "qa_maths",
    "qa_stock",
    "recommendation_events",
    "recommendation_locations",
    "recommendation_movies",
    "social_post",
    "social_query",
    "takeaway_order",
    "takeaway_query",
    "transport_query",
    "transport_taxi",
    "transport_ticket",
    "transport_traffic",
    "weather_query",
]


def measure(answers: list[str]) -> dict[str, float | int]:
    judge = with_framing_learned(answers, random.Random(0))  # Claude's framing, learned before any verdict
    worded = [wording.format(answer=answer) for answer in answers for wording in _REWORDINGS]
    vecs = judge.embed_answers(worded)
    n = len(_REWORDINGS)
    same = [(i * n + x, i * n + y) for i in range(len(answers)) for x, y in itertools.combinations(range(n), 2)]
    plain = vecs[0::n]
    nearest = [(i, int(k)) for i, k in enumerate(nearest_other(plain))]

    def by_embedding(a: str, b: str, va, vb) -> bool:
        return judge._same(a, b) or float(1 - va @ vb) < judge.threshold

    def by_judge(a: str, b: str, va, vb) -> bool:
        return judge.agrees_embedded(a, b, va, vb)[0]

    out: dict[str, float | int] = {"answers": len(answers), "same_pairs": len(same)}
    for name, rule in (("embedding", by_embedding), ("judge", by_judge)):
        out[f"same_judged_different_{name}"] = sum(
            not rule(worded[a], worded[b], vecs[a], vecs[b]) for a, b in same
        ) / len(same)
        out[f"nearest_other_judged_same_{name}"] = sum(
            rule(answers[i], answers[k], plain[i], plain[k]) for i, k in nearest
        ) / len(answers)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sets = {name: sorted(set(reference_answers(name).values())) for name in ("banking77", "clinc150", "chat")}
    sets["home assistant (64 intent names)"] = [reference_answer(i) for i in HOME_ASSISTANT_INTENTS]
    results = {}
    for name, answers in sets.items():
        results[name] = row = measure(answers)
        print(
            f"{name}: {row['answers']} answers; same answer judged different"
            f" {row['same_judged_different_embedding']:.2%} by the embedding, {row['same_judged_different_judge']:.2%}"
            f" by the judge; nearest other answer judged the same {row['nearest_other_judged_same_embedding']:.2%}"
            f" by the embedding, {row['nearest_other_judged_same_judge']:.2%} by the judge",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
