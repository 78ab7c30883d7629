"""The knobs of the one call, each end to end (embedded: nats-server, a worker, a sandbox; the
simulator over HTTP): the system prompt replaced or extended, user tools with typed arguments,
a typed final answer whose validation error goes back to the model, ``max_calls``, a pool per
depth from the config's ``[[rules]]``, and the sandbox's limits and runtime from the config."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterator, Sequence
from typing import Any

import docker
import msgspec
import pytest

from heterarch.sim.profiles import default_profiles, profiles_toml
from heterarch.sim.simulator import serve_in_thread
from runtime import RLM, RuntimeConfig, parse_config
from sandbox import build_image, default_owner
from sandbox._docker import OWNER_LABEL

pytestmark = pytest.mark.anyio


class Script:
    """The root's model replies with ``turns[n]`` at its n-th turn (counted from the chat, so
    a run's order of calls does not matter); sub-calls answer ``hi: <prompt>``. Records the
    system prompts it saw."""

    def __init__(self, turns: Sequence[str]) -> None:
        self.turns = list(turns)
        self.systems: list[str] = []

    def reply(self, messages: Sequence[dict[str, str]], model: str) -> str:
        system = [str(m["content"]) for m in messages if m.get("role") == "system"]
        if not system:
            return f"hi: {messages[-1]['content']}"
        self.systems.append(system[0])
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        return self.turns[min(turn, len(self.turns) - 1)]


@pytest.fixture
def simulate() -> Iterator[Any]:
    """``simulate(script, extra_toml) -> RuntimeConfig``: the simulator playing ``script`` on
    every model, and a config for it (process sandboxes unless ``extra`` says otherwise)."""
    import contextlib

    with contextlib.ExitStack() as stack:
        def start(script: Script, extra: str = 'sandbox = "process"') -> RuntimeConfig:
            profiles = {name: dataclasses.replace(p, responder=script)
                        for name, p in default_profiles().items()
                        if name in ("sim/frontier", "sim/wafer-small")}
            url = stack.enter_context(serve_in_thread(profiles, time_scale=0.0))
            return parse_config(tomllib.loads(
                f'namespace = "knobs"\n{extra}\n' + profiles_toml(profiles, url, modules=[])))

        yield start


def _repl(code: str) -> str:
    return f"```repl\n{code}\n```"


async def test_system_prompt_replaced_or_extended(simulate: Any) -> None:
    script = Script(["FINAL(done)"])
    config = simulate(script)
    async with RLM(config, root_pool="frontier") as rlm:
        await rlm.ask("q", context="c", system_prompt="You are terse. Use `context`.")
        await rlm.ask("q", context="c", instructions="Answer in French.")
    replaced, extended = script.systems
    assert replaced == "You are terse. Use `context`."
    assert extended.startswith("You answer a question about a context")
    assert extended.endswith("\n\nAnswer in French.")


def weather(city: str, days: int = 1) -> dict[str, Any]:
    """The forecast for ``city``, ``days`` days ahead."""
    return {"city": city, "days": days, "sky": "clear" if days < 3 else "rain"}


async def shout(text: str) -> str:
    """``text`` in capitals (a coroutine function: it runs on the host's event loop)."""
    return text.upper()


async def test_user_tools_with_typed_arguments(simulate: Any) -> None:
    script = Script([
        _repl('print(weather("Paris", days="4"))\nprint(shout("hi"))\n'
              'try:\n    weather("Paris", days="many")\nexcept Exception as exc:\n'
              '    print("refused:", exc)'),
        "FINAL(rain)",
    ])
    config = simulate(script)
    async with RLM(config, root_pool="frontier", tools=[weather, shout]) as rlm:
        answer = await rlm.ask("Will it rain in Paris in 4 days?", context="")
    assert answer.ok and answer.text == "rain"
    system = script.systems[0]
    assert "- `weather(city: str, days: int = 1) -> dict[str, Any]`: The forecast for" in system
    assert "- `shout(text: str) -> str`" in system
    output = answer.trajectory[0].output
    assert "{'city': 'Paris', 'days': 4, 'sky': 'rain'}\nHI\n" in output
    assert "refused:" in output and "argument 'days': Expected `int`" in output
    calls = answer.trajectory[0].sub_calls
    assert [(c.kind, c.name) for c in calls] == [("tool", "weather"), ("tool", "shout"),
                                                ("tool", "weather")]
    assert calls[0].prompt == '{"args": ["Paris"], "kwargs": {"days": "4"}}'
    assert calls[0].reply == '{"city": "Paris", "days": 4, "sky": "rain"}'
    assert "argument 'days'" in calls[2].error


class Verdict(msgspec.Struct):
    label: str
    score: int


async def test_typed_answer_is_validated_and_the_error_goes_back(simulate: Any) -> None:
    script = Script([
        _repl('v = {"label": "spam"}') + "\nFINAL_VAR(v)",
        _repl('v = {"label": "spam", "score": "7"}') + "\nFINAL_VAR(v)",
    ])
    config = simulate(script)
    async with RLM(config, root_pool="frontier", answer_type=Verdict) as rlm:
        answer = await rlm.ask("Is it spam?", context="buy now")
    assert answer.ok and answer.iterations == 2
    assert answer.value == Verdict(label="spam", score=7)
    assert msgspec.json.decode(answer.text) == {"label": "spam", "score": 7}
    assert '"required":["label","score"]' in script.systems[0].replace(" ", "")
    first = answer.trajectory[0]
    assert "Your final answer does not fit the required type: Object missing required " \
        "field `score`" in first.output


async def test_json_schema_answer(simulate: Any) -> None:
    script = Script(["FINAL([1, 2])", 'FINAL(["a", "b"])'])
    config = simulate(script)
    schema = {"type": "array", "items": {"type": "string"}}
    async with RLM(config, root_pool="frontier") as rlm:
        answer = await rlm.ask("Which?", context="", answer_type=schema)
    assert answer.value == ["a", "b"] and answer.iterations == 2
    assert "at 0: 1 is not of type 'string'" in answer.trajectory[0].output


async def test_max_calls_stops_the_run(simulate: Any) -> None:
    # distinct prompts: identical ones in flight are answered once
    script = Script([_repl('print(llm_query_batched([f"x{i}" for i in range(10)]))'),
                     "FINAL(never)"])
    config = simulate(script)
    async with RLM(config, root_pool="frontier", max_calls=4) as rlm:
        answer = await rlm.ask("q", context="")
    assert not answer.ok
    assert answer.stop_reason.startswith("budget: calls budget exhausted: spent 4 of 4")
    assert sum(u.calls + u.lost_calls for u in answer.usage.values()) == 4
    assert answer.trajectory[0].output.count("BudgetExceeded") == 7  # 1 root + 3 sub-calls ran


async def test_a_pool_per_depth_from_the_config(simulate: Any) -> None:
    script = Script([_repl('print(llm_query("a"))'), "FINAL(ok)"])
    config = simulate(script, 'sandbox = "process"\n'
                              '[[rules]]\ndepth = 0\nkind = "rlm"\npool = "wafer"\n'
                              '[[rules]]\ndepth = 1\nkind = "llm"\npool = "frontier"\n')
    async with RLM(config) as rlm:  # no root pool: the rules place it
        answer = await rlm.ask("q", context="")
    assert answer.ok and answer.trajectory[0].pool == "wafer"
    assert [c.pool for c in answer.trajectory[0].sub_calls] == ["frontier"]


@pytest.mark.docker
async def test_sandbox_limits_and_runtime_from_the_config(simulate: Any) -> None:
    build_image(if_missing=True, progress=lambda line: None)
    config = simulate(Script([_repl("sandboxes()"), "FINAL(ok)"]),
                      '[sandbox]\nmemory = "300m"\ncpus = 0.5\npids = 77\nruntime = "runc"\n')
    seen: list[dict[str, Any]] = []

    def sandboxes() -> int:
        """Called while the run's cell runs: its sandbox (and a spare, maybe) are up."""
        client = docker.from_env()
        try:
            for box in client.containers.list(
                    filters={"label": f"{OWNER_LABEL}={default_owner()}"}):
                seen.append(box.attrs["HostConfig"])
        finally:
            client.close()
        return len(seen)

    async with RLM(config, root_pool="frontier", tools=[sandboxes]) as rlm:
        answer = await rlm.ask("q", context="")
    assert answer.ok and seen
    for host in seen:
        assert host["Memory"] == 300 * 2**20 and host["PidsLimit"] == 77
        assert host["NanoCpus"] == 500_000_000 and host["Runtime"] == "runc"
