"""``DockerSandbox``: the REPL server in a hardened, long-lived container.

The container has no network, a read-only root file system (``/tmp``, ``/workspace`` and
``/dev/shm`` are small tmpfs mounts), a non-root user, no capabilities, ``no-new-privileges``,
the project's seccomp profile (``seccomp.json``), a private cgroup namespace, no log driver,
memory / CPU / pids limits and no host environment. Frames travel over the container's attached
stdio. The docker SDK is synchronous: every call runs in a worker thread; the attached socket
is read and written by the event loop directly (non-blocking).
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import socket
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from ._build import DEFAULT_IMAGE
from ._contract import Sandbox
from ._frames import DEFAULT_MAX_FRAME
from ._link import Channel
from .errors import DockerUnavailable, ImageMissing, SandboxClosed, SandboxCrashed, SandboxOOM

LABEL = "heterarch.sandbox"
OWNER_LABEL = "heterarch.sandbox.owner"
DATA_DIR = "/data"
#: The uid and gid the REPL runs as inside the container.
SANDBOX_USER = 10001
SECCOMP_PROFILE = Path(__file__).with_name("seccomp.json")


@functools.cache
def seccomp_profile() -> str:
    """The seccomp profile every sandbox container runs under (JSON text, as the API takes it)."""
    return SECCOMP_PROFILE.read_text(encoding="utf-8")


def default_owner() -> str:
    """The owner label of this process's sandboxes (host and pid)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def docker_client(url: str | None = None) -> Any:
    """A docker SDK client; ``DockerUnavailable`` (naming both fixes) if the engine is not there."""
    import docker
    import docker.errors

    target = url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if target.startswith("unix://") and not os.path.exists(target[len("unix://"):]):
        # Checked here: docker-py leaks the socket of a failed unix connect.
        raise DockerUnavailable(f"no Docker socket at {target[len('unix://'):]}")
    try:
        client = docker.DockerClient(base_url=url) if url else docker.from_env()
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise DockerUnavailable(str(exc).splitlines()[0][:200]) from None
    return client


class _AttachedChannel(Channel):
    """Docker's multiplexed attach stream: an 8-byte header (stream, size) before each chunk."""

    def __init__(self, raw: socket.socket) -> None:
        self._sock = raw
        self._sock.setblocking(False)
        self._loop = asyncio.get_running_loop()
        self._raw = bytearray()  # bytes received, not parsed yet
        self._stdout = bytearray()  # payload of stdout chunks, not consumed yet
        self._chunk_left = 0
        self._chunk_is_stdout = True

    async def _receive(self) -> None:
        data = await self._loop.sock_recv(self._sock, 1 << 16)
        if not data:
            raise EOFError("the sandbox container closed its stream")
        self._raw += data

    async def read_exactly(self, n: int) -> bytes:
        while len(self._stdout) < n:
            if self._chunk_left == 0:
                while len(self._raw) < 8:
                    await self._receive()
                self._chunk_is_stdout = self._raw[0] == 1
                self._chunk_left = struct.unpack(">I", self._raw[4:8])[0]
                del self._raw[:8]
                continue
            if not self._raw:
                await self._receive()
            take = min(len(self._raw), self._chunk_left)
            if self._chunk_is_stdout:
                self._stdout += self._raw[:take]
            del self._raw[:take]
            self._chunk_left -= take
        out = bytes(self._stdout[:n])
        del self._stdout[:n]
        return out

    async def write(self, data: bytes) -> None:
        await self._loop.sock_sendall(self._sock, data)


class DockerSandbox(Sandbox):
    """A REPL in a hardened container (see the module docstring).

    Raises ``DockerUnavailable`` from ``start()`` when there is no engine (it never falls back
    to a process silently), ``ImageMissing`` when the image was not built. ``shm_size`` is the
    size of the container's ``/dev/shm`` tmpfs (counted against ``memory``).
    """

    def __init__(
        self,
        *,
        image: str = DEFAULT_IMAGE,
        memory: str = "512m",
        cpus: float = 1.0,
        pids: int = 64,
        shm_size: str = "16m",
        output_limit: int = 20_000,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_callbacks: int = 1_000,
        max_batch: int = 10_000,
        docker_url: str | None = None,
        owner: str | None = None,
        runtime: str | None = None,
    ) -> None:
        super().__init__(output_limit=output_limit, max_frame=max_frame,
                         max_callbacks=max_callbacks, max_batch=max_batch)
        self.image = image
        self.memory = memory
        self.cpus = cpus
        self.pids = pids
        self.shm_size = shm_size
        self.docker_url = docker_url
        self.runtime = runtime or None  # a Docker runtime, e.g. "runsc" (gVisor)
        self.owner = owner or default_owner()
        self._client: Any = None
        self.container: Any = None
        self._socket: Any = None
        self._data_dir: Path | None = None

    def _run_container(self, data_dir: Path) -> tuple[Any, Any]:
        import docker.errors
        from docker.types import LogConfig

        if self._client is None:
            self._client = docker_client(self.docker_url)
        client = self._client
        try:
            client.images.get(self.image)
        except docker.errors.ImageNotFound:
            raise ImageMissing(self.image) from None
        container = client.containers.run(
            self.image,
            ["python3", "-u", "/opt/heterarch/server.py"],
            detach=True,
            stdin_open=True,
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": "size=64m,mode=1777", "/workspace": "size=256m,mode=1777"},
            shm_size=self.shm_size,
            volumes={str(data_dir): {"bind": DATA_DIR, "mode": "ro"}},
            working_dir="/workspace",
            user=f"{SANDBOX_USER}:{SANDBOX_USER}",
            # The data folder is 0750: the REPL reads it through its group (see _data_group).
            group_add=[] if _data_group() == SANDBOX_USER else [_data_group()],
            cap_drop=["ALL"],
            security_opt=["no-new-privileges", f"seccomp={seccomp_profile()}"],
            cgroupns="private",
            log_config=LogConfig(type=LogConfig.types.NONE),
            mem_limit=self.memory,
            memswap_limit=self.memory,
            nano_cpus=int(self.cpus * 1e9),
            pids_limit=self.pids,
            environment={
                "HETERARCH_OUTPUT_LIMIT": str(self.output_limit),
                "HETERARCH_MAX_FRAME": str(self.max_frame),
                "HOME": "/workspace",
            },
            labels={LABEL: "1", OWNER_LABEL: self.owner},
            **({"runtime": self.runtime} if self.runtime else {}),
        )
        try:
            sock = client.api.attach_socket(
                container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
        except BaseException:
            _remove(container)
            raise
        return container, sock

    async def _launch(self) -> Channel:
        self._data_dir = _make_data_dir()  # microseconds: not worth a thread that may be lost
        try:
            # Shielded: a container made while the caller was cancelled must not go unowned.
            with anyio.CancelScope(shield=True):
                self.container, self._socket = await anyio.to_thread.run_sync(
                    self._run_container, self._data_dir)
            await anyio.lowlevel.checkpoint()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._kill()
            raise
        return _AttachedChannel(getattr(self._socket, "_sock", self._socket))

    async def _wait_exit(self) -> None:
        # The attach stream may stay open after the container dies (stdin is still attached):
        # wait for the exit itself, so a killed REPL (OOM, pids) is noticed at once.
        container_id = self.container.id
        await anyio.to_thread.run_sync(
            _wait_quietly, container_id, self.docker_url, None, abandon_on_cancel=True,
            limiter=_WAITERS,
        )

    async def _kill(self) -> None:
        container, self.container = self.container, None
        sock, self._socket = self._socket, None
        data_dir, self._data_dir = self._data_dir, None
        if sock is not None:
            _close_attach_socket(sock)
        if container is not None:
            await anyio.to_thread.run_sync(_remove, container)
        if data_dir is not None:
            await anyio.to_thread.run_sync(_remove_dir, data_dir)

    async def _crash_reason(self) -> SandboxCrashed:
        container = self.container
        if container is None:
            return SandboxCrashed("the container is gone")

        def inspect() -> dict[str, Any]:
            # The channel may close a moment before the engine records the exit.
            _wait_quietly(container.id, self.docker_url, 5)
            container.reload()
            state: dict[str, Any] = container.attrs.get("State", {})
            return state

        try:
            state = await anyio.to_thread.run_sync(inspect)
        except Exception:
            return SandboxCrashed("the container is gone")
        if state.get("OOMKilled"):
            return SandboxOOM(self.memory)
        if state.get("Running"):
            return SandboxCrashed("the REPL closed its channel")
        return SandboxCrashed(f"the REPL exited with status {state.get('ExitCode')}")

    async def _write_file(self, name: str, text: str) -> str:
        if self._data_dir is None:
            raise SandboxClosed()
        path = self._data_dir / f"var-{name}.txt"
        await anyio.to_thread.run_sync(_write_private, path, text)
        return f"{DATA_DIR}/{path.name}"

    async def close(self) -> None:
        await super().close()
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _data_group() -> int:
    """The group that lets the REPL read the data folder: ours, or the REPL's when we are root
    (root's group must not be handed to the container)."""
    return SANDBOX_USER if os.getuid() == 0 else os.getgid()


def _make_data_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="heterarch-sbx-"))
    os.chmod(path, 0o750)
    if os.getuid() == 0:
        os.chown(path, -1, SANDBOX_USER)
    return path


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with open(fd, "w", encoding="utf-8") as f:
        if os.getuid() == 0:
            os.fchown(fd, -1, SANDBOX_USER)
        os.fchmod(fd, 0o640)
        f.write(text)


def _remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _close_attach_socket(sock: Any) -> None:
    """docker-py's attach socket is a SocketIO over a socket, kept alive by its response."""
    for part in (getattr(sock, "_response", None), sock, getattr(sock, "_sock", None)):
        if part is not None:
            try:
                part.close()
            except OSError:
                pass


#: Threads that block in ``container.wait()``: one per live sandbox, apart from the default
#: pool so that many sandboxes never starve other blocking calls.
_WAITERS = anyio.CapacityLimiter(10_000)


def _wait_quietly(container_id: str, docker_url: str | None, timeout: float | None) -> None:
    """Block until the container stops (or ``timeout``), on a client of its own (closed here)."""
    import docker

    try:
        client = docker.DockerClient(base_url=docker_url) if docker_url else docker.from_env()
    except Exception:
        return
    try:
        client.api.wait(container_id, timeout=timeout)
    except Exception:  # removed, engine gone: either way it is not running
        pass
    finally:
        client.close()


def _remove(container: Any) -> None:
    """Remove a container, retrying a busy engine; what still fails is left to the reaper."""
    import docker.errors

    for attempt in range(3):
        try:
            container.remove(force=True)
            return
        except docker.errors.NotFound:  # already gone
            return
        except Exception:
            time.sleep(0.2 * (attempt + 1))


def reap_leftovers(*, docker_url: str | None = None, owner: str | None = None) -> int:
    """Remove sandbox containers left by crashed processes (all of ours, or one owner's)."""
    client = docker_client(docker_url)
    try:
        label = f"{OWNER_LABEL}={owner}" if owner else LABEL
        removed = 0
        for container in client.containers.list(all=True, filters={"label": label}):
            _remove(container)
            removed += 1
        return removed
    finally:
        client.close()
