"""Idempotency keys across incarnations, with real worker processes: a parent hands 8 writes to
children (asks with derived keys); its worker is paused (SIGSTOP) past the node-lost timeout, so
the parent restarts on the other worker and, asked again under the same request id, hands the
same 8 writes to new children. Each write happens once: counted in a file outside the runtime."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from runtime import ActorSystem, NatsServer
from transports import new_id

from .app import Coordinator, Round
from .workers import start_worker

pytestmark = pytest.mark.anyio


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def test_a_restarted_parent_that_hands_out_its_round_again_gets_each_effect_once(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    namespace = "id" + new_id()[:8]
    config = tmp_path / "pools.toml"
    config.write_text(f'namespace = "{namespace}"\n[pools.cpu]\nhardware = "cpu"\n'
                      'capacity = 32\nmodules = ["tests.bus.app"]\n')
    effects = tmp_path / "effects.txt"
    workers = [start_worker(config, "cpu", nats_server.url) for _ in range(2)]
    victim_pid = 0
    try:
        async with ActorSystem(nats=nats_server.url, namespace=namespace, heartbeat_interval=0.2,
                               node_lost_after=1.5, placement_timeout=30) as system:
            with anyio.fail_after(60):
                while len([s for s in await system.node.cluster_stats()
                           if "cpu" in s.info.pools]) < 2:
                    await anyio.sleep(0.1)
            parent = await system.spawn(Coordinator, pool="cpu")
            victim = parent.address.node_id
            victim_pid = next(s.info.pid for s in await system.node.cluster_stats()
                              if s.info.node_id == victim)
            answer: list[str] = []

            async def run() -> None:
                # The parent holds 3 s after its round: it is paused then, and restarted.
                answer.extend(await parent.ask(Round(8, "cpu", str(effects), 3.0), timeout=90))

            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                with anyio.fail_after(30):  # the first round is done
                    while len(lines(effects)) < 8:
                        await anyio.sleep(0.05)
                os.kill(victim_pid, signal.SIGSTOP)
                with anyio.fail_after(30):
                    while not system.node.membership.is_lost(victim):
                        await anyio.sleep(0.05)
                with anyio.fail_after(60):  # the parent runs again elsewhere
                    while parent.address.node_id == victim:
                        await anyio.sleep(0.05)
                os.kill(victim_pid, signal.SIGCONT)
            assert answer == [f"job{i}" for i in range(8)]
            assert parent.address.node_id != victim
            assert sorted(lines(effects)) == sorted(f"job{i}" for i in range(8))
    finally:
        if victim_pid:
            os.kill(victim_pid, signal.SIGCONT)
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
