"""Subject syntax shared by the backends: dot-separated tokens, ``*`` and ``>`` wildcards."""

from __future__ import annotations

import re

from .errors import InvalidSubject

_TOKEN = re.compile(r"[A-Za-z0-9_\-$:]+")


def check_subject(subject: str, *, wildcards: bool = False) -> None:
    """Raise ``InvalidSubject`` unless ``subject`` is well formed (wildcards only if allowed)."""
    if not isinstance(subject, str) or not subject:
        raise InvalidSubject(str(subject))
    tokens = subject.split(".")
    for i, token in enumerate(tokens):
        if wildcards and (token == "*" or (token == ">" and i == len(tokens) - 1)):
            continue
        if not _TOKEN.fullmatch(token):
            raise InvalidSubject(subject)


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
