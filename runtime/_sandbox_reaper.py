"""A worker's share of keeping Docker clean: remove sandboxes whose owner process is gone."""

from __future__ import annotations

import logging

import anyio
from docker.errors import DockerException

from sandbox import DockerUnavailable, SandboxError, reap_orphans

log = logging.getLogger("heterarch.sandbox")

#: How often a worker with Docker sandboxes looks for orphans (it also looks when it starts).
REAP_INTERVAL_S = 30.0


async def reap_sandboxes_forever(interval: float = REAP_INTERVAL_S) -> None:
    """Remove orphaned sandbox containers now and every ``interval`` seconds.

    Orphans are left by processes that died without closing their sandboxes (``kill -9``);
    see ``sandbox.reap_orphans``. Without a Docker engine there is nothing to reap: it returns.
    """
    while True:
        try:
            removed = await anyio.to_thread.run_sync(reap_orphans)
        except DockerUnavailable as exc:
            log.info("not reaping sandboxes: %s", exc)
            return
        except (SandboxError, OSError, DockerException) as exc:  # try again later
            log.warning("could not reap sandboxes: %s", exc)
        else:
            if removed:
                log.warning("removed %d sandbox container(s) whose owner is gone: %s",
                            len(removed), ", ".join(removed))
        await anyio.sleep(interval)
