"""Message types: user messages are frozen msgspec Structs; ``Ask[R]`` declares the reply type."""

from __future__ import annotations

import functools
import typing
from typing import Any, Generic, TypeVar

import msgspec

R = TypeVar("R")


class Ask(msgspec.Struct, Generic[R], frozen=True):
    """Base for a request whose reply has type ``R``; lets a type checker see what ``ask`` returns.

    >>> class Add(Ask[int], frozen=True, tag=True):
    ...     a: int
    ...     b: int

    ``await ref.ask(Add(1, 2))`` is then an ``int``.
    """


def message_type_name(cls: type) -> str:
    """The name of ``cls`` on the wire: its msgspec tag if it has one, else module:qualname."""
    config = getattr(cls, "__struct_config__", None)
    tag = getattr(config, "tag", None)
    if isinstance(tag, str):
        return tag
    return f"{cls.__module__}:{cls.__qualname__}"


@functools.cache
def reply_type_of(cls: type) -> Any:
    """``R`` for a subclass of ``Ask[R]``; ``Any`` when the message does not declare it."""
    for klass in cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            if typing.get_origin(base) is Ask:
                args = typing.get_args(base)
                if args and not isinstance(args[0], TypeVar):
                    return args[0]
    return Any


class Terminated(msgspec.Struct, frozen=True, tag="heterarch.Terminated"):
    """Death watch: the watched actor ``actor_id`` stopped. ``abnormal`` if it crashed or was lost.

    Declare a handler for it (``async def on_terminated(self, msg: Terminated) -> None``) to
    receive it; ``ref`` is the address of the dead actor.
    """

    actor_id: str
    reason: str
    abnormal: bool
    ref: Any = None  # an ActorRef once delivered to an actor (decoded by the runtime)


class ChildExit(msgspec.Struct, frozen=True):
    """What ``Actor.on_child_exit`` receives after supervision decided what to do."""

    actor_id: str
    name: str
    reason: str
    abnormal: bool
    action: str  # "restarted", "stopped", "escalated", "ignored"


class Inbox(msgspec.Struct, frozen=True, array_like=True):
    """Where a child sends progress to an asker that is busy waiting (``Context.inbox``):
    the asker's node and the inbox's id. Opaque to actors; it travels inside messages."""

    subject: str
    inbox_id: str
