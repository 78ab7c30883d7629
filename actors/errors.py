"""Every error an actor program sees. One root: ``HeterarchError``."""

from __future__ import annotations

from heterarch import HeterarchError as HeterarchError


class AskTimeout(HeterarchError, TimeoutError):
    def __init__(self, target: str, timeout: float, message_type: str = "") -> None:
        self.target = target
        self.timeout = timeout
        self.message_type = message_type
        what = f" to {message_type}" if message_type else ""
        super().__init__(f"no reply{what} from {target} within {timeout:.3g}s")


class ActorDead(HeterarchError):
    """The target actor is not running (stopped, crashed, or its node is gone)."""

    def __init__(self, target: str, reason: str = "stopped") -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"actor {target} is dead ({reason})")


class RemoteError(HeterarchError):
    """A handler raised; carries the remote exception's type, message and traceback text."""

    def __init__(self, remote_type: str, remote_message: str, remote_traceback: str = "") -> None:
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        super().__init__(f"{remote_type}: {remote_message}")


class Undeliverable(HeterarchError):
    """The message could not be delivered or understood (malformed, unknown type, invalid)."""

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"undeliverable to {target}: {reason}")


class MailboxFull(HeterarchError):
    """The target's mailbox holds ``Actor.mailbox_size`` messages already: back off and retry.

    Only an ask sees it; a tell to a full mailbox is dropped and counted as a dead letter
    (reason ``mailbox-full``) on the target's node.
    """

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"mailbox of {target} is full: {reason}")


class BudgetExceeded(HeterarchError):
    def __init__(self, what: str, used: float, limit: float) -> None:
        self.what = what
        self.used = used
        self.limit = limit
        super().__init__(f"budget exceeded: {what} used {used:.6g} of {limit:.6g}")


class SpawnFailed(HeterarchError):
    """A child could not be created (bad arguments, refused class, no worker, on_start raised)."""

    def __init__(self, actor_class: str, pool: str, reason: str) -> None:
        self.actor_class = actor_class
        self.pool = pool
        self.reason = reason
        super().__init__(f"could not spawn {actor_class} on pool {pool!r}: {reason}")


class InvalidMessage(HeterarchError, TypeError):
    """The message is not of a type the target declares a handler for."""


class MessageNotEncodable(HeterarchError, TypeError):
    """A message, reply or spawn argument holds a value msgpack cannot carry."""

    def __init__(self, message_type: str, field: str, reason: str) -> None:
        self.message_type = message_type
        self.field = field
        self.reason = reason
        super().__init__(
            f"cannot encode {field!s} of {message_type}: {reason} (use msgspec-encodable values: "
            "ints within 64 bits, valid Unicode text, Structs, lists, dicts, bytes, refs)"
        )


class ReplyNotEncodable(RemoteError):
    """The handler returned a value that cannot travel back (the asker's side of the error)."""

    def __init__(self, message_type: str, reason: str) -> None:
        self.message_type = message_type
        self.reason = reason
        super().__init__(
            "ReplyNotEncodable", f"the reply to {message_type} cannot be encoded: {reason}"
        )


class InvalidImage(HeterarchError, ValueError):
    """An image for a model call is not a PNG/JPEG, is too large, or is malformed."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid image: {reason}")
