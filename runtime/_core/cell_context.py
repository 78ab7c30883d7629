"""``Context``: what an actor sees of the runtime (``self.ctx``), backed by its cell."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from actors import Actor, ActorRef, Context, Inbox, Restart

if TYPE_CHECKING:
    from actors.agents import AgentServices

    from .cell import ActorCell

A = TypeVar("A", bound=Actor)
T = TypeVar("T", bound=msgspec.Struct)


class CellContext(Context):
    """``Context`` implementation backed by a cell and its node."""

    def __init__(self, cell: ActorCell) -> None:
        self._cell = cell

    @property
    def self_ref(self) -> ActorRef[Any]:
        return self._cell.self_ref

    @property
    def parent(self) -> ActorRef[Any] | None:
        parent = self._cell.parent
        return None if parent is None else self._cell.node.codec.ref(parent)

    @property
    def children(self) -> list[ActorRef[Any]]:
        return [r.ref for r in self._cell.children.values()]

    @property
    def pool(self) -> str:
        return self._cell.address.pool

    @property
    def depth(self) -> int:
        return self._cell.depth

    async def spawn(
        self,
        actor_class: type[A],
        *args: Any,
        pool: str | None = None,
        name: str | None = None,
        supervision: Restart | str | None = None,
        **kwargs: Any,
    ) -> ActorRef[A]:
        return await self._cell.node.spawn_child(
            self._cell, actor_class, args, kwargs, pool=pool, name=name, supervision=supervision
        )

    async def stop(self, ref: ActorRef[Any]) -> None:
        cell = self._cell
        if ref == cell.self_ref:
            await cell.stop("stopped")
            return
        record = cell.children.get(ref.actor_id)
        if record is not None:
            cell._remove_child(record)
        await cell.node.stop_ref(ref, "stopped")

    async def watch(self, ref: ActorRef[Any]) -> None:
        await self._cell.node.watch(ref, self._cell.address)

    def inbox(self, item_type: type[T],
              on_item: Callable[[T], None]) -> AbstractContextManager[Inbox]:
        return self._cell.node.open_inbox(item_type, on_item)

    async def send_to_inbox(self, inbox: Inbox, item: msgspec.Struct) -> None:
        await self._cell.node.send_to_inbox(inbox, item)

    @property
    def agent_services(self) -> AgentServices:
        from .._agents import hosted_agent_services  # the agents' room loads only when used

        return hosted_agent_services(self._cell.node, self._cell.address.pool)
