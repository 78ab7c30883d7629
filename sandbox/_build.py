"""Build the sandbox image: from ``python:3.11-slim``, or offline from a local Debian root fs.

The tag carries a hash of the REPL server and the extra packages, so a changed server gets a
new image and ``--if-missing`` rebuilds exactly when needed.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import DockerUnavailable, SandboxError

HERE = Path(__file__).resolve().parent
SERVER = HERE / "_server.py"
VISION = HERE / "heterarch_vision.py"  # the REPL's image helpers (imported by the RLM prelude)
IMAGE_DIR = HERE / "image"
REPOSITORY = "heterarch-sandbox"
SUITE = "bookworm"


def image_tag(packages: Sequence[str] = ()) -> str:
    digest = hashlib.sha256(SERVER.read_bytes())
    digest.update(VISION.read_bytes())
    for path in sorted(IMAGE_DIR.iterdir()):
        digest.update(path.read_bytes())
    digest.update("\n".join(sorted(packages)).encode())
    return f"{REPOSITORY}:{digest.hexdigest()[:12]}"


DEFAULT_IMAGE = image_tag()


class ImageBuildError(SandboxError):
    pass


def _client() -> object:
    from ._docker import docker_client

    return docker_client()


def image_exists(tag: str = DEFAULT_IMAGE) -> bool:
    import docker.errors

    client = _client()
    try:
        client.images.get(tag)  # type: ignore[attr-defined]
        return True
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()  # type: ignore[attr-defined]


def _context_tar(dockerfile: str) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(IMAGE_DIR / dockerfile), arcname="Dockerfile")
        tar.add(str(SERVER), arcname="server.py")
        tar.add(str(VISION), arcname="heterarch_vision.py")
    buf.seek(0)
    return buf


def _build(client: object, dockerfile: str, tag: str, buildargs: dict[str, str],
           progress: Callable[[str], None]) -> None:
    import docker.errors

    try:
        for chunk in client.api.build(  # type: ignore[attr-defined]
            fileobj=_context_tar(dockerfile), custom_context=True, tag=tag, rm=True, forcerm=True,
            buildargs=buildargs, decode=True, labels={"heterarch.sandbox.image": "1"},
        ):
            if "error" in chunk:
                raise ImageBuildError(str(chunk["error"]).strip())
            line = str(chunk.get("stream", "")).strip()
            if line.startswith("Step"):
                progress(f"  {line}")
    except docker.errors.APIError as exc:
        raise ImageBuildError(str(exc)) from None


def _debian_packages(packages: Sequence[str]) -> list[str]:
    names = ["python3", "python3-pil"]  # Pillow: the REPL's image helpers
    for p in packages:
        name = p.lower().replace("_", "-")
        names.append(name if name.startswith("python3-") else f"python3-{name}")
    return names


def build_offline(tag: str, packages: Sequence[str], progress: Callable[[str], None]) -> None:
    """mmdebstrap a minimal Debian with python3 from this machine's apt sources, import, build."""
    if shutil.which("mmdebstrap") is None:
        raise ImageBuildError(
            "the offline build needs mmdebstrap: `apt-get install mmdebstrap` (or build online "
            "where python:3.11-slim can be pulled)"
        )
    client = _client()
    base = f"{REPOSITORY}-base:{tag.split(':')[1]}"
    with tempfile.TemporaryDirectory(prefix="heterarch-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        include = ",".join(_debian_packages(packages))
        progress(f"making a Debian {SUITE} root fs with {include} (mmdebstrap, ~20 s)")
        done = subprocess.run(
            ["mmdebstrap", "--variant=minbase", f"--include={include}", "--mode=root",
             "--quiet", SUITE, str(rootfs)],
            capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise ImageBuildError(f"mmdebstrap failed: {done.stderr.strip()[-2000:]}")
        progress(f"importing it as {base}")
        repository, base_tag = base.split(":")
        client.api.import_image(  # type: ignore[attr-defined]
            src=str(rootfs), repository=repository, tag=base_tag
        )
    progress(f"building {tag}")
    _build(client, "Dockerfile.offline", tag, {"BASE": base}, progress)
    client.close()  # type: ignore[attr-defined]


def build_online(tag: str, packages: Sequence[str], progress: Callable[[str], None]) -> None:
    client = _client()
    try:
        progress("pulling python:3.11-slim")
        client.images.pull("python", tag="3.11-slim")  # type: ignore[attr-defined]
        progress(f"building {tag}")
        _build(client, "Dockerfile", tag, {"PACKAGES": " ".join(packages)}, progress)
    finally:
        client.close()  # type: ignore[attr-defined]


def build_image(
    *,
    offline: bool | None = None,
    if_missing: bool = False,
    packages: Sequence[str] = (),
    tag: str | None = None,
    progress: Callable[[str], None] = print,
) -> str:
    """Build the sandbox image and return its tag.

    ``offline=None`` tries the slim image first and falls back to the offline build when the
    base image cannot be pulled. ``packages`` are extra Python packages (``numpy``, ``regex``).
    """
    tag = tag or image_tag(packages)
    if if_missing and image_exists(tag):
        progress(f"{tag} exists")
        return tag
    if offline is not True:
        try:
            build_online(tag, packages, progress)
            return tag
        except DockerUnavailable:
            raise
        except Exception as exc:
            if offline is False:
                raise ImageBuildError(f"online build failed: {exc}") from None
            progress(f"cannot pull the base image ({str(exc).splitlines()[0][:120]}); "
                     "building offline")
    build_offline(tag, packages, progress)
    return tag
