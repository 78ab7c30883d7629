"""Actor classes the benchmarks spawn on worker processes."""

from __future__ import annotations

from actors import Actor, Ask


class Ping(Ask[bytes], frozen=True, tag=True):
    data: bytes = b""


class Echo(Actor):
    async def ping(self, msg: Ping) -> bytes:
        return msg.data


class Idle(Actor):
    """Holds nothing, does nothing: what 10,000 idle actors cost."""

    async def ping(self, msg: Ping) -> bytes:
        return msg.data
