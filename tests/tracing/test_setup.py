"""configure_tracing in this process: real OTLP exporters (HTTP and gRPC) against local receivers,
the span file, re-configuration, bad settings, content capture, and ``trace show`` rendering."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import grpc
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from rich.console import Console

from heterarch.cli.trace_show import (
    build_tree,
    jaeger_to_spans,
    load_spans_jaeger,
    load_spans_jsonl,
    render_text,
    trace_show_command,
)
from runtime import configure_tracing
from runtime._observe.tracing import (
    ATTR_COST_USD,
    ATTR_GENAI_INPUT_TOKENS,
    ATTR_GENAI_OPERATION,
    ATTR_GENAI_OUTPUT_TOKENS,
    ATTR_HARDWARE,
    ATTR_POOL,
    content_capture_enabled,
    truncate_content,
)
from runtime.errors import RuntimeConfigError
from tests._otel import reset_tracing

from .test_tracing import Receiver

OTEL_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
             "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
             "OTEL_SERVICE_NAME", "OTEL_SDK_DISABLED", "OTEL_RESOURCE_ATTRIBUTES",
             "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "HETERARCH_TRACE_FILE",
             "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")


@pytest.fixture(autouse=True)
def fresh_tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A clean environment, and OTel's set-once global provider put back after each test
    (OTel's own test suites do the same), so no other test sees a provider from here."""
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    _reset()
    yield
    _reset()


def _reset() -> None:
    reset_tracing()


def _make_spans() -> str:
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("invoke_agent rlm") as root:
        root.set_attribute(ATTR_POOL, "frontier")
        with tracer.start_as_current_span("chat m") as chat:
            chat.set_attribute(ATTR_HARDWARE, "wafer-scale")
            chat.set_attribute(ATTR_GENAI_INPUT_TOKENS, 120)
        return f"{root.get_span_context().trace_id:032x}"


def test_off_when_nothing_is_configured() -> None:
    handle = configure_tracing()
    assert not handle.enabled
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # nothing installed
    handle.shutdown()  # a no-op
    assert handle.trace_url("ab" * 16) is None


def test_service_name_from_the_standard_variables(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,team=x")
    handle = configure_tracing(jsonl_path=tmp_path / "a.jsonl")
    assert handle.service_name == "from-attrs"
    handle.shutdown()
    _reset()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    handle = configure_tracing(jsonl_path=tmp_path / "b.jsonl")
    assert handle.service_name == "from-env"
    handle.shutdown()
    _reset()
    monkeypatch.delenv("OTEL_SERVICE_NAME")
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES")
    assert configure_tracing(jsonl_path=tmp_path / "c.jsonl").service_name == "heterarch-cli"


def test_sdk_disabled_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not configure_tracing(jsonl_path=tmp_path / "s.jsonl").enabled


def test_otlp_http_exports_names_attributes_parents_and_resource(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    with Receiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        handle = configure_tracing(role="worker", pools=["gpu", "cpu"], service_name="svc")
        assert handle.enabled and handle.protocol == "http/protobuf"
        _make_spans()
        handle.shutdown()
    by_name = {s.name: s for s in receiver.spans}
    assert set(by_name) == {"invoke_agent rlm", "chat m"}
    assert by_name["chat m"].parent_span_id == by_name["invoke_agent rlm"].span_id
    attrs = {a.key: a.value for a in by_name["chat m"].attributes}
    assert attrs[ATTR_HARDWARE].string_value == "wafer-scale"
    assert attrs[ATTR_GENAI_INPUT_TOKENS].int_value == 120
    resource = {a.key: a.value.string_value for a in receiver.resources[0].attributes}
    assert resource["service.name"] == "svc"
    assert resource["heterarch.role"] == "worker"
    assert resource["heterarch.pools"] == "gpu,cpu"
    assert resource["service.namespace"] == "heterarch"
    assert resource["service.instance.id"].startswith("worker-gpu-cpu@")
    assert resource["deployment.environment"] == "test"


class _GrpcCollector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.got = threading.Event()

    def Export(self, request: ExportTraceServiceRequest,
               context: Any) -> ExportTraceServiceResponse:
        self.requests.append(request)
        self.got.set()
        return ExportTraceServiceResponse()


def test_otlp_grpc_exports_to_a_real_grpc_server() -> None:
    collector = _GrpcCollector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        handle = configure_tracing(endpoint=f"http://127.0.0.1:{port}", protocol="grpc")
        assert handle.protocol == "grpc"
        _make_spans()
        handle.shutdown()
        assert collector.got.wait(10)
    finally:
        server.stop(grace=None).wait(5)
    spans = [s for r in collector.requests for rs in r.resource_spans
             for ss in rs.scope_spans for s in ss.spans]
    by_name = {s.name: s for s in spans}
    assert by_name["chat m"].parent_span_id == by_name["invoke_agent rlm"].span_id


def test_span_file_round_trip_and_reconfiguration(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    handle = configure_tracing(jsonl_path=first, role="cli")
    trace_id = _make_spans()
    handle.shutdown()
    spans = load_spans_jsonl(first, trace_id[:6])  # a prefix is enough
    assert {s["name"] for s in spans} == {"invoke_agent rlm", "chat m"}
    chat = next(s for s in spans if s["name"] == "chat m")
    root = next(s for s in spans if s["name"] == "invoke_agent rlm")
    assert chat["parent_span_id"] == root["span_id"] and root["parent_span_id"] == ""
    assert chat["attributes"][ATTR_GENAI_INPUT_TOKENS] == 120
    assert chat["kind"] == "INTERNAL" and chat["end_ns"] >= chat["start_ns"]
    assert chat["service"] == "heterarch-cli" and chat["instance"].startswith("cli@")
    assert set(chat) >= {"trace_id", "span_id", "parent_span_id", "status", "events"}
    # Configured again in the same process: the new exporter takes over, the old one is done.
    handle = configure_tracing(jsonl_path=second)
    other = _make_spans()
    handle.shutdown()
    assert load_spans_jsonl(first, other) == []
    assert len(load_spans_jsonl(second, other)) == 2


def test_unreachable_collector_warns_once_and_shutdown_is_bounded(
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.WARNING, logger="heterarch.tracing")
    handle = configure_tracing(endpoint="http://127.0.0.1:9")  # nothing listens on port 9
    assert handle.enabled
    trace_id = _make_spans()
    assert int(trace_id, 16) != 0  # spans are still created
    started = time.monotonic()
    handle.shutdown()
    assert time.monotonic() - started < 8
    warnings = [r for r in caplog.records if r.name == "heterarch.tracing"]
    assert len(warnings) == 1 and "not delivered" in warnings[0].getMessage()
    assert "Traceback" not in capfd.readouterr().err


def test_jaeger_link_only_when_spans_reached_a_local_collector(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Receiver() as receiver:  # a real OTLP/HTTP receiver on loopback
        handle = configure_tracing(endpoint=receiver.url)
        trace_id = _make_spans()
        assert handle.trace_url(trace_id) is None  # nothing delivered yet
        assert handle.force_flush()
        # delivered, but no Jaeger UI answers on this machine: no link that leads nowhere
        assert handle.trace_url(trace_id) is None
        # the UI that receives the spans, as the user named it
        monkeypatch.setenv("HETERARCH_TRACE_UI", "http://localhost:6006/traces/{trace_id}")
        assert handle.trace_url(trace_id) == f"http://localhost:6006/traces/{trace_id}"
        monkeypatch.delenv("HETERARCH_TRACE_UI")
        assert handle.delivery_note() == f"{receiver.url}: delivered"
        handle.shutdown()
    _reset()
    dead = configure_tracing(endpoint="http://127.0.0.1:9")  # nothing listens on port 9
    trace_id = _make_spans()
    dead.force_flush()
    assert dead.trace_url(trace_id) is None
    assert "NOT delivered" in dead.delivery_note()
    dead.shutdown()
    _reset()
    spans = tmp_path / "spans.jsonl"
    file_only = configure_tracing(jsonl_path=spans)
    trace_id = _make_spans()
    file_only.force_flush()
    assert file_only.trace_url(trace_id) is None
    assert file_only.delivery_note() == f"span file {spans}"
    file_only.shutdown()


@pytest.mark.parametrize(("endpoint", "protocol", "says"), [
    ("http://127.0.0.1:9", "carrier-pigeon", "unknown OTLP protocol"),
    ("ftp://collector:4318", None, "scheme 'ftp'"),
    ("http://:99999", None, "Port out of range"),
    ("collector:4318", "http/protobuf", "no http:// or https:// scheme"),
])
def test_bad_settings_give_one_clear_warning(caplog: pytest.LogCaptureFixture, endpoint: str,
                                             protocol: str | None, says: str) -> None:
    caplog.set_level(logging.WARNING, logger="heterarch.tracing")
    handle = configure_tracing(endpoint=endpoint, protocol=protocol)
    messages = [r.getMessage() for r in caplog.records if r.name == "heterarch.tracing"]
    assert len(messages) == 1 and says in messages[0]
    if protocol == "carrier-pigeon":
        assert handle.enabled and handle.protocol == "http/protobuf"  # the fallback
    else:
        assert not handle.enabled
    handle.shutdown()


def test_content_capture_is_opt_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert not content_capture_enabled()
    configure_tracing()
    assert not content_capture_enabled()
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    assert content_capture_enabled()
    configure_tracing(capture_content=False)  # the argument wins over the variable
    assert not content_capture_enabled()
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
    configure_tracing(capture_content=True)
    assert content_capture_enabled()
    assert truncate_content("x" * 10, limit=4) == "xxxx... [6 more]"
    assert truncate_content("short") == "short"
    assert len(truncate_content("y" * 5000)) < 2100


def _span(span_id: str, parent: str, name: str, start_ms: float, end_ms: float,
          **attributes: Any) -> dict[str, Any]:
    return {"trace_id": "ab" * 16, "span_id": span_id * 16, "parent_span_id": parent * 16,
            "name": name, "start_ns": int(start_ms * 1e6), "end_ns": int(end_ms * 1e6),
            "status": attributes.pop("status", "UNSET"), "attributes": attributes}


SPANS = [
    _span("1", "", "invoke_agent rlm", 0, 2500, **{ATTR_POOL: "frontier",
                                                    ATTR_HARDWARE: "api",
                                                    ATTR_COST_USD: 0.0123}),
    _span("2", "1", "chat frontier-model", 1, 400,
          **{ATTR_POOL: "frontier", ATTR_GENAI_INPUT_TOKENS: 1200,
             ATTR_GENAI_OUTPUT_TOKENS: 80, ATTR_COST_USD: 0.01}),
    _span("3", "1", "invoke_agent LLMAgent", 500, 600,
          **{ATTR_POOL: "fast", ATTR_HARDWARE: "wafer-scale"}),
    _span("4", "3", "chat small", 510, 590,
          **{ATTR_GENAI_INPUT_TOKENS: 300, ATTR_GENAI_OUTPUT_TOKENS: 5, "status": "ERROR"}),
    _span("5", "9", "invoke_agent lost", 700, 800),
]

EXPECTED = """\
trace abababababababababababababababab (5 spans)
├── invoke_agent rlm  pool=frontier  hw=api  2500.0 ms  $0.01230
│   ├── chat frontier-model  pool=frontier  399.0 ms  tokens=1,200+80  $0.01000
│   └── invoke_agent LLMAgent  pool=fast  hw=wafer-scale  100.0 ms
│       └── chat small  80.0 ms  tokens=300+5  ERROR
└── ORPHAN (parent 9999999999999999 not in trace) invoke_agent lost  100.0 ms
"""


def test_trace_show_renders_the_spawning_tree(tmp_path: Path) -> None:
    assert render_text(build_tree(SPANS)) == EXPECTED
    spans_file = tmp_path / "spans.jsonl"
    spans_file.write_text("".join(json.dumps(s) + "\n" for s in SPANS) + '{"torn": ')
    console = Console(record=True, width=200, color_system=None)
    assert trace_show_command("abab", jsonl=spans_file, console=console) == 0
    assert console.export_text() == EXPECTED
    assert trace_show_command("ffff", jsonl=spans_file, console=console) == 1
    assert trace_show_command("ab", jsonl=tmp_path / "missing.jsonl", console=console) == 2


def _big_batch() -> list[dict[str, Any]]:
    """A root, a batch tool span with 5 agents (3 on wafer, 2 on frontier, one failed), each
    with one chat span, and 2 create spans (too few to fold)."""
    spans = [_span("a", "", "invoke_agent rlm", 0, 3000),
             _span("b", "a", "execute_tool llm_query_batched", 10, 2000)]
    for i, (pool, ms) in enumerate([("wafer", 300), ("wafer", 400), ("frontier", 900),
                                    ("wafer", 350), ("frontier", 1000)]):
        agent, chat = f"{i + 1}", f"{i + 6}"
        spans.append(_span(agent, "b", f"invoke_agent {pool}-lane", 20 + i, 20 + i + ms,
                           **{ATTR_POOL: pool, ATTR_GENAI_OPERATION: "invoke_agent",
                              "status": "ERROR" if i == 2 else "UNSET"}))
        spans.append(_span(chat, agent, f"chat {pool}-model", 21 + i, 20 + i + ms - 1,
                           **{ATTR_POOL: pool, ATTR_GENAI_OPERATION: "chat",
                              ATTR_GENAI_INPUT_TOKENS: 100, ATTR_GENAI_OUTPUT_TOKENS: 10}))
    for i in range(2):
        spans.append(_span(f"c{i}", "b", "create_agent wafer-lane", 11 + i, 15 + i,
                           **{ATTR_GENAI_OPERATION: "create_agent", ATTR_POOL: "wafer"}))
    return spans


def test_trace_show_folds_similar_siblings_and_cuts_at_a_depth() -> None:
    tree = build_tree(_big_batch())
    folded = render_text(tree)
    assert folded.splitlines()[3:] == [
        "        ├── create_agent wafer-lane  pool=wafer  4.0 ms",
        "        ├── create_agent wafer-lane  pool=wafer  4.0 ms",
        "        └── 5 x invoke_agent on wafer 3 / frontier 2, p50 0.40 s, 1 error",
        "            └── 5 x chat on wafer 3 / frontier 2, p50 0.40 s, 0 errors, tokens=550",
    ]
    everything = render_text(tree, fold=False)
    assert everything.count("invoke_agent wafer-lane") == 3
    assert everything.count("chat frontier-model") == 2
    assert len(everything.splitlines()) == 1 + len(_big_batch())
    assert render_text(tree, depth=1).splitlines()[2:] == [
        "    └── execute_tool llm_query_batched  1990.0 ms",
        "        └── ... 12 spans below (--depth 1)",
    ]
    assert render_text(tree, depth=0).splitlines()[2:] == ["    └── ... 13 spans below (--depth 0)"]


def test_trace_id_prefix_must_be_unique(tmp_path: Path) -> None:
    spans_file = tmp_path / "spans.jsonl"
    other = dict(SPANS[0], trace_id="ac" * 16)
    spans_file.write_text("".join(json.dumps(s) + "\n" for s in [*SPANS, other]))
    with pytest.raises(RuntimeConfigError, match="give more digits"):
        load_spans_jsonl(spans_file, "a")


def _jaeger_json() -> dict[str, Any]:
    def tags(attrs: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"key": k, "type": "string", "value": v} for k, v in attrs.items()]

    spans = []
    for s in SPANS:
        refs = ([{"refType": "CHILD_OF", "traceID": s["trace_id"], "spanID": s["parent_span_id"]}]
                if s["parent_span_id"] else [])
        extra = {"otel.status_code": "ERROR"} if s["status"] == "ERROR" else {}
        spans.append({"traceID": s["trace_id"], "spanID": s["span_id"],
                      "operationName": s["name"], "references": refs,
                      "startTime": s["start_ns"] // 1000,
                      "duration": (s["end_ns"] - s["start_ns"]) // 1000,
                      "tags": tags({**s["attributes"], **extra}), "processID": "p1"})
    return {"data": [{"traceID": "ab" * 16, "spans": spans,
                      "processes": {"p1": {"serviceName": "heterarch", "tags": []}}}]}


def test_trace_show_from_jaeger_query_api() -> None:
    body = json.dumps(_jaeger_json()).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == f"/api/traces/{'ab' * 16}"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body if found else b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        spans = load_spans_jaeger(url, "ab" * 16)
        assert render_text(build_tree(spans)) == EXPECTED
        assert load_spans_jaeger(url, "cd" * 16) == []
    finally:
        server.shutdown()
        server.server_close()
    assert jaeger_to_spans({}) == []


def test_trace_show_reads_a_trace_saved_from_jaeger(tmp_path: Path) -> None:
    saved = tmp_path / "trace.json"
    saved.write_text(json.dumps(_jaeger_json(), indent=2))
    console = Console(record=True, width=200, color_system=None)
    assert trace_show_command("abab", jsonl=saved, console=console) == 0
    assert console.export_text() == EXPECTED
    saved.write_text('{"data": [{"spans": [{"no": "ids"}]}]}')
    with pytest.raises(RuntimeConfigError, match="neither a span file nor Jaeger JSON"):
        load_spans_jsonl(saved, "ab")


def test_trace_show_says_when_jaeger_is_unreachable() -> None:
    with pytest.raises(RuntimeConfigError, match="cannot read trace from Jaeger"):
        load_spans_jaeger("http://127.0.0.1:9", "ab" * 16, timeout=2)
    console = Console(record=True, width=200, color_system=None)
    assert trace_show_command("ab" * 16, jaeger="http://127.0.0.1:9", console=console) == 2
    assert "cannot read trace from Jaeger" in console.export_text()


def test_cli_trace_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from heterarch.cli.main import main

    spans_file = tmp_path / "spans.jsonl"
    spans_file.write_text("".join(json.dumps(s) + "\n" for s in SPANS))
    assert main(["trace", "show", "abab", "--file", str(spans_file)]) == 0
    out = capsys.readouterr().out
    assert "invoke_agent LLMAgent" in out and "ORPHAN" in out and "tokens=300+5" in out


@pytest.mark.anyio
async def test_a_restarted_agent_stays_in_its_runs_trace(tmp_path: Path) -> None:
    """A supervisor restarts a crashed child outside any span: the new incarnation's
    create_agent goes under the first one's (same trace), with a link to it."""
    from runtime import ActorSystem, PoolConfig, Worker
    from tests.actors.app import AskChild, CrashChild, Parent, SpawnChildren
    from transports import MemoryBus, MemoryTransport

    spans_file = tmp_path / "spans.jsonl"
    handle = configure_tracing(jsonl_path=spans_file)
    pools = {"cpu": PoolConfig(name="cpu", hardware="cpu", capacity=8,
                               modules=["tests.actors.app"])}
    bus = MemoryBus()
    tracer = trace.get_tracer("tests")
    async with Worker(pools, ["cpu"], transport=MemoryTransport(bus=bus)), \
            ActorSystem(MemoryTransport(bus=bus)) as system:
        with tracer.start_as_current_span("invoke_agent test-run") as run:
            parent = await system.spawn(Parent, pool="cpu")
            await parent.ask(SpawnChildren(1, pool="cpu"), timeout=30)
            assert await parent.ask(CrashChild(0), timeout=30) == "RemoteError"
            incarnation = 1
            with anyio.fail_after(30):
                while incarnation < 2:  # the restart happens after the crash's reply
                    incarnation = await parent.ask(AskChild(0), timeout=10)
        trace_id = f"{run.get_span_context().trace_id:032x}"
    handle.shutdown()
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    assert {s["trace_id"] for s in spans} == {trace_id}  # no trace of its own for a restart
    created = [s for s in spans if s["name"] == "create_agent child-0"]
    first, again = sorted(created, key=lambda s: s["attributes"]["heterarch.restart"])
    assert again["attributes"]["heterarch.restart"] is True
    assert again["parent_span_id"] == first["span_id"]
    assert again["links"] == [{"trace_id": trace_id, "span_id": first["span_id"],
                               "attributes": {"heterarch.link": "restart of"}}]


def test_trace_list_from_a_span_file_and_from_jaegers_query_api(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from heterarch.cli.main import main

    spans_file = tmp_path / "spans.jsonl"
    other = dict(SPANS[0], trace_id="cd" * 16, span_id="7" * 16)
    spans_file.write_text("".join(json.dumps(s) + "\n" for s in [*SPANS, other]))
    assert main(["trace", "list", "--file", str(spans_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["ab" * 16, "cd" * 16]  # oldest first
    assert "5 spans" in lines[0] and "invoke_agent rlm" in lines[0]
    body = json.dumps(_jaeger_json()).encode()
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert main(["trace", "list", "--jaeger", url]) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert asked == ["/api/traces?service=heterarch-cli&limit=20"]
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("ab" * 16) and "5 spans" in line
