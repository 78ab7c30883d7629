"""Batched dispatch: a batch travels to lanes in chunks, and a worker killed (-9) in the middle
costs only the prompts it had not finished. Real worker processes, real NATS, real HTTP."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from actors import Actor, Ask, LLMAgent, SupervisorStrategy
from actors.agents import Budget, Usage, merge_usage, total_tokens
from actors.agents._budget import Ledger
from actors.agents._lanes import Lanes
from actors.agents._messages import PromptOutcome, add_lost
from heterarch.sim.profiles import Profile
from heterarch.sim.simulator import Simulator
from runtime import ActorSystem, NatsServer
from transports import new_id

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
CONCURRENCY = 8  # the pool's: chunks of 8 prompts


class CountingEcho:
    """Echoes each prompt (long ones with a long tail, so they take seconds); counts them."""

    def __init__(self) -> None:
        self.seen: collections.Counter[str] = collections.Counter()

    def reply(self, messages: Sequence[dict[str, str]], model: str) -> str:
        prompt = str(messages[-1]["content"])
        self.seen[prompt] += 1
        return expected(prompt)


def expected(prompt: str) -> str:
    return prompt + (" " + "y" * 800 if prompt.startswith("long") else "")


class RunBatch(Ask[list[str]], frozen=True, tag="test.RunBatch"):
    prompts: list[str]


class BatchParent(Actor):
    """Runs one batch on pool "fast" and remembers which prompts came back, as they came."""

    supervisor_strategy = SupervisorStrategy(max_restarts=100, period=10.0)

    def __init__(self) -> None:
        self.answered: list[int] = []
        self.lanes_used = 0
        self.usage: Usage = {}  # as the RLM agent counts it: replies, and lost calls
        self.ledger = Ledger(Budget(), spent=lambda: (0, 0.0), prices=lambda pool: (1.0, 2.0))

    async def run(self, msg: RunBatch) -> list[str]:
        lanes = Lanes(self.ctx, LLMAgent, limit_of=lambda pool: CONCURRENCY)

        def lost(index: int, attempts: int) -> None:
            held = self.ledger.estimate("fast", msg.prompts[index], None)
            add_lost(self.usage, "fast", held.tokens, held.dollars, attempts)

        try:
            outcomes = await lanes.run_batch("fast", msg.prompts, max_tokens=None,
                                             on_outcome=self._arrived, on_lost=lost)
            self.lanes_used = len(lanes.spawned)
        finally:
            await lanes.close()
        for o in outcomes:
            if o is not None and o.reply is not None:
                merge_usage(self.usage, o.reply.usage)
        return [o.reply.text if o is not None and o.reply is not None else f"missing: {o}"
                for o in outcomes]

    def _arrived(self, outcome: PromptOutcome) -> None:
        self.answered.append(outcome.index)


async def test_a_worker_killed_mid_batch_costs_only_its_unfinished_prompts(
        nats_server: NatsServer, tmp_path: Path) -> None:
    echo = CountingEcho()
    profile = Profile("fast", "wafer-scale", ttft_s=0.01, tokens_per_s=100.0,
                      concurrency=64, input_price_per_mtok=0.0, output_price_per_mtok=0.0,
                      tier=1, responder=echo)
    # Short and long prompts alternate, so every chunk has some of each: the short ones are
    # back long before the long ones, and the kill falls between.
    prompts = [f"{'short' if i % 2 == 0 else 'long'} prompt {i}" for i in range(32)]
    async with Simulator({"fast": profile}) as sim:
        namespace = "bd" + new_id()[:8]
        config = tmp_path / "pools.toml"
        config.write_text(
            f'namespace = "{namespace}"\n[pools.fast]\nhardware = "wafer-scale"\n'
            f'modules = ["actors"]\nmodel = "openai/fast"\napi_base = "{sim.base_url}"\n'
            f"max_concurrency = {CONCURRENCY}\ncapacity = 100\n")

        def worker() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-m", "heterarch.cli", "worker", "--pool", "fast", "--config",
                 str(config), "--nats", nats_server.url], cwd=ROOT, stdout=subprocess.DEVNULL)

        workers = [worker(), worker()]
        try:
            async with ActorSystem(nats=nats_server.url, namespace=namespace,
                                   placement_timeout=60) as system:
                with anyio.fail_after(60):
                    while len([s for s in await system.node.cluster_stats()
                               if "fast" in s.info.pools]) < 2:
                        await anyio.sleep(0.1)
                ref = await system.spawn(BatchParent)
                parent = system.node.cells[ref.actor_id].actor
                assert isinstance(parent, BatchParent)
                before_kill: set[int] = set()

                async def kill_a_busy_worker() -> None:
                    with anyio.fail_after(120):
                        while len(parent.answered) < 4:
                            await anyio.sleep(0.01)
                        while True:
                            for s in await system.node.cluster_stats():
                                load = s.models.get("fast")
                                if load is not None and load.in_flight > 0:
                                    before_kill.update(parent.answered)
                                    os.kill(s.info.pid, signal.SIGKILL)
                                    return
                            await anyio.sleep(0.01)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(kill_a_busy_worker)
                    with anyio.fail_after(120):
                        replies = await ref.ask(RunBatch(prompts), timeout=120)
        finally:
            for w in workers:
                if w.poll() is None:
                    w.terminate()
            for w in workers:
                w.wait(30)
    assert replies == [expected(p) for p in prompts]  # every prompt, once, in order
    assert sorted(parent.answered) == list(range(len(prompts)))
    assert before_kill and any(prompts[i].startswith("short") for i in before_kill)
    assert all(echo.seen[prompts[i]] == 1 for i in before_kill)  # never asked again
    assert set(echo.seen) == set(prompts)
    assert any(n > 1 for n in echo.seen.values()), "the kill cost no prompt: not mid-batch"
    assert parent.lanes_used <= len(prompts) // CONCURRENCY  # spawned ahead, one per chunk
    # Every request the model saw is counted: the replies, and the attempts lost with the
    # killed worker at their estimate (some of those never reached the model: an upper bound).
    usage = parent.usage["fast"]
    assert usage.calls == len(prompts)
    assert usage.calls + usage.lost_calls >= sum(echo.seen.values())
    assert usage.lost_calls >= 1 and usage.lost_tokens > 0 and usage.lost_cost_usd > 0
    assert total_tokens(parent.usage) == usage.tokens + usage.lost_tokens
