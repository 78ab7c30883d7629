"""Each hardening rule of DockerSandbox, with code that tries to break it."""

from __future__ import annotations

import os
import stat
import tempfile
import uuid
from pathlib import Path

import anyio
import docker
import pytest

from sandbox import (
    LABEL,
    OWNER_LABEL,
    DockerSandbox,
    ImageMissing,
    SandboxClosed,
    SandboxCrashed,
    SandboxOOM,
    SandboxPool,
    reap_leftovers,
)

pytestmark = pytest.mark.anyio


async def test_no_network(docker_sandbox: DockerSandbox) -> None:
    result = await docker_sandbox.exec(
        "import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('1.1.1.1', 53))"
    )
    assert result.error is not None
    assert result.error.type in {"OSError", "TimeoutError", "ConnectionRefusedError"}


async def test_read_only_root_and_writable_workspace(docker_sandbox: DockerSandbox) -> None:
    denied = await docker_sandbox.exec("open('/etc/evil', 'w').write('x')")
    assert denied.error is not None and denied.error.type in {"OSError", "PermissionError"}
    ok = await docker_sandbox.exec(
        "open('/workspace/a', 'w').write('x'); open('/tmp/b', 'w').write('y'); print('ok')"
    )
    assert ok.stdout == "ok\n"


async def test_non_root_without_capabilities(docker_sandbox: DockerSandbox) -> None:
    result = await docker_sandbox.exec(
        "import os\nprint(os.getuid())\n"
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
        "print(open('/proc/self/status').read().split('NoNewPrivs:')[1].split()[0])"
    )
    uid, cap_eff, no_new_privs = result.stdout.split()
    assert uid != "0"
    assert int(cap_eff, 16) == 0
    assert no_new_privs == "1"


async def test_no_host_environment(docker_sandbox: DockerSandbox) -> None:
    os.environ["HETERARCH_SECRET_FOR_TEST"] = "leak"
    try:
        result = await docker_sandbox.exec(
            "import os\nprint('HETERARCH_SECRET_FOR_TEST' in os.environ)"
        )
    finally:
        del os.environ["HETERARCH_SECRET_FOR_TEST"]
    assert result.stdout == "False\n"


async def test_memory_limit(docker_sandbox: DockerSandbox) -> None:
    try:
        result = await docker_sandbox.exec("x = b'x' * (10 * 1024**3)")
    except SandboxOOM as exc:
        assert exc.state_lost
    else:
        assert result.error is not None and result.error.type == "MemoryError"
    assert (await docker_sandbox.exec("print('alive')")).stdout == "alive\n"


async def test_fork_bomb_is_contained(docker_sandbox: DockerSandbox) -> None:
    code = (
        "import os\nn = 0\n"
        "try:\n"
        "    for _ in range(10_000):\n"
        "        if os.fork() == 0:\n"
        "            import time; time.sleep(30); os._exit(0)\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    print('refused after', n)\n"
    )
    try:
        result = await docker_sandbox.exec(code, timeout=20)
        assert "refused after" in result.stdout
    except SandboxCrashed:
        pass  # the pids limit may take the REPL down with it; it is restarted
    assert (await docker_sandbox.exec("print('alive')", timeout=20)).stdout == "alive\n"


async def test_cpu_limit_is_set(docker_sandbox: DockerSandbox) -> None:
    container = docker_sandbox.container
    container.reload()
    host = container.attrs["HostConfig"]
    assert host["NanoCpus"] == 1_000_000_000
    assert host["PidsLimit"] == 64
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True


async def test_pool_acquire_release_and_cleanup(sandbox_image: str) -> None:
    owner = f"pool-test-{uuid.uuid4().hex}"  # this pool's containers only, not the process's
    async with SandboxPool(lambda: DockerSandbox(image=sandbox_image, owner=owner), size=2) as pool:
        async with pool.sandbox() as sb:
            await sb.exec("secret = 1")
        async with pool.sandbox() as sb2:  # a fresh one: nothing leaks between users
            assert (await sb2.exec("print('secret' in globals())")).stdout == "False\n"
    client = docker.from_env()
    try:
        mine = f"{OWNER_LABEL}={owner}"
        assert not client.containers.list(all=True, filters={"label": mine})
    finally:
        client.close()


async def test_leftovers_of_a_dead_process_are_reaped(sandbox_image: str) -> None:
    client = docker.from_env()
    try:
        client.containers.run(sandbox_image, ["sleep", "60"], detach=True,
                              labels={LABEL: "1", OWNER_LABEL: "crashed-process"})
        assert reap_leftovers(owner="crashed-process") == 1
        assert not client.containers.list(
            all=True, filters={"label": f"{OWNER_LABEL}=crashed-process"}
        )
    finally:
        client.close()


async def test_kernel_surface_is_narrowed_by_the_seccomp_profile(
    docker_sandbox: DockerSandbox,
) -> None:
    result = await docker_sandbox.exec(
        "import ctypes, errno, socket\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "params = ctypes.create_string_buffer(120)\n"
        "print(libc.syscall(425, 8, params), ctypes.get_errno() == errno.EPERM)  # io_uring_setup\n"
        "for family in (socket.AF_VSOCK, socket.AF_ALG, socket.AF_PACKET):\n"
        "    try:\n"
        "        socket.socket(family, socket.SOCK_STREAM if family == socket.AF_VSOCK else"
        " socket.SOCK_SEQPACKET if family == socket.AF_ALG else socket.SOCK_RAW)\n"
        "        print('open')\n"
        "    except PermissionError:\n"
        "        print('refused')\n"
        "socket.socket(socket.AF_UNIX).close()\n"
        "print(open('/proc/self/cgroup').read().strip())\n"
    )
    assert result.ok, result.error
    lines = result.stdout.splitlines()
    assert lines[0] == "-1 True"
    assert lines[1:4] == ["refused"] * 3
    container = docker_sandbox.container
    cgroups = lines[4:]  # a private cgroup namespace: every path is the root, no container id
    assert cgroups and all(line.endswith(":/") for line in cgroups), cgroups
    assert container.id not in result.stdout
    container.reload()
    host = container.attrs["HostConfig"]
    assert host["CgroupnsMode"] == "private"
    assert host["LogConfig"]["Type"] == "none"  # frames never land in the daemon's logs
    assert host["ShmSize"] == 16 * 1024**2
    assert any(opt.startswith("seccomp=") for opt in host["SecurityOpt"])


async def test_data_folder_is_private_and_goes_with_the_process(
    docker_sandbox: DockerSandbox,
) -> None:
    await docker_sandbox.set_text("context", "secret context")
    data_dir = docker_sandbox._data_dir
    assert data_dir is not None
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o750
    (var_file,) = data_dir.iterdir()
    assert stat.S_IMODE(var_file.stat().st_mode) == 0o640
    assert (await docker_sandbox.exec("print(context)")).stdout == "secret context\n"
    with pytest.raises(SandboxCrashed):
        await docker_sandbox.exec("import os\nos._exit(1)")
    assert not data_dir.exists()  # the dead process's folder is gone; the new one has its own
    await docker_sandbox.close()
    assert docker_sandbox._data_dir is None


async def test_no_data_folder_leaks_from_unstarted_or_failed_sandboxes(
    sandbox_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where data folders are made
    never_started = DockerSandbox(image=sandbox_image)
    await never_started.close()
    missing = DockerSandbox(image="heterarch-sandbox:does-not-exist")
    with pytest.raises(ImageMissing):
        await missing.start()
    await missing.close()
    with pytest.raises(ImageMissing):  # one typed error, not an exception group
        async with SandboxPool(
            lambda: DockerSandbox(image="heterarch-sandbox:does-not-exist"), size=3
        ):
            pass
    assert not [p async for p in anyio.Path(tmp_path).iterdir()]


async def test_exit_137_is_a_crash_not_out_of_memory(docker_sandbox: DockerSandbox) -> None:
    with pytest.raises(SandboxCrashed) as info:
        await docker_sandbox.exec("import os\nos._exit(137)")
    assert not isinstance(info.value, SandboxOOM)
    assert "status 137" in str(info.value)
    assert (await docker_sandbox.exec("print('alive')")).stdout == "alive\n"


async def test_a_released_pool_sandbox_is_closed_for_good(sandbox_image: str) -> None:
    owner = f"pool-test-{uuid.uuid4().hex}"  # this pool's containers only, not the process's
    async with SandboxPool(lambda: DockerSandbox(image=sandbox_image, owner=owner), size=1) as pool:
        sb = await pool.acquire()
        await pool.release(sb)
        with pytest.raises(SandboxClosed):
            await sb.start()
        with pytest.raises(SandboxClosed):
            await sb.exec("1")
    client = docker.from_env()
    try:
        mine = f"{OWNER_LABEL}={owner}"
        assert not client.containers.list(all=True, filters={"label": mine})
    finally:
        client.close()
