"""The frame protocol between the host and the REPL server, strict on the host side.

A frame is a 4-byte big-endian length and a UTF-8 JSON object. Everything that comes out of
the container is untrusted: the length is checked against a maximum before anything is read,
and the body is decoded by one typed ``msgspec`` decoder into the frame structs below (unknown
fields, wrong types, lone surrogates, invalid UTF-8 and too-deep nesting all fail). Any failure
is a ``ProtocolViolation``: the sandbox that sent it is killed and restarted.
"""

from __future__ import annotations

import struct
from typing import Annotated, Any

import msgspec

#: The largest frame either side accepts (bytes of the JSON body).
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
#: Request and call ids: JSON-safe non-negative integers.
FrameId = Annotated[int, msgspec.Meta(ge=0, le=2**53)]

HEADER = struct.Struct(">I")


class ProtocolViolation(Exception):
    """A frame from the container broke the protocol (internal: callers see SandboxCrashed)."""


# -- server -> host -------------------------------------------------------------------------------
class Ready(msgspec.Struct, frozen=True, tag="ready", tag_field="op", forbid_unknown_fields=True):
    pid: int
    python: str


class FrameError(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    type: str
    message: str


class Result(msgspec.Struct, frozen=True, tag="result", tag_field="op",
             forbid_unknown_fields=True):
    id: FrameId
    ok: bool
    value: Any = None
    error: FrameError | None = None


class Call(msgspec.Struct, frozen=True, tag="call", tag_field="op", forbid_unknown_fields=True):
    id: FrameId
    name: str
    args: list[Any] = msgspec.field(default_factory=list)
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)


FromServer = Ready | Result | Call


# -- host -> server -------------------------------------------------------------------------------
class Request(msgspec.Struct, frozen=True, tag_field="op", kw_only=True):
    id: FrameId = 0


class Exec(Request, frozen=True, tag="exec"):
    code: str
    timeout: float


class SetVar(Request, frozen=True, tag="set_var"):
    name: str
    value: Any


class SetVarFile(Request, frozen=True, tag="set_var_file"):
    name: str
    path: str


class GetVar(Request, frozen=True, tag="get_var"):
    name: str
    timeout: float
    limit: int


class Interrupt(Request, frozen=True, tag="interrupt"):
    """The host stopped waiting for request ``id``: stop it (no result of its own)."""


class Callbacks(Request, frozen=True, tag="callbacks"):
    names: list[str]


class Reply(msgspec.Struct, frozen=True, tag="reply", tag_field="op", kw_only=True):
    id: FrameId
    ok: bool
    value: Any = None
    error: str = ""


_decoder: msgspec.json.Decoder[FromServer] = msgspec.json.Decoder(FromServer)
_encoder = msgspec.json.Encoder()


def decode(body: bytes) -> FromServer:
    """One frame from the container, or ``ProtocolViolation`` saying what was wrong."""
    try:
        return _decoder.decode(body)
    except (msgspec.DecodeError, ValueError, RecursionError, OverflowError) as exc:
        raise ProtocolViolation(f"malformed frame: {str(exc)[:200]}") from None


def check_size(size: int, limit: int) -> None:
    if size == 0:
        raise ProtocolViolation("empty frame")
    if size > limit:
        raise ProtocolViolation(f"frame of {size:,} bytes exceeds the {limit:,}-byte limit")


def encode(frame: Request | Reply, limit: int) -> bytes:
    """Header + body for the container; ``ValueError`` if it cannot travel (too big, not text).

    msgspec refuses lone surrogates (``UnicodeEncodeError``, a ``ValueError``) and values it
    cannot encode (``TypeError``).
    """
    try:
        body = _encoder.encode(frame)
    except OverflowError as exc:  # an int beyond 64 bits
        raise ValueError(str(exc)) from None
    if len(body) > limit:
        raise ValueError(f"frame of {len(body):,} bytes exceeds the {limit:,}-byte limit")
    return HEADER.pack(len(body)) + body
