"""Every principal its own identity on the bus (issue 24): a real nats-server over TLS with the
users and permissions heterarch generates; a client (bob) attacks another client's (alice's)
actors with its own credentials, as a program would. Each attack fails, and alice loses nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
import pytest

from actors import SpawnFailed, message_type_name
from runtime import ActorSystem, NatsServer, Worker
from runtime._core.protocol import Exited, SpawnRequest, StopActor
from runtime._permissions import NatsUser, authorization_block, inbox_prefix_of
from transports import ConnectOptions, Envelope, Kind, encode_envelope, new_id
from transports._subjects import owner_of

from .app import FAST, POOLS, Handled, Job, Tally
from .test_tls import make_ca_and_server_cert

pytestmark = pytest.mark.anyio
NS = "ident"
ALICE = NatsUser(user="alice", role="client", password="alice-secret")
BOB = NatsUser(user="bob", role="client", password="bob-secret")
W1 = NatsUser(user="w1", role="worker", password="w1-secret")
W2 = NatsUser(user="w2", role="worker", password="w2-secret")


class Secured:
    def __init__(self, server: NatsServer, ca: Path) -> None:
        self.server, self.ca = server, ca
        self.url = f"tls://127.0.0.1:{server.port}"

    def of(self, user: NatsUser) -> dict[str, Any]:
        """What a worker or system of ``user`` connects with (its own credentials, over TLS)."""
        return {"nats": self.url, "namespace": NS, **FAST, "options": ConnectOptions(
            user=user.user, password=user.password, tls_ca_file=str(self.ca))}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Secured]:
    make_ca_and_server_cert(tmp_path)
    config = tmp_path / "nats.conf"
    config.write_text(f'tls {{\n  cert_file: "{tmp_path / "server.pem"}"\n'
                      f'  key_file: "{tmp_path / "server.key"}"\n  timeout: 5\n}}\n'
                      + authorization_block(NS, [ALICE, BOB, W1, W2]))
    server = NatsServer(config_file=config)
    server.start()
    try:
        yield Secured(server, tmp_path / "ca.pem")
    finally:
        server.cleanup()


class Attacker:
    """Bob's raw connection: every permission violation the server reports, in order."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: Any = None

    async def on_error(self, exc: Exception) -> None:
        self.errors.append(str(exc))

    async def refused(self, kind: str, subject: str, data: bytes = b"{}") -> None:
        """Try it; the server must refuse it (a permissions violation naming the subject)."""
        before = len(self.errors)
        if kind == "sub":
            await self.nc.subscribe(subject)
        else:
            await self.nc.publish(subject, data)
        await self.nc.flush()
        with anyio.fail_after(10):
            while len(self.errors) == before:
                await anyio.sleep(0.01)
        assert "permissions violation" in self.errors[-1].lower(), (subject, self.errors[-1])
        assert subject.lower() in self.errors[-1].lower(), (subject, self.errors[-1])


@pytest.fixture
async def bob(secured: Secured) -> AsyncIterator[Attacker]:
    import ssl

    attacker = Attacker()
    tls = ssl.create_default_context(cafile=str(secured.ca))
    attacker.nc = await nats.connect(secured.url, user=BOB.user, password=BOB.password,
                                     inbox_prefix=inbox_prefix_of(BOB.user), tls=tls,
                                     error_cb=attacker.on_error)
    try:
        yield attacker
    finally:
        await attacker.nc.close()


def system_envelope(target: str, msg: Any) -> bytes:
    return encode_envelope(Envelope(id=new_id(), kind=Kind.SYSTEM, target=target,
                                    type=message_type_name(type(msg)),
                                    payload=msgspec.msgpack.encode(msg)))


async def test_a_stranger_cannot_read_answer_or_stop_anothers_actors(
    secured: Secured, bob: Attacker, caplog: pytest.LogCaptureFixture
) -> None:
    async with Worker(POOLS, ["cpu"], **secured.of(W1)) as worker, \
            ActorSystem(**secured.of(ALICE)) as alice:
        tally = await alice.spawn(Tally, pool="cpu")
        assert owner_of(tally.actor_id) == "alice"
        assert await tally.ask(Job("legit"), timeout=10) == "legit"
        guardian = alice.node.guardian.address.actor_id
        reply_subject = alice.node.subjects.replies(alice.node.node_id)
        assert reply_subject == f"{NS}.r.alice.{alice.node.node_id}"
        cell = worker.node.cells[tally.actor_id]
        attacks = [
            # reading alice's traffic: asks to her actors, their replies, spawn answers
            ("sub", f"{NS}.a.>"), ("sub", f"{NS}.a.alice.>"), ("sub", f"{NS}.a.*.*"),
            ("sub", alice.node.subjects.mailbox(tally.actor_id)),
            ("sub", f"{NS}.r.>"), ("sub", reply_subject), ("sub", f"{inbox_prefix_of('alice')}.>"),
            # forged replies: into alice's inboxes and her node's replies subject
            ("pub", f"{inbox_prefix_of('alice')}.x.y"), ("pub", reply_subject),
            # asks and tells to her actor, a forged stop, a forged exit to her guardian
            ("pub", alice.node.subjects.mailbox(tally.actor_id)),
            ("pub", alice.node.subjects.mailbox(guardian)),
            # a spawn in alice's name (an id hijack of her actor)
            ("pub", f"{NS}.spawn.cpu.alice"),
        ]
        payloads = {
            alice.node.subjects.mailbox(tally.actor_id): system_envelope(
                tally.actor_id, StopActor(reason="forged")),
            alice.node.subjects.mailbox(guardian): system_envelope(
                guardian, Exited(actor_id=tally.actor_id, reason="forged", abnormal=True)),
        }
        # a goodbye in the worker's name (its peers would restart its actors elsewhere), and
        # listening on the worker's control subject (to answer in its name)
        w1_node = worker.node.node_id
        assert w1_node.startswith("w1_")
        goodbye = encode_envelope(Envelope(id=new_id(), kind=Kind.SYSTEM, sender=w1_node,
                                           type="goodbye"))
        attacks += [("pub", worker.node.subjects.heartbeat(w1_node)),
                    ("sub", worker.node.subjects.node_control(w1_node)),
                    ("sub", f"{NS}.node.>")]
        payloads[worker.node.subjects.heartbeat(w1_node)] = goodbye
        for kind, subject in attacks:
            await bob.refused(kind, subject, payloads.get(subject, b"{}"))
        # The goodbye on bob's own heartbeat subject: the bus lets it through, alice refuses it.
        with caplog.at_level(logging.WARNING, logger="heterarch.node"):
            await bob.nc.publish(f"{NS}.hb.bob.{w1_node}", goodbye)
            await bob.nc.flush()
            with anyio.fail_after(10):
                while "not on its node's subject" not in caplog.text:
                    await anyio.sleep(0.01)
        assert not alice.node.membership.is_lost(w1_node)
        # alice lost nothing: the same incarnation, its state, her asks answered.
        assert worker.node.cells[tally.actor_id] is cell
        assert alice.node.supervision.records[tally.actor_id].generation == 0
        assert await tally.ask(Job("after"), timeout=10) == "after"
        assert await tally.ask(Handled(), timeout=10) == {"legit": 1, "after": 1}
        assert "Violation" in "\n".join(secured.server.log_lines)


async def test_a_stranger_cannot_take_an_actors_id_on_any_worker(
    secured: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    """Bob asks (on his own spawn subject) for an actor with alice's actor's id: every worker
    refuses it, logged once however often he tries; one actor keeps the id."""
    async with Worker(POOLS, ["cpu"], **secured.of(W1)) as w1, \
            Worker(POOLS, ["cpu"], **secured.of(W2)) as w2, \
            ActorSystem(**secured.of(ALICE)) as alice, \
            ActorSystem(**secured.of(BOB)) as bob:
        tally = await alice.spawn(Tally, pool="cpu")
        assert await tally.ask(Job("mine"), timeout=10) == "mine"
        attempts = 6
        with caplog.at_level(logging.WARNING, logger="heterarch.node"):
            for parent in (None, alice.node.guardian.address, bob.node.guardian.address):
                for _ in range(attempts // 3):
                    hijack = SpawnRequest(
                        actor_class="tests.bus.app:Tally", actor_id=tally.actor_id, pool="cpu",
                        args=msgspec.msgpack.encode([[], {}]), parent=parent)
                    env = Envelope(id=new_id(), kind=Kind.SYSTEM,
                                   type=message_type_name(SpawnRequest),
                                   payload=msgspec.msgpack.encode(hijack))
                    await bob.node.transport.enqueue("cpu", env, owner="bob")
            with anyio.fail_after(30):
                while sum(n for (who, why), n in (*w1.node.replies.refusals.items(),
                                                  *w2.node.replies.refusals.items())
                          if why == "forged-spawn") < attempts:
                    await anyio.sleep(0.05)
        lines = [r for r in caplog.records if "refused forged-spawn from principal 'bob'"
                 in r.getMessage()]
        assert 1 <= len(lines) <= 2, [r.getMessage() for r in lines]  # once per worker
        assert "its owner is 'alice'" in lines[0].getMessage()
        holders = [w for w in (w1, w2) if tally.actor_id in w.node.cells]
        assert len(holders) == 1 and holders[0].node.cells[tally.actor_id].generation == 0
        assert await tally.ask(Handled(), timeout=10) == {"mine": 1}


async def test_phantom_roots_count_against_their_sender_across_the_cluster(
    secured: Secured, bob: Attacker
) -> None:
    """Spawn requests with no parent are roots of their sender (the principal the bus vouches
    for): beyond ``roots_per_client`` across all the pool's workers they are refused, the limit
    is in the error, and another client is not crowded out."""
    pools = {"cpu": msgspec.structs.replace(POOLS["cpu"], roots_per_client=2, capacity=4)}
    async with Worker(pools, ["cpu"], **secured.of(W1)) as w1, \
            Worker(pools, ["cpu"], **secured.of(W2)) as w2, \
            ActorSystem(**secured.of(ALICE)) as alice, \
            ActorSystem(**secured.of(BOB)) as bobs_system:
        # the claims are the workers' alone
        await bob.refused("pub", f"$KV.{NS}_roots.cpu.bob.0")
        await bob.refused("pub", f"$JS.API.STREAM.CREATE.KV_{NS}_roots")
        for _ in range(6):  # phantom roots: no parent, nobody to tell when they exit
            phantom = SpawnRequest(actor_class="tests.bus.app:Tally", pool="cpu",
                                   actor_id=f"bob.{new_id()}", args=msgspec.msgpack.encode(
                                       [[], {}]))
            await bobs_system.node.transport.enqueue("cpu", Envelope(
                id=new_id(), kind=Kind.SYSTEM, type=message_type_name(SpawnRequest),
                payload=msgspec.msgpack.encode(phantom)), owner="bob")

        def refused() -> int:
            return sum(w.node.replies.refusals.get(("principal 'bob'", "spawn-quota"), 0)
                       for w in (w1, w2))

        with anyio.fail_after(30):
            while refused() < 4:
                await anyio.sleep(0.05)
        bobs = [c for w in (w1, w2) for c in w.node.cells.values()
                if owner_of(c.address.actor_id) == "bob"]
        assert len(bobs) == 2
        with pytest.raises(SpawnFailed, match=r"across the cluster \(allows 2 per client\)"):
            await bobs_system.spawn(Tally, pool="cpu")
        mine = [await alice.spawn(Tally, pool="cpu") for _ in range(2)]
        assert [await t.ask(Job("ok"), timeout=10) for t in mine] == ["ok", "ok"]
        # a root that stops frees its slot
        await bobs[0].stop("done")
        with anyio.fail_after(30):
            while True:
                try:
                    again = await bobs_system.spawn(Tally, pool="cpu")
                    break
                except SpawnFailed:
                    await anyio.sleep(0.1)
        assert await again.ask(Job("again"), timeout=10) == "again"
