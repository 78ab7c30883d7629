"""The built-in agents reach the engine only through the Protocols their package owns
(``actors.agents``: ``AgentServices``, ``CompletionClient``, ``PoolInfo``, ...)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from actors import LLMAgent, Prompt
from actors.agents import CompletionClient
from runtime import ActorSystem, PoolConfig, Worker
from transports import MemoryBus, MemoryTransport

pytestmark = pytest.mark.anyio


def test_the_agents_room_loads_no_engine() -> None:
    code = ("import sys, actors.agents; print(' '.join(sorted(m for m in sys.modules "
            "if m.split('.')[0] in {'runtime', 'transports', 'sandbox', 'litellm'})))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert loaded == []


@dataclass(frozen=True)
class Reply:
    text: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float


class Echo:
    """A model client of our own: anything with ``complete`` serves (no ``LLMClient``)."""

    def __init__(self) -> None:
        self.seen: list[tuple[list[dict[str, Any]], int | None]] = []

    async def complete(self, messages: list[dict[str, Any]], *, max_tokens: int | None = None,
                       temperature: float | None = None) -> Reply:
        self.seen.append((messages, max_tokens))
        return Reply(text=f"echo: {messages[-1]['content']}", model="echo-1", input_tokens=3,
                     output_tokens=2, cost_usd=0.25)


@pytest.fixture
async def echo_worker() -> AsyncIterator[tuple[ActorSystem, Echo]]:
    echo = Echo()
    client: CompletionClient = echo  # the Protocol is all an agent needs
    pools = {"gpu": PoolConfig(name="gpu", hardware="h100", modules=["actors"])}
    bus = MemoryBus()
    async with (MemoryTransport(bus=bus) as worker_t, MemoryTransport(bus=bus) as system_t,
                Worker(pools, transport=worker_t, pool_services={"gpu": {"llm": client}}),
                ActorSystem(system_t) as system):
        yield system, echo


async def test_an_llm_agent_answers_with_any_completion_client(
        echo_worker: tuple[ActorSystem, Echo]) -> None:
    system, echo = echo_worker
    agent = await system.spawn(LLMAgent, pool="gpu")
    reply = await agent.ask(Prompt(prompt="hello", max_tokens=7))
    assert reply.text == "echo: hello" and reply.model == "echo-1" and reply.pool == "gpu"
    usage = reply.usage["gpu"]
    assert (usage.calls, usage.tokens, usage.cost_usd) == (1, 5, 0.25)
    assert usage.hardware == "h100"  # from the pool's PoolInfo, not from the client
    assert echo.seen == [([{"role": "user", "content": "hello"}], 7)]
