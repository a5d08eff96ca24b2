"""Request checks, eligibility, response summaries and prices: the pure parts of the proxy."""

import gzip
import json
import logging

import pytest

from finch.dialects import anthropic
from finch.errors import InvalidRequest
from finch.policy.eligibility import eligibility
from finch.pricing import PriceTable
from finch.sse import decode_body, sse_event


def body(**extra):
    return {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], **extra}


def test_valid_request_keeps_every_field():
    parsed = anthropic.parse(json.dumps(body(stream=True, thinking={"type": "enabled"})).encode())
    assert parsed.stream and parsed.model == "m" and parsed.body["thinking"] == {"type": "enabled"}


def test_invalid_request_message_names_the_field():
    with pytest.raises(InvalidRequest, match="max_tokens"):
        anthropic.parse(b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}')


@pytest.mark.parametrize(
    ("request_body", "reason"),
    [
        (body(), "eligible"),
        (body(system="be nice"), "eligible"),
        (body(tools=[{"name": "t"}]), "ineligible:tools"),
        (body(messages=[{"role": "user", "content": [{"type": "image", "source": {}}]}]), "ineligible:image"),
        (
            body(messages=[{"role": "user", "content": [{"type": "document", "source": {}}]}]),
            "ineligible:document",
        ),
        (
            body(messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x"}]}]),
            "ineligible:tools",
        ),
        (
            body(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "prefill"}]),
            "ineligible:prefill",
        ),
        (body(system="\ud800"), "ineligible:not_unicode"),  # JSON's escapes allow a lone surrogate
    ],
)
def test_eligibility(request_body, reason):
    conversation, why = eligibility(request_body)
    assert why == reason
    assert (conversation is not None) == (reason == "eligible")


def test_whole_conversation_is_kept():
    conversation, _ = eligibility(
        body(
            system="sys",
            messages=[
                {"role": "user", "content": "q1"},
                {"role": "assistant", "content": "a1"},
                {"role": "user", "content": [{"type": "text", "text": "q"}, {"type": "text", "text": "2"}]},
            ],
        )
    )
    assert conversation.system == "sys"
    assert conversation.turns == (("user", "q1"), ("assistant", "a1"), ("user", "q2"))


def _sse(*pieces, stop="end_turn"):
    events = [
        sse_event(
            "message_start",
            {"type": "message_start", "message": {"usage": {"input_tokens": 11, "output_tokens": 1}}},
        ),
        sse_event("content_block_start", {"type": "content_block_start", "content_block": {"type": "text"}}),
    ]
    events += [
        sse_event("content_block_delta", {"type": "content_block_delta", "delta": {"type": "text_delta", "text": p}})
        for p in pieces
    ]
    if stop:
        events.append(
            sse_event(
                "message_delta",
                {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 7}},
            )
        )
    return b"".join(events)


def test_sse_summary_reads_usage_and_text():
    summary = anthropic.summarize(_sse("Hello", " world"), is_sse=True)
    assert (summary.input_tokens, summary.output_tokens, summary.text) == (11, 7, "Hello world")


def test_sse_summary_of_a_cut_stream_has_no_text():
    assert anthropic.summarize(_sse("Hel", stop=None), is_sse=True).text is None


def test_sse_summary_with_crlf_line_endings():
    raw = _sse("a", "b").replace(b"\n", b"\r\n")
    assert anthropic.summarize(raw, is_sse=True).text == "ab"


def test_json_summary_and_gzip():
    message = {
        "content": [{"type": "text", "text": "hi"}],
        "usage": {"input_tokens": 3, "output_tokens": 1},
        "stop_reason": "end_turn",
    }
    raw = gzip.compress(json.dumps(message).encode())
    summary = anthropic.summarize(decode_body([raw[:10], raw[10:]], "gzip"), is_sse=False)
    assert (summary.text, summary.input_tokens) == ("hi", 3)


def test_tool_use_answers_are_not_examples():
    message = {"content": [{"type": "tool_use", "id": "x"}], "usage": {"input_tokens": 3, "output_tokens": 1}}
    assert anthropic.summarize(json.dumps(message).encode(), is_sse=False).text is None


def test_prices_match_their_row_and_overrides():
    table = PriceTable({"claude-haiku-4-5": {"input": 2.0, "output": 4.0}, "my-model": {"input": 0.5}})
    assert table.price("claude-opus-4-1-20250805") == {"input": 15.0, "output": 75.0}
    assert table.price("claude-3-5-haiku-latest") == {"input": 0.8, "output": 4.0}
    assert table.cost("claude-haiku-4-5-20251001", 1_000_000, 1_000_000) == pytest.approx(6.0)
    assert table.cost("claude-sonnet-4-5", 0, 0, cache_read_input_tokens=1_000_000) == pytest.approx(0.3)
    assert table.cost("claude-sonnet-4-5", 0, 0, cache_creation_input_tokens=1_000_000) == pytest.approx(3.75)
    assert table.cost("claude-fable-5-1", 0, 0, cache_read_input_tokens=1_000_000) == pytest.approx(0.25)
    assert table.cost("my-model-v2", 1_000_000, 0) == pytest.approx(0.5)
    assert table.cost("unknown-model", 1_000_000, 0) == pytest.approx(3.0)


def test_a_model_newer_than_the_table_takes_its_familys_newest_row(caplog):
    """claude-opus-4-8 once took claude-opus-4's $15/$75 where Opus 4.5 and later cost $5/$25."""
    table = PriceTable()
    assert table.row_for("claude-opus-4-9-20270101") == "claude-opus-4-8"  # between rows: the nearest below
    assert table.row_for("claude-opus-9") == "claude-opus-5-5"  # past every row: the newest
    assert table.row_for("claude-haiku-7") == "claude-haiku-4-5"
    assert table.row_for("claude-2-1-sonnet") == "claude-3-7-sonnet"  # older than every row: the oldest
    assert table.price("claude-opus-4-9") == {"input": 5.0, "output": 25.0}
    with caplog.at_level(logging.WARNING, logger="finch.pricing"):
        for _ in range(3):
            table.cost("claude-sonnet-6", 10, 10)
            table.cost("claude-sonnet-4-5", 10, 10)
    logged = [r.getMessage() for r in caplog.records if "'claude-sonnet-" in r.getMessage()]
    assert len(logged) == 1 and "'claude-sonnet-6'" in logged[0] and "as claude-sonnet-5-5" in logged[0]


def test_every_reason_finch_logs_is_explained_in_words():
    from finch.vocabulary import EXPLAINED, Reason, explain

    assert set(EXPLAINED) == set(Reason)
    for why in ("tools", "system_blocks", "role", "prefill", "too_long", "not_unicode", "image", "document", "content"):
        assert explain(f"ineligible:{why}") != explain("ineligible:something-new"), why
    assert "medical" in explain("ineligible:safety:medical")
    assert "invalid_request_error" in explain("invalid_request_error")
