"""The ``heterarch`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import json
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import anyio
import msgspec

from actors import HeterarchError, Query

from ..sim.simulator import add_simulator_arguments

if TYPE_CHECKING:
    from runtime._observe.tracing import TracingHandle

Command = Callable[[argparse.Namespace], int]


NATS_HELP = ("NATS server URL(s), comma-separated (unset: $HETERARCH_NATS_URL, else "
             "nats://127.0.0.1:4222)")
TRACE_HELP = ("export spans to the local Jaeger (http://localhost:4318, `make compose-up`); "
              "the OTEL_* variables and $HETERARCH_TRACE_FILE work too")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default (argparse's own), except where there is none to show
    (required, flags, unset: those say in their help what happens)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default in (None, False, []):
            return action.help or ""
        return super()._get_help_string(action) or ""


def _version() -> str:
    try:
        return importlib.metadata.version("heterarch")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    # `-v` works before and after the subcommand: the subcommands' copy counts into its own dest
    # (a subparser's defaults would otherwise overwrite the main parser's count).
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", dest="verbose_sub", action="count", default=0,
                         help="more logging (-vv: debug)")
    parser = argparse.ArgumentParser(
        prog="heterarch", formatter_class=_Formatter,
        description="Actor runtime for heterogeneous recursive multi-agent systems.",
    )
    parser.add_argument("--version", action="version", version=f"heterarch {_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, parent: Any = sub) -> argparse.ArgumentParser:
        made: argparse.ArgumentParser = parent.add_parser(
            name, help=help, description=help[0].upper() + help[1:] + ".", parents=[verbose],
            formatter_class=_Formatter)
        return made

    p = command("nats", "run a nats-server with JetStream (embedded, for local use)")
    p.add_argument("--port", type=int, default=4222, help="client port")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--store-dir", default=".heterarch/nats", help="JetStream store directory")
    p.add_argument("--http-port", type=int, default=None,
                   help="monitoring port, e.g. 8222 (unset: no monitoring)")
    p.add_argument("--config", default=None, help="a nats-server config file")
    p.set_defaults(func=cmd_nats)

    p = command("worker", "serve one or more pools from a config file")
    p.add_argument("--pool", action="append", required=True, help="pool to serve (repeatable)")
    p.add_argument("--config", required=True, help="pools TOML file")
    p.add_argument("--nats", metavar="URL", help=NATS_HELP)
    p.add_argument("--trace", action="store_true", help=TRACE_HELP)
    p.add_argument("--app-dir", default=".",
                   help="directory put on sys.path to import actor modules")
    p.add_argument("--router", default=None,
                   help="a router model from `heterarch route fit` (router.json)")
    p.set_defaults(func=cmd_worker)

    p = command("ping", "health of the cluster: nodes, pools, live actors")
    p.add_argument("--nats", metavar="URL", help=NATS_HELP + "; else the config's `nats`")
    p.add_argument("--config", default=None,
                   help="a pools config: its namespace, NATS URLs and credentials")
    p.add_argument("--namespace", default=None,
                   help="subject and bucket prefix (unset: the config's, else heterarch)")
    p.add_argument("--actors", action="store_true", help="list every live actor")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (nodes, pools, actors) instead of text")
    p.set_defaults(func=cmd_ping)

    p = command("sandbox", "sandbox image tools")
    sandbox_sub = p.add_subparsers(dest="sandbox_command", metavar="SUBCOMMAND")
    b = command("build", "build the sandbox Docker image", sandbox_sub)
    b.add_argument("--offline", action="store_true",
                   help="build from a local Debian root fs (unset: offline only when no "
                   "registry answers)")
    b.add_argument("--if-missing", action="store_true", help="do nothing if the image exists")
    b.add_argument("--package", action="append", default=[],
                   help="extra Python package (repeatable)")
    b.set_defaults(func=cmd_sandbox_build)
    r = command("reap", "remove the sandbox containers whose owner process is gone (kill -9)",
                sandbox_sub)
    r.set_defaults(func=cmd_sandbox_reap)

    p = command("demo", "the OOLONG-style demo on four simulated pools")
    p.add_argument("--records", type=int, default=3000, help="records in the context")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="multiply simulated model latencies (0.1 = ten times faster)")
    p.add_argument("--vision", action="store_true",
                   help="the vision demo: screenshots with small text, zoom sub-calls routed "
                        "to a small vision pool (docs/vision.md)")
    p.add_argument("--pages", type=int, default=8, help="screenshots in the vision demo")
    p.add_argument("--hard-words", type=int, default=None, metavar="SEED",
                   help="simulated models whose hard records differ from the generator's "
                        "hedged ones (seeded)")
    p.set_defaults(func=cmd_demo)

    p = command("simulate", "run the OpenAI-compatible pool simulator")
    add_simulator_arguments(p)
    p.set_defaults(func=cmd_simulate)

    p = command("route", "the automation layer: fit a router from recorded runs")
    route_sub = p.add_subparsers(dest="route_command", metavar="SUBCOMMAND")
    f = command("fit", "fit P(right) and latency per pool from span files", route_sub)
    f.add_argument("spans", nargs="+", help="span files (JSON lines) or Jaeger JSON exports, "
                                            "recorded with content capture on")
    f.add_argument("--out", required=True, help="where to write the router model (JSON)")
    f.add_argument("--target-accuracy", type=float, default=0.97,
                   help="P(right) a pool must reach to be chosen")
    f.add_argument("--label", default="heterarch.sim.oolong:label_items",
                   help="module:function(prompt, reply) -> list[bool] judging each item "
                        "(default: the OOLONG generator's truth)")
    f.set_defaults(func=cmd_route_fit)
    f = command("learn", "fit the content router (P(agree) per pool) from shadow labels",
                route_sub)
    f.add_argument("labels", nargs="+", help="labels files (JSON lines, `[routing] labels`)")
    f.add_argument("--reference", required=True, help="the strongest pool (labels agree with "
                                                       "its answers)")
    f.add_argument("--out", required=True, help="where to write the model (`[routing] model`)")
    f.add_argument("--held-out", default=None,
                   help="labels of other runs: print the model's calibration on them")
    f.set_defaults(func=cmd_route_learn)

    p = command("trace", "read traces")
    trace_sub = p.add_subparsers(dest="trace_command", metavar="SUBCOMMAND")
    t = command("show", "print the spawning tree of one trace", trace_sub)
    t.add_argument("trace_id", help="a trace id (a unique prefix will do with --file)")
    t.add_argument("--file", default=None,
                   help="span file, or a trace saved from Jaeger as JSON (unset: "
                   "$HETERARCH_TRACE_FILE, else heterarch-spans.jsonl)")
    t.add_argument("--jaeger", default=None,
                   help="read from Jaeger's query API instead, e.g. http://localhost:16686")
    t.add_argument("--depth", type=int, default=None,
                   help="show this many levels below the root (unset: all)")
    t.add_argument("--all", action="store_true",
                   help="one line per span: do not fold similar siblings")
    t.set_defaults(func=cmd_trace_show)
    t = command("list", "list the traces in a span file or in Jaeger", trace_sub)
    t.add_argument("--file", default=None,
                   help="span file, or a trace saved from Jaeger as JSON (unset: "
                   "$HETERARCH_TRACE_FILE, else heterarch-spans.jsonl)")
    t.add_argument("--jaeger", default=None,
                   help="ask Jaeger's query API instead, e.g. http://localhost:16686")
    t.add_argument("--service", default="heterarch-cli",
                   help="with --jaeger: the service whose traces to list")
    t.set_defaults(func=cmd_trace_list)

    p = command("view", "a web page of one run: iterations, spawning tree, timeline per pool, "
                        "tokens and dollars, errors")
    p.add_argument("file", nargs="?", default=None,
                   help="span file (unset: $HETERARCH_TRACE_FILE, else heterarch-spans.jsonl); "
                        "a run still writing it is followed live")
    p.add_argument("--trace", default=None,
                   help="trace id, or a unique prefix (unset: the latest run in the file)")
    p.add_argument("--jaeger", default=None,
                   help="read from Jaeger's query API instead, e.g. http://localhost:16686")
    p.add_argument("--html", default=None, metavar="OUT",
                   help="write a static page (for sharing) and exit, instead of serving it")
    p.add_argument("--host", default="127.0.0.1", help="address to serve the page on")
    p.add_argument("--port", type=int, default=8765, help="port to serve the page on")
    p.add_argument("--open", action="store_true", help="open the page in a browser")
    p.set_defaults(func=cmd_view)

    p = command("rlm", "answer a question over a large context with an RLM")
    p.add_argument("question", help="the question")
    p.add_argument("--context", required=True, action="append",
                   help="a text file (any size, UTF-8), or a PNG/JPEG screenshot; repeat for "
                        "several (screenshots: `context` is then a list of images)")
    p.add_argument("--config", default=None,
                   help="the pools config (TOML): pools, namespace, NATS URLs and credentials, "
                        "sandbox (unset: $HETERARCH_CONFIG, else ./pools.toml if present)")
    p.add_argument("--root-pool", default="",
                   help="pool whose model writes the code (unset: the router places the "
                        "root like any recursive sub-task)")
    p.add_argument("--pools", default="",
                   help="comma-separated pools this run may use (unset: all)")
    p.add_argument("--router", default=None,
                   help="a router model from `heterarch route fit`, to place the root")
    p.add_argument("--max-depth", type=int, default=Query(question="").max_depth,
                   help="recursion depth (the same default as actors.Query)")
    p.add_argument("--max-iterations", type=int, default=12,
                   help="code/observe rounds of the root agent")
    p.add_argument("--budget-dollars", type=float, default=0.0, help="stop at this cost (0: none)")
    p.add_argument("--budget-tokens", type=int, default=0, help="stop at these tokens (0: none)")
    p.add_argument("--budget-seconds", type=float, default=0.0,
                   help="stop after this wall time (0: none)")
    p.add_argument("--namespace", default=None,
                   help="subject and bucket prefix (unset: the config's, else heterarch)")
    p.add_argument("--trace", action="store_true", help=TRACE_HELP)
    p.add_argument("--nats", metavar="URL",
                   help="NATS server URL(s) of a cluster to join, comma-separated (unset: "
                        "$HETERARCH_NATS_URL, else the config's `nats`, else everything runs "
                        "embedded in this process: nats-server, workers, sandboxes)")
    p.add_argument("--log", default=None, metavar="FILE",
                   help="append the run to this JSONL file as it goes (each iteration's "
                        "reply, code, output and sub-calls, full texts)")
    p.add_argument("--json", action="store_true",
                   help="print the answer as one JSON object (text, usage, trajectory...) "
                        "instead of text")
    p.set_defaults(func=cmd_rlm)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = args.verbose + getattr(args, "verbose_sub", 0)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbosity, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func: Command | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line a user can act on; `-v` adds the traceback
        if verbosity:
            traceback.print_exception(exc)
        print(f"heterarch: error: {user_message(exc)}", file=sys.stderr)
        return 1


def user_message(exc: BaseException) -> str:
    """What to tell a user about ``exc``: our errors say what to do; others get a hint."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, HeterarchError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or exc}: {exc.filename}"
    if isinstance(exc, OSError):
        return f"{exc} (a port in use? another `heterarch nats` running?)"
    return (f"unexpected {type(exc).__name__}: {exc} (run with -v for the traceback; "
            "please report it)")


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [u for u in value.split(",") if u]


# -- nats ----------------------------------------------------------------------------------------
def cmd_nats(args: argparse.Namespace) -> int:
    from runtime._nats_server import NatsServer

    Path(args.store_dir).mkdir(parents=True, exist_ok=True)
    server = NatsServer(
        port=args.port, host=args.host, store_dir=args.store_dir, http_port=args.http_port,
        config_file=args.config,
    )
    server.start()
    print(f"nats-server ready at {server.url} (JetStream store: {server.store_dir})", flush=True)
    if args.http_port:
        print(f"monitoring: http://{args.host}:{args.http_port}", flush=True)
    print("press Ctrl-C to stop", flush=True)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop and server.process is not None and server.process.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


# -- worker --------------------------------------------------------------------------------------
def cmd_worker(args: argparse.Namespace) -> int:
    from runtime._config import load_config
    from runtime._system import Worker

    config = load_config(args.config)
    sys.path.insert(0, str(Path(args.app_dir).resolve()))
    tracing = _start_tracing(args, role="worker", pools=args.pool)

    from runtime import agent_services

    services, pool_services = agent_services(config, args.pool, learned=args.router)
    if pool_services:  # import the model client now, not on the first call (it takes seconds)
        from runtime._models.llm import litellm_module

        litellm_module()
    # What the imports made (litellm alone: hundreds of thousands of objects) lives as long as
    # the process: out of the garbage collector's sight, so its collections stay cheap on the
    # hot path (measured: about half the model client's CPU per call with litellm imported).
    gc.freeze()

    async def serve() -> None:
        async with Worker(config, args.pool, nats=_split(args.nats), services=services,
                          pool_services=pool_services) as worker:
            pools = ", ".join(f"{p} ({c.hardware})" for p, c in worker.served.items())
            print(f"worker {worker.node.node_id} serving {pools}; Ctrl-C to stop", flush=True)
            async with anyio.create_task_group() as tg:

                async def until_signal() -> None:
                    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                        async for _ in signals:
                            print("worker stopping", flush=True)
                            break
                    tg.cancel_scope.cancel()

                tg.start_soon(until_signal)
                await worker.node.closed.wait()
                tg.cancel_scope.cancel()
            if worker.node.closed.is_set():
                await worker.wait_closed()  # NodeFailed: exit 1, so its supervisor restarts it

    try:
        anyio.run(serve)
    finally:
        if tracing is not None:
            tracing.shutdown()
    return 0


def _start_tracing(args: argparse.Namespace, *, role: str,
                   pools: Sequence[str] = ()) -> TracingHandle:
    from runtime._observe.tracing import LOCAL_JAEGER, configure_tracing

    endpoint = LOCAL_JAEGER if getattr(args, "trace", False) else None
    return configure_tracing(role=role, pools=pools, endpoint=endpoint)


# -- ping ----------------------------------------------------------------------------------------
def cmd_ping(args: argparse.Namespace) -> int:
    from runtime import load_config
    from runtime._system import ActorSystem

    config = load_config(args.config) if args.config else None
    namespace = args.namespace or (config.namespace if config else "heterarch")
    nats = _split(args.nats) or None
    if nats is None and config is not None and config.nats and not (
            os.environ.get("HETERARCH_NATS_URL") or os.environ.get("NATS_URL")):
        nats = list(config.nats)
    options = config.connect_options(nats) if config is not None and nats else None

    async def ping() -> int:
        async with ActorSystem(nats=nats, namespace=namespace, options=options,
                               embedded=False) as system:
            await anyio.sleep(system.node.heartbeat_interval * 1.5)
            stats = await system.node.cluster_stats()
        others = [s for s in stats if s.info.node_id != system.node.node_id]
        pools: dict[str, int] = {}
        for s in others:
            for pool in s.info.pools:
                pools[pool] = pools.get(pool, 0) + 1
        if args.json:
            print(json.dumps({"nodes": msgspec.to_builtins(others), "pools": pools}, indent=2))
            return 0 if others else 1
        if not others:
            print("no nodes answered (no worker is running)")
            return 1
        print(f"{len(others)} node(s), pools: "
              + (", ".join(f"{p} x{n}" for p, n in sorted(pools.items())) or "none"))
        for s in others:
            i = s.info
            slots = ", ".join(f"{p}: {n} free" for p, n in i.free_slots.items()) or "-"
            dead = sum(s.dead_letters.values())
            print(f"  {i.role:7} {i.node_id}  {i.host}:{i.pid}  pools={sorted(i.pools) or '-'}  "
                  f"actors={len(s.actors)}  slots=[{slots}]  dead_letters={dead}")
            if args.actors:
                for a in s.actors:
                    print(f"      {a.actor_id} {a.actor_class} name={a.name or '-'} "
                          f"pool={a.pool or '-'} parent={a.parent_id or '-'} depth={a.depth}")
        return 0

    return anyio.run(ping)


# -- demo, simulate, rlm ------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo_command

    return demo_command(args)


def cmd_simulate(args: argparse.Namespace) -> int:
    from ..sim.simulator import run_simulator_cli

    return run_simulator_cli(args)


def cmd_rlm(args: argparse.Namespace) -> int:
    from actors import Budget, RunProgress
    from runtime import RLM, RuntimeConfig, load_config
    from runtime.errors import RuntimeConfigError

    from .live import interrupted_line, run_summary, run_with_live_view
    from .trace_show import trace_note

    text, screenshots = _read_contexts(args.context)
    config_path = args.config or os.environ.get("HETERARCH_CONFIG") or (
        "pools.toml" if Path("pools.toml").is_file() else None)
    nats = _split(args.nats or os.environ.get("HETERARCH_NATS_URL")
                  or os.environ.get("NATS_URL"))
    if config_path is not None:
        config = load_config(config_path)
    elif args.root_pool and nats:  # a cluster whose workers know the pools
        config = RuntimeConfig()
    else:
        raise RuntimeConfigError("give --config (the pools), or --root-pool and --nats to use "
                                 "a cluster's workers")
    pools = [p for p in args.pools.split(",") if p]
    tracing = _start_tracing(args, role="cli")

    interrupt = _Interrupt()
    last: list[RunProgress] = []  # the root's reports: what was spent, if interrupted

    def reports(view: Callable[[RunProgress], None] | None) -> Callable[[RunProgress], None]:
        def seen(progress: RunProgress) -> None:
            last[:] = [progress]
            if view is not None:
                view(progress)
        return seen

    async def run() -> int:
        with interrupt.handling():
            return await run_interruptibly()

    async def run_interruptibly() -> int:
        async with RLM(config, nats=nats, namespace=args.namespace, root_pool=args.root_pool,
                       pools=pools, learned=args.router, max_depth=args.max_depth,
                       max_iterations=args.max_iterations, log=args.log,
                       budget=Budget(tokens=args.budget_tokens, dollars=args.budget_dollars,
                                     wall_s=args.budget_seconds)) as rlm:
            with interrupt.scope:
                answer, wall = await run_with_live_view(
                    rlm.system.node,
                    lambda progress: rlm.ask(
                        args.question, context=text, images=screenshots,
                        progress=reports(progress),
                        # Past its wall budget and a grace, the root is stopped as by Ctrl-C.
                        timeout=args.budget_seconds + 60 if args.budget_seconds > 0 else None),
                    title=f"rlm on {args.root_pool or 'a routed pool'}: {args.question[:60]}")
            if interrupt.at is not None:  # the run is stopped (the workers finish the stop)
                print(interrupted_line(interrupt.at - interrupt.started,
                                       last[-1] if last else None), file=sys.stderr)
                return 130
        if args.json:
            print(json.dumps(msgspec.to_builtins(answer), ensure_ascii=False))
        else:
            print(answer.text)
        for line in run_summary(answer, wall):  # the numbers of the live view's last frame
            print(line, file=sys.stderr)
        print(trace_note(tracing, answer.trace_id), file=sys.stderr)
        if args.log:
            print(f"run log: {args.log}; see the run: `heterarch view {args.log}`",
                  file=sys.stderr)
        return 0 if answer.ok else 3

    try:
        code = anyio.run(run)
    finally:
        if tracing is not None:
            tracing.shutdown()
    if interrupt.at is not None:
        # Stopped and said so: exit now, not through the interpreter's teardown, where Python
        # gives SIGINT back to the system and a second Ctrl-C would kill us by signal (-2).
        sys.stdout.flush()
        sys.stderr.flush()
        _exit_at_once()
    return code


def _exit_at_once(*_: object) -> None:
    """The second Ctrl-C: exit 130 now, waiting for nothing (the workers stop the tree when
    they lose this node, if the first Ctrl-C's stop had not gone out yet)."""
    os._exit(130)


class _Interrupt:
    """Ctrl-C for ``heterarch rlm``: the first cancels ``scope`` (the run, and with it the
    remote tree, stops); the second exits at once."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.at: float | None = None
        self.scope: anyio.CancelScope  # made in ``handling`` (it needs the event loop)

    def _on_sigint(self) -> None:
        if self.at is not None:
            _exit_at_once()  # the second Ctrl-C: no more waiting for anything
        self.at = time.monotonic()
        self.scope.cancel()

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        self.scope = anyio.CancelScope()
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        except (RuntimeError, ValueError):  # not the main thread: Ctrl-C is not ours to take
            yield
            return
        try:
            yield
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            if self.at is not None:  # stopping: from here to the process's end (teardown,
                # threads joined at exit) another Ctrl-C exits at once, never a traceback
                signal.signal(signal.SIGINT, _exit_at_once)


def _read_contexts(paths: list[str]) -> tuple[bytes, list[bytes]]:
    """The text files' bytes (joined; the RLM refuses what is not UTF-8 text, naming the
    file) and the PNG/JPEG files' bytes among ``paths``."""
    from runtime.errors import ContextNotText

    texts, screenshots = [], []
    for path in paths:
        data = Path(path).read_bytes()
        if data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")):
            screenshots.append(data)
            continue
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ContextNotText(f"file {path!r}", exc.start, exc.reason) from None
        texts.append(data)
    return b"\n".join(texts), screenshots


def cmd_route_fit(args: argparse.Namespace) -> int:
    import importlib
    import json

    from runtime._models.learned import fit_router, load_spans, outcomes_from_spans
    from runtime.errors import RuntimeConfigError

    module_name, _, function = args.label.partition(":")
    try:
        label = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError, ValueError) as exc:
        raise RuntimeConfigError(f"--label {args.label!r}: {exc}") from None
    spans = [span for path in args.spans for span in load_spans(path)]
    outcomes = outcomes_from_spans(spans, label)
    if not outcomes:
        raise RuntimeConfigError(
            "no labelled model calls in those spans: record runs with content capture on "
            "(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true) into a span file")
    model = fit_router(outcomes, target_accuracy=args.target_accuracy)
    Path(args.out).write_text(json.dumps(model, indent=2) + "\n", encoding="utf-8")
    for pool, fitted in model["pools"].items():
        print(f"{pool:14} {fitted['calls']:5} calls {fitted['items']:6} items, "
              f"right {fitted['observed_accuracy']:.3f}")
    print(f"router model written to {args.out}")
    return 0


def cmd_route_learn(args: argparse.Namespace) -> int:
    from runtime._models.content import fit_content, read_labels, reliability
    from runtime.errors import RuntimeConfigError

    labels = [x for path in args.labels for x in read_labels(path)]
    if not labels:
        raise RuntimeConfigError("no labels in those files: run with a [routing] table whose "
                                 "`labels` names a file, and shadow_fraction > 0")
    model = fit_content(labels, reference=args.reference)
    model.save(args.out)
    for pool, fitted in model.pools.items():
        print(f"{pool:14} {fitted.labels:6} labels, agreement with {args.reference} "
              f"{fitted.agreement:.4f}")
    if args.held_out:
        rel = reliability(model, read_labels(args.held_out))
        print(f"held out: {rel.n} items, ECE {rel.ece:.4f}, Brier {rel.brier:.4f}")
        for predicted, observed, n in rel.bins:
            print(f"  predicted {predicted:.3f} observed {observed:.3f} ({n} items)")
    print(f"content router model written to {args.out}")
    return 0


def cmd_trace_show(args: argparse.Namespace) -> int:
    from .trace_show import trace_show_command

    jsonl = args.file or os.environ.get("HETERARCH_TRACE_FILE")
    return trace_show_command(args.trace_id, jsonl=jsonl, jaeger=args.jaeger, depth=args.depth,
                              fold=not args.all)


def _span_file(path: str | None) -> str:
    return path or os.environ.get("HETERARCH_TRACE_FILE") or "heterarch-spans.jsonl"


def cmd_trace_list(args: argparse.Namespace) -> int:
    from .view import list_traces, read_spans
    from .view._sources import jaeger_query

    if args.jaeger:
        spans = jaeger_query(args.jaeger, service=args.service)
        where = args.jaeger
    else:
        where = _span_file(args.file)
        spans = read_spans(where)
    traces = list_traces(spans)
    if not traces:
        print(f"no traces in {where}")
        return 1
    for t in traces:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t.start_ns / 1e9))
        question = f"  {t.question[:60]!r}" if t.question else ""
        print(f"{t.trace_id}  {when}  {t.wall_s:8.2f}s  {t.spans:5} spans  "
              f"${t.cost_usd:.4f}  {t.status:10} {t.root}{question}")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from .view import RunSource, serve, write_html

    path = None if args.jaeger else _span_file(args.file)
    source = RunSource(path=path, trace_id=args.trace, jaeger=args.jaeger)
    run = source.run()  # a missing file or trace is said now, in one line
    if not run.spans and (args.html or args.trace):
        print(f"no spans of {'trace ' + repr(args.trace) if args.trace else 'any run'} in "
              f"{path or args.jaeger}", file=sys.stderr)
        return 1
    if args.html:
        write_html(source, args.html)
        print(f"wrote {args.html}: trace {run.trace_id}, {len(run.spans)} spans")
        return 0
    serve(source, host=args.host, port=args.port, open_browser=args.open,
          print_url=lambda url: print(f"the run's page: {url} (Ctrl-C to stop)", flush=True))
    return 0


# -- sandbox -------------------------------------------------------------------------------------
def cmd_sandbox_reap(args: argparse.Namespace) -> int:
    from sandbox import reap_orphans

    removed = reap_orphans()
    print(f"removed {len(removed)} sandbox container(s) whose owner is gone"
          + (f": {', '.join(removed)}" if removed else ""))
    return 0


def cmd_sandbox_build(args: argparse.Namespace) -> int:
    from sandbox import build_image

    tag = build_image(
        offline=True if args.offline else None,
        if_missing=args.if_missing,
        packages=args.package,
        progress=lambda line: print(line, flush=True),
    )
    print(f"sandbox image ready: {tag}")
    return 0

