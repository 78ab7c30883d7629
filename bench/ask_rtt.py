"""Actor ``ask`` round trip across two processes vs raw nats-py request/reply, in one run.

    python bench/ask_rtt.py [--n 3000] [--concurrency 50] [--secured]

``--secured``: the server has heterarch's generated users (``runtime._permissions``): the worker
and the asking client each their own principal, with the permissions that bind mailboxes and
replies to them (docs/bus.md); the raw pair connects as an unrestricted user.

Baseline: a second process answers raw nats-py requests (``msg.respond``); the bench process
times ``nc.request`` on one connection. Ours: a `heterarch worker` process hosts an ``Echo``
actor; the bench process times ``ref.ask``. Ratios are ours / raw (latency) and ours / raw
(throughput, higher is better).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import _common  # noqa: F401  (sets sys.path)
import anyio
import nats
from _common import ROOT, percentile, result, summary, worker_process

from bench.actors_app import Echo, Ping
from runtime import ActorSystem, NatsServer
from runtime._observe.tracing import configure_tracing

RAW_RESPONDER = """
import asyncio, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1])
    async def cb(msg):
        await nc.publish(msg.reply, msg.data)
    await nc.subscribe("bench.raw", cb=cb)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def raw_round_trips(url: str, n: int, concurrency: int) -> tuple[list[float], float]:
    nc = await nats.connect(url)
    try:
        for _ in range(200):
            await nc.request("bench.raw", b"x", timeout=5)
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            await nc.request("bench.raw", b"x", timeout=5)
            samples.append(time.perf_counter() - t)
        throughput = await _throughput(lambda: nc.request("bench.raw", b"x", timeout=10), n,
                                       concurrency)
        return samples, throughput
    finally:
        await nc.close()


async def _throughput(call: object, n: int, concurrency: int) -> float:
    per_task = max(1, n // concurrency)

    async def worker() -> None:
        for _ in range(per_task):
            await call()  # type: ignore[operator]

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return per_task * concurrency / (time.perf_counter() - start)


async def actor_round_trips(url: str, n: int, concurrency: int) -> tuple[list[float], float]:
    async with ActorSystem(nats=url, namespace="bench", placement_timeout=30) as system:
        ref = await system.spawn(Echo, pool="bench")
        msg = Ping(b"x")
        for _ in range(200):
            await ref.ask(msg)
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            await ref.ask(msg)
            samples.append(time.perf_counter() - t)
        throughput = await _throughput(lambda: ref.ask(msg, timeout=10), n, concurrency)
        return samples, throughput


def _secured_config(directory: str) -> str:
    from runtime._permissions import NatsUser, authorization_block

    block = authorization_block("bench", [NatsUser(user="client", role="client", password="c"),
                                          NatsUser(user="worker", role="worker", password="w")])
    block = block.replace("  users: [\n", '  users: [\n    { user: "raw", password: "r" }\n', 1)
    path = f"{directory}/nats.conf"
    with open(path, "w") as f:
        f.write(block)
    return path


async def main(n: int, concurrency: int, secured: bool) -> None:
    import tempfile

    tracing = configure_tracing(role="bench")  # on only when the environment asks for it
    with tempfile.TemporaryDirectory() as tmp, \
            NatsServer(config_file=_secured_config(tmp) if secured else None) as server:
        def url(user: str, password: str) -> str:
            return server.url.replace("nats://", f"nats://{user}:{password}@") if secured \
                else server.url

        raw_url, client_url = url("raw", "r"), url("client", "c")
        responder = subprocess.Popen([sys.executable, "-c", RAW_RESPONDER, raw_url],
                                     stdout=subprocess.PIPE, text=True)
        try:
            assert responder.stdout is not None
            responder.stdout.readline()
            with worker_process(url("worker", "w"), {"bench": 64}, "bench.actors_app"):
                # Interleave: raw, ours, raw, ours - so drift on the machine hits both alike.
                raw_a, raw_tp_a = await raw_round_trips(raw_url, n // 2, concurrency)
                ours_a, ours_tp_a = await actor_round_trips(client_url, n // 2, concurrency)
                raw_b, raw_tp_b = await raw_round_trips(raw_url, n // 2, concurrency)
                ours_b, ours_tp_b = await actor_round_trips(client_url, n // 2, concurrency)
        finally:
            responder.terminate()
            responder.wait()
    if tracing is not None:
        tracing.shutdown()
    raw, ours = raw_a + raw_b, ours_a + ours_b
    raw_tp, ours_tp = (raw_tp_a + raw_tp_b) / 2, (ours_tp_a + ours_tp_b) / 2
    print(summary("raw nats-py request/reply", raw))
    print(summary("heterarch ask (2 processes)", ours))
    print(f"throughput with {concurrency} concurrent: raw {raw_tp:,.0f}/s, ours {ours_tp:,.0f}/s")
    result("raw_rtt_p50_us", percentile(raw, 50) * 1e6)
    result("ask_rtt_p50_us", percentile(ours, 50) * 1e6)
    result("ask_rtt_ratio", percentile(ours, 50) / percentile(raw, 50))
    result("ask_throughput_per_s", ours_tp)
    result("ask_throughput_ratio", ours_tp / raw_tp)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--secured", action="store_true",
                        help="generated users: the worker and the client each a principal")
    a = parser.parse_args()
    anyio.run(main, a.n, a.concurrency, a.secured)
