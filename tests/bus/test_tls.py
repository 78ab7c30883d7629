"""TLS to NATS with a CA made in the test (openssl): clients and workers verify the server."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import ActorSystem, NatsServer, Worker
from transports import ConnectOptions

from .app import FAST, POOLS, Job, Tally

pytestmark = pytest.mark.anyio


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca_and_server_cert(d: Path) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            "/CN=heterarch test ca", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout",
            "server.key", "-out", "server.csr", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", "server.pem", cwd=d)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[NatsServer]:
    make_ca_and_server_cert(tmp_path)
    config = tmp_path / "nats.conf"
    config.write_text(f'tls {{\n  cert_file: "{tmp_path / "server.pem"}"\n'
                      f'  key_file: "{tmp_path / "server.key"}"\n  timeout: 5\n}}\n')
    server = NatsServer(config_file=config)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


async def test_workers_and_clients_over_tls(tls_server: NatsServer, tmp_path: Path) -> None:
    url = f"tls://127.0.0.1:{tls_server.port}"
    trusted = ConnectOptions(tls_ca_file=str(tmp_path / "ca.pem"))
    async with Worker(POOLS, ["cpu"], nats=url, options=trusted, namespace="tls", **FAST), \
            ActorSystem(nats=url, options=trusted, namespace="tls", **FAST) as system:
        tally = await system.spawn(Tally, pool="cpu")
        assert await tally.ask(Job("over tls"), timeout=10) == "over tls"
