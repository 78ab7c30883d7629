"""Span files: Jaeger's query JSON read as heterarch's span-file records."""

from __future__ import annotations

from typing import Any


def jaeger_to_spans(data: Any) -> list[dict[str, Any]]:
    """Jaeger's query JSON (``{"data": [trace...]}``) as span-file dicts."""
    spans: list[dict[str, Any]] = []
    for trace in (data or {}).get("data") or []:
        processes = trace.get("processes") or {}
        for s in trace.get("spans") or []:
            parent = next((r["spanID"] for r in s.get("references") or []
                           if r.get("refType") == "CHILD_OF"), "")
            tags = {t["key"]: t.get("value") for t in s.get("tags") or []}
            error = tags.get("otel.status_code") == "ERROR" or tags.get("error") is True
            start_us = int(s.get("startTime", 0))
            spans.append({
                "trace_id": s["traceID"].rjust(32, "0"), "span_id": s["spanID"].rjust(16, "0"),
                "parent_span_id": parent.rjust(16, "0") if parent else "",
                "name": s.get("operationName", "?"),
                "start_ns": start_us * 1000,
                "end_ns": (start_us + int(s.get("duration", 0))) * 1000,
                "status": "ERROR" if error else str(tags.get("otel.status_code", "UNSET")),
                "attributes": tags,
                "service": (processes.get(s.get("processID")) or {}).get("serviceName", ""),
            })
    return spans
