"""``heterarch trace show TRACE_ID``: the spawning tree of one run, in the terminal."""

from __future__ import annotations

import io
import json
import os
import statistics
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from actors._semconv import (
    ATTR_COST_USD,
    ATTR_ERROR_TYPE,
    ATTR_GENAI_INPUT_TOKENS,
    ATTR_GENAI_OPERATION,
    ATTR_GENAI_OUTPUT_TOKENS,
    ATTR_HARDWARE,
    ATTR_POOL,
)
from runtime._observe.span_files import jaeger_to_spans
from runtime._observe.tracing import TracingHandle
from runtime.errors import RuntimeConfigError


def read_span_text(path: str | Path) -> str:
    """The text of a span file, or a one-line :class:`RuntimeConfigError` that says what to do."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RuntimeConfigError(
            f"no span file {str(path)!r}: record one with HETERARCH_TRACE_FILE={path} "
            "(docs/tracing.md), or give --file FILE or --jaeger URL") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RuntimeConfigError(f"cannot read span file {str(path)!r}: {exc}") from None


def load_spans_jsonl(path: str | Path, trace_id: str) -> list[dict[str, Any]]:
    """Spans of one trace (a unique prefix of its id is enough) from a span file: heterarch's
    JSON lines, or a trace saved from Jaeger (its query API's JSON, the UI's "Download")."""
    text = read_span_text(path)
    candidates: list[Any] = []
    if text.lstrip().startswith("{") and '"data"' in text[:200]:
        try:
            candidates = jaeger_to_spans(json.loads(text))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            raise RuntimeConfigError(f"{str(path)!r} is neither a span file nor Jaeger JSON") \
                from None
    else:
        for line in text.splitlines():
            try:
                candidates.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn line from a killed process
    spans = [s for s in candidates
             if isinstance(s, dict) and str(s.get("trace_id", "")).startswith(trace_id)]
    ids = {s["trace_id"] for s in spans}
    if len(ids) > 1:
        raise RuntimeConfigError(f"{trace_id!r} matches {len(ids)} traces: give more digits")
    return spans


def load_spans_jaeger(query_url: str, trace_id: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Spans of one trace from Jaeger's query API (``GET /api/traces/{id}``, full id).

    Raises :class:`RuntimeConfigError` when Jaeger cannot be reached; an unknown trace gives [].
    """
    url = f"{query_url.rstrip('/')}/api/traces/{trace_id}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise RuntimeConfigError(f"Jaeger at {url} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RuntimeConfigError(f"cannot read trace from Jaeger at {url}: {exc} "
                                 "(is it running? `make compose-up`; without a registry Jaeger "
                                 "cannot run here: use a span file, docs/tracing.md)") from None
    return jaeger_to_spans(data)


@dataclass
class SpanNode:
    """One span of the spawning tree with its children (in start order)."""

    span: dict[str, Any]
    children: list[SpanNode] = field(default_factory=list)
    orphan: bool = False  # its parent span is not in the trace (lost, or not exported yet)


@dataclass
class SpanTree:
    trace_id: str
    roots: list[SpanNode]
    count: int


def build_tree(spans: list[dict[str, Any]]) -> SpanTree:
    """Children in start order; spans whose parent is not in the trace become flagged roots."""
    ids = {s["span_id"] for s in spans}
    nodes = {s["span_id"]: SpanNode(s) for s in spans}
    roots: list[SpanNode] = []
    for s in sorted(spans, key=lambda s: int(s.get("start_ns") or 0)):
        node = nodes[s["span_id"]]
        parent = s.get("parent_span_id") or ""
        if parent and parent in ids and parent != s["span_id"]:
            nodes[parent].children.append(node)
        else:
            node.orphan = bool(parent)
            roots.append(node)
    roots.sort(key=lambda n: n.orphan)  # the real root first, orphans after it
    trace_id = spans[0]["trace_id"] if spans else "?"
    return SpanTree(trace_id, roots, len(spans))


def as_int(value: Any) -> int:
    """An attribute as an int (0 where it is missing or not a number)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def as_float(value: Any) -> float:
    """An attribute as a float (0.0 where it is missing or not a number)."""
    try:
        return float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0


def node_label(span: dict[str, Any]) -> str:
    """One line: name, pool, hardware, duration, tokens, cost, status (plain text)."""
    a = span.get("attributes") or {}
    parts = [str(span.get("name", "?"))]
    if a.get(ATTR_POOL):
        parts.append(f"pool={a[ATTR_POOL]}")
    if a.get(ATTR_HARDWARE):
        parts.append(f"hw={a[ATTR_HARDWARE]}")
    duration_ms = (as_int(span.get("end_ns")) - as_int(span.get("start_ns"))) / 1e6
    parts.append(f"{duration_ms:.1f} ms")
    tin, tout = as_int(a.get(ATTR_GENAI_INPUT_TOKENS)), as_int(a.get(ATTR_GENAI_OUTPUT_TOKENS))
    if tin or tout:
        parts.append(f"tokens={tin:,}+{tout:,}")
    elif as_int(a.get("heterarch.usage.tokens")):
        parts.append(f"tokens={as_int(a.get('heterarch.usage.tokens')):,}")
    cost = as_float(a.get(ATTR_COST_USD))
    if cost:
        parts.append(f"${cost:.5f}")
    if span.get("status") == "ERROR":
        parts.append(f"ERROR {a[ATTR_ERROR_TYPE]}" if a.get(ATTR_ERROR_TYPE) else "ERROR")
    return "  ".join(parts)


FOLD_MIN = 3
"""Siblings of one kind fold into one line from this many on (``--all``: never)."""
_FOLDED_OPERATIONS = ("invoke_agent", "chat", "create_agent")


def _fold_key(span: dict[str, Any]) -> str:
    """Which siblings are alike: agents, model calls and spawns by operation (whatever the
    agent's name or the model), anything else by span name."""
    operation = (span.get("attributes") or {}).get(ATTR_GENAI_OPERATION)
    return str(operation) if operation in _FOLDED_OPERATIONS else str(span.get("name", "?"))


def fold_label(nodes: list[SpanNode]) -> str:
    """One line for similar siblings: "121 x invoke_agent on wafer 82 / frontier 39, p50
    0.36 s, 0 errors" (plus their tokens and cost when they have any)."""
    spans = [n.span for n in nodes]
    attrs = [s.get("attributes") or {} for s in spans]
    pools = Counter(str(a.get(ATTR_POOL)) for a in attrs if a.get(ATTR_POOL))
    line = f"{len(spans)} x {_fold_key(spans[0])}"
    if pools:
        line += " on " + " / ".join(f"{pool} {n}" for pool, n in pools.most_common())
    durations = [(as_int(s.get("end_ns")) - as_int(s.get("start_ns"))) / 1e9 for s in spans]
    errors = sum(1 for s in spans if s.get("status") == "ERROR")
    plural = "" if errors == 1 else "s"
    line += f", p50 {statistics.median(durations):.2f} s, {errors} error{plural}"
    types = Counter(str(a[ATTR_ERROR_TYPE]) for s, a in zip(spans, attrs, strict=True)
                    if s.get("status") == "ERROR" and a.get(ATTR_ERROR_TYPE))
    if types:  # what failed, by type, and where
        line += " (" + ", ".join(f"{t} {n}" for t, n in types.most_common()) + ")"
        failed_pools = Counter(str(a.get(ATTR_POOL)) for s, a in zip(spans, attrs, strict=True)
                               if s.get("status") == "ERROR" and a.get(ATTR_POOL))
        if len(pools) > 1 and failed_pools:
            line += " on " + " / ".join(f"{p} {n}" for p, n in failed_pools.most_common())
    tokens = sum(as_int(a.get(ATTR_GENAI_INPUT_TOKENS)) + as_int(a.get(ATTR_GENAI_OUTPUT_TOKENS))
                 for a in attrs)
    cost = sum(as_float(a.get(ATTR_COST_USD)) for a in attrs)
    if tokens:
        line += f", tokens={tokens:,}"
    if cost:
        line += f", ${cost:.5f}"
    return line


def _count(nodes: list[SpanNode]) -> int:
    return sum(1 + _count(n.children) for n in nodes)


def _span_markup(node: SpanNode) -> str:
    label = escape(node_label(node.span))
    name = escape(str(node.span.get("name", "?")))
    label = label.replace(name, f"[bold]{name}[/]", 1)
    if node.span.get("status") == "ERROR":
        head, _, tail = label.rpartition("ERROR")
        label = f"{head}[red]ERROR{tail}[/]"
    if node.orphan:
        label = (f"[yellow]ORPHAN (parent {node.span.get('parent_span_id')} not in trace)"
                 f"[/] {label}")
    return label


def render_tree(tree: SpanTree, *, depth: int | None = None, fold: bool = True) -> Tree:
    """The tree as a rich renderable (print it with a ``Console``).

    ``depth``: levels shown below the roots (None: all; what is cut is counted). ``fold``:
    :data:`FOLD_MIN` or more alike siblings become one line (:func:`fold_label`), whose
    children are all of theirs, folded the same way."""
    out = Tree(f"trace {tree.trace_id} ({tree.count} spans)")

    def add_children(branch: Tree, children: list[SpanNode], level: int) -> None:
        if not children:
            return
        if depth is not None and level > depth:
            branch.add(f"[dim]... {_count(children)} spans below (--depth {depth})[/]")
            return
        groups: dict[str, list[SpanNode]] = {}
        for node in children:
            groups.setdefault(_fold_key(node.span), []).append(node)
        shown: set[str] = set()
        for node in children:  # start order; a folded group where its first member starts
            key = _fold_key(node.span)
            group = groups[key]
            if fold and len(group) >= FOLD_MIN:
                if key in shown:
                    continue
                shown.add(key)
                errors = any(n.span.get("status") == "ERROR" for n in group)
                label = escape(fold_label(group))
                folded = branch.add(f"[red]{label}[/]" if errors else label)
                kids = sorted((k for n in group for k in n.children),
                              key=lambda k: as_int(k.span.get("start_ns")))
                add_children(folded, kids, level + 1)
            else:
                add_children(branch.add(_span_markup(node)), node.children, level + 1)

    for root in tree.roots:
        add_children(out.add(_span_markup(root)), root.children, 1)
    return out


def render_text(tree: SpanTree, *, width: int = 200, depth: int | None = None,
                fold: bool = True) -> str:
    """The tree as plain text (no colour), for logs and tests."""
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(render_tree(tree, depth=depth, fold=fold))
    return console.export_text()


def trace_show_command(trace_id: str, *, jsonl: str | Path | None = None,
                       jaeger: str | None = None, console: Console | None = None,
                       depth: int | None = None, fold: bool = True) -> int:
    """``heterarch trace show``: print the tree; 0 when found, 1 when not, 2 on a read error."""
    console = console or Console()
    try:
        if jaeger:
            spans = load_spans_jaeger(jaeger, trace_id)
        else:
            spans = load_spans_jsonl(jsonl or os.environ.get("HETERARCH_TRACE_FILE")
                                     or "heterarch-spans.jsonl", trace_id)
    except RuntimeConfigError as exc:
        console.print(f"[red]{escape(str(exc))}[/]", soft_wrap=True)  # one line
        return 2
    if not spans:
        console.print(f"no spans of trace {trace_id!r} found")
        return 1
    console.print(render_tree(build_tree(spans), depth=depth, fold=fold))
    return 0


def trace_note(handle: TracingHandle, trace_id: str) -> str:
    """The last line of a CLI run: where its trace is, or how to record a complete one.

    Flushes this process's spans first. The Jaeger link only when spans reached it; with a span
    file, says when it holds this process's spans only (the workers record theirs only when
    they trace too)."""
    if not handle.enabled or not trace_id:
        return ("trace: not recorded (add --trace for the local Jaeger, or set "
                "HETERARCH_TRACE_FILE=spans.jsonl for the CLI and the workers; docs/tracing.md)")
    handle.force_flush()
    link = handle.trace_url(trace_id)
    if link is not None:
        return f"trace: {link}"
    line = f"trace: {trace_id} ({handle.delivery_note()})"
    if handle.jsonl is None:
        return line
    try:
        spans = load_spans_jsonl(handle.jsonl, trace_id)
    except RuntimeConfigError:
        return line
    others = {s.get("instance") for s in spans} - {handle.instance_id}
    show = (f"`heterarch trace show {trace_id[:12]} --file {handle.jsonl}` or "
            f"`heterarch view {handle.jsonl} --trace {trace_id[:12]}`")
    if spans and not others:
        return (f"{line}: {len(spans)} spans, all from this process; the workers record theirs "
                f"when they trace too: start them with HETERARCH_TRACE_FILE={handle.jsonl} (or "
                f"one OTEL_EXPORTER_OTLP_ENDPOINT for all), then {show}")
    return f"{line}: {len(spans)} spans from {len(others) + 1} processes; {show}"
