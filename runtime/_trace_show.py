"""``heterarch trace show TRACE_ID``: the spawning tree of one run, in the terminal."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.tree import Tree

from .errors import RuntimeConfigError


def load_spans_jsonl(path: str | Path, trace_id: str) -> list[dict[str, Any]]:
    """Spans of one trace (a unique prefix of its id is enough) from a span file."""
    spans: list[dict[str, Any]] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise RuntimeConfigError(f"cannot read span file {str(path)!r}: {exc}") from None
    for line in lines:
        try:
            span = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn line from a killed process
        if isinstance(span, dict) and str(span.get("trace_id", "")).startswith(trace_id):
            spans.append(span)
    ids = {s["trace_id"] for s in spans}
    if len(ids) > 1:
        raise RuntimeConfigError(f"{trace_id!r} matches {len(ids)} traces: give more digits")
    return spans


def load_spans_jaeger(query_url: str, trace_id: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Spans of one trace from Jaeger's query API (``GET /api/traces/{id}``)."""
    url = f"{query_url.rstrip('/')}/api/traces/{trace_id}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = json.load(response)
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        raise RuntimeConfigError(f"cannot read trace from Jaeger at {url}: {exc}") from None
    spans = []
    for trace in data.get("data", []):
        processes = trace.get("processes", {})
        for s in trace.get("spans", []):
            parent = next((r["spanID"] for r in s.get("references", [])
                           if r.get("refType") == "CHILD_OF"), "")
            spans.append({
                "trace_id": s["traceID"], "span_id": s["spanID"], "parent_span_id": parent,
                "name": s["operationName"], "start_ns": s["startTime"] * 1000,
                "end_ns": (s["startTime"] + s["duration"]) * 1000,
                "attributes": {t["key"]: t["value"] for t in s.get("tags", [])},
                "service": processes.get(s.get("processID"), {}).get("serviceName", ""),
            })
    return spans


def _label(span: dict[str, Any]) -> str:
    a = span.get("attributes", {})
    parts = [f"[bold]{span['name']}[/]"]
    if a.get("heterarch.pool"):
        parts.append(f"pool={a['heterarch.pool']}")
    if a.get("heterarch.hardware"):
        parts.append(f"hw={a['heterarch.hardware']}")
    duration_ms = (int(span.get("end_ns") or 0) - int(span.get("start_ns") or 0)) / 1e6
    parts.append(f"{duration_ms:.1f} ms")
    tokens = int(a.get("gen_ai.usage.input_tokens", 0))
    tokens += int(a.get("gen_ai.usage.output_tokens", 0))
    tokens = tokens or int(a.get("heterarch.usage.tokens", 0))
    if tokens:
        parts.append(f"{tokens:,} tok")
    if a.get("heterarch.cost_usd"):
        parts.append(f"${float(a['heterarch.cost_usd']):.5f}")
    if span.get("status") == "ERROR":
        parts.append("[red]ERROR[/]")
    return "  ".join(parts)


def build_tree(spans: list[dict[str, Any]], *, max_children: int = 12) -> Tree:
    """Children in start order; orphans (parent not in the trace) shown at the top, flagged."""
    ids = {s["span_id"] for s in spans}
    children: dict[str, list[dict[str, Any]]] = {}
    roots = []
    for s in sorted(spans, key=lambda s: int(s.get("start_ns") or 0)):
        parent = s.get("parent_span_id") or ""
        if parent and parent in ids:
            children.setdefault(parent, []).append(s)
        else:
            roots.append(s)
    trace_id = spans[0]["trace_id"] if spans else "?"
    tree = Tree(f"trace {trace_id} ({len(spans)} spans)")

    def add(node: Tree, span: dict[str, Any]) -> None:
        branch = node.add(_label(span))
        kids = children.get(span["span_id"], [])
        for kid in kids[:max_children]:
            add(branch, kid)
        if len(kids) > max_children:
            branch.add(f"[dim]... {len(kids) - max_children} more like these[/]")

    for root in roots:
        if root.get("parent_span_id"):
            tree.add(f"[yellow]orphan (parent {root['parent_span_id']} not in trace)[/]")
        add(tree, root)
    return tree


def trace_show_command(trace_id: str, *, jsonl: str | None = None, jaeger: str | None = None,
                       console: Console | None = None) -> int:
    console = console or Console()
    spans = load_spans_jaeger(jaeger, trace_id) if jaeger else load_spans_jsonl(
        jsonl or "heterarch-spans.jsonl", trace_id)
    if not spans:
        console.print(f"no spans of trace {trace_id!r} found")
        return 1
    console.print(build_tree(spans))
    return 0
