"""The lean path to OpenAI-compatible endpoints: one pooled aiohttp session per pool.

vLLM, SGLang, llama.cpp server, Cerebras, SambaNova, Groq and the pool simulator all speak
``POST {api_base}/chat/completions``. Against them this path costs a small fraction of litellm's
client CPU per call (see docs/performance.md): the request body is the caller's messages as they
are (content parts such as ``image_url`` pass through untouched), encoded once with msgspec; the
answer is decoded into a typed Struct; connections are kept alive and reused.
"""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import msgspec

from .._config import PoolConfig
from .llm_errors import (
    ContextWindowExceeded,
    LLMCallFailed,
    LLMTimeout,
    MalformedResponse,
    PoolOverloaded,
    PoolUnreachable,
    RateLimited,
)
from .path import Attempt, MalformedBody, RawReply, is_context_overflow, retry_after_s, short_reason

__all__ = ("HTTPStatusError", "OpenAIHTTPPath", "decode_answer", "decode_completion")

#: The names OpenAI's SDK (and litellm) give these statuses, so reasons read the same on both
#: paths.
_STATUS_NAMES = {400: "BadRequestError", 401: "AuthenticationError",
                 403: "PermissionDeniedError", 404: "NotFoundError", 408: "Timeout",
                 409: "ConflictError", 422: "UnprocessableEntityError", 429: "RateLimitError"}


class HTTPStatusError(Exception):
    """The endpoint answered with an HTTP error status."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        self.status = status
        self.retry_after = retry_after
        self.name = _STATUS_NAMES.get(status, "InternalServerError" if status >= 500
                                      else "APIStatusError")
        super().__init__(f"{status} {message}")


class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Delta | None = None
    delta: _Delta | None = None
    finish_reason: str | None = None


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = 0


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _PromptDetails | None = None

    @property
    def cached(self) -> int:
        details = self.prompt_tokens_details
        return (details.cached_tokens or 0) if details is not None else 0


class _ChatResponse(msgspec.Struct):
    """A chat completion or one chunk of a streamed one (the fields both share)."""

    id: str = ""
    model: str = ""
    choices: list[_Choice] | None = None
    usage: _Usage | None = None


class _ErrorDetail(msgspec.Struct):
    message: str = ""


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail | str | None = None


_decode_response = msgspec.json.Decoder(_ChatResponse).decode
_decode_error = msgspec.json.Decoder(_ErrorBody).decode
_encode = msgspec.json.Encoder().encode
_LARGE_BODY = 2**20


def decode_completion(body: bytes) -> RawReply:
    """A whole (non-streamed) chat completion; ``MalformedBody`` if it is none: cut or invalid
    JSON, no ``choices``, an empty body. Shared by both paths."""
    try:
        reply = _decode_response(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedBody(f"not a chat completion ({len(body)} bytes): {exc}") from None
    if not reply.choices:
        error = _error_message(body) if b'"error"' in body else ""
        raise MalformedBody(f"a chat completion without choices ({len(body)} bytes)"
                            + (f": the body says {error}" if error else ""))
    message = reply.choices[0].message
    usage = reply.usage or _Usage()
    return RawReply(text=(message.content if message else None) or "", model=reply.model,
                    input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens,
                    cached_tokens=usage.cached,
                    finish_reason=reply.choices[0].finish_reason or "", response_id=reply.id)


def _error_message(body: bytes) -> str:
    try:
        error = _decode_error(body).error
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return body[:300].decode("utf-8", errors="replace")
    if isinstance(error, _ErrorDetail):
        return error.message[:300]
    return (error or "")[:300]


class OpenAIHTTPPath:
    """``POST {api_base}/chat/completions`` on one ``aiohttp.ClientSession`` per pool.

    The session is made on first use (it belongs to the running event loop) and closed by
    ``aclose()``. Connections are limited to the pool's ``max_concurrency`` and kept alive.
    """

    def __init__(self, pool: PoolConfig, request_model: str) -> None:
        self.pool = pool
        self.request_model = request_model
        self.url = pool.api_base.rstrip("/") + "/chat/completions"
        # The client enforces the attempt's deadlines (Attempt.scope): aiohttp's own total
        # would kill a healthy stream longer than timeout_s, its read timeouts miss a trickle.
        self._timeout = aiohttp.ClientTimeout(total=None)
        self._session: aiohttp.ClientSession | None = None
        self._headers: dict[str, str] = {}
        self._key = ""

    def _session_now(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=self.pool.max_concurrency,
                                             keepalive_timeout=30)
            session = self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, raise_for_status=False)
        return session

    def _headers_for(self, key: str) -> dict[str, str]:
        if key != self._key or not self._headers:
            self._key = key
            self._headers = {"Authorization": f"Bearer {key}",
                             "Content-Type": "application/json"}
        return self._headers

    async def attempt(self, messages: list[dict[str, Any]], params: dict[str, Any],
                      state: Attempt) -> RawReply:
        params = dict(params)
        key = str(params.pop("api_key", ""))
        body = _encode({"model": self.request_model, "messages": messages, **params})
        session = self._session_now()
        # Over 1 MiB (images as data URLs), aiohttp wants a stream, not bytes it sends at once.
        data = body if len(body) <= _LARGE_BODY else io.BytesIO(body)
        async with session.post(self.url, data=data, headers=self._headers_for(key)) as resp:
            if resp.status >= 400:
                raise HTTPStatusError(resp.status, _error_message(await resp.read()),
                                      retry_after_s(resp.headers))
            # A server may answer a stream request with one JSON completion, or send events
            # under another content type: only a declared event stream is read as it comes.
            if params.get("stream") and resp.content_type == "text/event-stream":
                return await _read_stream(resp, state)
            return decode_answer(await resp.read())

    def classify(self, exc: BaseException) -> type[LLMCallFailed] | None:
        if isinstance(exc, TimeoutError):  # aiohttp's timeouts are TimeoutErrors too
            return LLMTimeout
        if isinstance(exc, MalformedBody):
            return MalformedResponse
        if isinstance(exc, HTTPStatusError):
            if exc.status == 429:
                return RateLimited
            return PoolOverloaded if exc.status >= 500 else None
        if isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError):
            return PoolUnreachable  # nothing answered: the pool is down, not busy
        if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError
                      | ConnectionError):
            return PoolOverloaded
        return None

    def retry_after(self, exc: BaseException) -> float | None:
        return exc.retry_after if isinstance(exc, HTTPStatusError) else None

    def fatal(self, exc: BaseException) -> type[LLMCallFailed] | None:
        """The typed error of a failure that is not retried (None: a plain LLMCallFailed)."""
        if (isinstance(exc, HTTPStatusError) and exc.status in (400, 413, 422)
                and is_context_overflow(str(exc))):
            return ContextWindowExceeded
        return None

    def describe(self, exc: BaseException) -> str:
        if isinstance(exc, HTTPStatusError):
            return f"{exc.name}: {exc}"
        if isinstance(exc, MalformedBody | msgspec.DecodeError | msgspec.ValidationError):
            return f"malformed response from {self.url}: {exc}"[:300]
        return short_reason(exc)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


class _Events:
    """Server-sent events read line by line: ``data: {chunk}`` up to ``data: [DONE]``."""

    def __init__(self, state: Attempt | None = None) -> None:
        self.state = state
        self.parts: list[str] = []
        self.model, self.finish, self.reply_id = "", "", ""
        self.input_tokens = self.output_tokens = self.cached_tokens = self.chunks = 0

    def feed(self, line: bytes) -> bool:
        """One line; True at ``data: [DONE]``."""
        if not line.startswith(b"data:"):
            return False
        data = line[5:].strip()
        if data == b"[DONE]":
            return True
        try:
            chunk = _decode_response(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise MalformedBody(f"a stream chunk that is not JSON: {exc}") from None
        self.chunks += 1
        if self.state is not None:
            self.state.chunk()
        self.model = self.model or chunk.model
        self.reply_id = self.reply_id or chunk.id
        if chunk.choices:
            self.finish = chunk.choices[0].finish_reason or self.finish
            delta = chunk.choices[0].delta
            if delta is not None and delta.content:
                self.parts.append(delta.content)
        if chunk.usage is not None:
            self.input_tokens = chunk.usage.prompt_tokens
            self.output_tokens = chunk.usage.completion_tokens
            self.cached_tokens = chunk.usage.cached
        return False

    def reply(self) -> RawReply:
        """The answer; ``MalformedBody`` for a stream without a single chunk."""
        if not self.chunks:
            raise MalformedBody("a stream without a single chunk")
        return RawReply(text="".join(self.parts), model=self.model,
                        input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                        cached_tokens=self.cached_tokens, finish_reason=self.finish,
                        response_id=self.reply_id)


async def _read_stream(resp: aiohttp.ClientResponse, state: Attempt) -> RawReply:
    """Server-sent events, chunk by chunk (each one moves the attempt's idle deadline). A
    stream with no chunk at all is ``MalformedBody`` (retried like a malformed 200)."""
    events = _Events(state)
    async for line in resp.content:
        if events.feed(line):
            break
    return events.reply()


def decode_answer(body: bytes) -> RawReply:
    """A whole body that is either one JSON completion or server-sent events (whatever its
    content type said): what a server answered to a stream request without streaming, or the
    other way round. Shared by both paths."""
    head = body.lstrip()[:5]
    if head != b"data:" and b"\ndata:" not in body[:4096]:
        return decode_completion(body)
    events = _Events()
    for line in body.splitlines():
        if events.feed(line):
            break
    return events.reply()

