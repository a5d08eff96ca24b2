"""What finch prints for people: tables of rows, and a sentence on what learning has reached."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from finch.config import Settings
    from finch.demo import DemoResult


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}" if abs(value) < 100 else f"{value:,.2f}"
        return str(value)

    cells = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [any(isinstance(row.get(c), int | float) for row in rows) for c in columns]  # right-aligned
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(r, widths, numeric, strict=True)).rstrip()
        for r in cells
    ]
    return "\n".join(lines)


def describe_learning(learning: dict[str, Any]) -> str:
    low, high = learning["bad_local_interval"]
    estimate = learning["bad_local_estimate"]
    threshold = learning.get("threshold")
    return (
        f"learned from {learning['learned']} answers; {learning['audits']} audits of would-be-local answers"
        + (
            f", bad-local rate {estimate:.1%} of audited local answers (95% interval {low:.1%} to {high:.1%},"
            " valid however often it is read)"
            if estimate is not None
            else ""
        )
        + (
            f"; operating point P(good) >= {threshold:.2f}, certified: the bad rate among the local answers"
            " served there is under the bound with 95% confidence, however often it is checked"
            if threshold is not None
            else "; operating point: none certified yet, every request is forwarded" + _nearest(learning)
        )
    )


def _nearest(learning: dict[str, Any]) -> str:
    nearest = (learning.get("bound") or {}).get("nearest")
    if not nearest:
        return ""
    to_go = nearest["clean_answers_to_go"]
    return (
        f" (nearest: P(good) >= {nearest['threshold']:.2f}, evidence {nearest['evidence']:.1f} of"
        f" {nearest['evidence_needed']:.0f} needed"
        + ("" if to_go is None else f", about {to_go} clean judged answers in it to go")
        + ")"
    )


def stats_report(settings: Settings, days: int) -> dict[str, Any]:
    """What `finch stats` shows: the log's totals, days and reasons, and the learning status the
    server shows too (``finch.learning.status``). It reads; it creates nothing."""
    from finch.learning.status import learning_status, read_published
    from finch.store.log import open_log
    from finch.vocabulary import explain

    log = open_log(settings, writer=False)
    published = read_published(settings.home)
    backlog = log.backlog(published["position"] if published is not None else {})
    return {
        "totals": log.totals(),
        "by_day": log.by_day(days),
        "by_reason": [{**row, "why": explain(row["reason"])} for row in log.by_reason()],
        "namespaces": log.first_local(),
        "learning": learning_status(published, settings.max_bad_local, backlog),
    }


def describe_demo(result: DemoResult, elapsed: float) -> str:
    t = result.totals
    local = result.local
    first = "none" if result.first_local is None else f"the {_ordinal(result.first_local)}"
    return "\n".join(
        [
            f"{result.imported} past exchanges imported, then {result.requests} live requests:",
            format_table(result.by_quarter, ["quarter", "requests", "forward_rate", "local_share"]),
            "",
            f"{result.requests} live requests in {elapsed:.1f}s (the import's learning included):"
            f" {local} answered locally ({local / max(1, result.requests):.1%}), the first of them {first};"
            f" {result.local_wrong} judged wrong against the teacher's answer; the teacher saw"
            f" {result.teacher_requests}.",
            f"Live and imported together: spent ${t['cost_usd']:.4f}, saved ${t['saved_usd']:.4f}.",
            describe_learning(result.learning),
        ]
    )


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
