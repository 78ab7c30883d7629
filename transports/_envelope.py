"""The envelope: everything a message needs to travel, apart from the message itself."""

from __future__ import annotations

import enum
import os

import msgspec


class Kind(enum.IntEnum):
    """What an envelope is for. Integers on the wire, names in code."""

    TELL = 1
    ASK = 2
    REPLY = 3
    ERROR = 4
    SYSTEM = 5


class Envelope(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    """One message on the bus.

    Routing, correlation, deadline and trace context ride here; the user's message is the opaque
    ``payload`` (msgpack bytes of a tagged Struct, tagged by ``type``). A payload above the
    transport's blob threshold travels in the blob store and ``blob`` names it; the receiving
    transport restores ``payload`` before any handler sees the envelope.

    New fields are appended with defaults only (schema evolution).
    """

    id: str
    kind: Kind
    sender: str = ""
    target: str = ""
    reply_to: str = ""
    correlation_id: str = ""
    type: str = ""
    payload: bytes = b""
    deadline: float = 0.0
    headers: dict[str, str] = {}
    blob: str = ""


class ErrorInfo(msgspec.Struct, frozen=True):
    """Payload of a ``Kind.ERROR`` envelope: what went wrong on the far side."""

    type: str
    message: str
    traceback: str = ""


#: What decoding untrusted bytes may raise: msgspec lets invalid UTF-8 through as
#: ``UnicodeDecodeError``, very deep nesting as ``RecursionError`` and an int that does not fit
#: as ``OverflowError`` (none of them a ``DecodeError``). Every subscriber catches all of them.
DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError,
                 RecursionError, OverflowError)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)
_error_decoder = msgspec.msgpack.Decoder(ErrorInfo)


def encode_envelope(env: Envelope) -> bytes:
    return _encoder.encode(env)


def decode_envelope(data: bytes) -> Envelope:
    """Decode wire bytes; raises ``msgspec.DecodeError`` (or ``ValidationError``) if malformed."""
    try:
        return _decoder.decode(data)
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"invalid UTF-8 in envelope: {exc}") from None
    except (RecursionError, OverflowError) as exc:
        raise msgspec.DecodeError(f"not an envelope ({type(exc).__name__})") from None


def encode_error(info: ErrorInfo) -> bytes:
    return _encoder.encode(info)


def decode_error(data: bytes) -> ErrorInfo:
    try:
        return _error_decoder.decode(data)
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"invalid UTF-8 in error: {exc}") from None
    except (RecursionError, OverflowError) as exc:
        raise msgspec.DecodeError(f"not an error ({type(exc).__name__})") from None


def new_id() -> str:
    """A short random id, unique enough for actors, envelopes and correlations (96 bits)."""
    return os.urandom(12).hex()


def error_envelope(
    to: Envelope, info: ErrorInfo, *, sender: str = "", kind: Kind = Kind.ERROR
) -> Envelope:
    """The error reply to ``to`` (keeps its correlation id)."""
    return Envelope(
        id=new_id(),
        kind=kind,
        sender=sender,
        target=to.sender,
        correlation_id=to.correlation_id or to.id,
        type="heterarch.error",
        payload=encode_error(info),
    )
