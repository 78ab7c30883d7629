"""Telemetry conventions shared by agents and the runtime (no dependencies, no I/O).

Attribute names follow the OpenTelemetry GenAI semantic conventions (still "development":
``gen_ai.provider.name`` replaced ``gen_ai.system``) plus heterarch's own ``heterarch.*`` names.
The ``actors`` package must not import ``runtime``; ``runtime._observe.tracing`` re-exports these.
"""

from __future__ import annotations

import os

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
