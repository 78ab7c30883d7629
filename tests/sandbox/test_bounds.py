"""What the host will do for a sandbox is bounded: callbacks, batches, values, frames in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from sandbox import DockerSandbox, ProcessSandbox, Sandbox, SandboxRequestError

from .test_attacks import CELL_TIMEOUT, HOST_MEMORY, RAW, WELL_BEFORE, assert_answers, measured

pytestmark = pytest.mark.anyio


class Counting:
    """A host callback that records how many of its calls run at once."""

    def __init__(self) -> None:
        self.calls = 0
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, prompt: object, **options: object) -> str:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await anyio.sleep(0.001)
            return "ok"
        finally:
            self.in_flight -= 1


@pytest.fixture(params=["docker", "process"])
async def bounded(request: pytest.FixtureRequest, sandbox_image: str) -> AsyncIterator[
    tuple[Sandbox, Counting]
]:
    sb: Sandbox = (
        DockerSandbox(image=sandbox_image, max_callbacks=8, max_batch=1_000)
        if request.param == "docker" else ProcessSandbox(max_callbacks=8, max_batch=1_000)
    )
    counting = Counting()
    sb.register_callback("llm_query", counting)
    await sb.start()
    await sb.exec(RAW)
    yield sb, counting
    await sb.close()


async def test_forged_call_frames_run_at_most_max_callbacks_at_once(
    bounded: tuple[Sandbox, Counting],
) -> None:
    sb, counting = bounded
    code = (
        "body = b'{\"op\": \"call\", \"id\": %d, \"name\": \"llm_query\", \"args\": [\"q\"]}'\n"
        "for i in range(20_000):\n"
        "    frame(body % (1_000_000 + i))\n"
    )
    error, elapsed, peak = await measured(lambda: sb.exec(code, timeout=CELL_TIMEOUT))
    assert error is None
    assert counting.calls == 20_000
    assert counting.peak <= 8
    assert elapsed < WELL_BEFORE
    assert peak < HOST_MEMORY
    await assert_answers(sb)


async def test_an_over_long_batch_fails_inside_with_a_clear_error(
    bounded: tuple[Sandbox, Counting],
) -> None:
    sb, counting = bounded
    code = (
        "try:\n"
        "    llm_query_batched(['q'] * 100_000)\n"
        "except CallbackError as e:\n"
        "    print(e)\n"
        "print(len(llm_query_batched(['q'] * 1_000)))"
    )
    error, elapsed, peak = await measured(lambda: sb.exec(code, timeout=CELL_TIMEOUT))
    assert error is None
    assert counting.calls == 1_000 and counting.peak <= 8
    assert elapsed < WELL_BEFORE
    assert peak < HOST_MEMORY
    result = await sb.exec(code)
    assert "llm_query_batched takes at most 1,000 items per call (got 100,000)" in result.stdout
    assert result.stdout.endswith("1000\n")


async def test_get_var_that_never_finishes_is_stopped_by_the_watchdog(
    any_sandbox: Sandbox,
) -> None:
    await any_sandbox.start()
    await any_sandbox.exec(
        "kept = 1\nclass Endless(dict):\n    def items(self):\n        while True:\n"
        "            pass\nd = Endless(a=1)"
    )
    error, elapsed, _ = await measured(lambda: any_sandbox.get_var("d", timeout=1))
    assert isinstance(error, SandboxRequestError), error
    assert error.error_type == "TimeoutError"
    assert elapsed < WELL_BEFORE
    assert await any_sandbox.get_var("kept") == 1  # state kept


async def test_get_var_of_a_huge_value_is_refused_without_holding_it(
    any_sandbox: Sandbox,
) -> None:
    await any_sandbox.start()
    # 1 GB as JSON, 8 MB in the REPL (one string, shared): encoding stops at the cap.
    await any_sandbox.exec("kept = 1\nhuge = ['x' * 1000] * 1_000_000")
    error, elapsed, peak = await measured(
        lambda: any_sandbox.get_var("huge", timeout=CELL_TIMEOUT))
    assert isinstance(error, SandboxRequestError), error
    assert "over" in str(error) and "bytes" in str(error)
    assert elapsed < WELL_BEFORE
    assert peak < HOST_MEMORY
    assert await any_sandbox.get_var("kept") == 1


async def test_values_that_cannot_travel_into_the_sandbox_are_refused_here(
    any_sandbox: Sandbox,
) -> None:
    async def surrogate(prompt: str) -> str:
        return "done \udfff"

    async def enormous(prompt: str) -> list[str]:
        return ["x" * 1_000] * 100_000  # 100 MB as JSON: over the 64 MB frame limit

    any_sandbox.register_callback("surrogate", surrogate)
    any_sandbox.register_callback("enormous", enormous)
    await any_sandbox.start()
    with pytest.raises(TypeError):
        await any_sandbox.set_var("x", "a lone surrogate \udfff")
    with pytest.raises(TypeError):
        await any_sandbox.set_var("x", ["x" * 1_000] * 100_000)
    with pytest.raises(UnicodeEncodeError):
        await any_sandbox.set_text("x", "a lone surrogate \udfff" * 1_000_000)
    result = await any_sandbox.exec(
        "for f in (surrogate, enormous):\n"
        "    try:\n        f('q')\n    except CallbackError as e:\n        print(e)"
    )
    assert "cannot travel" in result.stdout and "surrogates not allowed" in result.stdout
    assert "exceeds the 67,108,864-byte limit" in result.stdout
    await assert_answers(any_sandbox)


async def test_a_surrogate_from_the_sandbox_is_an_error_not_a_host_string(
    any_sandbox: Sandbox,
) -> None:
    await any_sandbox.start()
    await any_sandbox.exec("answer = 'done \\udfff'\nprint(answer)")
    with pytest.raises(SandboxRequestError, match="surrogates not allowed"):
        await any_sandbox.get_var("answer")
    printed = await any_sandbox.exec("print(answer)")
    printed.stdout.encode("utf-8")  # replaced, never a lone surrogate on the host
    await assert_answers(any_sandbox)


async def test_error_message_is_capped_like_stdout(any_sandbox: Sandbox) -> None:
    await any_sandbox.start()
    result, elapsed, peak = await measured(
        lambda: any_sandbox.exec("raise ValueError('m' * 80_000_000)", timeout=CELL_TIMEOUT))
    assert result is None
    error = (await any_sandbox.exec("raise ValueError('m' * 80_000_000)")).error
    assert error is not None and error.type == "ValueError"
    assert len(error.message) < 21_000 and "truncated" in error.message
    assert peak < HOST_MEMORY * 10  # the cell's result, not 80 MB
    assert elapsed < WELL_BEFORE


async def test_a_watchdog_firing_mid_frame_never_tears_the_stream(any_sandbox: Sandbox) -> None:
    async def measure(text: str) -> int:
        return len(text)

    any_sandbox.register_callback("measure", measure)
    await any_sandbox.start()
    # 60 MB callback frames, back to back: the 1 s alarm lands while one is being written.
    result = await any_sandbox.exec(
        "big = 'x' * 60_000_000\nn = 0\nwhile True:\n    measure(big)\n    n += 1",
        timeout=1,
    )
    assert result.error is not None and result.error.type == "TimeoutError"
    assert any_sandbox.restarts == 0  # the stream is intact: no protocol violation
    assert await any_sandbox.get_var("n") >= 0
    await assert_answers(any_sandbox)
