"""Errors of the model client. All are ``LLMCallFailed``, so one ``except`` catches them all."""

from __future__ import annotations

from actors.errors import HeterarchError


class LLMCallFailed(HeterarchError):
    """A model call failed after its retries; says which pool, why and how often it tried.

    Subclasses say what kind of failure it was at the end: ``RateLimited`` (HTTP 429),
    ``PoolOverloaded`` (5xx or the provider's "overloaded"), ``LLMTimeout`` (no answer in time),
    ``MalformedResponse`` (a 200 whose body is not a chat completion), ``ContextWindowExceeded``
    (the prompt does not fit the model's window). Any other failure (a 4xx such as an unknown
    model, a bad key) is a plain ``LLMCallFailed`` and is never retried.
    """

    def __init__(self, pool: str, model: str, reason: str, attempts: int) -> None:
        self.pool = pool
        self.model = model
        self.reason = reason
        self.attempts = attempts
        super().__init__(
            f"model call on pool {pool!r} ({model}) failed after {attempts} attempt(s): {reason}"
        )

    def __reduce__(self) -> tuple[type[LLMCallFailed], tuple[str, str, str, int]]:
        return type(self), (self.pool, self.model, self.reason, self.attempts)


class RateLimited(LLMCallFailed):
    """The provider answered 429 (too many requests) on every attempt, or asked (Retry-After)
    for a longer wait than the client makes."""


class PoolOverloaded(LLMCallFailed):
    """The provider answered 5xx (or ``PoolUnreachable``: could not be reached) on the last
    attempt."""


class PoolUnreachable(PoolOverloaded):
    """The pool's endpoint could not be reached on the last attempt (connection refused or
    reset, no route, name not found): the pool is down, not busy."""


class LLMTimeout(LLMCallFailed, TimeoutError):
    """No answer within the pool's deadlines on the last attempt (``timeout_s`` for an answer,
    between two stream chunks; ``stream_timeout_s`` for a whole stream)."""


class MalformedResponse(LLMCallFailed):
    """The provider answered 200 with a body that is no chat completion (cut JSON, no
    ``choices``, an empty body or stream) on every attempt."""


class ContextWindowExceeded(LLMCallFailed):
    """The prompt does not fit the model's context window (said before sending, from the
    pool's ``context_window``, or by the provider's 400 ``context_length_exceeded``).
    ``prompt_tokens`` is the estimate and ``window`` the window in tokens (0: not known).
    Never retried: split the prompt or send it to a pool with a larger window."""

    def __init__(self, pool: str, model: str, reason: str, attempts: int = 0, *,
                 prompt_tokens: int = 0, window: int = 0) -> None:
        super().__init__(pool, model, reason, attempts)
        self.prompt_tokens = prompt_tokens
        self.window = window

    def __reduce__(self) -> tuple[type[LLMCallFailed], tuple[str, str, str, int]]:
        return _context_error, (self.pool, self.model, self.reason, self.attempts,  # type: ignore[return-value]
                                self.prompt_tokens, self.window)


def _context_error(pool: str, model: str, reason: str, attempts: int, prompt_tokens: int,
                   window: int) -> ContextWindowExceeded:
    return ContextWindowExceeded(pool, model, reason, attempts, prompt_tokens=prompt_tokens,
                                 window=window)
