"""The pool simulator as an HTTP server: protocol, profiles, queueing, bad requests."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence

import anyio
import pytest

from heterarch.sim.profiles import (
    EchoResponder,
    Profile,
    RoutingResponder,
    ScriptedResponder,
    default_profiles,
    estimate_tokens,
    profiles_toml,
)
from heterarch.sim.simulator import Simulator, add_simulator_arguments, describe

pytestmark = pytest.mark.anyio


def profile(model: str, **kw: object) -> Profile:
    base: dict[str, object] = dict(hardware="test", ttft_s=0.0, tokens_per_s=1e6,
                                   concurrency=4, input_price_per_mtok=1.0,
                                   output_price_per_mtok=2.0, tier=1)
    base.update(kw)
    return Profile(model, **base)  # type: ignore[arg-type]


async def http(sim: Simulator, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection; the status, headers and (unchunked) body."""
    reader, writer = await asyncio.open_connection(sim.host, sim.port)
    try:
        writer.write(raw)
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in head[1:] if line)}
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    body = b""
    while True:
        size = int((await reader.readline()).strip(), 16)
        if size == 0:
            await reader.readline()
            return status, headers, body
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def post(body: bytes, path: str = "/v1/chat/completions", extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def chat(model: str = "m", content: str = "hi", **kw: object) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": content}],
                       **kw}).encode()


async def test_non_streaming_reply_with_usage() -> None:
    async with Simulator({"m": profile("m", responder=EchoResponder())}) as sim:
        status, headers, body = await http(sim, post(chat(content="twelve chars")))
    reply = json.loads(body)
    assert status == 200 and headers["content-type"] == "application/json"
    assert reply["object"] == "chat.completion" and reply["model"] == "m"
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": "twelve chars"}
    assert reply["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}


async def test_streaming_is_server_sent_events_with_usage_last() -> None:
    async with Simulator({"m": profile("m", responder=ScriptedResponder(["y" * 40]))}) as sim:
        status, headers, body = await http(sim, post(chat(stream=True)))
    assert status == 200 and headers["content-type"] == "text/event-stream"
    events = [line[6:] for line in body.decode().split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "y" * 40
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 10


async def test_a_reasoning_model_bills_its_hidden_reasoning() -> None:
    thinker = profile("t", responder=ScriptedResponder(["four"]), reasoning_tokens=320)
    async with Simulator({"t": thinker}) as sim:
        _, _, body = await http(sim, post(chat(model="t")))
        _, _, streamed = await http(sim, post(chat(model="t", stream=True)))
    usage = json.loads(body)["usage"]
    assert usage["completion_tokens"] == 1 + 320
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 320}
    last = [e for e in streamed.decode().split("\n\n") if e.startswith("data: {")][-1]
    assert json.loads(last[6:])["usage"] == usage


async def test_models_and_health() -> None:
    async with Simulator() as sim:
        _, _, models = await http(sim, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, health = await http(sim, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    ids = {m["id"] for m in json.loads(models)["data"]}
    assert ids == set(default_profiles())
    assert status == 200 and json.loads(health)["status"] == "ok"


async def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    async with Simulator({"m": profile("m", responder=EchoResponder())}) as sim:
        reader, writer = await asyncio.open_connection(sim.host, sim.port)
        texts = []
        for i in range(5):
            writer.write(post(chat(content=f"n{i}")))
            _, _, body = await read_response(reader)
            texts.append(json.loads(body)["choices"][0]["message"]["content"])
        writer.close()
    assert texts == [f"n{i}" for i in range(5)]


async def test_chunked_request_body() -> None:
    body = chat(content="chunked")
    raw = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           + f"{10:x}\r\n".encode() + body[:10] + b"\r\n"
           + f"{len(body) - 10:x}\r\n".encode() + body[10:] + b"\r\n0\r\n\r\n")
    async with Simulator({"m": profile("m", responder=EchoResponder())}) as sim:
        status, _, reply = await http(sim, raw)
    assert status == 200
    assert json.loads(reply)["choices"][0]["message"]["content"] == "chunked"


@pytest.mark.parametrize(("raw", "status"), [
    (post(b"{nope"), 400),
    (post(b"[]"), 400),
    (post(b"\xff\xfe"), 400),
    (post(b'{"model": "m", "messages": "hi"}'), 400),
    (post(b'{"model": "m", "messages": [1]}'), 400),
    (post(chat(model="unknown")), 404),
    (post(chat(), path="/v1/nothing"), 404),
    (b"GET /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n",
     413),
])
async def test_bad_requests_get_an_openai_style_json_error_and_the_server_keeps_serving(
        raw: bytes, status: int) -> None:
    async with Simulator({"m": profile("m", responder=EchoResponder())}) as sim:
        got, _, body = await http(sim, raw)
        assert got == status
        assert json.loads(body)["error"]["code"] == status
        again, _, reply = await http(sim, post(chat(content="still here")))
    assert again == 200
    assert json.loads(reply)["choices"][0]["message"]["content"] == "still here"


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1 extra\r\n\r\n",
    b"GET /health HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
])
async def test_malformed_http_is_a_400_from_aiohttp_and_the_server_keeps_serving(
        raw: bytes) -> None:
    async with Simulator({"m": profile("m", responder=EchoResponder())}) as sim:
        got, _, _ = await http(sim, raw)
        again, _, reply = await http(sim, post(chat(content="still here")))
    assert got == 400
    assert again == 200
    assert json.loads(reply)["choices"][0]["message"]["content"] == "still here"


async def test_a_half_sent_request_does_not_hurt() -> None:
    async with Simulator({"m": profile("m", responder=EchoResponder())}) as sim:
        _, writer = await asyncio.open_connection(sim.host, sim.port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 100\r\n\r\n{")
        await writer.drain()
        writer.close()
        status, _, _ = await http(sim, post(chat()))
    assert status == 200


class Broken:
    def reply(self, messages: Sequence[dict[str, str]], model: str) -> str:
        raise RuntimeError("responder bug")


async def test_a_responder_bug_is_a_500_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    profiles = {"bad": profile("bad", responder=Broken()), "m": profile("m")}
    async with Simulator(profiles) as sim:
        status, _, body = await http(sim, post(chat(model="bad")))
        ok, _, _ = await http(sim, post(chat()))
    assert status == 500 and "responder bug" in json.loads(body)["error"]["message"]
    assert ok == 200
    assert "request to /v1/chat/completions failed" in caplog.text


async def test_requests_beyond_the_concurrency_limit_queue() -> None:
    async with Simulator({"slow": profile("slow", concurrency=2, fixed_latency_s=30.0)}) as sim:
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(http, sim, post(chat(model="slow")))
            with anyio.fail_after(30):
                while sim.in_flight["slow"] + sim.queued["slow"] < 5:
                    await anyio.sleep(0.01)
            assert (sim.in_flight["slow"], sim.queued["slow"]) == (2, 3)
            tg.cancel_scope.cancel()
    assert sim.peak_in_flight["slow"] == 2


async def test_error_injection_is_seeded() -> None:
    async def statuses(seed: int) -> list[int]:
        async with Simulator({"f": profile("f", error_rate=0.5)}, seed=seed) as sim:
            return [(await http(sim, post(chat(model="f"))))[0] for _ in range(20)]

    first, again = await statuses(7), await statuses(7)
    assert first == again
    assert {200, 429, 500} == set(first)


async def test_responders_override_per_model() -> None:
    profiles = {"a": profile("a"), "b": profile("b")}
    async with Simulator(profiles, {"b": ScriptedResponder(["scripted"])}) as sim:
        _, _, a = await http(sim, post(chat(model="a", content="echo")))
        _, _, b = await http(sim, post(chat(model="b")))
    assert json.loads(a)["choices"][0]["message"]["content"] == "echo"
    assert json.loads(b)["choices"][0]["message"]["content"] == "scripted"
    with pytest.raises(ValueError, match="unknown model"):
        Simulator(profiles, {"c": EchoResponder()})


def test_default_profiles_span_the_hardware() -> None:
    profiles = default_profiles()
    assert {p.hardware for p in profiles.values()} == {"wafer-scale", "rdu", "h100", "api",
                                                       "cpu"}
    wafer, frontier = profiles["sim/wafer-small"], profiles["sim/frontier"]
    assert wafer.tokens_per_s >= 1000 and wafer.ttft_s < frontier.ttft_s
    assert frontier.tier > profiles["sim/h100-open"].tier > wafer.tier
    assert frontier.output_price_per_mtok > wafer.output_price_per_mtok
    assert all(isinstance(p.responder, RoutingResponder) for p in profiles.values())
    assert wafer.latency(1800) == pytest.approx(wafer.ttft_s + 1800 / wafer.tokens_per_s)
    assert frontier.reasoning_tokens > 0 == wafer.reasoning_tokens
    assert profile("x", fixed_latency_s=0.5).latency(10_000) == 0.5
    assert estimate_tokens("") == 1 and estimate_tokens("x" * 400) == 100


def test_profiles_toml_and_the_cli_pieces() -> None:
    import tomllib

    from runtime import parse_config

    config = parse_config(tomllib.loads(profiles_toml(
        default_profiles(), "http://127.0.0.1:8700/v1", modules=["examples.pools"])))
    assert set(config.pools) == {"wafer", "wafer-large", "rdu", "h100", "frontier", "cpu"}
    assert config.pools["frontier"].model == "openai/sim/frontier"
    parser = argparse.ArgumentParser()
    add_simulator_arguments(parser)
    args = parser.parse_args(["--port", "0", "--time-scale", "0.5", "--error-rate", "0.1"])
    assert (args.port, args.time_scale, args.error_rate, args.seed) == (0, 0.5, 0.1, 1)
    assert "sim/frontier" in describe(Simulator())


def test_the_command_line_entry_serves_until_interrupted() -> None:
    import signal
    import subprocess
    import sys
    import urllib.request

    code = ("import argparse, sys\n"
            "from heterarch.sim.simulator import add_simulator_arguments, run_simulator_cli\n"
            "p = argparse.ArgumentParser(); add_simulator_arguments(p)\n"
            "sys.exit(run_simulator_cli(p.parse_args(sys.argv[1:])))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, "--port", "0", "--error-rate", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "SIMULATED" in first
        url = first.rsplit(" ", 1)[1].strip()
        with urllib.request.urlopen(url + "/models", timeout=10) as response:
            assert "sim/frontier" in response.read().decode()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_the_sample_config_matches_the_shipped_profiles() -> None:
    from pathlib import Path

    from runtime import load_config

    config = load_config(Path(__file__).parents[2] / "examples" / "sim_pools.toml")
    profiles = default_profiles()
    assert len(config.pools) == len(profiles)
    for pool in config.pools.values():
        p = profiles[pool.model.removeprefix("openai/")]
        assert (pool.hardware, pool.tier, pool.max_concurrency) == (p.hardware, p.tier,
                                                                    p.concurrency)
        assert (pool.input_price_per_mtok, pool.output_price_per_mtok) == (
            p.input_price_per_mtok, p.output_price_per_mtok)
        assert pool.api_base == "http://127.0.0.1:8700/v1"
        assert pool.context_window == p.context_window > 0


class Shouting:
    """A user's own responder, loaded by ``--responder`` (module:Class)."""

    def reply(self, messages: Sequence[dict[str, str]], model: str) -> str:
        return f"{model}: {messages[-1]['content'].upper()}"


class NoReply:
    pass


def test_responders_by_module_and_class() -> None:
    from heterarch.sim.simulator import with_responders

    here = f"{__name__}:Shouting"
    every = with_responders(default_profiles(), [here])
    assert all(isinstance(p.responder, Shouting) for p in every.values())
    one = with_responders(default_profiles(), [f"sim/frontier={here}"])
    assert isinstance(one["sim/frontier"].responder, Shouting)
    assert isinstance(one["sim/wafer-small"].responder, RoutingResponder)


@pytest.mark.parametrize(("spec", "why"), [
    ("no-colon", "expected 'package.module:Class'"),
    ("os:", "expected 'package.module:Class'"),
    ("no_such_module_here:X", "cannot import"),
    ("os:getcwd", "has no class"),
    (f"{__name__}:NoReply", "has no reply"),
    ("fractions:Fraction", "has no reply"),
    (f"sim/unknown={__name__}:Shouting", "unknown model"),
])
def test_a_bad_responder_spec_is_a_config_error(spec: str, why: str) -> None:
    from heterarch.sim.simulator import with_responders
    from runtime.errors import RuntimeConfigError

    with pytest.raises(RuntimeConfigError, match=why):
        with_responders(default_profiles(), [spec])


def test_heterarch_simulate_takes_seed_error_rate_and_a_responder() -> None:
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    root = Path(__file__).parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "heterarch.cli", "simulate", "--port", "0", "--seed", "3",
         "--error-rate", "0", "--responder", "tests.runtime.test_simulator:Shouting"],
        stdout=subprocess.PIPE, text=True, cwd=root)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        url = first.rsplit(" ", 1)[1].strip()
        request = urllib.request.Request(url + "/chat/completions", data=chat(
            model="sim/frontier", content="hello"), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            reply = json.loads(response.read())
        assert reply["choices"][0]["message"]["content"] == "sim/frontier: HELLO"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
