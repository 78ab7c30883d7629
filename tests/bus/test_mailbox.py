"""Bounded mailboxes: a flood of tells to a slow actor keeps its worker's memory flat; the tells
beyond the bound are dead letters (``mailbox-full``), an ask meanwhile gets ``MailboxFull``."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from actors import MailboxFull
from runtime import ActorSystem, NatsServer
from transports import new_id

from .app import FAST, Job, Note, Slow
from .workers import start_worker

pytestmark = pytest.mark.anyio


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def test_tell_flood_keeps_memory_flat_and_asks_get_mailbox_full(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    namespace = "mb" + new_id()[:8]
    config = tmp_path / "pools.toml"
    config.write_text(f'namespace = "{namespace}"\n[pools.cpu]\nhardware = "cpu"\n'
                      'capacity = 4\nmodules = ["tests.bus.app"]\n')
    worker = start_worker(config, "cpu", nats_server.url)
    try:
        async with ActorSystem(nats=nats_server.url, namespace=namespace, **FAST) as system:
            slow = await system.spawn(Slow, pool="cpu")
            assert await slow.ask(Job("warm"), timeout=30) == "warm"
            before = rss_mb(worker.pid)
            note = Note(b"x" * 2048)
            for _ in range(100):  # 100,000 tells of 2 KB (200 MB), far faster than 5 ms each
                for _ in range(1000):
                    await slow.tell(note)
                await system.node.transport.flush()
            with pytest.raises(MailboxFull):
                await slow.ask(Job("while flooded"), timeout=30)
            peak = rss_mb(worker.pid)
            # Once the flood drains, the actor answers again.
            with anyio.fail_after(120):
                while True:
                    try:
                        assert await slow.ask(Job("after"), timeout=30) == "after"
                        break
                    except MailboxFull:
                        await anyio.sleep(0.2)
            stats = [s for s in await system.node.cluster_stats(timeout=10)
                     if s.info.pid == worker.pid]
            assert stats, "the worker did not answer for its stats"
            dropped = stats[0].dead_letters.get("mailbox-full", 0) + stats[0].dead_letters.get(
                "slow-consumer", 0)
            assert dropped > 90_000, stats[0].dead_letters
            assert peak - before < 100, f"worker RSS grew from {before:.0f} to {peak:.0f} MB"
    finally:
        worker.terminate()
        worker.wait(30)
