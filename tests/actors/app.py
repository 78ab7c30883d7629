"""Actor classes used by the behavioural suite (importable by workers: module tests.actors.app)."""

from __future__ import annotations

import datetime
import os
import signal

import anyio
import msgspec

from actors import (
    Actor,
    ActorDead,
    ActorRef,
    Ask,
    Backoff,
    ChildExit,
    Inbox,
    Restart,
    Strategy,
    SupervisorStrategy,
    Terminated,
)


class Echo(Ask[bytes], frozen=True, tag=True):
    data: bytes


class Add(Ask[int], frozen=True, tag=True):
    a: int
    b: int


class Append(msgspec.Struct, frozen=True, tag=True):
    item: int


class Items(Ask[list[int]], frozen=True, tag=True):
    pass


class Boom(Ask[str], frozen=True, tag=True):
    message: str = "boom"


class Incarnation(Ask[int], frozen=True, tag=True):
    pass


class WhereAmI(Ask[dict[str, object]], frozen=True, tag=True):
    pass


class Sleep(Ask[str], frozen=True, tag=True):
    seconds: float
    label: str = ""


class Poison(Ask[object], frozen=True, tag=True):
    """Ask for a reply that cannot travel: ``kind`` picks the hostile value."""

    kind: str


class BreakItsNode(msgspec.Struct, frozen=True, tag=True):
    """A tell: a task of the receiver's node raises (its machinery fails, as a runtime bug
    would make it)."""


class Keep(Ask[bool], frozen=True, tag=True):
    """Any msgpack value at all (the hostile-input tests nest it very deep)."""

    value: object


class _BrokenZone(datetime.tzinfo):
    """A time zone whose lookup fails while the reply is being encoded (not an encode error)."""

    def utcoffset(self, dt: datetime.datetime | None) -> datetime.timedelta:
        raise LookupError("time zone database is gone")

    def tzname(self, dt: datetime.datetime | None) -> str:
        return "broken"

    def dst(self, dt: datetime.datetime | None) -> datetime.timedelta:
        return datetime.timedelta(0)


POISON_VALUES: dict[str, object] = {
    "big-int": 2**64,
    "lone-surrogate": "done \udfff",
    "broken-zone": datetime.datetime(2026, 11, 22, tzinfo=_BrokenZone()),
}

_incarnations: dict[str, int] = {}


class KillsItsWorker(Actor):
    """Hostile: constructing it kills the process (as a crashing C extension would)."""

    def __init__(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class Worker(Actor):
    """A general-purpose test actor."""

    def __init__(self, label: str = "", fail_start: bool = False) -> None:
        self.label = label
        self.items: list[int] = []
        self.fail_start = fail_start

    async def on_start(self) -> None:
        if self.fail_start:
            raise ValueError("refusing to start")
        key = self.ctx.self_ref.actor_id
        _incarnations[key] = _incarnations.get(key, 0) + 1

    async def echo(self, msg: Echo) -> bytes:
        return msg.data

    async def add(self, msg: Add) -> int:
        return msg.a + msg.b

    async def append(self, msg: Append) -> None:
        self.items.append(msg.item)

    async def items_(self, msg: Items) -> list[int]:
        return list(self.items)

    async def boom(self, msg: Boom) -> str:
        raise RuntimeError(msg.message)

    async def incarnation(self, msg: Incarnation) -> int:
        return _incarnations.get(self.ctx.self_ref.actor_id, 0)

    async def where(self, msg: WhereAmI) -> dict[str, object]:
        return {"pid": os.getpid(), "pool": self.ctx.pool, "depth": self.ctx.depth,
                "label": self.label}

    async def keep(self, msg: Keep) -> bool:
        return True

    async def break_its_node(self, msg: BreakItsNode) -> None:
        from runtime._core.current import current_cell  # the node, as the runtime sees it

        async def broken() -> None:
            raise RuntimeError("the node's machinery broke (a test's doing)")

        cell = current_cell.get()
        assert cell is not None
        cell.node.task_group.start_soon(broken)

    async def poison(self, msg: Poison) -> object:
        return POISON_VALUES[msg.kind]

    async def sleep(self, msg: Sleep) -> str:
        await anyio.sleep(msg.seconds)
        return msg.label or "slept"


class SpawnChildren(Ask[list[ActorRef[Worker]]], frozen=True, tag=True):
    count: int
    pool: str | None = None
    restart: str = "permanent"


class AskChild(Ask[int], frozen=True, tag=True):
    index: int


class CrashChild(Ask[str], frozen=True, tag=True):
    index: int


class ChildExits(Ask[list[str]], frozen=True, tag=True):
    pass


class FanOut(Ask[list[str]], frozen=True, tag=True):
    """Ask every child to sleep ``seconds`` concurrently; return their answers."""

    seconds: float


class Parent(Actor):
    supervisor_strategy = SupervisorStrategy(strategy=Strategy.ONE_FOR_ONE, max_restarts=5,
                                             period=10.0)

    def __init__(self) -> None:
        self.children: list[ActorRef[Worker]] = []
        self.exits: list[str] = []

    async def spawn_children(self, msg: SpawnChildren) -> list[ActorRef[Worker]]:
        for i in range(msg.count):
            self.children.append(
                await self.ctx.spawn(Worker, f"child-{i}", pool=msg.pool, name=f"child-{i}",
                                     supervision=Restart(msg.restart))
            )
        return list(self.children)

    async def ask_child(self, msg: AskChild) -> int:
        return await self.children[msg.index].ask(Incarnation(), timeout=10)

    async def crash_child(self, msg: CrashChild) -> str:
        try:
            await self.children[msg.index].ask(Boom("child crash"), timeout=10)
        except Exception as exc:
            return type(exc).__name__
        return "no error"

    async def fan_out(self, msg: FanOut) -> list[str]:
        results = [""] * len(self.children)

        async def one(i: int) -> None:
            results[i] = await self.children[i].ask(
                Sleep(msg.seconds, f"child-{i}"), timeout=60
            )

        async with anyio.create_task_group() as tg:
            for i in range(len(self.children)):
                tg.start_soon(one, i)
        return results

    async def on_child_exit(self, exit: ChildExit) -> None:
        self.exits.append(f"{exit.name}:{exit.action}")

    async def child_exits(self, msg: ChildExits) -> list[str]:
        return list(self.exits)


class AllForOneParent(Parent):
    supervisor_strategy = SupervisorStrategy(strategy=Strategy.ONE_FOR_ALL, max_restarts=5,
                                             period=10.0)


class RestForOneParent(Parent):
    supervisor_strategy = SupervisorStrategy(strategy=Strategy.REST_FOR_ONE, max_restarts=5,
                                             period=10.0)


class FragileParent(Parent):
    """Gives up after one restart in a minute, with backoff between restarts."""

    supervisor_strategy = SupervisorStrategy(max_restarts=1, period=60.0,
                                             backoff=Backoff(initial=0.01, maximum=0.05))


class WatchIt(Ask[bool], frozen=True, tag=True):
    target: ActorRef[Actor]


class Deaths(Ask[list[str]], frozen=True, tag=True):
    pass


class Watcher(Actor):
    def __init__(self) -> None:
        self.deaths: list[str] = []

    async def watch_it(self, msg: WatchIt) -> bool:
        await self.ctx.watch(msg.target)
        return True

    async def on_terminated(self, msg: Terminated) -> None:
        self.deaths.append(f"{msg.actor_id}:{msg.reason}:{msg.abnormal}")

    async def deaths_(self, msg: Deaths) -> list[str]:
        return list(self.deaths)


# -- cancellation (test_cancellation.py) ---------------------------------------------------------
class Event(msgspec.Struct, frozen=True, tag=True):
    """What a ``Relay`` reports to the test's inbox: ``what`` of actor ``actor_id``."""

    actor_id: str
    what: str  # "started", "cancelled", "refused-spawn"
    depth: int = 0
    deadline_left: float = -1.0  # the handler's own deadline, seconds left (-1: none)


class Chain(Ask[str], frozen=True, tag=True):
    """Spawn a child on ``pool`` and ask it ``Chain(depth - 1)``; at depth 0, wait forever.
    Every level reports to ``inbox``; ``shielded`` makes the leaf ignore its cancellation."""

    depth: int
    inbox: Inbox
    pool: str | None = None
    shielded: str = ""  # a key of RELEASES: the leaf ignores cancellation until it is set
    respawn: bool = False  # on cancellation, try (shielded) to spawn one more child


#: Events that free a ``Chain(shielded=key)`` leaf (set by the test, in the same process).
RELEASES: dict[str, anyio.Event] = {}


class Relay(Actor):
    async def _report(self, inbox: Inbox, what: str, depth: int) -> None:
        left = anyio.current_effective_deadline() - anyio.current_time()
        with anyio.CancelScope(shield=True):
            await self.ctx.send_to_inbox(inbox, Event(
                self.ctx.self_ref.actor_id, what, depth,
                -1.0 if left == float("inf") else left))

    async def chain(self, msg: Chain) -> str:
        await self._report(msg.inbox, "started", msg.depth)
        try:
            if msg.depth == 0:
                if msg.shielded:  # a handler that ignores its cancellation (same process)
                    with anyio.CancelScope(shield=True):
                        await RELEASES.setdefault(msg.shielded, anyio.Event()).wait()
                await anyio.sleep(3600)
                return "leaf"
            child = await self.ctx.spawn(Relay, pool=msg.pool)
            return await child.ask(msgspec.structs.replace(msg, depth=msg.depth - 1),
                                   timeout=3600)
        except anyio.get_cancelled_exc_class():
            await self._report(msg.inbox, "cancelled", msg.depth)
            if msg.respawn:
                with anyio.CancelScope(shield=True):
                    try:
                        await self.ctx.spawn(Relay, pool=msg.pool)
                        await self._report(msg.inbox, "spawned", msg.depth)
                    except ActorDead:
                        await self._report(msg.inbox, "refused-spawn", msg.depth)
            raise
