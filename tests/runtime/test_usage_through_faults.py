"""Usage tells the truth through a kill: the root's worker is killed (-9) mid-run, the root
restarts on another worker, and the run's usage counts every model call that a test server
(not the runtime) answered, once, whichever life of the root made it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

from runtime import ActorSystem, NatsServer
from runtime._rlm import ask_root
from sandbox import build_image
from transports import new_id

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
BATCH = 6
TURN_1 = ("```repl\nr = llm_query_batched([f'item {i}' for i in range(" + str(BATCH) + ")])\n"
          "print('CELL-DONE', len(r))\n```")


def _worker(config: Path, pool: str, nats: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "heterarch.cli", "worker", "--pool", pool, "--config",
         str(config), "--nats", nats], cwd=ROOT, stdout=subprocess.DEVNULL)


class Provider:
    """An OpenAI-compatible server that counts what it answered: the root model writes one
    cell of ``BATCH`` sub-calls, then (its second turn, held at a gate the test opens) a final
    answer. A request whose client is gone when its answer is ready counts as aborted."""

    def __init__(self) -> None:
        self.answered: list[tuple[str, int, int]] = []  # (model, prompt, completion tokens)
        self.aborted = 0
        self.gate = asyncio.Event()
        self.at_gate = asyncio.Event()
        self.gated: list[web.Request] = []

    async def complete(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        model = str(body["model"])
        text = "\n".join(str(m.get("content", "")) for m in body["messages"])
        if model.endswith("frontier"):
            if "CELL-DONE" in text:
                self.gated.append(request)
                self.at_gate.set()
                await self.gate.wait()
                reply = "FINAL(done)"
            else:
                reply = TURN_1
        else:
            reply = f"label of {text[-12:]}"
        transport = request.transport
        if transport is None or transport.is_closing():
            self.aborted += 1
            raise web.HTTPServiceUnavailable()
        prompt, completion = len(text) // 4 + 8, len(reply) // 4 + 1
        self.answered.append((model, prompt, completion))
        return web.json_response({
            "id": f"c{len(self.answered)}", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": reply}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}})


async def test_usage_counts_every_answered_call_once_through_a_kill_9_of_the_root(
        nats_server: NatsServer, tmp_path: Path) -> None:
    build_image(if_missing=True, progress=lambda line: None)
    provider = Provider()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", provider.complete)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    namespace = "uf" + new_id()[:8]
    config = tmp_path / "pools.toml"
    config.write_text(f'namespace = "{namespace}"\n' + "".join(
        f'[pools.{pool}]\nhardware = "gpu"\nmodules = ["actors"]\nmodel = "openai/{pool}"\n'
        f'api_base = "http://127.0.0.1:{port}/v1"\nmax_concurrency = 8\ncapacity = 100\n'
        f"input_price_per_mtok = 1.0\noutput_price_per_mtok = 2.0\n"
        for pool in ("frontier", "wafer")))

    workers = [_worker(config, pool, nats_server.url)
               for pool in ("frontier", "frontier", "wafer")]
    try:
        async with ActorSystem(nats=nats_server.url, namespace=namespace,
                               placement_timeout=60) as system:
            with anyio.fail_after(90):
                while len([s for s in await system.node.cluster_stats()
                           if s.info.pools]) < 3:
                    await anyio.sleep(0.1)

            async def kill_the_root_at_its_second_turn() -> None:
                with anyio.fail_after(180):
                    await provider.at_gate.wait()
                    victim = 0
                    while not victim:
                        for s in await system.node.cluster_stats():
                            if any(a.name == "rlm-root" for a in s.actors):
                                victim = s.info.pid
                        await anyio.sleep(0.05)
                    os.kill(victim, signal.SIGKILL)
                    await anyio.to_thread.run_sync(
                        next(w for w in workers if w.pid == victim).wait)
                    gated = provider.gated[0]
                    while gated.transport is not None and not gated.transport.is_closing():
                        await anyio.sleep(0.05)  # the server sees the dead client's socket
                    provider.gate.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_the_root_at_its_second_turn)
                answer = await ask_root(system, "q?", context="some context",
                                        root_pool="frontier", pools=["wafer"],
                                        max_iterations=3, timeout=300)
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
        for w in workers:
            w.wait(30)
        await runner.cleanup()
    assert answer.ok and answer.text == "done", answer.stop_reason
    assert provider.aborted == 1  # the second turn of the first life, killed with it
    # every call the provider answered is counted once, at its real tokens, per pool
    for pool in ("frontier", "wafer"):
        made = [(p, c) for m, p, c in provider.answered if m.endswith(pool)]
        usage = answer.usage[pool]
        assert usage.calls == len(made), (pool, usage)
        assert (usage.input_tokens, usage.output_tokens) == (
            sum(p for p, _ in made), sum(c for _, c in made))
        assert usage.lost_calls == 0
    assert len(provider.answered) == 1 + BATCH + 1  # nothing answered twice
    assert answer.usage["wafer"].reclaimed_calls == BATCH  # paid by the first life
    assert answer.usage["frontier"].reclaimed_calls == 1


ROOT_CODE = '```repl\nprint(rlm_query("look left"))\n```'
CHILD_CODE = ("```repl\nimport time\n"
              "r = llm_query_batched([f'part {i}' for i in range(4)])\n"
              "llm_query('marker one')\nllm_query('marker two')\ntime.sleep(3600)\n```")


class Holding:
    """An OpenAI-compatible server: the root asks a child (depth 1) that makes four
    sub-calls and a first marker call, then a second one held until its client goes away
    (in flight at the stop). Counts what it answered and what was aborted."""

    def __init__(self) -> None:
        self.answered: list[tuple[int, int]] = []  # (prompt, completion) tokens
        self.aborted = 0
        self.held = asyncio.Event()

    async def complete(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        text = "\n".join(str(m.get("content", "")) for m in body["messages"])
        last = str(body["messages"][-1].get("content", ""))
        if "marker two" in last:
            self.held.set()
            try:
                await asyncio.Event().wait()  # until the client goes away
            finally:
                self.aborted += 1
        if "Recursion depth: 0 of" in text:
            reply = ROOT_CODE
        elif "Recursion depth: 1 of" in text:
            reply = CHILD_CODE
        else:
            reply = f"label of {last[-12:]}"
        prompt, completion = len(text) // 4 + 8, len(reply) // 4 + 1
        self.answered.append((prompt, completion))
        return web.json_response({
            "id": f"c{len(self.answered)}", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": reply}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}})


async def test_a_cancelled_run_reports_what_its_unanswered_child_spent(
        nats_server: NatsServer, tmp_path: Path) -> None:
    """Cancel the asker while a child agent works (its handler never answers): the partial
    usage the root reports counts every call the test server answered, the child's too."""
    from actors.agents import RunProgress

    build_image(if_missing=True, progress=lambda line: None)
    server = Holding()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.complete)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    namespace = "uc" + new_id()[:8]
    config = tmp_path / "pools.toml"
    config.write_text(f'namespace = "{namespace}"\n' + "".join(
        f'[pools.{pool}]\nhardware = "gpu"\nmodules = ["actors"]\nmodel = "openai/{pool}"\n'
        f'api_base = "http://127.0.0.1:{port}/v1"\nmax_concurrency = 8\ncapacity = 100\n'
        f"input_price_per_mtok = 1.0\noutput_price_per_mtok = 2.0\n"
        for pool in ("frontier", "wafer")))
    workers = [_worker(config, pool, nats_server.url) for pool in ("frontier", "wafer")]
    reports: list[RunProgress] = []
    interrupted = anyio.Event()

    def progress(item: RunProgress) -> None:
        reports.append(item)
        if item.phase == "interrupted":
            interrupted.set()

    try:
        async with ActorSystem(nats=nats_server.url, namespace=namespace,
                               placement_timeout=60) as system:
            await system.node.wait_pool("frontier")
            await system.node.wait_pool("wafer")
            with system.node.open_inbox(RunProgress, progress) as inbox:
                with anyio.fail_after(240):
                    async with anyio.create_task_group() as tg:
                        async def ask() -> None:
                            await ask_root(system, "q?", context="some context",
                                           root_pool="frontier", max_depth=3,
                                           max_iterations=3, progress=inbox, timeout=300)

                        tg.start_soon(ask)
                        await server.held.wait()  # the child is at its last call
                        tg.cancel_scope.cancel()
                    await interrupted.wait()
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
        for w in workers:
            w.wait(30)
        await runner.cleanup()
    usage = reports[-1].usage
    # the root's turn, the child's turn, four sub-calls, the first marker: all answered
    assert len(server.answered) == 7 and server.aborted == 1
    assert sum(u.calls for u in usage.values()) == len(server.answered), usage
    assert sum(u.input_tokens for u in usage.values()) == sum(p for p, _ in server.answered)
    assert sum(u.output_tokens for u in usage.values()) == sum(c for _, c in server.answered)
