"""Supervision across nodes: the children that supervising cells here keep, by actor id.

A cell applies its strategy to its own children (``supervisor.py``); this part is the node's
view of all of them: where a ref held here points now (an ask follows a restarted child), and
what the loss of a node means here (``node_lost``): every child that ran there exited
abnormally (its supervisor restarts it, one restart-intensity event per supervisor), and every
actor here whose parent ran there stops (fate sharing).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING

from transports._tasks import HostedTaskGroup

from .protocol import Exited
from .supervisor import ChildRecord

if TYPE_CHECKING:
    from .._observe.agent_spans import CreatedUnder
    from .cell import ActorCell


class Supervision:
    def __init__(self, cells: Mapping[str, ActorCell], tasks: HostedTaskGroup) -> None:
        self._cells = cells
        self._tasks = tasks
        self.records: dict[str, ChildRecord] = {}  # actor id -> record of a supervising cell here
        #: actor id -> its create span, until its record takes it (tracing on; agent_spans)
        self.created_under: dict[str, CreatedUnder] = {}

    def record_of(self, actor_id: str) -> ChildRecord | None:
        return self.records.get(actor_id)

    def add(self, record: ChildRecord) -> None:
        self.records[record.ref.actor_id] = record

    def forget(self, record: ChildRecord) -> None:
        if self.records.get(record.ref.actor_id) is record:
            del self.records[record.ref.actor_id]

    def node_lost(self, node_id: str, why: str) -> None:
        """Restart what we supervise there; stop what was supervised from there."""
        for cell in list(self._cells.values()):
            lost = [r for r in cell.children.values()
                    if r.ref.address.node_id == node_id and not r.restarting]
            for i, record in enumerate(lost):
                exited = Exited(
                    actor_id=record.ref.actor_id, reason=f"node {node_id} lost",
                    abnormal=True, generation=record.generation,
                )
                lost_child = functools.partial(cell.child_exited, exited, counts=i == 0)
                self._tasks.start_soon(lost_child)
            if cell.parent is not None and cell.parent.node_id == node_id:
                self._tasks.start_soon(cell.stop_abnormally, "parent's node lost")
