"""Supervision: a crashing child is restarted; too many crashes escalate to the parent.

    python examples/supervision.py [--nats URL]
"""

from __future__ import annotations

import argparse

import anyio

from actors import (
    Actor,
    ActorRef,
    Ask,
    ChildExit,
    RemoteError,
    Restart,
    Strategy,
    SupervisorStrategy,
)
from runtime import ActorSystem


class Work(Ask[str], frozen=True, tag=True):
    crash: bool = False


class Flaky(Actor):
    """Does work; crashes when told to. Every incarnation starts from a clean state."""

    def __init__(self) -> None:
        self.done = 0

    async def work(self, msg: Work) -> str:
        if msg.crash:
            raise RuntimeError("boom")
        self.done += 1
        return f"done {self.done}"


class Run(Ask[list[str]], frozen=True, tag=True):
    crashes: int


class Boss(Actor):
    """Supervises one Flaky child: at most 2 restarts in 10 s, then gives up (escalates)."""

    supervisor_strategy = SupervisorStrategy(
        strategy=Strategy.ONE_FOR_ONE, max_restarts=2, period=10.0
    )

    def __init__(self) -> None:
        self.log: list[str] = []
        self.child: ActorRef[Flaky] | None = None

    async def on_start(self) -> None:
        self.child = await self.ctx.spawn(Flaky, name="flaky", supervision=Restart.PERMANENT)

    async def on_child_exit(self, exit: ChildExit) -> None:
        self.log.append(f"child {exit.name} exited ({exit.reason}): {exit.action}")

    async def run(self, msg: Run) -> list[str]:
        assert self.child is not None
        self.log.append(await self.child.ask(Work()))
        for _ in range(msg.crashes):
            try:
                await self.child.ask(Work(crash=True))
            except RemoteError as exc:
                self.log.append(f"child raised {exc.remote_type}: {exc.remote_message}")
            self.log.append(await self.child.ask(Work()))
        return self.log


async def main(nats: str | None = None) -> dict[str, object]:
    async with ActorSystem(nats=nats) as system:
        boss = await system.spawn(Boss, name="boss", supervision=Restart.TEMPORARY)
        log = await boss.ask(Run(crashes=2))
        for line in log:
            print(" ", line)
        print("a third crash exceeds 2 restarts in 10 s: the boss escalates and stops")
        async with anyio.create_task_group() as tg:
            tg.start_soon(boss.tell, Run(crashes=1))
            notice = await system.wait_stopped(boss, timeout=10)
        print(f"  the boss terminated: {notice.reason}")
        return {"log": log, "boss_reason": notice.reason}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nats", default=None)
    anyio.run(main, parser.parse_args().nats)
