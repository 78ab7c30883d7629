"""The bus as a trust boundary: hostile envelopes are refused with a log line, and legitimate
traffic is unaffected."""

from __future__ import annotations

import logging

import msgspec
import nats
import pytest

from actors import message_type_name
from runtime import ActorSystem, NatsServer, Worker
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
            subject = f"{namespace}.a.{tally.address.node_id}.{tally.actor_id}"
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
                assert await tally.ask(Job("real", 0.2), timeout=10) == "real"
            await sub.unsubscribe()
            assert forged_once, "the impostor saw no ask"
            assert "came from another sender 'impostor'" in caplog.text
            assert await tally.ask(Handled(), timeout=10) == {"real": 1}
    finally:
        await nc.close()
