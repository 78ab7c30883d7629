"""The embedded nats-server fsyncs JetStream at least every second (docs/bus.md "Durability")."""

from __future__ import annotations

import json
import urllib.request

from runtime import NatsServer
from runtime._nats_server import free_port


def _jetstream_config(server: NatsServer) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/varz", timeout=10) as r:
        config: dict[str, object] = json.loads(r.read())["jetstream"]["config"]
    return config


def test_the_embedded_server_syncs_every_second() -> None:
    with NatsServer(http_port=free_port()) as server:
        assert _jetstream_config(server)["sync_interval"] == 1_000_000_000  # ns


def test_sync_always_can_be_asked_for() -> None:
    with NatsServer(http_port=free_port(), sync_interval="always") as server:
        config = _jetstream_config(server)
        assert config["sync_always"] is True, config
