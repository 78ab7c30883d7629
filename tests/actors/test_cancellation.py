"""Stop means stop: deadlines and cancellation travel down the spawning tree (gRPC's model).

Every level of a ``Chain`` reports ``started`` and ``cancelled`` to an inbox of the test, so
the tests wait for events, never for time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import msgspec
import pytest

from actors import ActorDead
from runtime import PoolConfig, Worker
from runtime._core.protocol import CANCELLED
from transports import Envelope, Kind, decode_error, new_id

from . import app
from .app import RELEASES, Chain, Event, Relay
from .app import Worker as AppWorker
from .conftest import FAST, Cluster

pytestmark = pytest.mark.anyio

WAIT_S = 60  # generous: the machine is loaded; what is tested is that it happens at all


class Events:
    def __init__(self) -> None:
        self.items: list[Event] = []
        self._changed = anyio.Event()

    def add(self, event: Event) -> None:
        self.items.append(event)
        self._changed.set()
        self._changed = anyio.Event()

    def of(self, what: str) -> set[str]:
        return {e.actor_id for e in self.items if e.what == what}

    def depths(self, what: str) -> set[int]:
        return {e.depth for e in self.items if e.what == what}

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        with anyio.fail_after(WAIT_S):
            while not condition():
                await self._changed.wait()

    async def wait_all_cancelled(self) -> None:
        await self.wait_for(lambda: bool(self.of("started"))
                            and self.of("cancelled") == self.of("started"))


async def test_cancelling_the_asker_cancels_the_remote_tree(cluster: Cluster) -> None:
    system = await cluster.system()
    await cluster.worker(["gpu"])
    events = Events()
    with system.node.open_inbox(Event, events.add) as inbox:
        root = await system.spawn(Relay, pool="gpu")
        async with anyio.create_task_group() as tg:
            tg.start_soon(_ask_quietly, root, Chain(2, inbox, pool="gpu"))
            await events.wait_for(lambda: 0 in events.depths("started"))
            tg.cancel_scope.cancel()  # the caller gives up: its task is cancelled
        await events.wait_all_cancelled()
    assert events.depths("cancelled") == {0, 1, 2}


async def test_an_enclosing_deadline_travels_down_the_tree(cluster: Cluster) -> None:
    system = await cluster.system()
    await cluster.worker(["gpu"])
    events = Events()
    with system.node.open_inbox(Event, events.add) as inbox:
        root = await system.spawn(Relay, pool="gpu")
        with anyio.move_on_after(WAIT_S * 10) as outer:  # sooner than the ask's own timeout
            async with anyio.create_task_group() as tg:
                tg.start_soon(_ask_quietly, root, Chain(2, inbox, pool="gpu"))
                await events.wait_for(lambda: 0 in events.depths("started"))
                tg.cancel_scope.cancel()
        assert not outer.cancelled_caught
        await events.wait_all_cancelled()
    lefts = {e.depth: e.deadline_left for e in events.items if e.what == "started"}
    # Every level's handler runs under the caller's deadline (not its own 3600 s ask timeout).
    assert all(0 < left <= WAIT_S * 10 for left in lefts.values()), lefts


async def test_the_callee_stops_at_its_deadline_on_its_own(cluster: Cluster) -> None:
    """No cancel message: the deadline in the envelope alone ends the handler and its tree."""
    system = await cluster.system()
    await cluster.worker(["gpu"])
    events = Events()
    with system.node.open_inbox(Event, events.add) as inbox:
        root = await system.spawn(Relay, pool="gpu")
        env = Envelope(id=new_id(), kind=Kind.ASK, target=root.actor_id, correlation_id=new_id(),
                       type="Chain", payload=msgspec.msgpack.encode(Chain(1, inbox, pool="gpu")),
                       deadline=time.time() + 2.0)
        subject = system.node.subjects.mailbox(root.actor_id)
        reply = await system.node.transport.request(subject, env, timeout=WAIT_S)
        assert reply.kind is Kind.ERROR
        assert decode_error(reply.payload).type == CANCELLED
        await events.wait_all_cancelled()


async def test_stop_cancels_the_running_handler_and_the_subtree(cluster: Cluster) -> None:
    system = await cluster.system()
    worker = await cluster.worker(["gpu"])
    events = Events()
    with system.node.open_inbox(Event, events.add) as inbox:
        root = await system.spawn(Relay, pool="gpu")
        async with anyio.create_task_group() as tg:
            failures: list[BaseException] = []

            async def ask() -> None:
                try:
                    await root.ask(Chain(2, inbox, pool="gpu", respawn=True), timeout=3600)
                except ActorDead as exc:
                    failures.append(exc)

            tg.start_soon(ask)
            await events.wait_for(lambda: 0 in events.depths("started"))
            await system.stop(root)
        await events.wait_all_cancelled()
    assert len(failures) == 1  # the asker learns at once that its actor stopped
    # A stopping actor never spawns: every level's attempt was refused.
    assert not events.of("spawned")
    assert events.depths("refused-spawn") == {0, 1, 2}
    assert [c for c in worker.node.cells.values() if c is not worker.node.guardian] == []


async def test_a_handler_that_ignores_cancellation_does_not_hold_up_the_stop(
    cluster: Cluster,
) -> None:
    system = await cluster.system()
    events = Events()
    key = new_id()
    try:
        with system.node.open_inbox(Event, events.add) as inbox:
            root = await system.spawn(Relay)  # here: the test frees the leaf at the end
            async with anyio.create_task_group() as tg:
                tg.start_soon(_ask_quietly, root, Chain(1, inbox, shielded=key))
                await events.wait_for(lambda: 0 in events.depths("started"))
                await system.stop(root)  # returns, though the leaf's handler still runs
                tg.cancel_scope.cancel()
            ids = events.of("started")
            assert not ids & set(system.node.cells)  # the whole tree is gone
    finally:
        RELEASES.setdefault(key, anyio.Event()).set()


async def _ask_quietly(ref: object, msg: Chain) -> None:
    try:
        await ref.ask(msg, timeout=3600)  # type: ignore[attr-defined]
    except ActorDead:
        pass


async def test_a_spawn_given_up_on_is_stopped_when_a_worker_starts_it(cluster: Cluster) -> None:
    system = await cluster.system()
    tiny = PoolConfig(name="tiny", hardware="cpu", capacity=1, modules=["tests.actors.app"])
    worker = await cluster._workers.enter_async_context(Worker(
        {"tiny": tiny}, ["tiny"], transport=await cluster._owned(), **FAST))
    occupant = await system.spawn(AppWorker, pool="tiny")  # the pool's only slot
    started_before = set(app._incarnations)
    with anyio.move_on_after(1.0) as gave_up:  # the spawner gives up while it waits
        await system.spawn(AppWorker, pool="tiny")
    assert gave_up.cancelled_caught
    await system.stop(occupant)  # the slot frees: the worker starts what was asked
    with anyio.fail_after(WAIT_S):  # polled: a worker's cells send no event
        while not set(app._incarnations) - started_before - {occupant.actor_id}:
            await anyio.sleep(0.05)  # the late one has not started yet
        while [c for c in worker.node.cells.values() if c is not worker.node.guardian]:
            await anyio.sleep(0.05)  # it started: it must be stopped at once
