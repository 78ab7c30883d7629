"""The page of one run: HTML with inline CSS, the timeline as SVG drawn here, a few lines of
script only for the live page (no build step, nothing fetched from elsewhere)."""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..trace_show import FOLD_MIN, SpanNode, _fold_key, build_tree, fold_label, node_label
from ._run import (
    Bar,
    Iteration,
    Run,
    Span,
    attrs,
    children_index,
    end,
    error_type,
    failed,
    last_user_text,
    message_text,
    operation,
    seconds,
    start,
    subtree_usage,
)

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f",
           "#ff9da7", "#bab0ac", "#e15759")
MODEL, CELL, WAIT = "#334155", "#14b8a6", "#a855f7"  # the root agent's phases (not pools')
PLOT_W = 960
LABEL_W = 250

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;
 background:#fafafa}
header{background:#1f2937;color:#f9fafb;padding:14px 24px}
header h1{font-size:18px;margin:0 0 4px}
header .id{font:12px ui-monospace,monospace;color:#9ca3af}
main{padding:8px 24px 40px;max-width:1300px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;margin:14px 0;
 padding:12px 16px}
h2{font-size:16px;margin:4px 0 10px}
.kpis{display:flex;flex-wrap:wrap;gap:10px}
.kpi{border:1px solid #e5e7eb;border-radius:6px;padding:6px 12px;min-width:110px}
.kpi b{display:block;font-size:18px}
.kpi span{color:#6b7280;font-size:12px}
.badge{display:inline-block;border-radius:4px;padding:1px 7px;font-size:12px;font-weight:600}
.ok{background:#dcfce7;color:#166534}.err{background:#fee2e2;color:#991b1b}
.run{background:#fef9c3;color:#854d0e}
.qa{display:grid;grid-template-columns:90px 1fr;gap:4px 10px;margin:10px 0}
.qa div:nth-child(odd){color:#6b7280}
pre{background:#f3f4f6;border-radius:6px;padding:8px 10px;overflow:auto;max-height:360px;
 white-space:pre-wrap;word-break:break-word;font:12.5px/1.4 ui-monospace,monospace;margin:4px 0}
table{border-collapse:collapse;font-size:13px}
th,td{padding:4px 10px;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}
th{color:#6b7280;font-weight:600}
.stack{display:flex;height:22px;border-radius:4px;overflow:hidden;margin:4px 0 2px;
 max-width:900px}
.stack div{height:100%}
.legend span{margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
details{margin:2px 0 2px 14px}
summary{cursor:pointer}
.tree summary,.tree .leaf{font:12.5px/1.6 ui-monospace,monospace}
.tree .leaf{margin-left:28px}
.sub{color:#6b7280}
.etype{color:#b91c1c;font-weight:600}
.iter{border-left:3px solid #334155;padding-left:10px;margin:10px 0}
.iter h3{font-size:14px;margin:0 0 4px}
.cell{margin:6px 0 6px 10px}
svg text{font:11px system-ui,sans-serif}
.muted{color:#6b7280}
"""

LIVE_SCRIPT = """
<script>
(function(){
  let seen = null;
  async function poll(){
    try {
      const r = await fetch('version', {cache: 'no-store'});
      const v = await r.text();
      if (seen !== null && v !== seen) {
        const open = [...document.querySelectorAll('details[open]')].map(d => d.id);
        const page = await (await fetch('fragment', {cache: 'no-store'})).text();
        document.getElementById('run').innerHTML = page;
        open.forEach(id => { const d = document.getElementById(id); if (d) d.open = true; });
      }
      seen = v;
    } catch (e) { document.getElementById('live').textContent = 'live: server gone'; return; }
    setTimeout(poll, 1500);
  }
  poll();
})();
</script>
"""


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def money(value: float) -> str:
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def duration(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.2f} s"
    return f"{s / 60:.1f} min"


def render_page(run: Run, *, title: str = "", live: bool = False) -> str:
    """The whole page (a static file when ``live`` is False)."""
    badge = _status_badge(run)
    live_note = '<span id="live" class="badge run">live</span>' if live else ""
    head = (f"<header><h1>{e(title or 'heterarch run')} {badge} {live_note}</h1>"
            f"<div class='id'>trace {e(run.trace_id)}</div></header>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{e(title or 'heterarch run')} {e(run.trace_id[:12])}</title>"
            f"<style>{CSS}</style></head><body>{head}"
            f"<main id='run'>{render_body(run)}</main>"
            f"{LIVE_SCRIPT if live else ''}</body></html>")


def render_body(run: Run) -> str:
    """Everything below the header (the live page swaps this part)."""
    if not run.spans:
        return "<section><h2>No spans yet</h2><p>Waiting for the run's first spans.</p></section>"
    colors = {pool: PALETTE[i % len(PALETTE)] for i, pool in enumerate(run.pools)}
    return "".join([
        _summary(run, colors),
        _timeline(run, colors),
        _pools(run, colors),
        _iterations(run),
        _tree(run),
        _errors(run),
    ])


def _status_badge(run: Run) -> str:
    if not run.complete:
        return "<span class='badge run'>in progress</span>"
    if run.status == "ERROR":
        why = error_type(run.root) if run.root is not None else "error"
        return f"<span class='badge err'>failed: {e(why)}</span>"
    return "<span class='badge ok'>answered</span>"


def _kpi(value: str, label: str, key: str = "") -> str:
    return (f"<div class='kpi' data-kpi='{e(key or label)}'><b>{e(value)}</b>"
            f"<span>{e(label)}</span></div>")


def _summary(run: Run, colors: dict[str, str]) -> str:
    sub_calls = sum(int(attrs(s).get("heterarch.batch") or 1) for kind, s in run.phases
                    if kind == "sub-calls")
    model_calls = sum(1 for s in run.spans if operation(s) == "chat")
    agents = sum(1 for s in run.spans if operation(s) == "invoke_agent")
    kpis = "".join([
        _kpi(duration(run.wall_s), "wall time", "wall"),
        _kpi(money(run.cost_usd), "cost", "cost"),
        _kpi(f"{run.tokens:,}", "tokens", "tokens"),
        _kpi(str(len(run.iterations)), "iterations", "iterations"),
        _kpi(str(sub_calls), "sub-calls", "sub-calls"),
        _kpi(str(model_calls), "model calls", "model-calls"),
        _kpi(str(agents), "agents invoked", "agents"),
        _kpi(str(len(run.errors)), "failed spans", "errors"),
    ])
    qa = (f"<div class='qa'><div>question</div><div>{e(run.question) or '<i>not recorded</i>'}"
          f"</div><div>answer</div><div><b id='answer'>{e(run.answer) or '<i>none</i>'}</b>"
          f"</div>")
    if run.stop_reason:
        qa += f"<div>stopped</div><div>{e(run.stop_reason)}</div>"
    qa += "</div>"
    if not run.question and not run.answer:
        qa += ("<p class='muted'>The question and the answer are on spans only with content "
               "capture on (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true).</p>")
    split = run.time_split()
    time_colors = ("#d1d5db", MODEL, CELL, WAIT)
    bars = _stack([(f"{label} {duration(s)}", s, c) for (label, s), c in
                   zip(split, time_colors, strict=True)], "where the root agent's time went")
    money_bar = _stack([(f"{pool} {money(p.cost_usd)}", p.cost_usd, colors[pool])
                        for pool, p in run.pools.items()], "where the money went")
    return (f"<section id='summary'><h2>Summary <span id='status'>{_status_badge(run)}</span>"
            f"</h2><div class='kpis'>{kpis}</div>{qa}"
            f"{bars}{money_bar}</section>")


def _stack(parts: list[tuple[str, float, str]], title: str) -> str:
    total = sum(v for _, v, _ in parts)
    if total <= 0:
        return ""
    cells = "".join(f"<div style='width:{100 * v / total:.2f}%;background:{c}' "
                    f"title='{e(label)}'></div>" for label, v, c in parts if v > 0)
    legend = "".join(f"<span><i style='background:{c}'></i>{e(label)} "
                     f"({100 * v / total:.0f}%)</span>" for label, v, c in parts if v > 0)
    return (f"<div class='muted' style='margin-top:8px'>{e(title)}</div>"
            f"<div class='stack'>{cells}</div><div class='legend'>{legend}</div>")


# --------------------------------------------------------------------------- the timeline


def _ticks(total_s: float) -> list[float]:
    if total_s <= 0:
        return [0.0]
    raw = total_s / 8
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(total_s / step) + 1)]


def _bar_title(bar: Bar, run: Run) -> str:
    s = bar.span
    a = attrs(s)
    lines = [str(s.get("name")), f"pool {bar.pool}  {bar.instance}",
             f"at +{(start(s) - run.start_ns) / 1e9:.3f} s for {duration(seconds(s))}"]
    if bar.queued_ns:
        lines.append(f"waited {duration(bar.queued_ns / 1e9)} for the pool's limit first")
    tokens = int(a.get("gen_ai.usage.input_tokens") or 0), int(
        a.get("gen_ai.usage.output_tokens") or 0)
    if any(tokens):
        lines.append(f"tokens {tokens[0]:,} in, {tokens[1]:,} out")
    if a.get("heterarch.cost_usd"):
        lines.append(money(float(a["heterarch.cost_usd"])))
    prompt = last_user_text(a.get("gen_ai.input.messages"))
    reply = message_text(a.get("gen_ai.output.messages"))
    if prompt:
        lines.append(f"prompt: {_preview(prompt)}")
    if reply:
        lines.append(f"reply: {_preview(reply)}")
    if bar.straggler:
        lines.append("straggler: slower than twice its pool's median")
    if failed(s):
        lines.append(f"ERROR {error_type(s)}: {s.get('status_description', '')}"[:300])
    if not bar.sub_call:
        lines.append("the root agent writing code")
    return "\n".join(lines)


def _preview(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def _timeline(run: Run, colors: dict[str, str]) -> str:
    """The whole run from the root agent's first model call (what came before is said in a
    line), then each batch of sub-calls on its own scale."""
    batches = [s for kind, s in run.phases if kind == "sub-calls"]
    first = min((start(s) for _, s in run.phases), default=run.start_ns)
    before = run.starting()
    note = ""
    if before and first - run.start_ns > 0.05 * (run.end_ns - run.start_ns):
        note = ("<p class='muted' id='before-first-call'>Before the first model call (+"
                f"{duration((first - run.start_ns) / 1e9)}): " + "; ".join(
                    f"{e(what)} {e(duration(s))}" for what, s in before) + ".</p>")
    else:
        first = run.start_ns
    if run.root is not None and attrs(run.root).get("heterarch.from_log"):
        note += ("<p class='muted' id='from-log'>From a run log: durations are exact, start "
                 "times are not (a log has none): sub-calls are drawn from their cell's start."
                 "</p>")
    whole = _timeline_svg(run, colors, first, run.end_ns, lambda bar: True, "timeline-svg",
                          batches)
    zooms = []
    for i, b in enumerate(batches, 1):
        in_batch = [bar for lane in run.lanes for bar in lane.bars
                    if bar.sub_call and start(b) <= start(bar.span) and end(bar.span) <= end(b)]
        if len(in_batch) < 3:
            continue
        ids = {bar.span["span_id"] for bar in in_batch}
        zooms.append(
            f"<details id='zoom-{i}' class='zoom' open><summary>{e(_batch_label(i, b))}: "
            f"{len(in_batch)} model calls in {duration(seconds(b))}</summary>"
            + _timeline_svg(run, colors, start(b), end(b),
                            lambda bar, ids=ids: bar.span["span_id"] in ids,  # type: ignore[misc]
                            f"batch-{i}-svg", [b]) + "</details>")
    legend = (f"<div class='legend'><span><i style='background:{MODEL}'></i>root model writes "
              f"code</span><span><i style='background:{CELL}'></i>cell runs</span><span>"
              f"<i style='background:{WAIT}'></i>waiting on sub-calls (dashed: a batch)</span>"
              "<span><i style='background:#9ca3af'></i>calls waiting for the pool's limit"
              "</span><span><i style='background:#fff;border:1.5px solid #111'></i>straggler"
              " (2x its pool's median or more)</span><span><i style='background:#dc2626'></i>"
              "failed</span></div>")
    return (f"<section id='timeline'><h2>Timeline: every model call on its pool and worker"
            f"</h2><p class='muted'>One row per call running at once on that pool and worker "
            f"process; hover a bar for its wait, tokens, cost, error.</p>{note}{legend}"
            f"<div style='overflow-x:auto'>{whole}{''.join(zooms)}</div></section>")


def _timeline_svg(run: Run, colors: dict[str, str], t0: int, t1: int,
                  shown: Callable[[Bar], bool], ident: str, batches: list[Span]) -> str:
    total = max(t1 - t0, 1)
    scale = PLOT_W / total

    def x(ns: int) -> float:
        return LABEL_W + max(0, ns - t0) * scale

    rows: list[str] = []
    y = 22
    if run.agent is not None:  # the root agent's own row: model calls, cells, sub-call waits
        rows.append(f"<text x='4' y='{y + 11}' font-weight='600'>root agent</text>")
        for kind, s in run.phases:
            if end(s) < t0 or start(s) > t1:
                continue
            fill = {"model": MODEL, "cell": CELL, "sub-calls": WAIT}[kind]
            h, dy = (14, 0) if kind != "sub-calls" else (6, 14)
            label = {"model": "model writes code", "cell": "cell runs",
                     "sub-calls": str(s.get("name", ""))}[kind]
            width = max(1.0, (min(end(s), t1) - max(start(s), t0)) * scale)
            rows.append(
                f"<rect class='phase' data-kind='{kind}' x='{x(start(s)):.1f}' y='{y + dy}' "
                f"width='{width:.1f}' height='{h}' fill='{fill}'><title>{e(label)}: "
                f"{e(duration(seconds(s)))}</title></rect>")
        y += 28
    for lane in run.lanes:
        bars = [bar for bar in lane.bars if shown(bar)]
        if not bars:
            continue
        slots = max(bar.slot for bar in bars) + 1
        color = colors.get(lane.pool, "#888")
        where = " · ".join(w for w in (lane.hardware, lane.instance.split("@")[0]) if w)
        stragglers = sum(bar.straggler for bar in bars)
        rows.append(f"<line x1='0' x2='{LABEL_W + PLOT_W}' y1='{y}' y2='{y}' stroke='#e5e7eb'/>"
                    f"<text x='4' y='{y + 14}' font-weight='600' fill='{color}'>"
                    f"{e(lane.pool)}</text><text x='4' y='{y + 28}' fill='#6b7280'>"
                    f"{e(where)}</text>"
                    f"<text x='4' y='{y + 42}' fill='#6b7280'>{len(bars)} calls, "
                    f"{slots} at once" + (f", {stragglers} slow" if stragglers else "")
                    + "</text>")
        waiting = [(t, d) for t, d in lane.waiting() if t0 <= t <= t1]
        top = y + 4
        if waiting:  # how many calls waited for the pool's limit, over time
            peak = max(d for _, d in waiting) or 1
            points = [f"{x(t0):.1f},{top + 16}"]
            level: float = top + 16
            for t, d in waiting:
                points += [f"{x(t):.1f},{level:.1f}", f"{x(t):.1f},{top + 16 - 16 * d / peak:.1f}"]
                level = top + 16 - 16 * d / peak
            points.append(f"{x(t1):.1f},{level:.1f}")
            rows.append(f"<polyline class='waiting' points='{' '.join(points)}' fill='none' "
                        f"stroke='#9ca3af' stroke-width='1.5'><title>calls waiting for "
                        f"{e(lane.pool)}'s limit (at most {peak} at once)</title></polyline>")
            top += 20
        height = 12 if slots <= 16 else max(3, 192 // slots)
        for bar in bars:
            s = bar.span
            run_start = start(s) + bar.queued_ns
            bx, bw = x(run_start), max(1.0, (end(s) - run_start) * scale)
            by = top + bar.slot * (height + 1)
            fill = "#dc2626" if failed(s) else color
            stroke = " stroke='#111' stroke-width='1.5'" if bar.straggler else ""
            cls = "bar" + (" straggler" if bar.straggler else "") + (
                " failed" if failed(s) else "") + ("" if bar.sub_call else " root-call")
            rows.append(f"<g class='{cls}' data-pool='{e(bar.pool)}'><rect x='{bx:.1f}' "
                        f"y='{by}' width='{bw:.1f}' height='{height}' fill='{fill}' rx='1'"
                        f"{stroke}/><title>{e(_bar_title(bar, run))}</title></g>")
        y = max(top + slots * (height + 1), y + 48) + 6
    for b in batches:
        if end(b) < t0 or start(b) > t1:
            continue
        rows.append(f"<line x1='{x(start(b)):.1f}' x2='{x(start(b)):.1f}' y1='18' y2='{y}' "
                    f"stroke='{WAIT}' stroke-dasharray='3,3'/><line x1='{x(end(b)):.1f}' "
                    f"x2='{x(end(b)):.1f}' y1='18' y2='{y}' stroke='{WAIT}' "
                    f"stroke-dasharray='3,3'/>")
    axis = []
    ticks = _ticks(total / 1e9)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    for tick in ticks:
        tx = LABEL_W + tick * 1e9 * scale
        at = (t0 - run.start_ns) / 1e9 + tick
        axis.append(f"<line x1='{tx:.1f}' x2='{tx:.1f}' y1='14' y2='{y}' stroke='#f3f4f6'/>"
                    f"<text x='{tx:.1f}' y='11' text-anchor='middle' fill='#6b7280'>"
                    f"+{at:.{decimals}f} s</text>")
    height_px = y + 8
    return (f"<svg id='{ident}' class='timeline' xmlns='http://www.w3.org/2000/svg' "
            f"width='{LABEL_W + PLOT_W}' height='{height_px}' "
            f"viewBox='0 0 {LABEL_W + PLOT_W} {height_px}'>{''.join(axis)}{''.join(rows)}</svg>")


def _batch_label(i: int, span: Span) -> str:
    a = attrs(span)
    name = str(a.get("gen_ai.tool.name") or span.get("name", ""))
    size = a.get("heterarch.batch")
    return f"{name} #{i}" + (f" ({size})" if size else "")


# --------------------------------------------------------------------------- tables


def _pools(run: Run, colors: dict[str, str]) -> str:
    head = ("<tr><th>pool</th><th>hardware</th><th>workers</th><th>calls</th><th>failed</th>"
            "<th>tokens in</th><th>tokens out</th><th>cost</th><th>share of cost</th>"
            "<th>busy</th><th>p50</th><th>p95</th><th>at once</th></tr>")
    total = run.cost_usd or 1.0
    rows = []
    for pool, p in run.pools.items():
        types = ", ".join(f"{t} {n}" for t, n in p.error_types.most_common())
        failures = f"{p.errors}" + (f" <span class='etype'>({e(types)})</span>" if types else "")
        rows.append(
            f"<tr data-pool='{e(pool)}'><td><i style='display:inline-block;width:10px;"
            f"height:10px;background:{colors[pool]};margin-right:5px'></i>{e(pool)}</td>"
            f"<td>{e(p.hardware or '-')}</td><td>{len(p.instances)}</td><td>{p.calls}</td>"
            f"<td>{failures}</td><td>{p.input_tokens:,}</td><td>{p.output_tokens:,}</td>"
            f"<td class='cost'>{money(p.cost_usd)}</td><td>{100 * p.cost_usd / total:.0f}%</td>"
            f"<td>{duration(p.busy_s)}</td>"
            f"<td>{duration(p.p50) if p.latencies else '-'}</td>"
            f"<td>{duration(p.p95) if p.latencies else '-'}</td>"
            f"<td>{p.peak_concurrency}</td></tr>")
    return (f"<section id='pools'><h2>Pools: tokens and dollars</h2><table>{head}"
            f"{''.join(rows)}</table></section>")


def _iterations(run: Run) -> str:
    if not run.iterations:
        return ""
    children = []
    for agent, steps in run.children:  # rlm_query children: their own iterations, folded
        a = attrs(agent)
        tokens, cost, _ = subtree_usage(agent, children_index(run.spans))
        why = f" <span class='etype'>{e(error_type(agent))}</span>" if failed(agent) else ""
        children.append(
            f"<details class='child-agent'><summary><b>{e(agent.get('name'))}</b> depth "
            f"{e(a.get('heterarch.depth', '?'))} on {e(a.get('heterarch.pool', '-'))}: "
            f"{len(steps)} iterations, {duration(seconds(agent))}, {tokens:,} tokens, "
            f"{money(cost)}{why}</summary>{_iteration_blocks(steps, run)}</details>")
    more = (f"<h3>Child agents ({len(children)})</h3>{''.join(children)}" if children else "")
    return (f"<section id='iterations'><h2>The root agent's iterations</h2>"
            f"{_iteration_blocks(run.iterations, run)}{more}</section>")


def _iteration_blocks(iterations: list[Iteration], run: Run) -> str:
    out = []
    for it in iterations:
        chat = it.chat
        meta = ""
        if chat is not None:
            a = attrs(chat)
            tin = int(a.get("gen_ai.usage.input_tokens") or 0)
            meta = (f"{duration(seconds(chat))}, tokens {tin:,}"
                    f"+{int(a.get('gen_ai.usage.output_tokens') or 0):,}, "
                    f"{money(float(a.get('heterarch.cost_usd') or 0))}")
            if failed(chat):
                meta += f" <span class='etype'>{e(error_type(chat))}</span>"
        reply = (f"<pre class='reply'>{e(it.reply)}</pre>" if it.reply else
                 "<p class='muted'>reply not recorded (content capture off)</p>")
        cells = []
        for c in it.cells:
            calls = "".join(
                f"<li>{e(k.get('name'))}: {e(_call_summary(k, run))}</li>" for k in c.sub_calls)
            err = f" <span class='etype'>{e(c.error)}</span>" if c.error else ""
            cells.append(
                f"<div class='cell'><b>cell {c.index}</b> <span class='muted'>"
                f"{e(duration(seconds(c.span)))}</span>{err}"
                f"<div class='muted'>code</div><pre class='code'>{e(c.code) or '(not recorded)'}"
                f"</pre>{f'<ul>{calls}</ul>' if calls else ''}"
                f"<div class='muted'>output the model saw</div>"
                f"<pre class='output'>{e(c.output) or '(not recorded)'}</pre></div>")
        out.append(f"<div class='iter' id='iteration-{it.number}'><h3>Iteration {it.number} "
                   f"<span class='muted'>{meta}</span></h3><div class='muted'>the model's reply"
                   f"</div>{reply}{''.join(cells)}</div>")
    return "".join(out)


def _call_summary(span: Span, run: Run) -> str:
    a = attrs(span)
    parts = [duration(seconds(span))]
    if a.get("heterarch.batch"):
        parts.append(f"{a['heterarch.batch']} prompts")
    served = a.get("heterarch.route.served") or a.get("heterarch.route.pools")
    if served:
        parts.append("on " + ", ".join(str(p) for p in served))
    if failed(span):
        parts.append(f"ERROR {error_type(span)}")
    return ", ".join(parts)


def _tree(run: Run) -> str:
    tree = build_tree(run.spans)
    index = children_index(run.spans)
    counter = [0]

    def label(node_span: Span) -> str:
        tokens, cost, errors = subtree_usage(node_span, index)
        text = e(node_label(node_span))
        name = e(node_span.get("name", "?"))
        text = text.replace(name, f"<b>{name}</b>", 1)
        if failed(node_span):
            text += f" <span class='etype'>{e(error_type(node_span))}</span>"
        if index.get(node_span["span_id"]) and (tokens or cost):
            text += (f" <span class='sub'>subtree: {tokens:,} tokens, {money(cost)}"
                     + (f", {errors} failed calls" if errors else "") + "</span>")
        return text

    def folded_label(group: list[SpanNode]) -> str:
        line = e(fold_label(group))
        types = Counter(error_type(n.span) for n in group if failed(n.span))
        if types:
            line += " <span class='etype'>" + e(", ".join(
                f"{t} x{n}" for t, n in types.most_common())) + "</span>"
        return line

    def render(children: list[SpanNode], level: int) -> str:
        groups: dict[str, list[SpanNode]] = {}
        for node in children:
            groups.setdefault(_fold_key(node.span), []).append(node)
        shown: set[str] = set()
        out = []
        for node in children:
            key = _fold_key(node.span)
            group = groups[key]
            counter[0] += 1
            ident = f"t{counter[0]}"
            if len(group) >= FOLD_MIN:
                if key in shown:
                    continue
                shown.add(key)
                kids = sorted((k for n in group for k in n.children),
                              key=lambda k: start(k.span))
                body = render(kids, level + 1)
                out.append(f"<details id='{ident}' class='fold'><summary>{folded_label(group)}"
                           f"</summary>{body}</details>" if body else
                           f"<div class='leaf fold'>{folded_label(group)}</div>")
            elif node.children:
                opened = " open" if level < 3 else ""
                orphan = "<span class='etype'>ORPHAN</span> " if node.orphan else ""
                out.append(f"<details id='{ident}'{opened}><summary>{orphan}"
                           f"{label(node.span)}</summary>{render(node.children, level + 1)}"
                           "</details>")
            else:
                out.append(f"<div class='leaf'>{label(node.span)}</div>")
        return "".join(out)

    return (f"<section id='tree' class='tree'><h2>Spawning tree ({tree.count} spans)</h2>"
            f"<p class='muted'>Folded as <code>heterarch trace show</code> folds it: three or "
            f"more alike siblings are one line; subtree totals count the model calls below."
            f"</p>{render(tree.roots, 0)}</section>")


def _errors(run: Run) -> str:
    if not run.errors and not run.events:
        return ("<section id='errors'><h2>Errors</h2><p>None: every span ended without an "
                "error, no retries, no fallbacks.</p></section>")
    types = Counter(error_type(s) for s in run.errors)
    summary = ", ".join(f"{t} x{n}" for t, n in types.most_common())
    groups: dict[tuple[str, str, str], list[Span]] = {}
    for s in run.errors:  # alike failures on one line: type, span, pool
        key = (error_type(s), str(s.get("name")), str(attrs(s).get("heterarch.pool", "-")))
        groups.setdefault(key, []).append(s)
    rows = []
    for (kind, name, pool), members in groups.items():
        first = members[0]
        rows.append(f"<tr class='error-row'><td>+{(start(first) - run.start_ns) / 1e9:.3f} s"
                    f"</td><td>{len(members)}</td><td style='text-align:left'>{e(name)}</td>"
                    f"<td>{e(pool)}</td><td class='etype'>{e(kind)}</td>"
                    f"<td style='text-align:left'>"
                    f"{e(str(first.get('status_description', ''))[:240])}</td></tr>")
    alike: dict[tuple[str, str, str, str], list[tuple[Span, dict[str, Any]]]] = {}
    for s, ev in run.events:  # alike events on one line: span, event, pool, error type
        a = ev.get("attributes") or {}
        what = (str(s.get("name")), str(ev.get("name")),
                str(a.get("pool") or attrs(s).get("heterarch.pool") or "-"),
                str(a.get("error.type") or a.get("exception.type") or ""))
        alike.setdefault(what, []).append((s, ev))
    events = []
    for (name, event, pool, kind), happened in alike.items():
        s, ev = happened[0]
        a = ev.get("attributes") or {}
        detail = ", ".join(f"{k}={v}" for k, v in a.items()
                           if k not in ("exception.stacktrace", "pool", "error.type"))
        events.append(f"<tr class='event-row'><td>+"
                      f"{(int(ev.get('time_ns') or start(s)) - run.start_ns) / 1e9:.3f} s</td>"
                      f"<td>{len(happened)}</td><td style='text-align:left'>{e(name)}: "
                      f"{e(event)}</td><td>{e(pool)}</td><td class='etype'>{e(kind)}</td>"
                      f"<td style='text-align:left'>{e(detail[:300])}</td></tr>")
    head = ("<tr><th>first</th><th>spans</th><th style='text-align:left'>span</th><th>pool</th>"
            "<th>error.type</th><th style='text-align:left'>message (the first)</th></tr>")
    table = f"<table>{head}{''.join(rows)}</table>" if rows else ""
    ev_table = (f"<h3>Retries, fallbacks, escalations</h3><table>{''.join(events)}</table>"
                if events else "")
    return (f"<section id='errors'><h2>Errors ({len(run.errors)}: {e(summary) or 'none'})</h2>"
            f"{table}{ev_table}</section>")
