"""Subject syntax shared by the backends: dot-separated tokens, ``*`` and ``>`` wildcards."""

from __future__ import annotations

import re
from contextvars import ContextVar

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


#: Separates an actor id's owner (the principal whose root it descends from) from the rest:
#: ``alice.3f9c...``. The mailbox ``{ns}.a.{actor_id}`` is then ``{ns}.a.alice.3f9c...``, so the
#: bus can bind a principal to its own actors' mailboxes (``{ns}.a.alice.>``). Ids of a node with
#: no principal (embedded mode, an open server) have no owner: one token, as before.
OWNER_SEPARATOR = "."
#: The spawn subject's owner token when the actor has no owner (``{ns}.spawn.{pool}._``).
NO_OWNER = "_"


def owner_of(actor_id: str) -> str:
    """The principal that owns ``actor_id`` ('' for an id with no owner)."""
    owner, sep, _ = actor_id.partition(OWNER_SEPARATOR)
    return owner if sep else ""


def owned_id(owner: str, local_id: str) -> str:
    """An actor id owned by ``owner`` (``local_id`` itself when there is no owner)."""
    return f"{owner}{OWNER_SEPARATOR}{local_id}" if owner else local_id


def spawn_subject(namespace: str, pool: str, owner: str) -> str:
    """Where a spawn request for an actor owned by ``owner`` goes: the owner is the last token, so
    the bus lets a client publish only its own actors' spawns (``{ns}.spawn.*.{client}``)."""
    return f"{namespace}.spawn.{pool}.{owner or NO_OWNER}"


def owner_of_spawn_subject(subject: str) -> str:
    """The owner token of a spawn subject ('' for ``_``)."""
    token = subject.rpartition(".")[2]
    return "" if token == NO_OWNER else token


#: Separates a node id's owner from the rest (``alice_3f9c...``): principals' names have no '_'.
NODE_OWNER_SEPARATOR = "_"


def owner_of_node(node_id: str) -> str:
    """The principal a node id names as its own ('' for an id with no '_')."""
    owner, sep, _ = node_id.partition(NODE_OWNER_SEPARATOR)
    return owner if sep else ""


def owned_node_id(principal: str, node_id: str) -> str:
    """``node_id`` owned by ``principal`` (prefixed, unless it is already or there is none)."""
    if not principal or owner_of_node(node_id) == principal:
        return node_id
    return f"{principal}{NODE_OWNER_SEPARATOR}{node_id}"


#: The subject the envelope being handled arrived on (set by ``NatsTransport`` before each
#: handler; the bus vouches for it: whoever published there was allowed to).
received_on: ContextVar[str] = ContextVar("received_on", default="")
