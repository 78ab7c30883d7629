"""The bus as a trust boundary: hostile envelopes are refused with a log line, and legitimate
traffic is unaffected."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import msgspec
import nats
import pytest

from actors import SpawnFailed, message_type_name
from runtime import ActorSystem, NatsServer, Worker
from runtime._core.cell import CellState
from runtime._core.protocol import Exited, NodeInfo, SpawnRequest
from transports import Envelope, Kind, NatsTransport, encode_envelope, new_id

from .app import FAST, POOLS, Handled, Job, Tally

pytestmark = pytest.mark.anyio


async def test_a_reply_subject_in_the_jetstream_api_is_refused(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    namespace = "dp" + new_id()[:8]
    victim = "victim" + new_id()[:8]
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(name=victim, subjects=[f"{victim}.>"])
    for i in range(5):
        await js.publish(f"{victim}.x", str(i).encode())
    try:
        async with Worker(POOLS, ["cpu"], nats=nats_server.url, namespace=namespace, **FAST), \
                ActorSystem(nats=nats_server.url, namespace=namespace, **FAST) as system:
            tally = await system.spawn(Tally, pool="cpu")
            assert await tally.ask(Job("legit"), timeout=10) == "legit"
            attack = Envelope(
                id=new_id(), kind=Kind.ASK, target=tally.actor_id,
                type=message_type_name(Job), payload=msgspec.msgpack.encode(Job("purge")),
                correlation_id=new_id(),
            )
            subject = f"{namespace}.a.{tally.actor_id}"
            for api in (f"$JS.API.STREAM.PURGE.{victim}", f"$JS.API.STREAM.DELETE.{victim}",
                        "$SYS.REQ.SERVER.PING", f"_INBOX.$JS.API.STREAM.PURGE.{victim}"):
                with caplog.at_level(logging.WARNING, logger="heterarch.node"):
                    await nc.publish(subject, encode_envelope(attack), reply=api)
                    await nc.flush()
                    # The handler never ran: the next legitimate ask is the only new job.
                    assert await tally.ask(Handled(), timeout=10) == {"legit": 1}
            info = await js.stream_info(victim)
            assert info.state.messages == 5
            assert "is not an inbox" in caplog.text
            assert await tally.ask(Job("after"), timeout=10) == "after"
            transport = system.node.transport
            assert isinstance(transport, NatsTransport)
    finally:
        await nc.close()


async def test_a_reply_from_another_sender_is_refused(nats_server: NatsServer,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A responder that answers an ask in the name of someone else is ignored: the asker asks
    again (the same request id) and gets the real actor's answer."""
    namespace = "fr" + new_id()[:8]
    nc = await nats.connect(nats_server.url)
    try:
        async with Worker(POOLS, ["cpu"], nats=nats_server.url, namespace=namespace, **FAST), \
                ActorSystem(nats=nats_server.url, namespace=namespace, **FAST) as system:
            tally = await system.spawn(Tally, pool="cpu")
            forged_once: list[str] = []

            async def forge(msg: nats.aio.msg.Msg) -> None:
                if msg.reply and not forged_once:
                    forged_once.append(msg.reply)
                    fake = Envelope(id=new_id(), kind=Kind.REPLY, sender="impostor",
                                    payload=msgspec.msgpack.encode("forged"))
                    await nc.publish(msg.reply, encode_envelope(fake))

            sub = await nc.subscribe(f"{namespace}.a.>", cb=forge)
            await nc.flush()
            with caplog.at_level(logging.WARNING, logger="heterarch.node"):
                assert await tally.ask(Job("real", 1.0), timeout=10) == "real"
            await sub.unsubscribe()
            assert forged_once, "the impostor saw no ask"
            assert "came from another sender 'impostor'" in caplog.text
            assert await tally.ask(Handled(), timeout=10) == {"real": 1}
    finally:
        await nc.close()


async def test_crafted_heartbeats_are_refused_with_one_line_each(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    namespace = "hb" + new_id()[:8]
    nc = await nats.connect(nats_server.url)
    try:
        async with Worker(POOLS, ["cpu"], nats=nats_server.url, namespace=namespace,
                          **FAST) as worker, \
                ActorSystem(nats=nats_server.url, namespace=namespace, **FAST) as system:
            tally = await system.spawn(Tally, pool="cpu")

            def heartbeat(sender: str, info: NodeInfo | bytes) -> bytes:
                payload = info if isinstance(info, bytes) else msgspec.msgpack.encode(info)
                return encode_envelope(Envelope(id=new_id(), kind=Kind.SYSTEM, sender=sender,
                                                payload=payload))

            def info(node_id: str, **extra: Any) -> NodeInfo:
                return NodeInfo(node_id=node_id, role="worker", host="h", pid=1, started_at=0,
                                heartbeat_at=float("nan"), lost_after=float("nan"), **extra)

            crafted = [
                heartbeat("x" * 5000, info("x" * 5000)),  # a subject past the control line
                heartbeat("*", info("*")), heartbeat(">", info(">")),
                heartbeat("$SYS", info("$SYS")), heartbeat("a.b", info("a.b")),
                heartbeat("ok-id", b"\xc1 not msgpack"),
                heartbeat("ok-id", info("someone-else")),
                heartbeat("ok-id", info("ok-id", pools={"a.b": "cpu"})),
                heartbeat(worker.node.node_id, info(worker.node.node_id)),  # impersonation
            ]
            with caplog.at_level(logging.WARNING):
                for data in crafted:
                    await nc.publish(f"{namespace}.hb.x", data)
                await nc.flush()
                # Judge after the crafted ones have been seen and any "lost" timeout has passed.
                with anyio.fail_after(30):
                    while caplog.text.count("refused a heartbeat") < 2 * (len(crafted) - 1):
                        await anyio.sleep(0.05)
                stats = await system.node.cluster_stats(timeout=5)
            assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
            assert {s.info.node_id for s in stats} == {worker.node.node_id, system.node.node_id}
            both = {worker.node.node_id, system.node.node_id}
            assert set(system.node.membership.node_ids()) == both
            assert system.node.transport.is_connected
            assert await tally.ask(Job("still fine"), timeout=10) == "still fine"
    finally:
        await nc.close()


async def test_a_forged_exit_notice_leaves_one_incarnation(nats_server: NatsServer) -> None:
    """A forged ``Exited`` makes the parent restart its child, but never leaves two running:
    the parent stops the incarnation that 'exited' before it starts the next."""
    namespace = "fx" + new_id()[:8]
    nc = await nats.connect(nats_server.url)
    try:
        async with Worker(POOLS, ["cpu"], nats=nats_server.url, namespace=namespace,
                          **FAST) as worker, \
                ActorSystem(nats=nats_server.url, namespace=namespace, **FAST) as system:
            tally = await system.spawn(Tally, pool="cpu")
            old = worker.node.cells[tally.actor_id]
            record = system.node.supervision.records[tally.actor_id]
            forged = Exited(actor_id=tally.actor_id, reason="forged", abnormal=True,
                            generation=0)
            guardian = system.node.guardian.address
            env = Envelope(id=new_id(), kind=Kind.SYSTEM, target=guardian.actor_id,
                           type=message_type_name(Exited), payload=msgspec.msgpack.encode(forged))
            await nc.publish(system.node.subjects.mailbox(guardian.actor_id),
                             encode_envelope(env))
            with anyio.fail_after(30):
                while record.generation < 1:
                    await anyio.sleep(0.05)
            assert old.state is CellState.STOPPED
            running = [c for c in worker.node.cells.values()
                       if c.address.actor_id == tally.actor_id]
            assert [c.generation for c in running] == [1]
            assert await tally.ask(Job("one"), timeout=10) == "one"
    finally:
        await nc.close()


async def test_a_spawn_request_for_a_running_actor_id_is_refused(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    namespace = "hj" + new_id()[:8]
    async with Worker(POOLS, ["cpu"], nats=nats_server.url, namespace=namespace,
                      **FAST) as worker, \
            ActorSystem(nats=nats_server.url, namespace=namespace, **FAST) as system:
        tally = await system.spawn(Tally, pool="cpu")
        hijack = SpawnRequest(actor_class="tests.bus.app:Tally", args=msgspec.msgpack.encode(
            [[], {}]), actor_id=tally.actor_id, pool="cpu", generation=7)
        env = Envelope(id=new_id(), kind=Kind.SYSTEM, type=message_type_name(SpawnRequest),
                       payload=msgspec.msgpack.encode(hijack))
        with caplog.at_level(logging.WARNING):
            await system.node.transport.enqueue("cpu", env)
            with anyio.fail_after(30):
                while "refused to start another" not in caplog.text:
                    await anyio.sleep(0.05)
        assert worker.node.cells[tally.actor_id].generation == 0
        assert await tally.ask(Job("mine"), timeout=10) == "mine"


async def test_a_client_cannot_fill_a_worker_with_roots(nats_server: NatsServer,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    namespace = "qt" + new_id()[:8]
    pools = {"cpu": msgspec.structs.replace(POOLS["cpu"], roots_per_client=3)}
    async with Worker(pools, ["cpu"], nats=nats_server.url, namespace=namespace, **FAST), \
            ActorSystem(nats=nats_server.url, namespace=namespace, **FAST) as greedy, \
            ActorSystem(nats=nats_server.url, namespace=namespace, **FAST) as other:
        mine = [await greedy.spawn(Tally, pool="cpu") for _ in range(3)]
        with caplog.at_level(logging.WARNING), pytest.raises(SpawnFailed, match="spawn quota"):
            await greedy.spawn(Tally, pool="cpu")
        assert "spawn quota reached" in caplog.text
        theirs = await other.spawn(Tally, pool="cpu")  # another client is not affected
        assert await theirs.ask(Job("theirs"), timeout=10) == "theirs"
        await greedy.stop(mine[0])  # a freed root makes room again
        assert await (await greedy.spawn(Tally, pool="cpu")).ask(Job("again"), timeout=10)
