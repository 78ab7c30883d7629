"""Behaviour of actors, refs, supervision and placement, on every transport."""

from __future__ import annotations

import contextlib
import time

import anyio
import msgspec
import pytest

from actors import ActorDead, AskTimeout, RemoteError, SpawnFailed
from runtime import NoWorkerForPool
from transports import Envelope, Kind, new_id

from .app import (
    Add,
    AllForOneParent,
    Append,
    AskChild,
    Boom,
    ChildExits,
    CrashChild,
    Deaths,
    Echo,
    FragileParent,
    Incarnation,
    Items,
    Parent,
    RestForOneParent,
    Sleep,
    SpawnChildren,
    Watcher,
    WatchIt,
    WhereAmI,
    Worker,
)
from .conftest import Cluster

pytestmark = pytest.mark.anyio


async def test_ask_and_tell_in_order(cluster: Cluster) -> None:
    system = await cluster.system()
    ref = await system.spawn(Worker, "w")
    assert await ref.ask(Add(2, 3)) == 5
    for i in range(50):
        await ref.tell(Append(i))
    assert await ref.ask(Items()) == list(range(50))


async def test_ask_across_nodes_on_a_pool(cluster: Cluster) -> None:
    system = await cluster.system()
    await cluster.worker(["gpu"])
    ref = await system.spawn(Worker, "remote", pool="gpu")
    where = await ref.ask(WhereAmI())
    assert where["pool"] == "gpu"
    assert where["label"] == "remote"
    assert ref.address.node_id != system.node.node_id


async def test_handler_error_reaches_asker_and_actor_restarts(cluster: Cluster) -> None:
    system = await cluster.system()
    ref = await system.spawn(Worker)
    await ref.tell(Append(1))
    with pytest.raises(RemoteError) as info:
        await ref.ask(Boom("kaput"))
    assert info.value.remote_type == "RuntimeError"
    assert info.value.remote_message == "kaput"
    assert "RuntimeError: kaput" in info.value.remote_traceback
    # permanent by default: restarted with fresh state, same ref
    assert await ref.ask(Items()) == []
    assert await ref.ask(Incarnation()) == 2


async def test_ask_to_stopped_actor_is_actor_dead_fast(cluster: Cluster) -> None:
    system = await cluster.system()
    ref = await system.spawn(Worker)
    await system.stop(ref)
    started = time.monotonic()
    with pytest.raises(ActorDead):
        await ref.ask(Add(1, 1), timeout=20)
    assert time.monotonic() - started < 5  # an error, not a 20 s timeout


async def test_ask_timeout_is_typed(cluster: Cluster) -> None:
    system = await cluster.system()
    ref = await system.spawn(Worker)
    with pytest.raises(AskTimeout) as info:
        await ref.ask(Sleep(5), timeout=0.2)
    assert isinstance(info.value, TimeoutError)


async def test_unknown_type_and_invalid_payload_are_undeliverable(cluster: Cluster) -> None:
    system = await cluster.system()
    ref = await system.spawn(Worker)
    node = system.node
    subject = node.subjects.mailbox(ref.actor_id)
    unknown = Envelope(id=new_id(), kind=Kind.ASK, target=ref.actor_id, type="NoSuchType",
                       payload=msgspec.msgpack.encode({"x": 1}))
    reply = await node.transport.request(subject, unknown, timeout=5)
    assert reply.kind is Kind.ERROR
    invalid = Envelope(id=new_id(), kind=Kind.ASK, target=ref.actor_id, type="Add",
                       payload=msgspec.msgpack.encode({"type": "Add", "a": "not an int"}))
    reply = await node.transport.request(subject, invalid, timeout=5)
    assert reply.kind is Kind.ERROR
    assert node.transport.dead_letters.counts["undeliverable"] >= 2
    assert await ref.ask(Add(1, 2)) == 3  # still running


async def test_message_must_be_a_struct(cluster: Cluster) -> None:
    system = await cluster.system()
    ref = await system.spawn(Worker)
    with pytest.raises(TypeError, match="msgspec Structs"):
        await ref.ask({"a": 1})  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="timeout"):
        await ref.ask(Add(1, 2), timeout=-1)


async def test_large_message_round_trip(cluster: Cluster) -> None:
    system = await cluster.system()
    await cluster.worker(["cpu"])
    ref = await system.spawn(Worker, pool="cpu")
    data = bytes(range(256)) * (20 * 1024 * 1024 // 256)
    assert len(data) == 20 * 1024 * 1024
    assert await ref.ask(Echo(data), timeout=60) == data


async def test_no_worker_for_pool_is_a_clear_error(cluster: Cluster) -> None:
    system = await cluster.system(placement_timeout=0.3)
    with pytest.raises(NoWorkerForPool, match="heterarch worker --pool nowhere"):
        await system.spawn(Worker, pool="nowhere")


async def test_worker_refuses_classes_outside_its_modules(cluster: Cluster) -> None:
    system = await cluster.system()
    await cluster.worker(["cpu"])
    from examples.hello import Greeter

    with pytest.raises(SpawnFailed, match="refusing to instantiate"):
        await system.spawn(Greeter, pool="cpu")


async def test_bad_constructor_arguments_fail_the_spawn(cluster: Cluster) -> None:
    system = await cluster.system()
    await cluster.worker(["cpu"])
    with pytest.raises(SpawnFailed, match="label"):
        await system.spawn(Worker, label=12, pool="cpu")
    with pytest.raises(SpawnFailed, match="refusing to start"):
        await system.spawn(Worker, fail_start=True, pool="cpu")
    with pytest.raises(SpawnFailed, match="encodable"):
        await system.spawn(Worker, object())


async def test_one_for_one_restarts_only_the_crashed_child(cluster: Cluster) -> None:
    system = await cluster.system()
    await cluster.worker(["cpu"])
    parent = await system.spawn(Parent)
    await parent.ask(SpawnChildren(3, pool="cpu"))
    assert await parent.ask(CrashChild(1)) == "RemoteError"
    assert await parent.ask(AskChild(1)) == 2  # restarted, same ref
    assert await parent.ask(AskChild(0)) == 1
    assert await parent.ask(AskChild(2)) == 1
    assert "child-1:restarted" in await parent.ask(ChildExits())


async def test_one_for_all_restarts_every_child(cluster: Cluster) -> None:
    system = await cluster.system()
    parent = await system.spawn(AllForOneParent)
    await parent.ask(SpawnChildren(3))
    await parent.ask(CrashChild(1))
    assert [await parent.ask(AskChild(i)) for i in range(3)] == [2, 2, 2]


async def test_rest_for_one_restarts_later_children(cluster: Cluster) -> None:
    system = await cluster.system()
    parent = await system.spawn(RestForOneParent)
    await parent.ask(SpawnChildren(3))
    await parent.ask(CrashChild(1))
    assert [await parent.ask(AskChild(i)) for i in range(3)] == [1, 2, 2]


async def test_temporary_child_is_not_restarted(cluster: Cluster) -> None:
    system = await cluster.system()
    parent = await system.spawn(Parent)
    await parent.ask(SpawnChildren(1, restart="temporary"))
    await parent.ask(CrashChild(0))
    with pytest.raises(RemoteError) as info:
        await parent.ask(AskChild(0))  # the parent's handler raises ActorDead: a RemoteError
    assert info.value.remote_type == "ActorDead"


async def test_restart_intensity_escalates_to_the_parent(cluster: Cluster) -> None:
    system = await cluster.system()
    watcher = await system.spawn(Watcher)
    parent = await system.spawn(FragileParent, supervision="temporary")
    children = await parent.ask(SpawnChildren(1))
    await watcher.ask(WatchIt(parent))
    await watcher.ask(WatchIt(children[0]))
    await parent.ask(CrashChild(0))  # first crash: restarted (after backoff)
    assert await parent.ask(AskChild(0)) == 2
    with contextlib.suppress(RemoteError):  # the parent may fail before it answers
        await parent.ask(CrashChild(0))  # second within the period: the parent gives up
    with anyio.fail_after(10):
        while len(deaths := await watcher.ask(Deaths())) < 2:
            await anyio.sleep(0.02)
    assert any(d.startswith(parent.actor_id) and "restart intensity" in d for d in deaths)
    with pytest.raises(ActorDead):
        await parent.ask(ChildExits())


async def test_stopping_a_parent_stops_its_subtree(cluster: Cluster) -> None:
    system = await cluster.system()
    await cluster.worker(["gpu"])
    parent = await system.spawn(Parent)
    children = await parent.ask(SpawnChildren(2, pool="gpu"))
    assert await children[0].ask(Add(1, 1)) == 2
    await system.stop(parent)
    for child in children:
        with pytest.raises(ActorDead):
            await child.ask(Add(1, 1), timeout=5)


async def test_watch_delivers_terminated(cluster: Cluster) -> None:
    system = await cluster.system()
    await cluster.worker(["cpu"])
    watcher = await system.spawn(Watcher)
    target = await system.spawn(Worker, pool="cpu", supervision="temporary")
    await watcher.ask(WatchIt(target))
    await system.stop(target)
    with anyio.fail_after(10):
        while not (deaths := await watcher.ask(Deaths())):
            await anyio.sleep(0.02)
    assert deaths == [f"{target.actor_id}:stopped:False"]


async def test_spawns_on_a_pool_land_only_on_its_workers(cluster: Cluster) -> None:
    system = await cluster.system()
    w1 = await cluster.worker(["cpu"])
    w2 = await cluster.worker(["cpu"])
    refs = [await system.spawn(Worker, pool="cpu") for _ in range(20)]
    nodes = {r.address.node_id for r in refs}
    assert nodes <= {w1.node.node_id, w2.node.node_id}
    assert sum(len(w.node.cells) - 1 for w in (w1, w2)) == 20
