"""NATS users for heterarch, one per role, with the subjects each role needs and nothing more.

``authorization_block(namespace, users)`` renders the ``authorization { users: [...] }`` block of
a nats-server config. Roles:

- ``client`` (programs that spawn root actors and ask them): publish to the mailboxes of the
  actors it owns (``{ns}.a.{user}.>``: an actor id carries its owner, ``transports._subjects.
  owner_of``), spawn subjects of its own actors (``{ns}.spawn.*.{user}``), heartbeats and node
  requests, the registry and blob buckets; subscribe to its own actors' mailboxes and its own
  nodes' reply subjects (``{ns}.r.{user}.*``); never reply subjects of nodes (only workers
  report spawns), never a pool's consumer.
- ``worker`` (processes that host pools, anyone's actors): every mailbox, spawns of any owner,
  the spawn replies and the pool consumers of the spawn stream (pull, ack).

Nobody may use ``$JS.API`` beyond the engine's own streams (``{ns}_spawn``, ``KV_{ns}_nodes``,
``KV_{ns}_fenced``, ``KV_{ns}_results``, ``OBJ_{ns}_blobs``): no stream deletion, no other stream,
no ``$SYS``. Each
user gets its own inbox prefix (``_INBOX_{user}``): a user subscribes only to its own inboxes,
so it cannot read the replies meant for another user, and answers only requests it received
(``NatsTransport`` connects with that prefix whenever a user is named).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import msgspec

ROLES = ("client", "worker")
#: The engine's KV buckets: the node registry, and the nodes declared lost (fencing).
BUCKETS = ("nodes", "fenced", "results")
#: Written by workers only: the roots each client holds (``roots_per_client`` across the cluster).
ROOTS_BUCKET = "roots"
_NAMESPACE = re.compile(r"[A-Za-z0-9_-]+")
#: No '_' in a user name: a node id names its user before the first '_' (``owner_of_node``).
_USER = re.compile(r"[A-Za-z0-9-]+")


class NatsUser(msgspec.Struct, frozen=True, kw_only=True):
    """One NATS user: its name, role and password (or a ``$VARIABLE`` the server resolves)."""

    user: str
    role: str
    password: str


def inbox_prefix_of(user: str) -> str:
    """The inbox prefix a user must connect with (``ConnectOptions.inbox_prefix``)."""
    return f"_INBOX_{user}"


def permissions(namespace: str | Sequence[str], role: str, user: str) -> dict[str, Any]:
    """The ``publish``/``subscribe`` allow lists of one user, in ``namespace`` (or each of
    several namespaces: one server for the deployments of several configs)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    names = [namespace] if isinstance(namespace, str) else list(namespace)
    if not names:
        raise ValueError("permissions need at least one namespace")
    merged = [_permissions(ns, role, user) for ns in names]
    first = merged[0]
    for other in merged[1:]:
        for kind in ("publish", "subscribe"):
            allow = first[kind]["allow"]
            allow += [s for s in other[kind]["allow"] if s not in allow]
    return first


def _permissions(namespace: str, role: str, user: str) -> dict[str, Any]:
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(f"namespaces are letters, digits, '_' and '-', not {namespace!r}")
    ns = namespace
    spawn, blobs = f"{ns}_spawn", f"OBJ_{ns}_blobs"
    buckets = [f"KV_{ns}_{b}" for b in BUCKETS]
    roots = f"KV_{ns}_{ROOTS_BUCKET}"
    api = "$JS.API"
    # A client reaches only the mailboxes of the actors it owns (``{ns}.a.{user}.{id}``: their
    # ids carry the owner) and asks spawns only of actors it owns (``{ns}.spawn.{pool}.{user}``:
    # the worker checks the ids against that token). A worker hosts anyone's actors: all
    # mailboxes, spawns of any owner (children of the actors it hosts).
    owned = ">" if role == "worker" else f"{user}.>"
    publish = [
        f"{ns}.a.{owned}",  # mailboxes, one per actor (tell, ask, system messages)
        # spawn requests (a JetStream publish: the ack comes to the inbox)
        f"{ns}.spawn.>" if role == "worker" else f"{ns}.spawn.*.{user}",
        f"{ns}.hb.{user}.*",  # heartbeats of this user's nodes (node ids name their user)
        f"{ns}.node.>",  # requests to nodes (stats)
        f"{api}.INFO",
        f"{api}.STREAM.NAMES",  # the object store looks its stream up by subject
        # the engine's streams: create on first use, read their info, nothing else
        *(f"{api}.STREAM.{op}.{s}" for s in (spawn, *buckets, blobs)
          for op in ("CREATE", "UPDATE", "INFO")),
        # the registry (KV) and blobs (object store): read, write, list, delete their keys
        *(f"$KV.{ns}_{b}.>" for b in BUCKETS), f"$O.{ns}_blobs.>",
        *(f"{api}.{op}.{s}" for s in (*buckets, blobs)
          for op in ("STREAM.MSG.GET", "DIRECT.GET", "CONSUMER.CREATE")),
        *(f"{api}.{op}.{s}.>" for s in (*buckets, blobs)
          for op in ("DIRECT.GET", "CONSUMER.CREATE", "CONSUMER.DELETE", "CONSUMER.INFO")),
        f"{api}.STREAM.PURGE.{blobs}",  # deleting an object purges its chunks
        f"{inbox_prefix_of(user)}.>",  # answers to asks come to inboxes
    ]
    subscribe = [
        f"{ns}.a.{owned}",
        f"{ns}.r.{user}.*",  # this user's nodes' replies subjects (spawn answers, inbox items)
        f"{ns}.hb.>",
        f"{ns}.node.{user}.*",  # this user's nodes' control subjects
        f"{inbox_prefix_of(user)}.>",
    ]
    if role == "worker":
        publish += [
            f"{ns}.r.*.*",  # spawn replies to the node that asked for the spawn
            f"{api}.CONSUMER.CREATE.{spawn}.>",
            f"{api}.CONSUMER.DURABLE.CREATE.{spawn}.>",
            f"{api}.CONSUMER.INFO.{spawn}.>",
            f"{api}.CONSUMER.MSG.NEXT.{spawn}.>",
            f"$JS.ACK.{spawn}.>",
            # the roots each client holds across the cluster (workers count them, nobody else
            # may write or delete a claim): create, read, write and delete its keys
            *(f"{api}.STREAM.{op}.{roots}" for op in ("CREATE", "UPDATE", "INFO")),
            f"$KV.{ns}_{ROOTS_BUCKET}.>",
            *(f"{api}.{op}.{roots}" for op in ("STREAM.MSG.GET", "DIRECT.GET")),
            f"{api}.DIRECT.GET.{roots}.>",
        ]
    # Answers go to the reply subject of a request this user received, and only there (one
    # answer per request; the server tracks it): no user may publish into another's inboxes.
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe},
            "allow_responses": {"max": 1, "expires": "10m"}}


def authorization_block(namespace: str | Sequence[str], users: list[NatsUser]) -> str:
    """The nats-server ``authorization`` block for ``users`` (JSON is valid nats.conf syntax),
    in ``namespace`` or each of several."""
    entries = []
    for u in users:
        if not _USER.fullmatch(u.user):
            raise ValueError(f"user names are letters, digits and '-', not {u.user!r}")
        password = u.password if u.password.startswith("$") else json.dumps(u.password)
        perms = json.dumps(permissions(namespace, u.role, u.user))
        entries.append(f"    {{ user: {json.dumps(u.user)}, password: {password}, "
                       f"permissions: {perms} }}")
    return "authorization {\n  users: [\n" + "\n".join(entries) + "\n  ]\n}\n"
