"""``SandboxPool``: warm sandboxes, handed out and taken back."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Self

import anyio

from ._contract import Sandbox
from .errors import SandboxClosed, SandboxError


class SandboxPool:
    """Keeps up to ``size`` started sandboxes; ``acquire()`` returns a warm one.

    A released sandbox is replaced by a fresh one in the background (so no state leaks from
    one user to the next); ``close()`` removes them all.

    >>> async with SandboxPool(DockerSandbox, size=4) as pool:  # doctest: +SKIP
    ...     async with pool.sandbox() as sb:
    ...         await sb.exec("print(1)")
    """

    def __init__(self, factory: Callable[[], Sandbox], *, size: int = 4) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.factory = factory
        self.size = size
        self._warm: list[Sandbox] = []
        self._in_use: set[Sandbox] = set()
        self._available = anyio.Semaphore(size)
        self._warm_ready = anyio.Condition()
        self._closed = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start ``size`` sandboxes; if one fails, close the others and raise its error."""
        errors: list[BaseException] = []

        async def add() -> None:
            try:
                await self._add_warm()
            except Exception as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(self.size):
                tg.start_soon(add)
        if errors:
            await self.close()
            raise errors[0]

    async def _add_warm(self) -> None:
        sandbox = self.factory()
        try:
            await sandbox.start()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await sandbox.close()
            raise
        if self._closed:
            await sandbox.close()
            return
        async with self._warm_ready:
            self._warm.append(sandbox)
            self._warm_ready.notify()

    async def acquire(self) -> Sandbox:
        """A started sandbox of your own until ``release``; waits while all are in use.

        When no warm one is left (a replacement failed to start), one is started here, and
        its error, if any, is raised here.
        """
        if self._closed:
            raise SandboxClosed()
        await self._available.acquire()
        try:
            if not self._warm:
                await self._add_warm()
            async with self._warm_ready:
                if self._closed or not self._warm:
                    raise SandboxClosed()
                sandbox = self._warm.pop()
        except BaseException:
            self._available.release()
            raise
        self._in_use.add(sandbox)
        return sandbox

    async def release(self, sandbox: Sandbox) -> None:
        """Give it back: it is closed for good and a fresh one is started in its place.

        A replacement that fails to start is not an error here: the next ``acquire`` starts
        one itself and raises what goes wrong there.
        """
        if sandbox not in self._in_use:
            raise SandboxError("release() of a sandbox this pool did not hand out")
        self._in_use.discard(sandbox)
        try:
            with anyio.CancelScope(shield=True):
                await sandbox.close()
                if not self._closed:
                    with contextlib.suppress(SandboxError):
                        await self._add_warm()
        finally:
            self._available.release()

    @asynccontextmanager
    async def sandbox(self) -> AsyncIterator[Sandbox]:
        sandbox = await self.acquire()
        try:
            yield sandbox
        finally:
            await self.release(sandbox)

    async def close(self) -> None:
        self._closed = True
        with anyio.CancelScope(shield=True):
            for sandbox in [*self._warm, *self._in_use]:
                await sandbox.close()
        self._warm.clear()
        self._in_use.clear()
        async with self._warm_ready:
            self._warm_ready.notify_all()
