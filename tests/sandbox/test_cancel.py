"""Cancelling the caller of a cell stops the cell, its callbacks, and (if it will not stop) its
process: on both backends."""

from __future__ import annotations

import anyio
import pytest

from sandbox import DockerSandbox, Sandbox, SandboxCrashed, SandboxRequestError

pytestmark = pytest.mark.anyio

WAIT_S = 60  # generous: the machine is loaded


async def _cancel_when(sandbox: Sandbox, code: str, started: anyio.Event) -> None:
    """Run ``code``; cancel the caller once ``started`` is set; return when exec is gone."""
    with anyio.fail_after(WAIT_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sandbox.exec, code)
            await started.wait()
            tg.cancel_scope.cancel()


async def test_a_cancelled_cell_is_interrupted_and_the_state_kept(any_sandbox: Sandbox) -> None:
    started = anyio.Event()

    async def signal_started() -> None:
        started.set()

    any_sandbox.register_callback("running", signal_started)
    await any_sandbox.start()
    await any_sandbox.exec("kept = 'state'")
    await _cancel_when(any_sandbox, "running()\nwhile True:\n    pass", started)
    # Interrupted inside, not killed: the REPL and its state are still there.
    assert await any_sandbox.get_var("kept") == "state"
    assert (await any_sandbox.exec("print('next')")).stdout == "next\n"


async def test_the_callbacks_of_a_cancelled_cell_are_cancelled(any_sandbox: Sandbox) -> None:
    started = anyio.Event()
    cancelled = anyio.Event()

    async def forever(_: object) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    any_sandbox.register_callback("forever", forever)
    await any_sandbox.start()
    await _cancel_when(any_sandbox, "forever_batched([1, 2, 3])", started)
    with anyio.fail_after(WAIT_S):
        await cancelled.wait()
    assert (await any_sandbox.exec("print('next')")).stdout == "next\n"


async def test_a_cell_that_ignores_the_interrupt_is_killed(any_sandbox: Sandbox) -> None:
    started = anyio.Event()

    async def signal_started() -> None:
        started.set()

    any_sandbox.register_callback("running", signal_started)
    await any_sandbox.start()
    await any_sandbox.exec("kept = 1")
    # The interrupt's signal blocked: as a blocking C call, the cell never sees it.
    code = ("import signal, time\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n"
            "running()\ntime.sleep(3600)")
    await _cancel_when(any_sandbox, code, started)
    if isinstance(any_sandbox, DockerSandbox):
        assert any_sandbox.container is None  # removed
    with pytest.raises(SandboxCrashed):  # its state went with it; the next call restarts it
        await any_sandbox.exec("print('next')")
    assert (await any_sandbox.exec("print('back')")).stdout == "back\n"
    with pytest.raises(SandboxRequestError, match="kept"):
        await any_sandbox.get_var("kept")
