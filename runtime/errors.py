"""Errors of the runtime (the engine). Actor-level errors live in ``actors.errors``."""

from __future__ import annotations

import difflib

from actors.errors import HeterarchError


class RuntimeConfigError(HeterarchError, ValueError):
    """A config file or option is wrong; the message says which and how to fix it."""


class NatsServerError(HeterarchError, RuntimeError):
    """The embedded nats-server could not be found or started."""


class PortInUse(NatsServerError, OSError):
    """A server (nats-server, the simulator) cannot listen: its port is taken."""

    def __init__(self, what: str, host: str, port: int, flag: str = "--port") -> None:
        self.what = what
        self.host = host
        self.port = port
        super().__init__(
            f"{what} cannot listen on {host}:{port}: address already in use (another {what} "
            f"still running? `ss -ltnp 'sport = :{port}'` shows who); choose another port with "
            f"{flag} PORT"
        )


class NoWorkerForPool(HeterarchError, LookupError):
    def __init__(self, pool: str, waited: float, known: list[str]) -> None:
        self.pool = pool
        self.waited = waited
        self.known = known
        pools = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"no live worker serves pool {pool!r} (waited {waited:.3g}s; pools with workers: "
            f"{pools}). Start one: `heterarch worker --pool {pool} --config pools.toml`"
        )


class UnknownPool(NoWorkerForPool):
    """No worker's config names the pool (a typo, say): raised at once, without waiting."""

    def __init__(self, pool: str, declared: list[str]) -> None:
        self.pool = pool
        self.waited = 0.0
        self.known = declared
        close = difflib.get_close_matches(pool, declared, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        HeterarchError.__init__(
            self,
            f"no pool {pool!r} in this cluster: {hint}the workers' configs declare "
            f"{', '.join(declared)}",
        )


class ClassNotServed(HeterarchError, PermissionError):
    def __init__(self, import_path: str, served: list[str]) -> None:
        self.import_path = import_path
        self.served = served
        super().__init__(
            f"refusing to instantiate {import_path!r}: this worker serves only actor classes from "
            f"modules {sorted(served)} (add the module to the pool's `modules` in the config)"
        )


class NodeFailed(HeterarchError, RuntimeError):
    """The node's own machinery failed; it closed (crash-only) so its supervisor restarts it."""

    def __init__(self, node_id: str, cause: BaseException) -> None:
        while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
            cause = cause.exceptions[0]  # the first task's own exception says what broke
        self.node_id = node_id
        self.cause = cause
        super().__init__(
            f"node {node_id} failed and closed: {type(cause).__name__}: {cause} "
            "(a bug in heterarch: please report it with the log above)"
        )


class ContextNotText(HeterarchError, ValueError):
    """A context given as bytes or a file is neither UTF-8 text nor a PNG/JPEG image: the
    agent would read it as mojibake. Decode it yourself (and pass a ``str``), or convert it."""

    def __init__(self, source: str, offset: int, reason: str) -> None:
        self.source = source
        self.offset = offset
        super().__init__(
            f"the context {source} is not UTF-8 text (byte {offset:,}: {reason}) nor a PNG/JPEG "
            "image; an RLM reads text: decode or convert it first (e.g. pdftotext), or pass a "
            "str you decoded yourself")
