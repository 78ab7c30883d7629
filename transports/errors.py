"""Errors raised by transports. One root, typed attributes, fixed messages."""

from __future__ import annotations

from heterarch import HeterarchError


class TransportError(HeterarchError):
    """Root of every error a transport raises."""


class NotConnected(TransportError):
    def __init__(self, what: str = "transport") -> None:
        super().__init__(f"{what} is not connected: call `await transport.connect()` first")


class ConnectFailed(TransportError):
    def __init__(self, servers: list[str], reason: str) -> None:
        self.servers = [redact_url(s) for s in servers]
        self.reason = reason
        if "authorization" in reason.lower() or "authentication" in reason.lower():
            fix = ("Check the user and password (or token, creds file) in the URL or "
                   "$HETERARCH_NATS_URL against the server's accounts.")
        else:
            fix = ("Start one with `heterarch nats` or "
                   "`docker compose -f compose/docker-compose.yml up`.")
        super().__init__(
            f"could not connect to NATS at {', '.join(self.servers)}: {reason}. {fix}"
        )


def redact_url(url: str) -> str:
    """``url`` with any password (or token in the user part) replaced by ``***``."""
    scheme, sep, rest = url.rpartition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{sep}{user}:***@{host}" if colon else f"{scheme}{sep}***@{host}"


class NoResponders(TransportError):
    """Nobody subscribes to the subject a request went to."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(f"no responders on {subject!r}")


class RequestTimeout(TransportError, TimeoutError):
    def __init__(self, subject: str, timeout: float) -> None:
        self.subject = subject
        self.timeout = timeout
        super().__init__(f"no reply on {subject!r} within {timeout:.3g}s")


class BlobNotFound(TransportError, KeyError):
    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"blob {ref!r} not found (expired or never stored)")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class InvalidSubject(TransportError, ValueError):
    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(
            f"invalid subject {subject!r}: use non-empty tokens of letters, digits, '-', '_' "
            "separated by '.', no spaces"
        )
