"""``RLM``: a Recursive Language Model run in one call from Python, embedded or on a cluster.

>>> async with RLM("pools.toml") as rlm:  # doctest: +SKIP
...     answer = await rlm.ask("How many records are about locations?", context=Path("big.txt"))
>>> RLM("pools.toml").run("How many ...?", context=text)  # doctest: +SKIP

With no cluster named (no ``nats=`` and no ``nats`` in the config) it starts everything it
needs in this process: a nats-server on a free loopback port, one worker for the config's
pools, the sandbox backend the config names. Leaving the ``async with`` (or the end of
``run``) stops all of it: no process, container or server is left. With ``nats=`` it joins a
cluster and its workers do the work; the same file scales out.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import msgspec
from opentelemetry import trace

from actors import Answer, Budget, ImageRef, Inbox, Query, RLMAgent, RunProgress, store_image
from actors._semconv import (
    ATTR_GENAI_CONVERSATION_ID,
    ATTR_GENAI_INPUT_MESSAGES,
    ATTR_GENAI_OUTPUT_MESSAGES,
    content_capture_enabled,
    genai_messages,
)
from actors.agents._messages import Step
from actors.agents._spans import mark_exception, mark_outcome, usage_attributes
from transports import ConnectOptions

from ._config import RuntimeConfig, load_config
from ._models.routing import Router, RouteService
from ._nats_server import NatsServer
from ._rlm_host import Tools, answer_check, run_host, tool_table
from ._system import ActorSystem, Worker
from .errors import ContextNotText, RuntimeConfigError

tracer = trace.get_tracer("heterarch")
T = TypeVar("T")

#: How long a cancelled run (Ctrl-C, the caller's deadline) waits for its root to confirm the
#: stop before it returns: the stop is on its way and the workers finish it (in seconds).
CANCELLED_STOP_WAIT_S = 1.5
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
Progress = Callable[[RunProgress], object]
ContextInput = str | bytes | os.PathLike[str] | None


class RLM:
    """Answer questions over large contexts with a Recursive Language Model.

    ``config``: the pools (a TOML path or a ``RuntimeConfig``); it also names the namespace,
    the NATS URL(s) and credentials, the sandbox settings and static rules. Keyword options
    override it and are the defaults of each ``ask``:

    - ``nats``: URL(s) of a cluster to join (its workers do the work). Unset and unset in the
      config: embedded (nats-server, worker and sandboxes in this process).
    - ``namespace``: the subject and bucket prefix (default: the config's).
    - ``root_pool``: the pool whose model writes the code (default: the router places it like
      any recursive sub-task, or a ``[[rules]]`` entry with ``depth = 0``).
    - ``pools``: the pools this run may use (default: all).
    - ``max_depth``, ``max_iterations``, ``budget`` (``Budget(tokens, dollars, wall_s)``),
      ``timeout`` (seconds to wait for the answer).
    - ``progress``: called with each ``RunProgress`` the root agent reports.
    - ``log``: a JSONL file: one line per event (the run, each iteration with full texts, the
      answer), written as the run goes and readable after a crash (``read_log``).
    - ``max_calls``: model calls over the whole tree (0: no cap).
    - ``system_prompt`` (replaces the built-in one) and ``instructions`` (appended to it).
    - ``tools``: functions the model's code calls from the REPL; they run here, with their
      arguments converted to their annotations.
    - ``answer_type``: a msgspec type or a JSON schema the final answer must fit (the model is
      told why when it does not); ``Answer.value`` is it as that type.

    ``ask`` returns an ``Answer`` (``text``, ``ok``, ``stop_reason``, ``usage`` per pool,
    ``cost_usd``, ``trajectory``). ``run`` (alias ``completion``) is the blocking one-shot.
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | RuntimeConfig,
        *,
        nats: str | Sequence[str] | None = None,
        namespace: str | None = None,
        options: ConnectOptions | None = None,
        root_pool: str = "",
        pools: Sequence[str] = (),
        max_depth: int = 2,
        max_iterations: int = 12,
        budget: Budget | None = None,
        timeout: float = 900.0,
        progress: Progress | None = None,
        log: str | os.PathLike[str] | None = None,
        router: Router | None = None,
        learned: str | os.PathLike[str] | None = None,
        placement_timeout: float = 60.0,
        max_calls: int = 0,
        system_prompt: str = "",
        instructions: str = "",
        tools: Tools = (),
        answer_type: Any = None,
    ) -> None:
        self.config = config if isinstance(config, RuntimeConfig) else load_config(Path(config))
        urls = _urls(nats) if nats is not None else list(self.config.nats)
        self.nats: list[str] = urls
        self.embedded = not urls
        self.namespace = namespace or self.config.namespace
        self._options = options
        self.defaults: dict[str, Any] = {
            "root_pool": root_pool, "pools": list(pools), "max_depth": max_depth,
            "max_iterations": max_iterations, "budget": budget or Budget(),
            "timeout": timeout, "progress": progress, "log": log, "max_calls": max_calls,
            "system_prompt": system_prompt, "instructions": instructions,
            "tools": tool_table(tools), "answer_type": answer_type,
        }
        answer_check(answer_type)  # a type it cannot check fails here, not in a run
        self._router = router
        self._learned = Path(learned) if learned is not None else None
        self._placement_timeout = placement_timeout
        self._check_pools([root_pool, *pools])
        self._stack: contextlib.AsyncExitStack | None = None
        self._system: ActorSystem | None = None
        self._route: RouteService | None = None
        self.server: NatsServer | None = None
        self.worker: Worker | None = None

    def _check_pools(self, pools: Sequence[str]) -> None:
        """``RuntimeConfigError`` for a pool the config lacks (a config without pools, used
        to join a cluster whose workers know them, checks nothing)."""
        if self.config.pools:
            for pool in pools:
                if pool:
                    self.config.pool(pool)

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def system(self) -> ActorSystem:
        """The ``ActorSystem`` this RLM asks through (inside ``async with`` only)."""
        if self._system is None:
            raise RuntimeError("not started: use `async with RLM(...) as rlm` first")
        return self._system

    async def __aenter__(self) -> RLM:
        if self._stack is not None:
            raise RuntimeError("this RLM is already started")
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            await self._start(stack)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        stack, self._stack = self._stack, None
        self._system = self.worker = self.server = None
        if stack is not None:
            with anyio.CancelScope(shield=True):
                await stack.__aexit__(*exc_info)

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        from ._agents import agent_services

        config = self.config
        if self.embedded and not any(p.model for p in config.pools.values()):
            raise RuntimeConfigError("the config has no pool with a model: an RLM started "
                                     "here (no `nats`) needs at least one")
        services, _ = agent_services(config, router=self._router, learned=self._learned)
        self._route = services["route"]
        if self.embedded:
            server = NatsServer()
            await anyio.to_thread.run_sync(server.start)
            stack.push_async_callback(anyio.to_thread.run_sync, server.cleanup)
            self.server = server
            urls, options = [server.url], ConnectOptions()
            served = _with_agents(config)
            services, pool_services = agent_services(served, list(served.pools),
                                                     router=self._router, learned=self._learned)
            self.worker = await stack.enter_async_context(Worker(
                served, nats=urls, namespace=self.namespace, options=options,
                services=services, pool_services=pool_services))
        else:
            urls = self.nats
            options = self._options or config.connect_options(urls)
        self._system = await stack.enter_async_context(ActorSystem(
            nats=urls, namespace=self.namespace, options=options, embedded=False,
            placement_timeout=self._placement_timeout))

    # -- one question ---------------------------------------------------------------------------
    async def ask(
        self,
        question: str,
        *,
        context: ContextInput = None,
        images: Sequence[bytes | os.PathLike[str]] = (),
        root_pool: str | None = None,
        root_pools: Sequence[str] = (),
        pools: Sequence[str] | None = None,
        pool_override: str = "",
        max_depth: int | None = None,
        max_iterations: int | None = None,
        budget: Budget | None = None,
        timeout: float | None = None,
        progress: Progress | None = None,
        log: str | os.PathLike[str] | None = None,
        max_calls: int | None = None,
        system_prompt: str | None = None,
        instructions: str | None = None,
        tools: Tools | None = None,
        answer_type: Any = None,
    ) -> Answer:
        """Ask one question about ``context`` (text, UTF-8 bytes, or a file: text, or a
        PNG/JPEG screenshot) and wait for the ``Answer``. ``images``: screenshots (bytes or
        files); then ``context`` in the sandbox is the list of images. ``root_pools``: where
        the router may place the root (default: ``pools``); ``pool_override``: every sub-call
        on this one pool (a homogeneous baseline). Other options: see the class; given here
        they apply to this question only.

        Raises ``ContextNotText`` for bytes or a file that is neither UTF-8 text nor an image,
        ``RuntimeConfigError`` for a pool the config lacks, ``AskTimeout`` after ``timeout``.
        """
        system = self.system
        d = self.defaults
        text, shots = _read_context(context)
        shots += [_image_bytes(i) for i in images]
        chosen_pools = list(pools) if pools is not None else d["pools"]
        root = d["root_pool"] if root_pool is None else root_pool
        self._check_pools([root, *chosen_pools, *root_pools, pool_override])
        on_progress = progress or d["progress"]
        table = tool_table(tools) if tools is not None else d["tools"]
        wanted = answer_type if answer_type is not None else d["answer_type"]
        check = answer_check(wanted)
        calls = d["max_calls"] if max_calls is None else max_calls
        limits = budget or d["budget"]
        if calls:
            limits = msgspec.structs.replace(limits, calls=calls)
        prompt = d["system_prompt"] if system_prompt is None else system_prompt
        extra = d["instructions"] if instructions is None else instructions
        log_path = log if log is not None else d["log"]
        blobs = system.node.transport
        ref = await blobs.put_blob(text.encode())
        stored: list[ImageRef] = []
        try:
            for data in shots:
                stored.append(await store_image(blobs, data))
            async with _RunLog.open(log_path) as run_log:
                async with run_host(system, table, check) as host, \
                        contextlib.AsyncExitStack() as stack:
                    steps_inbox, progress_inbox = _inboxes(system, run_log, on_progress, stack)
                    run_log.write({"event": "run", "question": question, "chars": len(text),
                                   "images": len(stored), "namespace": self.namespace,
                                   "embedded": self.embedded, "root_pool": root,
                                   "pools": chosen_pools})
                    try:
                        answer = await ask_root(
                            system, question, context_ref=ref, root_pool=root,
                            route=self._route, config=self.config, pools=chosen_pools,
                            root_pools=root_pools, pool_override=pool_override,
                            max_depth=d["max_depth"] if max_depth is None else max_depth,
                            max_iterations=(d["max_iterations"] if max_iterations is None
                                            else max_iterations),
                            budget=limits,
                            timeout=d["timeout"] if timeout is None else timeout,
                            images=stored, progress=progress_inbox, steps=steps_inbox,
                            query_fields={
                                "system_prompt": prompt, "instructions": extra,
                                "tools": [spec for spec, _ in table.values()],
                                "host": host, "answer_schema": check.schema if check else {},
                            })
                    except BaseException as exc:
                        run_log.write({"event": "error", "type": type(exc).__name__,
                                       "message": str(exc)})
                        raise
                for step in answer.trajectory:  # a step whose message the answer overtook
                    run_log.write_step(step)
                run_log.write({"event": "answer", **_answer_fields(answer)})
            if check is not None and answer.ok:  # the data, as the type asked for
                answer = msgspec.structs.replace(answer, value=check.convert(answer.value))
        finally:
            with anyio.CancelScope(shield=True):
                for blob in [ref, *(image.ref for image in stored)]:
                    with contextlib.suppress(Exception):
                        await blobs.delete_blob(blob)
        return answer

    def run(self, question: str, **options: Any) -> Answer:
        """Start, ask one question, stop: the blocking one-shot for scripts and notebooks
        (in a thread of its own when an event loop already runs here, as in Jupyter).
        Takes ``ask``'s options."""

        async def once() -> Answer:
            async with self:
                return await self.ask(question, **options)

        return run_blocking(once)

    completion = run  # the name the reference implementation uses


def run_blocking(fn: Callable[[], Awaitable[T]]) -> T:
    """``anyio.run(fn)``, in a new thread when this thread already runs an event loop."""
    try:
        import asyncio

        asyncio.get_running_loop()
    except RuntimeError:
        return anyio.run(fn)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = anyio.run(fn)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="heterarch-rlm")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def _urls(nats: str | Sequence[str]) -> list[str]:
    urls = [nats] if isinstance(nats, str) else list(nats)
    return [u.strip() for url in urls for u in url.split(",") if u.strip()]


def _with_agents(config: RuntimeConfig) -> RuntimeConfig:
    """The config the embedded worker serves: its pools, each also allowed the built-in
    agents (``actors.agents``), which are what an RLM run spawns there."""
    pools = {}
    for name, pool in config.pools.items():
        covered = any(m in ("actors", "actors.agents") for m in pool.modules)
        pools[name] = pool if covered else msgspec.structs.replace(
            pool, modules=[*pool.modules, "actors.agents"])
    return msgspec.structs.replace(config, pools=pools)


def _read_context(context: ContextInput) -> tuple[str, list[bytes]]:
    """The text of ``context`` and the screenshots it is (a PNG/JPEG file or bytes)."""
    if context is None:
        return "", []
    if isinstance(context, str):
        return context, []
    if isinstance(context, bytes):
        data, source = context, "bytes"
    else:
        data, source = Path(context).read_bytes(), f"file {os.fspath(context)!r}"
    if data.startswith((_PNG, _JPEG)):
        return "", [data]
    return _decode(data, source), []


def _decode(data: bytes, source: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContextNotText(source, exc.start, exc.reason) from None
    control = sum(1 for ch in text[:65536] if ch < " " and ch not in "\t\n\r\f\v")
    if control > max(16, len(text[:65536]) // 100):  # valid UTF-8, but binary (NULs...)
        first = next(i for i, ch in enumerate(text) if ch < " " and ch not in "\t\n\r\f\v")
        raise ContextNotText(source, len(text[:first].encode()), "control characters")
    return text


def _image_bytes(image: bytes | os.PathLike[str]) -> bytes:
    return image if isinstance(image, bytes) else Path(image).read_bytes()


def _inboxes(system: ActorSystem, run_log: _RunLog, on_progress: Progress | None,
             stack: contextlib.AsyncExitStack) -> tuple[Inbox | None, Inbox | None]:
    """The inboxes the root agent reports to: its steps (when there is a log) and its
    progress (when there is a callback; called on the event loop: keep it short)."""
    node = system.node
    steps: Inbox | None = None
    progress: Inbox | None = None
    if run_log.active:
        steps = stack.enter_context(node.open_inbox(Step, run_log.write_step))
    if on_progress is not None:
        callback = on_progress

        def report(item: RunProgress) -> None:
            callback(item)

        progress = stack.enter_context(node.open_inbox(RunProgress, report))
    return steps, progress


def _answer_fields(answer: Answer) -> dict[str, Any]:
    fields: dict[str, Any] = msgspec.to_builtins(answer)
    fields.pop("trajectory", None)  # the log has each iteration already, as it happened
    return fields


class _RunLog:
    """A JSONL file of one run's events, appended as they happen and flushed line by line
    (so a run that dies leaves what it did). Writes happen off the event loop, in order."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.active = path is not None
        self.path = Path(path) if path is not None else None
        self._send: Any = None
        self.run_id = uuid.uuid4().hex
        self._steps: set[tuple[str, int, str]] = set()

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, path: str | os.PathLike[str] | None) -> Any:
        log = cls(path)
        target = log.path
        if target is None:
            yield log
            return
        send, receive = anyio.create_memory_object_stream[bytes](1_000_000)
        handle = await anyio.to_thread.run_sync(lambda: open(target, "ab"))

        async def drain() -> None:
            async with receive:
                async for line in receive:
                    await anyio.to_thread.run_sync(_append, handle, line)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain)
                log._send = send
                try:
                    yield log
                finally:
                    log._send = None
                    send.close()
        finally:
            await anyio.to_thread.run_sync(handle.close)

    def write_step(self, step: Step) -> None:
        """One iteration, once (the agent sends it as it ends; the answer repeats them all)."""
        key = (step.agent_id, step.iteration, step.reply)
        if key not in self._steps:
            self._steps.add(key)
            fields = msgspec.to_builtins(step)
            fields.pop("type", None)  # the message tag
            self.write({"event": "iteration", **fields})

    def write(self, event: dict[str, Any]) -> None:
        if self._send is None:
            return
        record = {"run": self.run_id, "time": time.time(), **event}
        line = json.dumps(record, ensure_ascii=False, default=str).encode("utf-8", "replace")
        self._send.send_nowait(line + b"\n")


def _append(handle: Any, line: bytes) -> None:
    handle.write(line)
    handle.flush()


def read_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The events of a run log (``RLM(log=...)``), oldest first; a last line cut short by a
    crash is left out."""
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:  # the line being written when the process died
            continue
    return events


# -- the root of a run, on an ActorSystem of yours -------------------------------------------------
def place_root(route: RouteService, question: str, *, config: RuntimeConfig,
               pools: Sequence[str] = ()) -> tuple[str, str]:
    """The root agent's pool, chosen like any recursive sub-task (``kind="rlm"``, depth 0),
    among ``pools`` (empty: all pools of ``config``). Returns ``(pool, reason)``."""
    exclude = set(config.pools) - set(pools) if pools else set()
    decision = route(prompt=question, kind="rlm", depth=0, exclude=exclude)
    return decision.pool, f"root: {decision.reason}"


async def ask_root(system: ActorSystem, question: str, *, context_ref: str = "",
                   context: str = "", root_pool: str = "", route: RouteService | None = None,
                   config: RuntimeConfig | None = None, pools: Sequence[str] = (),
                   pool_override: str = "", max_depth: int = 2, max_iterations: int = 8,
                   budget: Budget | None = None, timeout: float = 900.0,
                   images: list[ImageRef] | None = None, progress: Inbox | None = None,
                   root_pools: Sequence[str] = (), steps: Inbox | None = None,
                   query_fields: Mapping[str, Any] | None = None) -> Answer:
    """Spawn a root RLM agent on ``system``, ask it, stop it (what ``RLM.ask`` does once its
    context is stored; for programs that hold their own ``ActorSystem``).

    The root runs on ``root_pool``, or where ``route`` (with ``config``) places it among
    ``root_pools`` (default: ``pools``); the run's sub-calls may use only ``pools`` (empty:
    any). ``images``: an image context (in the blob store). ``progress`` / ``steps``: where
    the root reports ``RunProgress`` / each ``Step``. ``query_fields``: more ``Query`` fields."""
    reason = "root pool named by the caller"
    if not root_pool:
        if route is None or config is None:
            raise ValueError("ask_root needs root_pool, or route and config to place the root")
        root_pool, reason = place_root(route, question, config=config,
                                       pools=root_pools or pools)
    conversation = uuid.uuid4().hex
    with tracer.start_as_current_span(
        "invoke_agent rlm", record_exception=False, set_status_on_exception=False,
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "rlm",
                    "gen_ai.provider.name": "heterarch", "openinference.span.kind": "AGENT",
                    ATTR_GENAI_CONVERSATION_ID: conversation, "heterarch.pool": root_pool,
                    "heterarch.route.reason": reason},
    ) as span:
        if content_capture_enabled() and span.is_recording():
            span.set_attribute(ATTR_GENAI_INPUT_MESSAGES, genai_messages(
                [{"role": "user", "content": question}]))
            span.set_attribute("input.value", question)  # OpenInference: the UIs' input column
        try:
            # Transient: if its worker dies, the root restarts on another worker of the pool
            # and the ask below is sent again (the context is a blob, so nothing is lost).
            root = await system.spawn(RLMAgent, pool=root_pool, name="rlm-root",
                                      supervision="transient")
            span.set_attribute("gen_ai.agent.id", root.actor_id)  # the agent this run invokes
            cancelled = False
            try:
                query = Query(question=question, context=context, context_ref=context_ref,
                              max_depth=max_depth, max_iterations=max_iterations,
                              budget=budget or Budget(), pool_override=pool_override,
                              images=images or [], pools=list(pools), route_reason=reason,
                              conversation_id=conversation, progress=progress, steps=steps,
                              **dict(query_fields or {}))
                answer: Answer = await root.ask(query, timeout=timeout)
            except anyio.get_cancelled_exc_class():
                cancelled = True
                raise
            finally:
                # Cancelled (Ctrl-C, a deadline): the stop is sent (it stops the whole tree)
                # and waited for a moment only; the workers finish it.
                with anyio.CancelScope(shield=True), anyio.move_on_after(
                        CANCELLED_STOP_WAIT_S if cancelled else math.inf):
                    await system.stop(root)
        except Exception as exc:
            mark_exception(span, exc)
            raise
        if span.is_recording():
            span.set_attributes({**usage_attributes(answer.usage),
                                 "heterarch.stop_reason": answer.stop_reason,
                                 "heterarch.iterations": answer.iterations})
            if content_capture_enabled():
                span.set_attribute(ATTR_GENAI_OUTPUT_MESSAGES, genai_messages(
                    [{"role": "assistant", "content": answer.text}],
                    finish_reason=answer.stop_reason))
                span.set_attribute("output.value", answer.text)
            mark_outcome(span, answer.stop_reason)
        return answer
