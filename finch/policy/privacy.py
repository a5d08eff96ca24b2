"""Privacy inside a shared namespace: whose answer may be served to whom.

A product's backend sends many end users' questions with one key, and says who each one is
(``x-finch-end-user``, or the body's ``metadata.user_id`` / ``user``). An answer Claude gave one end
user is served to another only once Claude has given it, in words the judge finds equal, to at
least ``k`` distinct end users: an answer that differs between users ("What is my balance?") is then
never shared, and one that everyone gets ("How do I reset my password?") is.

``holders`` are the end users Claude gave an answer to (each a digest; "" for a request that named
none, which is the principal's own). An answer nobody was given (the generator's words that agree
with no answer of Claude's) belongs to nobody. Where no request names an end user, every holder is
"" and everything is shareable: one person's finch, or a namespace of equals, is unchanged.
"""

from __future__ import annotations

from collections.abc import Set

# How many end users must have been given an answer before another one is: the default,
# and the smallest k for which one user cannot see another's answer by asking what two were told.
DEFAULT_SHARE_AFTER_USERS = 3


def shareable(holders: Set[str], end_user: str, k: int) -> bool:
    """May an answer given to ``holders`` be served to ``end_user``?"""
    return holders <= {end_user} or len(holders) >= k


def keep_holders(holders: list[str], end_user: str, k: int) -> None:
    """Add ``end_user`` to ``holders`` in place, keeping at most ``k`` of them: past ``k`` the answer
    is everyone's, and a list of who got it would only grow."""
    if end_user not in holders and len(holders) < k:
        holders.append(end_user)
