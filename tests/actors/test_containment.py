"""Crash-only containment: hostile values take down at most the one actor they reach."""

from __future__ import annotations

import time

import anyio
import msgspec
import pytest

from actors import ActorDead, RemoteError, ReplyNotEncodable, SpawnFailed, message_type_name
from runtime import NodeFailed, NoWorkerForPool, UnknownPool, Worker
from runtime._core.protocol import SpawnRequest
from transports import Envelope, Kind, encode_envelope, new_id

from .app import Add, FanOut, Incarnation, Keep, Parent, Poison, SpawnChildren
from .app import Worker as Worker_
from .conftest import Cluster

pytestmark = pytest.mark.anyio

#: msgpack of a list nested 10,000 deep: ``[[[[...None...]]]]``.
DEEP = b"\x91" * 10_000 + b"\xc0"


@pytest.mark.parametrize("kind", ["big-int", "lone-surrogate"])
async def test_a_reply_that_cannot_be_encoded_is_a_typed_error(
    cluster: Cluster, kind: str
) -> None:
    system = await cluster.system()
    worker = await cluster.worker(["cpu"])
    poisoned = await system.spawn(Worker_, pool="cpu")
    sibling = await system.spawn(Worker_, pool="cpu")
    assert poisoned.address.node_id == sibling.address.node_id == worker.node.node_id

    with pytest.raises(ReplyNotEncodable) as caught:
        await poisoned.ask(Poison(kind), timeout=10)
    assert caught.value.message_type == message_type_name(Poison)
    assert "Poison" in str(caught.value)
    assert await sibling.ask(Add(1, 2), timeout=10) == 3
    assert await poisoned.ask(Add(2, 2), timeout=10) == 4  # the actor itself carries on
    assert worker.node.task_group.is_open


async def test_a_failure_in_the_mailbox_loop_crashes_only_that_actor(cluster: Cluster) -> None:
    system = await cluster.system()
    worker = await cluster.worker(["cpu"])
    victim = await system.spawn(Worker_, pool="cpu")
    sibling = await system.spawn(Worker_, pool="cpu")

    # Encoding this reply raises LookupError inside the runtime's reply path, not the handler.
    with pytest.raises(RemoteError) as caught:
        await victim.ask(Poison("broken-zone"), timeout=10)
    assert caught.value.remote_type == "LookupError"
    assert "time zone database is gone" in str(caught.value)
    assert await sibling.ask(Add(1, 1), timeout=10) == 2
    with anyio.fail_after(10):  # its supervisor (the guardian) restarted it
        while True:
            try:
                if await victim.ask(Incarnation(), timeout=5) == 2:
                    break
            except ActorDead:
                await anyio.sleep(0.05)
    assert worker.node.task_group.is_open


async def test_a_deeply_nested_payload_is_a_dead_letter(cluster: Cluster) -> None:
    system = await cluster.system()
    worker = await cluster.worker(["cpu"])
    target = await system.spawn(Worker_, pool="cpu")
    sibling = await system.spawn(Worker_, pool="cpu")
    subject = system.node.subjects.mailbox(target.actor_id)
    # Keep(value=[[[[...]]]]), the list 10,000 deep, written by hand: no encoder makes it.
    payload = b"\x82" + msgspec.msgpack.encode("type") + msgspec.msgpack.encode("Keep")
    payload += msgspec.msgpack.encode("value") + DEEP
    env = Envelope(id=new_id(), kind=Kind.ASK, target=target.actor_id,
                   type=message_type_name(Keep), payload=payload)
    transport = system.node.transport
    reply = await transport.request_raw(subject, encode_envelope(env), timeout=10)  # type: ignore[attr-defined]
    assert reply.kind is Kind.ERROR
    assert b"nested deeper" in reply.payload
    assert worker.node.transport.dead_letters.counts["undeliverable"] >= 1
    assert await target.ask(Add(3, 4), timeout=10) == 7
    assert await sibling.ask(Add(5, 6), timeout=10) == 11


async def test_a_poisoned_spawn_request_is_dead_lettered_and_the_pool_keeps_serving(
    cluster: Cluster,
) -> None:
    system = await cluster.system()
    workers = [await cluster.worker(["cpu"]) for _ in range(3)]
    request = SpawnRequest(
        actor_class="tests.actors.app:Worker", args=DEEP, actor_id=new_id(), pool="cpu",
        parent=system.node.guardian.address, deadline=time.time() + 30,
    )
    with pytest.raises(SpawnFailed) as caught:
        await system.node.placement.spawn_remote(request, {})
    assert "nested deeper" in str(caught.value)
    refused = [w for w in workers if w.node.transport.dead_letters.counts["spawn-refused"]]
    assert len(refused) == 1
    assert "nested deeper" in refused[0].node.transport.dead_letters.recent[-1].detail

    # Every worker of the pool still serves: spawn until each one hosts an actor.
    hosts: set[str] = set()
    with anyio.fail_after(30):
        while hosts != {w.node.node_id for w in workers}:
            ref = await system.spawn(Worker_, pool="cpu")
            assert await ref.ask(Add(1, 1), timeout=10) == 2
            hosts.add(ref.address.node_id)
    assert all(w.node.task_group.is_open for w in workers)


async def test_arguments_nested_too_deep_to_encode_fail_the_spawn(cluster: Cluster) -> None:
    system = await cluster.system()
    deep: list[object] = []
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(SpawnFailed) as caught:
        await system.spawn(Worker_, deep, pool=None)
    assert "arguments of Worker" in str(caught.value)


async def test_records_are_empty_after_parents_stop(cluster: Cluster) -> None:
    system = await cluster.system()
    worker = await cluster.worker(["cpu"])
    parents = [await system.spawn(Parent) for _ in range(12)]  # 60 children: within capacity
    for parent in parents:
        children = await parent.ask(SpawnChildren(5, pool="cpu"), timeout=30)
        assert len(children) == 5
    assert len(system.node.supervision.records) == 12 * 5 + 12
    for parent in parents:
        await system.stop(parent)
    assert system.node.supervision.records == {}
    assert worker.node.supervision.records == {}
    with anyio.fail_after(10):
        while len(worker.node.cells) > 1:  # only its guardian left
            await anyio.sleep(0.05)


async def test_a_failure_of_the_node_itself_closes_it(cluster: Cluster) -> None:
    worker: Worker = await cluster.worker(["cpu"])

    async def broken_machinery() -> None:
        raise RuntimeError("heartbeat bookkeeping broke")

    worker.node.task_group.start_soon(broken_machinery)
    with anyio.fail_after(20), pytest.raises(NodeFailed) as caught:
        await worker.wait_closed()
    assert "heartbeat bookkeeping broke" in str(caught.value)



async def test_an_unknown_pool_fails_at_once_with_the_pools_that_exist(cluster: Cluster) -> None:
    system = await cluster.system(placement_timeout=600.0)
    await cluster.worker(["cpu"])
    with anyio.fail_after(30), pytest.raises(UnknownPool) as caught:
        await system.spawn(Worker_, pool="gpus")
    assert "did you mean 'gpu'?" in str(caught.value)
    assert caught.value.known == ["cpu", "gpu"]
    assert isinstance(caught.value, NoWorkerForPool)


async def test_the_real_cause_of_a_failed_restart_reaches_the_asker(cluster: Cluster) -> None:
    system = await cluster.system()
    gpu = await cluster.worker(["gpu"])
    parent = await system.spawn(Parent)
    await parent.ask(SpawnChildren(2, pool="gpu"), timeout=30)
    async with anyio.create_task_group() as tg:
        errors: list[BaseException] = []

        async def fan_out() -> None:
            try:
                await parent.ask(FanOut(60), timeout=120)
            except RemoteError as exc:
                errors.append(exc)

        tg.start_soon(fan_out)
        await anyio.wait_all_tasks_blocked()
        await gpu.__aexit__(None, None, None)  # the pool's only worker goes away
    (error,) = errors
    assert isinstance(error, RemoteError)
    assert error.remote_type == "NoWorkerForPool"
    assert "heterarch worker --pool gpu" in str(error)
