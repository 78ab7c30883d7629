"""Where a run's spans come from: a span file (also while a run writes it), a trace saved from
Jaeger, Jaeger's query API. And the list of the traces there (``heterarch trace list``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime._observe.span_files import jaeger_to_spans
from runtime.errors import RuntimeConfigError

from ..trace_show import read_span_text
from ._run import Span, attrs, end, failed, message_text, start
from ._runlog import is_run_log, read_records, spans_from_run_log


def read_spans(path: str | Path) -> list[Span]:
    """Every span in a span file (JSON lines; torn lines skipped), a Jaeger JSON export, or
    the spans a run log stands for (``heterarch rlm --log``)."""
    text = read_span_text(path)
    if text.lstrip().startswith("{") and '"data"' in text[:200]:
        try:
            return jaeger_to_spans(json.loads(text))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            pass  # not Jaeger's JSON after all: read as lines
    records = read_records(text)
    if is_run_log(records):  # a run log (`heterarch rlm --log`): its spans, from its events
        return spans_from_run_log(records)
    spans: list[Span] = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn line from a killed process, or one being written
        if isinstance(record, dict) and record.get("trace_id") and record.get("span_id"):
            spans.append(record)
    return spans


def spans_of(spans: list[Span], trace_id: str | None) -> list[Span]:
    """The spans of one trace: ``trace_id`` (a unique prefix will do), else the trace whose
    first span started last (the latest run)."""
    by_trace: dict[str, list[Span]] = {}
    for s in spans:
        by_trace.setdefault(str(s["trace_id"]), []).append(s)
    if trace_id:
        ids = [t for t in by_trace if t.startswith(trace_id)]
        if len(ids) > 1:
            raise RuntimeConfigError(f"{trace_id!r} matches {len(ids)} traces: give more digits")
        return by_trace[ids[0]] if ids else []
    if not by_trace:
        return []
    latest = max(by_trace, key=lambda t: min(start(s) for s in by_trace[t]))
    return by_trace[latest]


def jaeger_query(url: str, *, service: str = "heterarch-cli", limit: int = 20,
                 timeout: float = 5.0) -> list[Span]:
    """Spans of the latest traces of ``service`` from Jaeger's query API."""
    query = urllib.parse.urlencode({"service": service, "limit": limit})
    full = f"{url.rstrip('/')}/api/traces?{query}"
    try:
        with urllib.request.urlopen(full, timeout=timeout) as response:
            data: Any = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RuntimeConfigError(f"cannot query Jaeger at {full}: {exc}") from None
    return jaeger_to_spans(data)


@dataclass
class TraceSummary:
    trace_id: str
    start_ns: int
    wall_s: float
    spans: int
    root: str
    status: str
    cost_usd: float
    question: str


def list_traces(spans: list[Span]) -> list[TraceSummary]:
    """One line per trace, oldest first: its root span, duration, status, cost, question."""
    by_trace: dict[str, list[Span]] = {}
    for s in spans:
        by_trace.setdefault(str(s["trace_id"]), []).append(s)
    out = []
    for trace_id, members in by_trace.items():
        ids = {s["span_id"] for s in members}
        tops = sorted((s for s in members if (s.get("parent_span_id") or "") not in ids),
                      key=lambda s: (bool(s.get("parent_span_id")), start(s)))
        root = tops[0]
        a = attrs(root)
        errors = sum(1 for s in members if failed(s))
        status = str(root.get("status") or "UNSET")
        if root.get("parent_span_id"):
            status = "INCOMPLETE"  # its root span is missing (not ended or not exported)
        elif errors and status != "ERROR":
            status += f" ({errors} failed spans)"
        out.append(TraceSummary(
            trace_id=trace_id, start_ns=min(start(s) for s in members),
            wall_s=(max(end(s) for s in members) - min(start(s) for s in members)) / 1e9,
            spans=len(members), root=str(root.get("name", "?")), status=status,
            cost_usd=float(a.get("heterarch.cost_usd") or 0.0),
            question=message_text(a.get("gen_ai.input.messages"))
            or str(a.get("input.value") or "")))
    return sorted(out, key=lambda t: t.start_ns)
