"""``ProcessSandbox``: the REPL server as a local subprocess. NOT ISOLATED.

For trusted code and machines without Docker: same protocol, same behaviour, none of the
hardening (the code runs as you, with your network and files). Never chosen silently in place
of ``DockerSandbox``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from pathlib import Path

from ._contract import Channel, Sandbox

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

    def __init__(self, *, output_limit: int = 20_000, python: str | None = None) -> None:
        super().__init__(output_limit=output_limit)
        self.python = python or sys.executable
        self._process: asyncio.subprocess.Process | None = None
        self._dir = tempfile.mkdtemp(prefix="heterarch-sandbox-")

    async def _launch(self) -> Channel:
        env = {"HETERARCH_OUTPUT_LIMIT": str(self.output_limit), "PATH": os.environ.get("PATH", "")}
        self._process = await asyncio.create_subprocess_exec(
            self.python, "-u", str(SERVER), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
            cwd=self._dir, start_new_session=True,
        )
        return _PipeChannel(self._process)

    async def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        if process.stdin is not None:
            process.stdin.close()

    async def _write_file(self, name: str, text: str) -> str:
        path = Path(self._dir) / f"var-{name}.txt"
        path.write_text(text, encoding="utf-8")
        return str(path)

    async def close(self) -> None:
        await super().close()
        import shutil

        shutil.rmtree(self._dir, ignore_errors=True)
