"""The sandbox started ahead for the next RLM agent: real REPL processes, real callbacks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from runtime._warm import WarmSandboxes
from sandbox import ProcessSandbox, SandboxError

pytestmark = pytest.mark.anyio


class Made:
    """A factory that remembers the sandboxes it made."""

    def __init__(self, python: str | None = None) -> None:
        self.python = python
        self.sandboxes: list[ProcessSandbox] = []

    def __call__(self) -> ProcessSandbox:
        sandbox = ProcessSandbox(python=self.python)
        self.sandboxes.append(sandbox)
        return sandbox


@pytest.fixture
async def warm() -> AsyncIterator[tuple[WarmSandboxes, Made]]:
    made = Made()
    sandboxes = WarmSandboxes(made)
    async with anyio.create_task_group() as tg:
        await sandboxes.aopen(tg)
        try:
            yield sandboxes, made
        finally:
            await sandboxes.aclose()


def answering(tag: str) -> dict[str, Any]:
    async def llm_query(prompt: str) -> str:
        return f"{tag}:{prompt}"

    return {"llm_query": llm_query}


async def test_each_taker_gets_a_started_sandbox_calling_its_own_functions(
        warm: tuple[WarmSandboxes, Made]) -> None:
    sandboxes, made = warm
    first = await sandboxes.take(answering("first"))
    assert made.sandboxes == [first]  # the spare, started before anyone asked
    second = await sandboxes.take(answering("second"))
    assert second is not first and second in made.sandboxes
    try:
        one = await first.exec("print(llm_query('a'))", timeout=30)
        two = await second.exec("print(llm_query('b'))", timeout=30)
    finally:
        await first.close()
        await second.close()
    assert (one.stdout, two.stdout) == ("first:a\n", "second:b\n")


async def test_a_spare_that_cannot_start_leaves_the_taker_the_real_error() -> None:
    made = Made(python="/nonexistent/python3")
    sandboxes = WarmSandboxes(made)
    async with anyio.create_task_group() as tg:
        await sandboxes.aopen(tg)
        with pytest.raises(FileNotFoundError):  # what starting one raises, unchanged
            await sandboxes.take(answering("x"))
        await sandboxes.aclose()
    assert len(made.sandboxes) >= 2  # the failed spare, then the taker's own


async def test_closing_closes_the_spare(warm: tuple[WarmSandboxes, Made]) -> None:
    sandboxes, _ = warm
    taken = await sandboxes.take(answering("x"))
    await taken.close()
    with anyio.fail_after(30):
        while sandboxes._spare is None:  # the next spare is started for the next taker
            await anyio.sleep(0.01)
    spare = sandboxes._spare[0]
    await sandboxes.aclose()
    with pytest.raises(SandboxError):
        await spare.exec("print(1)", timeout=5)
