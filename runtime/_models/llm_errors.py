"""Errors of the model client. All are ``LLMCallFailed``, so one ``except`` catches them all."""

from __future__ import annotations

from actors.errors import HeterarchError


class LLMCallFailed(HeterarchError):
    """A model call failed after its retries; says which pool, why and how often it tried.

    Subclasses say what kind of failure it was at the end: ``RateLimited`` (HTTP 429),
    ``PoolOverloaded`` (5xx or the provider's "overloaded"), ``LLMTimeout`` (no answer in time).
    Any other failure (a 4xx such as an unknown model, a bad key) is a plain ``LLMCallFailed``
    and is never retried.
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
    """The provider answered 429 (too many requests) on every attempt."""


class PoolOverloaded(LLMCallFailed):
    """The provider answered 5xx (or could not be reached) on the last attempt."""


class LLMTimeout(LLMCallFailed, TimeoutError):
    """No answer within the pool's ``timeout_s`` on the last attempt."""
