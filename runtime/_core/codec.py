"""Encoding user messages and replies; ``ActorRef`` values travel as their ``Address``."""

from __future__ import annotations

import typing
from typing import Any

import msgspec

from actors import ActorRef, Address, Messenger


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, ActorRef):
        return obj.address
    raise NotImplementedError(f"cannot encode {type(obj).__name__}: use msgspec-encodable types")


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


class Codec:
    """Decoders bound to one messenger, so decoded refs can ``tell``/``ask`` right away."""

    def __init__(self, messenger: Messenger) -> None:
        self._messenger = messenger
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
        """Decode untrusted bytes; malformed input raises ``msgspec.DecodeError``."""
        try:
            if type_ is Any:
                return self._untyped.decode(data)
            return self.decoder(type_).decode(data)
        except UnicodeDecodeError as exc:
            raise msgspec.DecodeError(f"invalid UTF-8: {exc}") from None

    def ref(self, address: Address) -> ActorRef[Any]:
        return ActorRef(address, self._messenger)
