"""Run untrusted Python in a stateful REPL that calls back to its host."""

from ._build import DEFAULT_IMAGE as DEFAULT_IMAGE
from ._build import build_image as build_image
from ._build import image_exists as image_exists
from ._build import image_tag as image_tag
from ._contract import CellError as CellError
from ._contract import ExecResult as ExecResult
from ._contract import Sandbox as Sandbox
from ._docker import LABEL as LABEL
from ._docker import OWNER_LABEL as OWNER_LABEL
from ._docker import DockerSandbox as DockerSandbox
from ._docker import default_owner as default_owner
from ._docker import reap_leftovers as reap_leftovers
from ._pool import SandboxPool as SandboxPool
from ._process import ProcessSandbox as ProcessSandbox
from ._reap import reap_orphans as reap_orphans
from .errors import DockerUnavailable as DockerUnavailable
from .errors import ImageMissing as ImageMissing
from .errors import SandboxClosed as SandboxClosed
from .errors import SandboxCrashed as SandboxCrashed
from .errors import SandboxError as SandboxError
from .errors import SandboxOOM as SandboxOOM
from .errors import SandboxRequestError as SandboxRequestError
from .errors import SandboxTimeout as SandboxTimeout
from .errors import SandboxUnavailable as SandboxUnavailable

__all__ = (
    "DEFAULT_IMAGE",
    "LABEL",
    "OWNER_LABEL",
    "CellError",
    "DockerSandbox",
    "DockerUnavailable",
    "ExecResult",
    "ImageMissing",
    "ProcessSandbox",
    "Sandbox",
    "SandboxClosed",
    "SandboxCrashed",
    "SandboxError",
    "SandboxOOM",
    "SandboxPool",
    "SandboxRequestError",
    "SandboxTimeout",
    "SandboxUnavailable",
    "build_image",
    "default_owner",
    "image_exists",
    "image_tag",
    "reap_leftovers",
    "reap_orphans",
)
