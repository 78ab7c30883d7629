"""Hello, actors: ``tell`` and ``ask`` in one process.

    python examples/hello.py            # embedded nats-server if none runs on :4222
    python examples/hello.py --nats nats://127.0.0.1:4222
"""

from __future__ import annotations

import argparse

import anyio
import msgspec

from actors import Actor, Ask
from runtime import ActorSystem


class Greet(Ask[str], frozen=True, tag=True):
    name: str


class Remember(msgspec.Struct, frozen=True, tag=True):
    name: str


class Recall(Ask[list[str]], frozen=True, tag=True):
    pass


class Greeter(Actor):
    def __init__(self, greeting: str = "hello") -> None:
        self.greeting = greeting
        self.names: list[str] = []

    async def greet(self, msg: Greet) -> str:
        return f"{self.greeting}, {msg.name}!"

    async def remember(self, msg: Remember) -> None:
        self.names.append(msg.name)

    async def recall(self, msg: Recall) -> list[str]:
        return list(self.names)


async def main(nats: str | None = None) -> list[str]:
    async with ActorSystem(nats=nats) as system:
        greeter = await system.spawn(Greeter, "hello", name="greeter")
        print(await greeter.ask(Greet("world")))
        for name in ("ada", "alan", "grace"):
            await greeter.tell(Remember(name))
        names = await greeter.ask(Recall())
        print("remembered:", ", ".join(names))
        return names


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nats", default=None)
    anyio.run(main, parser.parse_args().nats)
