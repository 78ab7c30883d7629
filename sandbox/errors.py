"""Errors of the sandbox package. One root: ``SandboxError``."""

from __future__ import annotations

from heterarch import HeterarchError


class SandboxError(HeterarchError):
    """Root of every sandbox error."""


class SandboxUnavailable(SandboxError):
    """The backend cannot run (no Docker engine, no image)."""


class DockerUnavailable(SandboxUnavailable):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"Docker is not available ({reason}). Start the Docker engine (and build the image "
            "with `heterarch sandbox build`), or - for trusted code only - use ProcessSandbox, "
            "which does not isolate anything."
        )


class ImageMissing(SandboxUnavailable):
    def __init__(self, image: str) -> None:
        self.image = image
        super().__init__(f"sandbox image {image!r} not found: run `heterarch sandbox build`")


class SandboxClosed(SandboxError):
    def __init__(self) -> None:
        super().__init__("the sandbox is closed (or was never started): `await sandbox.start()`")


class SandboxCrashed(SandboxError):
    """The REPL process died or broke the protocol; the sandbox restarted it, state is lost."""

    def __init__(self, reason: str, *, state_lost: bool = True) -> None:
        self.reason = reason
        self.state_lost = state_lost
        super().__init__(f"the sandbox failed ({reason}); it was restarted and its state is lost")


class SandboxOOM(SandboxCrashed):
    def __init__(self, limit: str) -> None:
        SandboxError.__init__(
            self, f"the cell ran out of memory (limit {limit}); the sandbox was restarted and "
            "its state is lost"
        )
        self.reason = "out of memory"
        self.state_lost = True


class SandboxTimeout(SandboxError, TimeoutError):
    def __init__(self, timeout: float, *, state_lost: bool) -> None:
        self.timeout = timeout
        self.state_lost = state_lost
        lost = "; the sandbox was restarted and its state is lost" if state_lost else ""
        super().__init__(f"the cell did not finish within {timeout:g}s{lost}")


class SandboxRequestError(SandboxError):
    """The server refused a request (unknown variable, value not JSON-able, ...)."""

    def __init__(self, error_type: str, message: str) -> None:
        self.error_type = error_type
        super().__init__(f"{error_type}: {message}")
