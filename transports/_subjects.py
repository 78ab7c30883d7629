"""Subject syntax shared by the backends: dot-separated tokens, ``*`` and ``>`` wildcards."""

from __future__ import annotations

import re

from .errors import InvalidSubject

_T = r"[A-Za-z0-9_\-$:]+"
# One regex per subject (not one per token): this runs on every publish and request.
_PLAIN = re.compile(rf"{_T}(?:\.{_T})*")
_PATTERN = re.compile(rf"(?:{_T}|\*)(?:\.(?:{_T}|\*))*(?:\.>)?|>")


def check_subject(subject: str, *, wildcards: bool = False) -> None:
    """Raise ``InvalidSubject`` unless ``subject`` is well formed (wildcards only if allowed)."""
    if not isinstance(subject, str) or (
        (_PATTERN if wildcards else _PLAIN).fullmatch(subject) is None
    ):
        raise InvalidSubject(str(subject))


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS matching: ``*`` is one token, a trailing ``>`` one or more."""
    p = pattern.split(".")
    s = subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


#: Where replies may go: request inboxes (``_INBOX.``, or ``_INBOX_{user}.`` for a NATS user
#: restricted to its own inboxes).
INBOX_PREFIX = "_INBOX"


def is_reply_subject(subject: str, *extra_prefixes: str) -> bool:
    """Whether ``subject`` is a place a reply may be sent: an inbox (or one of ``extra_prefixes``).

    Never a system subject (``$JS.API...``, ``$SYS...``, ``$KV...``): a forged reply subject must
    not make a responder publish into the server's own APIs for someone else.
    """
    if subject.startswith(INBOX_PREFIX):
        return "$" not in subject
    return any(subject.startswith(p) for p in extra_prefixes) and "$" not in subject
