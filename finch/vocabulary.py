"""The words finch records for where each request went and why: one list, shared by the policy, the
request log, the metrics and ``finch stats``, which explains each in a sentence.

Both are string enums, so a value is its own word in SQL, JSON and metric labels. Two kinds of
reason are open-ended and stay plain strings: ``ineligible:<why>`` (policy/eligibility.py) and the
API's error type when finch answers an error itself (``invalid_request_error``, ...).
"""

from __future__ import annotations

from enum import StrEnum

# The namespace of everything learned when principals are not told apart (isolation "none"), and of
# every row logged before namespaces existed; and the namespace of a request whose principal could not
# be resolved: logged, forwarded, never learned from.
DEFAULT_NAMESPACE = "default"
UNRESOLVED = ""


class Route(StrEnum):
    FORWARD = "forward"  # Claude answered (or the upstream did, for any other path)
    LOCAL = "local"  # finch answered
    REJECT = "reject"  # finch answered a client mistake with an error of its own


class Reason(StrEnum):
    PASSTHROUGH = "passthrough"
    LEARNING_OFF = "learning_off"
    COLD_START = "cold_start"
    FEEDBACK_FORWARD = "feedback_forward"
    ANSWERS_VARY = "answers_vary"
    UNCERTIFIED = "uncertified"
    ROUTER_FORWARD = "router_forward"
    LOCAL_TIMEOUT = "local_timeout"
    UNRESOLVED_PRINCIPAL = "unresolved_principal"
    LOG_UNAVAILABLE = "log_unavailable"
    OPTED_OUT = "opted_out"
    END_USER_MISSING = "end_user_missing"
    NOT_SHARED = "not_shared"
    LOCAL_TOO_LONG = "local_too_long"
    VALIDATOR_REJECT = "validator_reject"
    SAMPLED = "sampled"
    OVER_BOUND = "over_bound"
    LOCAL_BUSY = "local_busy"
    SERVER_BUSY = "server_busy"
    LOCAL = "local"
    REPEAT = "repeat"
    IMPORTED = "imported"


EXPLAINED: dict[str, str] = {
    Reason.PASSTHROUGH: "not a Messages request: passed through unchanged",
    Reason.LEARNING_OFF: "learning is switched off (learning = false)",
    Reason.COLD_START: "finch is still learning its first answers; it serves nothing yet",
    Reason.FEEDBACK_FORWARD: "a local answer to this question was reported or audited bad",
    Reason.ANSWERS_VARY: "Claude's own answers to this question differ, so none is repeated",
    Reason.UNCERTIFIED: "no operating point is certified under the bound yet",
    Reason.ROUTER_FORWARD: "the router judged the question beyond the local models",
    Reason.LOCAL_TIMEOUT: "the local attempt took longer than local_budget_s",
    Reason.UNRESOLVED_PRINCIPAL: "no credential named whose request it was, so nothing learned may answer it",
    Reason.LOG_UNAVAILABLE: "the log could not be written, and an answer it cannot count is not served",
    Reason.OPTED_OUT: "the client or its key asked for Claude's answer (x-finch-opt-out, finch keys --opt-out)",
    Reason.END_USER_MISSING: "its key serves many end users, and the request did not say whose it was",
    Reason.NOT_SHARED: "the answers finch had were given to other end users, too few of them to share",
    Reason.LOCAL_TOO_LONG: "no local answer fit in the request's max_tokens",
    Reason.VALIDATOR_REJECT: "the local answer scored under the certified operating point",
    Reason.SAMPLED: "an audit: finch had an answer, and asked Claude to check it",
    Reason.OVER_BOUND: "an audit: recent audits ran over the bound, so every answer is checked",
    Reason.LOCAL_BUSY: "the local models were busy with another request",
    Reason.SERVER_BUSY: "other requests were waiting, so finch did not stop to think",
    Reason.LOCAL: "answered locally at the certified operating point",
    Reason.REPEAT: "answered locally with Claude's stored answer to the same question",
    Reason.IMPORTED: "Claude's answer from history read in by finch import",
}
_INELIGIBLE = {
    "tools": "the request carries tools, which only Claude can use",
    "system_blocks": "the system prompt is not plain text",
    "role": "a message has a role finch does not know",
    "prefill": "the last turn is not the user's (a prefilled answer)",
    "too_long": "longer than the local models can read",
    "not_unicode": "the text holds a lone surrogate, not valid Unicode",
    "image": "the request holds an image",
    "document": "the request holds a document",
    "content": "a message holds content other than text",
    "choices": "several answers were asked for (n > 1)",
    "format": "a structured response format was asked for",
}


def explain(reason: str) -> str:
    """A sentence for any reason in the log."""
    if reason in EXPLAINED:
        return EXPLAINED[reason]
    if reason.startswith("ineligible:safety:"):
        return f"a sensitive topic ({reason.rsplit(':', 1)[1]}): always Claude's to answer"
    if reason.startswith("ineligible:"):
        return _INELIGIBLE.get(reason.split(":", 1)[1], "not a plain-text conversation")
    return f"finch answered an error itself ({reason})"
