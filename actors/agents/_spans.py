"""Span helpers shared by the built-in agents and the runtime (the OpenTelemetry API only:
everything here is a no-op on a non-recording span, so it costs nothing with tracing off)."""

from __future__ import annotations

import uuid
from typing import Any

from opentelemetry import trace

from .._semconv import (
    ATTR_COST_USD,
    ATTR_GENAI_INPUT_TOKENS,
    ATTR_GENAI_OUTPUT_TOKENS,
    ATTR_ROUTE_REASON,
)
from .._semconv import mark_exception as mark_exception
from .._semconv import mark_failed as mark_failed
from .._semconv import mark_ok as mark_ok
from ._messages import Usage


def stop_error_type(stop_reason: str) -> str | None:
    """The ``error.type`` of a run that ended with ``stop_reason`` (None: it answered)."""
    if stop_reason == "final":
        return None
    if stop_reason.startswith("budget"):
        return "BudgetExceeded"
    if stop_reason.startswith("error: "):
        return stop_reason[len("error: "):].split(":", 1)[0] or "error"
    return stop_reason.split(":", 1)[0]


def mark_outcome(span: trace.Span, stop_reason: str) -> None:
    """OK for an answer, else ERROR with the stop reason's ``error.type``."""
    error_type = stop_error_type(stop_reason)
    if error_type is None:
        if span.is_recording():
            span.set_status(trace.StatusCode.OK)
    else:
        mark_failed(span, error_type, stop_reason)


def usage_attributes(usage: Usage) -> dict[str, Any]:
    """Token totals (``gen_ai.usage.*``), dollars, and per pool calls, tokens, dollars."""
    attributes: dict[str, Any] = {
        ATTR_GENAI_INPUT_TOKENS: sum(u.input_tokens for u in usage.values()),
        ATTR_GENAI_OUTPUT_TOKENS: sum(u.output_tokens for u in usage.values()),
        ATTR_COST_USD: sum(u.cost_usd for u in usage.values()),
    }
    for pool, u in usage.items():
        attributes[f"heterarch.usage.{pool}.tokens"] = u.tokens
        attributes[f"heterarch.usage.{pool}.cost_usd"] = u.cost_usd
        attributes[f"heterarch.usage.{pool}.calls"] = u.calls
        if u.lost_calls:  # replies lost with their lane, counted at their estimate
            attributes[f"heterarch.usage.{pool}.lost_calls"] = u.lost_calls
            attributes[f"heterarch.usage.{pool}.lost_tokens"] = u.lost_tokens
            attributes[f"heterarch.usage.{pool}.lost_cost_usd"] = u.lost_cost_usd
        if u.cache_hits:  # calls answered by the run's call cache: nothing paid
            attributes[f"heterarch.usage.{pool}.cache_hits"] = u.cache_hits
            attributes[f"heterarch.usage.{pool}.cache_saved_usd"] = u.cache_saved_usd
        if u.cached_input_tokens:  # prompt tokens the provider read from its cache
            attributes[f"heterarch.usage.{pool}.cached_input_tokens"] = u.cached_input_tokens
    return attributes


def tool_attributes(name: str, tool_type: str) -> dict[str, Any]:
    """The conventions' attributes of an ``execute_tool`` span: a fresh call id per call;
    ``tool_type``: ``function`` (a callback the agent's code calls), ``extension`` (the
    sandbox the agent runs code in)."""
    return {"gen_ai.operation.name": "execute_tool", "gen_ai.provider.name": "heterarch",
            "gen_ai.tool.name": name, "gen_ai.tool.type": tool_type,
            "gen_ai.tool.call.id": f"call_{uuid.uuid4().hex[:24]}",
            "openinference.span.kind": "TOOL"}


def note_route(reasons: list[str] | str) -> None:
    """Why the router sent this sub-call here, on the current (the sub-call's) span."""
    span = trace.get_current_span()
    if span.is_recording() and reasons:
        text = reasons if isinstance(reasons, str) else "; ".join(sorted(set(reasons)))
        span.set_attribute(ATTR_ROUTE_REASON, text)
