"""Inboxes: progress from a child to a parent that is busy waiting on it (both transports)."""

from __future__ import annotations

import anyio
import msgspec
import pytest

from actors import Actor, Ask, Inbox

from .conftest import Cluster

pytestmark = pytest.mark.anyio


class Progress(msgspec.Struct, frozen=True):
    n: int


class NotProgress(msgspec.Struct, frozen=True):
    text: str


class Report(Ask[bool], frozen=True, tag="test.inbox.Report"):
    inbox: Inbox
    items: int
    hostile: bool = False


class Reporter(Actor):
    async def report(self, msg: Report) -> bool:
        if msg.hostile:
            await self.ctx.send_to_inbox(msg.inbox, NotProgress("not a Progress"))
        for n in range(msg.items):
            await self.ctx.send_to_inbox(msg.inbox, Progress(n))
        return True


class Collect(Ask[list[int]], frozen=True, tag="test.inbox.Collect"):
    hostile: bool = False


class Collector(Actor):
    def __init__(self) -> None:
        self.inbox: Inbox | None = None

    async def collect(self, msg: Collect) -> list[int]:
        got: list[int] = []
        child = await self.ctx.spawn(Reporter)
        with self.ctx.inbox(Progress, lambda item: got.append(item.n)) as inbox:
            self.inbox = inbox
            assert await child.ask(Report(inbox=inbox, items=3, hostile=msg.hostile))
            with anyio.fail_after(10):  # progress rides another subject than the reply
                while len(got) < 3:
                    await anyio.sleep(0.01)
        return got


async def test_progress_reaches_a_busy_parent(cluster: Cluster) -> None:
    system = await cluster.system()
    parent = await system.spawn(Collector)
    assert await parent.ask(Collect(), timeout=20) == [0, 1, 2]


async def test_a_foreign_item_and_a_late_one_are_dead_letters(cluster: Cluster) -> None:
    system = await cluster.system()
    parent = await system.spawn(Collector)
    dead = system.node.transport.dead_letters
    assert await parent.ask(Collect(hostile=True), timeout=20) == [0, 1, 2]
    assert dead.counts["undeliverable"] == 1
    assert "invalid inbox item" in dead.recent[-1].detail
    collector = system.node.cells[parent.actor_id].actor
    assert isinstance(collector, Collector) and collector.inbox is not None
    reporter = await system.spawn(Reporter)
    late = dead.counts["late-reply"]
    await reporter.ask(Report(inbox=collector.inbox, items=1), timeout=20)  # the block ended
    with anyio.fail_after(10):
        while dead.counts["late-reply"] == late:
            await anyio.sleep(0.01)
