"""No message can fail a node's machinery: hostile payloads on every subject that real worker
processes subscribe to (mailboxes, spawn, replies, heartbeats, control, inboxes, the registry)
are dead letters with one log line each; afterwards every node still serves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import msgspec
import nats
import pytest

from actors import message_type_name
from runtime import ActorSystem, NatsServer
from runtime._core.protocol import NodeInfo, SpawnRequest, StopActor
from transports import Envelope, Kind, encode_envelope, new_id

from .app import Handled, Job, Tally
from .workers import ROOT

pytestmark = pytest.mark.anyio

CAPACITY = 3


def _deep(depth: int = 5000) -> bytes:
    return b"\x91" * depth + b"\xc0"  # [[[[...nil...]]]]: 5 KB, deeper than any decoder goes


def _deep_map(depth: int = 2000) -> bytes:
    return b"\x81\xa1k" * depth + b"\xc0"


def _envelope_bytes(**fields: object) -> bytes:
    defaults: dict[str, object] = {"id": new_id(), "kind": Kind.TELL}
    return encode_envelope(Envelope(**{**defaults, **fields}))  # type: ignore[arg-type]


def _hostile(target: str, sender: str = "") -> list[bytes]:
    """Bytes that are no envelope, envelopes that carry poison, and forged ones."""
    plain = msgspec.msgpack.encode(["x", 1, "", "", "", "", "", b"", 0.0, {}, ""])
    trailing_deep = b"\x9c" + plain[1:] + _deep()  # a valid envelope with a deep extra field
    big = b"\x00" * 900_000  # below the server's max_payload, above anything sensible
    return [
        b"", b"\xc1", b"\xff" * 64, _deep(), _deep_map(), trailing_deep, big,
        b"\x92\xa1x\xcf" + b"\xff" * 8,  # kind: 2**64 - 1
        b"\x92\xa2\xff\xfe\x01",  # invalid UTF-8 in the id
        _envelope_bytes(kind=Kind.TELL, target=target, type="Job",
                        payload=_deep(), sender=sender),
        _envelope_bytes(kind=Kind.ASK, target=target, type="Job",
                        payload=_deep_map(), correlation_id=new_id()),
        _envelope_bytes(kind=Kind.SYSTEM, target=target, payload=_deep(), sender=sender),
        _envelope_bytes(kind=Kind.SYSTEM, target=target, payload=b"\xcf" + b"\xff" * 8),
        _envelope_bytes(kind=Kind.REPLY, target=target, correlation_id=new_id(),
                        payload=_deep()),
        _envelope_bytes(kind=Kind.TELL, target=target, blob="no-such-blob-" + new_id()),
        _envelope_bytes(kind=Kind.TELL, target=target, blob="../../etc/passwd"),
        _envelope_bytes(kind=Kind.TELL, target=target, blob="a b*>"),
        _envelope_bytes(kind=Kind.SYSTEM, target=target, sender=sender,
                        payload=msgspec.msgpack.encode(StopActor("forged", 2**40))),
        _envelope_bytes(kind=Kind.SYSTEM, target=target, payload=msgspec.msgpack.encode(
            SpawnRequest(actor_class="os:system", args=_deep(), actor_id=new_id()))),
        _envelope_bytes(kind=Kind.SYSTEM, target=target, payload=msgspec.msgpack.encode(
            SpawnRequest(actor_class="tests.bus.app:Tally", args=b"\x93\x01\x02\x03",
                         actor_id="bad id.*>"))),
    ]


def _heartbeats(node_ids: list[str]) -> list[tuple[str, bytes]]:
    """Forged heartbeats: deep, overflowing, from ids that are no node id, in others' names."""
    out: list[tuple[str, bytes]] = []
    for node_id in node_ids:
        wrong = NodeInfo(node_id="someone-else", role="worker", host="h", pid=1, started_at=0,
                         pools={"bad pool.*": "x"})
        for payload in (_deep(), _deep_map(), b"\xcf" + b"\xff" * 8, msgspec.msgpack.encode(wrong)):
            out.append((node_id, _envelope_bytes(kind=Kind.SYSTEM, sender=node_id,
                                                 payload=payload)))
        out.append(("forged", _envelope_bytes(kind=Kind.SYSTEM, sender="no such.node*",
                                              payload=_deep())))
    return out


def _start_worker(config: Path, nats_url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "heterarch.cli", "worker", "--pool", "cpu", "--config",
             str(config), "--nats", nats_url], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )


async def test_hostile_messages_on_every_subject_leave_every_node_serving(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    namespace = "fz" + new_id()[:8]
    config = tmp_path / "pools.toml"
    config.write_text(f'namespace = "{namespace}"\n[pools.cpu]\nhardware = "cpu"\n'
                      f'capacity = {CAPACITY}\nmodules = ["tests.bus.app"]\n')
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [_start_worker(config, nats_server.url, log) for log in logs]
    nc = await nats.connect(nats_server.url)
    try:
        async with ActorSystem(nats=nats_server.url, namespace=namespace, heartbeat_interval=0.2,
                               node_lost_after=3.0, placement_timeout=60) as system:
            with anyio.fail_after(120):
                while len(worker_ids := [s.info.node_id for s in await system.node.cluster_stats()
                                         if "cpu" in s.info.pools]) < 2:
                    await anyio.sleep(0.1)
            tallies = [await system.spawn(Tally, pool="cpu") for _ in range(2)]
            for t in tallies:
                assert await t.ask(Job("before"), timeout=30) == "before"
            client_id = system.node.node_id
            ns = namespace
            js = nc.jetstream()
            sent = 0
            for node_id in [*worker_ids, client_id]:
                for data in _hostile("x", sender=node_id):
                    await nc.publish(f"{ns}.r.{node_id}", data)
                    await nc.publish(f"{ns}.node.{node_id}", data, reply=nc.new_inbox())
                    sent += 2
            for t in tallies:
                for data in _hostile(t.actor_id, sender=t.address.node_id):
                    await nc.publish(f"{ns}.a.{t.actor_id}", data)
                    await nc.publish(f"{ns}.a.{t.actor_id}", data, reply=nc.new_inbox())
                    await nc.publish(f"{ns}.a.{t.actor_id}", data, reply=f"{ns}.r.{client_id}")
                    sent += 3
            for data in _hostile("x"):
                await js.publish(f"{ns}.spawn.cpu._", data)  # poison in the pools' work queue
                sent += 1
            for node_id, data in _heartbeats([*worker_ids, client_id]):
                await nc.publish(f"{ns}.hb.{node_id}", data)
                sent += 1
            # The client's request inbox (its replies to asks in flight arrive there).
            inbox = system.node.transport.nc._resp_sub_prefix.decode()  # type: ignore[attr-defined]
            for data in _hostile("x"):
                await nc.publish(f"{inbox}{new_id()}", data)
            # Garbage in the registry, read by every node looking for workers.
            registry = await js.key_value(f"{ns}_nodes")
            for i, data in enumerate(_hostile("x")[:8]):
                await registry.put(f"garbage{i}", data)
            await nc.flush()

            # Every node still serves: its actors answer, its control subject answers, and the
            # pool's consumers on both workers start new actors (the first ones stop, and twice
            # one worker's capacity must start).
            for t in tallies:
                assert await t.ask(Job("after"), timeout=60) == "after"
                assert (await t.ask(Handled(), timeout=60)) == {"before": 1, "after": 1}
            with anyio.fail_after(60):
                while True:
                    stats = {s.info.node_id: s for s in await system.node.cluster_stats(5.0)}
                    if set(worker_ids) <= set(stats):
                        break
            for node_id in worker_ids:
                assert sum(stats[node_id].dead_letters.values()) > 0, stats[node_id]
            for t in tallies:
                await system.stop(t)
            fresh = [await system.spawn(Tally, pool="cpu") for _ in range(2 * CAPACITY)]
            assert {f.address.node_id for f in fresh} == set(worker_ids)
            for i, f in enumerate(fresh):
                assert await f.ask(Job(f"fresh{i}"), timeout=60) == f"fresh{i}"
            assert all(w.poll() is None for w in workers), [w.returncode for w in workers]
    finally:
        await nc.close()
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
    # One line per dead letter at most, never a traceback (a flood must not flood the log).
    for log in logs:
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, text[-4000:]
        assert len(text.splitlines()) < sent, len(text.splitlines())


def test_hostile_payload_types() -> None:
    """The message types the fuzzer names exist (it would test nothing if they moved)."""
    assert message_type_name(Job) == "Job"
