"""``ConnectOptions``: how ``NatsTransport`` reaches and authenticates with NATS."""

from __future__ import annotations

import ssl
from typing import Any

import msgspec

DEFAULT_INBOX_PREFIX = "_INBOX"


class ConnectOptions(msgspec.Struct, kw_only=True):
    """How to reach and authenticate with NATS. Every field is optional.

    ``servers`` is a list of URLs (``nats://``, ``tls://``); ``user``/``password``, ``token``,
    ``nkeys_seed`` (a file) or ``creds_file`` (a ``.creds`` file) authenticate; TLS comes from
    ``tls_ca_file``/``tls_cert_file``/``tls_key_file`` (or ``tls_context``). The client
    reconnects forever by default and buffers up to ``pending_size`` bytes of publishes while
    disconnected.

    ``replicas`` is how many servers keep each JetStream stream and bucket heterarch creates
    (spawn queues, registry, blobs): ``0`` (the default) means as many as the cluster has, at
    most 3, and 1 on a single server. ``inbox_prefix`` is where replies to this client's
    requests arrive: by default ``_INBOX_{user}`` when a user is named (in ``user`` or the
    URL), as the permissions that heterarch generates require, else ``_INBOX``.
    """

    servers: list[str] = msgspec.field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    name: str = "heterarch"
    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkeys_seed: str | None = None
    creds_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_hostname: str | None = None
    tls_context: Any = None
    connect_timeout: float = 2.0
    max_reconnect_attempts: int = -1
    reconnect_time_wait: float = 0.25
    ping_interval: float = 20.0
    pending_size: int = 64 * 1024 * 1024
    blob_max_age_s: float = 24 * 3600.0
    replicas: int = 0
    inbox_prefix: str = DEFAULT_INBOX_PREFIX

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.tls_context is not None:
            ctx: ssl.SSLContext = self.tls_context
            return ctx
        if not (self.tls_ca_file or self.tls_cert_file):
            if any(s.startswith("tls://") for s in self.servers):
                return ssl.create_default_context()
            return None
        ctx = ssl.create_default_context(cafile=self.tls_ca_file)
        if self.tls_cert_file:
            ctx.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        return ctx
