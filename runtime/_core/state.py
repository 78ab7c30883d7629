"""What every part of a node shares: its state, declared once for the mixins that make up ``Node``.

``Node`` is composed of ``Messaging``, ``Placement``, ``PoolConsumer`` and ``Membership``; each
reads the attributes declared here, which ``Node.__init__`` sets. Methods that one part calls on
another are declared for the type checker only (the real ones come first in the MRO).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from transports import Envelope, ErrorInfo, KeyValue, Transport
from transports._tasks import HostedTaskGroup

from .._config import PoolConfig
from .cell import ActorCell
from .codec import Codec
from .inflight import InFlight
from .protocol import Exited, Locate, NodeInfo, Subjects
from .supervisor import ChildRecord

if TYPE_CHECKING:
    from actors import Actor, ActorDead, ActorRef, Address

    from .._observe.agent_spans import CreatedUnder


class NodeState:
    transport: Transport
    node_id: str
    role: str
    pools: dict[str, PoolConfig]
    declared: list[str]
    services: dict[str, Any]
    pool_services: dict[str, dict[str, Any]]
    heartbeat_interval: float
    node_lost_after: float
    placement_timeout: float
    spawn_timeout: float
    spawn_ack_wait: float
    subjects: Subjects
    codec: Codec
    cells: dict[str, ActorCell]
    started_at: float
    task_group: HostedTaskGroup
    closed: anyio.Event
    _records: dict[str, ChildRecord]  # actor id -> record of a supervising cell here
    _created_under: dict[str, CreatedUnder]  # actor id -> its create span, until recorded
    _pending_spawns: dict[str, MemoryObjectSendStream[Envelope]]
    _inboxes: dict[str, tuple[Any, Callable[[Any], None]]]  # inbox id -> (item type, callback)
    _known_nodes: dict[str, tuple[NodeInfo, float]]
    _lost_nodes: set[str]
    _heard_self_at: float  # when our own heartbeat last came back through the broker
    _suspect_self: bool  # we cannot hear ourselves: we judge no peer meanwhile
    _lease_s: float  # we may act this long after we last heard ourselves (see fencing.py)
    _lease_renewed: anyio.Event
    _settling: bool
    _fence_epoch: int
    _fenced_kv: KeyValue
    _inflight: InFlight
    _slots: dict[str, anyio.Semaphore]
    _guardian: ActorCell | None
    _nodes_kv: KeyValue

    if TYPE_CHECKING:
        @property
        def guardian(self) -> ActorCell: ...
        def hardware_of(self, pool: str) -> str: ...
        def info(self) -> NodeInfo: ...
        async def wait_pool(self, pool: str) -> None: ...
        async def open_mailbox(self, cell: ActorCell) -> None: ...
        async def _on_mailbox(self, env: Envelope) -> None: ...
        async def relocate(
            self, address: Address, deadline: float, error: ActorDead
        ) -> Address: ...
        async def answer_locate(self, cell: ActorCell, env: Envelope, msg: Locate) -> None: ...
        async def unregister(self, cell: ActorCell) -> None: ...
        async def reply_value(self, env: Envelope, value: Any) -> Envelope: ...
        async def reply_error(self, env: Envelope, info: ErrorInfo) -> Envelope: ...
        async def send_terminated(
            self, watcher: Address, exited: Exited, dead: Address
        ) -> None: ...
        async def tell(self, ref: ActorRef[Any], msg: Any) -> None: ...
        def lease_valid(self) -> bool: ...
        async def wait_lease(self) -> bool: ...
        def _lease_heard(self, now: float) -> bool: ...
        def _hearing_again(self, now: float) -> None: ...
        async def _record_fenced(self, node_id: str) -> None: ...
        async def _start_local(
            self, actor_class: type[Actor], args: bytes, *, pool: str, name: str,
            parent: Address | None, depth: int, actor_id: str, generation: int,
            restart_error: str | None,
        ) -> Address: ...
