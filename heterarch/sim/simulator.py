"""The pool simulator: an OpenAI-compatible HTTP server that plays several hardware pools.

Each model name served is a ``Profile``: time to first token, output tokens per second, a
concurrency limit (requests beyond it queue), prices, an injected error rate, and a responder
that writes the answer. Everything it says is simulated; the client side is real (litellm over
real HTTP), so benchmarks and the demo exercise the same path as real providers.

    heterarch simulate --port 8700
    curl -s localhost:8700/v1/models

Routes: ``POST /v1/chat/completions`` (JSON, or server-sent events with ``"stream": true``;
``usage`` in the reply and in the last chunk), ``GET /v1/models``, ``GET /health``. Served by
``aiohttp.web``; an error gets an OpenAI-style JSON body, and no request takes the server down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import importlib
import json
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, cast

from aiohttp import web

from runtime.errors import PortInUse, RuntimeConfigError

from .prefix_cache import Replicas
from .profiles import EchoResponder as EchoResponder
from .profiles import Profile as Profile
from .profiles import Responder as Responder
from .profiles import RoutingResponder as RoutingResponder
from .profiles import ScriptedResponder as ScriptedResponder
from .profiles import default_profiles as default_profiles
from .profiles import estimate_tokens as estimate_tokens
from .profiles import profiles_toml as profiles_toml
from .vision import reply_with_images, request_images, vision_profiles
from .vision_task import VisionRootResponder

log = logging.getLogger("heterarch.simulate")

MAX_BODY = 64 * 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _HttpError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self.status = status
        self.message = message
        self.kind = kind


class Simulator:
    """The server. Use as an async context manager in-process, or ``heterarch simulate``.

    >>> async with Simulator() as sim:  # doctest: +SKIP
    ...     print(sim.base_url)          # http://127.0.0.1:PORT/v1
    """

    def __init__(self, profiles: Mapping[str, Profile] | None = None,
                 responders: Mapping[str, Responder] | None = None, host: str = "127.0.0.1",
                 port: int = 0, *, seed: int = 1, time_scale: float = 1.0) -> None:
        """``profiles``: model name -> ``Profile`` (default: ``default_profiles()``);
        ``responders``: model name -> a responder replacing that profile's own; ``port`` 0
        picks a free one; ``seed`` seeds error injection; ``time_scale`` multiplies every
        simulated delay (0 = answer at once)."""
        self.profiles = dict(profiles) if profiles is not None else default_profiles()
        for name, responder in (responders or {}).items():
            if name not in self.profiles:
                raise ValueError(f"responder for unknown model {name!r}")
            self.profiles[name] = dataclasses.replace(self.profiles[name], responder=responder)
        self.host = host
        self.port = port
        self.time_scale = time_scale
        self._rng = random.Random(seed)
        self._slots = {name: asyncio.Semaphore(p.concurrency) for name, p in self.profiles.items()}
        self._runner: web.AppRunner | None = None
        self._closed = asyncio.Event()
        self.requests = 0
        self.in_flight: dict[str, int] = {name: 0 for name in self.profiles}
        self.peak_in_flight: dict[str, int] = {name: 0 for name in self.profiles}
        self.queued: dict[str, int] = {name: 0 for name in self.profiles}  # waiting for a slot
        self.images_received: dict[str, int] = {name: 0 for name in self.profiles}
        # Prompt tokens served and those read from a replica's prefix cache, per model.
        self.prompt_tokens: dict[str, int] = {name: 0 for name in self.profiles}
        self.cached_tokens: dict[str, int] = {name: 0 for name in self.profiles}
        self._replicas = {name: Replicas(p.replicas, p.concurrency)
                          for name, p in self.profiles.items() if p.prefix_cache}

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[_json_errors])
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/health", self._health)
        return app

    async def start(self) -> None:
        """Listen; raises :class:`PortInUse` when the port is taken."""
        # Closing drops requests still waiting on simulated latency (a simulator owes nothing).
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse("the pool simulator", self.host, self.port) from None
            raise
        self.port = self._runner.addresses[0][1]
        self._closed.clear()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._closed.set()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def serve_forever(self) -> None:
        """Wait until ``close()`` (or cancellation)."""
        await self._closed.wait()

    # -- routes ----------------------------------------------------------------------------------
    async def _health(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok", "simulated": True})

    async def _models(self, request: web.Request) -> web.Response:
        return _json(200, {"object": "list", "data": [
            {"id": name, "object": "model", "owned_by": "heterarch-simulator",
             "hardware": p.hardware, "description": p.description}
            for name, p in self.profiles.items()]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if (request.content_length or 0) > MAX_BODY:  # refuse before reading any of it
            raise _HttpError(413, "body too large")
        body = await request.read()
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _HttpError(400, "body is not JSON") from None
        if not isinstance(payload, dict):
            raise _HttpError(400, "body must be a JSON object")
        model = payload.get("model")
        profile = self.profiles.get(model) if isinstance(model, str) else None
        if profile is None:
            raise _HttpError(404, f"unknown model {model!r}; serving {sorted(self.profiles)}",
                             "model_not_found")
        messages = payload.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise _HttpError(400, "messages must be a list of objects")
        try:
            images, image_tokens = request_images(profile, messages)
        except ValueError as exc:
            raise _HttpError(400, str(exc)) from None
        messages = [{"role": str(m.get("role", "")), "content": _text(m.get("content"))}
                    for m in messages]
        self.requests += 1
        self.images_received[profile.model] += len(images)
        if profile.error_rate and self._rng.random() < profile.error_rate:
            status = 429 if self._rng.random() < 0.5 else 500
            raise _HttpError(status, "simulated failure", "rate_limit_error" if status == 429
                             else "server_error")
        self.queued[profile.model] += 1
        try:
            await self._slots[profile.model].acquire()
        finally:
            self.queued[profile.model] -= 1
        replicas = self._replicas.get(profile.model)
        key = payload.get("prompt_cache_key")
        replica = replicas.choose(key if isinstance(key, str) else None) if replicas else 0
        try:
            cached_chars, blocks = replicas.serve(replica, messages) if replicas else (0, [])
            self.in_flight[profile.model] += 1
            self.peak_in_flight[profile.model] = max(self.peak_in_flight[profile.model],
                                                     self.in_flight[profile.model])
            try:
                text = (reply_with_images(profile.responder, messages, images, profile.model)
                        if images else profile.responder.reply(messages, profile.model))
                prompt_tokens = image_tokens + sum(estimate_tokens(m["content"])
                                                   for m in messages)
                cached_tokens = min(prompt_tokens, cached_chars // 4)
                self.prompt_tokens[profile.model] += prompt_tokens
                self.cached_tokens[profile.model] += cached_tokens
                prefill = prompt_tokens - cached_tokens
                text, finish = _within(text, payload.get("max_completion_tokens")
                                       or payload.get("max_tokens"), profile.reasoning_tokens)
                completion_tokens = estimate_tokens(text) + profile.reasoning_tokens
                if replicas:  # the prompt's blocks are cached once its prefill is done
                    prefill_s = profile.latency(0, prefill) - profile.latency(0, 0)
                    await asyncio.sleep(prefill_s * self.time_scale)
                    replicas.prefilled(replica, blocks)
                else:
                    prefill_s = 0.0
                if payload.get("stream"):
                    return await self._stream(request, profile, text, prompt_tokens,
                                              completion_tokens, finish, cached_tokens)
                await asyncio.sleep((profile.latency(completion_tokens, prefill) - prefill_s)
                                    * self.time_scale)
                return _json(200, self._completion(profile, text, prompt_tokens,
                                                   completion_tokens, finish, cached_tokens))
            finally:
                self.in_flight[profile.model] -= 1
        finally:
            if replicas:
                replicas.done(replica)
            self._slots[profile.model].release()

    def _completion(self, profile: Profile, text: str, prompt_tokens: int,
                    completion_tokens: int, finish: str = "stop",
                    cached_tokens: int = 0) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-sim{self.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": profile.model,
            "system_fingerprint": "heterarch-simulator",
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": text}}],
            "usage": _usage(prompt_tokens, completion_tokens, profile.reasoning_tokens,
                            cached_tokens if profile.prefix_cache else None),
        }

    async def _stream(self, request: web.Request, profile: Profile, text: str,
                      prompt_tokens: int, completion_tokens: int,
                      finish: str = "stop", cached_tokens: int = 0) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
        response.content_type = "text/event-stream"
        pieces = [text[i:i + 16] for i in range(0, len(text), 16)] or [""]
        if profile.fixed_latency_s is not None:
            first, per_piece = profile.fixed_latency_s * self.time_scale, 0.0
        else:
            visible = completion_tokens - profile.reasoning_tokens
            first = (profile.latency(profile.reasoning_tokens, prompt_tokens - cached_tokens)
                     - profile.latency(0, prompt_tokens - cached_tokens)
                     + profile.latency(0, 0)) * self.time_scale
            if not profile.prefix_cache:  # no prefill slept before: it is part of the first
                first += (profile.latency(0, prompt_tokens - cached_tokens)
                          - profile.latency(0, 0)) * self.time_scale
            per_piece = visible / profile.tokens_per_s / len(pieces) * self.time_scale
        await response.prepare(request)
        await asyncio.sleep(first)
        base = {"id": f"chatcmpl-sim{self.requests}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": profile.model}
        for i, piece in enumerate(pieces):
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            await _event(response, {**base, "choices": [
                {"index": 0, "delta": delta, "finish_reason": None}]})
            await asyncio.sleep(per_piece)
        await _event(response, {**base, "choices": [
            {"index": 0, "delta": {}, "finish_reason": finish}],
            "usage": _usage(prompt_tokens, completion_tokens, profile.reasoning_tokens,
                            cached_tokens if profile.prefix_cache else None)})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error an OpenAI client can read: ``{"error": {message, type, code}}``."""
    try:
        return await handler(request)
    except _HttpError as exc:
        return _json(exc.status, _error_body(exc))
    except web.HTTPException as exc:  # no route, wrong method, body too large
        return _json(exc.status, _error_body(_HttpError(exc.status, exc.reason)))
    except ConnectionError:
        raise
    except Exception as exc:  # a responder bug: answer 500, keep the server up
        log.exception("simulator: request to %s failed", request.path)
        return _json(500, _error_body(_HttpError(
            500, f"simulator error: {type(exc).__name__}: {exc}", "server_error")))


def _json(status: int, obj: Any) -> web.Response:
    return web.Response(status=status, body=json.dumps(obj).encode(),
                        content_type="application/json")


async def _event(response: web.StreamResponse, obj: dict[str, Any]) -> None:
    await response.write(f"data: {json.dumps(obj)}\n\n".encode())


def _within(text: str, max_tokens: Any, reasoning_tokens: int) -> tuple[str, str]:
    """``text`` cut to what ``max_tokens`` (reasoning included) leaves, and the finish reason
    (``"length"`` when cut), as OpenAI-compatible servers do."""
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens <= 0:
        return text, "stop"
    room = max(0, max_tokens - reasoning_tokens)
    if estimate_tokens(text) <= room:
        return text, "stop"
    return text[:max(0, room * 4 - 3)], "length"


def _usage(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int,
           cached_tokens: int | None = None) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": prompt_tokens,
                             "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens}
    if cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    if reasoning_tokens:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return usage


@contextlib.contextmanager
def serve_in_thread(profiles: dict[str, Profile] | None = None, *,
                    time_scale: float = 1.0) -> Iterator[str]:
    """Run a simulator on its own event loop in a background thread; yields its base URL."""
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        async with Simulator(profiles, time_scale=time_scale) as sim:
            holder.update(url=sim.base_url, stop=asyncio.Event(),
                          loop=asyncio.get_running_loop())
            ready.set()
            await holder["stop"].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("the simulator did not start")
    try:
        yield holder["url"]
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(30)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _error_body(exc: _HttpError) -> dict[str, Any]:
    return {"error": {"message": exc.message, "type": exc.kind, "code": exc.status}}


# -- the command line (`heterarch simulate`) -----------------------------------------------------
def add_simulator_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``heterarch simulate`` (for the CLI to add to its subparser)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8700, help="port (0: any free port)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="multiply every simulated delay (0: answer at once)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the error injection")
    parser.add_argument("--error-rate", type=float, default=None,
                        help="override every profile's injected 429/500 rate (0..1)")
    parser.add_argument("--responder", action="append", default=[], metavar="[MODEL=]MOD:CLASS",
                        help="your own responder class (instantiated with no arguments) for "
                             "every model, or for MODEL only; repeatable")


def load_responder(spec: str) -> Responder:
    """``"package.module:Class"`` -> an instance (``Class()``), anything with ``reply``.

    Raises ``RuntimeConfigError`` saying what is wrong with ``spec``."""
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name.isidentifier():
        raise RuntimeConfigError(f"responder {spec!r}: expected 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RuntimeConfigError(f"responder {spec!r}: cannot import {module_name!r}: {exc}") \
            from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise RuntimeConfigError(f"responder {spec!r}: {module_name} has no class {class_name}")
    try:
        responder = cls()
    except Exception as exc:
        raise RuntimeConfigError(f"responder {spec!r}: {class_name}() failed: {exc}") from None
    if not callable(getattr(responder, "reply", None)):
        raise RuntimeConfigError(f"responder {spec!r}: {class_name} has no reply(messages, "
                                 "model) method")
    return cast(Responder, responder)


def with_responders(profiles: Mapping[str, Profile], specs: Sequence[str]) -> dict[str, Profile]:
    """``profiles`` with the responders named by ``[MODEL=]module:Class`` specs in place."""
    chosen = dict(profiles)
    for spec in specs:
        model, sep, target = spec.rpartition("=")
        responder = load_responder(target)
        names = [model] if sep else list(chosen)
        for name in names:
            if name not in chosen:
                raise RuntimeConfigError(f"responder for unknown model {name!r}; serving "
                                         f"{sorted(chosen)}")
            chosen[name] = dataclasses.replace(chosen[name], responder=responder)
    return chosen


def describe(sim: Simulator) -> str:
    """What the simulator serves, one line per pool (printed at start)."""
    lines = [f"pool simulator (SIMULATED models) at {sim.base_url}"]
    for name, p in sim.profiles.items():
        speed = (f"fixed {p.fixed_latency_s}s" if p.fixed_latency_s is not None
                 else f"ttft={p.ttft_s}s {p.tokens_per_s:g} tok/s")
        lines.append(f"  {name:18} {p.hardware:12} {speed} max {p.concurrency} at once "
                     f"${p.input_price_per_mtok}/${p.output_price_per_mtok} per Mtok "
                     f"tier {p.tier} errors {p.error_rate:.0%} "
                     f"responder {type(p.responder).__name__}")
    return "\n".join(lines)


async def serve(*, host: str = "127.0.0.1", port: int = 8700, time_scale: float = 1.0,
                seed: int = 1, error_rate: float | None = None,
                profiles: Mapping[str, Profile] | None = None,
                responders: Sequence[str] = ()) -> None:
    """Run the simulator until cancelled (Ctrl-C), printing what it serves (by default the
    text pools and the two vision pools)."""
    if profiles is None:
        profiles = {**default_profiles(), **vision_profiles(VisionRootResponder())}
    chosen = with_responders(profiles, responders)
    if error_rate is not None:
        if not 0.0 <= error_rate <= 1.0:
            raise RuntimeConfigError("--error-rate must be between 0 and 1")
        chosen = {n: dataclasses.replace(p, error_rate=error_rate) for n, p in chosen.items()}
    async with Simulator(chosen, host=host, port=port, seed=seed, time_scale=time_scale) as sim:
        print(describe(sim), flush=True)
        await sim.serve_forever()


def run_simulator_cli(args: argparse.Namespace) -> int:
    """``heterarch simulate``: the entry the CLI calls with the options of
    ``add_simulator_arguments``. Returns the exit status."""
    try:
        asyncio.run(serve(host=args.host, port=args.port, time_scale=args.time_scale,
                          seed=args.seed, error_rate=args.error_rate,
                          responders=args.responder))
    except KeyboardInterrupt:
        pass
    return 0  # a busy port (PortInUse) and other errors: one line from the CLI
