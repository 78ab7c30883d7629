"""Fencing: a worker paused (SIGSTOP) past the node-lost timeout has its actors restarted
elsewhere; when it resumes (SIGCONT) it stops them before they act again, so each job's side
effect happens exactly once. The effects are counted twice: by the parent actor, and by a raw
NATS subscriber on the parent's subject that sees everything that reached the bus."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import msgspec
import nats
import pytest

from runtime import ActorSystem, NatsServer
from transports import decode_envelope, new_id

from .app import Done, Effect, Effects, Recorder, StartEffectors
from .workers import start_worker

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("resume_when", ["declared", "recorded"])
async def test_a_paused_worker_is_fenced_and_each_side_effect_happens_once(
    nats_server: NatsServer, tmp_path: Path, resume_when: str
) -> None:
    namespace = "fe" + new_id()[:8]
    config = tmp_path / "pools.toml"
    config.write_text(f'namespace = "{namespace}"\n[pools.cpu]\nhardware = "cpu"\n'
                      'capacity = 32\nmodules = ["tests.bus.app"]\n')
    workers = [start_worker(config, "cpu", nats_server.url) for _ in range(2)]
    victim_pid = 0
    seen_on_bus: dict[str, int] = {}
    nc = await nats.connect(nats_server.url)

    async def on_bus(msg: nats.aio.msg.Msg) -> None:
        env = decode_envelope(msg.data)
        if env.type == "Done":
            key = msgspec.msgpack.decode(env.payload, type=Done).key
            seen_on_bus[key] = seen_on_bus.get(key, 0) + 1

    try:
        async with ActorSystem(nats=nats_server.url, namespace=namespace, heartbeat_interval=0.2,
                               node_lost_after=1.5, placement_timeout=30) as system:
            with anyio.fail_after(60):
                while len([s for s in await system.node.cluster_stats()
                           if "cpu" in s.info.pools]) < 2:
                    await anyio.sleep(0.1)
            recorder = await system.spawn(Recorder)
            await nc.subscribe(f"{namespace}.a.{recorder.actor_id}", cb=on_bus)
            await nc.flush()
            effectors = await recorder.ask(StartEffectors(8, "cpu"), timeout=30)
            victim = effectors[0].address.node_id
            on_victim = {f"job{i}" for i, e in enumerate(effectors)
                         if e.address.node_id == victim}
            victim_pid = next(s.info.pid for s in await system.node.cluster_stats()
                              if s.info.node_id == victim)
            answers: dict[str, str] = {}

            # Each job sleeps 1 s: it wakes while its worker is paused, so on SIGCONT it is
            # ready to do its side effect at once (the zombie case).
            async def run(i: int) -> None:
                answers[f"job{i}"] = await effectors[i].ask(Effect(f"job{i}", 1.0), timeout=60)

            async with anyio.create_task_group() as tg:
                for i in range(len(effectors)):
                    tg.start_soon(run, i)
                with anyio.fail_after(30):  # every job on the victim is inside its handler
                    while not on_victim <= set(await recorder.ask(Effects(), timeout=10)):
                        await anyio.sleep(0.05)
                os.kill(victim_pid, signal.SIGSTOP)
                with anyio.fail_after(30):  # declared lost (and written down for it to read)
                    while not system.node.membership.is_lost(victim) or (
                            resume_when == "recorded"
                            and await system.node.fencing.declared_lost_by(victim) is None):
                        await anyio.sleep(0.05)
                os.kill(victim_pid, signal.SIGCONT)
            assert answers == {f"job{i}": f"job{i}" for i in range(len(effectors))}
            with anyio.fail_after(30):  # the resumed worker fenced the old incarnations
                while True:
                    stats = {s.info.node_id: s for s in await system.node.cluster_stats()}
                    if victim in stats and stats[victim].dead_letters.get(
                            "fenced-actor", 0) >= len(on_victim):
                        break
                    await anyio.sleep(0.1)
            effects = await recorder.ask(Effects(), timeout=10)
            assert {k: done for k, (_, done) in effects.items()} == {k: 1 for k in answers}
            await nc.flush()
            assert seen_on_bus == {k: 1 for k in answers}
            # The victim's jobs really were caught mid-handler: they started twice.
            assert all(effects[k][0] == 2 for k in on_victim), effects
    finally:
        await nc.close()
        if victim_pid:
            os.kill(victim_pid, signal.SIGCONT)
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
