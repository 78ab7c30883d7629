"""Trace context in envelope headers (W3C traceparent), at no cost when tracing is off."""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

tracer = trace.get_tracer("heterarch")


def tracing_enabled() -> bool:
    """True once a real tracer provider is installed (by ``configure_tracing`` or the user)."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def inject_headers(headers: dict[str, str] | None = None, *,
                   context: otel_context.Context | None = None) -> dict[str, str]:
    """The trace context (``context``, else the current one) as headers; empty when tracing is
    off or no span is active."""
    carrier: dict[str, str] = {} if headers is None else headers
    if tracing_enabled():
        propagate.inject(carrier, context=context)
    return carrier


def extract_context(headers: dict[str, str]) -> otel_context.Context | None:
    if not headers or "traceparent" not in headers:
        return None
    ctx: Any = propagate.extract(headers)
    return ctx  # type: ignore[no-any-return]
