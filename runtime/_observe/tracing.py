"""OpenTelemetry setup from the standard variables, a JSON-lines span file, content capture.

Tracing is off (no provider installed, no cost) unless something asks for it:

- ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` (with
  ``OTEL_EXPORTER_OTLP_PROTOCOL`` = ``http/protobuf`` | ``grpc``), or ``--trace`` (the local
  Jaeger of ``compose/``: ``http://localhost:4318``, see :data:`LOCAL_JAEGER`);
- ``HETERARCH_TRACE_FILE=spans.jsonl`` (or ``jsonl_path=``): one JSON object per span, readable
  by ``heterarch trace show`` without Jaeger. Several processes may append to one file.

``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` (+ ``_ARG``) and
``OTEL_SDK_DISABLED`` work as everywhere. Each process is a service instance named after its
role (``cli``, ``worker-gpu``...). A bad setting never breaks a run: one warning on the
``heterarch.tracing`` logger, then the run goes on (without that exporter).

OpenTelemetry lets a process set its global tracer provider once. ``configure_tracing`` installs
one provider with a switchable span processor the first time and swaps exporters behind it on
later calls, so it can be called again (tests, a CLI that re-configures); the resource (service
name, instance id) stays the one of the first call.
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
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from actors._semconv import (
    ATTR_ACTOR_ID,
    ATTR_COST_USD,
    ATTR_DEPTH,
    ATTR_GENAI_AGENT_ID,
    ATTR_GENAI_AGENT_NAME,
    ATTR_GENAI_INPUT_MESSAGES,
    ATTR_GENAI_INPUT_TOKENS,
    ATTR_GENAI_OPERATION,
    ATTR_GENAI_OUTPUT_MESSAGES,
    ATTR_GENAI_OUTPUT_TOKENS,
    ATTR_GENAI_PROVIDER,
    ATTR_GENAI_REQUEST_MODEL,
    ATTR_GENAI_TOOL_NAME,
    ATTR_HARDWARE,
    ATTR_PARENT_ID,
    ATTR_POOL,
    ATTR_ROLE,
    ATTR_ROUTE_REASON,
    CAPTURE_CONTENT_ENV,
    content_capture_enabled,
    set_content_capture,
    truncate_content,
)

log = logging.getLogger("heterarch.tracing")

ATTR_POOLS = "heterarch.pools"
"""Resource attribute of a worker process: the pools it serves, comma-separated."""

LOCAL_JAEGER = "http://localhost:4318"
"""What ``--trace`` means: OTLP/HTTP to the Jaeger of ``compose/``."""
JAEGER_UI = "http://localhost:16686"
PROTOCOLS = ("http/protobuf", "grpc")
TRACE_FILE_ENV = "HETERARCH_TRACE_FILE"
TRACE_UI_ENV = "HETERARCH_TRACE_UI"
"""The trace UI that receives this process's spans, as a link with ``{trace_id}`` (e.g.
Phoenix's); unset: the local Jaeger's, only when it answers."""
EXPORT_TIMEOUT_S = 2.0
"""Per export request; the OTLP exporters retry within it, so a dead collector costs ~this."""
FLUSH_TIMEOUT_MS = 3000


# --------------------------------------------------------------------------- the span file


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    """One span as the JSON object of the span file."""
    ctx = span.get_span_context()
    parent = span.parent
    assert ctx is not None
    res = span.resource.attributes
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_span_id": f"{parent.span_id:016x}" if parent is not None else "",
        "name": span.name,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "status_description": span.status.description or "",
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "time_ns": e.timestamp,
                    "attributes": dict(e.attributes or {})} for e in span.events],
        "links": [{"trace_id": f"{link.context.trace_id:032x}",
                   "span_id": f"{link.context.span_id:016x}",
                   "attributes": dict(link.attributes or {})} for link in span.links],
        "service": res.get("service.name", ""),
        "instance": res.get("service.instance.id", ""),
    }


class JsonLinesExporter(SpanExporter):
    """Appends each span as one JSON line (the file ``heterarch trace show`` reads).

    One ``O_APPEND`` write per batch, so processes sharing a file do not tear each other's lines.
    """

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


# --------------------------------------------------------------------------- exporters


class _GuardedExporter(SpanExporter):
    """Never raises, and says once (not per batch, no traceback) that spans are not arriving."""

    def __init__(self, inner: SpanExporter, where: str) -> None:
        self.inner = inner
        self.where = where
        self._warned = False
        self.delivered = 0  # batches the receiver accepted
        self.failed = 0     # batches lost

    def _warn(self, reason: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("spans not delivered to %s (%s); the run goes on without them",
                        self.where, reason)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # an exporter bug must not reach the SDK's traceback logging
            self.failed += 1
            self._warn(f"{type(exc).__name__}: {exc}")
            return SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.failed += 1
            self._warn("is the collector running?")
        else:
            self.delivered += 1
        return result

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return self.inner.force_flush(timeout_millis)
        except Exception:
            return False

    def shutdown(self) -> None:
        try:
            self.inner.shutdown()
        except Exception as exc:
            self._warn(f"shutdown failed: {exc}")


def _quiet_exporter_logs() -> None:
    # The OTLP exporters log every retry and failure; _GuardedExporter reports once instead.
    # Leave alone a level the user set.
    for name in ("opentelemetry.exporter.otlp", "opentelemetry.sdk._shared_internal"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.CRITICAL)


def _check_endpoint(endpoint: str, protocol: str) -> str | None:
    """Why ``endpoint`` cannot be used, or None when it looks fine."""
    parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    if "://" in endpoint and parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme!r} is not http or https"
    if "://" not in endpoint and protocol != "grpc":
        return "no http:// or https:// scheme"
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        return str(exc)
    if not host:
        return "no host"
    del port
    return None


def _otlp_exporter(endpoint: str, protocol: str) -> SpanExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        insecure = not endpoint.startswith("https://")
        return GrpcExporter(endpoint=endpoint, insecure=insecure, timeout=EXPORT_TIMEOUT_S)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    url = endpoint if endpoint.rstrip("/").endswith("/v1/traces") else (
        endpoint.rstrip("/") + "/v1/traces")
    return OTLPSpanExporter(endpoint=url, timeout=EXPORT_TIMEOUT_S)


# --------------------------------------------------------------------------- the provider


class _Switch(SpanProcessor):
    """The one processor on the global provider; the exporting processors behind it change."""

    def __init__(self) -> None:
        self.processors: tuple[SpanProcessor, ...] = ()

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        for p in self.processors:
            p.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for p in self.processors:
            p.on_end(span)

    def shutdown(self) -> None:
        old, self.processors = self.processors, ()
        for p in old:
            _shutdown_quietly(p)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(p.force_flush(timeout_millis) for p in self.processors)


_switch_lock = threading.Lock()
_switch: _Switch | None = None


def _shutdown_quietly(processor: SpanProcessor) -> None:
    try:
        processor.force_flush(FLUSH_TIMEOUT_MS)
        processor.shutdown()
    except Exception as exc:  # shutdown must never print a traceback or fail the run
        log.warning("tracing shutdown: %s", exc)


def _install(resource: Resource, processors: tuple[SpanProcessor, ...]) -> _Switch:
    """Put ``processors`` behind the process's switch, installing provider + switch once."""
    global _switch
    with _switch_lock:
        if _switch is None:
            switch = _Switch()
            current = trace.get_tracer_provider()
            if isinstance(current, TracerProvider):  # the application installed its own
                current.add_span_processor(switch)
            else:
                provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER
                provider.add_span_processor(switch)
                trace.set_tracer_provider(provider)
            _switch = switch
        old, _switch.processors = _switch.processors, processors
    for p in old:
        _shutdown_quietly(p)
    return _switch


class TracingHandle:
    """What ``configure_tracing`` set up; ``shutdown()`` flushes (bounded) and stops exporting.

    A handle with ``enabled`` False (tracing off) does nothing, at no cost.
    """

    def __init__(self, *, enabled: bool = False, endpoint: str | None = None,
                 protocol: str | None = None, jsonl: Path | None = None,
                 service_name: str | None = None, instance_id: str | None = None,
                 processors: tuple[SpanProcessor, ...] = (),
                 otlp: _GuardedExporter | None = None) -> None:
        self.enabled = enabled
        self._otlp = otlp
        self.endpoint = endpoint
        self.protocol = protocol
        self.jsonl = jsonl
        self.service_name = service_name
        self.instance_id = instance_id
        self._processors = processors

    def __repr__(self) -> str:
        if not self.enabled:
            return "TracingHandle(enabled=False)"
        return (f"TracingHandle(endpoint={self.endpoint!r}, protocol={self.protocol!r}, "
                f"jsonl={str(self.jsonl) if self.jsonl else None!r})")

    def trace_url(self, trace_id: str) -> str | None:
        """The link to a trace, only when every batch so far reached the collector (call
        after ``force_flush()``): ``$HETERARCH_TRACE_UI`` with the id in it, else the local
        Jaeger's, when the collector is on this machine and Jaeger's UI answers; else None."""
        otlp = self._otlp
        if otlp is None or otlp.delivered == 0 or otlp.failed:
            return None
        template = os.environ.get(TRACE_UI_ENV, "").strip()
        if template:
            return (template.replace("{trace_id}", trace_id) if "{trace_id}" in template
                    else f"{template.rstrip('/')}/{trace_id}")
        host = urlsplit(self.endpoint).hostname if self.endpoint else None
        if host not in ("localhost", "127.0.0.1", "::1") or not _jaeger_answers():
            return None  # spans went to another receiver: no link that leads nowhere
        return f"{JAEGER_UI}/trace/{trace_id}"

    def delivery_note(self) -> str:
        """One line on where this process's spans went (for the end of a CLI run)."""
        parts = []
        if self._otlp is not None:
            otlp = self._otlp
            state = ("delivered" if otlp.delivered and not otlp.failed else
                     "NOT delivered (is the collector running?)" if otlp.failed else
                     "nothing exported yet")
            parts.append(f"{self.endpoint}: {state}")
        if self.jsonl is not None:
            parts.append(f"span file {self.jsonl}")
        return "; ".join(parts)

    def force_flush(self, timeout_millis: int = FLUSH_TIMEOUT_MS) -> bool:
        return all(p.force_flush(timeout_millis) for p in self._processors)

    def shutdown(self) -> None:
        """Flush (bounded by the export timeout) and stop this handle's exporters."""
        processors, self._processors = self._processors, ()
        if not processors:
            return
        with _switch_lock:
            if _switch is not None and _switch.processors == processors:
                _switch.processors = ()
        for p in processors:
            _shutdown_quietly(p)


def _jaeger_answers(timeout: float = 1.0) -> bool:
    """Whether the local Jaeger's query API answers (its UI is where the link would lead)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{JAEGER_UI}/api/services", timeout=timeout) as response:
            return int(response.status) == 200
    except (OSError, ValueError):
        return False


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def configure_tracing(
    *,
    service_name: str | None = None,
    role: str = "cli",
    pools: Sequence[str] = (),
    endpoint: str | None = None,
    protocol: str | None = None,
    jsonl_path: str | Path | None = None,
    capture_content: bool | None = None,
) -> TracingHandle:
    """Set up tracing for this process from the arguments and the ``OTEL_*`` variables.

    Arguments win over the environment. ``endpoint``: an OTLP collector (``--trace`` passes
    :data:`LOCAL_JAEGER`); ``protocol``: ``http/protobuf`` (default) or ``grpc``;
    ``jsonl_path``: also write every span to this file (``HETERARCH_TRACE_FILE``);
    ``capture_content``: put prompts, replies and code on spans (default: the variable
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``). ``role`` (``cli``, ``worker``)
    names the service: ``service.name`` = ``heterarch-{role}`` unless ``OTEL_SERVICE_NAME`` or
    ``service_name`` say otherwise, ``service.namespace`` = ``heterarch``, ``heterarch.role``;
    ``pools`` (a worker's) go in ``heterarch.pools`` and the instance id
    (``service.instance.id`` = ``worker-wafer-h100@host:pid``).

    Never raises for bad configuration: it logs one warning and leaves that exporter out.
    Returns a handle whose ``shutdown()`` the caller runs at exit; ``handle.enabled`` is False
    when tracing is off (nothing installed).

    Example::

        handle = configure_tracing(role="worker", pools=["gpu"], endpoint=LOCAL_JAEGER)
        try:
            ...
        finally:
            handle.shutdown()
    """
    env = os.environ
    set_content_capture(capture_content)
    if _env_flag("OTEL_SDK_DISABLED"):
        return _off()
    endpoint = (endpoint or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None)
    jsonl = jsonl_path or env.get(TRACE_FILE_ENV) or None
    if endpoint is None and jsonl is None:
        return _off()
    protocol = (protocol or env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip().lower()
    if protocol not in PROTOCOLS:
        log.warning("unknown OTLP protocol %r (use one of %s): using http/protobuf",
                    protocol, ", ".join(PROTOCOLS))
        protocol = "http/protobuf"

    processors: list[SpanProcessor] = []
    otlp: _GuardedExporter | None = None
    if endpoint is not None:
        endpoint = endpoint.strip()
        problem = _check_endpoint(endpoint, protocol)
        if problem is None:
            try:
                exporter = _GuardedExporter(_otlp_exporter(endpoint, protocol), endpoint)
            except Exception as exc:  # the exporter's own validation
                problem = f"{type(exc).__name__}: {exc}"
            else:
                _quiet_exporter_logs()
                otlp = exporter
                processors.append(BatchSpanProcessor(exporter, schedule_delay_millis=1000,
                                                     export_timeout_millis=FLUSH_TIMEOUT_MS))
        if problem is not None:
            log.warning("tracing to %r disabled: %s", endpoint, problem)
            endpoint = None
    path: Path | None = None
    if jsonl is not None:
        path = Path(jsonl)
        try:
            exporter_file = JsonLinesExporter(path)
        except OSError as exc:
            log.warning("span file %s disabled: %s", path, exc)
            path = None
        else:
            processors.append(BatchSpanProcessor(
                _GuardedExporter(exporter_file, str(path)), schedule_delay_millis=200))
    if not processors:
        return _off()

    instance = "-".join([role, *pools]) + f"@{socket.gethostname()}:{os.getpid()}"
    attributes: dict[str, str] = {"service.instance.id": instance, ATTR_ROLE: role,
                                  "service.namespace": "heterarch"}
    if pools:
        attributes[ATTR_POOLS] = ",".join(pools)
    if service_name:
        attributes["service.name"] = service_name
    resource = Resource.create(attributes)  # + OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
    name = str(resource.attributes.get("service.name", ""))
    if not name or name.startswith("unknown_service"):
        name = f"heterarch-{role}"
        resource = resource.merge(Resource({"service.name": name}))
    _install(resource, tuple(processors))
    return TracingHandle(enabled=True, endpoint=endpoint, protocol=protocol, jsonl=path,
                         service_name=name, instance_id=instance,
                         processors=tuple(processors), otlp=otlp)


def _off() -> TracingHandle:
    # Tracing off; a provider from an earlier call in this process stops exporting.
    with _switch_lock:
        old = _switch.processors if _switch is not None else ()
        if _switch is not None:
            _switch.processors = ()
    for p in old:
        _shutdown_quietly(p)
    return TracingHandle(enabled=False)


__all__ = (
    "ATTR_ACTOR_ID", "ATTR_COST_USD", "ATTR_DEPTH", "ATTR_GENAI_AGENT_ID",
    "ATTR_GENAI_AGENT_NAME", "ATTR_GENAI_INPUT_MESSAGES", "ATTR_GENAI_INPUT_TOKENS",
    "ATTR_GENAI_OPERATION", "ATTR_GENAI_OUTPUT_MESSAGES", "ATTR_GENAI_OUTPUT_TOKENS",
    "ATTR_GENAI_PROVIDER", "ATTR_GENAI_REQUEST_MODEL", "ATTR_GENAI_TOOL_NAME", "ATTR_HARDWARE",
    "ATTR_PARENT_ID", "ATTR_POOL", "ATTR_POOLS", "ATTR_ROLE", "ATTR_ROUTE_REASON",
    "CAPTURE_CONTENT_ENV",
    "JAEGER_UI", "LOCAL_JAEGER", "PROTOCOLS", "TRACE_UI_ENV", "JsonLinesExporter",
    "TracingHandle",
    "configure_tracing", "content_capture_enabled", "span_to_dict", "truncate_content",
)
