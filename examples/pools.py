"""Two workers in two processes serving two pools; actors placed on each.

    python examples/pools.py                     # starts NATS and both workers itself
    python examples/pools.py --nats URL          # uses your NATS, still starts the workers

The script starts `heterarch worker --pool cpu` and `heterarch worker --pool gpu` as child
processes, spawns a `Mapper` on the cpu pool that fans work out to `Squarer`s on the gpu pool,
and shows which process and hardware served each step.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import anyio

from actors import Actor, ActorRef, Ask
from runtime import ActorSystem, NatsServer, load_config

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "pools.toml"


class Where(Ask[str], frozen=True, tag=True):
    pass


class Square(Ask[int], frozen=True, tag=True):
    x: int


class SumOfSquares(Ask[dict[str, object]], frozen=True, tag=True):
    xs: list[int]


def _where(actor: Actor) -> str:
    return f"pool={actor.ctx.pool} pid={os.getpid()} host={socket.gethostname()}"


class Squarer(Actor):
    async def square(self, msg: Square) -> int:
        return msg.x * msg.x

    async def where(self, msg: Where) -> str:
        return _where(self)


class Mapper(Actor):
    """Spawns one Squarer per input on the gpu pool, asks them all at once, sums the answers."""

    async def sum_of_squares(self, msg: SumOfSquares) -> dict[str, object]:
        children: list[ActorRef[Squarer]] = [
            await self.ctx.spawn(Squarer, pool="gpu") for _ in msg.xs
        ]
        results: list[int] = [0] * len(msg.xs)

        async def one(i: int) -> None:
            results[i] = await children[i].ask(Square(msg.xs[i]))

        async with anyio.create_task_group() as tg:
            for i in range(len(msg.xs)):
                tg.start_soon(one, i)
        where = await children[0].ask(Where())
        for child in children:
            await self.ctx.stop(child)
        return {"sum": sum(results), "mapper": _where(self), "squarers": where}

    async def where(self, msg: Where) -> str:
        return _where(self)


def start_worker(pool: str, nats_url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "heterarch.cli", "worker", "--pool", pool, "--config", str(CONFIG),
         "--nats", nats_url, "--app-dir", str(HERE.parent)],
        cwd=HERE.parent,
    )


async def main(nats: str | None = None) -> dict[str, object]:
    server = None
    if nats is None:
        server = NatsServer().start()
        nats = server.url
        print(f"started nats-server at {nats}")
    workers = [start_worker("cpu", nats), start_worker("gpu", nats)]
    try:
        namespace = load_config(CONFIG).namespace  # the workers' namespace ("examples")
        async with ActorSystem(nats=nats, namespace=namespace, placement_timeout=30.0) as system:
            mapper = await system.spawn(Mapper, pool="cpu", name="mapper")
            print("mapper runs at:", await mapper.ask(Where()))
            result = await mapper.ask(SumOfSquares(list(range(1, 11))))
            print(f"sum of squares 1..10 = {result['sum']}")
            print("  mapper:  ", result["mapper"])
            print("  squarers:", result["squarers"])
            await system.stop(mapper)
            return result
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(10)
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nats", default=None)
    anyio.run(main, parser.parse_args().nats)
