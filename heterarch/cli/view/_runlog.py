"""A run log (JSON lines of events: ``run``, ``iteration``, ``answer``, ``error``; written by
``heterarch rlm --log`` / ``RLM(log=...)``) read as span-file records, so the page of a run
needs no tracing at all.

A log has each iteration's texts, pools, tokens, dollars and durations, but no start times of
its own: an iteration ends when its event was written, its model call comes first, its cell
after it, and its sub-calls start with the cell. The timeline of a log is therefore drawn from
durations (the page says so); the iterations, pools, tokens and dollars are exact.
"""

from __future__ import annotations

import json
from typing import Any

from actors._semconv import genai_messages

from ._run import Span

LOG_EVENTS = ("run", "iteration", "answer", "error")


def is_run_log(records: list[dict[str, Any]]) -> bool:
    return bool(records) and all(r.get("event") in LOG_EVENTS or "event" in r
                                 for r in records[:5])


class _Ids:
    def __init__(self, run: str) -> None:
        self.trace_id = (run.replace("-", "") + "0" * 32)[:32] if run else "0" * 31 + "1"
        self.n = 0

    def next(self) -> str:
        self.n += 1
        return f"{self.n:016x}"


def _ns(t: Any) -> int:
    try:
        return int(float(t) * 1e9)
    except (TypeError, ValueError):
        return 0


def spans_from_run_log(events: list[dict[str, Any]]) -> list[Span]:
    """The spans a run log stands for (one trace; ``heterarch.from_log`` on the root)."""
    runs = [e for e in events if e.get("event") == "run"]
    run_id = str((runs[-1] if runs else events[0] if events else {}).get("run", ""))
    events = [e for e in events if str(e.get("run", "")) == run_id] or events
    ids = _Ids(run_id)
    first = min((_ns(e.get("time")) for e in events), default=0)
    last = max((_ns(e.get("time")) for e in events), default=first)
    started = runs[-1] if runs else {}
    answer = next((e for e in reversed(events) if e.get("event") == "answer"), None)
    error = next((e for e in reversed(events) if e.get("event") == "error"), None)
    steps = [e for e in events if e.get("event") == "iteration"]
    root_depth = min((int(s.get("depth") or 0) for s in steps), default=0)
    root_steps = [s for s in steps if int(s.get("depth") or 0) == root_depth]
    question = str(started.get("question") or "")

    def span(name: str, parent: str, start: int, end: int, attributes: dict[str, Any], *,
             kind: str = "INTERNAL", status: str = "OK", description: str = "") -> Span:
        return {"trace_id": ids.trace_id, "span_id": ids.next(), "parent_span_id": parent,
                "name": name, "kind": kind, "start_ns": start, "end_ns": max(start, end),
                "status": status, "status_description": description,
                "attributes": attributes, "events": [], "links": [], "service": "run log",
                "instance": ""}

    root_attrs: dict[str, Any] = {"gen_ai.operation.name": "invoke_agent",
                                  "gen_ai.agent.name": "rlm", "heterarch.from_log": True,
                                  "input.value": question}
    if question:
        root_attrs["gen_ai.input.messages"] = genai_messages(
            [{"role": "user", "content": question}])
    status, why = "OK", ""
    if answer is not None:
        root_attrs["output.value"] = str(answer.get("text") or "")
        root_attrs["gen_ai.output.messages"] = genai_messages(
            [{"role": "assistant", "content": str(answer.get("text") or "")}],
            finish_reason=str(answer.get("stop_reason") or ""))
        root_attrs["heterarch.stop_reason"] = str(answer.get("stop_reason") or "")
        root_attrs["heterarch.cost_usd"] = float(answer.get("cost_usd") or 0.0)
        if not answer.get("ok", True):
            status, why = "ERROR", str(answer.get("stop_reason") or "")
            root_attrs["error.type"] = why.split(":", 1)[0] or "error"
    if error is not None:
        status, why = "ERROR", str(error.get("message") or error.get("type") or "")
        root_attrs["error.type"] = str(error.get("type") or "error")
    root = span("invoke_agent rlm", "", first, last, root_attrs, status=status, description=why)
    agent = span("invoke_agent rlm-root", root["span_id"], first, last, {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "rlm-root",
        "gen_ai.agent.id": str(root_steps[0].get("agent_id", "")) if root_steps else "",
        "heterarch.pool": str(root_steps[0].get("pool", "")) if root_steps else "",
        "heterarch.depth": root_depth})
    out = [root, agent]
    previous_end = first
    for step in root_steps:
        end = _ns(step.get("time")) or previous_end
        pool = str(step.get("pool") or "")
        model_ns = int(float(step.get("latency_s") or 0.0) * 1e9)
        # the cell lasts at least as long as its longest sub-call; the model call before it
        cell_ns = max((int(float(c.get("latency_s") or 0.0) * 1e9)
                       for c in step.get("sub_calls") or []), default=0)
        chat_end = max(previous_end, end - cell_ns)
        chat_start = max(previous_end, chat_end - model_ns)
        out.append(span(f"chat {pool}", agent["span_id"], chat_start, chat_end, {
            "gen_ai.operation.name": "chat", "heterarch.pool": pool,
            "gen_ai.usage.input_tokens": int(step.get("input_tokens") or 0),
            "gen_ai.usage.output_tokens": int(step.get("output_tokens") or 0),
            "heterarch.cost_usd": float(step.get("cost_usd") or 0.0),
            "gen_ai.output.messages": genai_messages(
                [{"role": "assistant", "content": str(step.get("reply") or "")}])},
            kind="CLIENT"))
        code = step.get("code") or []
        if code:
            cell = span("execute_tool repl", agent["span_id"], chat_end, end, {
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "repl",
                "heterarch.cell.index": 1,
                "gen_ai.tool.call.arguments": "\n\n".join(str(c) for c in code),
                "gen_ai.tool.call.result": str(step.get("output") or "")})
            out.append(cell)
            out += _sub_calls(step.get("sub_calls") or [], cell, span)
        previous_end = end
    return out


def _sub_calls(calls: list[dict[str, Any]], cell: Span, span: Any) -> list[Span]:
    """The sub-calls of a cell: under one tool span per kind, each a chat span on its pool
    (they start with the cell; a log has their durations, not their start times)."""
    out: list[Span] = []
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        by_kind.setdefault(str(call.get("kind") or "llm"), []).append(call)
    for kind, members in by_kind.items():
        name = {"llm": "llm_query_batched", "rlm": "rlm_query_batched"}.get(kind, kind)
        begin = int(cell["start_ns"])
        longest = max(int(float(c.get("latency_s") or 0.0) * 1e9) for c in members)
        served: dict[str, int] = {}
        for c in members:
            if not c.get("error"):
                served[str(c.get("pool"))] = served.get(str(c.get("pool")), 0) + 1
        tool = span(f"execute_tool {name}", cell["span_id"], begin, begin + longest, {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
            "heterarch.batch": len({str(c.get("prompt")) for c in members}),  # retries: once
            "heterarch.route.pools": [f"{p}={n}" for p, n in served.items()]})
        out.append(tool)
        for c in members:
            pool = str(c.get("pool") or "")
            failed = bool(c.get("error"))
            error_type = str(c.get("error") or "").split(":", 1)[0].strip("[] ") or "error"
            attributes: dict[str, Any] = {
                "gen_ai.operation.name": "chat", "heterarch.pool": pool,
                "gen_ai.usage.input_tokens": int(c.get("input_tokens") or 0),
                "gen_ai.usage.output_tokens": int(c.get("output_tokens") or 0),
                "heterarch.cost_usd": float(c.get("cost_usd") or 0.0),
                "gen_ai.input.messages": genai_messages(
                    [{"role": "user", "content": str(c.get("prompt") or "")}]),
                "gen_ai.output.messages": genai_messages(
                    [{"role": "assistant", "content": str(c.get("reply") or "")}])}
            if failed:
                attributes["error.type"] = error_type
            out.append(span(f"chat {pool}", tool["span_id"], begin,
                            begin + int(float(c.get("latency_s") or 0.0) * 1e9), attributes,
                            kind="CLIENT", status="ERROR" if failed else "OK",
                            description=str(c.get("error") or "")))
    return out


def read_records(text: str) -> list[dict[str, Any]]:
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
