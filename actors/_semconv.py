"""Telemetry conventions shared by agents and the runtime (no dependencies)."""

from __future__ import annotations

import os

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
CONTENT_LIMIT = 2000


def content_capture_enabled() -> bool:
    """Prompts, replies and cell code go on spans only when the user opts in."""
    return os.environ.get(CAPTURE_CONTENT_ENV, "").lower() in {"1", "true", "yes"}


def truncate_content(text: str, limit: int = CONTENT_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more]"
