"""Actors for the bus tests (a worker's pool ``modules`` names this module)."""

from __future__ import annotations

import collections

import anyio
import msgspec

from actors import Actor, ActorRef, Ask
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


class Effect(Ask[str], frozen=True, tag=True):
    """Say it started, take ``seconds``, then do the side effect (tell the parent it is done)."""

    key: str
    seconds: float


class Started(msgspec.Struct, frozen=True, tag=True):
    key: str


class Done(msgspec.Struct, frozen=True, tag=True):
    key: str


class Effector(Actor):
    async def effect(self, msg: Effect) -> str:
        parent = self.ctx.parent
        assert parent is not None
        await parent.tell(Started(msg.key))
        await anyio.sleep(msg.seconds)
        await parent.tell(Done(msg.key))
        return msg.key


class StartEffectors(Ask[list[ActorRef[Effector]]], frozen=True, tag=True):
    n: int
    pool: str


class Effects(Ask[dict[str, list[int]]], frozen=True, tag=True):
    """Per key: how many times it started, how many times its side effect happened."""


class Recorder(Actor):
    """Parent of the effectors; counts their side effects."""

    def __init__(self) -> None:
        self.started: collections.Counter[str] = collections.Counter()
        self.done: collections.Counter[str] = collections.Counter()

    async def start_effectors(self, msg: StartEffectors) -> list[ActorRef[Effector]]:
        return [await self.ctx.spawn(Effector, pool=msg.pool) for _ in range(msg.n)]

    async def on_started(self, msg: Started) -> None:
        self.started[msg.key] += 1

    async def on_done(self, msg: Done) -> None:
        self.done[msg.key] += 1

    async def effects(self, msg: Effects) -> dict[str, list[int]]:
        return {k: [self.started[k], self.done[k]] for k in self.started | self.done}


class Crash(Ask[str], frozen=True, tag=True):
    pass


class SlowToRestart(Actor):
    """Crashes on ``Crash``; its restart waits for ``proceed`` (set by the test)."""

    restarting: anyio.Event
    proceed: anyio.Event

    async def crash(self, msg: Crash) -> str:
        raise RuntimeError("crash on purpose")

    async def on_restart(self, error: BaseException | str) -> None:
        type(self).restarting.set()
        await type(self).proceed.wait()


class SpawnChild(Ask[ActorRef[SlowToRestart]], frozen=True, tag=True):
    pool: str


class Supervisor(Actor):
    async def spawn_child(self, msg: SpawnChild) -> ActorRef[SlowToRestart]:
        return await self.ctx.spawn(SlowToRestart, pool=msg.pool)


POOLS = {"cpu": PoolConfig(name="cpu", hardware="cpu", capacity=16, modules=["tests.bus.app"])}
FAST = {"heartbeat_interval": 0.2, "node_lost_after": 1.5, "placement_timeout": 10.0}


class Write(Ask[str], frozen=True, tag=True):
    """Append ``key`` to the file at ``path`` (the side effect, outside the runtime)."""

    key: str
    path: str


class Writer(Actor):
    def write(self, msg: Write) -> str:
        with open(msg.path, "a") as f:
            f.write(msg.key + "\n")
        return msg.key


class Round(Ask[list[str]], frozen=True, tag=True):
    """Hand ``n`` writes to new children (idempotent asks), then hold ``hold`` seconds."""

    n: int
    pool: str
    path: str
    hold: float


class Coordinator(Actor):
    async def round(self, msg: Round) -> list[str]:
        children = [await self.ctx.spawn(Writer, pool=msg.pool) for _ in range(msg.n)]
        answers = [""] * msg.n

        async def one(i: int) -> None:
            answers[i] = await children[i].ask(Write(f"job{i}", msg.path), idempotent=True)

        async with anyio.create_task_group() as tg:
            for i in range(msg.n):
                tg.start_soon(one, i)
        await anyio.sleep(msg.hold)
        return answers
