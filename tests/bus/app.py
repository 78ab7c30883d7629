"""Actors for the bus tests (a worker's pool ``modules`` names this module)."""

from __future__ import annotations

import collections

import anyio
import msgspec

from actors import Actor, Ask
from runtime import PoolConfig


class Job(Ask[str], frozen=True, tag=True):
    """Take ``seconds``, then answer with ``key``."""

    key: str
    seconds: float = 0.0


class Handled(Ask[dict[str, int]], frozen=True, tag=True):
    """How many times each job key ran its handler here."""


class Note(msgspec.Struct, frozen=True, tag=True):
    blob: bytes


class Tally(Actor):
    """Runs jobs one at a time and counts how often each key ran (the side effect)."""

    def __init__(self) -> None:
        self.runs: collections.Counter[str] = collections.Counter()

    async def job(self, msg: Job) -> str:
        self.runs[msg.key] += 1
        await anyio.sleep(msg.seconds)
        return msg.key

    async def handled(self, msg: Handled) -> dict[str, int]:
        return dict(self.runs)


class Slow(Actor):
    """Takes a while per tell: a mailbox that fills under a flood."""

    mailbox_size = 100

    def __init__(self) -> None:
        self.notes = 0

    async def note(self, msg: Note) -> None:
        self.notes += 1
        await anyio.sleep(0.005)

    async def job(self, msg: Job) -> str:
        await anyio.sleep(msg.seconds)
        return msg.key


POOLS = {"cpu": PoolConfig(name="cpu", hardware="cpu", capacity=16, modules=["tests.bus.app"])}
FAST = {"heartbeat_interval": 0.2, "node_lost_after": 1.5, "placement_timeout": 10.0}
