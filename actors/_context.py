"""The ``Context``: everything an actor can do to the world, handed to it by the runtime."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from ._messages import Inbox
from ._supervision import Restart

if TYPE_CHECKING:
    from ._actor import Actor
    from ._ref import ActorRef
    from .agents._ports import AgentServices

A = TypeVar("A", bound="Actor")
T = TypeVar("T", bound=msgspec.Struct)


class Context(ABC):
    """Given to every actor as ``self.ctx`` before ``on_start``.

    What the built-in agents need beyond actors (a model client, a router, sandboxes, a blob
    store) is ``agent_services``, where the runtime that hosts the actor was configured with
    them; using one that is not configured raises an error that says how to configure it.
    """

    @property
    @abstractmethod
    def self_ref(self) -> ActorRef[Any]: ...

    @property
    @abstractmethod
    def parent(self) -> ActorRef[Any] | None: ...

    @property
    @abstractmethod
    def children(self) -> list[ActorRef[Any]]: ...

    @property
    @abstractmethod
    def pool(self) -> str:
        """The pool this actor runs on ("" for a client or local actor)."""

    @property
    @abstractmethod
    def depth(self) -> int:
        """0 for a root actor, parent's depth + 1 for a child."""

    @abstractmethod
    async def spawn(
        self,
        actor_class: type[A],
        *args: Any,
        pool: str | None = None,
        name: str | None = None,
        supervision: Restart | str | None = None,
        **kwargs: Any,
    ) -> ActorRef[A]:
        """Start a child of this actor.

        ``pool=None`` starts it next to its parent (same process); ``pool="gpu"`` places it on a
        worker of that pool. ``args``/``kwargs`` must be msgspec-encodable; the worker passes them
        to the class's ``__init__``. ``supervision`` is the child's restart type (default
        ``Restart.PERMANENT``). Raises ``SpawnFailed`` (with the reason) or ``NoWorkerForPool``.
        """

    @abstractmethod
    async def stop(self, ref: ActorRef[Any]) -> None:
        """Stop an actor (and its subtree) and wait until it is gone. Not restarted."""

    @abstractmethod
    async def watch(self, ref: ActorRef[Any]) -> None:
        """Receive a ``Terminated`` message when ``ref`` stops (at once if already dead)."""

    @abstractmethod
    def inbox(self, item_type: type[T],
              on_item: Callable[[T], None]) -> AbstractContextManager[Inbox]:
        """An address for progress while this actor waits on children (its mailbox is busy).

        ``with ctx.inbox(Progress, on_item) as inbox:`` put ``inbox`` in a message; what the
        receiver sends with ``send_to_inbox(inbox, item)`` is decoded as ``item_type`` and given
        to ``on_item`` (on this node's event loop) until the block ends. Items that fail to
        decode, or arrive after the block, are dead letters.
        """

    @abstractmethod
    async def send_to_inbox(self, inbox: Inbox, item: msgspec.Struct) -> None:
        """Send ``item`` to an ``inbox`` (at most once; no reply)."""

    @property
    def agent_services(self) -> AgentServices:
        """What the built-in agents (``actors.agents``) reach of the engine, typed: the model
        client of this actor's pool, what is known of every pool, the router, started sandboxes
        and a blob store. Raises ``LookupError`` where the runtime hosts no agents."""
        raise LookupError(f"{type(self).__name__} hosts no built-in agents")
