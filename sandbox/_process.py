"""``ProcessSandbox``: the REPL server as a local subprocess. NOT ISOLATED.

For trusted code and machines without Docker: same protocol, same behaviour, none of the
hardening (the code runs as you, with your network and files). Never chosen silently in place
of ``DockerSandbox``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import anyio

from ._contract import Sandbox
from ._frames import DEFAULT_MAX_FRAME
from ._link import Channel
from .errors import SandboxClosed, SandboxCrashed

SERVER = Path(__file__).with_name("_server.py")


class _PipeChannel(Channel):
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None and process.stdin is not None
        self._reader = process.stdout
        self._writer = process.stdin

    async def read_exactly(self, n: int) -> bytes:
        try:
            return await self._reader.readexactly(n)
        except asyncio.IncompleteReadError:
            raise EOFError("the REPL process closed its output") from None

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()


class ProcessSandbox(Sandbox):
    """A REPL in a local subprocess (see the module docstring: no isolation)."""

    def __init__(
        self,
        *,
        output_limit: int = 20_000,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_callbacks: int = 1_000,
        max_batch: int = 10_000,
        python: str | None = None,
    ) -> None:
        super().__init__(output_limit=output_limit, max_frame=max_frame,
                         max_callbacks=max_callbacks, max_batch=max_batch)
        self.python = python or sys.executable
        self._process: asyncio.subprocess.Process | None = None
        self._dir: Path | None = None

    async def _launch(self) -> Channel:
        self._dir = Path(tempfile.mkdtemp(prefix="heterarch-sandbox-"))
        os.chmod(self._dir, 0o750)
        env = {
            "HETERARCH_OUTPUT_LIMIT": str(self.output_limit),
            "HETERARCH_MAX_FRAME": str(self.max_frame),
            "PATH": os.environ.get("PATH", ""),
        }
        try:
            self._process = await asyncio.create_subprocess_exec(
                self.python, "-u", str(SERVER), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
                cwd=self._dir, start_new_session=True,
            )
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            raise
        return _PipeChannel(self._process)

    async def _wait_exit(self) -> None:
        assert self._process is not None
        await self._process.wait()

    async def _crash_reason(self) -> SandboxCrashed:
        process = self._process
        if process is None:
            return SandboxCrashed("the REPL process is gone")
        with anyio.move_on_after(5):  # the channel may close a moment before the exit
            await process.wait()
        if process.returncode is None:
            return SandboxCrashed("the REPL closed its channel")
        return SandboxCrashed(f"the REPL exited with status {process.returncode}")

    async def _kill(self) -> None:
        process, self._process = self._process, None
        data_dir, self._dir = self._dir, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)  # its children too (it leads its own session)
            await process.wait()
            if process.stdin is not None:
                process.stdin.close()
        if data_dir is not None:
            await anyio.to_thread.run_sync(shutil.rmtree, data_dir, True)

    async def _write_file(self, name: str, text: str) -> str:
        if self._dir is None:
            raise SandboxClosed()
        path = self._dir / f"var-{name}.txt"

        def write() -> None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            with open(fd, "w", encoding="utf-8") as f:
                f.write(text)

        await anyio.to_thread.run_sync(write)
        return str(path)
