"""Idempotency keys: an ask with a key is answered from the first answer kept for it, by any
actor on any node, and two deliveries of one key at once run the handler once (both transports).
"""

from __future__ import annotations

import anyio
import pytest

from actors import Actor, Ask

from .conftest import Cluster

pytestmark = pytest.mark.anyio


class Work(Ask[str], frozen=True, tag="test.idem.Work"):
    text: str
    seconds: float = 0.0
    fail: bool = False


class Ran(Ask[int], frozen=True, tag="test.idem.Ran"):
    pass


class Doer(Actor):
    def __init__(self) -> None:
        self.ran = 0

    async def work(self, msg: Work) -> str:
        self.ran += 1
        await anyio.sleep(msg.seconds)
        if msg.fail:
            raise RuntimeError("no answer kept for a failure")
        return f"{msg.text} #{self.ran}"

    async def count(self, msg: Ran) -> int:
        return self.ran


class Hand(Ask[list[str]], frozen=True, tag="test.idem.Hand"):
    text: str


class Boss(Actor):
    """Hands the same work to two new children, twice each, with derived keys."""

    async def hand(self, msg: Hand) -> list[str]:
        children = [await self.ctx.spawn(Doer) for _ in range(2)]
        return [await c.ask(Work(msg.text), idempotent=True) for c in children * 2]


async def ran(*refs: object) -> int:
    return sum([await r.ask(Ran()) for r in refs])  # type: ignore[attr-defined]


async def test_a_key_is_answered_from_the_first_answer(cluster: Cluster) -> None:
    system = await cluster.system()
    a, b = await system.spawn(Doer), await system.spawn(Doer)
    assert await a.ask(Work("x"), idempotent="job-1") == "x #1"
    assert await b.ask(Work("x"), idempotent="job-1") == "x #1"  # b's handler never ran
    assert await b.ask(Work("x"), idempotent="job-2") == "x #1"  # another key: it runs
    assert await b.ask(Work("x")) == "x #2"  # no key: it runs
    assert (await a.ask(Ran()), await b.ask(Ran())) == (1, 2)


async def test_two_deliveries_of_one_key_at_once_run_once(cluster: Cluster) -> None:
    system = await cluster.system()
    doers = [await system.spawn(Doer) for _ in range(4)]
    answers: list[str] = []

    async def one(i: int) -> None:
        answers.append(await doers[i].ask(Work("y", seconds=0.3), idempotent="job-y"))

    async with anyio.create_task_group() as tg:
        for i in range(len(doers)):
            tg.start_soon(one, i)
    assert len(set(answers)) == 1 and len(answers) == 4
    assert await ran(*doers) == 1


async def test_a_failure_is_not_kept(cluster: Cluster) -> None:
    system = await cluster.system()
    a, b = await system.spawn(Doer), await system.spawn(Doer)
    with pytest.raises(Exception, match="no answer kept"):
        await a.ask(Work("z", fail=True), idempotent="job-z")
    assert await b.ask(Work("z"), idempotent="job-z") == "z #1"


async def test_derived_keys_follow_the_request_that_caused_them(cluster: Cluster) -> None:
    system = await cluster.system()
    boss = await system.spawn(Boss)
    # Equal asks in one handler get keys of their own (their place among equals); the same
    # request asked again of the boss (its request id) is a new request: new keys.
    assert await boss.ask(Hand("w")) == ["w #1", "w #1", "w #2", "w #2"]
    with pytest.raises(ValueError, match="outside an ask handler"):
        await boss.ask(Hand("w"), idempotent=True)


async def _results_bucket_exists(cluster: Cluster) -> bool:
    """Whether the namespace's results bucket exists: on the memory bus, or in JetStream (a KV
    bucket is the stream ``KV_{name}``), asked with a raw nats-py client."""
    name = f"{cluster.namespace}_results"
    if cluster.kind == "memory":
        return name in cluster.bus.buckets
    import nats
    from nats.js.errors import NotFoundError

    assert cluster.server is not None
    nc = await nats.connect(cluster.server.url)
    try:
        await nc.jetstream().stream_info(f"KV_{name}")
        return True
    except NotFoundError:
        return False
    finally:
        await nc.close()


async def test_asks_without_a_key_never_touch_the_results_bucket(cluster: Cluster) -> None:
    system = await cluster.system()
    boss = await system.spawn(Doer)
    assert await boss.ask(Work("v")) == "v #1"
    assert not await _results_bucket_exists(cluster)
    assert await boss.ask(Work("v"), idempotent="k") == "v #2"
    assert await _results_bucket_exists(cluster)
