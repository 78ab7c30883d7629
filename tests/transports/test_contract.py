"""The transport contract, on both backends (memory and a real nats-server)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import msgspec
import nats
import pytest

from runtime import NatsServer
from transports import (
    ConnectOptions,
    Envelope,
    Kind,
    MemoryBus,
    MemoryTransport,
    NatsTransport,
    Transport,
    WorkItem,
    WorkQueue,
    decode_envelope,
    decode_error,
    new_id,
)
from transports.errors import (
    BlobNotFound,
    ConnectFailed,
    InvalidSubject,
    NoResponders,
    RequestTimeout,
    TransportError,
)

pytestmark = pytest.mark.anyio


def env(payload: bytes = b"", **kw: object) -> Envelope:
    return Envelope(id=new_id(), kind=Kind.TELL, payload=payload, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "nats"])
async def transport(request: pytest.FixtureRequest, nats_server: NatsServer) -> AsyncIterator[
    Transport
]:
    namespace = "c" + new_id()[:10]
    t: Transport = MemoryTransport(namespace=namespace, blob_threshold=1024) if (
        request.param == "memory") else NatsTransport(
        ConnectOptions(servers=[nats_server.url]), namespace=namespace, blob_threshold=1024)
    await t.connect()
    yield t
    await t.close()


class Inbox:
    def __init__(self) -> None:
        self.items: list[Envelope] = []
        self.changed = anyio.Event()

    async def __call__(self, e: Envelope) -> None:
        self.items.append(e)
        self.changed.set()
        self.changed = anyio.Event()

    async def wait_for(self, n: int) -> list[Envelope]:
        with anyio.fail_after(10):
            while len(self.items) < n:
                await self.changed.wait()
        return self.items


async def test_publish_subscribe_wildcards_and_order(transport: Transport) -> None:
    star, tail = Inbox(), Inbox()
    await transport.subscribe("a.*.c", star)
    await transport.subscribe("a.>", tail)
    await transport.flush()
    for i in range(100):
        await transport.publish(f"a.{i}.c", env(str(i).encode()))
    await transport.publish("a.b", env(b"x"))
    got = await star.wait_for(100)
    assert [e.payload for e in got] == [str(i).encode() for i in range(100)]
    assert len(await tail.wait_for(101)) == 101


async def test_queue_group_delivers_once(transport: Transport) -> None:
    one, two = Inbox(), Inbox()
    await transport.subscribe("q.x", one, queue="g")
    await transport.subscribe("q.x", two, queue="g")
    await transport.flush()
    for _ in range(20):
        await transport.publish("q.x", env())
    with anyio.fail_after(10):
        while len(one.items) + len(two.items) < 20:
            await anyio.sleep(0.01)
    assert len(one.items) + len(two.items) == 20


async def test_request_reply_and_errors(transport: Transport) -> None:
    async def echo(e: Envelope) -> None:
        await transport.publish(e.reply_to, env(e.payload * 2, correlation_id=e.id))

    await transport.subscribe("svc.echo", echo)
    await transport.flush()
    reply = await transport.request("svc.echo", env(b"ab"), timeout=5)
    assert reply.payload == b"abab"
    started = time.monotonic()
    with pytest.raises(NoResponders):
        await transport.request("svc.nobody", env(), timeout=10)
    assert time.monotonic() - started < 5

    async def silent(e: Envelope) -> None:
        return None

    await transport.subscribe("svc.silent", silent)
    await transport.flush()
    with pytest.raises(RequestTimeout):
        await transport.request("svc.silent", env(), timeout=0.2)


async def test_large_payloads_travel_as_blobs(transport: Transport) -> None:
    big = bytes(range(256)) * (20 * 4096)  # 20 MB

    async def echo(e: Envelope) -> None:
        assert not e.blob  # restored before the handler sees it
        await transport.publish(e.reply_to, env(e.payload))

    await transport.subscribe("svc.big", echo)
    await transport.flush()
    reply = await transport.request("svc.big", env(big), timeout=60)
    assert reply.payload == big


async def test_handler_errors_and_malformed_bytes_are_dead_letters(transport: Transport) -> None:
    good = Inbox()

    async def flaky(e: Envelope) -> None:
        if e.payload == b"boom":
            raise RuntimeError("handler bug")
        await good(e)

    await transport.subscribe("dl.x", flaky)
    await transport.flush()
    await transport.publish("dl.x", env(b"boom"))
    await transport.publish_raw("dl.x", b"\x00garbage")  # type: ignore[attr-defined]
    await transport.publish("dl.x", env(b"fine"))
    assert [e.payload for e in await good.wait_for(1)] == [b"fine"]
    reply = await transport.request_raw("dl.x", b"\xc1", timeout=5)  # type: ignore[attr-defined]
    assert reply.kind is Kind.ERROR
    assert decode_error(reply.payload).type == "MalformedEnvelope"
    assert transport.dead_letters.counts["handler-error"] == 1
    assert transport.dead_letters.counts["malformed"] == 2


async def test_invalid_subjects_are_refused(transport: Transport) -> None:
    for subject in ("", "a..b", "has space", "a.>.b"):
        with pytest.raises(InvalidSubject):
            await transport.publish(subject, env())


async def test_work_queue_ack_redelivery_and_max_deliver(transport: Transport) -> None:
    queue = await transport.work_queue("pool1", ack_wait=0.5, max_deliver=2)
    await transport.enqueue("pool1", env(b"job"))
    first = await queue.fetch(timeout=5)
    assert first is not None and first.envelope.payload == b"job" and first.deliveries == 1
    # Not acked (a consumer died): delivered again after ack_wait.
    again = await queue.fetch(timeout=5)
    assert again is not None and again.deliveries == 2
    # max_deliver reached: never again.
    assert await queue.fetch(timeout=1.5) is None
    await transport.enqueue("pool1", env(b"done"))
    item = await queue.fetch(timeout=5)
    assert item is not None
    await item.ack()
    assert await queue.fetch(timeout=1.0) is None
    await queue.close()


async def test_key_value_with_ttl(transport: Transport) -> None:
    kv = await transport.key_value("things", ttl=1.0)
    await kv.put("a", b"1")
    await kv.put("b", b"2")
    assert await kv.get("a") == b"1"
    await kv.delete("b")
    assert await kv.items() == {"a": b"1"}
    with anyio.fail_after(10):
        while await kv.get("a") is not None:
            await anyio.sleep(0.2)
    assert await kv.get("missing") is None


async def test_blobs(transport: Transport) -> None:
    ref = await transport.put_blob(b"x" * 3_000_000)
    assert await transport.get_blob(ref) == b"x" * 3_000_000
    await transport.delete_blob(ref)
    with pytest.raises(BlobNotFound):
        await transport.get_blob(ref)


async def test_a_large_blob_comes_back_whole_and_in_order(transport: Transport) -> None:
    """Hundreds of chunks, each different: read back into one buffer, in order, every byte."""
    data = b"".join(i.to_bytes(4, "big") * 8192 for i in range(1_000))  # 32 MB
    ref = await transport.put_blob(data)
    assert await transport.get_blob(ref) == data
    await transport.delete_blob(ref)


async def test_kv_create_is_compare_and_set(transport: Transport) -> None:
    kv = await transport.key_value("cas" + new_id()[:6])
    assert await kv.create("k", b"first") is None
    assert await kv.create("k", b"second") == b"first"
    await kv.delete("k")
    assert await kv.create("k", b"third") is None
    assert await kv.get("k") == b"third"


async def test_nats_connect_failure_is_fast_and_clear() -> None:
    started = time.monotonic()
    transport = NatsTransport(ConnectOptions(servers=["nats://127.0.0.1:9"]))
    with pytest.raises(ConnectFailed, match="heterarch nats") as caught:
        await transport.connect()
    assert time.monotonic() - started < 3
    assert "refused" in str(caught.value) or "failed" in str(caught.value)


async def test_nats_user_password_auth(tmp_path: object) -> None:
    with NatsServer(extra_args=["--user", "alice", "--pass", "s3cret"]) as server:
        good = NatsTransport(ConnectOptions(servers=[server.url], user="alice",
                                            password="s3cret"))
        await good.connect()
        assert good.is_connected
        await good.close()
        with pytest.raises(ConnectFailed, match="Authorization"):
            await NatsTransport(ConnectOptions(servers=[server.url], user="alice",
                                               password="wrong")).connect()


def test_envelope_round_trip_is_compact() -> None:
    e = Envelope(id="x", kind=Kind.ASK, type="T", payload=b"p", headers={"traceparent": "t"})
    data = msgspec.msgpack.encode(e)
    assert msgspec.msgpack.decode(data, type=Envelope) == e
    assert len(data) < 40


async def test_large_payload_reaches_every_subscriber(transport: Transport) -> None:
    big = b"y" * 50_000
    one, two = Inbox(), Inbox()
    await transport.subscribe("fan.x", one)
    await transport.subscribe("fan.*", two)
    await transport.flush()
    await transport.publish("fan.x", env(big))
    assert (await one.wait_for(1))[0].payload == big
    assert (await two.wait_for(1))[0].payload == big
    assert transport.dead_letters.total == 0


async def test_memory_transports_share_a_bus() -> None:
    bus = MemoryBus()
    async with MemoryTransport(bus=bus) as a, MemoryTransport(bus=bus) as b:
        inbox = Inbox()
        await b.subscribe("node.b", inbox)

        async def echo(e: Envelope) -> None:
            await b.publish(e.reply_to, env(b"pong"))

        await b.subscribe("svc.b", echo)
        await a.publish("node.b", env(b"hi"))
        assert (await inbox.wait_for(1))[0].payload == b"hi"
        assert (await a.request("svc.b", env(b"ping"), timeout=5)).payload == b"pong"
        await a.enqueue("p", env(b"job"))
        item = await (await b.work_queue("p")).fetch(timeout=5)
        assert item is not None and item.envelope.payload == b"job"
        await item.ack()
        ref = await a.put_blob(b"data")
        assert await b.get_blob(ref) == b"data"


async def test_nats_reconnects_and_delivers_buffered_publishes(
    private_nats_server: NatsServer,
) -> None:
    options = ConnectOptions(servers=[private_nats_server.url], reconnect_time_wait=0.1)
    async with NatsTransport(options, namespace="rc") as t:
        assert isinstance(t, NatsTransport)
        inbox = Inbox()
        await t.subscribe("rc.x", inbox)
        queue = await t.work_queue("p", ack_wait=5)
        await t.enqueue("p", env(b"before"))
        item = await queue.fetch(timeout=5)
        assert item is not None
        await item.ack()
        await t.flush()

        private_nats_server.stop()
        with anyio.fail_after(10):
            while t.is_connected:
                await anyio.sleep(0.02)
        for i in range(10):  # buffered by the client while the server is away
            await t.publish("rc.x", env(str(i).encode()))
        private_nats_server.start()

        got = await inbox.wait_for(10)
        assert [e.payload for e in got] == [str(i).encode() for i in range(10)]
        assert t.is_connected and t.reconnects >= 1
        await t.enqueue("p", env(b"after"))
        with anyio.fail_after(20):
            while (item := await _fetch_retrying(queue)) is None:
                pass
        assert item.envelope.payload == b"after"
        await item.ack()
        await queue.close()


async def _fetch_retrying(queue: WorkQueue) -> WorkItem | None:
    try:
        return await queue.fetch(timeout=1)
    except TransportError:  # the consumer's subscription is re-created on the next fetch
        return None


async def test_nats_token_auth() -> None:
    with NatsServer(extra_args=["--auth", "t0ken"]) as server:
        async with NatsTransport(ConnectOptions(servers=[server.url], token="t0ken")) as t:
            assert t.is_connected
        started = time.monotonic()
        with pytest.raises(ConnectFailed):
            await NatsTransport(ConnectOptions(servers=[server.url], token="nope")).connect()
        assert time.monotonic() - started < 10


async def test_work_queue_nak_term_and_in_progress(transport: Transport) -> None:
    queue = await transport.work_queue("pool2", ack_wait=2.0, max_deliver=5)
    await transport.enqueue("pool2", env(b"a"))
    item = await queue.fetch(timeout=5)
    assert item is not None
    await item.nak()
    again = await queue.fetch(timeout=5)  # nak without delay: at once
    assert again is not None and again.deliveries == 2 and again.envelope.payload == b"a"
    started = time.monotonic()
    await again.nak(delay=0.3)
    third = await queue.fetch(timeout=5)
    assert third is not None and third.deliveries == 3
    assert time.monotonic() - started >= 0.25
    assert await queue.fetch(timeout=1.2) is None
    await third.in_progress()  # the ack timer starts again: due 3.2 s after delivery, not 2
    assert await queue.fetch(timeout=1.3) is None
    await third.term()
    assert await queue.fetch(timeout=1.0) is None  # past when it would have been due
    await queue.close()


async def test_nats_stores_open_concurrently_from_many_clients(nats_server: NatsServer) -> None:
    namespace = "cc" + new_id()[:8]
    clients = [NatsTransport(ConnectOptions(servers=[nats_server.url]), namespace=namespace)
               for _ in range(4)]
    for c in clients:
        await c.connect()
    try:
        async def open_all(c: NatsTransport) -> None:
            kv = await c.key_value("registry", ttl=30)
            await kv.put(f"k{clients.index(c)}", b"v")
            await c.enqueue("p", env(b"job"))
            await c.put_blob(b"b")

        async with anyio.create_task_group() as tg:
            for c in clients:
                tg.start_soon(open_all, c)
        kv = await clients[0].key_value("registry", ttl=30)
        assert sorted(await kv.items()) == ["k0", "k1", "k2", "k3"]
        queue = await clients[1].work_queue("p")
        for _ in range(4):
            item = await queue.fetch(timeout=5)
            assert item is not None
            await item.ack()
        await queue.close()
    finally:
        for c in clients:
            await c.close()


async def test_nats_garbage_from_a_raw_client_gets_an_error_reply(nats_server: NatsServer) -> None:
    async with NatsTransport(ConnectOptions(servers=[nats_server.url]),
                             namespace="raw" + new_id()[:6]) as t:
        inbox = Inbox()
        await t.subscribe("raw.in", inbox)
        await t.flush()
        raw = await nats.connect(nats_server.url)
        try:
            msg = await raw.request("raw.in", b"\x93not-an-envelope", timeout=5,
                                    headers={"X-Request": "1"})
        finally:
            await raw.close()
        assert not msg.headers  # the request's headers are not echoed back
        reply = decode_envelope(msg.data)
        assert reply.kind is Kind.ERROR
        assert decode_error(reply.payload).type == "MalformedEnvelope"
        assert t.dead_letters.counts["malformed"] == 1
        assert inbox.items == []
