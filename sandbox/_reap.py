"""Reaping: remove the sandbox containers whose owning process is gone (``kill -9``, a crash).

Every container carries its owner's label, ``{hostname}-{pid}`` (``default_owner``). A container
is an orphan when its owner ran on this host and that process no longer runs (or is a zombie).
Owners on other hosts are left alone: their own hosts' workers reap them. Live processes' sandboxes,
of any run or cluster on this machine, are never touched.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from ._docker import LABEL, OWNER_LABEL, _remove, docker_client


def owner_is_gone(owner: str, *, hostname: str | None = None) -> bool:
    """Whether ``owner`` (``{hostname}-{pid}``) names a process of this host that has ended."""
    host, _, pid = owner.rpartition("-")
    if host != (hostname or socket.gethostname()) or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    try:  # a zombie (killed, not yet waited for) runs no code any more
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def reap_orphans(*, docker_url: str | None = None) -> list[str]:
    """Remove every sandbox container whose owner process is gone; return their names.

    Blocking (docker SDK): call it through ``anyio.to_thread``. Raises ``DockerUnavailable``.
    """
    client = docker_client(docker_url)
    try:
        removed: list[str] = []
        # Sparse: no inspect per container, so one removed meanwhile (by another worker's
        # reaper, say) is no error.
        for container in client.containers.list(all=True, sparse=True,
                                                filters={"label": LABEL}):
            labels = container.attrs.get("Labels") or {}
            if owner_is_gone(labels.get(OWNER_LABEL, "")):
                _remove(container)
                names = container.attrs.get("Names") or [container.id[:12]]
                removed.append(names[0].lstrip("/"))
        return removed
    finally:
        client.close()
