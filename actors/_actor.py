"""The ``Actor`` base class and typed handler dispatch."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, ClassVar

import msgspec

from ._context import Context
from ._messages import ChildExit, message_type_name
from ._supervision import SupervisorStrategy
from .errors import InvalidMessage


class Handler(msgspec.Struct, frozen=True):
    """One handler of an actor class: the method, its message type and the decoder for it."""

    method_name: str
    message_type: type
    type_name: str
    decoder: msgspec.msgpack.Decoder[Any]
    is_async: bool


def _handlers_of(cls: type) -> dict[str, Handler]:
    handlers: dict[str, Handler] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or klass is Actor:
            continue
        for attr, fn in vars(klass).items():
            if attr.startswith("_") or not inspect.isfunction(fn):
                continue
            params = list(inspect.signature(fn).parameters.values())
            if len(params) != 2:
                continue
            try:
                hints = typing.get_type_hints(fn)
            except Exception:  # an unresolvable annotation makes it a non-handler
                continue
            msg_type = hints.get(params[1].name)
            if not (isinstance(msg_type, type) and issubclass(msg_type, msgspec.Struct)):
                continue
            name = message_type_name(msg_type)
            handlers[name] = Handler(
                method_name=attr,
                message_type=msg_type,
                type_name=name,
                decoder=msgspec.msgpack.Decoder(msg_type),
                is_async=inspect.iscoroutinefunction(fn),
            )
    return handlers


class Actor:
    """Base class of every actor.

    Handlers are methods whose one parameter is annotated with a message type (a msgspec
    Struct); the return annotation is the reply type. An actor handles one message at a time,
    in arrival order, so its state needs no locks.

    >>> import msgspec
    >>> class Greet(msgspec.Struct, frozen=True, tag=True):
    ...     name: str
    >>> class Greeter(Actor):
    ...     async def greet(self, msg: Greet) -> str:
    ...         return f"hello {msg.name}"

    Lifecycle hooks (all optional, async): ``on_start`` before the first message, ``on_stop``
    after the last, ``on_restart(error)`` on the fresh instance that replaces a crashed one,
    ``on_child_exit(exit)`` after supervision dealt with a child's exit. A parent's policy for
    its children is the class attribute ``supervisor_strategy``.

    ``mailbox_size`` bounds the messages waiting for this actor (the one being handled not
    counted). When it is full, an ask fails at once with ``MailboxFull`` and a tell is dropped
    and counted as a dead letter (reason ``mailbox-full``): memory stays flat under a flood and
    askers learn to back off.
    """

    supervisor_strategy: ClassVar[SupervisorStrategy] = SupervisorStrategy()
    mailbox_size: ClassVar[int] = 10_000
    ctx: Context
    _handler_table: ClassVar[dict[str, Handler] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._handler_table = None  # resolved lazily: annotations may name later classes

    @classmethod
    def handlers(cls) -> dict[str, Handler]:
        """Wire type name -> handler, for every handler this class (and its bases) declares."""
        table = cls.__dict__.get("_handler_table")
        if table is None:
            table = _handlers_of(cls)
            cls._handler_table = table
        return table

    @classmethod
    def handler_for(cls, msg: object) -> Handler:
        """The handler for a message object; ``InvalidMessage`` if the class declares none."""
        name = message_type_name(type(msg))
        handler = cls.handlers().get(name)
        if handler is None:
            raise InvalidMessage(
                f"{cls.__qualname__} has no handler for {name!r} "
                f"(it handles: {sorted(cls.handlers()) or 'nothing'})"
            )
        return handler

    def bound(self, handler: Handler) -> Callable[[Any], Any]:
        fn: Callable[[Any], Any] = getattr(self, handler.method_name)
        return fn

    async def on_start(self) -> None:
        """Called once before the first message."""

    async def on_stop(self) -> None:
        """Called once after the last message (children are already stopped)."""

    async def on_restart(self, error: BaseException | str) -> None:
        """Called on the new instance that replaces one that crashed, before ``on_start``."""

    async def on_child_exit(self, exit: ChildExit) -> None:
        """Called after supervision handled a child's exit (``exit.action`` says how)."""
