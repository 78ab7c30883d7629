"""OpenTelemetry setup from the standard variables, a JSON-lines span file, content capture.

Tracing is off (no provider installed, no cost) unless something asks for it:

- ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (and
  ``OTEL_EXPORTER_OTLP_PROTOCOL`` = ``http/protobuf`` | ``grpc``), or ``--trace`` (the local
  Jaeger of ``compose/``: ``http://localhost:4318``);
- ``HETERARCH_TRACE_FILE=spans.jsonl`` (or ``jsonl_path=``): one JSON object per span, readable
  by ``heterarch trace show`` without Jaeger. Several processes may append to one file.

``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and
``OTEL_SDK_DISABLED`` work as everywhere. Each process is a service instance named after its
role (``cli``, ``worker-gpu``...). A bad setting never breaks a run: one warning, then the run
goes on (without that exporter).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

log = logging.getLogger("heterarch.tracing")

LOCAL_JAEGER = "http://localhost:4318"
JAEGER_UI = "http://localhost:16686"
PROTOCOLS = ("http/protobuf", "grpc")


class JsonLinesExporter(SpanExporter):
    """Appends each span as one JSON line (the file ``heterarch trace show`` reads)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_to_dict(s), default=str) + "\n" for s in spans)
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, lines.encode())
            finally:
                os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    parent = span.parent
    assert ctx is not None
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_span_id": f"{parent.span_id:016x}" if parent is not None else "",
        "name": span.name,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})}
                   for e in span.events],
        "service": span.resource.attributes.get("service.name", ""),
        "instance": span.resource.attributes.get("service.instance.id", ""),
    }


class TracingHandle:
    def __init__(self, provider: TracerProvider, endpoint: str | None, jsonl: Path | None):
        self.provider = provider
        self.endpoint = endpoint
        self.jsonl = jsonl

    def trace_url(self, trace_id: str) -> str | None:
        """The Jaeger link for a trace, when exporting to the local Jaeger."""
        if self.endpoint and ("localhost" in self.endpoint or "127.0.0.1" in self.endpoint):
            return f"{JAEGER_UI}/trace/{trace_id}"
        return None

    def shutdown(self) -> None:
        """Flush (bounded) and stop exporting."""
        self.provider.force_flush(timeout_millis=3000)
        self.provider.shutdown()


def _exporter(endpoint: str, protocol: str) -> SpanExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"),
                            timeout=2)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    url = endpoint if endpoint.rstrip("/").endswith("/v1/traces") else (
        endpoint.rstrip("/") + "/v1/traces")
    return OTLPSpanExporter(endpoint=url, timeout=2)


def configure_tracing(
    *,
    role: str = "cli",
    endpoint: str | None = None,
    protocol: str | None = None,
    jsonl_path: str | Path | None = None,
    service_name: str | None = None,
) -> TracingHandle | None:
    """Install a tracer provider for this process as configured; None when tracing is off."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    endpoint = (endpoint or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None)
    jsonl = jsonl_path or env.get("HETERARCH_TRACE_FILE") or None
    if endpoint is None and jsonl is None:
        return None
    protocol = (protocol or env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
    if protocol not in PROTOCOLS:
        log.warning("unknown OTLP protocol %r (use one of %s): using http/protobuf",
                    protocol, ", ".join(PROTOCOLS))
        protocol = "http/protobuf"
    resource = Resource.create({
        "service.name": service_name or env.get("OTEL_SERVICE_NAME") or "heterarch",
        "service.instance.id": f"{role}@{socket.gethostname()}:{os.getpid()}",
        "heterarch.role": role,
    })
    provider = _provider(resource)
    if endpoint is not None:
        try:
            provider.add_span_processor(BatchSpanProcessor(
                _exporter(endpoint, protocol), export_timeout_millis=3000))
        except Exception as exc:  # a malformed endpoint must not stop the run
            log.warning("tracing to %r disabled: %s", endpoint, exc)
            endpoint = None
    path = Path(jsonl) if jsonl is not None else None
    if path is not None:
        provider.add_span_processor(BatchSpanProcessor(JsonLinesExporter(path),
                                                       schedule_delay_millis=200))
    return TracingHandle(provider, endpoint, path)


def _provider(resource: Resource) -> TracerProvider:
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):  # set once per process (an OTel rule)
        return current
    provider = TracerProvider(resource=resource)
    trace.set_tracer_provider(provider)
    return provider
