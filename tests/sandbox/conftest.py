"""Sandboxes on the real Docker engine (image built locally) and as a local process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import docker
import pytest

from sandbox import OWNER_LABEL, DockerSandbox, ProcessSandbox, Sandbox, build_image, default_owner


@pytest.fixture(scope="session")
def sandbox_image() -> Iterator[str]:
    yield build_image(if_missing=True, progress=lambda line: None)
    client = docker.from_env()
    try:  # nothing this test process started may outlive the suite
        leftovers = client.containers.list(
            all=True, filters={"label": f"{OWNER_LABEL}={default_owner()}"})
        for container in leftovers:
            container.remove(force=True)
        assert not leftovers, f"sandbox containers leaked: {[c.name for c in leftovers]}"
    finally:
        client.close()


@pytest.fixture(params=["docker", "process"])
async def any_sandbox(request: pytest.FixtureRequest, sandbox_image: str) -> AsyncIterator[
    Sandbox
]:
    sb: Sandbox = DockerSandbox(image=sandbox_image) if request.param == "docker" else (
        ProcessSandbox()
    )
    yield sb
    await sb.close()


@pytest.fixture
async def docker_sandbox(sandbox_image: str) -> AsyncIterator[DockerSandbox]:
    sb = DockerSandbox(image=sandbox_image, memory="256m")
    await sb.start()
    yield sb
    await sb.close()
