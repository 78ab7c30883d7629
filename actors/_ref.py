"""Actor references: serializable addresses with ``tell`` and ``ask``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, overload

import msgspec

from ._messages import Ask

if TYPE_CHECKING:
    from ._actor import Actor

A = TypeVar("A", bound="Actor", covariant=True)
R = TypeVar("R")

DEFAULT_ASK_TIMEOUT = 30.0


class Address(msgspec.Struct, frozen=True, array_like=True):
    """Where an actor lives: valid across processes and hosts."""

    actor_id: str
    node_id: str  # where the current incarnation runs (messages go by ``actor_id`` alone)
    pool: str = ""
    name: str = ""
    parent_id: str = ""  # its supervisor: knows where it restarts, or that it is gone


class Messenger(Protocol):
    """What a reference needs from the runtime that made it."""

    async def tell(self, ref: ActorRef[Any], msg: Any) -> None: ...

    async def ask(self, ref: ActorRef[Any], msg: Any, *, timeout: float,
                  resend: Callable[[], Any] | None = None,
                  idempotent: bool | str = False) -> Any: ...


class ActorRef(Generic[A]):
    """A handle to an actor, local or remote.

    ``tell`` sends and returns at once; ``ask`` waits for the reply of the handler. Refs are
    cheap, hashable and may travel inside messages (they encode as their ``Address``).

    Raises from ``ask``: ``AskTimeout``, ``ActorDead``, ``RemoteError`` (the handler raised),
    ``Undeliverable`` (the target has no handler for the message, or it failed validation).
    """

    __slots__ = ("_address", "_messenger")

    def __init__(self, address: Address, messenger: Messenger) -> None:
        self._address = address
        self._messenger = messenger

    @property
    def address(self) -> Address:
        return self._address

    @property
    def actor_id(self) -> str:
        return self._address.actor_id

    @property
    def name(self) -> str:
        return self._address.name

    @property
    def pool(self) -> str:
        return self._address.pool

    async def tell(self, msg: msgspec.Struct) -> None:
        """Send ``msg`` without waiting for anything. Delivery is at most once."""
        await self._messenger.tell(self, msg)

    @overload
    async def ask(self, msg: Ask[R], *, timeout: float = DEFAULT_ASK_TIMEOUT,
                  resend: Callable[[], Ask[R]] | None = None,
                  idempotent: bool | str = False) -> R: ...

    @overload
    async def ask(self, msg: msgspec.Struct, *, timeout: float = DEFAULT_ASK_TIMEOUT,
                  resend: Callable[[], msgspec.Struct] | None = None,
                  idempotent: bool | str = False) -> Any: ...

    async def ask(self, msg: msgspec.Struct, *, timeout: float = DEFAULT_ASK_TIMEOUT,
                  resend: Callable[[], Any] | None = None,
                  idempotent: bool | str = False) -> Any:
        """Send ``msg`` and wait up to ``timeout`` seconds for the handler's return value.

        A supervised child that dies before answering is asked again once restarted: with
        ``msg``, or with what ``resend()`` returns then (a batch re-sends only what is left).

        ``idempotent=True`` (inside an ask handler) gives the ask a key derived from the ask
        being handled, the message and its place among equal asks: a parent restarted elsewhere
        that asks the same again, to any actor, gets the first answer without the handler
        running again. A string is a key of the caller's own. See docs/bus.md ("once").
        """
        if idempotent:
            return await self._messenger.ask(self, msg, timeout=timeout, resend=resend,
                                             idempotent=idempotent)
        return await self._messenger.ask(self, msg, timeout=timeout, resend=resend)

    def _rebind(self, address: Address) -> None:
        """Point this ref at a new incarnation (the runtime does this on restart elsewhere)."""
        self._address = address

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other._address.actor_id == self._address.actor_id

    def __hash__(self) -> int:
        return hash(self._address.actor_id)

    def __repr__(self) -> str:
        a = self._address
        label = f"{a.name}/" if a.name else ""
        return f"<ActorRef {label}{a.actor_id} pool={a.pool or '-'} node={a.node_id}>"
