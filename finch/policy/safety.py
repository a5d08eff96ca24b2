"""Topics that always go to Claude, whatever the models think: a small, documented pattern set.

A local model trained on a few hundred answers must never be the one that answers someone in a
crisis. The patterns cover self-harm and suicide, violence and weapons, abuse, and medical or legal
emergencies. They are deliberately broad: a false match only costs one forwarded request.
"""

from __future__ import annotations

import re

SAFETY_PATTERNS: dict[str, str] = {
    "self_harm": r"\b(suicid\w*|kill(ing)? (my|him|her|them)sel(f|ves)|self[- ]?harm\w*|end (my|his|her) life|"
    r"want to die|cut(ting)? myself|overdos\w*)\b",
    "violence": r"\b(kill|murder|shoot|stab|bomb|attack|hurt)\w* (someone|people|him|her|them|my)\b|\b(weapon|"
    r"explosive|firearm)s?\b",
    "abuse": r"\b(abus(e|ed|ing|ive)|assault(ed)?|rape[ds]?|molest\w*|domestic violence|trafficking)\b",
    "medical_emergency": r"\b(heart attack|stroke|can'?t breathe|chest pain|seizure|unconscious|bleeding heavily|"
    r"poison(ed|ing)?|emergency room|call 911|ambulance)\b",
    "legal_emergency": r"\b(been arrested|under arrest|police (are|is) (here|coming)|restraining order|"
    r"court (date|summons) (is )?(today|tomorrow))\b",
}
_COMPILED = {name: re.compile(pattern, re.IGNORECASE) for name, pattern in SAFETY_PATTERNS.items()}


def sensitive_topic(text: str) -> str | None:
    """The name of the first sensitive topic the text touches, or None."""
    for name, pattern in _COMPILED.items():
        if pattern.search(text):
            return name
    return None
