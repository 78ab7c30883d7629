"""An OpenAI-compatible test server (aiohttp.web) that never lets a run end, and records the
time of every request it receives: what a stop must bring to an end.

An RLM agent at depth 0 gets code that starts two child RLM agents; one at depth 1 gets code
that sends batches of sub-calls forever; a plain sub-call is answered after ``sub_call_s``.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web

ROOT_CODE = '```repl\nprint(rlm_query_batched(["look left", "look right"]))\n```'
# Prompts that differ every time: the run's call cache answers a repeated one itself.
CHILD_CODE = ('```repl\nimport uuid\nwhile True:\n'
              '    llm_query_batched(["part %s" % uuid.uuid4() for i in range(4)])\n```')
#: A cell that never yields to the interrupt (its signal blocked, as in a blocking C call).
STUCK_CODE = ("```repl\nimport signal, time, uuid\n"
              "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n"
              "try:\n    llm_query('stuck %s' % uuid.uuid4())\nexcept Exception:\n    pass\n"
              "time.sleep(3600)\n```")
DEPTH = re.compile(r"Recursion depth: (\d+) of")


@dataclass
class Recorder:
    sub_call_s: float = 0.3
    root_code: str = ROOT_CODE  # what an agent at depth 0 is told to run
    requests: list[tuple[float, str]] = field(default_factory=list)  # (time.time(), kind)
    url: str = ""
    aborted: int = 0  # sub-calls whose client went away before the answer (aborted requests)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sub_calls: threading.Condition = field(default_factory=threading.Condition)

    def kinds(self) -> list[str]:
        with self._lock:
            return [kind for _, kind in self.requests]

    def last_request_at(self) -> float:
        with self._lock:
            return max((t for t, _ in self.requests), default=0.0)

    def wait_sub_calls(self, n: int, timeout: float) -> bool:
        """Block until ``n`` sub-calls arrived (the tree is at work); False past ``timeout``."""
        with self._sub_calls:
            return self._sub_calls.wait_for(lambda: self.kinds().count("sub") >= n, timeout)

    def _count_aborted(self) -> None:
        with self._lock:
            self.aborted += 1

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        system = next((m.get("content", "") for m in body.get("messages", [])
                       if m.get("role") == "system"), "")
        depth = DEPTH.search(system if isinstance(system, str) else "")
        kind = "sub" if depth is None else f"rlm{depth.group(1)}"
        with self._lock:
            self.requests.append((time.time(), kind))
        with self._sub_calls:
            self._sub_calls.notify_all()
        if kind == "sub":
            try:
                await asyncio.sleep(self.sub_call_s)
            except asyncio.CancelledError:  # aiohttp cancels a handler whose client left
                self._count_aborted()
                raise
            if request.transport is None or request.transport.is_closing():
                self._count_aborted()
            text = "ok"
        else:
            text = self.root_code if kind == "rlm0" else CHILD_CODE
        return web.json_response({
            "id": "x", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
        })


@contextmanager
def recording_llm(sub_call_s: float = 0.3) -> Iterator[Recorder]:
    """Serve on 127.0.0.1 (a free port) in a thread of its own; ``Recorder.url`` is /v1."""
    recorder = Recorder(sub_call_s=sub_call_s)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner: list[web.AppRunner] = []

    async def start() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", recorder._chat)
        app_runner = web.AppRunner(app, access_log=None)
        await app_runner.setup()
        site = web.TCPSite(app_runner, "127.0.0.1", 0)
        await site.start()
        port = app_runner.addresses[0][1]
        recorder.url = f"http://127.0.0.1:{port}/v1"
        runner.append(app_runner)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner[0].cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="recording-llm", daemon=True)
    thread.start()
    ready.wait(30)
    try:
        yield recorder
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


def pools_toml(url: str, namespace: str, client: str) -> str:
    """Two pools on the recording server, both able to host RLM and LLM agents."""
    pools = []
    for name, tier in (("root", 3), ("sub", 1)):
        pools.append(f"""
[pools.{name}]
hardware = "cpu"
capacity = 64
modules = ["actors"]
model = "openai/{name}"
api_base = "{url}"
client = "{client}"
input_price_per_mtok = 1.0
output_price_per_mtok = 2.0
max_concurrency = 8
tier = {tier}
""")
    return f'namespace = "{namespace}"\n' + "".join(pools)
