"""``heterarch view``: the page of a real run (simulator over HTTP, real nats-server, worker
processes, Docker sandboxes), loaded in a real headless Chromium; the live server; ``trace list``.

Chromium comes from Debian (``make test`` installs it); the screenshots go to
``build/view-screenshots/`` (not committed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from runtime._nats_server import free_port

from .recorded_run import ROOT, RecordedRun

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = ROOT / "build" / "view-screenshots"
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium; "
                             "`make test` installs it)")
pytestmark = pytest.mark.timeout(600)

Span = dict[str, Any]


def heterarch(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "heterarch.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def chromium(url: str, *args: str) -> str:
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", "--disable-dev-shm-usage", *args, url],
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def screenshot(url: str, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    path.unlink(missing_ok=True)
    chromium(url, "--window-size=1300,2600", f"--screenshot={path}")
    assert path.stat().st_size > 20_000  # a picture, not a blank page
    return path


def spans_of(run: RecordedRun) -> list[Span]:
    return [json.loads(line) for line in run.spans.read_text().splitlines()]


def chats(spans: list[Span]) -> list[Span]:
    return [s for s in spans if s["attributes"].get("gen_ai.operation.name") == "chat"]


def section(dom: str, ident: str) -> str:
    """The text of the element with this id up to the next section (enough for checks)."""
    at = dom.index(f'id="{ident}"')
    following = dom.find("<section", at)
    return dom[at: following if following > 0 else len(dom)]


def text(fragment: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment)).replace("&amp;", "&")


def render(run: RecordedRun, tmp_path: Path, name: str) -> tuple[Path, str]:
    out = tmp_path / f"{name}.html"
    done = heterarch("view", str(run.spans), "--html", str(out))
    assert done.returncode == 0, done.stderr
    return out, chromium(out.as_uri(), "--dump-dom")


@needs_chromium
def test_the_page_of_a_run_in_a_browser(good_run: RecordedRun, tmp_path: Path) -> None:
    spans = spans_of(good_run)
    page, dom = render(good_run, tmp_path, "good-run")
    summary = text(section(dom, "summary"))
    assert "answered" in summary and good_run.question in summary
    answer = good_run.result.stdout.strip()
    assert re.search(r'id="answer"[^>]*>([^<]*)<', dom).group(1) == answer  # type: ignore[union-attr]
    model_calls = chats(spans)
    cost = sum(c["attributes"]["heterarch.cost_usd"] for c in model_calls)
    tokens = sum(c["attributes"]["gen_ai.usage.input_tokens"]
                 + c["attributes"]["gen_ai.usage.output_tokens"] for c in model_calls)
    assert f"${cost:.4f} cost" in summary and f"{tokens:,} tokens" in summary
    assert f"{len(model_calls)} model calls" in summary and "0 failed spans" in summary

    # the timeline: one bar per model call, on its pool; the narrow wafer pool (4 at once)
    # never runs more than 4, and the calls that waited for it show as waiting
    whole = dom[dom.index('id="timeline-svg"'): dom.index("</svg>", dom.index('id="timeline-svg"'))]
    bars = re.findall(r'<g class="bar[^"]*" data-pool="([^"]+)"', whole)
    assert Counter(bars) == Counter(c["attributes"]["heterarch.pool"] for c in model_calls)
    timeline = text(section(dom, "timeline"))
    for pool, n in Counter(bars).items():
        at_once = int(re.search(rf"{pool} \S+ · \S+ {n} calls, (\d+) at once",  # type: ignore[union-attr]
                                timeline).group(1))
        assert 1 <= at_once <= (4 if pool == "wafer" else 64)
    if Counter(bars)["wafer"] > 4:
        assert 'class="waiting"' in whole  # more wafer calls than its limit: some waited
    assert 'class="zoom"' in dom and "llm_query_batched #1" in timeline

    # pools: calls, tokens, dollars as the spans say
    pools = section(dom, "pools")
    for pool, n in Counter(c["attributes"]["heterarch.pool"] for c in model_calls).items():
        row = text(re.search(rf'<tr data-pool="{pool}">.*?</tr>', pools).group(0))  # type: ignore[union-attr]
        pool_cost = sum(c["attributes"]["heterarch.cost_usd"] for c in model_calls
                        if c["attributes"]["heterarch.pool"] == pool)
        assert row.split()[3] == str(n) and f"${pool_cost:.4f}" in row

    # the root agent's iterations: the model's reply, the code, the output it saw
    agent = next(s for s in spans if s["name"] == "invoke_agent rlm-root")
    root_chats = [c for c in model_calls if c["parent_span_id"] == agent["span_id"]]
    iterations = section(dom, "iterations")
    assert iterations.count('class="iter"') == len(root_chats) >= 1
    cells = [s for s in spans if s["name"] == "execute_tool repl"]
    for cell in cells:
        code = cell["attributes"]["gen_ai.tool.call.arguments"]
        assert text(code).strip()[:80] in text(iterations)
    assert "llm_query_batched" in iterations and "output the model saw" in iterations

    # the tree folds as `trace show` does, with the subtree's money
    tree = text(section(dom, "tree"))
    assert re.search(r"\d+ x chat on ", tree) and "subtree:" in tree
    assert "None: every span ended without an error" in text(section(dom, "errors"))
    shot = screenshot(page.as_uri(), "good-run.png")
    print(f"screenshot: {shot}")


@needs_chromium
def test_a_pool_that_refuses_connections_on_the_page(down_run: RecordedRun,
                                                     tmp_path: Path) -> None:
    spans = spans_of(down_run)
    page, dom = render(down_run, tmp_path, "down-run")
    failed = [c for c in chats(spans) if c["status"] == "ERROR"]
    assert failed and {c["attributes"]["error.type"] for c in failed} == {"PoolUnreachable"}
    whole = dom[dom.index('id="timeline-svg"'): dom.index("</svg>", dom.index('id="timeline-svg"'))]
    assert len(re.findall(r'<g class="bar[^"]* failed"', whole)) == len(failed)
    pools = section(dom, "pools")
    wafer = text(re.search(r'<tr data-pool="wafer">.*?</tr>', pools).group(0))  # type: ignore[union-attr]
    assert f"{len(failed)} (PoolUnreachable {len(failed)})" in wafer
    errors = text(section(dom, "errors"))
    assert "PoolUnreachable" in errors and "PoolOverloaded" not in errors
    assert "execute_tool llm_query_batched: route.fallback wafer PoolUnreachable" in errors
    # the batch says where its prompts were answered: not on wafer
    iterations = text(section(dom, "iterations"))
    served = re.search(r"llm_query_batched: [^,]+, (\d+) prompts, on ([^<]+?)(?: [A-Z]|$)",
                       iterations)
    assert served is not None and "wafer" not in served.group(2)
    tree = text(section(dom, "tree"))
    assert "errors (PoolUnreachable" in tree
    shot = screenshot(page.as_uri(), "down-run.png")
    print(f"screenshot: {shot}")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return str(response.read().decode())


@needs_chromium
def test_the_live_page_follows_a_run_still_writing_its_spans(good_run: RecordedRun,
                                                             tmp_path: Path) -> None:
    lines = good_run.spans.read_text().splitlines()
    root = next(i for i, line in enumerate(lines) if json.loads(line)["parent_span_id"] == "")
    partial = tmp_path / "spans.jsonl"
    partial.write_text("".join(line + "\n" for i, line in enumerate(lines) if i != root))
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server = subprocess.Popen(
        [sys.executable, "-m", "heterarch.cli", "view", str(partial), "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # printed once the server listens
        assert f"http://127.0.0.1:{port}/" in line, line
        url = f"http://127.0.0.1:{port}/"
        dom = chromium(url, "--dump-dom")
        assert "in progress" in text(section(dom, "summary")) and 'id="live"' in dom
        before = _get(url + "version")
        with partial.open("a") as f:  # the run ends: its root span arrives
            f.write(lines[root] + "\n")
        assert _get(url + "version") != before  # what the page polls, then swaps its body
        assert "answered" in text(_get(url + "fragment"))
        assert "answered" in text(section(chromium(url, "--dump-dom"), "summary"))
    finally:
        server.terminate()
        server.wait(30)
        if server.stdout is not None:
            server.stdout.close()


def test_trace_list_and_show_say_what_is_there(good_run: RecordedRun, tmp_path: Path) -> None:
    trace_id = spans_of(good_run)[0]["trace_id"]
    listed = heterarch("trace", "list", "--file", str(good_run.spans))
    assert listed.returncode == 0, listed.stderr
    [line] = listed.stdout.splitlines()  # one run, one trace
    assert line.startswith(trace_id) and " OK " in line and good_run.question in line
    missing = heterarch("trace", "show", "abc", cwd=tmp_path)  # no span file here
    assert missing.returncode == 2
    assert len(missing.stdout.strip().splitlines()) == 1
    assert "no span file" in missing.stdout and "HETERARCH_TRACE_FILE" in missing.stdout
    shown = heterarch("trace", "show", trace_id[:8], "--file", str(good_run.spans))
    assert shown.returncode == 0 and "x chat on" in shown.stdout


def _run_log(path: Path) -> None:
    """A run log as ``heterarch rlm --log`` writes it: the run, each iteration as it ended
    (reply, code, output, sub-calls with pool, tokens, dollars, latency), the answer."""
    t = 1_800_000_000.0
    calls = [{"kind": "llm", "name": "", "pool": "h100" if i % 3 == 0 else "wafer",
              "prompt": f"label chunk {i}", "reply": "3", "input_tokens": 50,
              "output_tokens": 5, "cost_usd": 0.0001, "latency_s": 0.2 + 0.01 * i,
              "error": "" if i != 4 else "PoolUnreachable: connection refused"}
             for i in range(12)]
    events = [
        {"event": "run", "question": "How many records are about a location?", "chars": 9000},
        {"event": "iteration", "agent_id": "a1", "depth": 0, "iteration": 1,
         "pool": "frontier", "reply": "```repl\nprint(context[:100])\n```",
         "code": ["print(context[:100])"], "output": "[cell 1 output]\nDate: ...",
         "sub_calls": [], "input_tokens": 100, "output_tokens": 20, "cost_usd": 0.001,
         "latency_s": 0.8},
        {"event": "iteration", "agent_id": "a1", "depth": 0, "iteration": 2,
         "pool": "frontier", "reply": "```repl\nr = llm_query_batched(chunks)\n```",
         "code": ["r = llm_query_batched(chunks)"], "output": "[cell 1 output]\n36",
         "sub_calls": calls, "input_tokens": 200, "output_tokens": 30, "cost_usd": 0.002,
         "latency_s": 0.9},
        {"event": "iteration", "agent_id": "a1", "depth": 0, "iteration": 3,
         "pool": "frontier", "reply": "FINAL(36)", "code": [], "output": "", "sub_calls": [],
         "input_tokens": 300, "output_tokens": 5, "cost_usd": 0.003, "latency_s": 0.6},
        {"event": "answer", "text": "36", "ok": True, "stop_reason": "final", "iterations": 3,
         "usage": {}, "cost_usd": 0.0072, "wall_s": 3.3, "trace_id": ""},
    ]
    times = [0.0, 1.0, 2.5, 3.2, 3.3]
    path.write_text("".join(json.dumps({"run": "4f1c9a", "time": t + dt, **e}) + "\n"
                            for dt, e in zip(times, events, strict=True)))


@needs_chromium
def test_the_page_of_a_run_log(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    _run_log(log)
    out = tmp_path / "log.html"
    done = heterarch("view", str(log), "--html", str(out))
    assert done.returncode == 0, done.stderr
    dom = chromium(out.as_uri(), "--dump-dom")
    summary = text(section(dom, "summary"))
    assert "How many records are about a location?" in summary and "answered" in summary
    assert "3 iterations" in summary and "12 sub-calls" in summary
    assert "$0.0072 cost" in summary  # the root's three calls and the twelve sub-calls
    assert 'id="from-log"' in dom  # the timeline says its start times are not exact
    bars = re.findall(r'<g class="bar([^"]*)" data-pool="([^"]+)"', dom[
        dom.index('id="timeline-svg"'): dom.index("</svg>", dom.index('id="timeline-svg"'))])
    assert Counter(pool for _, pool in bars) == {"frontier": 3, "wafer": 8, "h100": 4}
    assert sum("failed" in cls for cls, _ in bars) == 1
    iterations = section(dom, "iterations")
    assert iterations.count('class="iter"') == 3 and "llm_query_batched(chunks)" in iterations
    assert "PoolUnreachable" in text(section(dom, "errors"))


@pytest.mark.parametrize("which", ["good_run", "down_run"])
def test_a_run_log_and_the_spans_of_the_same_run_say_the_same(
        which: str, request: pytest.FixtureRequest) -> None:
    from heterarch.cli.view import build_run, read_spans

    recorded: RecordedRun = request.getfixturevalue(which)
    from_spans = build_run(read_spans(recorded.spans))
    from_log = build_run(read_spans(recorded.log))  # `heterarch rlm --log` of the same run
    assert from_log.question == from_spans.question == recorded.question
    assert from_log.answer == from_spans.answer == recorded.result.stdout.strip()
    assert [it.reply for it in from_log.iterations] == [it.reply for it in from_spans.iterations]
    assert from_log.cost_usd == pytest.approx(from_spans.cost_usd)
    assert from_log.tokens == from_spans.tokens
    assert {p: (s.calls, s.errors) for p, s in from_log.pools.items()} \
        == {p: (s.calls, s.errors) for p, s in from_spans.pools.items()}


def test_the_cli_says_how_to_see_the_run(good_run: RecordedRun) -> None:
    said = good_run.result.stderr
    assert f"`heterarch view {good_run.log}`" in said
    assert f"`heterarch view {good_run.spans} --trace " in said
