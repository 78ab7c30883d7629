"""Private control messages between nodes, and the subjects they travel on."""

from __future__ import annotations

import re

import msgspec

from actors import Address
from transports._subjects import owner_of_node

#: ``ErrorInfo.type`` of errors the runtime itself reports (a handler's exceptions keep their
#: own class name, so a handler raising ``ActorDead`` is still a ``RemoteError`` to its asker).
DEAD = "heterarch.ActorDead"
UNDELIVERABLE = "heterarch.Undeliverable"
REPLY_NOT_ENCODABLE = "heterarch.ReplyNotEncodable"
MAILBOX_FULL = "heterarch.MailboxFull"
#: The handler of an ask was cancelled: its deadline passed, or its asker gave up (the asker
#: has stopped waiting then; it sees ``AskTimeout`` if it still does).
CANCELLED = "heterarch.Cancelled"

#: How long a stop waits for the cancelled handler to unwind (and then for ``on_stop``) before
#: it goes on without it: a handler that ignores its cancellation does not hold up the stop.
STOP_GRACE_S = 2.0
#: How long a parent waits for a remote child to confirm its stop (its subtree's levels each
#: take at most about ``STOP_GRACE_S``).
STOP_REPLY_S = 10.0


class SpawnRequest(msgspec.Struct, frozen=True, kw_only=True, tag="heterarch.sys.spawn"):
    actor_class: str  # "package.module:QualName"
    args: bytes  # msgpack of [args, kwargs]
    actor_id: str
    name: str = ""
    pool: str = ""
    parent: Address | None = None
    depth: int = 0
    deadline: float = 0.0  # wall-clock; a worker drops requests that arrive after it
    generation: int = 0  # incarnation number: 0 first, +1 per restart


class Spawned(msgspec.Struct, frozen=True, tag="heterarch.sys.spawned"):
    address: Address


class StopActor(msgspec.Struct, frozen=True, tag="heterarch.sys.stop"):
    reason: str = "stopped"
    generation: int = -1  # the incarnation meant (-1: whichever runs); a newer one ignores it


class CancelAsk(msgspec.Struct, frozen=True, tag="heterarch.sys.cancel"):
    """From an asker that stopped waiting (cancelled, timed out): cancel the handler of the
    ask ``correlation_id`` (or drop it from the mailbox), and so all it started."""

    correlation_id: str


class Watch(msgspec.Struct, frozen=True, tag="heterarch.sys.watch"):
    watcher: Address


class Locate(msgspec.Struct, frozen=True, tag="heterarch.sys.locate"):
    """To a supervisor: where does your child run now? (``stale_node`` did not answer.)

    The answer is ``Spawned`` with its address once it runs somewhere else (or still there),
    or a ``DEAD`` error when it is gone for good.
    """

    actor_id: str
    stale_node: str


class Exited(msgspec.Struct, frozen=True, kw_only=True, tag="heterarch.sys.exited"):
    """Sent to the parent (and, as ``Terminated``, to watchers) when an actor ends."""

    actor_id: str
    reason: str
    abnormal: bool
    generation: int = 0


class NodeInfo(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    role: str  # "worker" or "client"
    host: str
    pid: int
    started_at: float
    pools: dict[str, str] = {}  # pool -> hardware
    free_slots: dict[str, int] = {}
    actors: int = 0
    heartbeat_at: float = 0.0
    reconnects: int = 0  # the transport's: a rise means what we sent it around then may be lost
    lost_after: float = 0.0  # its node_lost_after: how soon it declares a silent peer lost
    declared: list[str] = []  # every pool in the worker's config file, served or not
    in_flight: dict[str, int] = {}  # pool -> model calls in flight here (the cluster's load)


class ActorInfo(msgspec.Struct, frozen=True, kw_only=True):
    actor_id: str
    actor_class: str
    name: str
    pool: str
    parent_id: str
    depth: int


class ModelLoad(msgspec.Struct, frozen=True, kw_only=True):
    """A node's model client for one pool: totals since it started, and calls in flight."""

    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    in_flight: int = 0


class NodeStats(msgspec.Struct, frozen=True, kw_only=True):
    info: NodeInfo
    actors: list[ActorInfo]
    dead_letters: dict[str, int]
    models: dict[str, ModelLoad] = {}


SystemMessage = SpawnRequest | Spawned | StopActor | Watch | Exited | Locate | CancelAsk
system_decoder = msgspec.msgpack.Decoder(SystemMessage)


_NODE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_node_id(value: str) -> bool:
    """A node id (or pool name) is one subject token: letters, digits, '_' and '-'."""
    return _NODE_ID.fullmatch(value) is not None


def _owner_token(node_id: str) -> str:
    owner = owner_of_node(node_id)
    return f"{owner}." if owner else ""


class Subjects:
    """Every subject and store name of one namespace (DESIGN.md section 2)."""

    def __init__(self, namespace: str) -> None:
        self.ns = namespace

    def mailbox(self, actor_id: str) -> str:
        """One subject per actor, wherever it runs: a restart elsewhere keeps every ref valid.
        An owned id (``alice.3f9c``) makes it ``{ns}.a.alice.3f9c``: the bus lets only its
        owner (and workers) publish or subscribe there (``transports._subjects.owner_of``)."""
        return f"{self.ns}.a.{actor_id}"

    def node_control(self, node_id: str) -> str:
        """``{ns}.node.{owner}.{node}`` for an owned node id (``owner_of_node``): only its
        principal may subscribe there and answer."""
        return f"{self.ns}.node.{_owner_token(node_id)}{node_id}"

    def replies(self, node_id: str) -> str:
        """A node's replies subject (spawn answers, inbox items): ``{ns}.r.{owner}.{node}`` for
        an owned node id, so only its principal may subscribe to it."""
        return f"{self.ns}.r.{_owner_token(node_id)}{node_id}"

    @property
    def replies_prefix(self) -> str:
        return f"{self.ns}.r."

    def heartbeat(self, node_id: str) -> str:
        """``{ns}.hb.{owner}.{node}`` for an owned node id: only its principal may publish
        there, so a heartbeat (or goodbye) that arrives elsewhere is not that node's."""
        return f"{self.ns}.hb.{_owner_token(node_id)}{node_id}"

    @property
    def heartbeats(self) -> str:
        return f"{self.ns}.hb.>"

    NODES_BUCKET = "nodes"
