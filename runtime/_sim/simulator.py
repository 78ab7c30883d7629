"""The pool simulator: an OpenAI-compatible HTTP server that plays several hardware pools.

Each model name served is a ``Profile``: time to first token, output tokens per second, a
concurrency limit (requests beyond it queue), prices, an injected error rate, and a responder
that writes the answer. Everything it says is simulated; the client side is real (litellm over
real HTTP), so benchmarks and the demo exercise the same path as real providers.

    heterarch simulate --port 8700
    curl -s localhost:8700/v1/models

Routes: ``POST /v1/chat/completions`` (JSON, or server-sent events with ``"stream": true``;
``usage`` in the reply and in the last chunk), ``GET /v1/models``, ``GET /health``. HTTP/1.1
with keep-alive on ``asyncio.start_server``; a malformed request gets a JSON 400 and never
takes the server down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Self

from .profiles import EchoResponder as EchoResponder
from .profiles import Profile as Profile
from .profiles import Responder as Responder
from .profiles import RoutingResponder as RoutingResponder
from .profiles import ScriptedResponder as ScriptedResponder
from .profiles import default_profiles as default_profiles
from .profiles import estimate_tokens as estimate_tokens
from .profiles import profiles_toml as profiles_toml
from .vision import reply_with_images, request_images

log = logging.getLogger("heterarch.simulate")

MAX_BODY = 64 * 1024 * 1024


class _HttpError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self.status = status
        self.message = message
        self.kind = kind


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 429: "Too Many Requests", 500: "Internal Server Error"}


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
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.requests = 0
        self.in_flight: dict[str, int] = {name: 0 for name in self.profiles}
        self.peak_in_flight: dict[str, int] = {name: 0 for name in self.profiles}
        self.queued: dict[str, int] = {name: 0 for name in self.profiles}  # waiting for a slot
        self.images_received: dict[str, int] = {name: 0 for name in self.profiles}

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):  # idle keep-alive connections included
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    # -- HTTP/1.1 with keep-alive --------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                try:
                    request = await self._read_request(reader)
                except _HttpError as exc:
                    await self._send_json(writer, exc.status, _error_body(exc))
                    break
                if request is None:
                    break
                method, path, headers, body = request
                try:
                    await self._route(writer, method, path, body)
                except _HttpError as exc:
                    await self._send_json(writer, exc.status, _error_body(exc))
                except Exception as exc:  # a responder bug: answer 500, keep the server up
                    log.exception("simulator: request to %s failed", path)
                    await self._send_json(writer, 500, _error_body(_HttpError(
                        500, f"simulator error: {type(exc).__name__}: {exc}", "server_error")))
                    break  # a stream may have been half written: do not reuse the connection
                if headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, asyncio.CancelledError):
                pass

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[
        str, str, dict[str, str], bytes
    ] | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError:
            raise _HttpError(400, "request head too large") from None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise _HttpError(400, f"malformed request line {lines[0][:100]!r}")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return parts[0], parts[1], headers, await self._read_chunked(reader)
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise _HttpError(400, "bad Content-Length") from None
        if length < 0 or length > MAX_BODY:
            raise _HttpError(413, "body too large")
        body = await reader.readexactly(length) if length else b""
        return parts[0], parts[1], headers, body

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            size_line = await reader.readline()
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise _HttpError(400, "bad chunk size in a chunked body") from None
            if size < 0 or len(body) + size > MAX_BODY:
                raise _HttpError(413, "body too large")
            if size == 0:
                while (await reader.readline()).strip():  # trailers, up to the blank line
                    pass
                return bytes(body)
            body += await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise _HttpError(400, "chunk not followed by CRLF")

    async def _route(self, writer: asyncio.StreamWriter, method: str, path: str,
                     body: bytes) -> None:
        path = path.split("?")[0].rstrip("/")
        if path in ("/health", "/v1/health"):
            await self._send_json(writer, 200, {"status": "ok", "simulated": True})
        elif path == "/v1/models":
            await self._send_json(writer, 200, {"object": "list", "data": [
                {"id": name, "object": "model", "owned_by": "heterarch-simulator",
                 "hardware": p.hardware, "description": p.description}
                for name, p in self.profiles.items()]})
        elif path == "/v1/chat/completions":
            if method != "POST":
                raise _HttpError(405, "use POST")
            await self._chat(writer, body)
        else:
            raise _HttpError(404, f"no route {path!r}")

    async def _chat(self, writer: asyncio.StreamWriter, body: bytes) -> None:
        try:
            request = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _HttpError(400, "body is not JSON") from None
        if not isinstance(request, dict):
            raise _HttpError(400, "body must be a JSON object")
        model = request.get("model")
        profile = self.profiles.get(model) if isinstance(model, str) else None
        if profile is None:
            raise _HttpError(404, f"unknown model {model!r}; serving {sorted(self.profiles)}",
                             "model_not_found")
        messages = request.get("messages")
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
        try:
            self.in_flight[profile.model] += 1
            self.peak_in_flight[profile.model] = max(self.peak_in_flight[profile.model],
                                                     self.in_flight[profile.model])
            try:
                text = (reply_with_images(profile.responder, messages, images, profile.model)
                        if images else profile.responder.reply(messages, profile.model))
                prompt_tokens = image_tokens + sum(estimate_tokens(m["content"])
                                                   for m in messages)
                completion_tokens = estimate_tokens(text)
                delay = profile.latency(completion_tokens)
                if request.get("stream"):
                    await self._stream(writer, profile, text, prompt_tokens, completion_tokens)
                else:
                    await asyncio.sleep(delay * self.time_scale)
                    await self._send_json(writer, 200, self._completion(
                        profile, text, prompt_tokens, completion_tokens))
            finally:
                self.in_flight[profile.model] -= 1
        finally:
            self._slots[profile.model].release()

    def _completion(self, profile: Profile, text: str, prompt_tokens: int,
                    completion_tokens: int) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-sim{self.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": profile.model,
            "system_fingerprint": "heterarch-simulator",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    async def _stream(self, writer: asyncio.StreamWriter, profile: Profile, text: str,
                      prompt_tokens: int, completion_tokens: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
        pieces = [text[i:i + 16] for i in range(0, len(text), 16)] or [""]
        if profile.fixed_latency_s is not None:
            first, per_piece = profile.fixed_latency_s * self.time_scale, 0.0
        else:
            first = profile.ttft_s * self.time_scale
            per_piece = completion_tokens / profile.tokens_per_s / len(pieces) * self.time_scale
        await asyncio.sleep(first)
        base = {"id": f"chatcmpl-sim{self.requests}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": profile.model}
        for i, piece in enumerate(pieces):
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            await self._chunk(writer, {**base, "choices": [
                {"index": 0, "delta": delta, "finish_reason": None}]})
            await asyncio.sleep(per_piece)
        await self._chunk(writer, {**base, "choices": [
            {"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}})
        data = b"data: [DONE]\n\n"
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n")
        await writer.drain()

    @staticmethod
    async def _chunk(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
        data = f"data: {json.dumps(obj)}\n\n".encode()
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    @staticmethod
    async def _send_json(writer: asyncio.StreamWriter, status: int, obj: Any) -> None:
        body = json.dumps(obj).encode()
        writer.write(
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        )
        await writer.drain()


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


def describe(sim: Simulator) -> str:
    """What the simulator serves, one line per pool (printed at start)."""
    lines = [f"pool simulator (SIMULATED models) at {sim.base_url}"]
    for name, p in sim.profiles.items():
        speed = (f"fixed {p.fixed_latency_s}s" if p.fixed_latency_s is not None
                 else f"ttft={p.ttft_s}s {p.tokens_per_s:g} tok/s")
        lines.append(f"  {name:18} {p.hardware:12} {speed} max {p.concurrency} at once "
                     f"${p.input_price_per_mtok}/${p.output_price_per_mtok} per Mtok "
                     f"tier {p.tier} errors {p.error_rate:.0%}")
    return "\n".join(lines)


async def serve(*, host: str = "127.0.0.1", port: int = 8700, time_scale: float = 1.0,
                seed: int = 1, error_rate: float | None = None,
                profiles: Mapping[str, Profile] | None = None) -> None:
    """Run the simulator until cancelled (Ctrl-C), printing what it serves."""
    chosen = dict(profiles) if profiles is not None else default_profiles()
    if error_rate is not None:
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError("--error-rate must be between 0 and 1")
        chosen = {n: dataclasses.replace(p, error_rate=error_rate) for n, p in chosen.items()}
    async with Simulator(chosen, host=host, port=port, seed=seed, time_scale=time_scale) as sim:
        print(describe(sim), flush=True)
        await sim.serve_forever()


def run_simulator_cli(args: argparse.Namespace) -> int:
    """``heterarch simulate``: the entry the CLI calls with the options of
    ``add_simulator_arguments``. Returns the exit status."""
    try:
        asyncio.run(serve(host=args.host, port=args.port, time_scale=args.time_scale,
                          seed=getattr(args, "seed", 1),
                          error_rate=getattr(args, "error_rate", None)))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"heterarch simulate: cannot listen on {args.host}:{args.port}: {exc}")
        return 2
    return 0

