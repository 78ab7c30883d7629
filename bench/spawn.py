"""Spawn-until-ready latency of a child on a remote pool, spawns/s per worker, idle actor memory.

    python bench/spawn.py [--n 1000] [--idle 10000]

The bench process spawns ``Echo`` actors onto a pool served by one `heterarch worker` process.
Latency: sequential spawns (request through the JetStream work queue -> worker instantiates ->
ready reply). Throughput: 32 concurrent spawners. Memory: RSS of the worker hosting ``--idle``
idle actors. For scale, the baseline is a raw JetStream publish + pull-fetch + reply round trip
on the same server in the same run (the floor for a work-queue spawn).
"""

from __future__ import annotations

import argparse
import time

import _common  # noqa: F401  (sets sys.path)
import anyio
import nats
from _common import percentile, result, rss_mb, summary, worker_process

from bench.actors_app import Echo, Idle, Ping
from runtime import ActorSystem, NatsServer


async def jetstream_floor(url: str, n: int) -> list[float]:
    """Publish into a work-queue stream, pull-fetch it, reply: the cheapest queued round trip."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="floor", subjects=["floor.>"], retention="workqueue")
    sub = await js.pull_subscribe("floor.q", durable="floor")
    samples = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            await js.publish("floor.q", b"x")
            msgs = await sub.fetch(1, timeout=5)
            await msgs[0].ack()
            samples.append(time.perf_counter() - t)
    finally:
        await js.delete_stream("floor")
        await nc.close()
    return samples


async def main(n: int, idle: int) -> None:
    with NatsServer() as server:
        floor = await jetstream_floor(server.url, min(n, 500))
        with worker_process(server.url, {"bench": idle + n + 100}, "bench.actors_app") as proc:
            async with ActorSystem(nats=server.url, namespace="bench",
                                   placement_timeout=30) as system:
                for _ in range(50):  # warm up imports and connections
                    await system.stop(await system.spawn(Echo, pool="bench"))
                latencies = []
                refs = []
                for _ in range(n):
                    t = time.perf_counter()
                    refs.append(await system.spawn(Echo, pool="bench", supervision="temporary"))
                    latencies.append(time.perf_counter() - t)
                assert await refs[-1].ask(Ping(b"ok")) == b"ok"

                count = 0

                async def spawner(k: int) -> None:
                    nonlocal count
                    for _ in range(k):
                        await system.spawn(Echo, pool="bench", supervision="temporary")
                        count += 1

                start = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for _ in range(32):
                        tg.start_soon(spawner, n // 32)
                spawns_per_s = count / (time.perf_counter() - start)
                for ref in refs:
                    await system.stop(ref)

                base_rss = rss_mb(proc.pid)
                sem = anyio.Semaphore(64)

                async def one_idle() -> None:
                    async with sem:
                        await system.spawn(Idle, pool="bench", supervision="temporary")

                async with anyio.create_task_group() as tg:
                    for _ in range(idle):
                        tg.start_soon(one_idle)
                idle_rss = rss_mb(proc.pid)
    print(summary("JetStream publish+fetch+ack floor", floor))
    print(summary("spawn until ready (remote pool)", latencies))
    print(f"spawns/s with 32 concurrent spawners, one worker: {spawns_per_s:,.0f}")
    print(f"worker RSS: {base_rss:.0f} MB before, {idle_rss:.0f} MB with {idle} idle actors")
    result("spawn_floor_p50_ms", percentile(floor, 50) * 1000)
    result("spawn_p50_ms", percentile(latencies, 50) * 1000)
    result("spawn_p99_ms", percentile(latencies, 99) * 1000)
    result("spawn_floor_ratio", percentile(latencies, 50) / percentile(floor, 50))
    result("spawns_per_s", spawns_per_s)
    result("idle_actor_rss_mb", idle_rss)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=10000)
    a = parser.parse_args()
    anyio.run(main, a.n, a.idle)
