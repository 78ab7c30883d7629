"""An actor of "your" project, tested in ``test_greeter.py`` with heterarch's pytest fixtures."""

from __future__ import annotations

from collections.abc import Sequence

from actors import Actor, Ask


class Greet(Ask[str], frozen=True, tag=True):
    name: str


class Greeter(Actor):
    def __init__(self, greeting: str = "hello") -> None:
        self.greeting = greeting

    async def greet(self, msg: Greet) -> str:
        return f"{self.greeting}, {msg.name}! (from pool {self.ctx.pool})"


class Shouter:
    """A simulator responder: every model answers with the last message in capitals."""

    def reply(self, messages: Sequence[dict[str, str]], model: str) -> str:
        return str(messages[-1]["content"]).upper()
