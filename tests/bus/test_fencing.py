"""Fencing: a worker paused (SIGSTOP) past the node-lost timeout has its actors restarted
elsewhere; when it resumes (SIGCONT) it stops them before they act again, so each job's side
effect happens exactly once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from runtime import ActorSystem, NatsServer
from transports import new_id

from .app import Effect, Effects, Recorder, StartEffectors
from .workers import start_worker

pytestmark = pytest.mark.anyio


async def test_a_paused_worker_is_fenced_and_each_side_effect_happens_once(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    namespace = "fe" + new_id()[:8]
    config = tmp_path / "pools.toml"
    config.write_text(f'namespace = "{namespace}"\n[pools.cpu]\nhardware = "cpu"\n'
                      'capacity = 32\nmodules = ["tests.bus.app"]\n')
    workers = [start_worker(config, "cpu", nats_server.url) for _ in range(2)]
    victim_pid = 0
    try:
        async with ActorSystem(nats=nats_server.url, namespace=namespace, heartbeat_interval=0.2,
                               node_lost_after=1.5, placement_timeout=30) as system:
            with anyio.fail_after(60):
                while len([s for s in await system.node.cluster_stats()
                           if "cpu" in s.info.pools]) < 2:
                    await anyio.sleep(0.1)
            recorder = await system.spawn(Recorder)
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
                with anyio.fail_after(30):  # declared lost, and written down for it to read
                    while (not system.node.membership.is_lost(victim)
                           or await system.node.fencing.declared_lost_by(victim) is None):
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
            # The victim's jobs really were caught mid-handler: they started twice.
            assert all(effects[k][0] == 2 for k in on_victim), effects
    finally:
        if victim_pid:
            os.kill(victim_pid, signal.SIGCONT)
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
