"""Encoding user messages and replies; ``ActorRef`` values travel as their ``Address``.

Decoding is bounded: a payload above ``MAX_PAYLOAD_BYTES`` or nested deeper than msgspec's
recursion guard is a ``msgspec.DecodeError`` like any other malformed input (a dead letter to
the receiver), never an exception that escapes into the node.
"""

from __future__ import annotations

import typing
from typing import Any

import msgspec

from actors import ActorRef, Address, MessageNotEncodable, Messenger, message_type_name

#: The largest payload a node decodes (blobs included: contexts of tens of MB are fine).
MAX_PAYLOAD_BYTES = 256 * 1024 * 1024

#: What ``msgspec`` raises for a value it cannot encode (an int >= 2**64, a str with a lone
#: surrogate, an unsupported type, a cycle or very deep nesting).
ENCODE_ERRORS = (TypeError, NotImplementedError, OverflowError, ValueError, RecursionError)


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, ActorRef):
        return obj.address
    raise NotImplementedError(f"unsupported type {type(obj).__name__}")


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def encode_message(obj: Any, what: str = "") -> bytes:
    """Encode a message, argument list or reply; ``MessageNotEncodable`` names the bad field."""
    try:
        return _encoder.encode(obj)
    except ENCODE_ERRORS as exc:
        path, reason = _find_unencodable(obj, "", exc)
        what = what or message_type_name(type(obj))
        raise MessageNotEncodable(what, path.lstrip(".") or "the value", reason) from None


def _find_unencodable(obj: Any, path: str, exc: BaseException) -> tuple[str, str]:
    """The innermost field of ``obj`` that fails to encode, and why (error path only)."""
    parts: list[tuple[str, Any]] = []
    if isinstance(obj, msgspec.Struct):
        parts = [(f"{path}.{f}", getattr(obj, f)) for f in obj.__struct_fields__]
    elif isinstance(obj, list | tuple):
        parts = [(f"{path}[{i}]", v) for i, v in enumerate(obj)]
    elif isinstance(obj, dict):
        parts = [(f"{path}[{k!r}]", v) for k, v in obj.items()]
    for sub_path, value in parts:
        try:
            _encoder.encode(value)
        except RecursionError:
            break  # too deep to walk: name this level
        except ENCODE_ERRORS as inner:
            return _find_unencodable(value, sub_path, inner)
    return path, f"{type(exc).__name__}: {exc}"


class Codec:
    """Decoders bound to one messenger, so decoded refs can ``tell``/``ask`` right away."""

    def __init__(self, messenger: Messenger, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self._messenger = messenger
        self._max_bytes = max_bytes
        self._decoders: dict[Any, msgspec.msgpack.Decoder[Any]] = {}
        self._untyped = msgspec.msgpack.Decoder(dec_hook=self._dec_hook)

    def _dec_hook(self, type_: Any, obj: Any) -> Any:
        if type_ is object:
            return obj
        if type_ is ActorRef or typing.get_origin(type_) is ActorRef:
            return ActorRef(msgspec.convert(obj, Address), self._messenger)
        raise NotImplementedError(f"cannot decode {type_!r}")

    def decoder(self, type_: Any) -> msgspec.msgpack.Decoder[Any]:
        dec = self._decoders.get(type_)
        if dec is None:
            dec = msgspec.msgpack.Decoder(type_, dec_hook=self._dec_hook)
            self._decoders[type_] = dec
        return dec

    def decode(self, data: bytes, type_: Any = Any) -> Any:
        """Decode untrusted bytes; malformed, oversized or too deep input: ``DecodeError``."""
        if len(data) > self._max_bytes:
            raise msgspec.DecodeError(
                f"payload of {len(data):,} bytes is above the limit of {self._max_bytes:,}"
            )
        try:
            if type_ is Any:
                return self._untyped.decode(data)
            return self.decoder(type_).decode(data)
        except UnicodeDecodeError as exc:
            raise msgspec.DecodeError(f"invalid UTF-8: {exc}") from None
        except RecursionError:
            raise msgspec.DecodeError("nested deeper than the decoder allows") from None

    def ref(self, address: Address) -> ActorRef[Any]:
        return ActorRef(address, self._messenger)
