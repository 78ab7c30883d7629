"""Bad input never crashes an actor and never goes unnoticed: a fuzz run over real subjects."""

from __future__ import annotations

import random

import msgspec
import pytest

from transports import Envelope, Kind, encode_envelope, new_id

from .app import Add, Worker
from .conftest import Cluster

pytestmark = pytest.mark.anyio


def _mutations(rng: random.Random, valid: bytes, count: int) -> list[bytes]:
    out: list[bytes] = []
    for i in range(count):
        choice = i % 5
        if choice == 0:  # random bytes
            out.append(rng.randbytes(rng.randint(0, 200)))
        elif choice == 1:  # flipped bytes of a valid envelope
            data = bytearray(valid)
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            out.append(bytes(data))
        elif choice == 2:  # truncated
            out.append(valid[: rng.randrange(len(valid))])
        elif choice == 3:  # a well-formed msgpack value that is not an envelope
            out.append(msgspec.msgpack.encode(rng.choice([None, 1, "x", [1, 2], {"a": b"b"}])))
        else:  # extended with junk
            out.append(valid + rng.randbytes(rng.randint(1, 20)))
    return out


async def test_fuzzed_envelopes_never_break_the_actor(cluster: Cluster) -> None:
    system = await cluster.system()
    ref = await system.spawn(Worker)
    node = system.node
    subject = node.subjects.mailbox(ref.actor_id)
    valid = encode_envelope(
        Envelope(id=new_id(), kind=Kind.TELL, target=ref.actor_id, type="Add",
                 payload=msgspec.msgpack.encode(Add(1, 2)))
    )
    rng = random.Random(20261122)
    samples = _mutations(rng, valid, 5000)
    transport = node.transport
    for i, data in enumerate(samples):
        await transport.publish_raw(subject, data)  # type: ignore[attr-defined]
        if i % 500 == 0:  # an ask in between: answered, in order, every time
            assert await ref.ask(Add(i, 1)) == i + 1
    # Asks with garbage answer with a typed error instead of hanging.
    reply = await transport.request_raw(subject, b"\xc1garbage", timeout=5)  # type: ignore[attr-defined]
    assert reply.kind is Kind.ERROR
    assert await ref.ask(Add(40, 2)) == 42
    dead = transport.dead_letters
    assert dead.total > 0
    assert dead.counts["malformed"] > 0
