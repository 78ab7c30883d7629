"""Run as a subprocess by the tracing tests: one traced ask and one model call, then exit.

    python -m tests.tracing.traced_app SIMULATOR_URL
Tracing comes from the environment (OTEL_*, HETERARCH_TRACE_FILE), as in any heterarch process.
"""

from __future__ import annotations

import sys

import anyio

from runtime import ActorSystem, LLMClient, PoolConfig, configure_tracing
from tests.actors.app import Add, Worker
from transports import MemoryTransport


async def main(simulator_url: str) -> None:
    handle = configure_tracing(role="traced-app")
    from opentelemetry import trace

    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("invoke_agent test-root"):
        async with ActorSystem(MemoryTransport()) as system:
            ref = await system.spawn(Worker)
            assert await ref.ask(Add(1, 2)) == 3
        async with LLMClient(PoolConfig(name="fast", hardware="wafer-scale", model="openai/m",
                                        api_base=simulator_url, input_price_per_mtok=1.0,
                                        output_price_per_mtok=1.0)) as client:
            await client.complete([{"role": "user", "content": "the secret prompt text"}])
    if handle is not None:
        handle.shutdown()
    print("run complete")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
