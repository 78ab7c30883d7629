"""Code that attacks the host through the frame channel, on both backends.

Each attack runs under a long cell timeout (``CELL_TIMEOUT``) and must end with a typed error
well before it, with host memory flat, and with a sandbox that answers a plain cell afterwards.
Hostile code reaches the raw channel the way real code could: it finds the server object.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest

from sandbox import DockerSandbox, ProcessSandbox, Sandbox, SandboxCrashed, SandboxTimeout

pytestmark = pytest.mark.anyio

CELL_TIMEOUT = 60.0
#: An attack must be over in well under the cell timeout (a timeout would take all of it).
WELL_BEFORE = CELL_TIMEOUT / 2
#: Host memory an attack may cost (tracemalloc peak), far below what it sends.
HOST_MEMORY = 20_000_000

RAW = (
    "import gc, os, struct, time\n"
    "server = next(o for o in gc.get_objects() if type(o).__name__ == 'Server')\n"
    "def raw(data):\n"
    "    view = memoryview(data)\n"
    "    while view:\n"
    "        view = view[os.write(server.fd_out, view):]\n"
    "def frame(body):\n"
    "    raw(struct.pack('>I', len(body)) + body)\n"
)


async def measured(action: Callable[[], Awaitable[Any]]) -> tuple[BaseException | None, float, int]:
    """Run ``action``: (what it raised, seconds, host memory peak)."""
    tracemalloc.start()
    started = time.monotonic()
    error: BaseException | None = None
    try:
        await action()
    except Exception as exc:
        error = exc
    finally:
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return error, elapsed, peak


async def assert_answers(sb: Sandbox) -> None:
    assert (await sb.exec("print('still here')")).stdout == "still here\n"


@pytest.fixture
async def started(any_sandbox: Sandbox) -> AsyncIterator[Sandbox]:
    await any_sandbox.start()
    await any_sandbox.exec(RAW)
    yield any_sandbox


async def crash_of(sb: Sandbox, code: str) -> tuple[SandboxCrashed, float, int]:
    error, elapsed, peak = await measured(lambda: sb.exec(code, timeout=CELL_TIMEOUT))
    assert isinstance(error, SandboxCrashed), error
    assert error.state_lost
    return error, elapsed, peak


async def test_a_frame_claiming_gigabytes_is_refused_before_it_is_read(started: Sandbox) -> None:
    code = "raw(struct.pack('>I', 3_500_000_000))\nwhile True:\n    raw(b'x' * 1_000_000)"
    error, elapsed, peak = await crash_of(started, code)
    assert "protocol violation" in str(error) and "3,500,000,000 bytes" in str(error)
    assert elapsed < WELL_BEFORE
    assert peak < HOST_MEMORY
    await assert_answers(started)


MALFORMED = {
    "empty": "raw(b'\\x00\\x00\\x00\\x00')",
    "not json": "frame(b'not json at all')",
    "a json list": "frame(b'[1, 2, 3]')",
    "an id that is not an int": "frame(b'{\"op\": \"result\", \"id\": \"1\", \"ok\": true}')",
    "a negative id": "frame(b'{\"op\": \"result\", \"id\": -1, \"ok\": true}')",
    "invalid utf-8": (
        "frame(b'{\"op\": \"result\", \"id\": 1, \"ok\": true, \"value\": \"\\xff\"}')"
    ),
    "a lone surrogate": (
        "frame(b'{\"op\": \"result\", \"id\": 1, \"ok\": true, \"value\": \"\\\\udfff\"}')"
    ),
    "200k-deep nesting": (
        "frame(b'{\"op\": \"result\", \"id\": 1, \"ok\": true, \"value\": ' + b'[' * 200_000"
        " + b']' * 200_000 + b'}')"
    ),
    "an unknown op": "frame(b'{\"op\": \"shell\", \"id\": 1}')",
    "an unknown field": (
        "frame(b'{\"op\": \"result\", \"id\": 1, \"ok\": true, \"extra\": 1}')"
    ),
    "a result nobody asked for": "frame(b'{\"op\": \"result\", \"id\": 99999, \"ok\": true}')",
    "a second ready": "frame(b'{\"op\": \"ready\", \"pid\": 1, \"python\": \"3\"}')",
}


@pytest.mark.parametrize("attack", sorted(MALFORMED))
async def test_a_malformed_frame_is_a_protocol_violation(started: Sandbox, attack: str) -> None:
    await started.exec("kept = 1")
    error, elapsed, peak = await crash_of(started, MALFORMED[attack] + "\ntime.sleep(300)")
    assert str(error).startswith("the sandbox failed (protocol violation:"), error
    assert elapsed < WELL_BEFORE
    assert peak < HOST_MEMORY
    assert started.restarts == 1
    await assert_answers(started)
    assert "kept" not in (await started.exec("print(sorted(globals()))")).stdout


async def test_a_repl_that_dies_during_a_cell_fails_it_at_once(started: Sandbox) -> None:
    error, elapsed, _ = await crash_of(started, "os._exit(3)")
    assert "status 3" in str(error)
    assert elapsed < WELL_BEFORE
    await assert_answers(started)


async def wait_until_dead(sb: Sandbox) -> None:
    with anyio.fail_after(WELL_BEFORE):
        while sb.is_running:
            await anyio.sleep(0.05)


@pytest.mark.parametrize("call", ["exec", "get_var", "set_var"])
async def test_a_repl_that_dies_between_cells_is_restarted_by_the_next_call(
    started: Sandbox, call: str
) -> None:
    await started.exec(
        "kept = 1\nimport threading\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), os._exit(5))).start()"
    )
    await wait_until_dead(started)
    requests: dict[str, Callable[[], Awaitable[Any]]] = {
        "exec": lambda: started.exec("print(1)", timeout=CELL_TIMEOUT),
        "get_var": lambda: started.get_var("kept", timeout=CELL_TIMEOUT),
        "set_var": lambda: started.set_var("x", 1),
    }
    error, elapsed, _ = await measured(requests[call])
    assert isinstance(error, SandboxCrashed) and error.state_lost, error
    assert "status 5" in str(error)
    assert elapsed < WELL_BEFORE
    assert started.is_running and started.restarts == 1
    await assert_answers(started)


async def test_a_violation_between_cells_kills_at_once_and_the_next_call_restarts(
    started: Sandbox,
) -> None:
    await started.exec(
        "import threading\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), frame(b'[]'), time.sleep(300))).start()"
    )
    await wait_until_dead(started)
    with anyio.fail_after(WELL_BEFORE):  # killed with no call pending, not at the next call
        while (started.container if isinstance(started, DockerSandbox) else
               started._process if isinstance(started, ProcessSandbox) else None):
            await anyio.sleep(0.05)
    error, elapsed, _ = await measured(lambda: started.exec("print(1)", timeout=CELL_TIMEOUT))
    assert isinstance(error, SandboxCrashed) and error.state_lost, error
    assert "protocol violation" in str(error)
    assert elapsed < WELL_BEFORE
    await assert_answers(started)


async def test_a_call_queued_behind_a_killed_cell_gets_a_typed_error(
    any_sandbox: Sandbox,
) -> None:
    running = anyio.Event()

    async def entered() -> None:
        running.set()

    any_sandbox.register_callback("entered", entered)
    await any_sandbox.start()
    unkillable = (
        "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nentered()\n"
        "time.sleep(300)"
    )
    outcomes: dict[str, BaseException | None] = {}

    async def run(name: str, action: Callable[[], Awaitable[Any]]) -> None:
        outcomes[name] = (await measured(action))[0]

    started_at = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "exec", lambda: any_sandbox.exec(unkillable, timeout=1))
        await running.wait()  # the cell is running: this get_var waits behind it
        tg.start_soon(run, "get_var", lambda: any_sandbox.get_var("x", timeout=CELL_TIMEOUT))
    assert isinstance(outcomes["exec"], SandboxTimeout) and outcomes["exec"].state_lost
    assert isinstance(outcomes["get_var"], SandboxCrashed), outcomes["get_var"]
    assert time.monotonic() - started_at < WELL_BEFORE
    await assert_answers(any_sandbox)
