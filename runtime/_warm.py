"""A sandbox started ahead for the next RLM agent of a worker (starting one takes ~0.9 s).

A sandbox's callbacks must be named before it starts, and the agent that will use it is not
known yet: the spare is started with relays for the RLM callbacks, pointed at the agent's own
functions when it takes the spare. Each sandbox serves one agent and is closed by it; another
spare is started at once for the next.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

import anyio

from sandbox import Sandbox

log = logging.getLogger("heterarch.sandbox")
Callback = Callable[..., Awaitable[Any]]
RLM_CALLBACKS = ("llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched",
                 "call_tool")


class _Relay:
    """The callbacks of a spare: they call the functions of whoever took it."""

    def __init__(self) -> None:
        self.targets: Mapping[str, Callback] = {}

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return await self.targets[name](*args, **kwargs)


class WarmSandboxes:
    """The sandbox source of a worker that hosts RLM agents, one sandbox ahead.

    ``factory()`` makes an unstarted sandbox as before; ``await take(callbacks)`` returns a
    started one whose callbacks call ``callbacks`` (the spare when it is ready, else one started
    now). The node opens it (``aopen``: the spare starts in the node's task group) and closes it.
    A spare that fails to start is not retried until the next ``take``, which starts its own
    sandbox and raises what that start raises.
    """

    def __init__(self, factory: Callable[[], Sandbox], *, names: Sequence[str] = RLM_CALLBACKS,
                 warmup: str = "") -> None:
        self.factory = factory
        self.names = tuple(names)
        self.warmup = warmup  # code a spare runs once started (imports the taker would pay)
        self._spare: tuple[Sandbox, _Relay] | None = None
        self._filling: anyio.Event | None = None
        self._task_group: Any = None
        self._closed = False

    def __call__(self) -> Sandbox:
        return self.factory()

    async def aopen(self, task_group: Any) -> None:
        if self._task_group is None and not self._closed:
            self._task_group = task_group
            self._refill()

    def _refill(self) -> None:
        if self._task_group is not None and self._filling is None and not self._closed:
            self._filling = anyio.Event()
            self._task_group.start_soon(self._fill, self._filling)

    async def _fill(self, done: anyio.Event) -> None:
        relay = _Relay()
        sandbox = self.factory()
        try:
            for name in self.names:
                sandbox.register_callback(name, partial(relay.call, name))
            await sandbox.start()
            if self.warmup:
                await sandbox.exec(self.warmup, timeout=60)
        except Exception as exc:  # the next take() starts its own and meets the cause
            log.warning("could not start a spare sandbox: %s", exc)
            await _close(sandbox)
            return
        except BaseException:  # cancelled mid-start (the node closing): leave no container
            await _close(sandbox)
            raise
        finally:
            self._filling = None
            done.set()
        if self._closed:
            await _close(sandbox)
        else:
            self._spare = (sandbox, relay)

    async def take(self, callbacks: Mapping[str, Callback]) -> Sandbox:
        """A started sandbox of the caller's own, whose callbacks call ``callbacks``."""
        if self._spare is None and self._filling is not None:
            await self._filling.wait()
        spare, self._spare = self._spare, None
        if spare is not None and set(callbacks) <= set(self.names):
            sandbox, relay = spare
            relay.targets = dict(callbacks)
            self._refill()
            return sandbox
        if spare is not None:
            self._spare = spare
        sandbox = self.factory()
        for name, fn in callbacks.items():
            sandbox.register_callback(name, fn)
        self._refill()
        try:
            await sandbox.start()
        except BaseException:
            await _close(sandbox)
            raise
        return sandbox

    async def aclose(self) -> None:
        self._closed = True
        filling = self._filling
        if filling is not None:  # a spare half started: it closes itself once started
            with anyio.CancelScope(shield=True), anyio.move_on_after(60):
                await filling.wait()
        spare, self._spare = self._spare, None
        if spare is not None:
            await _close(spare[0])


async def _close(sandbox: Sandbox) -> None:
    with anyio.CancelScope(shield=True):
        try:
            await sandbox.close()
        except Exception as exc:  # already gone; the label sweep removes any leftover
            log.warning("closing a spare sandbox failed: %s", exc)
