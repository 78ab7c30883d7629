"""Telemetry conventions shared by agents and the runtime (the OpenTelemetry API only, no I/O).

Attribute names follow the OpenTelemetry GenAI semantic conventions (still "development":
``gen_ai.provider.name`` replaced ``gen_ai.system``) plus heterarch's own ``heterarch.*`` names.
The ``actors`` package must not import ``runtime``; ``runtime._observe.tracing`` re-exports these.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import trace

# heterarch's own attributes
ATTR_ACTOR_ID = "heterarch.actor.id"
ATTR_PARENT_ID = "heterarch.parent.id"
ATTR_POOL = "heterarch.pool"
ATTR_HARDWARE = "heterarch.hardware"
ATTR_DEPTH = "heterarch.depth"
ATTR_COST_USD = "heterarch.cost_usd"
ATTR_ROUTE_REASON = "heterarch.route.reason"
ATTR_ROLE = "heterarch.role"

# GenAI semantic conventions
ATTR_GENAI_OPERATION = "gen_ai.operation.name"
ATTR_GENAI_AGENT_NAME = "gen_ai.agent.name"
ATTR_GENAI_AGENT_ID = "gen_ai.agent.id"
ATTR_GENAI_PROVIDER = "gen_ai.provider.name"
ATTR_GENAI_REQUEST_MODEL = "gen_ai.request.model"
ATTR_GENAI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
ATTR_GENAI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
ATTR_GENAI_TOOL_NAME = "gen_ai.tool.name"
ATTR_GENAI_INPUT_MESSAGES = "gen_ai.input.messages"
ATTR_GENAI_OUTPUT_MESSAGES = "gen_ai.output.messages"
ATTR_GENAI_CONVERSATION_ID = "gen_ai.conversation.id"
ATTR_GENAI_TOOL_ARGUMENTS = "gen_ai.tool.call.arguments"
ATTR_GENAI_TOOL_RESULT = "gen_ai.tool.call.result"
ATTR_GENAI_TOOL_CALL_ID = "gen_ai.tool.call.id"
ATTR_GENAI_TOOL_TYPE = "gen_ai.tool.type"
ATTR_GENAI_USAGE_COST = "gen_ai.usage.cost"
ATTR_ERROR_TYPE = "error.type"

# OpenInference (Arize Phoenix and the UIs that read it): the run's input, output and cost
ATTR_OI_SPAN_KIND = "openinference.span.kind"
ATTR_OI_INPUT = "input.value"
ATTR_OI_OUTPUT = "output.value"
ATTR_OI_COST = "llm.cost.total"

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
CONTENT_LIMIT = 2000

# Set by ``runtime.configure_tracing(capture_content=...)``; None defers to the environment.
_capture_override: bool | None = None


def set_content_capture(enabled: bool | None) -> None:
    """Force content capture on or off for this process (None: follow the environment)."""
    global _capture_override
    _capture_override = enabled


def content_capture_enabled() -> bool:
    """Prompts, replies and cell code go on spans only when the user opts in."""
    if _capture_override is not None:
        return _capture_override
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def truncate_content(text: str, limit: int = CONTENT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, with a marker saying how much was left out."""
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more]"


def _part(content: Any, limit: int) -> dict[str, Any]:
    """One message part of the conventions' schema, text cut inside the content."""
    if isinstance(content, Mapping):
        if content.get("type") == "text":
            return {"type": "text", "content": truncate_content(str(content.get("text", "")),
                                                                 limit)}
        if content.get("type") == "image_url":
            url = str((content.get("image_url") or {}).get("url", ""))
            return {"type": "uri", "modality": "image", "uri": truncate_content(url, 120)}
        return {"type": str(content.get("type", "generic"))}
    return {"type": "text", "content": truncate_content(str(content), limit)}


def genai_messages(messages: Iterable[Mapping[str, Any]], *, finish_reason: str | None = None,
                   limit: int = CONTENT_LIMIT) -> str:
    """``[{role, content}]`` chat messages as the GenAI conventions' JSON (``[{role, parts:
    [{type: "text", content}]}]``; output messages with ``finish_reason``), every text cut to
    ``limit`` characters inside its ``content``, so the attribute stays valid JSON."""
    out = []
    for message in messages:
        content = message.get("content", "")
        items = content if isinstance(content, list) else [content]
        entry: dict[str, Any] = {"role": str(message.get("role", "user")),
                                 "parts": [_part(c, limit) for c in items]}
        if finish_reason is not None:
            entry["finish_reason"] = finish_reason
        out.append(entry)
    return json.dumps(out, ensure_ascii=False)


def mark_failed(span: trace.Span, error_type: str, description: str = "") -> None:
    """ERROR status with ``error.type`` (the conventions' way to say an operation failed)."""
    if span.is_recording():
        span.set_attribute(ATTR_ERROR_TYPE, error_type)
        span.set_status(trace.StatusCode.ERROR, description[:500])


def mark_ok(span: trace.Span) -> None:
    """OK status, unless the span already says how it ended (an agent that gave up: ERROR)."""
    status = getattr(span, "status", None)
    if span.is_recording() and (status is None or status.status_code is trace.StatusCode.UNSET):
        span.set_status(trace.StatusCode.OK)


def cost_attributes(cost_usd: float) -> dict[str, float]:
    """Dollars under heterarch's name and the names GenAI trace UIs read (Langfuse's
    ``gen_ai.usage.cost``, OpenInference's ``llm.cost.total``); the conventions have none."""
    return {ATTR_COST_USD: cost_usd, ATTR_GENAI_USAGE_COST: cost_usd, ATTR_OI_COST: cost_usd}


def mark_exception(span: trace.Span, exc: BaseException) -> None:
    """``exc`` as an event on ``span``, and the span failed with its type."""
    if span.is_recording():
        span.record_exception(exc)
        mark_failed(span, type(exc).__name__, f"{type(exc).__name__}: {exc}")
