"""Tracing across processes, to a real OTLP/HTTP receiver and to the span file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from heterarch.cli.trace_show import build_tree, load_spans_jsonl, render_text
from heterarch.sim.simulator import Profile, serve_in_thread

ROOT = Path(__file__).resolve().parents[2]


class Receiver:
    """A local OTLP/HTTP collector that decodes what the real exporter sends."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.resources: list[Any] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for rs in request.resource_spans:
                    receiver.resources.append(rs.resource)
                    for ss in rs.scope_spans:
                        receiver.spans.extend(ss.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def simulator_url() -> Iterator[str]:
    """A simulator in a thread of its own (the traced app is another process)."""
    with serve_in_thread({"m": Profile("m", "wafer-scale", 0.0, 1e6, 8, 1.0, 1.0, 1)}) as url:
        yield url


def _run_app(simulator_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "HETERARCH_"))}
    return subprocess.run(
        [sys.executable, "-m", "tests.tracing.traced_app", simulator_url],
        cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=120,
    )


def test_otlp_http_export_to_a_real_receiver(simulator_url: str) -> None:
    with Receiver() as receiver:
        done = _run_app(simulator_url, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
                        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    assert done.returncode == 0, done.stderr
    names = [s.name for s in receiver.spans]
    assert "invoke_agent test-root" in names
    assert "invoke_agent Worker" in names
    assert "chat m" in names
    by_id = {s.span_id: s for s in receiver.spans}
    root = next(s for s in receiver.spans if s.name == "invoke_agent test-root")
    for span in receiver.spans:
        assert span.trace_id == root.trace_id  # one trace
        if span is not root:
            assert span.parent_span_id in by_id  # every parent resolves in the trace
    chat = next(s for s in receiver.spans if s.name == "chat m")
    attrs = {a.key: a.value for a in chat.attributes}
    assert attrs["gen_ai.operation.name"].string_value == "chat"
    assert attrs["gen_ai.usage.input_tokens"].int_value > 0
    assert attrs["heterarch.hardware"].string_value == "wafer-scale"
    assert "gen_ai.input.messages" not in attrs  # content capture is off by default


def test_content_capture_opt_in_and_span_file(simulator_url: str, tmp_path: Path) -> None:
    spans_file = tmp_path / "spans.jsonl"
    done = _run_app(simulator_url, HETERARCH_TRACE_FILE=str(spans_file),
                    OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true")
    assert done.returncode == 0, done.stderr
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    chat = next(s for s in spans if s["name"] == "chat m")
    assert "the secret prompt text" in chat["attributes"]["gen_ai.input.messages"]
    text = render_text(build_tree(load_spans_jsonl(spans_file, spans[0]["trace_id"][:8])))
    assert "invoke_agent test-root" in text and "chat m" in text and "tok" in text


def test_bad_tracing_config_never_breaks_a_run(simulator_url: str) -> None:
    done = _run_app(simulator_url, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
                    OTEL_EXPORTER_OTLP_PROTOCOL="carrier-pigeon")
    assert done.returncode == 0, done.stderr
    assert "run complete" in done.stdout
    assert "unknown OTLP protocol" in done.stderr
    assert "Traceback" not in done.stderr
