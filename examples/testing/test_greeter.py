"""Testing your own actors with heterarch's pytest fixtures (installed with the package).

    pytest examples/testing        # needs Docker for the last test (the sandbox)

No conftest.py: the fixtures come from the `heterarch` pytest plugin (docs/testing.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from actors import LLMAgent, Prompt
from examples.testing.greeter import Greet, Greeter, Shouter
from heterarch.pytest_plugin import StartSimulator, StartWorkers
from runtime import ActorSystem
from sandbox import Sandbox

pytestmark = pytest.mark.anyio
POOLS = Path(__file__).with_name("pools.toml")


async def test_greeter_on_its_pool(heterarch_system: ActorSystem,
                                   heterarch_workers: StartWorkers) -> None:
    await heterarch_workers(POOLS, ["greeters"])  # a worker for pool "greeters"
    greeter = await heterarch_system.spawn(Greeter, "hi", pool="greeters")
    assert await greeter.ask(Greet("world")) == "hi, world! (from pool greeters)"


async def test_llm_agent_with_my_responder(
        heterarch_system: ActorSystem, heterarch_workers: StartWorkers,
        heterarch_simulator: StartSimulator) -> None:
    simulated = heterarch_simulator(Shouter())  # real HTTP, my answers
    await heterarch_workers(simulated.config(), ["wafer"])
    agent = await heterarch_system.spawn(LLMAgent, pool="wafer")
    reply = await agent.ask(Prompt(prompt="quiet please"))
    assert reply.text == "QUIET PLEASE"
    assert reply.usage["wafer"].calls == 1


async def test_code_in_a_sandbox(heterarch_sandbox: Sandbox) -> None:
    result = await heterarch_sandbox.exec("print(6 * 7)")
    assert result.stdout.strip() == "42"
